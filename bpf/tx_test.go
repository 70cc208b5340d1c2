package bpf_test

import (
	"encoding/binary"
	"errors"
	"fmt"
	"testing"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/tables"
)

// skbCtx is the head of struct __sk_buff, for BPF_PROG_RUN: the kernel
// runs the program as if the frame arrived on ifindex.
type skbCtx struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto uint32
	Priority, IngressIfindex, Ifindex                                           uint32
}

// runTx runs xmv_ep_tx on a frame sent by endpoint ep. BPF_PROG_RUN
// refuses (EINVAL) an IPv4/IPv6 frame too short for its IP header.
func (f *fixture) runTx(ep tables.Endpoint, frame []byte) (ret uint32, err error) {
	err = f.ns.Do(func() (err error) {
		ret, err = f.dp.Programs.XmvEpTx.Run(&ebpf.RunOptions{
			Data: frame, Context: skbCtx{Ifindex: uint32(ep.Ifindex)},
		})
		return err
	})
	return ret, err
}

func (f *fixture) setHairpin(t testing.TB, on bool) {
	s, err := f.tbl.Settings()
	if err != nil {
		t.Fatal(err)
	}
	s.Hairpin = on
	if err := f.tbl.SetSettings(s); err != nil {
		t.Fatal(err)
	}
}

// checkTx compares the program with the model, on verdict and on the
// counters that say where the frame went.
func (f *fixture) checkTx(t *testing.T, from tables.Endpoint, frame []byte, hairpin bool) txOutcome {
	t.Helper()
	f.setHairpin(t, hairpin)
	want := f.model.tx(from, frame, hairpin, mustMAC(parentMAC))
	drops0, _ := f.tbl.Drops()
	ev0, _ := f.tbl.Events()
	var peer0 tables.Traffic
	if want.localTo != nil {
		peer0, _ = f.tbl.EndpointTraffic(want.localTo.ID)
	}

	got, err := f.runTx(from, frame)
	if errors.Is(err, unix.EINVAL) {
		t.Skipf("the kernel refuses this input: %v", err)
	}
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if got != want.action {
		t.Fatalf("verdict %d, model says %d", got, want.action)
	}
	drops, _ := f.tbl.Drops()
	for r := range drops {
		wantDelta := uint64(0)
		if want.action == tcActShot && tables.DropReason(r) == want.reason {
			wantDelta = 1
		}
		if d := drops[r].Packets - drops0[r].Packets; d != wantDelta {
			t.Errorf("drop counter %s moved by %d, want %d", tables.DropReason(r), d, wantDelta)
		}
	}
	ev, _ := f.tbl.Events()
	delta := func(e tables.EventKind) uint64 { return ev[e].Packets - ev0[e].Packets }
	if d := delta(tables.EvLocalSwitch); d != uint64(b2i(want.localTo != nil)) {
		t.Errorf("local switch events +%d, want local=%v", d, want.localTo != nil)
	}
	if d := delta(tables.EvHairpinToHost); d != uint64(b2i(want.toHost)) {
		t.Errorf("hairpin events +%d, want hairpin=%v", d, want.toHost)
	}
	if d := delta(tables.EvFloodCopies); d != uint64(want.floodCopies) {
		t.Errorf("flood copies +%d, want %d", d, want.floodCopies)
	}
	if want.localTo != nil {
		peer, _ := f.tbl.EndpointTraffic(want.localTo.ID)
		if peer.RxPackets != peer0.RxPackets+1 {
			t.Errorf("local peer %d did not count the frame", want.localTo.ID)
		}
	}
	return want
}

// txCases is the transmit spec: who sends what, and what must become of it.
var txCases = []struct {
	name    string
	from    string
	dst     string
	src     string // "" = the sender's own MAC
	tags    []tag
	hairpin bool
	want    string // drop:<reason>, local, wire, host, flood:<copies>
}{
	{"bridge: to a neighbour", "v10skb", "02:00:00:00:10:02", "", nil, false, "local"},
	{"to the wire", "v10skb", "02:00:00:00:77:77", "", nil, false, "wire"},
	{"private: to a neighbour", "v20xdp", "02:00:00:00:20:02", "", nil, false, "drop:private_mode"},
	{"private: to the wire", "v20xdp", "02:00:00:00:77:77", "", nil, false, "wire"},
	{"vepa: to a neighbour goes to the wire", "v40a", "02:00:00:00:40:02", "", nil, false, "wire"},
	{"spoofed source MAC", "v10skb", "02:00:00:00:77:77", "02:00:00:00:10:02", nil, false, "drop:spoofed_src"},
	{"802.1Q tagged (VLAN hopping)", "v10skb", "02:00:00:00:77:77", "", dot1q(20), false, "drop:tagged_from_endpoint"},
	{"802.1ad tagged", "v10skb", "02:00:00:00:77:77", "", []tag{{etherTypeQinQ, 20}}, false, "drop:tagged_from_endpoint"},
	{"0x9100 tagged", "v10skb", "02:00:00:00:77:77", "", []tag{{etherTypeQinQ1, 20}}, false, "drop:tagged_from_endpoint"},
	{"0x9200 tagged", "v10skb", "02:00:00:00:77:77", "", []tag{{etherTypeQinQ2, 20}}, false, "drop:tagged_from_endpoint"},
	{"0x9300 tagged", "v10skb", "02:00:00:00:77:77", "", []tag{{etherTypeQinQ3, 20}}, false, "drop:tagged_from_endpoint"},
	{"0x9100 tagged broadcast", "untagged", bcast, "", []tag{{etherTypeQinQ1, 10}}, false, "drop:tagged_from_endpoint"},
	{"0x9100 tagged to a neighbour", "v10skb", "02:00:00:00:10:02", "", []tag{{etherTypeQinQ1, 0}}, false, "drop:tagged_from_endpoint"},
	{"bridge: broadcast", "v10skb", bcast, "", nil, false, "flood:1"},
	{"private: broadcast", "v20xdp", bcast, "", nil, false, "flood:0"},
	{"vepa: broadcast", "v40a", bcast, "", nil, false, "flood:0"},
	{"hairpin: to the parent's MAC", "untagged", parentMAC, "", nil, true, "host"},
	{"no hairpin: to the parent's MAC", "untagged", parentMAC, "", nil, false, "wire"},
	{"hairpin: broadcast also to the host", "untagged", bcast, "", nil, true, "flood:0"},
	{"hairpin is for the untagged segment only", "v10skb", parentMAC, "", nil, true, "wire"},
}

func TestTxEndpoint(t *testing.T) {
	f := newFixture(t)
	for _, tc := range txCases {
		t.Run(tc.name, func(t *testing.T) {
			from := f.eps[tc.from]
			src := tc.src
			if src == "" {
				src = from.MAC.String()
			}
			got := f.checkTx(t, from, ethFrame(tc.dst, src, tc.tags, ipv4, 50), tc.hairpin)
			var desc string
			switch {
			case got.action == tcActShot:
				desc = "drop:" + got.reason.String()
			case got.localTo != nil:
				desc = "local"
			case tc.dst == bcast:
				desc = fmt.Sprint("flood:", got.floodCopies)
			case got.toHost:
				desc = "host"
			default:
				desc = "wire"
			}
			if desc != tc.want {
				t.Fatalf("model predicts %s, the spec says %s", desc, tc.want)
			}
		})
	}
}

// FuzzTxEndpoint sends arbitrary frames from each endpoint in turn.
func FuzzTxEndpoint(f *testing.F) {
	for i, tc := range txCases {
		f.Add(uint8(i), ethFrame(tc.dst, "02:00:00:00:10:01", tc.tags, ipv4, 50))
	}
	fx := newFixture(f)
	var senders []tables.Endpoint
	for _, ep := range fx.eps {
		senders = append(senders, ep)
	}
	f.Fuzz(func(t *testing.T, who uint8, frame []byte) {
		if len(frame) < 14 {
			return
		}
		from := senders[int(who)%len(senders)]
		// Half the time, make the source MAC the sender's own.
		if who&0x80 == 0 {
			copy(frame[6:12], from.MAC)
		}
		fx.checkTx(t, from, frame, binary.BigEndian.Uint16(frame[12:14])&1 == 0)
	})
}

// TestTxParentMTU sends frames around the parent's MTU to the wire, at its
// MTU after attach and after it was lowered: a frame that does not fit is
// counted as too_big, as the parent would drop it uncounted.
func TestTxParentMTU(t *testing.T) {
	f := newFixture(t)
	from := f.eps["v10skb"]
	send := func(t *testing.T, dst string, size int, want string) {
		t.Helper()
		frame := ethFrame(dst, from.MAC.String(), nil, ipv4, size-14)
		got := f.checkTx(t, from, frame, false)
		desc := "wire"
		if got.action == tcActShot {
			desc = "drop:" + got.reason.String()
		}
		if desc != want {
			t.Fatalf("%d-byte frame: model predicts %s, the spec says %s", size, desc, want)
		}
	}
	for _, mtu := range []int{f.model.parentMTU, 1400} {
		l, err := f.ns.NL.LinkByIndex(f.parent)
		if err == nil {
			err = f.ns.NL.LinkSetMTU(l, mtu)
		}
		if err != nil {
			t.Fatal(err)
		}
		f.model.parentMTU = f.mtu(t, f.parent)
		t.Run(fmt.Sprint("parent MTU ", mtu), func(t *testing.T) {
			send(t, "02:00:00:00:77:77", mtu+14, "wire")
			send(t, "02:00:00:00:77:77", mtu+15, "drop:too_big")
			send(t, bcast, mtu+15, "drop:too_big")       // the members' copies are made
			send(t, "02:00:00:00:10:02", mtu+15, "wire") // a neighbour on the host: no wire
		})
	}
}

// TestTxNoParent deletes the interface the settings name as the parent: a
// frame for the wire is counted as no_parent, one for a neighbour still
// goes.
func TestTxNoParent(t *testing.T) {
	f := newFixture(t)
	gone := f.veth(t, "gone")
	s, err := f.tbl.Settings()
	if err != nil {
		t.Fatal(err)
	}
	s.ParentIfindex = gone
	if err := f.tbl.SetSettings(s); err != nil {
		t.Fatal(err)
	}
	l, err := f.ns.NL.LinkByIndex(gone)
	if err == nil {
		err = f.ns.NL.LinkDel(l)
	}
	if err != nil {
		t.Fatal(err)
	}
	f.model.parentGone = true
	from := f.eps["v10skb"]
	for _, c := range []struct{ dst, want string }{
		{"02:00:00:00:77:77", "drop:no_parent"},
		{bcast, "drop:no_parent"},
		{"02:00:00:00:10:02", "local"},
	} {
		got := f.checkTx(t, from, ethFrame(c.dst, from.MAC.String(), nil, ipv4, 50), false)
		desc := "wire"
		switch {
		case got.action == tcActShot:
			desc = "drop:" + got.reason.String()
		case got.localTo != nil:
			desc = "local"
		}
		if desc != c.want {
			t.Errorf("to %s: model predicts %s, the spec says %s", c.dst, desc, c.want)
		}
	}
}
