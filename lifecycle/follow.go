package lifecycle

// Endpoints follow their parent: what a parent carries for its endpoints
// (MTU, carrier, the endpoints' MACs on its unicast filter, the datapath
// itself) is made to match the parent again after it changed, as kernel
// macvlan does from its netdevice notifier (macvlan_device_event).

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// Reconcile makes every endpoint of the attached parent follow the parent
// as it is now, under the root's writer lock, and returns one line per
// change made (none: everything matched already). For each Ready endpoint
// whose outer veth exists:
//
//   - MTU of both veth ends = min(the endpoint's configured MTU, the
//     parent's MTU): lowered with the parent, raised again with it, never
//     above the configured one (macvlan lowers its devices on
//     NETDEV_CHANGEMTU the same way);
//   - the outer end is up while the parent is up with carrier (IFF_UP and
//     IFF_LOWER_UP), down otherwise or while the parent is gone, so the
//     container sees carrier off (netif_stacked_transfer_operstate);
//   - the endpoint's MAC is in the parent's unicast filter (fdb "self");
//   - the endpoint's tcx link is pinned and alive;
//   - the outer end is in the parent's interface group (outerGroup).
//
// A parent deleted and re-created under the same name (a new ifindex) gets
// the datapath attached again first, as `xmacvlan attach` does, keeping
// the recorded tables and settings. What fails for one endpoint does not
// stop the others: the failures are returned together, after the changes.
func (r *Root) Reconcile(parent string) (changes []string, err error) {
	return r.reconcile(parent, true)
}

// Follow is Reconcile as the writing commands run it (attach calls it
// after attaching): it never takes an endpoint down, since without
// `xmacvlan watch` nothing would see the parent come back to undo that.
func (r *Root) Follow(parent string) (changes []string, err error) {
	return r.reconcile(parent, false)
}

func (r *Root) reconcile(parent string, takeDown bool) (changes []string, err error) {
	h, err := r.repaired(parent)
	if err != nil {
		return nil, err
	}
	h, changes, err = r.follow(h, takeDown, false)
	if h != nil {
		h.Close()
	}
	return changes, err
}

// followOnWrite is Follow for a writer that holds h already, so the next
// command repairs what changed. Changes and per-endpoint failures go to
// r.Followed; only a failed re-attach of a re-created parent fails the
// command. h may be closed and reopened (the attach takes the lock
// itself).
func (r *Root) followOnWrite(h *loader.Handle) (*loader.Handle, error) {
	h, changes, err := r.follow(h, false, true)
	if h == nil {
		return nil, err
	}
	if err != nil {
		changes = append(changes, "not followed: "+err.Error())
	}
	if r.Followed != nil {
		for _, c := range changes {
			r.Followed(c)
		}
	}
	return h, nil
}

// follow re-attaches a re-created parent, then makes the endpoints follow
// it. cheap skips the endpoints when the parent is as it was when they
// last followed it all (followed). On a failed re-attach it returns a nil
// handle (h is closed).
func (r *Root) follow(h *loader.Handle, takeDown, cheap bool) (*loader.Handle, []string, error) {
	var changes []string
	s, err := h.Tables.Settings()
	if err != nil {
		return h, nil, err
	}
	if again, err := netlink.LinkByName(h.Parent); err == nil && again.Attrs().Index != s.ParentIfindex && gone(s.ParentIfindex) {
		parent := h.Parent
		h.Close()
		res, err := loader.Attach(loader.AttachOptions{Root: r.Dir, Parent: parent})
		if err != nil {
			return nil, nil, fmt.Errorf("parent %s was re-created (ifindex %d -> %d); attaching the datapath to it again: %w",
				parent, s.ParentIfindex, again.Attrs().Index, err)
		}
		changes = append(changes, fmt.Sprintf("%s: re-created (ifindex %d -> %d): datapath attached again, XDP %s",
			parent, s.ParentIfindex, res.Ifindex, res.XDP))
		if h, err = loader.Open(r.Dir, parent); err != nil {
			return nil, changes, err
		}
	}
	more, err := followEndpoints(h, takeDown, cheap)
	return h, append(changes, more...), err
}

// gone says whether no interface has ifindex any more.
func gone(ifindex int) bool {
	_, err := netlink.LinkByIndex(ifindex)
	var notFound netlink.LinkNotFoundError
	return errors.As(err, &notFound) || errors.Is(err, unix.ENODEV)
}

// followEndpoints does the per-endpoint part of Reconcile. The outer end
// is changed after the inner one, so an outer end that matches says its
// endpoint is done: one dump of the links finds the endpoints to visit.
// That dump costs ~0.1 s with 4,096 endpoints, so with cheap nothing is
// visited while the parent is as it was when every endpoint last
// followed it.
func followEndpoints(h *loader.Handle, takeDown, cheap bool) ([]string, error) {
	s, err := h.Tables.Settings()
	if err != nil {
		return nil, err
	}
	p, err := netlink.LinkByIndex(s.ParentIfindex)
	parentGone := err != nil
	if parentGone && !gone(s.ParentIfindex) {
		return nil, fmt.Errorf("parent %s (ifindex %d): %w", h.Parent, s.ParentIfindex, err)
	}
	now := parentState{Ifindex: uint32(s.ParentIfindex)}
	if !parentGone {
		a := p.Attrs()
		now.MTU = uint32(a.MTU)
		if a.Flags&net.FlagUp != 0 && a.RawFlags&unix.IFF_LOWER_UP != 0 {
			now.Up = 1
		}
	}
	if cheap {
		if was, ok := followed(h); ok && was == now {
			return nil, nil
		}
	}
	recs, err := h.Tables.Records()
	if err != nil {
		return nil, err
	}
	var links []netlink.Link
	if len(recs) > 0 {
		if links, err = netlink.LinkList(); err != nil {
			return nil, err
		}
	}
	byIndex := map[int]netlink.Link{}
	for _, l := range links {
		byIndex[l.Attrs().Index] = l
	}
	var fdb []netlink.Neigh
	parentUp, parentMTU := now.Up == 1, int(now.MTU)
	if !parentGone && len(recs) > 0 {
		if fdb, err = parentFDB(h); err != nil {
			return nil, fmt.Errorf("read the unicast filter of %s: %w", h.Parent, err)
		}
	}

	var changes []string
	var errs []error
	for _, rec := range recs {
		outer := byIndex[rec.Ifindex]
		if rec.State != tables.Ready || outer == nil || outer.Attrs().Name != rec.Outer {
			continue // half-built, half-deleted or stale: repair's and gc's
		}
		who := fmt.Sprintf("%s: %s (%s in %s)", h.Parent, rec.Outer, rec.Ifname, rec.Netns)
		note := func(format string, args ...any) { changes = append(changes, who+": "+fmt.Sprintf(format, args...)) }
		fail := func(what string, err error) { errs = append(errs, fmt.Errorf("%s: %s: %w", who, what, err)) }

		if !parentGone {
			want := FollowedMTU(rec.MTU, parentMTU)
			if got := outer.Attrs().MTU; got != want {
				if err := setMTU(rec, outer, want); err != nil {
					fail("MTU", err)
				} else {
					note("MTU %d -> %d (parent MTU %d, endpoint's own %d)", got, want, parentMTU, rec.MTU)
				}
			}
		}
		isUp := outer.Attrs().Flags&net.FlagUp != 0
		switch {
		case parentUp && !isUp:
			if err := netlink.LinkSetUp(outer); err != nil {
				fail("set up", err)
			} else {
				note("up (parent is up)")
			}
		case !parentUp && isUp && takeDown:
			why := "parent is down or has no carrier"
			if parentGone {
				why = "parent is gone"
			}
			if err := netlink.LinkSetDown(outer); err != nil {
				fail("set down", err)
			} else {
				note("down, container sees no carrier (%s)", why)
			}
		}
		if !parentGone && !slices.ContainsFunc(fdb, func(n netlink.Neigh) bool { return slices.Equal(n.HardwareAddr, rec.MAC) }) {
			e, err := unicastEntry(h, rec.MAC)
			if err == nil {
				err = netlink.NeighAppend(e)
			}
			if err != nil && !errors.Is(err, unix.EEXIST) {
				fail("unicast filter", err)
			} else {
				fdb = append(fdb, *e)
				note("%s added to the parent's unicast filter again", rec.MAC)
			}
		}
		if group := outerGroup(s.ParentIfindex); outer.Attrs().Group != group {
			// Made for the parent before it was re-created: detach --force
			// deletes the group of the parent's ifindex now.
			if err := netlink.LinkSetGroup(outer, int(group)); err != nil {
				fail("interface group", err)
			} else {
				note("moved to interface group %#x", group)
			}
		}
		if !h.EndpointLinkAlive(rec.Ifindex) {
			if err := h.AttachEndpointLink(rec.Ifindex); err != nil {
				fail("tcx link", err)
			} else {
				note("tcx link attached again")
			}
		}
	}
	if len(errs) > 0 {
		return changes, errors.Join(errs...)
	}
	if parentUp || takeDown { // else the endpoints are not all as the parent is
		if err := setFollowed(h, now); err != nil {
			return changes, err
		}
	}
	return changes, nil
}

// parentState is what the endpoints last followed, kept in a one-entry
// array map pinned as <root>/<parent>/follow_state (bpffs holds no
// regular files and no xattrs). Only user space reads it.
type parentState struct {
	Ifindex, MTU, Up uint32
}

const pinFollowState = "follow_state"

func followed(h *loader.Handle) (parentState, bool) {
	var st parentState
	m, err := ebpf.LoadPinnedMap(filepath.Join(h.Dir, pinFollowState), nil)
	if err != nil {
		return st, false
	}
	defer m.Close()
	return st, m.Lookup(uint32(0), &st) == nil
}

func setFollowed(h *loader.Handle, st parentState) error {
	pin := filepath.Join(h.Dir, pinFollowState)
	m, err := ebpf.LoadPinnedMap(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		m, err = ebpf.NewMap(&ebpf.MapSpec{Name: "xmv_follow", Type: ebpf.Array, KeySize: 4, ValueSize: 12, MaxEntries: 1})
		if err == nil {
			if err = m.Pin(pin); err != nil {
				m.Close()
			}
		}
	}
	if err != nil {
		return fmt.Errorf("follow state %s: %w", pin, err)
	}
	defer m.Close()
	return m.Put(uint32(0), st)
}

// FollowedMTU is the MTU an endpoint configured with own (0: none) has on
// a parent whose MTU is parent: the smaller of the two.
func FollowedMTU(own, parent int) int {
	if own == 0 || parent < own {
		return parent
	}
	return own
}

// setMTU sets the MTU of both ends of rec's veth, the inner end (in its
// namespace) first.
func setMTU(rec tables.Record, outer netlink.Link, mtu int) error {
	tg, err := openTarget(Spec{Netns: rec.Netns, Host: rec.Host})
	if err != nil {
		return err
	}
	defer tg.close()
	if tg.ino != rec.NetnsIno {
		return fmt.Errorf("namespace %s is not the endpoint's any more", rec.Netns)
	}
	inner, err := tg.nl.LinkByName(rec.Ifname)
	if err != nil {
		return fmt.Errorf("inner end %s: %w", rec.Ifname, err)
	}
	if inner.Attrs().ParentIndex != rec.Ifindex {
		return fmt.Errorf("%s in %s is not the peer of %s", rec.Ifname, rec.Netns, rec.Outer)
	}
	if err := tg.nl.LinkSetMTU(inner, mtu); err != nil {
		return fmt.Errorf("inner end %s: %w", rec.Ifname, err)
	}
	if err := netlink.LinkSetMTU(outer, mtu); err != nil {
		return fmt.Errorf("outer end: %w", err)
	}
	return nil
}

// withParentMTU is rec with the MTU its endpoint has when it follows the
// parent (FollowedMTU), which is what check compares.
func withParentMTU(h *loader.Handle, rec tables.Record) tables.Record {
	if p, err := parentLink(h); err == nil {
		rec.MTU = FollowedMTU(rec.MTU, p.Attrs().MTU)
	}
	return rec
}

// followingNetwork is network for the writers that change it: the
// endpoints of its parent follow the parent first (followOnWrite).
// `endpoint check` does not: it reports what differs, and repairs nothing.
func (r *Root) followingNetwork(name string) (*loader.Handle, tables.Network, []tables.Record, error) {
	h, n, recs, err := r.network(name)
	if err != nil {
		return nil, n, nil, err
	}
	if h, err = r.followOnWrite(h); err != nil {
		return nil, n, nil, err
	}
	n, _, err = h.Tables.Network(n.VLAN)
	if err != nil {
		h.Close()
	}
	return h, n, recs, err
}
