package test

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/lifecycle"
	"github.com/xmacvlan/xmacvlan/tables"
)

// stormContainer is h.container with a storm limit, in a namespace without
// IPv6 so that nothing but the test's frames spends its bucket.
func (h *host) stormContainer(t *testing.T, network, cidr string, pps uint32) *container {
	t.Helper()
	c := &container{ns: testutil.NewNetns(t, "xc")}
	quiet(t, c.ns)
	return h.addEndpoint(c, network, lifecycle.Spec{Netns: c.ns.Path(), StormLimit: pps}, cidr)
}

func (h *host) stormNetwork(t *testing.T, name string, vlan uint16, pps uint32) {
	t.Helper()
	err := h.ns.Do(func() error {
		_, err := h.lc().CreateNetwork(h.parent, lifecycle.NetworkSpec{Name: name, VLAN: vlan, StormLimit: pps})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// storm sends frame out of s for about d, paced (a burst, then a pause) so
// that no veth backlog drops what it sends: every frame it counts reaches
// the datapath. It returns the frames sent and the time from the first to
// the last.
func storm(t *testing.T, s *sender, frame []byte, d time.Duration) (int, time.Duration) {
	t.Helper()
	sent := 0
	start := time.Now()
	var last time.Time
	for time.Since(start) < d {
		for range 20 {
			if err := s.Send(frame); err != nil {
				t.Fatalf("send: %v", err)
			}
			sent++
		}
		last = time.Now()
		time.Sleep(2 * time.Millisecond)
	}
	return sent, last.Sub(start)
}

// stormBound is the most frames a bucket of pps may let through in elapsed:
// one second of the rate (its depth) plus the refill, one for the refill's
// rounding, and the refill of queueLag: the datapath may still be working
// through the last frames queued in the veth when the last send returns.
func stormBound(pps uint32, elapsed time.Duration) int {
	const queueLag = 50 * time.Millisecond
	return int(pps) + int(float64(pps)*(elapsed+queueLag).Seconds()) + 1
}

func linkTxDropped(t *testing.T, ns *testutil.Netns, dev string) uint64 {
	t.Helper()
	return mustLink(t, ns, dev).Attrs().Statistics.TxDropped
}

// One container of a VLAN broadcasts as fast as it is let for over a
// second with --storm-limit: its peers and the wire get at most the limit
// (plus one second of it), the rest is counted as storm drops, and unicast
// between two other containers of the VLAN loses nothing meanwhile.
func TestStormControlEndpoint(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.attach("")
	h.stormNetwork(t, "v10", 10, 0)
	const limit = 200
	a := h.stormContainer(t, "v10", "", limit)
	b := h.stormContainer(t, "v10", "10.10.0.2/24", 0)
	c := h.stormContainer(t, "v10", "10.10.0.3/24", 0)
	if err := ping(b.ns, c.ip); err != nil { // ARP settled before the storm
		t.Fatal(err)
	}
	atB, wire := startCapture(t, b.ns, "eth0"), startCapture(t, l.sw, h.port)
	out := newSender(t, a.ns, "eth0")
	marker := []byte("storm-from-a")
	bcast := frame(mustMAC("ff:ff:ff:ff:ff:ff"), a.ep.MAC, nil, marker)

	drops0, dropped0 := h.drops(), linkTxDropped(t, a.ns, "eth0")
	var pingOut strings.Builder
	pinger := exec.Command("nsenter", "--net="+b.ns.Path(), "ping", "-c", "30", "-i", "0.05", "-W", "1", c.ip)
	pinger.Stdout = &pingOut
	if err := pinger.Start(); err != nil {
		t.Fatal(err)
	}
	sent, took := storm(t, out, bcast, 1500*time.Millisecond)
	pingErr := pinger.Wait()
	seen := sent - int(linkTxDropped(t, a.ns, "eth0")-dropped0) // what reached the datapath

	bound := stormBound(limit, took)
	var passed int
	err := eventually(2*time.Second, func() error {
		passed = len(wire.matching(marker))
		if got := len(atB.matching(marker)); got != passed {
			return fmt.Errorf("the peer got %d broadcasts, the wire %d", got, passed)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	if passed < limit || passed > bound {
		t.Errorf("%d of %d broadcasts passed a limit of %d/s in %v: want %d..%d", passed, seen, limit, took, limit, bound)
	}
	if d := h.drops()[tables.DropStorm].Packets - drops0[tables.DropStorm].Packets; d != uint64(seen-passed) {
		t.Errorf("storm drops +%d, want sent - passed = %d - %d = %d", d, seen, passed, seen-passed)
	}
	if pingErr != nil || !strings.Contains(pingOut.String(), " 0% packet loss") {
		t.Errorf("unicast between two other containers during the storm: %v\n%s", pingErr, pingOut.String())
	}
	t.Logf("%d broadcasts in %v, %d passed (limit %d/s, bound %d)", seen, took, passed, limit, bound)
}

// A VLAN's limit covers what comes from the wire: tagged broadcasts into a
// VLAN with --storm-limit reach its containers at most at the limit, the
// rest counted as storm drops.
func TestStormControlFromWire(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.attach("")
	const limit = 100
	h.stormNetwork(t, "v20", 20, limit)
	d := h.stormContainer(t, "v20", "", 0)
	e := h.stormContainer(t, "v20", "", 0)
	atD, atE := startCapture(t, d.ns, "eth0"), startCapture(t, e.ns, "eth0")
	out := newSender(t, l.sw, h.port)
	marker := []byte("storm-from-the-wire")
	bcast := frame(mustMAC("ff:ff:ff:ff:ff:ff"), mustMAC("02:00:00:00:99:99"), [][2]uint16{{tpid8021Q, 20}}, marker)

	drops0, dropped0 := h.drops(), linkTxDropped(t, l.sw, h.port)
	sent, took := storm(t, out, bcast, 1200*time.Millisecond)
	seen := sent - int(linkTxDropped(t, l.sw, h.port)-dropped0)

	bound := stormBound(limit, took)
	var passed int
	err := eventually(2*time.Second, func() error {
		passed = len(atD.matching(marker))
		if got := len(atE.matching(marker)); got != passed {
			return fmt.Errorf("the members got %d and %d broadcasts", passed, got)
		}
		if d := h.drops()[tables.DropStorm].Packets - drops0[tables.DropStorm].Packets; d != uint64(seen-passed) {
			return fmt.Errorf("storm drops +%d, want sent - passed = %d - %d = %d", d, seen, passed, seen-passed)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	if passed < limit || passed > bound {
		t.Errorf("%d of %d broadcasts passed a VLAN limit of %d/s in %v: want %d..%d", passed, seen, limit, took, limit, bound)
	}
	t.Logf("%d broadcasts in %v, %d passed (limit %d/s, bound %d)", seen, took, passed, limit, bound)
}
