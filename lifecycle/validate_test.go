package lifecycle

import (
	"net"
	"testing"

	"github.com/xmacvlan/xmacvlan/tables"
)

func cidr(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return &net.IPNet{IP: ip, Mask: n.Mask}
}

func subnet(s string) *net.IPNet {
	_, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return n
}

// Each rule, at and past its edges; "" means accepted.
func TestCheckEndpoint(t *testing.T) {
	p := Parent{Name: "ens33", MAC: net.HardwareAddr{0x52, 0x54, 0, 0, 0, 1}, MTU: 1500}
	lan := tables.Network{Name: "lan", Subnet: subnet("10.0.0.0/24"), Gateway: net.ParseIP("10.0.0.1").To4()}
	v6 := tables.Network{Name: "v6", VLAN: 6, Subnet: subnet("fd00::/64"), Gateway: net.ParseIP("fd00::1")}
	p2p := tables.Network{Name: "p2p", Subnet: subnet("10.9.0.0/31")}
	c := func(mod func(*Spec)) Spec {
		s := Spec{Netns: "c1", Name: "eth0", MTU: 1500, IP: cidr("10.0.0.5/24")}
		mod(&s)
		return s
	}
	for _, tc := range []struct {
		s    Spec
		n    tables.Network
		want string
	}{
		{c(func(s *Spec) {}), lan, ""},
		{c(func(s *Spec) { s.StormLimit = 1 }), lan, ""},
		{c(func(s *Spec) { s.StormLimit = MaxStormLimit }), lan, ""},
		{c(func(s *Spec) { s.StormLimit = MaxStormLimit + 1 }), lan, "storm limit 100000001 frames/s outside 1..100000000 (0 = no limit)"},
		{c(func(s *Spec) { s.MTU = 68 }), lan, ""},
		{c(func(s *Spec) { s.MTU = 67 }), lan, "MTU 67 outside 68..1500 (the MTU of parent ens33)"},
		{c(func(s *Spec) { s.MTU = 1501 }), lan, "MTU 1501 outside 68..1500 (the MTU of parent ens33)"},
		{c(func(s *Spec) { s.IP = cidr("fd00::5/64"); s.MTU = 1280 }), v6, ""},
		{c(func(s *Spec) { s.IP = cidr("fd00::5/64"); s.MTU = 1279 }), v6, "address fd00::5/64 is IPv6, which needs an MTU of at least 1280 (RFC 8200), not 1279"},
		{c(func(s *Spec) { s.MAC = p.MAC }), lan, "MAC 52:54:00:00:00:01 is the address of parent ens33; an endpoint with it would take the host off the LAN"},
		{c(func(s *Spec) { s.MAC = net.HardwareAddr{0xff, 0xff, 0xff, 0xff, 0xff, 0xff} }), lan, "MAC ff:ff:ff:ff:ff:ff is multicast; an endpoint needs a unicast address"},
		{c(func(s *Spec) { s.IP = cidr("10.0.0.254/24") }), lan, ""},
		{c(func(s *Spec) { s.IP = cidr("10.0.0.255/24") }), lan, "IP 10.0.0.255 is the broadcast address of subnet 10.0.0.0/24"},
		{c(func(s *Spec) { s.IP = cidr("10.0.0.0/24") }), lan, "IP 10.0.0.0 is the network address of subnet 10.0.0.0/24"},
		{c(func(s *Spec) { s.IP = cidr("10.0.0.127/25") }), lan, "IP 10.0.0.127 is the broadcast address of subnet 10.0.0.0/25"},
		{c(func(s *Spec) { s.IP = cidr("10.0.0.5/23") }), lan, "prefix /23 of 10.0.0.5/23 is wider than network lan's subnet 10.0.0.0/24"},
		{c(func(s *Spec) { s.IP = cidr("10.0.0.200/25") }), lan, "network lan's gateway 10.0.0.1 is not on 10.0.0.200/25"},
		{c(func(s *Spec) { s.IP = cidr("10.0.0.1/24") }), lan, "IP 10.0.0.1 is network lan's gateway; only a host endpoint (--host) may take the gateway's address"},
		{c(func(s *Spec) { s.IP = cidr("10.0.0.1/24"); s.Host = true; s.Netns = "" }), lan, ""},
		{c(func(s *Spec) { s.Gateway = net.ParseIP("fd00::1") }), lan, "gateway fd00::1 is not on 10.0.0.5/24"},
		{c(func(s *Spec) { s.IP = cidr("10.9.0.0/31") }), p2p, ""}, // RFC 3021
		{c(func(s *Spec) { s.IP = cidr("10.9.0.1/31") }), p2p, ""},
		{c(func(s *Spec) { s.IP = cidr("10.1.0.5/0") }), tables.Network{Name: "open"}, "address 10.1.0.5/0 has no usable prefix length"},
		{c(func(s *Spec) { s.Name = "0123456789abcdef" }), lan, `invalid interface name "0123456789abcdef" (1-15 of A-Z a-z 0-9 _ . -)`},
	} {
		err := CheckEndpoint(tc.s, tc.n, p)
		if got := errString(err); got != tc.want {
			t.Errorf("%+v on %s:\n  got  %q\n  want %q", tc.s, tc.n.Name, got, tc.want)
		}
	}
}

func TestCheckNetwork(t *testing.T) {
	p := Parent{Name: "ens33", MTU: 9000}
	for _, tc := range []struct {
		n    tables.Network
		want string
	}{
		{tables.Network{Name: "a", VLAN: 4094, MTU: 68, Subnet: subnet("10.0.0.0/8")}, ""},
		{tables.Network{Name: "a", VLAN: 4095}, "invalid VLAN 4095: want 1..4094, or 0 for the untagged segment"},
		{tables.Network{Name: "a", StormLimit: 1000}, ""},
		{tables.Network{Name: "a", StormLimit: 4294967295}, "storm limit 4294967295 frames/s outside 1..100000000 (0 = no limit)"},
		{tables.Network{Name: "a", MTU: 1279, Subnet: subnet("fd00::/64")}, "subnet fd00::/64 is IPv6, which needs an MTU of at least 1280 (RFC 8200), not 1279"},
		{tables.Network{Name: "a", Subnet: &net.IPNet{IP: net.IPv4(10, 0, 0, 1).To4(), Mask: net.CIDRMask(24, 32)}}, "subnet 10.0.0.1/24 has host bits set; the subnet is 10.0.0.0/24"},
		{tables.Network{Name: "a", Subnet: subnet("fd00::/64"), Gateway: net.ParseIP("fd00::")}, "gateway fd00:: is the network address of subnet fd00::/64"},
		{tables.Network{Name: "a", Subnet: subnet("10.0.0.0/24"), Gateway: net.ParseIP("fd00::1")}, "gateway fd00::1 is outside subnet 10.0.0.0/24"},
		{tables.Network{Name: "0123456789012345678901234567890123"}, `invalid network name "0123456789012345678901234567890123" (1-31 of A-Z a-z 0-9 _ . -)`},
	} {
		if got := errString(CheckNetwork(tc.n, p)); got != tc.want {
			t.Errorf("%+v:\n  got  %q\n  want %q", tc.n, got, tc.want)
		}
	}
}

func TestParseStormLimit(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint32
		err  string
	}{
		{"", 0, `invalid storm limit "": want frames per second, 1..100000000, or 0 for no limit`},
		{"0", 0, ""},
		{"1", 1, ""},
		{"100000000", MaxStormLimit, ""},
		{"100000001", 0, `invalid storm limit "100000001": want frames per second, 1..100000000, or 0 for no limit`},
		{"-5", 0, `invalid storm limit "-5": want frames per second, 1..100000000, or 0 for no limit`},
		{"1k", 0, `invalid storm limit "1k": want frames per second, 1..100000000, or 0 for no limit`},
	} {
		got, err := ParseStormLimit(tc.in)
		if got != tc.want || errString(err) != tc.err {
			t.Errorf("%q: got %d %q, want %d %q", tc.in, got, errString(err), tc.want, tc.err)
		}
	}
}

// An existing default route decides: the network's gateway is then
// skipped, an explicit one refused; a host endpoint gets none.
func TestDefaultGateway(t *testing.T) {
	lan := tables.Network{Name: "lan", Subnet: subnet("10.0.0.0/24"), Gateway: net.ParseIP("10.0.0.1").To4()}
	s := Spec{Netns: "c1", IP: cidr("10.0.0.5/24")}
	if gw, err := DefaultGateway(s, lan, ""); err != nil || !gw.Equal(lan.Gateway) {
		t.Errorf("first network: %v %v", gw, err)
	}
	if gw, err := DefaultGateway(s, lan, "default via 10.9.0.1 dev eth0 proto static"); err != nil || gw != nil {
		t.Errorf("later network: %v %v", gw, err)
	}
	s.Gateway = net.ParseIP("10.0.0.2").To4()
	_, err := DefaultGateway(s, lan, "default via 10.9.0.1 dev eth0 proto static")
	if want := "netns c1 already has a default route (default via 10.9.0.1 dev eth0 proto static); --gateway 10.0.0.2 would be a second one: drop --gateway, or delete that route first"; errString(err) != want {
		t.Errorf("explicit gateway over a default route: %v", err)
	}
	if gw, err := DefaultGateway(Spec{Host: true, IP: cidr("10.0.0.1/24")}, lan, ""); err != nil || gw != nil {
		t.Errorf("host endpoint: %v %v", gw, err)
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
