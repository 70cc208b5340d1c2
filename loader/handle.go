package loader

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/internal/state"
	"github.com/xmacvlan/xmacvlan/tables"
)

// Handle is an attached parent opened for changes. It holds the root's
// writer lock until Close, so a sequence of changes is one critical
// section; readers (status, stats, scrapes) go on meanwhile.
type Handle struct {
	Root   string
	Parent string
	Dir    string
	Tables *tables.Tables
	State  *state.Root
}

// ErrNotAttached is returned by Open for a parent with no pinned state.
var ErrNotAttached = errors.New("not attached")

// Open locks root for changes and opens the tables of an attached parent.
// It refuses a parent attached in another network namespace.
func Open(root, parent string) (*Handle, error) {
	if err := state.CheckParentName(parent); err != nil {
		return nil, err
	}
	r, err := state.Open(root, state.Change)
	if err != nil {
		return nil, err
	}
	h, err := openLocked(r, parent)
	if err != nil {
		r.Close()
	}
	return h, err
}

func openLocked(r *state.Root, parent string) (*Handle, error) {
	dir := r.ParentDir(parent)
	if !exists(filepath.Join(dir, state.PinRxTCLink)) {
		return nil, fmt.Errorf("%s is %w: run `xmacvlan attach %s` first", parent, ErrNotAttached, parent)
	}
	if err := checkNetnsOf(r, parent); err != nil {
		return nil, err
	}
	tables, err := tables.OpenPinned(dir)
	if err != nil {
		return nil, err
	}
	return &Handle{Root: r.Dir, Parent: parent, Dir: dir, Tables: tables, State: r}, nil
}

// ParentNetwork is a network and the parent it is on.
type ParentNetwork struct {
	Parent string `json:"parent"`
	tables.Network
}

// OpenNetwork locks root for changes and opens the parent of the network
// called name.
func OpenNetwork(root, name string) (*Handle, tables.Network, error) {
	r, err := state.Open(root, state.Change)
	if err != nil {
		return nil, tables.Network{}, err
	}
	nets, err := listNetworks(r)
	if err != nil {
		r.Close()
		return nil, tables.Network{}, err
	}
	for _, n := range nets {
		if n.Name == name {
			h, err := openLocked(r, n.Parent)
			if err != nil {
				r.Close()
			}
			return h, n.Network, err
		}
	}
	r.Close()
	return nil, tables.Network{}, fmt.Errorf("no network called %q (xmacvlan network list)", name)
}

// Networks lists the networks of every parent under root, under the
// shared lock.
func Networks(root string) ([]ParentNetwork, error) {
	r, err := state.Open(root, state.Read)
	if errors.Is(err, state.ErrNoRoot) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return listNetworks(r)
}

// Networks lists the networks of every parent under the handle's root; the
// handle's lock covers them all.
func (h *Handle) Networks() ([]ParentNetwork, error) { return listNetworks(h.State) }

func listNetworks(r *state.Root) ([]ParentNetwork, error) {
	parents, err := r.Parents("")
	if err != nil {
		return nil, err
	}
	var out []ParentNetwork
	for _, parent := range parents {
		tables, err := tables.OpenPinned(r.ParentDir(parent))
		if err != nil {
			continue // not (fully) attached: no networks to list
		}
		nets, err := tables.Networks()
		tables.Close()
		if err != nil {
			return nil, err
		}
		for _, n := range nets {
			out = append(out, ParentNetwork{Parent: parent, Network: n})
		}
	}
	return out, nil
}

// Close releases the tables and the lock.
func (h *Handle) Close() {
	h.Tables.Close()
	if h.State != nil {
		h.State.Close()
	}
}

func (h *Handle) endpointLinkPin(ifindex int) string {
	return filepath.Join(h.Dir, state.EndpointLinkPin(ifindex))
}

// AddEndpoint hooks the transmit program to the endpoint's outer veth,
// adds its MAC to the parent's unicast filter, then registers it in the
// tables (the receive path last). On failure nothing of it is left.
func (h *Handle) AddEndpoint(ep tables.Endpoint) (added tables.Endpoint, err error) {
	prog, err := ebpf.LoadPinnedProgram(filepath.Join(h.Dir, state.PinEpTxProg), nil)
	if err != nil {
		return ep, fmt.Errorf("open the endpoint program: %w", err)
	}
	defer prog.Close()
	pin := h.endpointLinkPin(ep.Ifindex)
	if exists(pin) { // a leftover of an endpoint whose veth is gone
		if err := removeLink(pin); err != nil {
			return ep, err
		}
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ep.Ifindex, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return ep, fmt.Errorf("attach to endpoint ifindex %d: %w", ep.Ifindex, err)
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		return ep, fmt.Errorf("pin endpoint link: %w", err)
	}
	fdb, err := h.unicastEntry(ep.MAC)
	if err == nil {
		err = netlink.NeighAppend(fdb)
	}
	if err != nil && !errors.Is(err, unix.EEXIST) {
		l.Unpin()
		return ep, fmt.Errorf("add %s to the parent's unicast filter: %w", ep.MAC, err)
	}
	added, err = h.Tables.AddEndpoint(ep)
	if err != nil {
		netlink.NeighDel(fdb)
		l.Unpin()
		return ep, err
	}
	return added, nil
}

// unicastEntry is the parent's "self" fdb entry for mac: from user space,
// what kernel macvlan does with dev_uc_add. A NIC with a unicast filter
// then accepts the MAC without promiscuous mode; one without falls back to
// promiscuous mode by itself.
func (h *Handle) unicastEntry(mac net.HardwareAddr) (*netlink.Neigh, error) {
	s, err := h.Tables.Settings()
	if err != nil {
		return nil, err
	}
	return &netlink.Neigh{LinkIndex: s.ParentIfindex, Family: unix.AF_BRIDGE,
		Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, HardwareAddr: mac}, nil
}

// RemoveEndpoint takes an endpoint apart, in the reverse order of its
// making: tables, link, unicast filter entry, and last its veth (deleting
// the outer end deletes the pair). It is idempotent.
func (h *Handle) RemoveEndpoint(ep tables.Endpoint) error {
	if err := h.Tables.DeleteEndpoint(ep.Ifindex); err != nil {
		return err
	}
	if err := removeLink(h.endpointLinkPin(ep.Ifindex)); err != nil {
		return err
	}
	if fdb, err := h.unicastEntry(ep.MAC); err == nil {
		if err := netlink.NeighDel(fdb); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("remove %s from the parent's unicast filter: %w", ep.MAC, err)
		}
	}
	if l, err := netlink.LinkByIndex(ep.Ifindex); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			return fmt.Errorf("delete endpoint veth %s: %w", l.Attrs().Name, err)
		}
	}
	return nil
}
