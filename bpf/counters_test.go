package bpf_test

import (
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xmacvlan/xmacvlan/bpf"
	"github.com/xmacvlan/xmacvlan/tables"
)

// runRxTC runs xmv_rx_tc on a frame from the wire, without XDP metadata:
// the program classifies it itself.
func (f *fixture) runRxTC(t *testing.T, frame []byte) uint32 {
	var ret uint32
	err := f.ns.Do(func() (err error) {
		ret, err = f.dp.Programs.XmvRxTc.Run(&ebpf.RunOptions{Data: frame, Context: skbCtx{Ifindex: uint32(f.parent)}})
		return err
	})
	if err != nil {
		t.Fatalf("run xmv_rx_tc: %v", err)
	}
	return ret
}

func (f *fixture) vlanTotals(t *testing.T, vlan uint16) tables.Traffic {
	t.Helper()
	eps, err := f.tbl.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	tot, err := f.tbl.VLANTraffic([]uint16{vlan}, eps)
	if err != nil {
		t.Fatal(err)
	}
	return tot[vlan]
}

// TestVLANTotals: a VLAN's totals are derived from its endpoints' records,
// its own record and its deleted endpoints', with the meaning they always
// had: rx counts what reached the VLAN's endpoints, a flood from the wire
// once; tx what they sent. The datapath writes the VLAN's own record only
// for floods from the wire, and the totals stay put when an endpoint goes.
func TestVLANTotals(t *testing.T) {
	f := newFixture(t)
	skb, xdp := f.eps["v10skb"], f.eps["v10xdp"]
	var want tables.Traffic

	// Unicast from the wire to the XDP-delivery endpoint: the tag comes off.
	hit := ethFrame(xdp.MAC.String(), host, dot1q(10), ipv4, 60)
	if r := f.runXDP(t, hit); r.action != xdpRedirect {
		t.Fatalf("XDP hit: action %d", r.action)
	}
	want.RxPackets, want.RxBytes = 1, uint64(len(hit)-4)

	// Local switch, v10skb -> v10xdp: tx of one, rx of the other.
	sw := ethFrame(xdp.MAC.String(), skb.MAC.String(), nil, ipv4, 60)
	if got := f.checkTx(t, skb, sw, false); got.localTo == nil || got.localTo.ID != xdp.ID {
		t.Fatalf("not switched locally to v10xdp: %+v", got)
	}
	want.RxPackets, want.RxBytes = want.RxPackets+1, want.RxBytes+uint64(len(sw))
	want.TxPackets, want.TxBytes = 1, uint64(len(sw))

	// A broadcast from the wire: one frame for the VLAN, a copy for each
	// member's own counters.
	bc := ethFrame(bcast, host, dot1q(10), 0x0806, 28)
	if ret := f.runRxTC(t, bc); ret != tcActShot {
		t.Fatalf("tagged broadcast: xmv_rx_tc returned %d, want TC_ACT_SHOT after flooding", ret)
	}
	want.RxPackets, want.RxBytes = want.RxPackets+1, want.RxBytes+uint64(len(bc)-4)

	var own []bpf.XmacvlanTraffic
	if err := f.tbl.Maps().XmvVlanStats.Lookup(uint32(10), &own); err != nil {
		t.Fatal(err)
	}
	var ownRx uint64
	for _, c := range own {
		ownRx += c.RxPackets + c.TxPackets
	}
	if ownRx != 1 {
		t.Errorf("VLAN 10's own record counted %d frames, want 1 (the broadcast from the wire)", ownRx)
	}
	for _, ep := range []tables.Endpoint{skb, xdp} {
		tr, _ := f.tbl.EndpointTraffic(ep.ID)
		wantRx := uint64(1) + 2*uint64(b2i(ep.ID == xdp.ID)) // the flood copy, the hit, the switched frame
		if tr.RxPackets != wantRx {
			t.Errorf("endpoint %d: rx %d, want %d", ep.ID, tr.RxPackets, wantRx)
		}
	}
	if got := f.vlanTotals(t, 10); got != want {
		t.Fatalf("VLAN 10 totals %+v, want %+v", got, want)
	}

	// The endpoint goes: out of the tables, its counters retired into the
	// VLAN, twice (a delete a crash interrupted is finished again).
	if err := f.tbl.DeleteEndpoint(xdp.Ifindex); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := f.tbl.RetireCounters(xdp.ID, xdp.Ifindex, xdp.VLAN); err != nil {
			t.Fatal(err)
		}
		if got := f.vlanTotals(t, 10); got != want {
			t.Fatalf("VLAN 10 totals after the endpoint left: %+v, want %+v", got, want)
		}
	}
	if tr, _ := f.tbl.EndpointTraffic(xdp.ID); tr != (tables.Traffic{}) {
		t.Errorf("retired endpoint's slot still counts %+v", tr)
	}
}
