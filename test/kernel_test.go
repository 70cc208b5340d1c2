package test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf/link"

	"github.com/xmacvlan/xmacvlan/bpf"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// Kernel behaviour the design rests on (README "Kernel facts").
// Each test fails if the kernel stops behaving so, which is the moment to
// revisit the design.

// With a generic (skb-mode) XDP program on a veth, the tcx ingress program
// after it sees skb->data at the network header, not the MAC header. So
// no generic XDP program stands in for native XDP: without it (--xdp off,
// or auto on a veth) xmv_rx_tc classifies alone.
func TestGenericXDPHidesMACFromTCX(t *testing.T) {
	l := newLab(t)
	h := l.host()
	if res := h.attach(loader.XDPOff); res.XDP != "off" {
		t.Fatalf("XDP %s with --xdp off", res.XDP)
	}
	h.network("lan", 0, tables.Bridge)
	c := h.container("lan", "", "10.0.0.2/24", false)
	if err := ping(l.sw, c.ip); err != nil {
		t.Fatalf("--xdp off (tcx alone): %v", err)
	}

	dp, err := loader.LoadPinned(filepath.Join(h.root, h.parent))
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	var xdp link.Link
	err = h.ns.Do(func() (err error) {
		xdp, err = link.AttachXDP(link.XDPOptions{Program: dp.Programs.XmvRxXdp,
			Interface: mustLink(t, h.ns, h.parent).Attrs().Index, Flags: link.XDPGenericMode})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	run(l.sw, "ip", "neigh", "flush", "all")
	if err := ping(l.sw, c.ip); err == nil {
		t.Error("delivery works with a generic XDP program in front of tcx: the kernel fact has changed, --xdp off could use generic XDP")
	}
	xdp.Close()
	if err := ping(l.sw, c.ip); err != nil {
		t.Errorf("without the generic XDP program: %v", err)
	}
}

// A VLAN tag carried in skb metadata (here: a plain bridge hands veth the
// tag it received that way) is invisible to a plain XDP program, which reads
// VID 0; the device-bound variant reads it with bpf_xdp_metadata_rx_vlan_tag.
// Either way frames reach the endpoint, since tcx checks the VLAN the XDP
// program saw; only the XDP fast path is lost without the kfunc.
func TestVLANTagInSkbMetadata(t *testing.T) {
	l := newLab(t)
	a, b := l.host(), l.host()
	for _, h := range []*host{a, b} {
		if res := h.attach(loader.XDPOn); res.Program != bpf.XmacvlanProgXmvRxXdpMeta {
			t.Fatalf("receive program %s on veth, want the device-bound variant", res.Program)
		}
		h.network("v10", 10, tables.Bridge)
	}
	ca := a.container("v10", "", "10.10.0.1/24", false)
	cb := b.container("v10", "", "10.10.0.2/24", true)
	redirected := func() uint64 { return b.events()[tables.EvXDPRedirect].Packets }

	check := func(how string, wantXDP bool) {
		t.Helper()
		before := redirected()
		if err := ping(ca.ns, cb.ip); err != nil {
			t.Errorf("%s: %v", how, err)
		}
		if got := redirected() > before; got != wantXDP {
			t.Errorf("%s: XDP redirect used = %v, want %v", how, got, wantXDP)
		}
	}
	check("tag in skb metadata, device-bound program", true)
	swapXDPProgram(t, b)
	check("tag in skb metadata, plain program", false)
	run(l.sw, "ethtool", "-K", a.port, "txvlan", "off")
	run(l.sw, "ethtool", "-K", b.port, "txvlan", "off")
	check("tag in the frame bytes, plain program", true)
}

// `ip netns exec` remounts /sys, hiding the pins; nsenter --net does not.
func TestIPNetnsExecHidesBPFFS(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.attach("")
	pin := filepath.Join(h.root, h.parent, "link_rx_tc")
	if _, err := os.Stat(pin); err != nil {
		t.Fatal(err)
	}
	if out, err := run(h.ns, "ls", pin); err != nil {
		t.Errorf("nsenter --net: %v %s", err, out)
	}
	out, err := runCmd("ip", "netns", "exec", h.ns.Name, "ls", pin)
	if err == nil && strings.Contains(out, "link_rx_tc") {
		t.Error("ip netns exec sees the pins: the kernel/iproute2 fact has changed")
	}
}
