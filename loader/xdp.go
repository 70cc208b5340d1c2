package loader

import (
	"fmt"
	"path/filepath"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/bpf"
	"github.com/xmacvlan/xmacvlan/internal/ethtool"
	"github.com/xmacvlan/xmacvlan/internal/state"
)

// XDPChoice is what attach --xdp asks: whether the parent runs the XDP
// receive program in front of tcx.
type XDPChoice string

const (
	XDPAuto XDPChoice = "auto" // by the parent's driver and the endpoints' delivery (decideXDP)
	XDPOn   XDPChoice = "on"   // native XDP, or attach fails
	XDPOff  XDPChoice = "off"  // no XDP program: tcx classifies and drops on the skb
)

// ParseXDPChoice accepts auto, on or off.
func ParseXDPChoice(s string) (XDPChoice, error) {
	switch c := XDPChoice(s); c {
	case XDPAuto, XDPOn, XDPOff:
		return c, nil
	}
	return "", fmt.Errorf("invalid --xdp %q: want auto, on or off", s)
}

// noXDPProgram is the program name reported when tcx classifies alone.
const noXDPProgram = "none (tcx classifies)"

// decideXDP says whether a parent whose driver is driver runs the XDP
// program under choice, with xdpEndpoints endpoints receiving by XDP
// redirect (--delivery xdp), and why. Under auto:
//   - an endpoint with XDP delivery needs the program: on;
//   - veth: off. A native XDP program on a veth makes the driver copy every
//     skb its peer sends into a fresh page (veth_xdp_rcv_skb ->
//     skb_pp_cow_data): TCP towards an endpoint ran at 0.74x of kernel
//     macvlan with it, 0.94x without (bench/README.md);
//   - virtio_net: off. Attaching XDP turns the guest's TSO/LRO offloads off
//     (virtnet_xdp_set);
//   - any other driver: on. XDP runs on the DMA buffer, so dropping an
//     unwanted frame there costs nearly nothing (attach turns it off again
//     where the driver has no native XDP).
func decideXDP(choice XDPChoice, driver string, xdpEndpoints int) (want bool, reason string) {
	switch {
	case choice == XDPOn:
		return true, "as asked (--xdp on)"
	case choice == XDPOff:
		return false, "as asked (--xdp off): tcx classifies alone"
	case xdpEndpoints > 0:
		return true, fmt.Sprintf("%d endpoint(s) receive by XDP redirect (--delivery xdp)", xdpEndpoints)
	case driver == "veth":
		return false, "on a veth an XDP program makes the driver copy every frame into a new page (veth_xdp_rcv_skb); tcx classifies alone"
	case driver == "virtio_net":
		return false, "XDP turns the guest's TSO/LRO offloads off on virtio_net (virtnet_xdp_set); tcx classifies alone"
	}
	return true, fmt.Sprintf("driver %s runs XDP natively, on the DMA buffer: unwanted frames are dropped before an skb exists", driver)
}

// noNativeXDP is the reason under auto when the driver refused native XDP.
func noNativeXDP(driver string) string {
	return fmt.Sprintf("driver %s has no native XDP; tcx classifies alone", driver)
}

// driverOf names the interface's driver, or "unknown".
func driverOf(ifname string) string {
	d, err := ethtool.Driver(ifname)
	if err != nil || d == "" {
		return "unknown"
	}
	return d
}

// attachNativeXDP attaches the receive program to ifindex in native
// (driver) mode: the device-bound variant where the driver loads it, else
// the plain one. note says why the variant was not bound, if it matters.
func (d *Datapath) attachNativeXDP(t *txn, ifindex int) (l link.Link, progName, note string, err error) {
	prog, progName, note := d.xdpProgram(t, ifindex)
	l, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil && progName != bpf.XmacvlanProgXmvRxXdp {
		// The driver refused the device-bound variant: try the plain one.
		progName = bpf.XmacvlanProgXmvRxXdp
		l, err = link.AttachXDP(link.XDPOptions{Program: d.Programs.XmvRxXdp, Interface: ifindex, Flags: link.XDPDriverMode})
	}
	return l, progName, note, err
}

// xdpOffError is the refusal of XDP delivery on a parent attached with
// --xdp off.
func xdpOffError(parent string) error {
	return fmt.Errorf("%s is attached with --xdp off, and XDP delivery needs the XDP program: "+
		"attach %s again with --xdp auto (or on), or add the endpoint with --delivery skb", parent, parent)
}

// SyncXDP attaches or removes the parent's XDP program for the endpoints
// that receive by XDP redirect, as the recorded choice says: under auto it
// attaches it for the first such endpoint and removes it with the last one
// where the driver alone would not run it (decideXDP). adding counts one
// more such endpoint than the endpoint table holds (an add in progress).
// Under off, adding is refused (xdpOffError); under on nothing changes.
func (h *Handle) SyncXDP(adding bool) error {
	s, err := h.Tables.Settings()
	if err != nil {
		return err
	}
	n, err := countXDPDelivery(h.Tables)
	if err != nil {
		return err
	}
	if adding {
		n++
	}
	choice := XDPChoice(s.XDPChoice)
	if choice == XDPOff && adding {
		return xdpOffError(h.Parent)
	}
	if choice != XDPAuto {
		return nil
	}
	parent, err := netlink.LinkByIndex(s.ParentIfindex)
	if err != nil && !adding {
		return nil // no parent, no XDP program to take off
	}
	if err != nil {
		return fmt.Errorf("parent %s (ifindex %d) is gone: %w", h.Parent, s.ParentIfindex, err)
	}
	name := parent.Attrs().Name
	driver := driverOf(name)
	want, _ := decideXDP(choice, driver, n)
	pin := filepath.Join(h.Dir, state.PinXDPLink)
	l, alive, err := pinnedLink(pin, s.ParentIfindex)
	if err != nil {
		return err
	}
	if l != nil {
		l.Close()
	}
	switch {
	case !want && alive:
		return removeLink(pin)
	case want && !alive && n > 0:
		return h.attachXDPFor(name, driver, s.ParentIfindex, pin)
	}
	return nil
}

// attachXDPFor attaches the XDP program for XDP delivery on a live parent.
func (h *Handle) attachXDPFor(name, driver string, ifindex int, pin string) (err error) {
	d, err := LoadPinned(h.Dir)
	if err != nil {
		return err
	}
	var t txn
	defer func() { t.end(err != nil) }()
	t.finally.push(d.Close)
	if exists(pin) { // a dead link: the parent was re-created
		if err := removeLink(pin); err != nil {
			return err
		}
	}
	l, _, _, err := d.attachNativeXDP(&t, ifindex)
	if err != nil {
		return fmt.Errorf("XDP delivery needs native XDP on %s, and its driver %s refuses it (%w): add the endpoint with --delivery skb", name, driver, err)
	}
	return pinNewLink(&t, pin, l)
}
