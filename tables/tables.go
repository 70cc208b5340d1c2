package tables

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/bpf"
)

// Mode is a network's forwarding mode, as in kernel macvlan.
type Mode uint32

const (
	Bridge  = Mode(bpf.XmacvlanNetModeMODE_BRIDGE)
	Private = Mode(bpf.XmacvlanNetModeMODE_PRIVATE)
	VEPA    = Mode(bpf.XmacvlanNetModeMODE_VEPA)
)

var modeNames = map[Mode]string{Bridge: "bridge", Private: "private", VEPA: "vepa"}

func (m Mode) String() string {
	if s, ok := modeNames[m]; ok {
		return s
	}
	return fmt.Sprintf("mode(%d)", uint32(m))
}

// ParseMode accepts bridge, private or vepa.
func ParseMode(s string) (Mode, error) {
	for m, name := range modeNames {
		if name == s {
			return m, nil
		}
	}
	return 0, fmt.Errorf("invalid mode %q: want bridge, private or vepa", s)
}

func (m Mode) MarshalText() ([]byte, error) { return []byte(m.String()), nil }

func (m *Mode) UnmarshalText(b []byte) (err error) {
	*m, err = ParseMode(string(b))
	return err
}

// Network is one VLAN's entry. VLAN 0 is the untagged segment.
type Network struct {
	VLAN    uint16     `json:"vlan"`
	Mode    Mode       `json:"mode"`
	Members int        `json:"members"`
	MTU     int        `json:"mtu,omitempty"`
	Name    string     `json:"name"`
	Subnet  *net.IPNet `json:"subnet,omitempty"`
	Gateway net.IP     `json:"gateway,omitempty"`
	// StormLimit: frames per second the VLAN floods (all senders, the
	// wire included); 0 = no limit.
	StormLimit uint32 `json:"storm_limit"`
}

// Endpoint is one container interface: what the datapath needs, and where
// it lives.
type Endpoint struct {
	Ifindex     int              `json:"ifindex"` // outer veth, in the parent's namespace
	ID          int              `json:"id"`      // counter slot, assigned by AddEndpoint
	VLAN        uint16           `json:"vlan"`
	MAC         net.HardwareAddr `json:"mac"`
	XDPDelivery bool             `json:"xdp_delivery"`
	Host        bool             `json:"host"`
	StormLimit  uint32           `json:"storm_limit"` // frames per second it may flood; 0 = no limit

	Netns    string     `json:"netns"`     // as the user named it
	NetnsIno uint64     `json:"netns_ino"` // identifies the namespace
	Ifname   string     `json:"ifname"`    // inner interface
	IP       *net.IPNet `json:"ip,omitempty"`

	// What the lifecycle installed, kept in the endpoint's record.
	Outer   string `json:"outer,omitempty"` // the outer veth's name
	MTU     int    `json:"mtu,omitempty"`
	Gateway net.IP `json:"gateway,omitempty"` // the default route's
}

// Limits of the text fields, as in bpf/types.h (one byte for the NUL).
const (
	MaxNameLen  = 31
	MaxNetnsLen = 63
)

// fitsVLAN: the networks table holds VIDs 0..MaxVLAN (MAX_NETWORKS in
// bpf/types.h).
func fitsVLAN(vlan uint16) error {
	if vlan > MaxVLAN {
		return fmt.Errorf("VLAN %d does not fit the networks table (0..%d)", vlan, MaxVLAN)
	}
	return nil
}

// fitsMAC: the MAC table's key holds 6 bytes.
func fitsMAC(mac net.HardwareAddr) error {
	if len(mac) != 6 {
		return fmt.Errorf("MAC %q does not fit the MAC table (6 bytes)", mac)
	}
	return nil
}

func (ep Endpoint) raw() bpf.XmacvlanEndpoint {
	raw := bpf.XmacvlanEndpoint{Ifindex: uint32(ep.Ifindex), Id: uint32(ep.ID), Vlan: ep.VLAN, StormPps: ep.StormLimit}
	copy(raw.Mac[:], ep.MAC)
	if ep.XDPDelivery {
		raw.Flags |= bpf.XmacvlanEndpointFlagsEP_XDP_DELIVERY
	}
	if ep.Host {
		raw.Flags |= bpf.XmacvlanEndpointFlagsEP_HOST
	}
	return raw
}

func endpointFromRaw(raw bpf.XmacvlanEndpoint) Endpoint {
	return Endpoint{
		Ifindex:     int(raw.Ifindex),
		ID:          int(raw.Id),
		VLAN:        raw.Vlan,
		MAC:         append(net.HardwareAddr(nil), raw.Mac[:]...),
		XDPDelivery: raw.Flags&bpf.XmacvlanEndpointFlagsEP_XDP_DELIVERY != 0,
		Host:        raw.Flags&bpf.XmacvlanEndpointFlagsEP_HOST != 0,
		StormLimit:  raw.StormPps,
	}
}

func macKey(vlan uint16, mac net.HardwareAddr) bpf.XmacvlanMacKey {
	k := bpf.XmacvlanMacKey{Vlan: vlan}
	copy(k.Mac[:], mac)
	return k
}

// AddNetwork creates the entry for vlan. It fails if one exists.
func (t *Tables) AddNetwork(n Network) error {
	if err := fitsVLAN(n.VLAN); err != nil {
		return err
	}
	if _, ok := modeNames[n.Mode]; !ok {
		return fmt.Errorf("invalid mode %d", n.Mode)
	}
	if len(n.Name) > MaxNameLen {
		return fmt.Errorf("network name %q is longer than %d bytes", n.Name, MaxNameLen)
	}
	if _, ok, err := t.Network(n.VLAN); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("VLAN %d already has a network", n.VLAN)
	}
	if err := t.resetStorm(StormVLANKey(n.VLAN)); err != nil {
		return err
	}
	err := t.m.XmvNetworks.Update(n.VLAN, n.raw(), ebpf.UpdateNoExist)
	switch {
	case errors.Is(err, ebpf.ErrKeyExist):
		return fmt.Errorf("VLAN %d already has a network", n.VLAN)
	case err != nil:
		return fullOr(err, "networks")
	}
	return nil
}

// SetNetworkStormLimit changes vlan's storm limit (frames per second, 0 =
// none); the datapath applies it from the next frame.
func (t *Tables) SetNetworkStormLimit(vlan uint16, pps uint32) error {
	var raw bpf.XmacvlanNetwork
	if err := t.m.XmvNetworks.Lookup(vlan, &raw); err != nil {
		return fmt.Errorf("network %d: %w", vlan, err)
	}
	raw.StormPps = pps
	return t.m.XmvNetworks.Update(vlan, raw, ebpf.UpdateExist)
}

// SetEndpointStormLimit changes the storm limit of the endpoint whose outer
// veth is ifindex (frames per second, 0 = none) in its record and in every
// table that holds a copy of it (endpoint, MAC, flood list).
func (t *Tables) SetEndpointStormLimit(ifindex int, pps uint32) error {
	ep, ok, err := t.Endpoint(ifindex)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("ifindex %d is not an endpoint", ifindex)
	}
	if r, ok, err := t.Record(ep.ID); err != nil {
		return err
	} else if ok && r.Ifindex == ifindex {
		r.StormLimit = pps
		if err := t.PutRecord(r); err != nil {
			return err
		}
	}
	ep.StormLimit = pps
	raw := ep.raw()
	if err := t.m.XmvEndpoints.Update(uint32(ifindex), raw, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("endpoint table: %w", err)
	}
	if err := t.m.XmvMacs.Update(macKey(ep.VLAN, ep.MAC), raw, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("MAC table: %w", err)
	}
	list, err := t.FloodList(ep.VLAN)
	if err != nil {
		return err
	}
	for i, member := range list {
		if member == ifindex {
			if err := t.m.XmvFlood.Update(bpf.XmacvlanFloodKey{Vlan: ep.VLAN, Idx: uint16(i)}, raw, ebpf.UpdateExist); err != nil {
				return fmt.Errorf("flood list of VLAN %d: %w", ep.VLAN, err)
			}
		}
	}
	return nil
}

// Network returns the entry for vlan; ok is false if there is none.
func (t *Tables) Network(vlan uint16) (n Network, ok bool, err error) {
	var raw bpf.XmacvlanNetwork
	err = t.m.XmvNetworks.Lookup(vlan, &raw)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return Network{}, false, nil
	}
	if err != nil {
		return Network{}, false, err
	}
	return networkFromRaw(vlan, raw), true, nil
}

func (n Network) raw() bpf.XmacvlanNetwork {
	raw := bpf.XmacvlanNetwork{Mode: bpf.XmacvlanNetMode(n.Mode), Mtu: uint32(n.MTU), Subnet: prefixToRaw(n.Subnet), StormPps: n.StormLimit}
	putString(raw.Name[:], n.Name)
	if n.Gateway != nil {
		copy(raw.Gateway[:], n.Gateway.To16())
	}
	return raw
}

func networkFromRaw(vlan uint16, raw bpf.XmacvlanNetwork) Network {
	n := Network{
		VLAN: vlan, Mode: Mode(raw.Mode), Members: int(raw.Members), MTU: int(raw.Mtu),
		Name: getString(raw.Name[:]), Subnet: prefixFromRaw(raw.Subnet), StormLimit: raw.StormPps,
	}
	if gw := net.IP(raw.Gateway[:]); !gw.IsUnspecified() {
		n.Gateway = unmap(append(net.IP(nil), gw...))
	}
	return n
}

// Networks lists every entry, ordered by VLAN.
func (t *Tables) Networks() ([]Network, error) {
	var (
		vlan uint16
		raw  bpf.XmacvlanNetwork
		out  []Network
	)
	it := t.m.XmvNetworks.Iterate()
	for it.Next(&vlan, &raw) {
		out = append(out, networkFromRaw(vlan, raw))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list networks: %w", err)
	}
	slices.SortFunc(out, func(a, b Network) int { return int(a.VLAN) - int(b.VLAN) })
	return out, nil
}

// DeleteNetwork removes vlan's entry; it refuses while endpoints use it.
func (t *Tables) DeleteNetwork(vlan uint16) error {
	n, ok, err := t.Network(vlan)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("VLAN %d has no network", vlan)
	case n.Members > 0:
		return fmt.Errorf("VLAN %d still has %d endpoints", vlan, n.Members)
	}
	return t.m.XmvNetworks.Delete(vlan)
}

// AddEndpoint registers ep and returns it with its counter slot assigned
// (the lowest free one): PlugEndpoint with a fresh ID.
func (t *Tables) AddEndpoint(ep Endpoint) (Endpoint, error) {
	recs, err := t.Records()
	if err != nil {
		return ep, err
	}
	if ep.ID, err = t.FreeID(recs); err != nil {
		return ep, err
	}
	return ep, t.PlugEndpoint(ep)
}

// PlugEndpoint puts ep, with the counter slot ep.ID, into the tables the
// datapath reads. Tables the receive path reads are written last, so no
// frame is forwarded to an endpoint that is not complete; on failure
// nothing of it is left.
func (t *Tables) PlugEndpoint(ep Endpoint) error {
	if err := fitsMAC(ep.MAC); err != nil {
		return err
	}
	if ep.Ifindex <= 0 {
		return fmt.Errorf("invalid ifindex %d", ep.Ifindex)
	}
	n, ok, err := t.Network(ep.VLAN)
	switch {
	case err != nil:
		return err
	case !ok:
		return fmt.Errorf("VLAN %d has no network", ep.VLAN)
	case n.Members >= MaxVLANMembers:
		return fmt.Errorf("VLAN %d has %d endpoints, the most one VLAN floods to: %w", ep.VLAN, n.Members, ErrFull)
	}
	if other, ok, err := t.EndpointByMAC(ep.VLAN, ep.MAC); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("MAC %s is already used on VLAN %d (ifindex %d)", ep.MAC, ep.VLAN, other.Ifindex)
	}
	if _, ok, err := t.Endpoint(ep.Ifindex); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("ifindex %d is already an endpoint", ep.Ifindex)
	}
	if ep.ID < 0 || ep.ID >= MaxEndpoints {
		return fmt.Errorf("invalid endpoint id %d", ep.ID)
	}

	undo := []func(){}
	fail := func(err error) error {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
		return err
	}
	if err := t.zeroStats(ep.ID); err != nil {
		return fail(err)
	}
	if err := t.resetStorm(uint32(ep.ID)); err != nil {
		return fail(err)
	}
	raw := ep.raw()
	if err := t.m.XmvEndpoints.Update(uint32(ep.Ifindex), raw, ebpf.UpdateNoExist); err != nil {
		return fail(fullOr(err, "endpoints"))
	}
	undo = append(undo, func() { t.m.XmvEndpoints.Delete(uint32(ep.Ifindex)) })
	if ep.XDPDelivery {
		if err := t.m.XmvRedirect.Update(uint32(ep.Ifindex), uint32(ep.Ifindex), ebpf.UpdateAny); err != nil {
			return fail(fullOr(err, "redirect"))
		}
		undo = append(undo, func() { t.m.XmvRedirect.Delete(uint32(ep.Ifindex)) })
	}
	if err := t.floodAdd(ep.VLAN, raw); err != nil {
		return fail(err)
	}
	undo = append(undo, func() { t.floodRemove(ep.VLAN, uint32(ep.Ifindex)) })
	if err := t.m.XmvMacs.Update(macKey(ep.VLAN, ep.MAC), raw, ebpf.UpdateNoExist); err != nil {
		return fail(fullOr(err, "MAC"))
	}
	return nil
}

// DeleteEndpoint removes the endpoint whose outer veth is ifindex, in the
// reverse order of PlugEndpoint. Removing a missing endpoint is not an
// error. Each step is safe to repeat after a crash: the MAC entry goes
// only if it still points at ifindex, the flood list only loses ifindex.
func (t *Tables) DeleteEndpoint(ifindex int) error {
	ep, ok, err := t.Endpoint(ifindex)
	if err != nil || !ok {
		return err
	}
	if holder, ok, err := t.EndpointByMAC(ep.VLAN, ep.MAC); err != nil {
		return err
	} else if ok && holder.Ifindex == ifindex {
		if err := t.m.XmvMacs.Delete(macKey(ep.VLAN, ep.MAC)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete MAC entry: %w", err)
		}
	}
	if err := t.floodRemove(ep.VLAN, uint32(ifindex)); err != nil {
		return err
	}
	if err := t.m.XmvRedirect.Delete(uint32(ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete redirect entry: %w", err)
	}
	if err := t.m.XmvEndpoints.Delete(uint32(ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete endpoint entry: %w", err)
	}
	return nil
}

// Endpoint looks up an endpoint by its outer ifindex.
func (t *Tables) Endpoint(ifindex int) (Endpoint, bool, error) {
	var raw bpf.XmacvlanEndpoint
	err := t.m.XmvEndpoints.Lookup(uint32(ifindex), &raw)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return Endpoint{}, false, nil
	}
	if err != nil {
		return Endpoint{}, false, fmt.Errorf("look up endpoint %d: %w", ifindex, err)
	}
	return t.withInfo(endpointFromRaw(raw)), true, nil
}

// withInfo adds where the endpoint lives, from its record (absent for an
// endpoint plugged without one, as the datapath tests do).
func (t *Tables) withInfo(ep Endpoint) Endpoint {
	if r, ok, err := t.Record(ep.ID); err == nil && ok && r.Ifindex == ep.Ifindex {
		ep.NetnsIno, ep.Netns, ep.Ifname, ep.IP = r.NetnsIno, r.Netns, r.Ifname, r.IP
		ep.Outer, ep.MTU, ep.Gateway = r.Outer, r.MTU, r.Gateway
	}
	return ep
}

// EndpointByMAC looks up the MAC table.
func (t *Tables) EndpointByMAC(vlan uint16, mac net.HardwareAddr) (Endpoint, bool, error) {
	var raw bpf.XmacvlanEndpoint
	err := t.m.XmvMacs.Lookup(macKey(vlan, mac), &raw)
	if errors.Is(err, ebpf.ErrKeyNotExist) {
		return Endpoint{}, false, nil
	}
	if err != nil {
		return Endpoint{}, false, fmt.Errorf("look up MAC %s: %w", mac, err)
	}
	return t.withInfo(endpointFromRaw(raw)), true, nil
}

// Endpoints lists every endpoint, ordered by VLAN then ID.
func (t *Tables) Endpoints() ([]Endpoint, error) {
	var (
		key uint32
		raw bpf.XmacvlanEndpoint
		out []Endpoint
	)
	// A walk of a hash map that meets a deleted key starts over from the
	// first one (htab_map_get_next_key): while endpoints come and go, some
	// are met twice.
	seen := map[uint32]bool{}
	it := t.m.XmvEndpoints.Iterate()
	for it.Next(&key, &raw) {
		if !seen[key] {
			seen[key] = true
			out = append(out, t.withInfo(endpointFromRaw(raw)))
		}
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("list endpoints: %w", err)
	}
	slices.SortFunc(out, func(a, b Endpoint) int {
		if a.VLAN != b.VLAN {
			return int(a.VLAN) - int(b.VLAN)
		}
		return a.ID - b.ID
	})
	return out, nil
}

// FreeID returns the lowest counter slot no endpoint and none of recs (the
// records, as Records returns them) uses. It reads the endpoint table in
// batches: a few syscalls, not two per endpoint.
func (t *Tables) FreeID(recs []Record) (int, error) {
	used := make([]bool, MaxEndpoints)
	for _, r := range recs {
		used[r.ID] = true
	}
	keys := make([]uint32, MaxEndpoints)
	vals := make([]bpf.XmacvlanEndpoint, MaxEndpoints)
	var cursor ebpf.MapBatchCursor
	for {
		n, err := t.m.XmvEndpoints.BatchLookup(&cursor, keys, vals, nil)
		for _, ep := range vals[:n] {
			used[ep.Id] = true
		}
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			break // the end of the table
		}
		if err != nil {
			return 0, fmt.Errorf("read endpoint table: %w", err)
		}
	}
	for id, u := range used {
		if !u {
			return id, nil
		}
	}
	return 0, fmt.Errorf("%d endpoints on this parent: %w", MaxEndpoints, ErrFull)
}

// floodAdd appends ep to vlan's flood list: the slot first, then the count
// that makes the datapath read it.
func (t *Tables) floodAdd(vlan uint16, ep bpf.XmacvlanEndpoint) error {
	n, _, err := t.Network(vlan)
	if err != nil {
		return err
	}
	key := bpf.XmacvlanFloodKey{Vlan: vlan, Idx: uint16(n.Members)}
	if err := t.m.XmvFlood.Update(key, ep, ebpf.UpdateAny); err != nil {
		return fullOr(err, "flood")
	}
	return t.setMembers(vlan, n.Members+1)
}

// floodRemove takes ifindex out of vlan's flood list, moving the last
// member into its slot so the list stays dense. The last member is copied
// before the count drops, so a repeat after a crash finds ifindex gone and
// changes nothing: it never removes another member.
func (t *Tables) floodRemove(vlan uint16, ifindex uint32) error {
	n, ok, err := t.Network(vlan)
	if err != nil || !ok {
		return err
	}
	last := bpf.XmacvlanFloodKey{Vlan: vlan, Idx: uint16(n.Members - 1)}
	for i := 0; i < n.Members; i++ {
		key := bpf.XmacvlanFloodKey{Vlan: vlan, Idx: uint16(i)}
		var m bpf.XmacvlanEndpoint
		if err := t.m.XmvFlood.Lookup(key, &m); err != nil || m.Ifindex != ifindex {
			continue
		}
		if key != last {
			var moved bpf.XmacvlanEndpoint
			if err := t.m.XmvFlood.Lookup(last, &moved); err != nil {
				return fmt.Errorf("flood list of VLAN %d: %w", vlan, err)
			}
			if err := t.m.XmvFlood.Update(key, moved, ebpf.UpdateExist); err != nil {
				return fmt.Errorf("flood list of VLAN %d: %w", vlan, err)
			}
		}
		if err := t.setMembers(vlan, n.Members-1); err != nil {
			return err
		}
		if err := t.m.XmvFlood.Delete(last); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("flood list of VLAN %d: %w", vlan, err)
		}
		return nil
	}
	return nil
}

func (t *Tables) setMembers(vlan uint16, members int) error {
	var raw bpf.XmacvlanNetwork
	if err := t.m.XmvNetworks.Lookup(vlan, &raw); err != nil {
		return fmt.Errorf("network %d: %w", vlan, err)
	}
	raw.Members = uint32(members)
	return t.m.XmvNetworks.Update(vlan, raw, ebpf.UpdateExist)
}

// fullOr turns the kernel's "no room" into ErrFull.
func fullOr(err error, table string) error {
	if errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ENOSPC) {
		return fmt.Errorf("%s table: %w", table, ErrFull)
	}
	return fmt.Errorf("%s table: %w", table, err)
}
