package metrics

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// fixture is one parent with an untagged and a tagged network, three
// endpoints (one registered without netns/ifname) and every drop reason
// and event counted at least once.
func fixture() []loader.ParentSnapshot {
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	s := loader.ParentSnapshot{Parent: "ens33", Snapshot: tables.Snapshot{
		Networks: []tables.Network{
			{VLAN: 0, Name: "lan", Mode: tables.Bridge, Members: 1},
			{VLAN: 10, Name: "v10", Mode: tables.Private, Members: 2},
		},
		Endpoints: []tables.EndpointCounters{
			{Endpoint: tables.Endpoint{Ifindex: 7, ID: 0, VLAN: 0, MAC: mac("02:00:00:00:00:01"), Netns: "web", Ifname: "eth0"},
				Traffic: tables.Traffic{RxPackets: 10, RxBytes: 1000, TxPackets: 20, TxBytes: 2000}},
			{Endpoint: tables.Endpoint{Ifindex: 8, ID: 1, VLAN: 10, MAC: mac("02:00:00:00:10:01"), Netns: "db", Ifname: "eth0"},
				Traffic: tables.Traffic{RxPackets: 3, RxBytes: 300, TxPackets: 4, TxBytes: 400}},
			{Endpoint: tables.Endpoint{Ifindex: 9, ID: 2, VLAN: 10, MAC: mac("02:00:00:00:10:02")},
				Traffic: tables.Traffic{RxPackets: 5}},
		},
		VLANs: []tables.VLANCounters{
			{VLAN: 0, Traffic: tables.Traffic{RxPackets: 10, RxBytes: 1000, TxPackets: 20, TxBytes: 2000}},
			{VLAN: 10, Traffic: tables.Traffic{RxPackets: 8, RxBytes: 300, TxPackets: 4, TxBytes: 400}},
		},
	}, RxDropped: map[int]uint64{8: 6}}
	for i := range tables.DropReasons() {
		s.Drops = append(s.Drops, tables.Count{Packets: uint64(i + 1), Bytes: uint64(64 * (i + 1))})
	}
	for i := range tables.EventKinds() {
		s.Events = append(s.Events, tables.Count{Packets: uint64(100 + i), Bytes: uint64(6400 + i)})
	}
	return []loader.ParentSnapshot{s}
}

// scrape serves reg over HTTP, as Prometheus reads it, and returns the
// body.
func scrape(t *testing.T, h http.Handler) []byte {
	t.Helper()
	srv := httptest.NewServer(h)
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s\n%s", resp.Status, body)
	}
	return body
}

func parse(t *testing.T, body []byte) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse exposition: %v\n%s", err, body)
	}
	return fams
}

func newHandler(t *testing.T, src Source) http.Handler {
	t.Helper()
	reg, err := NewRegistry(src, nil, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	return Handler(reg, t.Logf)
}

// value returns the sample of family name whose labels include want.
func value(t *testing.T, fams map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	f := fams[name]
	if f == nil {
		t.Fatalf("no metric %s", name)
	}
	var found []float64
	for _, m := range f.Metric {
		if hasLabels(m, want) {
			switch {
			case m.Counter != nil:
				found = append(found, m.Counter.GetValue())
			case m.Gauge != nil:
				found = append(found, m.Gauge.GetValue())
			}
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s%v: %d samples, want 1", name, want, len(found))
	}
	return found[0]
}

func hasLabels(m *dto.Metric, want map[string]string) bool {
	n := 0
	for _, l := range m.Label {
		if v, ok := want[l.GetName()]; ok && v == l.GetValue() {
			n++
		}
	}
	return n == len(want)
}

func TestMetricsFromSnapshot(t *testing.T) {
	fams := parse(t, scrape(t, newHandler(t, func() ([]loader.ParentSnapshot, error) { return fixture(), nil })))

	var names []string
	for name, f := range fams {
		names = append(names, name)
		if strings.HasSuffix(name, "_total") != (f.GetType() == dto.MetricType_COUNTER) {
			t.Errorf("%s is a %s: counters and only counters end in _total", name, f.GetType())
		}
	}
	slices.Sort(names)
	want := []string{
		"xmacvlan_build_info",
		"xmacvlan_drop_bytes_total", "xmacvlan_drops_total",
		"xmacvlan_endpoint_info",
		"xmacvlan_event_bytes_total", "xmacvlan_events_total",
		"xmacvlan_network_endpoints",
		"xmacvlan_rx_bytes_total", "xmacvlan_rx_dropped_total", "xmacvlan_rx_packets_total",
		"xmacvlan_scrape_errors_total",
		"xmacvlan_tx_bytes_total", "xmacvlan_tx_packets_total",
		"xmacvlan_vlan_rx_bytes_total", "xmacvlan_vlan_rx_packets_total",
		"xmacvlan_vlan_tx_bytes_total", "xmacvlan_vlan_tx_packets_total",
	}
	if !slices.Equal(names, want) {
		t.Errorf("metric names:\n got %v\nwant %v", names, want)
	}

	ep := map[string]string{"parent": "ens33", "vlan": "10", "network": "v10", "endpoint": "db/eth0"}
	for name, v := range map[string]float64{
		"xmacvlan_rx_packets_total": 3, "xmacvlan_rx_bytes_total": 300,
		"xmacvlan_tx_packets_total": 4, "xmacvlan_tx_bytes_total": 400,
		"xmacvlan_rx_dropped_total": 6,
	} {
		if got := value(t, fams, name, ep); got != v {
			t.Errorf("%s%v = %v, want %v", name, ep, got, v)
		}
	}
	if got := value(t, fams, "xmacvlan_rx_packets_total", map[string]string{"endpoint": "ifindex:9"}); got != 5 {
		t.Errorf("endpoint without netns record: rx %v, want 5", got)
	}
	if got := value(t, fams, "xmacvlan_vlan_rx_packets_total", map[string]string{"vlan": "10", "network": "v10"}); got != 8 {
		t.Errorf("VLAN 10 rx %v, want 8", got)
	}
	if got := value(t, fams, "xmacvlan_network_endpoints", map[string]string{"vlan": "10", "mode": "private"}); got != 2 {
		t.Errorf("VLAN 10 endpoints %v, want 2", got)
	}
	// Every reason and event the datapath knows, by name.
	for i, r := range tables.DropReasons() {
		l := map[string]string{"parent": "ens33", "reason": r.String()}
		if got := value(t, fams, "xmacvlan_drops_total", l); got != float64(i+1) {
			t.Errorf("drops %s = %v, want %d", r, got, i+1)
		}
	}
	for i, e := range tables.EventKinds() {
		l := map[string]string{"parent": "ens33", "event": e.String()}
		if got := value(t, fams, "xmacvlan_events_total", l); got != float64(100+i) {
			t.Errorf("events %s = %v, want %d", e, got, 100+i)
		}
	}
	if got := value(t, fams, "xmacvlan_scrape_errors_total", nil); got != 0 {
		t.Errorf("scrape errors %v, want 0", got)
	}
	if got := value(t, fams, "xmacvlan_build_info", nil); got != 1 {
		t.Errorf("build_info %v, want 1", got)
	}
}

// xmacvlan_endpoint_info: one per endpoint, with the Docker labels of the
// endpoints the owners name; owners that cannot be read leave the labels
// empty and fail nothing.
func TestMetricsEndpointInfo(t *testing.T) {
	snaps := fixture()
	snaps[0].Endpoints[1].Endpoint.Outer = "xmv8"
	src := func() ([]loader.ParentSnapshot, error) { return snaps, nil }
	var ownersErr error
	owners := func() (map[string]Owner, error) {
		return map[string]Owner{"xmv8": {DockerEndpoint: "e0123", Container: "bbox10"}}, ownersErr
	}
	reg, err := NewRegistry(src, owners, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	fams := parse(t, scrape(t, Handler(reg, t.Logf)))
	if n := len(fams["xmacvlan_endpoint_info"].GetMetric()); n != 3 {
		t.Errorf("%d endpoint_info samples for 3 endpoints", n)
	}
	db := map[string]string{"parent": "ens33", "vlan": "10", "network": "v10", "endpoint": "db/eth0",
		"mac": "02:00:00:00:10:01", "outer": "xmv8", "docker_endpoint": "e0123", "container": "bbox10"}
	if got := value(t, fams, "xmacvlan_endpoint_info", db); got != 1 {
		t.Errorf("endpoint_info%v = %v, want 1", db, got)
	}
	// An empty label is no label in the exposition.
	containers := func(fams map[string]*dto.MetricFamily) int {
		n := 0
		for _, m := range fams["xmacvlan_endpoint_info"].GetMetric() {
			if hasLabels(m, map[string]string{"container": "bbox10"}) {
				n++
			}
		}
		return n
	}
	if n := containers(fams); n != 1 {
		t.Errorf("%d endpoint_info samples name container bbox10, want 1", n)
	}

	ownersErr = fmt.Errorf("state file unreadable")
	fams = parse(t, scrape(t, Handler(reg, t.Logf)))
	if n := len(fams["xmacvlan_endpoint_info"].GetMetric()); n != 3 || containers(fams) != 0 {
		t.Errorf("owners unreadable: %d endpoint_info samples (want 3), %d naming bbox10 (want 0)", n, containers(fams))
	}
	if got := value(t, fams, "xmacvlan_scrape_errors_total", nil); got != 0 {
		t.Errorf("owners unreadable: scrape errors %v, want 0 (the counters are whole)", got)
	}
}

// A failed read reports the error and nothing else read from the tables:
// never a partial set of counters.
func TestMetricsReadErrorEmitsNoCounter(t *testing.T) {
	fail := true
	h := newHandler(t, func() ([]loader.ParentSnapshot, error) {
		if fail {
			return nil, errors.New("table gone")
		}
		return fixture(), nil
	})
	for i := 1; i <= 2; i++ {
		fams := parse(t, scrape(t, h))
		var names []string
		for name := range fams {
			names = append(names, name)
		}
		slices.Sort(names)
		if want := []string{"xmacvlan_build_info", "xmacvlan_scrape_errors_total"}; !slices.Equal(names, want) {
			t.Fatalf("after a read error: %v, want only %v", names, want)
		}
		if got := value(t, fams, "xmacvlan_scrape_errors_total", nil); got != float64(i) {
			t.Fatalf("scrape errors %v, want %d", got, i)
		}
	}
	fail = false
	fams := parse(t, scrape(t, h))
	if got := value(t, fams, "xmacvlan_scrape_errors_total", nil); got != 2 {
		t.Errorf("scrape errors after recovery %v, want 2", got)
	}
	if fams["xmacvlan_rx_packets_total"] == nil {
		t.Error("no counters after recovery")
	}
}

// Two endpoints that would carry the same labels are added up rather than
// failing the whole scrape (the registry rejects duplicates).
func TestMetricsDuplicateLabelsAddUp(t *testing.T) {
	snaps := fixture()
	dup := snaps[0].Endpoints[1]
	dup.Endpoint.Ifindex, dup.Endpoint.ID = 11, 3
	snaps[0].Endpoints = append(snaps[0].Endpoints, dup)
	fams := parse(t, scrape(t, newHandler(t, func() ([]loader.ParentSnapshot, error) { return snaps, nil })))
	if got := value(t, fams, "xmacvlan_rx_packets_total", map[string]string{"endpoint": "db/eth0"}); got != 6 {
		t.Errorf("rx %v, want 3+3", got)
	}
}

// promtool is what Prometheus' own tooling says of the exposition.
// Debian's prometheus package ships it (scripts/setup-host.sh).
func TestMetricsPromtoolCheck(t *testing.T) {
	body := scrape(t, newHandler(t, func() ([]loader.ParentSnapshot, error) { return fixture(), nil }))
	testutil.Promtool(t, body)
}

// The exporter's own cost for 1,000 endpoints, tables aside: building the
// metrics, the registry's checks and the text encoding. The whole scrape
// over real pinned tables is measured in test/ (TestMetricsScrapeTime1000Endpoints).
func BenchmarkScrapeEncode1000Endpoints(b *testing.B) {
	snaps := fixture()
	eps := snaps[0].Endpoints
	snaps[0].Endpoints = nil
	for i := range 1000 {
		e := eps[i%2]
		e.Endpoint.Ifindex, e.Endpoint.ID, e.Endpoint.Netns = 100+i, i, fmt.Sprintf("bench-%04d", i)
		snaps[0].Endpoints = append(snaps[0].Endpoints, e)
	}
	reg, err := NewRegistry(func() ([]loader.ParentSnapshot, error) { return snaps, nil }, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	h := Handler(reg, nil)
	req := httptest.NewRequest("GET", "/metrics", nil)
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatal(rec.Code)
		}
	}
}
