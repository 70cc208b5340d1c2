package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/metrics"
	"github.com/xmacvlan/xmacvlan/tables"
)

// promView is one scrape: every sample by name and labels, the parent
// label left out ("rx_packets_total{endpoint=ns/eth0,network=v10,vlan=10}").
type promView map[string]float64

// exporter serves the collector over the pinned tables under root, as
// `xmacvlan metrics` does.
func exporter(t testing.TB, root string) http.Handler {
	t.Helper()
	reg, err := metrics.NewRegistry(metrics.PinnedSource(root), nil, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	return metrics.Handler(reg, t.Logf)
}

// scrapeBody fetches /metrics over HTTP.
func scrapeBody(t testing.TB, h http.Handler) []byte {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.Bytes()
}

// parseExposition reads the text format with Prometheus' own parser.
func parseExposition(t testing.TB, body []byte) map[string]*dto.MetricFamily {
	t.Helper()
	fams, err := parseText(body)
	if err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	return fams
}

func parseText(body []byte) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse exposition: %w", err)
	}
	return fams, nil
}

func viewOf(fams map[string]*dto.MetricFamily) promView {
	v := promView{}
	for name, f := range fams {
		for _, m := range f.Metric {
			var labels []string
			for _, l := range m.Label {
				if l.GetName() != "parent" {
					labels = append(labels, l.GetName()+"="+l.GetValue())
				}
			}
			sort.Strings(labels)
			key := strings.TrimPrefix(name, "xmacvlan_") + "{" + strings.Join(labels, ",") + "}"
			switch {
			case m.Counter != nil:
				v[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				v[key] = m.Gauge.GetValue()
			}
		}
	}
	return v
}

func scrapeView(t testing.TB, h http.Handler) promView {
	t.Helper()
	return viewOf(parseExposition(t, scrapeBody(t, h)))
}

// moved is what the counters (not gauges, not the exporter's own) did
// between two scrapes. Series gone since (a removed endpoint) are left out.
func (v promView) moved(before promView) promView {
	d := promView{}
	for k, x := range v {
		if !strings.Contains(k, "_total{") || strings.HasPrefix(k, "scrape_errors_total") {
			continue
		}
		if x != before[k] {
			d[k] = x - before[k]
		}
	}
	return d
}

// expect is the counters one burst of frames must move, and only those.
type expect promView

func epKey(metric string, c *container, network string) string {
	return fmt.Sprintf("%s{endpoint=%s,network=%s,vlan=%d}", metric, metrics.EndpointLabel(c.ep), network, c.ep.VLAN)
}

// rx: n frames of size bytes (untagged) delivered to c.
func (e expect) rx(c *container, network string, n, size int) expect {
	e[epKey("rx_packets_total", c, network)] += float64(n)
	e[epKey("rx_bytes_total", c, network)] += float64(n * size)
	return e
}

func (e expect) tx(c *container, network string, n, size int) expect {
	e[epKey("tx_packets_total", c, network)] += float64(n)
	e[epKey("tx_bytes_total", c, network)] += float64(n * size)
	return e
}

func (e expect) vlan(dir string, vlan uint16, network string, n, size int) expect {
	e[fmt.Sprintf("vlan_%s_packets_total{network=%s,vlan=%d}", dir, network, vlan)] += float64(n)
	e[fmt.Sprintf("vlan_%s_bytes_total{network=%s,vlan=%d}", dir, network, vlan)] += float64(n * size)
	return e
}

func (e expect) event(ev tables.EventKind, n, size int) expect {
	e[fmt.Sprintf("events_total{event=%s}", ev)] += float64(n)
	e[fmt.Sprintf("event_bytes_total{event=%s}", ev)] += float64(n * size)
	return e
}

// drop: the bytes of a dropped frame depend on where it was dropped (XDP
// counts the tag, TC after the kernel moved it to metadata does not), so
// drop bytes are checked to lie between n*(size-8) and n*size.
func (e expect) drop(r tables.DropReason, n, size int) expect {
	e[fmt.Sprintf("drops_total{reason=%s}", r)] += float64(n)
	e[fmt.Sprintf("drop_bytes_total{reason=%s}", r)] += float64(n * size)
	return e
}

func (e expect) check(got promView) error {
	var errs []string
	for k, want := range e {
		g := got[k]
		if strings.HasPrefix(k, "drop_bytes_total") {
			n := e[strings.Replace(k, "drop_bytes_total", "drops_total", 1)]
			if g > want || g < want-8*n {
				errs = append(errs, fmt.Sprintf("%s moved %v, want %v-%v", k, g, want-8*n, want))
			}
			continue
		}
		if g != want {
			errs = append(errs, fmt.Sprintf("%s moved %v, want %v", k, g, want))
		}
	}
	for k, g := range got {
		if _, ok := e[k]; !ok {
			errs = append(errs, fmt.Sprintf("%s moved %v, want 0", k, g))
		}
	}
	slices.Sort(errs)
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "\n"))
	}
	return nil
}

// quiet turns IPv6 off in a namespace: no router solicitations, DAD or
// MLD reports moving counters in the middle of a count.
func quiet(t *testing.T, ns *testutil.Netns) {
	t.Helper()
	if _, err := run(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"); err != nil {
		t.Fatal(err)
	}
}

// lowerMTU sets the MTU of dev in ns to mtu if it is above it.
func lowerMTU(t *testing.T, ns *testutil.Netns, dev string, mtu int) {
	t.Helper()
	l, err := ns.NL.LinkByName(dev)
	if err == nil && l.Attrs().MTU > mtu {
		err = ns.NL.LinkSetMTU(l, mtu)
	}
	if err != nil {
		t.Fatalf("MTU of %s: %v", dev, err)
	}
}

// settle waits until no counter has moved for 1.5 s and returns the
// scrape: the switch's stack sends its IGMPv3 reports in the first second
// or two after br0 gets its address, at random times.
func settle(t *testing.T, ex http.Handler) promView {
	t.Helper()
	last := scrapeView(t, ex)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		time.Sleep(1500 * time.Millisecond)
		v := scrapeView(t, ex)
		if len(v.moved(last)) == 0 {
			return v
		}
		last = v
	}
	t.Fatal("the counters never stopped moving with no traffic sent")
	return nil
}

// TestCountersMatchTrafficSent sends bursts of real frames through every
// path of the datapath, and every drop reason real frames can produce, and
// checks after each burst, through the Prometheus exporter, that exactly
// the counters of that path moved, by exactly the frames sent; at the end
// `xmacvlan stats -o json` (the CLI, a separate process) must agree with
// the exporter on every counter.
func TestCountersMatchTrafficSent(t *testing.T) {
	for _, mode := range []loader.XDPChoice{loader.XDPOn, loader.XDPOff} {
		t.Run(string(mode), func(t *testing.T) { countersMatchTraffic(t, mode) })
	}
}

func countersMatchTraffic(t *testing.T, mode loader.XDPChoice) {
	l := newLab(t)
	h := l.host()
	hairpin := true
	if _, err := h.tryAttach(loader.AttachOptions{XDP: mode, Hairpin: &hairpin}); err != nil {
		t.Fatal(err)
	}
	h.network("lan", 0, tables.Bridge)
	h.network("v10", 10, tables.Bridge)
	h.network("v20", 20, tables.Private)
	u := h.container("lan", "02:00:00:00:00:0a", "", false)
	a := h.container("v10", "02:00:00:00:10:0a", "", false)
	native := mode == loader.XDPOn
	b := h.container("v10", "02:00:00:00:10:0b", "", native) // XDP delivery, which --xdp off refuses
	p1 := h.container("v20", "02:00:00:00:20:01", "", false)
	p2 := h.container("v20", "02:00:00:00:20:02", "", false)
	// One broadcast a second: of a burst, the first passes, the rest are
	// storm drops (a burst of n takes far less than the second that
	// refills the next token).
	s := h.stormContainer(t, "v20", "", 1)
	for _, ns := range []*testutil.Netns{l.sw, h.ns, u.ns, a.ns, b.ns, p1.ns, p2.ns} {
		quiet(t, ns)
	}
	var parentMAC = mustMAC("00:00:00:00:00:00")
	h.tables(func(tb *tables.Tables) error {
		s, err := tb.Settings()
		parentMAC = s.ParentMAC
		return err
	})

	wire := newSender(t, l.sw, h.port)
	host := newSender(t, h.ns, h.parent)
	from := map[*container]*sender{}
	for _, c := range []*container{u, a, b, p1, p2, s} {
		from[c] = newSender(t, c.ns, "eth0")
	}
	ex := exporter(t, h.root)

	const n = 7
	far := mustMAC("02:00:00:00:99:01")    // a station on the wire
	nobody := mustMAC("02:00:00:00:77:77") // no endpoint has it
	bcast := mustMAC("ff:ff:ff:ff:ff:ff")  //
	q := func(vid uint16) [][2]uint16 { return [][2]uint16{{tpid8021Q, vid}} }
	payload := bytes.Repeat([]byte("xmv-counters."), 6) // 78 bytes
	const size = 14 + 78                                // untagged frame
	runt := append(append(append([]byte{}, a.ep.MAC...), far...), 0x81, 0x00, 0x00)
	big := bytes.Repeat([]byte("xmv-too-big."), 100) // 1200 bytes
	const bigSize = 14 + 1200

	steps := []struct {
		name   string
		send   func()
		expect expect
	}{
		{"wire to endpoint, VLAN 10, skb delivery",
			func() { wire.send(t, frame(a.ep.MAC, far, q(10), payload)) },
			expect{}.rx(a, "v10", n, size).vlan("rx", 10, "v10", n, size)},
		{"wire to endpoint, VLAN 10, XDP delivery",
			func() { wire.send(t, frame(b.ep.MAC, far, q(10), payload)) },
			func() expect {
				e := expect{}.rx(b, "v10", n, size).vlan("rx", 10, "v10", n, size)
				if native { // --xdp off has no XDP: the skb path delivers
					e.event(tables.EvXDPRedirect, n, size)
				}
				return e
			}()},
		{"wire broadcast into VLAN 10 (flood)",
			func() { wire.send(t, frame(bcast, far, q(10), payload)) },
			expect{}.vlan("rx", 10, "v10", n, size).rx(a, "v10", n, size).rx(b, "v10", n, size).
				event(tables.EvFloodFrames, n, size).event(tables.EvFloodCopies, 2*n, size)},
		{"wire to endpoint, untagged",
			func() { wire.send(t, frame(u.ep.MAC, far, nil, payload)) },
			expect{}.rx(u, "lan", n, size).vlan("rx", 0, "lan", n, size)},
		{"wire to an unknown MAC, untagged (the host's)",
			func() { wire.send(t, frame(nobody, far, nil, payload)) },
			expect{}.event(tables.EvHostPass, n, size)},
		{"endpoint to the wire",
			func() { from[a].send(t, frame(far, a.ep.MAC, nil, payload)) },
			expect{}.tx(a, "v10", n, size).vlan("tx", 10, "v10", n, size)},
		{"endpoint to endpoint, bridge mode (local switch)",
			func() { from[a].send(t, frame(b.ep.MAC, a.ep.MAC, nil, payload)) },
			expect{}.tx(a, "v10", n, size).rx(b, "v10", n, size).vlan("tx", 10, "v10", n, size).
				vlan("rx", 10, "v10", n, size).event(tables.EvLocalSwitch, n, size)},
		{"endpoint broadcast (flood to the other member, and the wire)",
			func() { from[a].send(t, frame(bcast, a.ep.MAC, nil, payload)) },
			expect{}.tx(a, "v10", n, size).vlan("tx", 10, "v10", n, size).rx(b, "v10", n, size).
				event(tables.EvFloodFrames, n, size).event(tables.EvFloodCopies, n, size)},
		{"endpoint to its host (hairpin)",
			func() { from[u].send(t, frame(parentMAC, u.ep.MAC, nil, payload)) },
			expect{}.tx(u, "lan", n, size).vlan("tx", 0, "lan", n, size).event(tables.EvHairpinToHost, n, size)},
		{"host to endpoint (hairpin)",
			func() { host.send(t, frame(u.ep.MAC, parentMAC, nil, payload)) },
			expect{}.rx(u, "lan", n, size).vlan("rx", 0, "lan", n, size).event(tables.EvHairpinToEndpoint, n, size)},

		// Drops, one reason after the other.
		{"runt from the wire",
			func() { wire.send(t, runt) },
			// Without XDP the kernel frees a tagged frame too short
			// for its tag (skb_vlan_untag) before tcx sees it: only
			// XDP can count a runt.
			func() expect {
				if native {
					return expect{}.drop(tables.DropRunt, n, len(runt))
				}
				return expect{}
			}()},
		{"unknown VLAN from the wire",
			func() { wire.send(t, frame(a.ep.MAC, far, q(99), payload)) },
			expect{}.drop(tables.DropUnknownVLAN, n, size+4)},
		{"802.1ad (QinQ) from the wire",
			func() { wire.send(t, frame(a.ep.MAC, far, [][2]uint16{{tpid8021AD, 10}, {tpid8021Q, 10}}, payload)) },
			expect{}.drop(tables.DropStackedVLAN, n, size+8)},
		{"unknown unicast on VLAN 10 from the wire",
			func() { wire.send(t, frame(nobody, far, q(10), payload)) },
			expect{}.drop(tables.DropUnknownDst, n, size+4)},
		{"spoofed source MAC from an endpoint",
			func() { from[a].send(t, frame(far, nobody, nil, payload)) },
			expect{}.drop(tables.DropSpoofedSrc, n, size)},
		{"802.1Q-tagged frame from an endpoint",
			func() { from[a].send(t, frame(far, a.ep.MAC, q(20), payload)) },
			expect{}.drop(tables.DropTaggedFromEndpoint, n, size+4)},
		{"endpoint to endpoint in a private network",
			func() { from[p1].send(t, frame(p2.ep.MAC, p1.ep.MAC, nil, payload)) },
			// The sender's tx counts before the mode is looked at.
			expect{}.tx(p1, "v20", n, size).vlan("tx", 20, "v20", n, size).drop(tables.DropPrivateMode, n, size)},
		{"broadcasts over the endpoint's storm limit",
			func() { from[s].send(t, frame(bcast, s.ep.MAC, nil, payload)) },
			expect{}.tx(s, "v20", 1, size).vlan("tx", 20, "v20", 1, size).drop(tables.DropStorm, n-1, size)},
		{"own broadcast reflected by the switch (bridge mode)",
			func() { wire.send(t, frame(bcast, a.ep.MAC, q(10), payload)) },
			expect{}.drop(tables.DropLooped, n, size+4)},
		// Last: the parent's MTU stays lowered, as after `ip link set
		// PARENT mtu 1400` under running endpoints.
		{"frame longer than the parent's MTU from an endpoint",
			func() {
				lowerMTU(t, h.ns, h.parent, bigSize-14-1)
				from[a].send(t, frame(far, a.ep.MAC, nil, big))
			},
			// The sender's tx counts before the parent is looked at.
			expect{}.tx(a, "v10", n, bigSize).vlan("tx", 10, "v10", n, bigSize).drop(tables.DropTooBig, n, bigSize)},
		// helper_failed (bpf_skb_vlan_push/pop or bpf_xdp_adjust_head
		// failing) takes the kernel running out of memory: no frame can
		// provoke it, and it is not faked here.
	}
	before := settle(t, ex)
	for _, st := range steps {
		for range n {
			st.send()
		}
		var after promView
		err := eventually(2*time.Second, func() error {
			after = scrapeView(t, ex)
			return st.expect.check(after.moved(before))
		})
		if err == nil {
			// Nothing arrives late.
			time.Sleep(100 * time.Millisecond)
			after = scrapeView(t, ex)
			err = st.expect.check(after.moved(before))
		}
		if err != nil {
			t.Errorf("%s:\n%v", st.name, err)
		}
		before = after
	}

	// not_endpoint: a frame from an interface that still runs the
	// endpoint program but is no longer in the endpoint table. That is the
	// moment inside RemoveEndpoint between the table delete and the link
	// removal (and inside AddEndpoint between link and tables); this holds
	// that moment open with the first half of the removal alone.
	h.tables(func(tb *tables.Tables) error { return tb.DeleteEndpoint(p2.ep.Ifindex) })
	for range n {
		from[p2].send(t, frame(far, p2.ep.MAC, nil, payload))
	}
	want := expect{}.drop(reasonNamed(t, "not_endpoint"), n, size)
	err := eventually(2*time.Second, func() error { return want.check(scrapeView(t, ex).moved(before)) })
	if err != nil {
		t.Errorf("frames from a half-removed endpoint:\n%v", err)
	}
	final := scrapeView(t, ex)
	// Every reason the datapath has was counted above, but those real
	// frames cannot produce. A new reason fails here until a frame for it
	// is added to the steps (or it is shown to be unreachable).
	// no_parent takes deleting the parent, which would end this test:
	// TestTxNoParent (bpf/) deletes one under the program.
	unreachable := map[string]bool{"helper_failed": true, "runt": !native, "no_parent": true}
	for _, r := range tables.DropReasons() {
		if final[fmt.Sprintf("drops_total{reason=%s}", r)] == 0 && !unreachable[r.String()] {
			t.Errorf("no frame of this test was dropped as %s: add one", r)
		}
	}
	if _, ok := final[epKey("rx_packets_total", p2, "v20")]; ok {
		t.Error("the removed endpoint is still exported")
	}
	if final["scrape_errors_total{}"] != 0 {
		t.Errorf("%v scrape errors", final["scrape_errors_total{}"])
	}
	checkStatsCLI(t, h, final)
}

// statsOutput is the part of `xmacvlan stats -o json` compared here.
type statsOutput struct {
	Parents []struct {
		Parent    string `json:"parent"`
		Endpoints []struct {
			Network   string `json:"network"`
			VLAN      uint16 `json:"vlan"`
			Netns     string `json:"netns"`
			Ifname    string `json:"ifname"`
			RxPackets uint64 `json:"rx_packets"`
			RxBytes   uint64 `json:"rx_bytes"`
			TxPackets uint64 `json:"tx_packets"`
			TxBytes   uint64 `json:"tx_bytes"`
		} `json:"endpoints"`
		VLANs []struct {
			VLAN      uint16 `json:"vlan"`
			Network   string `json:"network"`
			RxPackets uint64 `json:"rx_packets"`
			TxPackets uint64 `json:"tx_packets"`
		} `json:"vlans"`
		Drops []struct {
			Reason      string `json:"reason"`
			Explanation string `json:"explanation"`
			Packets     uint64 `json:"packets"`
		} `json:"drops"`
		Events []struct {
			Event   string `json:"event"`
			Packets uint64 `json:"packets"`
		} `json:"events"`
	} `json:"parents"`
}

// checkStatsCLI runs `xmacvlan stats PARENT -o json` and compares it with
// a scrape of the same (now idle) tables.
func checkStatsCLI(t *testing.T, h *host, prom promView) {
	t.Helper()
	out, err := h.cli("stats", h.parent, "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var s statsOutput
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("stats -o json: %v\n%s", err, out)
	}
	if len(s.Parents) != 1 || s.Parents[0].Parent != h.parent {
		t.Fatalf("stats -o json: parents %+v", s.Parents)
	}
	p := s.Parents[0]
	got := promView{}
	for _, e := range p.Endpoints {
		l := fmt.Sprintf("{endpoint=%s/%s,network=%s,vlan=%d}", e.Netns, e.Ifname, e.Network, e.VLAN)
		got["rx_packets_total"+l], got["rx_bytes_total"+l] = float64(e.RxPackets), float64(e.RxBytes)
		got["tx_packets_total"+l], got["tx_bytes_total"+l] = float64(e.TxPackets), float64(e.TxBytes)
	}
	for _, v := range p.VLANs {
		l := fmt.Sprintf("{network=%s,vlan=%d}", v.Network, v.VLAN)
		got["vlan_rx_packets_total"+l], got["vlan_tx_packets_total"+l] = float64(v.RxPackets), float64(v.TxPackets)
	}
	for _, d := range p.Drops {
		got["drops_total{reason="+d.Reason+"}"] = float64(d.Packets)
		if d.Explanation == "" {
			t.Errorf("stats: reason %s is not explained", d.Reason)
		}
	}
	for _, e := range p.Events {
		got["events_total{event="+e.Event+"}"] = float64(e.Packets)
	}
	if len(p.Drops) != len(tables.DropReasons()) || len(p.Events) != len(tables.EventKinds()) {
		t.Errorf("stats: %d reasons and %d events, want %d and %d", len(p.Drops), len(p.Events),
			len(tables.DropReasons()), len(tables.EventKinds()))
	}
	for k, v := range got {
		if prom[k] != v {
			t.Errorf("stats says %s = %v, the exporter %v", k, v, prom[k])
		}
	}
	if t.Failed() {
		t.Logf("stats -o json:\n%s", out)
	}
}

// reasonNamed finds a drop reason that maps has no constant for.
func reasonNamed(t *testing.T, name string) tables.DropReason {
	for _, r := range tables.DropReasons() {
		if r.String() == name {
			return r
		}
	}
	t.Fatalf("no drop reason %s", name)
	return 0
}
