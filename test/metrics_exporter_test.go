package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/lifecycle"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/metrics"
	"github.com/xmacvlan/xmacvlan/tables"
)

// startCLI starts the xmacvlan binary in this (the root) namespace and
// returns it with its stdout; it is killed at the end of the test if still
// running.
func startCLI(t *testing.T, args ...string) (*exec.Cmd, *bufio.Reader) {
	t.Helper()
	cmd := exec.Command(xmacvlanBin, args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd, bufio.NewReader(out)
}

// interrupt sends Ctrl-C and wants a clean exit.
func interrupt(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s after Ctrl-C: %v", filepath.Base(cmd.Path), err)
		}
	case <-time.After(5 * time.Second):
		t.Errorf("%v did not stop on Ctrl-C", cmd.Args[1:])
	}
}

// The exporter as a user runs it: `xmacvlan metrics --listen`, scraped over
// HTTP, parsed by Prometheus' parser, passed by promtool, stopped with
// Ctrl-C. And `stats --watch` on a pipe: plain lines, JSON lines, a clean
// Ctrl-C.
func TestMetricsCommandAndStatsWatch(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.attach("")
	h.network("lan", 0, tables.Bridge)
	h.network("v10", 10, tables.Bridge)
	c := h.container("lan", "", "10.0.0.2/24", false)
	h.container("v10", "", "", false)
	if err := ping(l.sw, c.ip); err != nil {
		t.Fatal(err)
	}

	// It reads no interface: it runs here, outside the parent's namespace.
	cmd, out := startCLI(t, "--bpffs", h.root, "metrics", "--listen", "127.0.0.1:0")
	line, err := out.ReadString('\n')
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	i := strings.Index(line, "http://")
	if i < 0 {
		t.Fatalf("metrics printed %q, want its URL", line)
	}
	url := strings.TrimSpace(line[i:])
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	v := viewOf(parseExposition(t, body))
	ep := fmt.Sprintf("{endpoint=%s,network=lan,vlan=0}", metrics.EndpointLabel(c.ep))
	if v["rx_packets_total"+ep] < 2 || v["tx_packets_total"+ep] < 2 {
		t.Errorf("after a ping of the container: rx %v tx %v", v["rx_packets_total"+ep], v["tx_packets_total"+ep])
	}
	for _, r := range tables.DropReasons() {
		if _, ok := v["drops_total{reason="+r.String()+"}"]; !ok {
			t.Errorf("no xmacvlan_drops_total for %s", r)
		}
	}
	for _, e := range tables.EventKinds() {
		if _, ok := v["events_total{event="+e.String()+"}"]; !ok {
			t.Errorf("no xmacvlan_events_total for %s", e)
		}
	}
	testutil.Promtool(t, body)
	interrupt(t, cmd)

	// stats --watch, stdout a pipe: one key=value line per endpoint and
	// VLAN per interval (after the first, which sets the baseline).
	cmd, out = startCLI(t, "--bpffs", h.root, "stats", h.parent, "--watch", "200ms")
	var lines []string
	for len(lines) < 8 {
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatalf("stats --watch: %v after %q", err, lines)
		}
		lines = append(lines, line)
	}
	interrupt(t, cmd)
	for _, line := range lines {
		if strings.Contains(line, "\x1b") || !strings.Contains(line, "parent="+h.parent) {
			t.Errorf("stats --watch on a pipe printed %q", line)
		}
	}

	cmd, out = startCLI(t, "--bpffs", h.root, "stats", "--watch=200ms", "-o", "json")
	for i := range 3 {
		line, err := out.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		var s statsOutput
		if err := json.Unmarshal([]byte(line), &s); err != nil || len(s.Parents) != 1 || len(s.Parents[0].Endpoints) != 2 {
			t.Errorf("stats --watch -o json, sample %d: %v %s", i, err, line)
		}
	}
	interrupt(t, cmd)
}

// The collector under concurrent scrapes (run with -race) while endpoints
// are added and removed, then while the parent is detached and attached
// again. Every scrape must succeed and be consistent: the endpoint series
// of a network are exactly as many as the network's member count, so no
// scrape saw an endpoint half added or half removed.
func TestMetricsConcurrentScrapesWhileEndpointsChange(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.attach("")
	h.network("v10", 10, tables.Bridge)
	ex := exporter(t, h.root)

	var (
		stop    atomic.Bool
		scrapes atomic.Int64
		sawZero atomic.Bool // the parent detached
		wg      sync.WaitGroup
		mu      sync.Mutex
		errs    []string
	)
	fail := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		if len(errs) < 10 {
			errs = append(errs, fmt.Sprintf(format, args...))
		}
	}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				v, err := scrapeOnce(ex)
				if err != nil {
					fail("%v", err)
					return
				}
				scrapes.Add(1)
				if v["scrape_errors_total{}"] != 0 {
					fail("scrape errors: %v", v["scrape_errors_total{}"])
				}
				members, ok := v["network_endpoints{mode=bridge,network=v10,vlan=10}"]
				if !ok {
					sawZero.Store(true)
				}
				n := 0
				for k := range v {
					if strings.HasPrefix(k, "rx_packets_total{") {
						n++
					}
				}
				if float64(n) != members {
					fail("a scrape saw %d endpoints on a network of %v", n, members)
				}
			}
		}()
	}

	// Endpoints come and go: real ones, veth pairs in namespaces, as
	// `xmacvlan endpoint add/del` makes them.
	var nss []*testutil.Netns
	for range 4 {
		nss = append(nss, testutil.NewNetns(t, "xc"))
	}
	var live []tables.Endpoint
	for i := range 12 {
		err := h.ns.Do(func() error {
			if len(live) == len(nss) || (i%3 == 2 && len(live) > 0) {
				ep := live[0]
				live = live[1:]
				found, err := h.lc().DeleteEndpoint("v10", lifecycle.Selector{Netns: ep.Netns, Name: ep.Ifname})
				if err == nil && !found {
					err = fmt.Errorf("endpoint %s in %s not found", ep.Ifname, ep.Netns)
				}
				return err
			}
			ep, err := h.lc().AddEndpoint("v10", lifecycle.Spec{Netns: nss[i%len(nss)].Path(), Name: fmt.Sprintf("eth%d", i)})
			live = append(live, ep)
			return err
		})
		if err != nil {
			t.Fatalf("endpoint change %d: %v", i, err)
		}
	}
	// The parent detached and attached again, state and all.
	for range 2 {
		if err := h.ns.Do(func() error { return h.lc().DetachParent(h.parent, true) }); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
		h.attach("")
		h.network("v10", 10, tables.Bridge)
		time.Sleep(50 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	for _, e := range errs {
		t.Error(e)
	}
	if !sawZero.Load() {
		t.Log("no scrape fell between detach and attach")
	}
	v := scrapeView(t, ex)
	if _, ok := v["network_endpoints{mode=bridge,network=v10,vlan=10}"]; !ok {
		t.Errorf("after re-attach the exporter does not see the parent: %v", v)
	}
	t.Logf("%d scrapes", scrapes.Load())
}

// scrapeOnce is scrapeView for goroutines: an error instead of t.Fatal.
func scrapeOnce(h http.Handler) (promView, error) {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		return nil, fmt.Errorf("scrape: %d %s", rec.Code, rec.Body)
	}
	fams, err := parseText(rec.Body.Bytes())
	if err != nil {
		return nil, err
	}
	return viewOf(fams), nil
}

// A pinned table that cannot be read (replaced here by a map of another
// type) fails the scrape as a whole: only the error counter and
// build_info, no partial set. When the table is back, so are the counters.
func TestMetricsUnreadableTableEmitsNoCounter(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.attach("")
	h.network("v10", 10, tables.Bridge)
	h.container("v10", "", "", false)
	ex := exporter(t, h.root)
	if v := scrapeView(t, ex); len(v) < 20 {
		t.Fatalf("only %d samples before the damage", len(v))
	}

	pin := filepath.Join(h.root, h.parent, "xmv_drops")
	orig, err := ebpf.LoadPinnedMap(pin, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	wrong, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	if err := orig.Unpin(); err != nil {
		t.Fatal(err)
	}
	if err := wrong.Pin(pin); err != nil {
		t.Fatal(err)
	}
	v := scrapeView(t, ex)
	var names []string
	for k := range v {
		names = append(names, k[:strings.Index(k, "{")])
	}
	sort.Strings(names)
	if want := []string{"build_info", "scrape_errors_total"}; !slices.Equal(names, want) {
		t.Errorf("scrape of an unreadable table: %v, want only %v", names, want)
	}
	if v["scrape_errors_total{}"] != 1 {
		t.Errorf("scrape errors %v, want 1", v["scrape_errors_total{}"])
	}

	if err := wrong.Unpin(); err != nil {
		t.Fatal(err)
	}
	if err := orig.Pin(pin); err != nil {
		t.Fatal(err)
	}
	v = scrapeView(t, ex)
	if _, ok := v["drops_total{reason=unknown_vlan}"]; !ok || v["scrape_errors_total{}"] != 1 {
		t.Errorf("after the table is back: %d samples, %v errors", len(v), v["scrape_errors_total{}"])
	}
}

// An exporter over an attached parent with 1,000 endpoints, registered in
// the real pinned tables with fake ifindexes (no veths): the exporter reads
// tables, never interfaces.
func exporter1000(t testing.TB) (*host, http.Handler) {
	const endpoints = 1000
	l := newLab(t)
	h := l.host()
	h.attach("")
	vlans := []uint16{10, 20, 30, 40}
	for _, v := range vlans {
		h.network(fmt.Sprintf("v%d", v), v, tables.Bridge)
	}
	var added []tables.Endpoint
	t.Cleanup(func() {
		h.ns.Do(func() error {
			hd, err := loader.Open(h.root, h.parent)
			if err != nil {
				return err
			}
			defer hd.Close()
			for _, ep := range added {
				hd.Tables.DeleteEndpoint(ep.Ifindex)
				hd.Tables.DeleteRecord(ep.ID)
			}
			return nil
		})
	})
	h.tables(func(tb *tables.Tables) error {
		for i := range endpoints {
			ep := tables.Endpoint{
				Ifindex: 1_000_000 + i,
				VLAN:    vlans[i%len(vlans)],
				MAC:     net.HardwareAddr{0x02, 0xbe, 0, 0, byte(i >> 8), byte(i)},
				Netns:   fmt.Sprintf("bench-%04d", i),
				Ifname:  "eth0",
			}
			// A fixture straight in the tables (no veths, as the bpf tests
			// do): the exporter reads the tables and records only.
			ep, err := tb.AddEndpoint(ep)
			if err != nil {
				return err
			}
			if err := tb.PutRecord(tables.Record{Endpoint: ep, State: tables.Ready}); err != nil {
				return err
			}
			added = append(added, ep)
		}
		return nil
	})
	return h, exporter(t, h.root)
}

// 1,000 endpoints are all exported, and the output still passes promtool.
func TestMetrics1000Endpoints(t *testing.T) {
	_, ex := exporter1000(t)
	body := scrapeBody(t, ex)
	n := 0
	for k := range viewOf(parseExposition(t, body)) {
		if strings.HasPrefix(k, "rx_packets_total{") {
			n++
		}
	}
	if n != 1000 {
		t.Fatalf("%d endpoints exported, want 1000", n)
	}
	testutil.Promtool(t, body)
}

// How long a scrape takes with 1,000 endpoints on one parent: the whole
// path Prometheus drives (the loader's lock, opening the pins, reading
// every counter, building the metrics, the text encoding), from an
// in-process HTTP handler. `make bench` runs it; docs/observability.md
// quotes the result.
func BenchmarkMetricsScrape1000Endpoints(b *testing.B) {
	_, ex := exporter1000(b)
	for b.Loop() {
		scrapeBody(b, ex)
	}
}

// Of which reading the tables (loader.Snapshots).
func BenchmarkMetricsRead1000Endpoints(b *testing.B) {
	h, _ := exporter1000(b)
	for b.Loop() {
		if _, err := loader.Snapshots(h.root, ""); err != nil {
			b.Fatal(err)
		}
	}
}
