package lifecycle

// Route policy (README "Routes"). A container endpoint gets a default
// route via its gateway only when its namespace has no default route of
// that family yet: the first network of a container provides it, as
// Docker's first network does; later networks get only their connected
// subnet route. A host endpoint never gets one: the host keeps its own
// routes, and may take the gateway's address to be the containers'
// router. xmacvlan never changes a route it did not install; the routes
// it installs carry RouteProtocol, so they name their owner.

import (
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/tables"
)

// RouteProtocol is the rtm_protocol of the default routes xmacvlan
// installs (`ip route` shows "proto 120"); values above RTPROT_STATIC (4)
// are free for routing daemons (rtnetlink.h), and 120 is taken by none of
// iproute2's rt_protos.
const RouteProtocol = netlink.RouteProtocol(120)

// DefaultGateway decides the default route of a new endpoint: the gateway
// to install, or nil for none. s has its defaults filled in; existing
// describes the default route the namespace already has for the family of
// s.IP ("" if none). An explicit s.Gateway that would be a second default
// route is refused, naming the one there.
func DefaultGateway(s Spec, n tables.Network, existing string) (net.IP, error) {
	if s.IP == nil || s.Host {
		return nil, nil
	}
	gw := s.Gateway
	if gw == nil {
		gw = n.Gateway
	}
	if gw == nil || (gw.To4() == nil) != (s.IP.IP.To4() == nil) {
		return nil, nil
	}
	if existing == "" {
		return gw, nil
	}
	if s.Gateway != nil {
		return nil, fmt.Errorf("%s already has a default route (%s); --gateway %s would be a second one: drop --gateway, or delete that route first",
			nsName(s), existing, s.Gateway)
	}
	return nil, nil // a later network: its subnet route only
}

// family is the address family of ip.
func family(ip net.IP) int {
	if ip.To4() != nil {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

// defaultRoute describes the default routes of the namespace nl works in,
// for family, as `ip route` would print them; "" if there are none.
func defaultRoute(nl *netlink.Handle, fam int) (string, error) {
	routes, err := nl.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
	if err != nil {
		return "", fmt.Errorf("list routes: %w", err)
	}
	var found []string
	for _, r := range routes {
		if r.Dst != nil {
			if ones, _ := r.Dst.Mask.Size(); ones != 0 {
				continue
			}
		}
		found = append(found, describeRoute(nl, r))
	}
	return strings.Join(found, "; "), nil
}

func describeRoute(nl *netlink.Handle, r netlink.Route) string {
	hop := func(gw net.IP, ifindex int) string {
		s := ""
		if gw != nil {
			s = "via " + gw.String() + " "
		}
		dev := fmt.Sprintf("ifindex %d", ifindex)
		if l, err := nl.LinkByIndex(ifindex); err == nil {
			dev = l.Attrs().Name
		}
		return s + "dev " + dev
	}
	var hops []string
	if len(r.MultiPath) == 0 {
		hops = append(hops, hop(r.Gw, r.LinkIndex))
	}
	for _, nh := range r.MultiPath {
		hops = append(hops, hop(nh.Gw, nh.LinkIndex))
	}
	owner := r.Protocol.String()
	if r.Protocol == RouteProtocol {
		owner = "xmacvlan"
	}
	return "default " + strings.Join(hops, ", ") + " proto " + owner
}

// addDefaultRoute installs the endpoint's default route via gw on link,
// marked as ours.
func addDefaultRoute(nl *netlink.Handle, link netlink.Link, gw net.IP) error {
	r := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: gw, Protocol: RouteProtocol, Table: unix.RT_TABLE_MAIN}
	if err := nl.RouteAdd(r); err != nil {
		return fmt.Errorf("default route via %s dev %s: %w", gw, link.Attrs().Name, err)
	}
	return nil
}
