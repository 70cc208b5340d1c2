package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/bpf"
	"github.com/xmacvlan/xmacvlan/internal/ethtool"
	"github.com/xmacvlan/xmacvlan/tables"
)

// XDPMode is where received frames are first classified.
type XDPMode string

const (
	ModeAuto    XDPMode = "auto"    // native, else generic
	ModeNative  XDPMode = "native"  // XDP in the driver, before any skb exists
	ModeGeneric XDPMode = "generic" // on the skb, by tcx alone (drivers without XDP)
)

// ParseXDPMode accepts auto, native or generic.
func ParseXDPMode(s string) (XDPMode, error) {
	switch m := XDPMode(s); m {
	case ModeAuto, ModeNative, ModeGeneric:
		return m, nil
	}
	return "", fmt.Errorf("invalid XDP mode %q: want auto, native or generic", s)
}

// AttachOptions says what to attach where.
type AttachOptions struct {
	Root   string  // pin root (--bpffs)
	Parent string  // interface name, in the caller's network namespace
	Mode   XDPMode // "" = auto
	// Replace swaps the programs of live links even when they are the
	// same as this build's (a reload; upgrades happen without it).
	Replace bool
	// Hairpin turns host <-> untagged endpoint traffic on or off; nil
	// keeps what the parent has.
	Hairpin *bool
}

// AttachResult says what an attach did.
type AttachResult struct {
	Parent   string   `json:"parent"`
	Ifindex  int      `json:"ifindex"`
	XDPMode  XDPMode  `json:"xdp_mode"`    // native or generic: what was obtained
	Program  string   `json:"xdp_program"` // which receive program variant runs
	Hairpin  bool     `json:"hairpin"`
	New      bool     `json:"new"`      // first attach (else: reused pinned state)
	Upgraded []string `json:"upgraded"` // links whose program was replaced
	Notes    []string `json:"notes"`    // what attach changed on the parent
}

// Attach attaches the datapath to a parent, or brings an attached one up to
// this build: pinned tables are reused with their entries, live links get
// the new programs atomically, dead ones are attached again. A failure
// undoes everything this run did.
func Attach(opts AttachOptions) (res *AttachResult, err error) {
	if opts.Mode == "" {
		opts.Mode = ModeAuto
	}
	if err := checkParentName(opts.Parent); err != nil {
		return nil, err
	}
	lock, err := lockRoot(opts.Root)
	if err != nil {
		return nil, err
	}
	defer unlock(lock)

	parent, err := netlink.LinkByName(opts.Parent)
	if err != nil {
		return nil, fmt.Errorf("unknown parent %q: %w", opts.Parent, err)
	}
	ifindex := parent.Attrs().Index
	res = &AttachResult{Parent: opts.Parent, Ifindex: ifindex, Upgraded: []string{}, Notes: []string{}} // lists, never null, in JSON
	dir := filepath.Join(opts.Root, opts.Parent)

	var t txn
	defer func() { t.end(err != nil) }()

	if !exists(dir) {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
		t.rollback.push(func() { os.Remove(dir) })
		res.New = true
	}
	d, err := loadDatapath(dir)
	if err != nil {
		return nil, err
	}
	t.finally.push(d.close)

	if err := attachXDP(&t, dir, parent, opts.Mode, opts.Replace, d, res); err != nil {
		return nil, err
	}
	if err := failpoint("after-xdp"); err != nil {
		return nil, err
	}
	if err := ensureTCX(&t, filepath.Join(dir, pinRxTCLink), ifindex, ebpf.AttachTCXIngress,
		d.program(bpf.XmacvlanProgXmvRxTc), opts.Replace, res); err != nil {
		return nil, err
	}
	if err := upgradeEndpointLinks(&t, dir, d.program(bpf.XmacvlanProgXmvEpTx), opts.Replace, res); err != nil {
		return nil, err
	}
	if err := failpoint("after-links"); err != nil {
		return nil, err
	}

	tbl, err := tables.New(d.coll.Maps)
	if err != nil {
		return nil, err
	}
	settings, err := tbl.Settings()
	if err != nil {
		return nil, err
	}
	old := settings
	settings.ParentIfindex = ifindex
	settings.ParentMAC = parent.Attrs().HardwareAddr
	if opts.Hairpin != nil {
		settings.Hairpin = *opts.Hairpin
	}
	res.Hairpin = settings.Hairpin
	note, turnedOff, err := keepTagsInFrame(&t, opts.Parent, settings.RestoreRxVLAN)
	if err != nil {
		return nil, err
	}
	res.Notes = append(res.Notes, note)
	settings.RestoreRxVLAN = settings.RestoreRxVLAN || turnedOff
	if err := tbl.SetSettings(settings); err != nil {
		return nil, err
	}
	t.rollback.push(func() { tbl.SetSettings(old) })
	if err := failpoint("after-settings"); err != nil {
		return nil, err
	}

	// Tables are pinned only now that the programs using them run.
	for _, name := range tables.Names() {
		if d.reused[name] {
			continue
		}
		pin := filepath.Join(dir, name)
		if err := d.coll.Maps[name].Pin(pin); err != nil {
			return nil, fmt.Errorf("pin table %s: %w", name, err)
		}
		t.rollback.push(func() { os.Remove(pin) })
	}
	if err := failpoint("after-pins"); err != nil {
		return nil, err
	}
	if err := setHairpinLink(&t, dir, ifindex, settings.Hairpin, d.program(bpf.XmacvlanProgXmvHostTx), opts.Replace, res); err != nil {
		return nil, err
	}
	// Last, as nothing after it can fail: later runs attach endpoints
	// with the program pinned here.
	if err := replacePin(filepath.Join(dir, pinEpTxProg), d.program(bpf.XmacvlanProgXmvEpTx)); err != nil {
		return nil, err
	}
	return res, nil
}

// attachXDP attaches the receive program in native mode, or upgrades the
// one attached. The device-bound variant (which reads tags the driver
// stripped) is preferred where the driver loads it.
//
// Generic mode attaches no XDP program: the skb exists already, so XDP
// would save nothing over tcx, and on this kernel any generic XDP program
// leaves skb->data at the network header for the tcx program after it
// (TestGenericXDPHidesMACFromTCX). In generic mode xmv_rx_tc classifies
// and drops on its own.
func attachXDP(t *txn, dir string, parent netlink.Link, mode XDPMode, replace bool, d *datapath, res *AttachResult) error {
	ifindex := parent.Attrs().Index
	pin := filepath.Join(dir, pinXDPLink)
	l, alive, err := pinnedLink(pin, ifindex)
	if err != nil {
		return err
	}
	if l != nil {
		t.finally.push(func() { l.Close() })
	}
	if alive {
		if mode == ModeGeneric {
			return fmt.Errorf("%s is attached in native mode; detach it first to change to generic", parent.Attrs().Name)
		}
		prog, name, note := d.xdpProgram(t, ifindex)
		if note != "" {
			res.Notes = append(res.Notes, note)
		}
		res.XDPMode, res.Program = ModeNative, name
		changed, err := upgradeLink(t, pin, l, prog, replace)
		if changed {
			res.Upgraded = append(res.Upgraded, pinXDPLink)
		}
		return err
	}
	wasNative := l != nil
	if l != nil { // dead: the parent went away or was re-created
		if err := removeLink(pin); err != nil {
			return err
		}
	}
	wasGeneric := !wasNative && exists(filepath.Join(dir, pinRxTCLink))
	if wasGeneric && mode == ModeNative {
		return fmt.Errorf("%s is attached in generic mode; detach it first to change to native", parent.Attrs().Name)
	}
	if mode == ModeGeneric || wasGeneric {
		res.XDPMode, res.Program = ModeGeneric, "none (tcx classifies)"
		return nil
	}

	prog, name, note := d.xdpProgram(t, ifindex)
	if note != "" {
		res.Notes = append(res.Notes, note)
	}
	nl, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil && name != bpf.XmacvlanProgXmvRxXdp {
		// The driver refused the device-bound variant: try the plain one.
		prog, name = d.program(bpf.XmacvlanProgXmvRxXdp), bpf.XmacvlanProgXmvRxXdp
		nl, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
	}
	if err != nil {
		if mode == ModeNative {
			return fmt.Errorf("attach XDP to %s in native mode: %w", parent.Attrs().Name, err)
		}
		res.XDPMode, res.Program = ModeGeneric, "none (tcx classifies)"
		res.Notes = append(res.Notes, fmt.Sprintf("no native XDP on %s (%v): tcx classifies on the skb path", parent.Attrs().Name, err))
		return nil
	}
	res.XDPMode, res.Program = ModeNative, name
	return pinNewLink(t, pin, nl)
}

// xdpProgram picks the receive program: the device-bound variant where the
// driver loads it, else the plain one. The note says why the variant was
// not bound when the size guard (devbound.go) refused it.
func (d *datapath) xdpProgram(t *txn, ifindex int) (*ebpf.Program, string, string) {
	p, err := d.loadDevBoundXDP(ifindex)
	if err == nil {
		t.finally.push(func() { p.Close() })
		return p, bpf.XmacvlanProgXmvRxXdpMeta, ""
	}
	var note string
	if errors.Is(err, errDevBoundTooBig) {
		note = fmt.Sprintf("%v: %s not bound to the device, %s runs instead",
			err, bpf.XmacvlanProgXmvRxXdpMeta, bpf.XmacvlanProgXmvRxXdp)
	}
	return d.program(bpf.XmacvlanProgXmvRxXdp), bpf.XmacvlanProgXmvRxXdp, note
}

// xdpModeOf reads the mode the kernel reports for the parent's XDP program.
func xdpModeOf(l netlink.Link) XDPMode {
	fresh, err := netlink.LinkByIndex(l.Attrs().Index)
	if err == nil {
		l = fresh
	}
	if x := l.Attrs().Xdp; x != nil && x.Attached {
		switch x.AttachMode {
		case 1: // XDP_ATTACHED_DRV
			return ModeNative
		case 2: // XDP_ATTACHED_SKB
			return ModeGeneric
		}
	}
	return "none"
}

// ensureTCX attaches prog at a tcx hook of ifindex, or upgrades the link
// pinned at pin.
func ensureTCX(t *txn, pin string, ifindex int, at ebpf.AttachType, prog *ebpf.Program, replace bool, res *AttachResult) error {
	l, alive, err := pinnedLink(pin, ifindex)
	if err != nil {
		return err
	}
	if l != nil {
		t.finally.push(func() { l.Close() })
	}
	if alive {
		changed, err := upgradeLink(t, pin, l, prog, replace)
		if changed {
			res.Upgraded = append(res.Upgraded, filepath.Base(pin))
		}
		return err
	}
	if l != nil {
		if err := removeLink(pin); err != nil {
			return err
		}
	}
	nl, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: at})
	if err != nil {
		return fmt.Errorf("attach %s at tcx: %w", prog, err)
	}
	return pinNewLink(t, pin, nl)
}

// setHairpinLink attaches the parent's egress program while hairpin is on
// and removes it when off, so that without hairpin no program runs on the
// host's transmit path at all.
func setHairpinLink(t *txn, dir string, ifindex int, on bool, prog *ebpf.Program, replace bool, res *AttachResult) error {
	pin := filepath.Join(dir, pinHostTxLink)
	if on {
		return ensureTCX(t, pin, ifindex, ebpf.AttachTCXEgress, prog, replace, res)
	}
	return removeLink(pin)
}

// upgradeEndpointLinks gives every live endpoint link the new transmit
// program. Links of endpoints that are gone are left to `endpoint del`.
func upgradeEndpointLinks(t *txn, dir string, prog *ebpf.Program, replace bool, res *AttachResult) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), pinEpLinkPref) {
			continue
		}
		pin := filepath.Join(dir, e.Name())
		l, err := link.LoadPinnedLink(pin, nil)
		if err != nil {
			continue
		}
		t.finally.push(func() { l.Close() })
		changed, err := upgradeLink(t, pin, l, prog, replace)
		if err != nil {
			return err
		}
		if changed {
			res.Upgraded = append(res.Upgraded, e.Name())
		}
	}
	return nil
}

// keepTagsInFrame turns rx-vlan offload off on the parent: XDP cannot see a
// tag the NIC moved into metadata (it reads VID 0) unless the driver offers
// the rx_vlan_tag kfunc, which the device-bound variant uses where it can.
// wasOurs says an earlier attach turned it off already.
func keepTagsInFrame(t *txn, parent string, wasOurs bool) (note string, turnedOff bool, err error) {
	on, err := ethtool.RxVLANOffload(parent)
	switch {
	case errors.Is(err, ethtool.ErrFixed):
		return "rx-vlan offload: not reported by the driver", false, nil
	case err != nil:
		return "", false, err
	case !on && wasOurs:
		return "rx-vlan offload: off since xmacvlan attached (restored on detach)", false, nil
	case !on:
		return "rx-vlan offload: off (VLAN tags stay in the frame)", false, nil
	}
	err = ethtool.SetRxVLANOffload(parent, false)
	if errors.Is(err, ethtool.ErrFixed) {
		return "rx-vlan offload: on and fixed by the driver; tags come from XDP metadata where the driver offers it", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("turn rx-vlan offload off on %s: %w", parent, err)
	}
	t.rollback.push(func() { ethtool.SetRxVLANOffload(parent, true) })
	return "rx-vlan offload: turned off so that XDP sees VLAN tags (restored on detach)", true, nil
}
