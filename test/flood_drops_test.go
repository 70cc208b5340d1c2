package test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/xmacvlan/xmacvlan/tables"
)

// A flood copy the endpoint's veth cannot take (here: the endpoint's end
// is down) is counted for that endpoint, exactly, as rx_dropped in
// `endpoint list` and `stats`; the other member's copies arrive.
func TestFloodCopyDroppedIsCounted(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.attach("")
	h.network("v10", 10, tables.Bridge)
	a := h.container("v10", "", "", false)
	b := h.container("v10", "", "", false)
	quiet(t, a.ns)
	quiet(t, b.ns)
	if err := b.ns.NL.LinkSetDown(mustLink(t, b.ns, "eth0")); err != nil {
		t.Fatal(err)
	}
	// dropped reads rx_dropped by outer ifindex from both commands, which
	// must agree.
	dropped := func() map[int]uint64 {
		t.Helper()
		out, err := h.cli("endpoint", "list", "v10", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var rows []struct {
			Ifindex   int    `json:"outer_ifindex"`
			RxDropped uint64 `json:"rx_dropped"`
		}
		if err := json.Unmarshal([]byte(out), &rows); err != nil {
			t.Fatalf("endpoint list -o json: %v\n%s", err, out)
		}
		got := map[int]uint64{}
		for _, r := range rows {
			got[r.Ifindex] = r.RxDropped
		}
		out, err = h.cli("stats", "-o", "json")
		if err != nil {
			t.Fatal(err)
		}
		var stats struct {
			Parents []struct {
				Endpoints []struct {
					Ifindex   int    `json:"outer_ifindex"`
					RxDropped uint64 `json:"rx_dropped"`
				} `json:"endpoints"`
			} `json:"parents"`
		}
		if err := json.Unmarshal([]byte(out), &stats); err != nil || len(stats.Parents) != 1 {
			t.Fatalf("stats -o json: %v\n%s", err, out)
		}
		for _, e := range stats.Parents[0].Endpoints {
			if got[e.Ifindex] != e.RxDropped {
				t.Errorf("outer ifindex %d: stats says %d dropped, endpoint list %d", e.Ifindex, e.RxDropped, got[e.Ifindex])
			}
		}
		return got
	}
	before := dropped()
	capA := startCapture(t, a.ns, "eth0")
	wire := newSender(t, l.sw, h.port)
	marker := []byte("xmv-flood-drop")
	const n = 5
	for range n {
		wire.send(t, frame(mustMAC("ff:ff:ff:ff:ff:ff"), mustMAC("02:00:00:00:99:01"), [][2]uint16{{tpid8021Q, 10}}, marker))
	}
	err := eventually(3*time.Second, func() error {
		if got := len(capA.matching(marker)); got != n {
			return fmt.Errorf("the member that is up received %d of %d broadcasts", got, n)
		}
		after := dropped()
		if d := after[b.ep.Ifindex] - before[b.ep.Ifindex]; d != n {
			return fmt.Errorf("the member that is down: %d copies counted as dropped, want %d", d, n)
		}
		if d := after[a.ep.Ifindex] - before[a.ep.Ifindex]; d != 0 {
			return fmt.Errorf("the member that is up: %d copies counted as dropped, want 0", d)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
