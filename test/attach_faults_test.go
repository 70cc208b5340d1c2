package test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/internal/ethtool"
	"github.com/xmacvlan/xmacvlan/internal/state"
	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/lifecycle"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// Faults of attach (issue 10, classes 1, 3 and 5): each test builds the
// broken state a crash or an operator leaves, runs attach (or detach)
// again, and checks frames from the wire.

// pinFreshTable replaces the pin of table name in the host's directory with
// a new, empty map of the same layout: table pins that came from another
// datapath than the programs behind the link pins, as a first attach
// killed between its link pins and its table pins leaves them for the
// next run.
func pinFreshTable(t *testing.T, h *host, name string) {
	t.Helper()
	dp, err := loader.Load()
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	pin := filepath.Join(h.root, h.parent, name)
	if err := os.Remove(pin); err != nil {
		t.Fatal(err)
	}
	if err := dp.Tables.ByName()[name].Pin(pin); err != nil {
		t.Fatal(err)
	}
}

// Class 1: programs that read other tables than the pinned ones are
// replaced by a re-attach, not trusted because their name and tag match.
func TestReattachReplacesProgramsOnOtherTables(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.attach(loader.XDPOn) // every link, the XDP one too
	for _, name := range tables.Names() {
		pinFreshTable(t, h, name)
	}
	// The fresh settings lost the recorded choice: ask for it again.
	res, err := h.tryAttach(loader.AttachOptions{XDP: loader.XDPOn})
	if err != nil {
		t.Fatal(err)
	}
	for _, pin := range []string{state.PinXDPLink, state.PinRxTCLink} {
		if !slices.Contains(res.Upgraded, pin) {
			t.Errorf("re-attach kept %s on tables that are not pinned: %+v", pin, res)
		}
	}
	h.network("lan", 0, tables.Bridge)
	c := h.container("lan", "", "10.0.0.2/24", true)
	if err := ping(l.sw, c.ip); err != nil {
		t.Errorf("wire -> endpoint after re-attach: %v", err)
	}
	// Now all is in order: a further attach changes nothing.
	res, err = h.tryAttach(loader.AttachOptions{})
	if err != nil || len(res.Upgraded) != 0 {
		t.Errorf("attach of a sound parent: %+v, %v; want no upgrade", res, err)
	}
}

// Class 1: a table pin lost while the programs run (rm of xmv_macs, or a
// first attach killed before it pinned the tables) is pinned again from
// the running programs, entries and all.
func TestReattachAdoptsTablesOfRunningPrograms(t *testing.T) {
	for _, lost := range []string{"xmv_macs", "all"} {
		t.Run(lost, func(t *testing.T) {
			l := newLab(t)
			h := l.host()
			h.attach("")
			h.network("lan", 0, tables.Bridge)
			c1 := h.container("lan", "", "10.0.0.2/24", false)
			for _, name := range tables.Names() {
				if lost == "all" || name == lost {
					os.Remove(filepath.Join(h.root, h.parent, name))
				}
			}
			if _, err := h.tryAttach(loader.AttachOptions{}); err != nil {
				t.Fatal(err)
			}
			c2 := h.container("lan", "", "10.0.0.3/24", true)
			for _, c := range []*container{c1, c2} {
				if err := ping(l.sw, c.ip); err != nil {
					t.Errorf("wire -> %s after re-attach: %v", c.ip, err)
				}
			}
		})
	}
}

// Class 3: one NIC carries one datapath. A second root, or this root under
// the NIC's new name, is refused with the name of the first; detach of the
// renamed NIC gives it its rx-vlan offload back.
func TestOneDatapathPerNIC(t *testing.T) {
	l := newLab(t)
	h := l.host()
	var offloadBefore bool
	h.ns.Do(func() (err error) { offloadBefore, err = ethtool.RxVLANOffload(h.parent); return err })
	if !offloadBefore {
		t.Fatal("rx-vlan offload is off on a fresh veth: the test cannot see it restored")
	}
	h.attach(loader.XDPOn)

	other := filepath.Join("/sys/fs/bpf", testutil.Name("xt"))
	t.Cleanup(func() { os.RemoveAll(other) })
	err := h.ns.Do(func() error {
		_, err := loader.Attach(loader.AttachOptions{Root: other, Parent: h.parent})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), h.root) {
		t.Errorf("attach from a second root: %v; want a refusal naming %s", err, h.root)
	}
	if _, err := os.Stat(filepath.Join(other, h.parent)); err == nil {
		t.Error("the refused attach left state in the second root")
	}

	// Rename the parent (it must be down for that).
	nic := mustLink(t, h.ns, h.parent)
	h.ns.NL.LinkSetDown(nic)
	if err := h.ns.NL.LinkSetName(nic, "lan0"); err != nil {
		t.Fatal(err)
	}
	up(t, h.ns, "lan0")
	err = h.ns.Do(func() error {
		_, err := loader.Attach(loader.AttachOptions{Root: h.root, Parent: "lan0"})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "attached as ens33") {
		t.Errorf("attach of the renamed parent: %v; want a refusal naming ens33", err)
	}
	var st []loader.ParentStatus
	h.ns.Do(func() (err error) { st, err = loader.Status(h.root, ""); return err })
	if len(st) != 1 || !st[0].Present || st[0].RenamedTo != "lan0" || st[0].XDP != "on" {
		t.Errorf("status of the renamed parent: %+v; want ens33 present as lan0 with native XDP", st)
	}
	// A new NIC under the old name does not take the datapath away.
	if err := h.ns.NL.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: h.parent}, PeerName: "newpeer"}); err != nil {
		t.Fatal(err)
	}
	up(t, h.ns, h.parent)
	err = h.ns.Do(func() error {
		_, err := loader.Attach(loader.AttachOptions{Root: h.root, Parent: h.parent})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "runs on lan0") {
		t.Errorf("attach of a new NIC under the old name: %v; want a refusal naming lan0", err)
	}
	if x := mustLink(t, h.ns, "lan0").Attrs().Xdp; x == nil || !x.Attached {
		t.Error("the refused attach took the XDP program off lan0")
	}
	if err := h.ns.Do(func() error { return detachForce(h.root, h.parent) }); err != nil {
		t.Fatalf("detach ens33 (now lan0): %v", err)
	}
	var offloadAfter bool
	h.ns.Do(func() (err error) { offloadAfter, err = ethtool.RxVLANOffload("lan0"); return err })
	if offloadAfter != offloadBefore {
		t.Errorf("rx-vlan offload of the renamed parent after detach: %v, before attach %v", offloadAfter, offloadBefore)
	}
	if x := mustLink(t, h.ns, "lan0").Attrs().Xdp; x != nil && x.Attached {
		t.Error("detach of the renamed parent left its XDP program")
	}
}

// Class 3: a re-attach keeps native XDP when its link pin is lost, and
// attaches again the link of an endpoint whose pin was lost.
func TestReattachRestoresLostLinks(t *testing.T) {
	l := newLab(t)
	h := l.host()
	if res := h.attach(loader.XDPOn); res.XDP != "on" {
		t.Fatalf("first attach with --xdp on: XDP %s", res.XDP)
	}
	h.network("lan", 0, tables.Bridge)
	c := h.container("lan", "", "10.0.0.2/24", false)
	dir := filepath.Join(h.root, h.parent)
	for _, pin := range []string{state.PinXDPLink, state.EndpointLinkPin(c.ep.Ifindex)} {
		if err := os.Remove(filepath.Join(dir, pin)); err != nil {
			t.Fatal(err)
		}
	}
	// The kernel releases a link whose last pin is gone a moment later.
	err := eventually(5*time.Second, func() error {
		if ping(l.sw, c.ip) == nil {
			return errors.New("the endpoint still answers without its link: the test proves nothing")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := h.tryAttach(loader.AttachOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.XDP != "on" || res.XDPChoice != loader.XDPOn {
		t.Errorf("re-attach after the XDP link pin was lost: XDP %s (choice %s), want on as recorded", res.XDP, res.XDPChoice)
	}
	if x := mustLink(t, h.ns, h.parent).Attrs().Xdp; x == nil || !x.Attached || x.AttachMode != 1 /* XDP_ATTACHED_DRV */ {
		t.Errorf("XDP on the parent after re-attach: %+v, want native", x)
	}
	if err := ping(l.sw, c.ip); err != nil {
		t.Errorf("wire -> endpoint after re-attach: %v", err)
	}
}

// Class 5: a root belongs to the network namespace it was attached in.
// Another namespace with its own ens33 is refused attach and changes, and
// the first namespace's endpoint keeps working.
func TestRootBelongsToOneNetns(t *testing.T) {
	l := newLab(t)
	a, b := l.host(), l.host()
	b.root = a.root
	a.attach("")
	a.network("lan", 0, tables.Bridge)
	c := a.container("lan", "", "10.0.0.2/24", false)

	err := b.ns.Do(func() error {
		_, err := loader.Attach(loader.AttachOptions{Root: b.root, Parent: b.parent})
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "another network namespace") {
		t.Errorf("attach from a second namespace: %v; want a refusal", err)
	}
	err = b.ns.Do(func() error {
		h, err := loader.Open(b.root, b.parent)
		if err == nil {
			h.Close()
		}
		return err
	})
	if err == nil || !strings.Contains(err.Error(), "another network namespace") {
		t.Errorf("changes from a second namespace: %v; want a refusal", err)
	}
	err = b.ns.Do(func() error { return detachForce(b.root, b.parent) })
	if err == nil || !strings.Contains(err.Error(), "another network namespace") {
		t.Errorf("detach from a second namespace: %v; want a refusal", err)
	}
	if x := mustLink(t, b.ns, b.parent).Attrs().Xdp; x != nil && x.Attached {
		t.Error("the refused attach left an XDP program in the second namespace")
	}
	if err := ping(l.sw, c.ip); err != nil {
		t.Errorf("wire -> the first namespace's endpoint: %v", err)
	}
}

// The table IDs the programs use are the pinned ones after attach.
func TestAttachedProgramsUsePinnedTables(t *testing.T) {
	l := newLab(t)
	h := l.host()
	on := true
	h.tryAttach(loader.AttachOptions{XDP: loader.XDPOn, Hairpin: &on}) // every link
	dir := filepath.Join(h.root, h.parent)
	pinned := map[ebpf.MapID]bool{}
	for _, name := range tables.Names() {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if err != nil {
			t.Fatal(err)
		}
		info, _ := m.Info()
		id, _ := info.ID()
		pinned[id] = true
		m.Close()
	}
	var st []loader.ParentStatus
	h.ns.Do(func() (err error) { st, err = loader.Status(h.root, h.parent); return err })
	if len(st) != 1 || len(st[0].Links) < 3 {
		t.Fatalf("status: %+v", st)
	}
	for _, ls := range st[0].Links {
		p, err := ebpf.NewProgramFromID(ebpf.ProgramID(ls.ProgramID))
		if err != nil {
			t.Fatal(err)
		}
		info, _ := p.Info()
		ids, _ := info.MapIDs()
		p.Close()
		for _, id := range ids {
			m, err := ebpf.NewMapFromID(id)
			if err != nil {
				continue
			}
			mi, _ := m.Info()
			m.Close()
			if strings.HasPrefix(mi.Name, "xmv_") && !pinned[id] {
				t.Errorf("%s runs %s on table %s id %d, which is not pinned", ls.Pin, ls.Program, mi.Name, id)
			}
		}
	}
}

// State pinned by the build before the settings grew (12-byte values) is
// carried over by attach, endpoints and all, not refused.
func TestAttachUpgradesOlderSettings(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.attach("")
	h.network("lan", 0, tables.Bridge)
	c := h.container("lan", "", "10.0.0.2/24", false)
	var before tables.Settings
	h.tables(func(tb *tables.Tables) (err error) { before, err = tb.Settings(); return err })

	pin := filepath.Join(h.root, h.parent, tables.SettingsName)
	cur, err := ebpf.LoadPinnedMap(pin, nil)
	if err != nil {
		t.Fatal(err)
	}
	value := make([]byte, cur.ValueSize())
	if err := cur.Lookup(uint32(0), value); err != nil {
		t.Fatal(err)
	}
	cur.Close()
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Array, KeySize: 4, ValueSize: 12, MaxEntries: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Update(uint32(0), value[:12], 0); err != nil {
		t.Fatal(err)
	}
	os.Remove(pin)
	if err := old.Pin(pin); err != nil {
		t.Fatal(err)
	}

	res, err := h.tryAttach(loader.AttachOptions{})
	if err != nil {
		t.Fatalf("attach over an older build's settings: %v", err)
	}
	if !slices.ContainsFunc(res.Notes, func(n string) bool { return strings.Contains(n, "carried over") }) {
		t.Errorf("notes %q do not say the settings were carried over", res.Notes)
	}
	var after tables.Settings
	h.tables(func(tb *tables.Tables) (err error) { after, err = tb.Settings(); return err })
	if after.ParentIfindex != before.ParentIfindex || after.ParentMAC.String() != before.ParentMAC.String() ||
		after.RestoreRxVLAN != before.RestoreRxVLAN || after.NetnsCookie != before.NetnsCookie {
		t.Errorf("settings after the upgrade %+v, before %+v", after, before)
	}
	if err := ping(l.sw, c.ip); err != nil {
		t.Errorf("wire -> endpoint after the upgrade: %v", err)
	}
}

// detachForce detaches parent and removes its endpoints, as
// `xmacvlan detach --force` does.
func detachForce(root, parent string) error {
	r, err := lifecycle.Open(root)
	if err != nil {
		return err
	}
	return r.DetachParent(parent, true)
}
