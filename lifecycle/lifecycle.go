// Package lifecycle is the one owner of networks and endpoints: it creates,
// deletes, checks and garbage-collects them. The CLI, the tests and the
// bench go through it; loader keeps the programs and links, tables the
// layout of the pinned maps.
//
// Every endpoint has a record (tables.Record) written before anything of
// it exists and removed after everything is gone. Each writer first
// repairs the records a crash left Building or Deleting (repair), so a
// SIGKILL at any step is undone by the next command that writes.
package lifecycle

import (
	"errors"
	"fmt"
	"net"
	"slices"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netlink/nl"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// Root is a state root (a directory on bpffs holding one directory per
// attached parent). Each method takes the root's lock for its duration.
type Root struct {
	Dir string
	// Followed, if set, hears what a writer changed to make the endpoints
	// follow their parent (see Reconcile), one line per change.
	Followed func(change string)
}

// Open returns the state root at dir (loader.DefaultRoot unless --bpffs
// says otherwise). Nothing is locked or created until a method runs.
func Open(dir string) (*Root, error) {
	if dir == "" {
		return nil, fmt.Errorf("no state root given")
	}
	return &Root{Dir: dir}, nil
}

// NetworkSpec is what `xmacvlan network create` asks for.
type NetworkSpec struct {
	Name    string
	VLAN    uint16 // 0: the untagged segment; else 1..4094
	Mode    tables.Mode
	Subnet  *net.IPNet // nil: none; masked to its network address
	Gateway net.IP     // nil: none; inside Subnet
	MTU     int        // 0: the parent's; else 68..the parent's
	// StormLimit caps the broadcast, multicast and untagged unknown-unicast
	// frames the VLAN floods, in frames per second, all sources together
	// (0: no limit; else 1..MaxStormLimit). README "Storm control".
	StormLimit uint32
}

// Selector names one endpoint of a network: by namespace (name, path or
// PID) or Host, and inner interface name ("" = the default: eth0, or
// xmv-NETWORK for a host endpoint).
type Selector struct {
	Netns string
	Host  bool
	Name  string
}

// writer locks the root, opens an attached parent and repairs what a
// crash left half-done.
func (r *Root) writer(parent string) (*loader.Handle, error) {
	h, err := r.repaired(parent)
	if err != nil {
		return nil, err
	}
	return r.followOnWrite(h)
}

// repaired is writer without following the parent (Reconcile follows it
// its own way).
func (r *Root) repaired(parent string) (*loader.Handle, error) {
	h, err := loader.Open(r.Dir, parent)
	if err != nil {
		return nil, err
	}
	if _, err := repair(h); err != nil {
		h.Close()
		return nil, err
	}
	return h, nil
}

// network locks the root, opens the parent of network name, repairs it
// and returns the network and the parent's records as they are after the
// repair.
func (r *Root) network(name string) (*loader.Handle, tables.Network, []tables.Record, error) {
	h, n, err := loader.OpenNetwork(r.Dir, name)
	if err != nil {
		return nil, n, nil, err
	}
	recs, err := repair(h)
	if err == nil {
		n, _, err = h.Tables.Network(n.VLAN)
	}
	if err != nil {
		h.Close()
		return nil, n, nil, err
	}
	return h, n, recs, nil
}

// CreateNetwork creates a network on an attached parent. Network names are
// unique under the root; each VLAN of a parent has at most one network.
func (r *Root) CreateNetwork(parent string, s NetworkSpec) (tables.Network, error) {
	n := tables.Network{Name: s.Name, VLAN: s.VLAN, Mode: s.Mode, Subnet: s.Subnet, Gateway: s.Gateway, MTU: s.MTU, StormLimit: s.StormLimit}
	if err := CheckNetworkName(n.Name); err != nil {
		return n, err
	}
	if parent == "" {
		return n, fmt.Errorf("--parent is required")
	}
	if n.Subnet != nil {
		n.Subnet = &net.IPNet{IP: n.Subnet.IP.Mask(n.Subnet.Mask), Mask: n.Subnet.Mask}
	}
	h, err := r.writer(parent)
	if err != nil {
		return n, err
	}
	defer h.Close()
	p, err := parentLink(h)
	if err != nil {
		return n, err
	}
	if err := CheckNetwork(n, Parent{Name: parent, MAC: p.Attrs().HardwareAddr, MTU: p.Attrs().MTU}); err != nil {
		return n, err
	}
	nets, err := h.Networks()
	if err != nil {
		return n, err
	}
	if err := CheckNetworkFree(n, parent, nets); err != nil {
		return n, err
	}
	return n, h.Tables.AddNetwork(n)
}

// DeleteNetwork deletes network name. It refuses while the network has
// endpoints, unless force, which deletes them first.
func (r *Root) DeleteNetwork(name string, force bool) error {
	h, n, recs, err := r.followingNetwork(name)
	if err != nil {
		return err
	}
	defer h.Close()
	var mine []tables.Record
	for _, rec := range recs {
		if rec.VLAN == n.VLAN {
			mine = append(mine, rec)
		}
	}
	if len(mine) > 0 && !force {
		return fmt.Errorf("network %s has %d endpoints; delete them first or use --force", n.Name, len(mine))
	}
	for _, rec := range mine {
		if err := teardown(h, rec.ID); err != nil {
			return err
		}
	}
	return h.Tables.DeleteNetwork(n.VLAN)
}

// SetNetworkStormLimit changes network name's storm limit live (frames per
// second, 0 = none; CheckStormLimit).
func (r *Root) SetNetworkStormLimit(name string, pps uint32) error {
	if err := CheckStormLimit(pps); err != nil {
		return err
	}
	h, n, _, err := r.followingNetwork(name)
	if err != nil {
		return err
	}
	defer h.Close()
	return h.Tables.SetNetworkStormLimit(n.VLAN, pps)
}

// SetEndpointStormLimit changes the storm limit of the endpoint sel names
// on network live (frames per second, 0 = none; CheckStormLimit).
func (r *Root) SetEndpointStormLimit(network string, sel Selector, pps uint32) error {
	if err := CheckStormLimit(pps); err != nil {
		return err
	}
	h, n, recs, err := r.followingNetwork(network)
	if err != nil {
		return err
	}
	defer h.Close()
	rec, found := findRecord(n, sel, recs)
	if !found {
		return fmt.Errorf("no such endpoint on network %s", network)
	}
	return h.Tables.SetEndpointStormLimit(rec.Ifindex, pps)
}

// Networks lists the networks of every parent under the root.
func (r *Root) Networks() ([]loader.ParentNetwork, error) {
	return loader.Networks(r.Dir)
}

// AddEndpoint builds an endpoint on network and returns it as registered
// (ID = its counter slot, Outer = its outer veth). A stale holder of the
// MAC, address or inner name (its namespace or outer veth is gone) is
// removed first; a live one is refused, named in the error.
func (r *Root) AddEndpoint(network string, s Spec) (tables.Endpoint, error) {
	h, n, recs, err := r.followingNetwork(network)
	if err != nil {
		return tables.Endpoint{}, err
	}
	defer h.Close()
	return addEndpoint(h, n, s, recs)
}

// DeleteEndpoint takes the endpoint sel names off network and removes its
// veth. Deleting an endpoint that does not exist is not an error: found
// says which it was.
func (r *Root) DeleteEndpoint(network string, sel Selector) (found bool, err error) {
	h, n, recs, err := r.followingNetwork(network)
	if err != nil {
		return false, err
	}
	defer h.Close()
	rec, found := findRecord(n, sel, recs)
	if err != nil || !found {
		return false, err
	}
	return true, teardown(h, rec.ID)
}

// EndpointStatus is an endpoint with its network and whether it is stale:
// its outer veth (and with it the namespace's end) is gone.
type EndpointStatus struct {
	Network string `json:"network"`
	tables.Endpoint
	State tables.State `json:"state"`
	Stale bool         `json:"stale"`
	// RxDropped counts the frames towards the endpoint its veth dropped:
	// flood copies (and host traffic) that found the endpoint's ring full
	// (loader.VethRxDropped).
	RxDropped uint64 `json:"rx_dropped"`
}

// Endpoints lists the endpoints of network, or of every network for "".
func (r *Root) Endpoints(network string) ([]EndpointStatus, error) {
	nets, err := r.Networks()
	if err != nil {
		return nil, err
	}
	out := []EndpointStatus{}
	found := false
	drops, err := loader.VethRxDropped()
	if err != nil {
		return nil, err
	}
	for _, n := range nets {
		if network != "" && n.Name != network {
			continue
		}
		found = true
		h, err := loader.Open(r.Dir, n.Parent)
		if err != nil {
			return nil, err
		}
		recs, err := h.Tables.Records()
		h.Close()
		if err != nil {
			return nil, err
		}
		for _, rec := range recs {
			if rec.VLAN == n.VLAN {
				out = append(out, EndpointStatus{Network: n.Name, Endpoint: rec.Endpoint, State: rec.State, Stale: isStale(rec),
					RxDropped: drops[rec.Ifindex]})
			}
		}
	}
	if network != "" && !found {
		return nil, fmt.Errorf("no network called %q", network)
	}
	return out, nil
}

// StaleEndpoints counts the endpoints of parent whose outer veth is gone.
func (r *Root) StaleEndpoints(parent string) (int, error) {
	h, err := loader.Open(r.Dir, parent)
	if err != nil {
		return 0, err
	}
	defer h.Close()
	recs, err := h.Tables.Records()
	if err != nil {
		return 0, err
	}
	n := 0
	for _, rec := range recs {
		if isStale(rec) {
			n++
		}
	}
	return n, nil
}

// DetachParent removes the datapath from parent (loader.Detach). With
// endpoints it refuses, unless force, which first removes each of them as
// `endpoint del` does. A crash halfway is finished by the same command.
func (r *Root) DetachParent(parent string, force bool) error {
	h, err := loader.OpenState(r.Dir, parent)
	if err != nil {
		return err
	}
	defer h.Close()
	if h.Tables != nil {
		recs, err := h.Tables.Records()
		if err != nil {
			return err
		}
		if len(recs) > 0 && !force {
			return fmt.Errorf("%s has %d endpoints; delete them first or detach with --force", parent, len(recs))
		}
		if err := teardownAll(h, recs); err != nil {
			return err
		}
	}
	return h.Detach()
}

// teardownAll removes every endpoint of recs, as teardown does one, but
// deletes their veths in one batch first: a tcx link whose device is gone
// is released without waiting for an RCU grace period, so the link pins
// then go fast too. Every record is marked Deleting before anything is
// removed, so a crash at any later step is finished by the next teardown.
func teardownAll(h *loader.Handle, recs []tables.Record) error {
	for _, rec := range recs {
		if rec.State != tables.Deleting {
			rec.State = tables.Deleting
			if err := h.Tables.PutRecord(rec); err != nil {
				return err
			}
		}
	}
	for _, rec := range recs {
		if rec.Ifindex == 0 {
			continue
		}
		if ep, ok, err := h.Tables.Endpoint(rec.Ifindex); err != nil {
			return err
		} else if ok && ep.ID == rec.ID {
			if err := h.Tables.DeleteEndpoint(rec.Ifindex); err != nil {
				return err
			}
		}
	}
	s, err := h.Tables.Settings()
	if err != nil {
		return err
	}
	if err := deleteGroup(outerGroup(s.ParentIfindex)); err != nil {
		return err
	}
	macs := map[string]bool{}
	for _, rec := range recs {
		if outer := ourOuter(h, rec); outer != nil { // made outside the group
			if err := netlink.LinkDel(outer); err != nil && !errors.Is(err, unix.ENODEV) {
				return fmt.Errorf("delete endpoint veth %s: %w", rec.Outer, err)
			}
		}
		if rec.Ifindex != 0 {
			if err := h.DetachEndpointLink(rec.Ifindex); err != nil {
				return err
			}
		}
		if !macs[rec.MAC.String()] {
			macs[rec.MAC.String()] = true
			if err := removeUnicastEntry(h, rec.MAC); err != nil {
				return err
			}
		}
		if err := h.Tables.DeleteRecord(rec.ID); err != nil {
			return err
		}
	}
	return nil
}

// deleteGroup deletes every interface of group in this namespace with one
// RTM_DELLINK (kernel rtnl_group_dellink). No interface in it is not an
// error.
func deleteGroup(group uint32) error {
	req := nl.NewNetlinkRequest(unix.RTM_DELLINK, unix.NLM_F_ACK)
	req.AddData(nl.NewIfInfomsg(unix.AF_UNSPEC))
	req.AddData(nl.NewRtAttr(unix.IFLA_GROUP, nl.Uint32Attr(group)))
	if _, err := req.Execute(unix.NETLINK_ROUTE, 0); err != nil && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("delete the endpoints' veths (group %#x): %w", group, err)
	}
	return nil
}

// plug hooks the transmit program to the outer veth, adds the MAC to the
// parent's unicast filter, then puts the endpoint in the datapath's
// tables (the receive path last).
func plug(h *loader.Handle, ep tables.Endpoint) error {
	if err := h.AttachEndpointLink(ep.Ifindex); err != nil {
		return err
	}
	fdb, err := unicastEntry(h, ep.MAC)
	if err == nil {
		err = netlink.NeighAppend(fdb)
	}
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("add %s to the parent's unicast filter: %w", ep.MAC, err)
	}
	return h.Tables.PlugEndpoint(ep)
}

// teardown removes endpoint id: the record is marked Deleting, then the
// datapath entries go (MAC table, flood list, endpoint table), then the
// veth (the pair goes with the outer end), its link pin and the unicast
// filter entry, and the record last.
// Every step is safe to repeat, so a crash anywhere is finished by the
// next teardown of the same record.
func teardown(h *loader.Handle, id int) error {
	rec, ok, err := h.Tables.Record(id)
	if err != nil || !ok {
		return err
	}
	if rec.State != tables.Deleting {
		rec.State = tables.Deleting
		if err := h.Tables.PutRecord(rec); err != nil {
			return err
		}
	}
	recs, err := h.Tables.Records()
	if err != nil {
		return err
	}
	others := slices.DeleteFunc(recs, func(r tables.Record) bool { return r.ID == rec.ID })
	outer := ourOuter(h, rec)
	ifindex := rec.Ifindex
	if ifindex == 0 && outer != nil {
		ifindex = outer.Attrs().Index
	}
	if ifindex != 0 {
		if ep, ok, err := h.Tables.Endpoint(ifindex); err != nil {
			return err
		} else if ok && ep.ID == rec.ID {
			if err := h.Tables.DeleteEndpoint(ifindex); err != nil {
				return err
			}
		}
	}
	// The veth before its link: the kernel releases a link whose device
	// is gone without waiting for an RCU grace period.
	if outer != nil {
		if err := netlink.LinkDel(outer); err != nil && !errors.Is(err, unix.ENODEV) {
			return fmt.Errorf("delete endpoint veth %s: %w", rec.Outer, err)
		}
	}
	// The kernel may have given a gone veth's ifindex to another one.
	if ifindex != 0 && !slices.ContainsFunc(others, func(r tables.Record) bool { return r.Ifindex == ifindex }) {
		if err := h.DetachEndpointLink(ifindex); err != nil {
			return err
		}
	}
	// Another endpoint of the parent (on another VLAN) may use the same MAC.
	if !slices.ContainsFunc(others, func(r tables.Record) bool { return slices.Equal(r.MAC, rec.MAC) }) {
		if err := removeUnicastEntry(h, rec.MAC); err != nil {
			return err
		}
	}
	if err := h.Tables.DeleteRecord(rec.ID); err != nil {
		return err
	}
	if rec.XDPDelivery {
		// Under --xdp auto the XDP program may go with the last such
		// endpoint.
		if err := h.SyncXDP(false); err != nil {
			return fmt.Errorf("endpoint %s removed, but not the XDP program it needed: %w", rec.Outer, err)
		}
	}
	return nil
}

// ourOuter finds the outer veth of rec: by ifindex if that interface
// still has the recorded name, else by name; nil if it is gone.
func ourOuter(h *loader.Handle, rec tables.Record) netlink.Link {
	if rec.Ifindex != 0 {
		if l, err := netlink.LinkByIndex(rec.Ifindex); err == nil && l.Attrs().Name == rec.Outer {
			return l
		}
	}
	if rec.Outer == "" {
		return nil
	}
	if l, err := netlink.LinkByName(rec.Outer); err == nil && ours(h, rec.Outer) {
		return l
	}
	return nil
}

// removeUnicastEntry removes mac from the parent's unicast filter; a
// missing entry is not an error.
func removeUnicastEntry(h *loader.Handle, mac net.HardwareAddr) error {
	fdb, err := unicastEntry(h, mac)
	if err != nil {
		return err
	}
	if err := netlink.NeighDel(fdb); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENODEV) {
		return fmt.Errorf("remove %s from the parent's unicast filter: %w", mac, err)
	}
	return nil
}

// unicastEntry is the parent's "self" fdb entry for mac: from user space,
// what kernel macvlan does with dev_uc_add. A NIC with a unicast filter
// then accepts the MAC without promiscuous mode; one without falls back to
// promiscuous mode by itself.
func unicastEntry(h *loader.Handle, mac net.HardwareAddr) (*netlink.Neigh, error) {
	s, err := h.Tables.Settings()
	if err != nil {
		return nil, err
	}
	return &netlink.Neigh{LinkIndex: s.ParentIfindex, Family: unix.AF_BRIDGE,
		Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, HardwareAddr: mac}, nil
}

func parentLink(h *loader.Handle) (netlink.Link, error) {
	s, err := h.Tables.Settings()
	if err != nil {
		return nil, err
	}
	p, err := netlink.LinkByIndex(s.ParentIfindex)
	if err != nil {
		return nil, fmt.Errorf("parent %s (ifindex %d) is gone: %w", h.Parent, s.ParentIfindex, err)
	}
	return p, nil
}

// repair finishes what a crash left: a Building record is rolled back, a
// Deleting one is finished, and the flood lists of their VLANs are made to
// match the endpoint table again. It returns the records left, all Ready.
func repair(h *loader.Handle) ([]tables.Record, error) {
	recs, err := h.Tables.Records()
	if err != nil {
		return nil, err
	}
	vlans := map[uint16]bool{}
	for _, rec := range recs {
		if rec.State == tables.Ready {
			continue
		}
		if err := teardown(h, rec.ID); err != nil {
			return nil, fmt.Errorf("repair endpoint %d (%s, left %s by a crash): %w", rec.ID, rec.Outer, rec.State, err)
		}
		vlans[rec.VLAN] = true
	}
	if len(vlans) == 0 {
		return recs, nil
	}
	for vlan := range vlans {
		if _, err := h.Tables.SyncFlood(vlan); err != nil {
			return nil, err
		}
	}
	return h.Tables.Records()
}

// isStale says whether a Ready endpoint's outer veth is gone (deleting a
// namespace deletes the veth pairs that have an end in it).
func isStale(rec tables.Record) bool {
	if rec.State != tables.Ready || rec.Ifindex == 0 {
		return false
	}
	l, err := netlink.LinkByIndex(rec.Ifindex)
	return err != nil || l.Attrs().Name != rec.Outer
}
