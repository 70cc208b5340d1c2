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

// AttachOptions says what to attach where.
type AttachOptions struct {
	Root   string // pin root (--bpffs)
	Parent string // interface name, in the caller's network namespace
	// XDP is attach --xdp; "" keeps the choice recorded by an earlier
	// attach, else auto.
	XDP XDPChoice
	// Replace swaps the programs of live links even when they are the
	// same as this build's (a reload; upgrades happen without it).
	Replace bool
	// Hairpin turns host <-> untagged endpoint traffic on or off; nil
	// keeps what the parent has.
	Hairpin *bool
}

// AttachResult says what an attach did.
type AttachResult struct {
	Parent    string    `json:"parent"`
	Ifindex   int       `json:"ifindex"`
	XDP       string    `json:"xdp"`         // "on": native XDP runs; "off": tcx classifies alone
	XDPChoice XDPChoice `json:"xdp_choice"`  // what was asked (recorded for re-attaches)
	XDPReason string    `json:"xdp_reason"`  // why XDP is on or off
	Driver    string    `json:"driver"`      // the parent's driver (ethtool -i)
	Program   string    `json:"xdp_program"` // which receive program variant runs
	Hairpin   bool      `json:"hairpin"`
	New       bool      `json:"new"`      // first attach (else: reused pinned state)
	Upgraded  []string  `json:"upgraded"` // links whose program was replaced
	Notes     []string  `json:"notes"`    // what attach changed on the parent
}

// Attach attaches the datapath to a parent, or brings an attached one up to
// this build: pinned tables are reused with their entries, live links get
// the new programs atomically, dead ones are attached again, and a link
// whose program reads tables other than the pinned ones (a killed attach,
// a lost table pin) gets programs that read the pinned ones. It refuses a
// parent that carries another xmacvlan datapath, and a root used from
// another network namespace. A failure undoes everything this run did.
func Attach(opts AttachOptions) (res *AttachResult, err error) {
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
	// Attached before: keep the choice it had unless told otherwise.
	var recorded XDPChoice
	if d.reused[tables.SettingsName] && settings.ParentIfindex != 0 {
		recorded = XDPChoice(settings.XDPChoice)
	}
	choice := opts.XDP
	switch {
	case choice == "" && recorded != "":
		choice = recorded
	case choice == "":
		choice = XDPAuto
	case recorded != "" && choice != recorded:
		res.Notes = append(res.Notes, fmt.Sprintf("XDP choice changed from %s to %s", recorded, choice))
	}
	xdpEndpoints, err := countXDPDelivery(d.Tables)
	if err != nil {
		return nil, err
	}
	if choice == XDPOff && xdpEndpoints > 0 {
		return nil, fmt.Errorf("%d endpoint(s) of %s receive by XDP redirect (--delivery xdp), which needs the XDP program: "+
			"delete them first, or attach with --xdp auto or on", xdpEndpoints, opts.Parent)
	}
	if err := a.attachXDP(dir, parent, choice, xdpEndpoints, d); err != nil {
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
	settings.XDPChoice = string(choice)
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
	// An XDP program no longer wanted goes only now that nothing else
	// can fail: tcx classifies on its own meanwhile.
	if a.dropXDP != "" {
		if err := removeLink(a.dropXDP); err != nil {
			return nil, err
		}
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
	dropXDP string                  // the pin of an XDP link to remove once all else succeeded
}

// attachXDP attaches the receive program in native mode, upgrades the one
// attached, or marks it for removal, as decideXDP says for choice on this
// parent's driver with xdpEndpoints endpoints receiving by XDP redirect.
// The device-bound variant (which reads tags the driver stripped) is
// preferred where the driver loads it. Under auto a driver without native
// XDP leaves tcx to classify; under on, or for XDP delivery, it is an error
// that names the driver.
//
// Without XDP no generic (skb-mode) XDP program runs instead: the skb
// exists already, so it would save nothing over tcx, and on this kernel any
// generic XDP program leaves skb->data at the network header for the tcx
// program after it (TestGenericXDPHidesMACFromTCX). xmv_rx_tc then
// classifies and drops on its own.
func (a *attachRun) attachXDP(dir string, parent netlink.Link, choice XDPChoice, xdpEndpoints int, d *Datapath) error {
	ifindex, name := parent.Attrs().Index, parent.Attrs().Name
	driver := driverOf(name)
	want, reason := decideXDP(choice, driver, xdpEndpoints)
	a.res.XDPChoice, a.res.XDPReason, a.res.Driver = choice, reason, driver
	a.res.XDP, a.res.Program = "off", noXDPProgram
	pin := filepath.Join(dir, state.PinXDPLink)
	l, alive, err := pinnedLink(pin, ifindex)
	if err != nil {
		return err
	}
	if l != nil {
		a.t.finally.push(func() { l.Close() })
	}
	if !want {
		if l != nil {
			a.dropXDP = pin
		}
		return nil
	}
	if alive {
		prog, progName, note := d.xdpProgram(a.t, ifindex)
		if note != "" {
			a.res.Notes = append(a.res.Notes, note)
		}
		a.res.XDP, a.res.Program = "on", progName
		return a.upgradeLink(pin, l, prog)
	}
	if l != nil { // dead: the parent went away or was re-created
		if err := removeLink(pin); err != nil {
			return err
		}
	}
	nl, progName, note, err := d.attachNativeXDP(a.t, ifindex)
	if note != "" {
		a.res.Notes = append(a.res.Notes, note)
	}
	if err != nil {
		if choice == XDPAuto && xdpEndpoints == 0 {
			a.res.XDPReason = noNativeXDP(driver)
			a.res.Notes = append(a.res.Notes, fmt.Sprintf("no native XDP on %s (%v): tcx classifies on the skb path", name, err))
			return nil
		}
		why := "--xdp on"
		if choice == XDPAuto {
			why = fmt.Sprintf("%d endpoint(s) receive by XDP redirect", xdpEndpoints)
		}
		return fmt.Errorf("attach native XDP to %s (driver %s), as %s asks: %w; attach with --xdp off (or auto) to let tcx classify alone",
			name, driver, why, err)
	}
	a.res.XDP, a.res.Program = "on", progName
	return pinNewLink(a.t, pin, nl)
}

// countXDPDelivery counts the endpoints that receive by XDP redirect.
func countXDPDelivery(t *tables.Tables) (int, error) {
	eps, err := t.Endpoints()
	n := 0
	for _, ep := range eps {
		if ep.XDPDelivery {
			n++
		}
	}
	return n, err
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

// nativeXDP says whether the kernel reports an XDP program in native
// (driver) mode on the parent.
func nativeXDP(l netlink.Link) bool {
	fresh, err := netlink.LinkByIndex(l.Attrs().Index)
	if err == nil {
		l = fresh
	}
	x := l.Attrs().Xdp
	return x != nil && x.Attached && x.AttachMode == 1 // XDP_ATTACHED_DRV
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
	return "rx-vlan offload: turned off so that XDP, whenever it runs, sees VLAN tags (restored on detach)", true, nil
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
