package bpf_test

import (
	"net"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/xmacvlan/xmacvlan/tables"
)

const tcActOK = 0

// stormNetwork adds network vlan (bridge mode) with storm limit vlanPPS and
// one endpoint per entry of eps (name -> its storm limit), with MACs
// 02:00:00:00:<vlan>:<n>.
func (f *fixture) stormNetwork(t *testing.T, vlan uint16, vlanPPS uint32, eps []string, pps []uint32) []tables.Endpoint {
	t.Helper()
	if err := f.tbl.AddNetwork(tables.Network{VLAN: vlan, StormLimit: vlanPPS}); err != nil {
		t.Fatal(err)
	}
	var out []tables.Endpoint
	for i, name := range eps {
		out = append(out, f.stormEndpoint(t, name, vlan, net.HardwareAddr{2, 0, 0, 0, byte(vlan), byte(i + 1)}, pps[i]))
	}
	return out
}

func (f *fixture) stormEndpoint(t *testing.T, name string, vlan uint16, mac net.HardwareAddr, pps uint32) tables.Endpoint {
	t.Helper()
	ifindex := f.veth(t, name)
	var ep tables.Endpoint
	err := f.ns.Do(func() (err error) {
		ep, err = f.tbl.AddEndpoint(tables.Endpoint{Ifindex: ifindex, VLAN: vlan, MAC: mac, StormLimit: pps})
		return err
	})
	if err != nil {
		t.Fatalf("add endpoint %s: %v", name, err)
	}
	return ep
}

// counters is what a burst changed.
type counters struct {
	drops  []tables.Count
	events []tables.Count
}

func (f *fixture) counters(t *testing.T) counters {
	t.Helper()
	d, err := f.tbl.Drops()
	if err != nil {
		t.Fatal(err)
	}
	e, err := f.tbl.Events()
	if err != nil {
		t.Fatal(err)
	}
	return counters{d, e}
}

// checkStormed checks that between before and now exactly stormed frames
// were dropped, all as storm, and passed frames were flooded with copies
// copies each: a refused frame made no copy.
func (f *fixture) checkStormed(t *testing.T, before counters, passed, stormed, copies int) {
	t.Helper()
	after := f.counters(t)
	for r := range after.drops {
		want := uint64(0)
		if tables.DropReason(r) == tables.DropStorm {
			want = uint64(stormed)
		}
		if d := after.drops[r].Packets - before.drops[r].Packets; d != want {
			t.Errorf("drop counter %s moved by %d, want %d", tables.DropReason(r), d, want)
		}
	}
	ev := func(e tables.EventKind) uint64 { return after.events[e].Packets - before.events[e].Packets }
	if got := ev(tables.EvFloodFrames); got != uint64(passed) {
		t.Errorf("%d frames flooded, want the %d that passed", got, passed)
	}
	if got := ev(tables.EvFloodCopies); got != uint64(passed*copies) {
		t.Errorf("%d flood copies, want %d (%d passed x %d members)", got, passed*copies, passed, copies)
	}
}

// burst sends frames through prog (xmv_ep_tx from the endpoint with outer
// ifindex, or xmv_rx_tc) and returns the verdicts and the time it took.
func (f *fixture) burst(t *testing.T, prog *ebpf.Program, ifindex int, frames [][]byte) ([]uint32, time.Duration) {
	t.Helper()
	out := make([]uint32, len(frames))
	start := time.Now()
	err := f.ns.Do(func() error {
		for i, fr := range frames {
			ret, err := prog.Run(&ebpf.RunOptions{Data: fr, Context: skbCtx{Ifindex: uint32(ifindex)}})
			if err != nil {
				return err
			}
			out[i] = ret
		}
		return nil
	})
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	return out, time.Since(start)
}

func repeat(frame []byte, n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		out[i] = frame
	}
	return out
}

func count(rets []uint32, want uint32) int {
	n := 0
	for _, r := range rets {
		if r == want {
			n++
		}
	}
	return n
}

// checkPasses compares the frames that passed with the model's bounds for a
// fresh bucket of pps and a burst that took elapsed.
func checkPasses(t *testing.T, what string, passed int, pps uint64, frames int, elapsed time.Duration) {
	t.Helper()
	lo, hi := stormPasses(pps, frames, elapsed.Nanoseconds())
	if passed < lo || passed > hi {
		t.Errorf("%s: %d of %d frames passed a limit of %d/s in %v; the model says %d..%d", what, passed, frames, pps, elapsed, lo, hi)
	}
}

// An endpoint over its limit: the first limit broadcasts (one second of
// the rate) pass and flood, the rest are dropped as storm before any copy;
// an endpoint without a limit is never dropped; tagged unicast to the wire
// is not limited.
func TestStormEndpoint(t *testing.T) {
	f := newFixture(t)
	eps := f.stormNetwork(t, 50, 0, []string{"s50a", "s50b", "s50c"}, []uint32{20, 0, 0})
	a, b := eps[0], eps[1]
	const n = 60

	before := f.counters(t)
	tx0, _ := f.tbl.EndpointTraffic(a.ID)
	rets, took := f.burst(t, f.dp.Programs.XmvEpTx, a.Ifindex, repeat(ethFrame(bcast, a.MAC.String(), nil, 0x0806, 28), n))
	passed, shot := count(rets, tcActRedirect), count(rets, tcActShot)
	if passed+shot != n {
		t.Fatalf("verdicts %v: want only redirect (to the wire) or shot", rets)
	}
	checkPasses(t, "limited endpoint", passed, 20, n, took)
	f.checkStormed(t, before, passed, shot, 2)
	if tx, _ := f.tbl.EndpointTraffic(a.ID); tx.TxPackets-tx0.TxPackets != uint64(passed) {
		t.Errorf("endpoint sent %d frames by its counters, want the %d that passed", tx.TxPackets-tx0.TxPackets, passed)
	}

	before = f.counters(t)
	rets, _ = f.burst(t, f.dp.Programs.XmvEpTx, b.Ifindex, repeat(ethFrame(bcast, b.MAC.String(), nil, 0x0806, 28), n))
	if got := count(rets, tcActRedirect); got != n {
		t.Errorf("endpoint without a limit: %d of %d broadcasts passed", got, n)
	}
	f.checkStormed(t, before, n, 0, 2)

	// A limit set live applies from the next frame.
	if err := f.tbl.SetEndpointStormLimit(b.Ifindex, 10); err != nil {
		t.Fatal(err)
	}
	rets, took = f.burst(t, f.dp.Programs.XmvEpTx, b.Ifindex, repeat(ethFrame(bcast, b.MAC.String(), nil, 0x0806, 28), n))
	checkPasses(t, "limit set live", count(rets, tcActRedirect), 10, n, took)

	// a's bucket is empty now; its unicast is not storm control's.
	rets, _ = f.burst(t, f.dp.Programs.XmvEpTx, a.Ifindex, repeat(ethFrame(unknown, a.MAC.String(), nil, 0x0806, 28), n))
	if got := count(rets, tcActRedirect); got != n {
		t.Errorf("tagged unknown unicast from a limited endpoint: %d of %d passed", got, n)
	}
}

// The VLAN's bucket is one for all its members: two endpoints taking turns
// get the limit between them.
func TestStormVLANShared(t *testing.T) {
	f := newFixture(t)
	eps := f.stormNetwork(t, 60, 20, []string{"s60a", "s60b"}, []uint32{0, 0})
	const n = 60
	before := f.counters(t)
	passed, shot := 0, 0
	start := time.Now()
	for i := range n {
		ep := eps[i%2]
		rets, _ := f.burst(t, f.dp.Programs.XmvEpTx, ep.Ifindex, [][]byte{ethFrame(bcast, ep.MAC.String(), nil, 0x0806, 28)})
		passed += count(rets, tcActRedirect)
		shot += count(rets, tcActShot)
	}
	took := time.Since(start)
	if passed+shot != n {
		t.Fatalf("%d passed + %d shot, want %d", passed, shot, n)
	}
	checkPasses(t, "VLAN limit, two senders", passed, 20, n, took)
	f.checkStormed(t, before, passed, shot, 1)
}

// From the wire (xmv_rx_tc): a tagged broadcast over the VLAN's limit is
// dropped as storm before any member gets a copy.
func TestStormFromWire(t *testing.T) {
	f := newFixture(t)
	f.stormNetwork(t, 70, 20, []string{"s70a", "s70b"}, []uint32{0, 0})
	const n = 60
	before := f.counters(t)
	rets, took := f.burst(t, f.dp.Programs.XmvRxTc, f.parent, repeat(ethFrame(bcast, host, dot1q(70), 0x0806, 28), n))
	if got := count(rets, tcActShot); got != n {
		t.Fatalf("verdicts %v: a tagged flood always ends shot (the host is not on VLAN 70)", rets)
	}
	after := f.counters(t)
	passed := int(after.events[tables.EvFloodFrames].Packets - before.events[tables.EvFloodFrames].Packets)
	checkPasses(t, "VLAN limit from the wire", passed, 20, n, took)
	f.checkStormed(t, before, passed, n-passed, 2)
}

// On the untagged segment an unknown unicast, which every switch floods,
// is limited like a broadcast; unicast to a known endpoint is not.
func TestStormUntaggedUnknownUnicast(t *testing.T) {
	f := newFixture(t)
	u := f.stormEndpoint(t, "s0", 0, mustMAC("02:00:00:00:00:0b"), 10)
	const n = 30
	before := f.counters(t)
	rets, took := f.burst(t, f.dp.Programs.XmvEpTx, u.Ifindex, repeat(ethFrame(unknown, u.MAC.String(), nil, 0x0806, 28), n))
	passed := count(rets, tcActRedirect)
	checkPasses(t, "untagged unknown unicast", passed, 10, n, took)
	f.checkStormed(t, before, 0, n-passed, 0)

	rets, _ = f.burst(t, f.dp.Programs.XmvEpTx, u.Ifindex, repeat(ethFrame("02:00:00:00:00:0a", u.MAC.String(), nil, 0x0806, 28), n))
	if got := count(rets, tcActRedirect); got != n {
		t.Errorf("unicast to a local endpoint: %d of %d passed with an empty bucket", got, n)
	}
}

// A new endpoint in a reused slot starts with a full bucket, not the old
// one's empty one.
func TestStormBucketReset(t *testing.T) {
	f := newFixture(t)
	eps := f.stormNetwork(t, 80, 0, []string{"s80a", "s80b"}, []uint32{5, 0})
	a := eps[0]
	f.burst(t, f.dp.Programs.XmvEpTx, a.Ifindex, repeat(ethFrame(bcast, a.MAC.String(), nil, 0x0806, 28), 20))
	if err := f.tbl.DeleteEndpoint(a.Ifindex); err != nil {
		t.Fatal(err)
	}
	c := f.stormEndpoint(t, "s80c", 80, mustMAC("02:00:00:00:80:03"), 5)
	if c.ID != a.ID {
		t.Fatalf("the new endpoint got slot %d, not the freed %d", c.ID, a.ID)
	}
	rets, took := f.burst(t, f.dp.Programs.XmvEpTx, c.Ifindex, repeat(ethFrame(bcast, c.MAC.String(), nil, 0x0806, 28), 20))
	checkPasses(t, "reused slot", count(rets, tcActRedirect), 5, 20, took)
}

// The host's broadcasts to the untagged endpoints (xmv_host_tx, hairpin)
// take from the untagged VLAN's bucket; over it the endpoints get no copy
// and the frame still goes to the wire.
func TestStormHostToEndpoints(t *testing.T) {
	f := newFixture(t)
	f.setHairpin(t, true)
	if err := f.tbl.SetNetworkStormLimit(0, 10); err != nil {
		t.Fatal(err)
	}
	const n = 30
	before := f.counters(t)
	rets, took := f.burst(t, f.dp.Programs.XmvHostTx, f.parent, repeat(ethFrame(bcast, parentMAC, nil, 0x0806, 28), n))
	if got := count(rets, tcActOK); got != n {
		t.Fatalf("verdicts %v: the host's frames always go on to the wire", rets)
	}
	after := f.counters(t)
	passed := int(after.events[tables.EvFloodFrames].Packets - before.events[tables.EvFloodFrames].Packets)
	checkPasses(t, "host broadcasts", passed, 10, n, took)
	f.checkStormed(t, before, passed, n-passed, 1)
}
