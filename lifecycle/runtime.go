package lifecycle

// Endpoints whose inner end a container runtime moves into the container
// itself (Spec.Moved). Docker's remote network drivers work this way: Join
// answers with the name of an interface in the driver's namespace, and
// Docker moves it into the sandbox, renames it (eth0, eth1, ...) and sets
// its address, MAC, routes and link state.
//
// Such an endpoint is built like any other (record first, datapath last),
// except that the inner end is created in this namespace under a temporary
// name, with its MAC and MTU only. The record names the runtime's
// namespace (Spec.Netns) from the start; SettleMoved records the
// namespace's inode and the inner end's final name once the runtime has
// configured it, so `endpoint check` compares it like any other endpoint
// from then on.

import (
	"fmt"
	"net"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/tables"
)

// openEndpointTarget opens the namespace s names. A moved endpoint's
// namespace may not exist yet (Docker creates the container's namespace
// after Join): it is only named, and SettleMoved records its inode.
func openEndpointTarget(s Spec) (*target, error) {
	if s.Moved {
		if s.Netns == "" {
			return nil, fmt.Errorf("a moved endpoint needs the namespace it will be moved to")
		}
		return &target{name: s.Netns, close: func() {}}, nil
	}
	return openTarget(s)
}

// movedName is the inner end's name until the runtime renames it: the
// outer name with xmi for xmv, unique in this namespace like the outer one
// and never taken for an outer veth by gc.
func movedName(outer string) string { return "xmi" + outer[3:] }

// createMovedVeth creates the pair with both ends in this namespace.
func createMovedVeth(outer string, s Spec, group uint32) error {
	here, err := openTarget(Spec{Host: true})
	if err != nil {
		return err
	}
	defer here.close()
	if err := createVeth(outer, s, here, group); err != nil {
		return err
	}
	// As configureInner: NAPI on the receiving end. The feature moves
	// with the device into the container.
	return giveNAPI(s.Name)
}

// SettleMoved finishes the moved endpoint whose outer veth is outer on
// network, once the runtime has put its inner end in the recorded
// namespace, up and with the recorded address: it records the inner end's
// name there and announces the address (gratuitous ARP or unsolicited NA).
// ready is false, and nothing changes, while the runtime is not done yet.
// An endpoint that no longer exists is an error.
func (r *Root) SettleMoved(network, outer string) (ep tables.Endpoint, ready bool, err error) {
	h, n, recs, err := r.network(network)
	if err != nil {
		return ep, false, err
	}
	defer h.Close()
	rec, found := recordByOuter(recs, n.VLAN, outer)
	if !found {
		return ep, false, fmt.Errorf("no endpoint with outer veth %s on network %s", outer, network)
	}
	tg, err := openTarget(Spec{Netns: rec.Netns})
	if err != nil {
		return rec.Endpoint, false, nil
	}
	defer tg.close()
	if rec.NetnsIno != 0 && tg.ino != rec.NetnsIno {
		return rec.Endpoint, false, fmt.Errorf("namespace %s is no longer the endpoint's (inode %d, recorded %d)", rec.Netns, tg.ino, rec.NetnsIno)
	}
	inner, err := innerPeer(tg, rec.Ifindex)
	if err != nil || inner == nil || inner.Attrs().Flags&net.FlagUp == 0 {
		return rec.Endpoint, false, err
	}
	if rec.IP != nil && !hasAddress(tg, inner, rec) {
		return rec.Endpoint, false, nil
	}
	if rec.Ifname != inner.Attrs().Name || rec.NetnsIno != tg.ino {
		rec.Ifname, rec.NetnsIno = inner.Attrs().Name, tg.ino
		if err := h.Tables.PutRecord(rec); err != nil {
			return rec.Endpoint, false, err
		}
	}
	announce(tg, Spec{Name: rec.Ifname, MAC: rec.MAC, IP: rec.IP})
	return rec.Endpoint, true, nil
}

// WaitMoved calls SettleMoved until the endpoint is ready, for at most
// timeout.
func (r *Root) WaitMoved(network, outer string, timeout time.Duration) (tables.Endpoint, error) {
	deadline := time.Now().Add(timeout)
	delay := 5 * time.Millisecond
	for {
		ep, ready, err := r.SettleMoved(network, outer)
		if err != nil || ready {
			return ep, err
		}
		if time.Now().After(deadline) {
			return ep, fmt.Errorf("the runtime did not configure %s's inner end within %s", outer, timeout)
		}
		time.Sleep(delay)
		delay = min(2*delay, 100*time.Millisecond)
	}
}

// DeleteOuter takes the endpoint whose outer veth is outer off network and
// removes its veth: how a runtime that moved the inner end (and may have
// renamed it) names its endpoint. Deleting an endpoint that does not exist
// is not an error: found says which it was.
func (r *Root) DeleteOuter(network, outer string) (found bool, err error) {
	h, n, recs, err := r.network(network)
	if err != nil {
		return false, err
	}
	defer h.Close()
	rec, found := recordByOuter(recs, n.VLAN, outer)
	if !found {
		return false, nil
	}
	return true, teardown(h, rec.ID)
}

func recordByOuter(recs []tables.Record, vlan uint16, outer string) (tables.Record, bool) {
	for _, rec := range recs {
		if rec.VLAN == vlan && rec.Outer == outer {
			return rec, true
		}
	}
	return tables.Record{}, false
}

// innerPeer finds, in tg, the veth whose peer is the outer end ifindex
// (IFLA_LINK of a veth names its peer); nil if none is there yet.
func innerPeer(tg *target, ifindex int) (netlink.Link, error) {
	links, err := tg.nl.LinkList()
	if err != nil {
		return nil, err
	}
	for _, l := range links {
		if _, ok := l.(*netlink.Veth); ok && l.Attrs().ParentIndex == ifindex {
			return l, nil
		}
	}
	return nil, nil
}

func hasAddress(tg *target, l netlink.Link, rec tables.Record) bool {
	addrs, err := tg.nl.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if a.IP.Equal(rec.IP.IP) {
			return true
		}
	}
	return false
}
