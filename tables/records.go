package tables

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/cilium/ebpf"

	"github.com/xmacvlan/xmacvlan/bpf"
)

// State is where an endpoint's record is in its life. The lifecycle writes
// the record Building before it creates anything, Ready after the last
// step, Deleting before it removes anything; a record left Building or
// Deleting by a crash says what to undo.
type State uint8

const (
	Building State = 1
	Ready    State = 2
	Deleting State = 3
)

func (s State) String() string {
	switch s {
	case Building:
		return "building"
	case Ready:
		return "ready"
	case Deleting:
		return "deleting"
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Record is the control plane's record of one endpoint, keyed by its ID
// (counter slot): everything needed to check it and to take it apart.
type Record struct {
	Endpoint
	State State `json:"state"`
}

func (r Record) raw() bpf.XmacvlanEndpointInfo {
	info := bpf.XmacvlanEndpointInfo{NetnsIno: r.NetnsIno, Ip: prefixToRaw(r.IP), Ifindex: uint32(r.Ifindex),
		Mtu: uint32(r.MTU), Vlan: r.VLAN, State: uint8(r.State), Flags: uint8(r.Endpoint.raw().Flags), StormPps: r.StormLimit}
	copy(info.Mac[:], r.MAC)
	putString(info.Netns[:], r.Netns)
	putString(info.Ifname[:], r.Ifname)
	putString(info.Outer[:], r.Outer)
	if r.Gateway != nil {
		copy(info.Gateway[:], r.Gateway.To16())
	}
	return info
}

func recordFromRaw(id uint32, info bpf.XmacvlanEndpointInfo) Record {
	ep := endpointFromRaw(bpf.XmacvlanEndpoint{Ifindex: info.Ifindex, Id: id, Vlan: info.Vlan, Mac: info.Mac,
		Flags: bpf.XmacvlanEndpointFlags(info.Flags), StormPps: info.StormPps})
	ep.NetnsIno, ep.Netns, ep.Ifname, ep.IP = info.NetnsIno, getString(info.Netns[:]), getString(info.Ifname[:]), prefixFromRaw(info.Ip)
	ep.Outer, ep.MTU = getString(info.Outer[:]), int(info.Mtu)
	if gw := net.IP(info.Gateway[:]); !gw.IsUnspecified() {
		ep.Gateway = unmap(append(net.IP(nil), gw...))
	}
	return Record{Endpoint: ep, State: State(info.State)}
}

// PutRecord writes r under r.ID, creating or replacing it.
func (t *Tables) PutRecord(r Record) error {
	if r.ID < 0 || r.ID >= MaxEndpoints {
		return fmt.Errorf("invalid endpoint id %d", r.ID)
	}
	if len(r.Netns) > MaxNetnsLen {
		return fmt.Errorf("namespace name %q is longer than %d bytes", r.Netns, MaxNetnsLen)
	}
	if err := t.m.XmvEpInfo.Update(uint32(r.ID), r.raw(), ebpf.UpdateAny); err != nil {
		return fullOr(err, "endpoint records")
	}
	return nil
}

// Record reads the record of endpoint id; ok is false if there is none.
func (t *Tables) Record(id int) (r Record, ok bool, err error) {
	var info bpf.XmacvlanEndpointInfo
	err = t.m.XmvEpInfo.Lookup(uint32(id), &info)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return Record{}, false, nil
	}
	if err != nil {
		return Record{}, false, fmt.Errorf("endpoint record %d: %w", id, err)
	}
	return recordFromRaw(uint32(id), info), true, nil
}

// DeleteRecord removes the record of endpoint id; a missing one is not an
// error.
func (t *Tables) DeleteRecord(id int) error {
	if err := t.m.XmvEpInfo.Delete(uint32(id)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete endpoint record %d: %w", id, err)
	}
	return nil
}

// Records lists every record, in any state, ordered by ID. It reads in
// batches: a few syscalls for the whole table.
func (t *Tables) Records() ([]Record, error) {
	keys := make([]uint32, MaxEndpoints)
	vals := make([]bpf.XmacvlanEndpointInfo, MaxEndpoints)
	var (
		cursor ebpf.MapBatchCursor
		out    []Record
	)
	for {
		n, err := t.m.XmvEpInfo.BatchLookup(&cursor, keys, vals, nil)
		for i := range n {
			out = append(out, recordFromRaw(keys[i], vals[i]))
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read endpoint records: %w", err)
		}
	}
	slices.SortFunc(out, func(a, b Record) int { return a.ID - b.ID })
	return out, nil
}

// FloodList returns the outer ifindexes in vlan's flood slots
// 0..members-1, in slot order (0 for a slot that cannot be read).
func (t *Tables) FloodList(vlan uint16) ([]int, error) {
	n, ok, err := t.Network(vlan)
	if err != nil || !ok {
		return nil, err
	}
	out := make([]int, n.Members)
	for i := range n.Members {
		var m bpf.XmacvlanEndpoint
		if err := t.m.XmvFlood.Lookup(bpf.XmacvlanFloodKey{Vlan: vlan, Idx: uint16(i)}, &m); err == nil {
			out[i] = int(m.Ifindex)
		}
	}
	return out, nil
}

// SyncFlood makes vlan's flood list hold exactly the endpoints of the
// endpoint table on vlan, once each, and its member count their number. It
// keeps the order of the slots that are right, so the datapath sees as
// little change as possible; changed says whether anything was wrong.
func (t *Tables) SyncFlood(vlan uint16) (changed bool, err error) {
	n, ok, err := t.Network(vlan)
	if err != nil || !ok {
		return false, err
	}
	eps, err := t.Endpoints()
	if err != nil {
		return false, err
	}
	want := map[int]bpf.XmacvlanEndpoint{}
	for _, ep := range eps {
		if ep.VLAN == vlan {
			want[ep.Ifindex] = ep.raw()
		}
	}
	cur, err := t.FloodList(vlan)
	if err != nil {
		return false, err
	}
	var list []bpf.XmacvlanEndpoint
	seen := map[int]bool{}
	for _, ifindex := range cur {
		if raw, ok := want[ifindex]; ok && !seen[ifindex] {
			seen[ifindex] = true
			list = append(list, raw)
		}
	}
	for _, ep := range eps {
		if ep.VLAN == vlan && !seen[ep.Ifindex] {
			list = append(list, want[ep.Ifindex])
		}
	}
	if len(list) > MaxVLANMembers {
		list = list[:MaxVLANMembers]
	}
	for i, raw := range list {
		if i < len(cur) && cur[i] == int(raw.Ifindex) {
			continue
		}
		changed = true
		if err := t.m.XmvFlood.Update(bpf.XmacvlanFloodKey{Vlan: vlan, Idx: uint16(i)}, raw, ebpf.UpdateAny); err != nil {
			return changed, fullOr(err, "flood")
		}
	}
	if n.Members != len(list) {
		changed = true
		if err := t.setMembers(vlan, len(list)); err != nil {
			return changed, err
		}
	}
	// Slots past the count are never read; remove them so the table
	// holds no stale copy.
	for i := len(list); i < MaxVLANMembers; i++ {
		err := t.m.XmvFlood.Delete(bpf.XmacvlanFloodKey{Vlan: vlan, Idx: uint16(i)})
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			if i >= n.Members {
				break
			}
			continue
		}
		if err != nil {
			return changed, fmt.Errorf("flood list of VLAN %d: %w", vlan, err)
		}
		changed = true
	}
	return changed, nil
}
