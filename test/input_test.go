package test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
)

// inputLab is one host with its parent attached and four networks:
//
//	lan   untagged  10.10.0.0/24  gateway 10.10.0.1
//	lan2  VLAN 20   10.20.0.0/24  gateway 10.20.0.1
//	v6    VLAN 30   fd00:30::/64  gateway fd00:30::1
//	small VLAN 40   10.40.0.0/24  MTU 1000
type inputLab struct {
	t *testing.T
	h *host
}

func newInputLab(t *testing.T) *inputLab {
	l := &inputLab{t: t, h: newLab(t).host()}
	l.must("attach", l.h.parent)
	t.Cleanup(func() { l.h.cli("detach", "--force", l.h.parent) })
	l.must("network", "create", "lan", "--parent", l.h.parent, "--subnet", "10.10.0.0/24", "--gateway", "10.10.0.1")
	l.must("network", "create", "lan2", "--parent", l.h.parent, "--vlan", "20", "--subnet", "10.20.0.0/24", "--gateway", "10.20.0.1")
	l.must("network", "create", "v6", "--parent", l.h.parent, "--vlan", "30", "--subnet", "fd00:30::/64", "--gateway", "fd00:30::1")
	l.must("network", "create", "small", "--parent", l.h.parent, "--vlan", "40", "--subnet", "10.40.0.0/24", "--mtu", "1000")
	return l
}

// must runs the CLI and fails the test if it fails.
func (l *inputLab) must(args ...string) string {
	l.t.Helper()
	out, err := l.h.cli(args...)
	if err != nil {
		l.t.Fatalf("xmacvlan %s: %v", strings.Join(args, " "), err)
	}
	return out
}

// outer is the outer veth of the endpoint ifname in netns (network net).
func (l *inputLab) outer(network, netns, ifname string) string {
	l.t.Helper()
	var rows []struct{ Netns, Ifname, Outer string }
	if err := json.Unmarshal([]byte(l.must("-o", "json", "endpoint", "list", network)), &rows); err != nil {
		l.t.Fatal(err)
	}
	for _, r := range rows {
		if r.Netns == netns && r.Ifname == ifname {
			return r.Outer
		}
	}
	l.t.Fatalf("no endpoint %s in %s on %s", ifname, netns, network)
	return ""
}

// nsState is what a namespace looks like: its links and every route of
// both families, in a comparable form.
func nsState(ns *testutil.Netns) string {
	var b strings.Builder
	links, _ := ns.NL.LinkList()
	var names []string
	for _, l := range links {
		names = append(names, l.Attrs().Name)
	}
	slices.Sort(names)
	fmt.Fprintf(&b, "%s links %v\n", ns.Name, names)
	for _, r := range routes(ns) {
		fmt.Fprintf(&b, "  %s\n", r)
	}
	return b.String()
}

// routes lists the routes of the main table, both families, as text.
func routes(ns *testutil.Netns) []string {
	var out []string
	for _, fam := range []int{netlink.FAMILY_V4, netlink.FAMILY_V6} {
		rs, _ := ns.NL.RouteListFiltered(fam, &netlink.Route{Table: unix.RT_TABLE_MAIN}, netlink.RT_FILTER_TABLE)
		for _, r := range rs {
			dev := ""
			if l, err := ns.NL.LinkByIndex(r.LinkIndex); err == nil {
				dev = l.Attrs().Name
			}
			out = append(out, fmt.Sprintf("%v via %v dev %s proto %d", r.Dst, r.Gw, dev, r.Protocol))
		}
	}
	slices.Sort(out)
	return out
}

// defaultRoutes are the lines of routes() that are default routes.
func defaultRoutes(ns *testutil.Netns) []string {
	var out []string
	for _, r := range routes(ns) {
		if strings.HasPrefix(r, "0.0.0.0/0 ") || strings.HasPrefix(r, "::/0 ") {
			out = append(out, r)
		}
	}
	return out
}

// userDefaultRoute gives ns an interface of the user's (a veth pair
// upl/upr) and a default route of the user's own (proto static) through
// it.
func userDefaultRoute(t *testing.T, ns *testutil.Netns) {
	t.Helper()
	veth(t, ns, "upl", ns, "upr")
	addr(t, ns, "upl", "192.0.2.2/24")
	r := &netlink.Route{Gw: []byte{192, 0, 2, 1}, LinkIndex: mustLink(t, ns, "upl").Attrs().Index, Protocol: unix.RTPROT_STATIC}
	if err := ns.NL.RouteAdd(r); err != nil {
		t.Fatal(err)
	}
}

// Every refusal of issue 14 (uniqueness, input that breaks the host or the
// endpoint, routes the user owns) exits non-zero with its whole message,
// naming what is in the way, and changes nothing: no veth, no table entry,
// no route.
func TestInputRefusals(t *testing.T) {
	l := newInputLab(t)
	h := l.h
	c1 := testutil.NewNetns(t, "xc")
	c2 := testutil.NewNetns(t, "xc")
	l.must("endpoint", "add", "lan", "--netns", c1.Name, "--ip", "10.10.0.11", "--mac", "02:00:00:00:00:11")
	l.must("endpoint", "add", "v6", "--netns", c1.Name, "--name", "eth1", "--ip", "fd00:30::11", "--mac", "02:00:00:00:30:11")
	eth0 := fmt.Sprintf("eth0 in netns %s (MAC 02:00:00:00:00:11, outer veth %s)", c1.Name, l.outer("lan", c1.Name, "eth0"))
	eth1 := fmt.Sprintf("eth1 in netns %s (MAC 02:00:00:00:30:11, outer veth %s)", c1.Name, l.outer("v6", c1.Name, "eth1"))
	parentMAC := mustLink(t, h.ns, h.parent).Attrs().HardwareAddr.String()

	state := func() string {
		nets, _ := h.cli("network", "list")
		eps, _ := h.cli("endpoint", "list")
		return nets + eps + nsState(h.ns) + nsState(c1) + nsState(c2)
	}
	before := state()
	add := func(network, netns string, args ...string) []string {
		return append([]string{"endpoint", "add", network, "--netns", netns}, args...)
	}
	create := func(args ...string) []string {
		return append([]string{"network", "create", "x", "--parent", h.parent, "--vlan", "50"}, args...)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string // after "xmacvlan: "
	}{
		// 2. Uniqueness, naming the holder.
		{"IPv4 address taken", add("lan", c2.Name, "--ip", "10.10.0.11"),
			"address 10.10.0.11 already used on network lan by " + eth0},
		{"IPv6 address taken", add("v6", c2.Name, "--ip", "fd00:30::11"),
			"address fd00:30::11 already used on network v6 by " + eth1},
		{"MAC taken", add("lan", c2.Name, "--mac", "02:00:00:00:00:11"),
			"MAC 02:00:00:00:00:11 already used on network lan by " + eth0},
		{"netns and name taken on the network", add("lan", c1.Name),
			fmt.Sprintf("eth0 in netns %s is already an endpoint on network lan (MAC 02:00:00:00:00:11, outer veth %s)", c1.Name, l.outer("lan", c1.Name, "eth0"))},
		{"name taken by an endpoint of another network", add("lan", c1.Name, "--name", "eth1", "--ip", "10.10.0.12"),
			fmt.Sprintf("netns %s already has an interface called eth1: the endpoint on VLAN 30 (MAC 02:00:00:00:30:11, outer veth %s)", c1.Name, l.outer("v6", c1.Name, "eth1"))},
		// 3. Input that breaks the host or the endpoint.
		{"parent's MAC", add("lan", c2.Name, "--mac", parentMAC),
			"MAC " + parentMAC + " is the address of parent ens33; an endpoint with it would take the host off the LAN"},
		{"zero MAC", add("lan", c2.Name, "--mac", "00:00:00:00:00:00"),
			"MAC 00:00:00:00:00:00 is all zeros; an endpoint needs a unicast address"},
		{"multicast MAC", add("lan", c2.Name, "--mac", "33:33:00:00:00:01"),
			"MAC 33:33:00:00:00:01 is multicast; an endpoint needs a unicast address"},
		{"IPv6 below MTU 1280", add("v6", c2.Name, "--ip", "fd00:30::12", "--mtu", "1000"),
			"address fd00:30::12/64 is IPv6, which needs an MTU of at least 1280 (RFC 8200), not 1000"},
		{"network address", add("lan", c2.Name, "--ip", "10.10.0.0"),
			"IP 10.10.0.0 is the network address of subnet 10.10.0.0/24"},
		{"broadcast address", add("lan", c2.Name, "--ip", "10.10.0.255/24"),
			"IP 10.10.0.255 is the broadcast address of subnet 10.10.0.0/24"},
		{"IPv6 Subnet-Router anycast", add("v6", c2.Name, "--ip", "fd00:30::"),
			"IP fd00:30:: is the network address of subnet fd00:30::/64"},
		{"prefix wider than the subnet", add("lan", c2.Name, "--ip", "10.10.0.12/8"),
			"prefix /8 of 10.10.0.12/8 is wider than network lan's subnet 10.10.0.0/24"},
		{"IP outside the subnet", add("lan", c2.Name, "--ip", "10.11.0.12/24"),
			"IP 10.11.0.12 is outside network lan's subnet 10.10.0.0/24"},
		{"container takes the gateway's address", add("lan", c2.Name, "--ip", "10.10.0.1"),
			"IP 10.10.0.1 is network lan's gateway; only a host endpoint (--host) may take the gateway's address"},
		{"gateway is the network address", add("lan", c2.Name, "--ip", "10.10.0.12", "--gateway", "10.10.0.0"),
			"gateway 10.10.0.0 is the network address of subnet 10.10.0.0/24"},
		// 1. Routes: a second default route is refused, naming the first.
		{"explicit gateway over an existing default route", add("lan2", c1.Name, "--name", "eth2", "--ip", "10.20.0.11", "--gateway", "10.20.0.1"),
			fmt.Sprintf("netns %s already has a default route (default via 10.10.0.1 dev eth0 proto xmacvlan); --gateway 10.20.0.1 would be a second one: drop --gateway, or delete that route first", c1.Name)},
		{"host endpoint with a gateway", []string{"endpoint", "add", "lan", "--host", "--ip", "10.10.0.1", "--gateway", "10.10.0.254"},
			"a host endpoint never gets a default route, so it takes no gateway (10.10.0.254): the host keeps its own routes"},
		// Networks.
		{"subnet /0", create("--subnet", "0.0.0.0/0"),
			"subnet 0.0.0.0/0 is the whole address space; give the LAN's prefix, e.g. 172.16.10.0/24"},
		{"IPv6 subnet /0", create("--subnet", "::/0"),
			"subnet ::/0 is the whole address space; give the LAN's prefix, e.g. 172.16.10.0/24"},
		{"gateway is the network address of the subnet", create("--subnet", "10.50.0.0/16", "--gateway", "10.50.0.0"),
			"gateway 10.50.0.0 is the network address of subnet 10.50.0.0/16"},
		{"gateway is the broadcast address", create("--subnet", "10.50.0.0/16", "--gateway", "10.50.255.255"),
			"gateway 10.50.255.255 is the broadcast address of subnet 10.50.0.0/16"},
		{"gateway outside the subnet", create("--subnet", "10.50.0.0/16", "--gateway", "10.51.0.1"),
			"gateway 10.51.0.1 is outside subnet 10.50.0.0/16"},
		{"IPv6 network below MTU 1280", create("--subnet", "fd00:50::/64", "--mtu", "1279"),
			"subnet fd00:50::/64 is IPv6, which needs an MTU of at least 1280 (RFC 8200), not 1279"},
	} {
		out, err := h.cli(tc.args...)
		if got := strings.TrimSpace(out); err == nil || got != "xmacvlan: "+tc.want {
			t.Errorf("%s: xmacvlan %s:\n  exit %v, output %q\n  want a failure saying %q", tc.name, strings.Join(tc.args, " "), err, got, "xmacvlan: "+tc.want)
		}
		if after := state(); after != before {
			t.Fatalf("%s changed state:\nbefore %s\nafter  %s", tc.name, before, after)
		}
	}
}

// The route policy (README "Routes"): a container's first network of a
// family gives it a default route via the gateway, later networks only
// their subnet route; a host endpoint gets none and may take the gateway's
// address; a route the user owns is never replaced nor deleted; deleting
// an endpoint removes the default route it brought.
func TestRoutePolicy(t *testing.T) {
	l := newInputLab(t)
	h := l.h
	c1 := testutil.NewNetns(t, "xc")

	l.must("endpoint", "add", "lan", "--netns", c1.Name, "--ip", "10.10.0.11")
	first := []string{"0.0.0.0/0 via 10.10.0.1 dev eth0 proto 120"}
	if got := defaultRoutes(c1); !slices.Equal(got, first) {
		t.Fatalf("first network: default routes %q, want %q", got, first)
	}
	l.must("endpoint", "add", "lan2", "--netns", c1.Name, "--name", "eth2", "--ip", "10.20.0.11")
	if got := defaultRoutes(c1); !slices.Equal(got, first) {
		t.Errorf("second network: default routes %q, want only the first network's %q", got, first)
	}
	if rs := routes(c1); !slices.Contains(rs, "10.20.0.0/24 via <nil> dev eth2 proto 2") {
		t.Errorf("second network has no subnet route: %q", rs)
	}
	// IPv6 is a family of its own: its first network gives the v6 default.
	l.must("endpoint", "add", "v6", "--netns", c1.Name, "--name", "eth1", "--ip", "fd00:30::11")
	withV6 := slices.Concat(first, []string{"::/0 via fd00:30::1 dev eth1 proto 120"})
	if got := defaultRoutes(c1); !slices.Equal(got, withV6) {
		t.Errorf("first IPv6 network: default routes %q, want %q", got, withV6)
	}

	// The host has a default route of its own; its endpoint takes the
	// gateway's address and leaves the host's routes as they were.
	userDefaultRoute(t, h.ns)
	hostDefault := defaultRoutes(h.ns)
	l.must("endpoint", "add", "lan", "--host", "--ip", "10.10.0.1/24")
	if got := defaultRoutes(h.ns); !slices.Equal(got, hostDefault) {
		t.Errorf("host endpoint changed the host's default routes: %q, were %q", got, hostDefault)
	}
	if err := ping(c1, "10.10.0.1"); err != nil {
		t.Errorf("container cannot reach the host at the gateway's address: %v", err)
	}

	// A container with a default route of the user's: kept on add and on del.
	c3 := testutil.NewNetns(t, "xc")
	userDefaultRoute(t, c3)
	userRoutes := defaultRoutes(c3)
	l.must("endpoint", "add", "lan", "--netns", c3.Name, "--ip", "10.10.0.13")
	if got := defaultRoutes(c3); !slices.Equal(got, userRoutes) {
		t.Errorf("endpoint add changed the user's default route: %q, was %q", got, userRoutes)
	}
	if err := ping(c3, "10.10.0.11"); err != nil {
		t.Errorf("c3 -> c1 over the subnet route: %v", err)
	}
	l.must("endpoint", "del", "lan", "--netns", c3.Name)
	if got := defaultRoutes(c3); !slices.Equal(got, userRoutes) {
		t.Errorf("endpoint del changed the user's default route: %q, was %q", got, userRoutes)
	}

	// Deleting the first network's endpoint takes the route it brought,
	// and no other.
	l.must("endpoint", "del", "lan", "--netns", c1.Name)
	if got, want := defaultRoutes(c1), withV6[1:]; !slices.Equal(got, want) {
		t.Errorf("after deleting eth0: default routes %q, want %q", got, want)
	}
	l.must("endpoint", "del", "lan", "--host")
	if got := defaultRoutes(h.ns); !slices.Equal(got, hostDefault) {
		t.Errorf("host endpoint del changed the host's default routes: %q, were %q", got, hostDefault)
	}
}

// An endpoint below IPv6's minimum MTU is IPv4-only: it works (the kernel
// gives the veth no IPv6), carries frames up to its MTU, and refuses more.
func TestIPv4OnlyMTU1000(t *testing.T) {
	l := newInputLab(t)
	a := testutil.NewNetns(t, "xc")
	b := testutil.NewNetns(t, "xc")
	hostLinks := nsState(l.h.ns)
	l.must("endpoint", "add", "small", "--netns", a.Name, "--ip", "10.40.0.2")
	l.must("endpoint", "add", "small", "--netns", b.Name, "--ip", "10.40.0.3", "--mtu", "1279")
	if mtu := mustLink(t, a, "eth0").Attrs().MTU; mtu != 1000 {
		t.Errorf("eth0 MTU %d, want the network's 1000", mtu)
	}
	if addrs, _ := a.NL.AddrList(mustLink(t, a, "eth0"), netlink.FAMILY_V6); len(addrs) != 0 {
		t.Errorf("IPv6 addresses on an MTU 1000 endpoint: %v", addrs)
	}
	// No IPv6 on it: the kernel made none, or xmacvlan turned it off.
	if out, err := run(a, "sh", "-c", "cat /proc/sys/net/ipv6/conf/eth0/disable_ipv6 2>/dev/null || echo none"); err != nil ||
		(strings.TrimSpace(out) != "none" && strings.TrimSpace(out) != "1") {
		t.Errorf("IPv6 on an MTU 1000 endpoint: disable_ipv6 %q %v", out, err)
	}
	if _, err := run(a, "ping", "-c", "2", "-i", "0.2", "-W", "1", "-M", "do", "-s", "972", "10.40.0.3"); err != nil {
		t.Errorf("1000-byte packets across: %v", err)
	}
	if _, err := run(a, "ping", "-c", "1", "-W", "1", "-M", "do", "-s", "973", "10.40.0.3"); err == nil {
		t.Error("a 1001-byte packet left an MTU 1000 endpoint without fragmentation")
	}
	l.must("endpoint", "del", "small", "--netns", a.Name)
	l.must("endpoint", "del", "small", "--netns", b.Name)
	if got := nsState(l.h.ns); got != hostLinks {
		t.Errorf("the host's links and routes changed:\nbefore %s\nafter  %s", hostLinks, got)
	}
}
