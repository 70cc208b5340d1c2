package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/xmacvlan/xmacvlan/tables"
)

// Handle is an attached parent opened for changes. It holds the root's
// lock until Close, so a sequence of changes is one critical section.
type Handle struct {
	Root   string
	Parent string
	Dir    string
	Tables *tables.Tables
	lock   *os.File
}

// ErrNotAttached is returned by Open for a parent with no pinned state.
var ErrNotAttached = errors.New("not attached")

// Open locks root and opens the tables of an attached parent.
func Open(root, parent string) (*Handle, error) {
	if err := checkParentName(parent); err != nil {
		return nil, err
	}
	lock, err := lockRoot(root)
	if err != nil {
		return nil, err
	}
	h, err := openLocked(root, parent, lock)
	if err != nil {
		unlock(lock)
	}
	return h, err
}

// OpenState locks root and opens what is left of a parent's state, for
// detach: Tables is nil when the tables are not (all) pinned. It fails
// only when the parent has no directory under root.
func OpenState(root, parent string) (*Handle, error) {
	if err := checkParentName(parent); err != nil {
		return nil, err
	}
	lock, err := lockRoot(root)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, parent)
	if !exists(dir) {
		unlock(lock)
		return nil, fmt.Errorf("%s is not attached (no state in %s)", parent, dir)
	}
	h := &Handle{Root: root, Parent: parent, Dir: dir, lock: lock}
	if t, err := tables.OpenPinned(dir); err == nil {
		h.Tables = t
	}
	return h, nil
}

func openLocked(root, parent string, lock *os.File) (*Handle, error) {
	dir := filepath.Join(root, parent)
	if !exists(filepath.Join(dir, pinRxTCLink)) {
		return nil, fmt.Errorf("%s is %w: run `xmacvlan attach %s` first", parent, ErrNotAttached, parent)
	}
	tables, err := tables.OpenPinned(dir)
	if err != nil {
		return nil, err
	}
	return &Handle{Root: root, Parent: parent, Dir: dir, Tables: tables, lock: lock}, nil
}

// ParentNetwork is a network and the parent it is on.
type ParentNetwork struct {
	Parent string `json:"parent"`
	tables.Network
}

// OpenNetwork locks root and opens the parent of the network called name.
func OpenNetwork(root, name string) (*Handle, tables.Network, error) {
	lock, err := lockRoot(root)
	if err != nil {
		return nil, tables.Network{}, err
	}
	nets, err := listNetworks(root)
	if err != nil {
		unlock(lock)
		return nil, tables.Network{}, err
	}
	for _, n := range nets {
		if n.Name == name {
			h, err := openLocked(root, n.Parent, lock)
			if err != nil {
				unlock(lock)
			}
			return h, n.Network, err
		}
	}
	unlock(lock)
	return nil, tables.Network{}, fmt.Errorf("no network called %q (xmacvlan network list)", name)
}

// Networks lists the networks of every parent under root.
func Networks(root string) ([]ParentNetwork, error) {
	if !exists(root) {
		return nil, nil
	}
	lock, err := lockRoot(root)
	if err != nil {
		return nil, err
	}
	defer unlock(lock)
	return listNetworks(root)
}

// Networks lists the networks of every parent under the handle's root; the
// handle's lock covers them all.
func (h *Handle) Networks() ([]ParentNetwork, error) { return listNetworks(h.Root) }

func listNetworks(root string) ([]ParentNetwork, error) {
	parents, err := parentDirs(root, "")
	if err != nil {
		return nil, err
	}
	var out []ParentNetwork
	for _, parent := range parents {
		tables, err := tables.OpenPinned(filepath.Join(root, parent))
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
	unlock(h.lock)
}

// EndpointLinkPin is where the link of the endpoint whose outer veth is
// ifindex is pinned: <root>/<parent>/link_ep_<ifindex>.
func (h *Handle) EndpointLinkPin(ifindex int) string {
	return filepath.Join(h.Dir, fmt.Sprintf("%s%d", pinEpLinkPref, ifindex))
}

// EndpointLinks lists the outer ifindexes that have an endpoint link pin.
func (h *Handle) EndpointLinks() ([]int, error) {
	entries, err := os.ReadDir(h.Dir)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, e := range entries {
		if n, ok := strings.CutPrefix(e.Name(), pinEpLinkPref); ok {
			if ifindex, err := strconv.Atoi(n); err == nil {
				out = append(out, ifindex)
			}
		}
	}
	return out, nil
}

// AttachEndpointLink hooks the transmit program to tcx ingress of the
// outer veth ifindex and pins the link, replacing a leftover pin of a
// veth that is gone.
func (h *Handle) AttachEndpointLink(ifindex int) error {
	prog, err := ebpf.LoadPinnedProgram(filepath.Join(h.Dir, pinEpTxProg), nil)
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

// Parents lists the parents that have state under root, by name.
func Parents(root string) ([]string, error) {
	if !exists(root) {
		return nil, nil
	}
	lock, err := lockRoot(root)
	if err != nil {
		return nil, err
	}
	defer unlock(lock)
	return parentDirs(root, "")
}
