package test

import (
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/xmacvlan/xmacvlan/internal/ethtool"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

const (
	tpid8021Q  = 0x8100
	tpid8021AD = 0x88a8
)

// Real frames injected on the wire side of the parent reach the endpoint
// they are addressed to, tag removed, and no other; unwanted ones are
// dropped and counted by reason. Both delivery paths, both VLAN-tag
// placements (in the frame bytes here; in skb metadata via the switch in
// TestVLANTagInMetadata).
func TestFramesReachOnlyTheirEndpoint(t *testing.T) {
	l := newLab(t)
	h := l.host()
	if res := h.attach(loader.XDPOn); res.XDP != "on" {
		t.Fatalf("XDP on veth with --xdp on: %s, want on", res.XDP)
	}
	h.network("lan", 0, tables.Bridge)
	h.network("v10", 10, tables.Bridge)
	h.network("v20", 20, tables.Bridge)
	eps := map[string]*container{
		"untagged": h.container("lan", "02:00:00:00:00:0a", "", false),
		"v10skb":   h.container("v10", "02:00:00:00:10:01", "", false),
		"v10xdp":   h.container("v10", "02:00:00:00:10:02", "", true),
		"v20xdp":   h.container("v20", "02:00:00:00:00:0a", "", true), // same MAC, other VLAN
	}
	caps := map[string]*capture{}
	for name, c := range eps {
		caps[name] = startCapture(t, c.ns, "eth0")
	}
	wire := newSender(t, l.sw, h.port)
	src := mustMAC("02:00:00:00:99:99")
	q := func(vid uint16) [][2]uint16 { return [][2]uint16{{tpid8021Q, vid}} }

	cases := []struct {
		name string
		dst  string
		tags [][2]uint16
		want []string          // endpoints that must receive it
		drop tables.DropReason // counted if want is empty
	}{
		{"untagged unicast", "02:00:00:00:00:0a", nil, []string{"untagged"}, 0},
		{"VLAN 10, skb delivery", "02:00:00:00:10:01", q(10), []string{"v10skb"}, 0},
		{"VLAN 10, XDP delivery", "02:00:00:00:10:02", q(10), []string{"v10xdp"}, 0},
		{"same MAC on VLAN 20", "02:00:00:00:00:0a", q(20), []string{"v20xdp"}, 0},
		{"VLAN 10 broadcast", "ff:ff:ff:ff:ff:ff", q(10), []string{"v10skb", "v10xdp"}, 0},
		{"VLAN 20 multicast", "01:00:5e:00:00:01", q(20), []string{"v20xdp"}, 0},
		{"unknown MAC on VLAN 10", "02:00:00:00:77:77", q(10), nil, tables.DropUnknownDst},
		{"VLAN 10 MAC on VLAN 20", "02:00:00:00:10:01", q(20), nil, tables.DropUnknownDst},
		{"unconfigured VLAN 30", "02:00:00:00:10:01", q(30), nil, tables.DropUnknownVLAN},
		{"802.1ad outer tag", "02:00:00:00:10:01", [][2]uint16{{tpid8021AD, 10}, {tpid8021Q, 10}}, nil, tables.DropStackedVLAN},
		{"double 802.1Q", "02:00:00:00:10:02", [][2]uint16{{tpid8021Q, 10}, {tpid8021Q, 10}}, nil, tables.DropStackedVLAN},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := h.drops()
			marker := []byte(fmt.Sprintf("xmv-case-%02d", i))
			const n = 5
			for range n {
				wire.send(t, frame(mustMAC(tc.dst), src, tc.tags, marker))
			}
			err := eventually(2*time.Second, func() error {
				for name, c := range caps {
					got := c.matching(marker)
					wantN := 0
					for _, w := range tc.want {
						if w == name {
							wantN = n
						}
					}
					if len(got) != wantN {
						return fmt.Errorf("%s received %d frames, want %d", name, len(got), wantN)
					}
					for _, f := range got {
						if !bytes.Equal(f[12:14], []byte{0x88, 0xb5}) {
							return fmt.Errorf("%s received a frame still tagged: % x", name, f[:18])
						}
					}
				}
				if tc.want == nil {
					if d := h.drops()[tc.drop].Packets - before[tc.drop].Packets; d != n {
						return fmt.Errorf("drop counter %s moved by %d, want %d", tc.drop, d, n)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			// Nothing arrives late, anywhere.
			time.Sleep(100 * time.Millisecond)
			for name, c := range caps {
				if got := len(c.matching(marker)); got > n {
					t.Errorf("%s received %d copies", name, got)
				}
			}
		})
	}
}

func (h *host) drops() []tables.Count {
	var d []tables.Count
	h.tables(func(tb *tables.Tables) (err error) { d, err = tb.Drops(); return err })
	return d
}

func (h *host) events() []tables.Count {
	var e []tables.Count
	h.tables(func(tb *tables.Tables) (err error) { e, err = tb.Events(); return err })
	return e
}

// A TCP transfer from the wire into an endpoint, offloads left at their
// defaults, on the skb path (GSO/GRO and checksum offload intact).
func TestTCPFromWireIntoEndpoint(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.attach("")
	h.network("lan", 0, tables.Bridge)
	c := h.container("lan", "", "10.0.0.2/24", false)
	tcpTransfer(t, c.ns, l.sw, "10.0.0.2:5201", 32<<20)
	tcpTransfer(t, l.sw, c.ns, "10.0.0.1:5202", 32<<20)
}

// The XDP delivery path and TCP (README "Kernel facts"): partial
// checksums from the sending veth are never completed on an XDP
// veth->veth redirect, so TCP only works once the sender computes its
// checksums itself (tx checksum offload off, which turns TSO off too).
func TestTCPOverXDPDeliveryNeedsSenderChecksums(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.attach("")
	h.network("lan", 0, tables.Bridge)
	c := h.container("lan", "", "10.0.0.2/24", true)
	if err := ping(l.sw, c.ip); err != nil {
		t.Fatal(err)
	}
	if err := tryTCPTransfer(c.ns, l.sw, "10.0.0.2:5201", 4<<20); err == nil {
		t.Error("TCP over XDP delivery worked with tx checksum offload on: the kernel fact this test records has changed")
	}
	for _, dev := range []string{"br0", h.port} {
		if err := l.sw.Do(func() error { return ethtool.SetTxChecksum(dev, false) }); err != nil {
			t.Fatal(err)
		}
	}
	tcpTransfer(t, c.ns, l.sw, "10.0.0.2:5202", 32<<20)
	if h.events()[tables.EvXDPRedirect].Packets == 0 {
		t.Error("no frame took the XDP redirect path")
	}
}

// A frame XDP-redirected into a veth is dropped silently unless the
// receiving end has NAPI: the endpoint code turns GRO on for XDP delivery.
func TestXDPDeliveryNeedsNAPIOnTheContainerEnd(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.attach("")
	h.network("lan", 0, tables.Bridge)
	c := h.container("lan", "02:00:00:00:00:0b", "", true)
	capt := startCapture(t, c.ns, "eth0")
	wire := newSender(t, l.sw, h.port)
	send := func(marker string) {
		for range 10 {
			wire.send(t, frame(c.ep.MAC, mustMAC("02:00:00:00:99:99"), nil, []byte(marker)))
		}
	}
	send("with-gro")
	if err := eventually(2*time.Second, func() error {
		if n := len(capt.matching([]byte("with-gro"))); n != 10 {
			return fmt.Errorf("%d of 10 frames arrived with GRO on", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := c.ns.Do(func() error { return ethtool.SetGRO("eth0", false) }); err != nil {
		t.Fatal(err)
	}
	before := h.events()[tables.EvXDPRedirect].Packets
	send("without-gro")
	time.Sleep(300 * time.Millisecond)
	if n := len(capt.matching([]byte("without-gro"))); n != 0 {
		t.Errorf("%d frames arrived without NAPI on the receiving veth: the kernel fact has changed", n)
	}
	// The datapath did redirect them: the loss is the kernel's, silent.
	if got := h.events()[tables.EvXDPRedirect].Packets - before; got != 10 {
		t.Errorf("XDP redirected %d frames, want 10", got)
	}
}
