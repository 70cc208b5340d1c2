package lifecycle

import (
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/internal/nsutil"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// dyingWait bounds how long add waits for the kernel to finish deleting a
// namespace that is gone by name (cleanup_net runs from a workqueue, so
// its veths outlive `ip netns del` by a moment).
var dyingWait = 5 * time.Second

// reapStaleHolders removes the endpoints of network n that hold what s
// asks for (its MAC, its address, or its inner name in its namespace) and
// are stale: their outer veth is gone, or their namespace is gone by name
// and its veth goes within dyingWait. A live holder is left for the
// checks that follow to refuse. recs are the parent's records; reaped says
// whether any went.
func reapStaleHolders(h *loader.Handle, n tables.Network, s Spec, recs []tables.Record) (reaped bool, err error) {
	var ino uint64
	if tg, err := openTarget(s); err == nil {
		ino = tg.ino
		tg.close()
	}
	name := s.Name
	if name == "" {
		name = defaultName(n, s.Host)
	}
	for _, rec := range recs {
		holds := (s.MAC != nil && slices.Equal(rec.MAC, s.MAC)) ||
			(s.IP != nil && rec.IP != nil && rec.IP.IP.Equal(s.IP.IP)) ||
			(ino != 0 && rec.NetnsIno == ino && rec.Ifname == name)
		if rec.VLAN != n.VLAN || !holds {
			continue
		}
		if !isStale(rec) && !(namespaceGone(rec) && waitGone(rec)) {
			continue
		}
		if err := teardown(h, rec.ID); err != nil {
			return reaped, fmt.Errorf("remove stale endpoint %s (was in %s): %w", rec.Ifname, rec.Netns, err)
		}
		reaped = true
	}
	return reaped, nil
}

// namespaceGone says whether rec's namespace no longer opens under the
// name it was given, or that name now means another namespace.
func namespaceGone(rec tables.Record) bool {
	if rec.Host {
		return false
	}
	ns, err := nsutil.Open(rec.Netns)
	if err != nil {
		return true
	}
	defer ns.Close()
	var st unix.Stat_t
	return unix.Fstat(int(ns), &st) == nil && st.Ino != rec.NetnsIno
}

func waitGone(rec tables.Record) bool {
	deadline := time.Now().Add(dyingWait)
	for time.Now().Before(deadline) {
		if isStale(rec) {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return isStale(rec)
}

// Difference is one way an endpoint differs from its record: Item is what
// was compared, Want what the record says, Got what exists.
type Difference struct {
	Item string `json:"item"`
	Want string `json:"want"`
	Got  string `json:"got"`
}

func (d Difference) String() string { return fmt.Sprintf("%s: want %s, got %s", d.Item, d.Want, d.Got) }

// CheckEndpoint compares the endpoint sel names on network with what
// exists: the veth pair, the inner end (namespace, name, MAC, MTU,
// address, default route), the datapath's entries (endpoint and MAC
// tables, flood list), the parent's unicast filter entry and the tcx
// link. No differences is a healthy endpoint; an endpoint with no record
// is an error.
func (r *Root) CheckEndpoint(network string, sel Selector) ([]Difference, error) {
	h, n, recs, err := r.network(network)
	if err != nil {
		return nil, err
	}
	defer h.Close()
	rec, found := findRecord(n, sel, recs)
	if !found {
		return nil, fmt.Errorf("no such endpoint on network %s", network)
	}
	return check(h, rec), nil
}

func check(h *loader.Handle, rec tables.Record) []Difference {
	var diffs []Difference
	diff := func(item string, want, got any) {
		diffs = append(diffs, Difference{Item: item, Want: fmt.Sprint(want), Got: fmt.Sprint(got)})
	}
	if rec.State != tables.Ready {
		diff("record", tables.Ready, rec.State)
	}
	outer, err := netlink.LinkByIndex(rec.Ifindex)
	switch {
	case err != nil:
		diff("outer veth", fmt.Sprintf("%s (ifindex %d)", rec.Outer, rec.Ifindex), "gone")
	case outer.Attrs().Name != rec.Outer:
		diff("outer veth", fmt.Sprintf("%s (ifindex %d)", rec.Outer, rec.Ifindex), outer.Attrs().Name)
	}
	checkInner(withParentMTU(h, rec), diff)

	ep, ok, err := h.Tables.Endpoint(rec.Ifindex)
	switch {
	case err != nil:
		diff("endpoint table", "an entry", err)
	case !ok:
		diff("endpoint table", "an entry", "none")
	case ep.ID != rec.ID || ep.VLAN != rec.VLAN || !slices.Equal(ep.MAC, rec.MAC):
		diff("endpoint table", fmt.Sprintf("id %d VLAN %d MAC %s", rec.ID, rec.VLAN, rec.MAC), fmt.Sprintf("id %d VLAN %d MAC %s", ep.ID, ep.VLAN, ep.MAC))
	case ep.StormLimit != rec.StormLimit:
		diff("endpoint table", fmt.Sprintf("storm limit %d", rec.StormLimit), fmt.Sprintf("storm limit %d", ep.StormLimit))
	}
	holder, ok, err := h.Tables.EndpointByMAC(rec.VLAN, rec.MAC)
	switch {
	case err != nil:
		diff("MAC table", "an entry", err)
	case !ok:
		diff("MAC table", fmt.Sprintf("%s -> ifindex %d", rec.MAC, rec.Ifindex), "none")
	case holder.Ifindex != rec.Ifindex:
		diff("MAC table", fmt.Sprintf("%s -> ifindex %d", rec.MAC, rec.Ifindex), fmt.Sprintf("ifindex %d", holder.Ifindex))
	}
	flood, err := h.Tables.FloodList(rec.VLAN)
	if err != nil {
		diff("flood list", "readable", err)
	} else if c := count(flood, rec.Ifindex); c != 1 {
		diff(fmt.Sprintf("flood list of VLAN %d", rec.VLAN), "ifindex once", fmt.Sprintf("%d times", c))
	}
	if !hasUnicastEntry(h, rec.MAC) {
		diff("parent's unicast filter", rec.MAC, "no entry")
	}
	if !h.EndpointLinkAlive(rec.Ifindex) {
		diff("tcx link", fmt.Sprintf("pinned, on ifindex %d", rec.Ifindex), "missing or defunct")
	}
	return diffs
}

// checkInner compares the inner end, in its namespace, with the record.
func checkInner(rec tables.Record, diff func(string, any, any)) {
	tg, err := openTarget(Spec{Netns: rec.Netns, Host: rec.Host})
	if err != nil {
		// A path another mount namespace holds (a runtime's private
		// /run) cannot be opened from here either.
		diff("namespace", rec.Netns, fmt.Sprintf("cannot be opened from this mount namespace: %v", err))
		return
	}
	defer tg.close()
	if tg.ino != rec.NetnsIno {
		diff("namespace", fmt.Sprintf("%s (inode %d)", rec.Netns, rec.NetnsIno), fmt.Sprintf("inode %d", tg.ino))
		return
	}
	inner, err := tg.nl.LinkByName(rec.Ifname)
	if err != nil {
		diff("inner interface", rec.Ifname, "gone")
		return
	}
	a := inner.Attrs()
	if _, ok := inner.(*netlink.Veth); !ok || a.ParentIndex != rec.Ifindex {
		diff("inner interface", fmt.Sprintf("veth peer of ifindex %d", rec.Ifindex), fmt.Sprintf("%s peer of ifindex %d", inner.Type(), a.ParentIndex))
	}
	if !slices.Equal(a.HardwareAddr, rec.MAC) {
		diff("MAC", rec.MAC, a.HardwareAddr)
	}
	if rec.MTU != 0 && a.MTU != rec.MTU {
		diff("MTU", rec.MTU, a.MTU)
	}
	if rec.IP != nil {
		addrs, _ := tg.nl.AddrList(inner, netlink.FAMILY_ALL)
		found := false
		for _, ad := range addrs {
			if ad.IP.Equal(rec.IP.IP) && ad.Mask.String() == rec.IP.Mask.String() {
				found = true
			}
		}
		if !found {
			diff("address", rec.IP, "absent")
		}
	}
	if rec.Gateway != nil {
		family := netlink.FAMILY_V4
		if rec.Gateway.To4() == nil {
			family = netlink.FAMILY_V6
		}
		routes, _ := tg.nl.RouteList(inner, family)
		found := false
		for _, rt := range routes {
			if rt.Gw.Equal(rec.Gateway) && (rt.Dst == nil || isDefault(rt.Dst)) {
				found = true
			}
		}
		if !found {
			diff("default route", "via "+rec.Gateway.String(), "absent")
		}
	}
}

func isDefault(n *net.IPNet) bool {
	ones, _ := n.Mask.Size()
	return ones == 0
}

func count(list []int, x int) int {
	c := 0
	for _, v := range list {
		if v == x {
			c++
		}
	}
	return c
}

// parentFDB lists the parent's "self" permanent unicast fdb entries.
func parentFDB(h *loader.Handle) ([]netlink.Neigh, error) {
	s, err := h.Tables.Settings()
	if err != nil {
		return nil, err
	}
	all, err := netlink.NeighList(s.ParentIfindex, unix.AF_BRIDGE)
	if err != nil {
		return nil, err
	}
	var out []netlink.Neigh
	for _, n := range all {
		if n.Flags&netlink.NTF_SELF != 0 && n.State&netlink.NUD_PERMANENT != 0 && len(n.HardwareAddr) == 6 && n.HardwareAddr[0]&1 == 0 {
			out = append(out, n)
		}
	}
	return out, nil
}

func hasUnicastEntry(h *loader.Handle, mac net.HardwareAddr) bool {
	fdb, err := parentFDB(h)
	if err != nil {
		return false
	}
	for _, n := range fdb {
		if slices.Equal(n.HardwareAddr, mac) {
			return true
		}
	}
	return false
}

// Removed is one thing gc removed (or, with dry run, would remove): Kind
// is endpoint, veth, link pin, fdb entry or flood list; Name says which.
type Removed struct {
	Parent string `json:"parent"`
	Kind   string `json:"kind"`
	Name   string `json:"name"`
}

func (r Removed) String() string { return fmt.Sprintf("%s on %s: %s", r.Kind, r.Parent, r.Name) }

// GC removes, on the parent of network (or on every parent for ""), the
// endpoints whose outer veth or namespace is gone, and what no record
// accounts for: veths named as this parent's outer veths, endpoint link
// pins, locally administered unicast entries in the parent's filter that
// no endpoint and no interface of this namespace (a macvlan) has, and
// flood lists that do not match the endpoint table. It says what it
// removed; with dryRun it removes nothing and says what it would.
func (r *Root) GC(network string, dryRun bool) ([]Removed, error) {
	nets, err := r.Networks()
	if err != nil {
		return nil, err
	}
	var parents []string
	vlan := -1
	for _, n := range nets {
		if network == "" || n.Name == network {
			if !slices.Contains(parents, n.Parent) {
				parents = append(parents, n.Parent)
			}
			if network != "" {
				vlan = int(n.VLAN)
			}
		}
	}
	if network != "" && vlan < 0 {
		return nil, fmt.Errorf("no network called %q", network)
	}
	if network == "" {
		parents, err = loader.Parents(r.Dir)
		if err != nil {
			return nil, err
		}
	}
	out := []Removed{}
	for _, parent := range parents {
		removed, err := r.gcParent(parent, vlan, dryRun)
		out = append(out, removed...)
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

func (r *Root) gcParent(parent string, vlan int, dryRun bool) ([]Removed, error) {
	h, err := loader.Open(r.Dir, parent) // no repair: gc reports what it finds
	if err != nil {
		return nil, err
	}
	defer h.Close()
	var out []Removed
	note := func(kind, name string) { out = append(out, Removed{Parent: parent, Kind: kind, Name: name}) }
	recs, err := h.Tables.Records()
	if err != nil {
		return nil, err
	}
	vlans := map[uint16]bool{}
	for _, rec := range recs {
		if vlan >= 0 && int(rec.VLAN) != vlan {
			continue
		}
		what := fmt.Sprintf("%s in %s (VLAN %d, outer %s)", rec.Ifname, rec.Netns, rec.VLAN, rec.Outer)
		switch {
		case rec.State != tables.Ready:
			what += ", left " + rec.State.String() + " by a crash"
		case isStale(rec):
			what += ", its veth is gone"
		default:
			continue
		}
		note("endpoint", what)
		vlans[rec.VLAN] = true
		if !dryRun {
			if err := teardown(h, rec.ID); err != nil {
				return out, err
			}
		}
	}
	if recs, err = h.Tables.Records(); err != nil {
		return out, err
	}
	known := map[int]bool{}
	names := map[string]bool{}
	macs := map[string]bool{}
	for _, rec := range recs {
		known[rec.Ifindex] = true
		names[rec.Outer] = true
		macs[rec.MAC.String()] = true
	}
	links, err := netlink.LinkList()
	if err != nil {
		return out, err
	}
	inUse := map[string]bool{} // a macvlan on the parent puts its MAC there too
	for _, l := range links {
		inUse[l.Attrs().HardwareAddr.String()] = true
	}
	for _, l := range links {
		a := l.Attrs()
		if !ours(h, a.Name) || names[a.Name] {
			continue
		}
		note("veth", a.Name+" (no endpoint record)")
		if !dryRun {
			if err := netlink.LinkDel(l); err != nil {
				return out, fmt.Errorf("delete veth %s: %w", a.Name, err)
			}
		}
	}
	pins, err := h.EndpointLinks()
	if err != nil {
		return out, err
	}
	for _, ifindex := range pins {
		if known[ifindex] {
			continue
		}
		note("link pin", h.EndpointLinkPin(ifindex)+" (no endpoint)")
		if !dryRun {
			if err := h.DetachEndpointLink(ifindex); err != nil {
				return out, err
			}
		}
	}
	fdb, err := parentFDB(h)
	if err != nil {
		return out, err
	}
	p, err := parentLink(h)
	if err != nil {
		return out, err
	}
	for _, e := range fdb {
		mac := e.HardwareAddr
		if mac[0]&2 == 0 || slices.Equal(mac, p.Attrs().HardwareAddr) || macs[mac.String()] || inUse[mac.String()] {
			continue // not locally administered (ours are), the parent's own, an endpoint's, or an interface's here
		}
		note("fdb entry", mac.String()+" (no endpoint has this MAC)")
		if !dryRun {
			e := e
			if err := netlink.NeighDel(&e); err != nil {
				return out, fmt.Errorf("remove %s from the parent's unicast filter: %w", mac, err)
			}
		}
	}
	nets, err := h.Tables.Networks()
	if err != nil {
		return out, err
	}
	for _, n := range nets {
		if vlan >= 0 && int(n.VLAN) != vlan {
			continue
		}
		if dryRun {
			if floodWrong(h, n) {
				note("flood list", fmt.Sprintf("VLAN %d does not match its %d endpoints", n.VLAN, n.Members))
			}
			continue
		}
		if changed, err := h.Tables.SyncFlood(n.VLAN); err != nil {
			return out, err
		} else if changed && !vlans[n.VLAN] {
			note("flood list", fmt.Sprintf("VLAN %d rebuilt from the endpoint table", n.VLAN))
		}
	}
	return out, nil
}

// floodWrong says whether n's flood list differs from the endpoint table.
func floodWrong(h *loader.Handle, n tables.Network) bool {
	list, err := h.Tables.FloodList(n.VLAN)
	if err != nil {
		return true
	}
	eps, err := h.Tables.Endpoints()
	if err != nil {
		return true
	}
	want := map[int]bool{}
	for _, ep := range eps {
		if ep.VLAN == n.VLAN {
			want[ep.Ifindex] = true
		}
	}
	if len(list) != len(want) {
		return true
	}
	seen := map[int]bool{}
	for _, x := range list {
		if !want[x] || seen[x] {
			return true
		}
		seen[x] = true
	}
	return false
}
