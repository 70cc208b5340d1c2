package test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
)

// Every bad input to network and endpoint commands gets a clear message, a
// non-zero exit, and changes nothing: no network, no endpoint, no
// interface left in either namespace.
func TestNetworkAndEndpointBadInput(t *testing.T) {
	l := newLab(t)
	h := l.host()
	c := testutil.NewNetns(t, "xc")
	for _, args := range [][]string{
		{"attach", h.parent},
		{"network", "create", "v10", "--parent", h.parent, "--vlan", "10", "--subnet", "10.10.0.0/24"},
		{"endpoint", "add", "v10", "--netns", c.Name, "--ip", "10.10.0.5", "--mac", "02:00:00:00:10:05"},
	} {
		if out, err := h.cli(args...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	t.Cleanup(func() { h.cli("detach", "--force", h.parent) })
	other := testutil.NewNetns(t, "xc")

	state := func() string {
		nets, _ := h.cli("network", "list")
		eps, _ := h.cli("endpoint", "list")
		hl, _ := h.ns.NL.LinkList()
		cl, _ := c.NL.LinkList()
		ol, _ := other.NL.LinkList()
		return nets + eps + strings.Repeat("h", len(hl)) + strings.Repeat("c", len(cl)) + strings.Repeat("o", len(ol))
	}
	parentMAC := mustLink(t, h.ns, h.parent).Attrs().HardwareAddr
	var eps []struct{ Outer string }
	if out, err := h.cli("-o", "json", "endpoint", "list"); err != nil || json.Unmarshal([]byte(out), &eps) != nil || len(eps) != 1 {
		t.Fatalf("endpoint list: %v %s", err, out)
	}
	holder := fmt.Sprintf("eth0 in netns %s (MAC 02:00:00:00:10:05, outer veth %s)", c.Name, eps[0].Outer)

	before := state()
	cases := []struct {
		args []string
		want string // the whole message, after "xmacvlan: "
	}{
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "-1"}, "invalid VLAN -1: want 1..4094, or 0 for the untagged segment"},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "4095"}, "invalid VLAN 4095: want 1..4094, or 0 for the untagged segment"},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "ten"}, `invalid VLAN "ten": want a number in 1..4094, or 0 for the untagged segment`},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "20", "--subnet", "10.0.0.0/33"}, `invalid --subnet "10.0.0.0/33": want ADDRESS/PREFIX`},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "20", "--subnet", "0.0.0.0/0"}, "subnet 0.0.0.0/0 is the whole address space; give the LAN's prefix, e.g. 172.16.10.0/24"},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "20", "--subnet", "10.20.0.0/24", "--gateway", "10.30.0.1"}, "gateway 10.30.0.1 is outside subnet 10.20.0.0/24"},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "20", "--subnet", "10.20.0.0/24", "--gateway", "10.20.0.0"}, "gateway 10.20.0.0 is the network address of subnet 10.20.0.0/24"},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "20", "--subnet", "10.20.0.0/24", "--gateway", "10.20.0.255"}, "gateway 10.20.0.255 is the broadcast address of subnet 10.20.0.0/24"},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "20", "--gateway", "10.20.0.1"}, "gateway 10.20.0.1 needs the network's subnet"},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "20", "--gateway", "300.1.1.1"}, `invalid --gateway "300.1.1.1": not an IP address`},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "20", "--mode", "hub"}, `invalid mode "hub": want bridge, private or vepa`},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "20", "--mtu", "65000"}, "MTU 65000 outside 68..1500 (the MTU of parent ens33)"},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "20", "--mtu", "1000", "--subnet", "fd00:20::/64"}, "subnet fd00:20::/64 is IPv6, which needs an MTU of at least 1280 (RFC 8200), not 1000"},
		{[]string{"network", "create", "bad/name", "--parent", h.parent}, `invalid network name "bad/name" (1-31 of A-Z a-z 0-9 _ . -)`},
		{[]string{"network", "create", "v10", "--parent", h.parent, "--vlan", "20"}, "a network called v10 exists already (on ens33, VLAN 10)"},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "10"}, "VLAN 10 on ens33 is network v10 already"},
		{[]string{"network", "create", "x", "--parent", "eth9"}, "there is no interface called eth9 (and it is not attached)"},
		{[]string{"network", "create", "x", "--parent", "lo"}, "lo is not attached: run `xmacvlan attach lo` first"},
		{[]string{"network", "delete", "v10"}, "network v10 has 1 endpoints; delete them first or use --force"},
		{[]string{"network", "delete", "nosuch"}, `no network called "nosuch" (xmacvlan network list)`},
		{[]string{"endpoint", "add", "nosuch", "--netns", other.Name}, `no network called "nosuch" (xmacvlan network list)`},
		{[]string{"endpoint", "add", "v10", "--netns", "nosuch-ns"}, `network namespace "nosuch-ns": stat /var/run/netns/nosuch-ns: no such file or directory`},
		{[]string{"endpoint", "add", "v10"}, "give the container's namespace (--netns) or ask for a host endpoint (--host)"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--mac", "02:00:zz:00:00:01"}, `invalid --mac "02:00:zz:00:00:01": address 02:00:zz:00:00:01: invalid MAC address`},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--mac", "01:00:5e:00:00:01"}, "MAC 01:00:5e:00:00:01 is multicast; an endpoint needs a unicast address"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--mac", "00:00:00:00:00:00"}, "MAC 00:00:00:00:00:00 is all zeros; an endpoint needs a unicast address"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--mac", parentMAC.String()}, "MAC " + parentMAC.String() + " is the address of parent ens33; an endpoint with it would take the host off the LAN"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--mac", "02:00:00:00:10:05"}, "MAC 02:00:00:00:10:05 already used on network v10 by " + holder},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--ip", "10.10.0.5"}, "address 10.10.0.5 already used on network v10 by " + holder},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--ip", "10.10.0.6/40"}, `invalid --ip "10.10.0.6/40": want ADDRESS/PREFIX`},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--ip", "10.20.0.6/24"}, "IP 10.20.0.6 is outside network v10's subnet 10.10.0.0/24"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--ip", "10.10.0.6/16"}, "prefix /16 of 10.10.0.6/16 is wider than network v10's subnet 10.10.0.0/24"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--ip", "10.10.0.0"}, "IP 10.10.0.0 is the network address of subnet 10.10.0.0/24"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--ip", "10.10.0.255"}, "IP 10.10.0.255 is the broadcast address of subnet 10.10.0.0/24"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--ip", "10.10.0.6/24", "--gateway", "10.99.0.1"}, "gateway 10.99.0.1 is not on 10.10.0.6/24"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--ip", "10.10.0.6/24", "--gateway", "10.10.0.6"}, "IP 10.10.0.6 is the gateway; only a host endpoint (--host) may take the gateway's address"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--gateway", "10.10.0.1"}, "a gateway needs an IP address (--ip)"},
		{[]string{"endpoint", "add", "v10", "--host", "--ip", "10.10.0.7", "--gateway", "10.10.0.1"}, "a host endpoint never gets a default route, so it takes no gateway (10.10.0.1): the host keeps its own routes"},
		{[]string{"endpoint", "add", "v10", "--netns", c.Name}, "eth0 in netns " + c.Name + " is already an endpoint on network v10 (MAC 02:00:00:00:10:05, outer veth " + eps[0].Outer + ")"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--name", "lo"}, "netns " + other.Name + " already has an interface called lo (a device, not an xmacvlan endpoint)"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--name", "way-too-long-name0"}, `invalid interface name "way-too-long-name0" (1-15 of A-Z a-z 0-9 _ . -)`},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--mtu", "9000"}, "MTU 9000 outside 68..1500 (the MTU of parent ens33)"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--mtu", "67"}, "MTU 67 outside 68..1500 (the MTU of parent ens33)"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--delivery", "dpdk"}, `invalid --delivery "dpdk": want skb or xdp`},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--host"}, "--host and --netns exclude each other"},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "20", "--storm-limit", "-1"}, `invalid storm limit "-1": want frames per second, 1..100000000, or 0 for no limit`},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "20", "--storm-limit", "4294967296"}, `invalid storm limit "4294967296": want frames per second, 1..100000000, or 0 for no limit`},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--storm-limit", "fast"}, `invalid storm limit "fast": want frames per second, 1..100000000, or 0 for no limit`},
		{[]string{"network", "set", "v10", "--storm-limit", "100000001"}, `invalid storm limit "100000001": want frames per second, 1..100000000, or 0 for no limit`},
		{[]string{"network", "set", "v10"}, "nothing to set: give --storm-limit"},
		{[]string{"network", "set", "nosuch", "--storm-limit", "10"}, `no network called "nosuch" (xmacvlan network list)`},
		{[]string{"endpoint", "set", "v10", "--netns", other.Name, "--storm-limit", "10"}, "no such endpoint on network v10"},
		{[]string{"endpoint", "set", "v10", "--netns", c.Name}, "nothing to set: give --storm-limit"},
		{[]string{"endpoint", "set", "v10", "--netns", c.Name, "--storm-limit", ""}, `invalid storm limit "": want frames per second, 1..100000000, or 0 for no limit`},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--storm-limit", ""}, `invalid storm limit "": want frames per second, 1..100000000, or 0 for no limit`},
		{[]string{"endpoint", "set", "v10", "--netns", c.Name, "--host", "--storm-limit", "10"}, "--host and --netns exclude each other"},
		{[]string{"endpoint", "del", "v10", "--netns", c.Name, "--host"}, "--host and --netns exclude each other"},
		{[]string{"endpoint", "check", "v10", "--netns", c.Name, "--host"}, "--host and --netns exclude each other"},
		{[]string{"attach", h.parent, "--xdp", ""}, `invalid --xdp "": want auto, on or off`},
	}
	for _, tc := range cases {
		out, err := h.cli(tc.args...)
		if got := strings.TrimSpace(out); err == nil || got != "xmacvlan: "+tc.want {
			t.Errorf("xmacvlan %s:\n  exit %v, output %q\n  want a failure saying %q", strings.Join(tc.args, " "), err, got, "xmacvlan: "+tc.want)
		}
		if after := state(); after != before {
			t.Fatalf("xmacvlan %s changed state:\nbefore %s\nafter  %s", strings.Join(tc.args, " "), before, after)
		}
	}

	// Storm limits change live, in the record and the tables alike.
	for _, args := range [][]string{
		{"network", "set", "v10", "--storm-limit", "300"},
		{"endpoint", "set", "v10", "--netns", c.Name, "--storm-limit", "50"},
		{"endpoint", "check", "v10", "--netns", c.Name},
	} {
		if out, err := h.cli(args...); err != nil {
			t.Fatalf("xmacvlan %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	var nets []struct {
		StormLimit uint32 `json:"storm_limit"`
	}
	if out, err := h.cli("-o", "json", "network", "list"); err != nil || json.Unmarshal([]byte(out), &nets) != nil || len(nets) != 1 || nets[0].StormLimit != 300 {
		t.Errorf("network list after network set --storm-limit 300: %v %s", err, out)
	}
	var limited []struct {
		StormLimit uint32 `json:"storm_limit"`
	}
	if out, err := h.cli("-o", "json", "endpoint", "list"); err != nil || json.Unmarshal([]byte(out), &limited) != nil || len(limited) != 1 || limited[0].StormLimit != 50 {
		t.Errorf("endpoint list after endpoint set --storm-limit 50: %v %s", err, out)
	}

	// Deleting twice: the second time there is nothing to do, and says so.
	if out, err := h.cli("endpoint", "del", "v10", "--netns", c.Name); err != nil || !strings.Contains(out, "deleted") {
		t.Errorf("endpoint del: %v %s", err, out)
	}
	if out, err := h.cli("endpoint", "del", "v10", "--netns", c.Name); err != nil || !strings.Contains(out, "nothing to delete") {
		t.Errorf("second endpoint del: %v %s", err, out)
	}
	if _, err := c.NL.LinkByName("eth0"); err == nil {
		t.Error("endpoint del left the container's eth0")
	}
}
