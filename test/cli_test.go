package test

import (
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
	before := state()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "0"}, "invalid VLAN 0"},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "4095"}, "invalid VLAN 4095"},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "ten"}, `invalid VLAN "ten"`},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "20", "--subnet", "10.0.0.0/33"}, "invalid --subnet"},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "20", "--subnet", "10.20.0.0/24", "--gateway", "10.30.0.1"}, "not inside --subnet"},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "20", "--gateway", "300.1.1.1"}, "invalid --gateway"},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "20", "--mode", "hub"}, "invalid mode"},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "20", "--mtu", "65000"}, "MTU 65000"},
		{[]string{"network", "create", "bad/name", "--parent", h.parent}, "invalid network name"},
		{[]string{"network", "create", "v10", "--parent", h.parent, "--vlan", "20"}, "exists already"},
		{[]string{"network", "create", "x", "--parent", h.parent, "--vlan", "10"}, "is network v10 already"},
		{[]string{"network", "create", "x", "--parent", "eth9"}, "eth9 is not attached"},
		{[]string{"network", "delete", "v10"}, "has 1 endpoints"},
		{[]string{"network", "delete", "nosuch"}, "no network called"},
		{[]string{"endpoint", "add", "nosuch", "--netns", other.Name}, "no network called"},
		{[]string{"endpoint", "add", "v10", "--netns", "nosuch-ns"}, `network namespace "nosuch-ns"`},
		{[]string{"endpoint", "add", "v10"}, "--netns"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--mac", "02:00:zz:00:00:01"}, "invalid --mac"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--mac", "01:00:5e:00:00:01"}, "multicast"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--mac", "02:00:00:00:10:05"}, "already used on network v10"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--ip", "10.10.0.6/40"}, "invalid --ip"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--ip", "10.20.0.6/24"}, "outside network v10's subnet"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--ip", "10.10.0.6/24", "--gateway", "10.99.0.1"}, "not on 10.10.0.6/24"},
		{[]string{"endpoint", "add", "v10", "--netns", c.Name}, "already has an interface called eth0"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--name", "way-too-long-name0"}, "invalid interface name"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--mtu", "9000"}, "MTU 9000 outside"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--delivery", "dpdk"}, "invalid --delivery"},
		{[]string{"endpoint", "add", "v10", "--netns", other.Name, "--host"}, "exclude each other"},
	}
	for _, tc := range cases {
		out, err := h.cli(tc.args...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("xmacvlan %s:\n  exit %v, output %q\n  want a failure saying %q", strings.Join(tc.args, " "), err, strings.TrimSpace(out), tc.want)
		}
		if after := state(); after != before {
			t.Fatalf("xmacvlan %s changed state:\nbefore %s\nafter  %s", strings.Join(tc.args, " "), before, after)
		}
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
