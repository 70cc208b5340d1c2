package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

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

// OpenState locks root for a change of its layout and opens what is left
// of a parent's state, for detach: Tables is nil when the tables are not
// (all) pinned. It fails when the parent has no directory under root or
// was attached in another network namespace.
func OpenState(root, parent string) (*Handle, error) {
	if err := state.CheckParentName(parent); err != nil {
		return nil, err
	}
	r, err := state.Open(root, state.Reshape)
	if err != nil {
		return nil, err
	}
	dir := r.ParentDir(parent)
	if !exists(dir) {
		r.Close()
		return nil, fmt.Errorf("%s is not attached (no state in %s)", parent, dir)
	}
	if err := checkNetnsOf(r, parent); err != nil {
		r.Close()
		return nil, err
	}
	h := &Handle{Root: r.Dir, Parent: parent, Dir: dir, State: r}
	if t, err := tables.OpenPinned(dir); err == nil {
		h.Tables = t
	}
	return h, nil
}

func openLocked(r *state.Root, parent string) (*Handle, error) {
	dir := r.ParentDir(parent)
	if !exists(filepath.Join(dir, state.PinRxTCLink)) {
		if _, err := netlink.LinkByName(parent); err != nil {
			return nil, fmt.Errorf("there is no interface called %s (and it is %w)", parent, ErrNotAttached)
		}
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
	r, err := openRead(root)
	if r == nil {
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
	if h.Tables != nil {
		h.Tables.Close()
	}
	if h.State != nil {
		h.State.Close()
	}
}

// EndpointLinkPin is where the link of the endpoint whose outer veth is
// ifindex is pinned: <root>/<parent>/link_ep_<ifindex>.
func (h *Handle) EndpointLinkPin(ifindex int) string {
	return filepath.Join(h.Dir, state.EndpointLinkPin(ifindex))
}

// EndpointLinks lists the outer ifindexes that have an endpoint link pin.
func (h *Handle) EndpointLinks() ([]int, error) {
	entries, err := os.ReadDir(h.Dir)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range entries {
		if ifindex, ok := state.EndpointLinkIfindex(e.Name()); ok {
			out = append(out, ifindex)
		}
	}
	return out, nil
}

// AttachEndpointLink hooks the transmit program to tcx ingress of the
// outer veth ifindex and pins the link, replacing a leftover pin of a
// veth that is gone.
func (h *Handle) AttachEndpointLink(ifindex int) error {
	prog, err := ebpf.LoadPinnedProgram(filepath.Join(h.Dir, state.PinEpTxProg), nil)
	if err != nil {
		return fmt.Errorf("open the endpoint program: %w", err)
	}
	defer prog.Close()
	pin := h.EndpointLinkPin(ifindex)
	if exists(pin) {
		if err := removeLink(pin); err != nil {
			return err
		}
	}
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifindex, Program: prog, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return fmt.Errorf("attach to endpoint ifindex %d: %w", ifindex, err)
	}
	defer l.Close()
	if err := l.Pin(pin); err != nil {
		return fmt.Errorf("pin endpoint link: %w", err)
	}
	return nil
}

// DetachEndpointLink detaches and unpins the link of the endpoint whose
// outer veth is ifindex. A missing pin is not an error.
func (h *Handle) DetachEndpointLink(ifindex int) error {
	return removeLink(h.EndpointLinkPin(ifindex))
}

// EndpointLinkAlive says whether the pinned link of ifindex exists and
// still drives that interface.
func (h *Handle) EndpointLinkAlive(ifindex int) bool {
	l, alive, err := pinnedLink(h.EndpointLinkPin(ifindex), ifindex)
	if l != nil {
		l.Close()
	}
	return err == nil && alive
}

// Parents lists the parents that have state under root, by name, under
// the shared lock.
func Parents(root string) ([]string, error) {
	r, err := openRead(root)
	if r == nil {
		return nil, err
	}
	defer r.Close()
	return r.Parents("")
}

// openRead takes root's shared lock, for readers; nil and no error when
// the root does not exist yet (nothing is attached).
func openRead(root string) (*state.Root, error) {
	r, err := state.Open(root, state.Read)
	if errors.Is(err, state.ErrNoRoot) {
		return nil, nil
	}
	return r, err
}
