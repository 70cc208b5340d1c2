package loader

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/internal/state"
	"github.com/xmacvlan/xmacvlan/tables"
)

// ParentSnapshot is the counters of one attached parent.
type ParentSnapshot struct {
	Parent string
	tables.Snapshot
	// RxDropped is, by outer ifindex, what each endpoint's veth dropped
	// on the way in (VethRxDropped).
	RxDropped map[int]uint64
}

// VethRxDropped reads, by outer ifindex, the frames each veth of this
// namespace dropped on transmit (its tx_dropped, rtnl_link_stats64): for
// an endpoint's outer end, the frames towards the endpoint that found its
// ring (or, without NAPI, the CPU's input backlog) full, in veth_xmit.
// Flood copies and host traffic pass there; unicast from the wire does
// not (bpf_redirect_peer).
func VethRxDropped() (map[int]uint64, error) {
	links, err := netlink.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list interfaces: %w", err)
	}
	out := map[int]uint64{}
	for _, l := range links {
		if st := l.Attrs().Statistics; st != nil && l.Type() == "veth" {
			out[l.Attrs().Index] = st.TxDropped
		}
	}
	return out, nil
}

// Snapshots reads the counters of every parent attached under root, or of
// the one named by only. It reads under the root's shared lock, so it
// waits for an attach or a detach but never for endpoint changes (an
// endpoint added meanwhile may be counted or not); each call opens the
// pins afresh, so parents detached and attached again between calls are
// simply read as they are now. A root that does not exist has no parents;
// a directory without a live attach is skipped.
func Snapshots(root, only string) ([]ParentSnapshot, error) {
	if only != "" {
		if err := state.CheckParentName(only); err != nil {
			return nil, err
		}
	}
	r, err := state.Open(root, state.Read)
	if errors.Is(err, state.ErrNoRoot) {
		return nil, notAttached(only)
	}
	if err != nil {
		return nil, err
	}
	defer r.Close()
	parents, err := r.Parents(only)
	if err != nil {
		return nil, err
	}
	var out []ParentSnapshot
	for _, parent := range parents {
		dir := r.ParentDir(parent)
		if !exists(filepath.Join(dir, state.PinRxTCLink)) {
			continue // a leftover directory, not an attached parent
		}
		tables, err := tables.OpenPinned(dir)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", parent, err)
		}
		s, err := tables.Snapshot()
		tables.Close()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", parent, err)
		}
		out = append(out, ParentSnapshot{Parent: parent, Snapshot: s})
	}
	if len(out) > 0 {
		drops, err := VethRxDropped()
		if err != nil {
			return nil, err
		}
		for i := range out {
			out[i].RxDropped = drops
		}
	}
	if len(out) == 0 {
		return nil, notAttached(only)
	}
	return out, nil
}

// notAttached is an error only when a parent was asked for by name.
func notAttached(only string) error {
	if only == "" {
		return nil
	}
	return fmt.Errorf("%s is %w", only, ErrNotAttached)
}
