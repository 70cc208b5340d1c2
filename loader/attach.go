package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/bpf"
	"github.com/xmacvlan/xmacvlan/internal/ethtool"
	"github.com/xmacvlan/xmacvlan/internal/state"
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
// the new programs atomically, dead ones are attached again, and a link
// whose program reads tables other than the pinned ones (a killed attach,
// a lost table pin) gets programs that read the pinned ones. It refuses a
// parent that carries another xmacvlan datapath, and a root used from
// another network namespace. A failure undoes everything this run did.
func Attach(opts AttachOptions) (res *AttachResult, err error) {
	if opts.Mode == "" {
		opts.Mode = ModeAuto
	}
	if err := state.CheckParentName(opts.Parent); err != nil {
		return nil, err
	}
	root, err := state.Open(opts.Root, state.Reshape)
	if err != nil {
		return nil, err
	}
	defer root.Close()

	parent, err := netlink.LinkByName(opts.Parent)
	if err != nil {
		return nil, fmt.Errorf("unknown parent %q: %w", opts.Parent, err)
	}
	ifindex := parent.Attrs().Index
	cookie, err := netnsCookie()
	if err != nil {
		return nil, err
	}
	if err := checkNetns(root, "", cookie); err != nil {
		return nil, err
	}
	if err := checkOneDatapath(root, opts.Parent, ifindex); err != nil {
		return nil, err
	}
	res = &AttachResult{Parent: opts.Parent, Ifindex: ifindex, Upgraded: []string{}, Notes: []string{}} // lists, never null, in JSON
	dir := root.ParentDir(opts.Parent)

	var t txn
	defer func() { t.end(err != nil) }()

	if !exists(dir) {
		if err := os.Mkdir(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
		t.rollback.push(func() { os.Remove(dir) })
		res.New = true
	}
	if err := adoptTables(&t, dir, res); err != nil {
		return nil, err
	}
	d, err := loadReusing(dir)
	if err != nil {
		return nil, err
	}
	t.finally.push(d.Close)
	ids, err := d.Tables.MapIDs()
	if err != nil {
		return nil, err
	}
	a := &attachRun{t: &t, res: res, tables: ids, replace: opts.Replace}

	settings, err := d.Tables.Settings()
	if err != nil {
		return nil, err
	}
	if d.upgradedSettings { // an older build recorded no mode: its pins tell
		settings.Generic = !exists(filepath.Join(dir, state.PinXDPLink)) && exists(filepath.Join(dir, state.PinRxTCLink))
	}
	// Attached before: keep the mode it had, never downgrade silently.
	var recorded *XDPMode
	if d.reused[tables.SettingsName] && settings.ParentIfindex != 0 {
		m := ModeNative
		if settings.Generic {
			m = ModeGeneric
		}
		recorded = &m
	}
	if err := a.attachXDP(dir, parent, opts.Mode, recorded, d); err != nil {
		return nil, err
	}
	if err := failpoint("after-xdp"); err != nil {
		return nil, err
	}
	if err := a.ensureTCX(filepath.Join(dir, state.PinRxTCLink), ifindex, ebpf.AttachTCXIngress, d.Programs.XmvRxTc); err != nil {
		return nil, err
	}
	if err := a.endpointLinks(dir, d); err != nil {
		return nil, err
	}
	if err := failpoint("after-links"); err != nil {
		return nil, err
	}

	old := settings
	settings.ParentIfindex = ifindex
	settings.ParentMAC = parent.Attrs().HardwareAddr
	settings.Generic = res.XDPMode == ModeGeneric
	settings.NetnsCookie = cookie
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
	if err := d.Tables.SetSettings(settings); err != nil {
		return nil, err
	}
	t.rollback.push(func() { d.Tables.SetSettings(old) })
	if err := failpoint("after-settings"); err != nil {
		return nil, err
	}

	// Tables are pinned only now that the programs using them run.
	pins, err := d.Tables.Pin(dir, func(name string) bool { return d.reused[name] })
	for _, pin := range pins {
		t.rollback.push(func() { os.Remove(pin) })
	}
	if err != nil {
		return nil, err
	}
	if d.upgradedSettings {
		if err := upgradeSettingsPin(&t, dir, d); err != nil {
			return nil, err
		}
		res.Notes = append(res.Notes, "settings carried over to this build's layout")
	}
	if err := failpoint("after-pins"); err != nil {
		return nil, err
	}
	if err := a.setHairpinLink(dir, ifindex, settings.Hairpin, d.Programs.XmvHostTx); err != nil {
		return nil, err
	}
	// Last, as nothing after it can fail: later runs attach endpoints
	// with the program pinned here.
	if err := replacePin(filepath.Join(dir, state.PinEpTxProg), d.Programs.XmvEpTx); err != nil {
		return nil, err
	}
	return res, nil
}

// attachRun is one attach's record: its transaction, its result, the
// kernel IDs of the tables its programs must use, and --replace.
type attachRun struct {
	t       *txn
	res     *AttachResult
	tables  map[ebpf.MapID]string
	replace bool
	checked map[ebpf.ProgramID]bool // programs usesTables has looked at
}

// attachXDP attaches the receive program in native mode, or upgrades the
// one attached. The device-bound variant (which reads tags the driver
// stripped) is preferred where the driver loads it. recorded is the mode
// of an earlier attach (nil: none), which a re-attach keeps.
//
// Generic mode attaches no XDP program: the skb exists already, so XDP
// would save nothing over tcx, and on this kernel any generic XDP program
// leaves skb->data at the network header for the tcx program after it
// (TestGenericXDPHidesMACFromTCX). In generic mode xmv_rx_tc classifies
// and drops on its own.
func (a *attachRun) attachXDP(dir string, parent netlink.Link, mode XDPMode, recorded *XDPMode, d *Datapath) error {
	ifindex, name := parent.Attrs().Index, parent.Attrs().Name
	pin := filepath.Join(dir, state.PinXDPLink)
	l, alive, err := pinnedLink(pin, ifindex)
	if err != nil {
		return err
	}
	if l != nil {
		a.t.finally.push(func() { l.Close() })
	}
	if alive {
		if mode == ModeGeneric {
			return fmt.Errorf("%s is attached in native mode; detach it first to change to generic", name)
		}
		prog, progName, note := d.xdpProgram(a.t, ifindex)
		if note != "" {
			a.res.Notes = append(a.res.Notes, note)
		}
		a.res.XDPMode, a.res.Program = ModeNative, progName
		return a.upgradeLink(pin, l, prog)
	}
	if l != nil { // dead: the parent went away or was re-created
		if err := removeLink(pin); err != nil {
			return err
		}
	}
	wasGeneric := recorded != nil && *recorded == ModeGeneric
	wasNative := recorded != nil && *recorded == ModeNative
	if wasGeneric && mode == ModeNative {
		return fmt.Errorf("%s is attached in generic mode; detach it first to change to native", name)
	}
	if wasNative && mode == ModeGeneric {
		return fmt.Errorf("%s is attached in native mode; detach it first to change to generic", name)
	}
	if mode == ModeGeneric || wasGeneric {
		a.res.XDPMode, a.res.Program = ModeGeneric, "none (tcx classifies)"
		return nil
	}

	prog, progName, note := d.xdpProgram(a.t, ifindex)
	if note != "" {
		a.res.Notes = append(a.res.Notes, note)
	}
	nl, err := link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
	if err != nil && progName != bpf.XmacvlanProgXmvRxXdp {
		// The driver refused the device-bound variant: try the plain one.
		prog, progName = d.Programs.XmvRxXdp, bpf.XmacvlanProgXmvRxXdp
		nl, err = link.AttachXDP(link.XDPOptions{Program: prog, Interface: ifindex, Flags: link.XDPDriverMode})
	}
	if err != nil {
		if mode == ModeNative {
			return fmt.Errorf("attach XDP to %s in native mode: %w", name, err)
		}
		if wasNative {
			return fmt.Errorf("%s was attached with native XDP and its driver now refuses it (%v); "+
				"to run without XDP, detach it and attach with --xdp-mode generic", name, err)
		}
		a.res.XDPMode, a.res.Program = ModeGeneric, "none (tcx classifies)"
		a.res.Notes = append(a.res.Notes, fmt.Sprintf("no native XDP on %s (%v): tcx classifies on the skb path", name, err))
		return nil
	}
	a.res.XDPMode, a.res.Program = ModeNative, progName
	return pinNewLink(a.t, pin, nl)
}

// xdpProgram picks the receive program: the device-bound variant where the
// driver loads it, else the plain one. The note says why the variant was
// not bound when the size guard (devbound.go) refused it.
func (d *Datapath) xdpProgram(t *txn, ifindex int) (*ebpf.Program, string, string) {
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
	return d.Programs.XmvRxXdp, bpf.XmacvlanProgXmvRxXdp, note
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
func (a *attachRun) ensureTCX(pin string, ifindex int, at ebpf.AttachType, prog *ebpf.Program) error {
	l, alive, err := pinnedLink(pin, ifindex)
	if err != nil {
		return err
	}
	if l != nil {
		a.t.finally.push(func() { l.Close() })
	}
	if alive {
		return a.upgradeLink(pin, l, prog)
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
	return pinNewLink(a.t, pin, nl)
}

// setHairpinLink attaches the parent's egress program while hairpin is on
// and removes it when off, so that without hairpin no program runs on the
// host's transmit path at all.
func (a *attachRun) setHairpinLink(dir string, ifindex int, on bool, prog *ebpf.Program) error {
	pin := filepath.Join(dir, state.PinHostTxLink)
	if on {
		return a.ensureTCX(pin, ifindex, ebpf.AttachTCXEgress, prog)
	}
	return removeLink(pin)
}

// endpointLinks gives every live endpoint link the new transmit program,
// and attaches it again to each endpoint whose link pin was lost while its
// outer veth lives on. Links of endpoints that are gone are left to
// `endpoint del` and gc.
func (a *attachRun) endpointLinks(dir string, d *Datapath) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, ok := state.EndpointLinkIfindex(e.Name()); !ok {
			continue
		}
		pin := filepath.Join(dir, e.Name())
		l, err := link.LoadPinnedLink(pin, nil)
		if err != nil {
			continue
		}
		a.t.finally.push(func() { l.Close() })
		if err := a.upgradeLink(pin, l, d.Programs.XmvEpTx); err != nil {
			return err
		}
	}
	eps, err := d.Tables.Endpoints()
	if err != nil {
		return err
	}
	for _, ep := range eps {
		pin := filepath.Join(dir, state.EndpointLinkPin(ep.Ifindex))
		if exists(pin) {
			continue
		}
		veth, err := netlink.LinkByIndex(ep.Ifindex)
		if err != nil || veth.Type() != "veth" {
			continue // gone: gc removes the endpoint
		}
		nl, err := link.AttachTCX(link.TCXOptions{Interface: ep.Ifindex, Program: d.Programs.XmvEpTx, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			return fmt.Errorf("attach the lost link of endpoint %s (ifindex %d): %w", veth.Attrs().Name, ep.Ifindex, err)
		}
		if err := pinNewLink(a.t, pin, nl); err != nil {
			return err
		}
		a.res.Notes = append(a.res.Notes, fmt.Sprintf("re-attached the lost link of endpoint %s (ifindex %d)", veth.Attrs().Name, ep.Ifindex))
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

// upgradeSettingsPin pins the settings in this build's layout in place of
// an older build's; rollback pins the old table back.
func upgradeSettingsPin(t *txn, dir string, d *Datapath) error {
	pin := filepath.Join(dir, tables.SettingsName)
	old, err := ebpf.LoadPinnedMap(pin, nil)
	if err != nil {
		return fmt.Errorf("open pinned settings: %w", err)
	}
	t.finally.push(func() { old.Close() })
	if err := replacePin(pin, d.Tables.Maps().XmvSettings); err != nil {
		return err
	}
	t.rollback.push(func() { replacePin(pin, old) })
	return nil
}
