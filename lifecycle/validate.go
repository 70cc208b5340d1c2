package lifecycle

// The input rules for networks and endpoints, each in one place. The
// functions take plain values (specs, table entries, the parent's MAC and
// MTU, the endpoints that exist), read nothing but the outer veths' names,
// and change nothing: a refusal happens before anything is built.

import (
	"bytes"
	"fmt"
	"net"
	"regexp"
	"strconv"

	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// MTU bounds. MinMTU is the least every IPv4 host must take (RFC 791,
// "Fragmentation"); MinIPv6MTU the least IPv6 needs on every link (RFC 8200
// section 5): the kernel gives a device below it no IPv6 at all
// (addrconf_notify), so such an endpoint is IPv4-only.
const (
	MinMTU     = 68
	MinIPv6MTU = 1280
)

// MaxStormLimit is the highest storm limit, in frames per second: above the
// line rate of minimum-size frames on a 40 Gb/s link (59.5 M/s), so a
// higher value would limit nothing.
const MaxStormLimit = 100_000_000

var (
	networkNameRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,31}$`) // bpf/types.h: 31 bytes and a NUL
	ifnameRE      = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,15}$`) // IFNAMSIZ-1 (dev_valid_name)
)

// Parent is what the checks need to know of the parent NIC.
type Parent struct {
	Name string
	MAC  net.HardwareAddr
	MTU  int // bytes
}

// CheckNetworkName accepts 1-31 of A-Z a-z 0-9 _ . - (the tables keep 31
// bytes).
func CheckNetworkName(name string) error {
	if !networkNameRE.MatchString(name) {
		return fmt.Errorf("invalid network name %q (1-31 of A-Z a-z 0-9 _ . -)", name)
	}
	return nil
}

// CheckVLAN accepts an 802.1Q VID 1..4094 (IEEE 802.1Q 9.6: 0 and 4095 are
// reserved), or 0 for the untagged segment.
func CheckVLAN(vlan int) error {
	if vlan < 0 || vlan > tables.MaxVLAN {
		return fmt.Errorf("invalid VLAN %d: want 1..%d, or 0 for the untagged segment", vlan, tables.MaxVLAN)
	}
	return nil
}

// CheckMTU accepts MinMTU..the parent's MTU, in bytes.
func CheckMTU(mtu int, p Parent) error {
	if mtu < MinMTU || mtu > p.MTU {
		return fmt.Errorf("MTU %d outside %d..%d (the MTU of parent %s)", mtu, MinMTU, p.MTU, p.Name)
	}
	return nil
}

// checkIPv6MTU refuses an IPv6 prefix on a link whose MTU is below
// MinIPv6MTU.
func checkIPv6MTU(what string, prefix *net.IPNet, mtu int) error {
	if prefix != nil && prefix.IP.To4() == nil && mtu < MinIPv6MTU {
		return fmt.Errorf("%s %s is IPv6, which needs an MTU of at least %d (RFC 8200), not %d", what, prefix, MinIPv6MTU, mtu)
	}
	return nil
}

// CheckMAC accepts a 6-byte unicast, non-zero address that is not the
// parent's own (an endpoint with it would receive the host's frames and
// take the host off the LAN).
func CheckMAC(mac net.HardwareAddr, p Parent) error {
	switch {
	case len(mac) != 6:
		return fmt.Errorf("MAC %q is not a 6-byte Ethernet address", mac)
	case mac[0]&1 != 0:
		return fmt.Errorf("MAC %s is multicast; an endpoint needs a unicast address", mac)
	case bytes.Equal(mac, make(net.HardwareAddr, 6)):
		return fmt.Errorf("MAC %s is all zeros; an endpoint needs a unicast address", mac)
	case bytes.Equal(mac, p.MAC):
		return fmt.Errorf("MAC %s is the address of parent %s; an endpoint with it would take the host off the LAN", mac, p.Name)
	}
	return nil
}

// CheckSubnet accepts a prefix narrower than /0 whose host bits are zero.
func CheckSubnet(subnet *net.IPNet) error {
	if subnet == nil {
		return nil
	}
	if ones, _ := subnet.Mask.Size(); ones == 0 {
		return fmt.Errorf("subnet %s is the whole address space; give the LAN's prefix, e.g. 172.16.10.0/24", subnet)
	}
	if !subnet.IP.Equal(subnet.IP.Mask(subnet.Mask)) {
		return fmt.Errorf("subnet %s has host bits set; the subnet is %s", subnet, &net.IPNet{IP: subnet.IP.Mask(subnet.Mask), Mask: subnet.Mask})
	}
	return nil
}

// CheckStormLimit accepts 0 (no limit) or 1..MaxStormLimit frames per
// second.
func CheckStormLimit(pps uint32) error {
	if pps > MaxStormLimit {
		return fmt.Errorf("storm limit %d frames/s outside 1..%d (0 = no limit)", pps, MaxStormLimit)
	}
	return nil
}

// ParseStormLimit reads a storm limit as a user writes it (--storm-limit,
// Docker's -o storm-limit): a decimal number of frames per second, 0 = no
// limit; an empty value is refused, not read as 0. The error names the
// value and the range.
func ParseStormLimit(s string) (uint32, error) {
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil || v > MaxStormLimit {
		return 0, fmt.Errorf("invalid storm limit %q: want frames per second, 1..%d, or 0 for no limit", s, MaxStormLimit)
	}
	return uint32(v), nil
}

// CheckNetwork checks a network before it is created: name, VLAN, MTU (0:
// the parent's), subnet, gateway and storm limit.
func CheckNetwork(n tables.Network, p Parent) error {
	if err := CheckNetworkName(n.Name); err != nil {
		return err
	}
	if err := CheckStormLimit(n.StormLimit); err != nil {
		return err
	}
	if err := CheckVLAN(int(n.VLAN)); err != nil {
		return err
	}
	if n.MTU != 0 {
		if err := CheckMTU(n.MTU, p); err != nil {
			return err
		}
		if err := checkIPv6MTU("subnet", n.Subnet, n.MTU); err != nil {
			return err
		}
	}
	if err := CheckSubnet(n.Subnet); err != nil {
		return err
	}
	if n.Gateway != nil {
		if n.Subnet == nil {
			return fmt.Errorf("gateway %s needs the network's subnet", n.Gateway)
		}
		if err := checkHostAddress("gateway", n.Gateway, n.Subnet); err != nil {
			return err
		}
	}
	return nil
}

// CheckNetworkFree refuses a network whose name a network of any parent
// has, or whose VLAN on parent is a network already.
func CheckNetworkFree(n tables.Network, parent string, existing []loader.ParentNetwork) error {
	for _, other := range existing {
		if other.Name == n.Name {
			return fmt.Errorf("a network called %s exists already (on %s, %s)", n.Name, other.Parent, vlanName(other.VLAN))
		}
		if other.Parent == parent && other.VLAN == n.VLAN {
			return fmt.Errorf("%s on %s is network %s already", vlanName(n.VLAN), parent, other.Name)
		}
	}
	return nil
}

func vlanName(v uint16) string {
	if v == 0 {
		return "untagged"
	}
	return fmt.Sprintf("VLAN %d", v)
}

// checkHostAddress accepts an address inside prefix that a host may take:
// not the network address (for IPv6 the Subnet-Router anycast address, RFC
// 4291 section 2.6.1) and not the IPv4 broadcast address (RFC 919); /31
// and /32 have neither (RFC 3021), nor /127 and /128.
func checkHostAddress(what string, ip net.IP, prefix *net.IPNet) error {
	if !prefix.Contains(ip) {
		return fmt.Errorf("%s %s is outside subnet %s", what, ip, prefix)
	}
	ones, bits := prefix.Mask.Size()
	if bits-ones < 2 { // /31, /32 (RFC 3021); /127, /128 (RFC 6164)
		return nil
	}
	if ip.Equal(prefix.IP.Mask(prefix.Mask)) {
		return fmt.Errorf("%s %s is the network address of subnet %s", what, ip, prefix)
	}
	if bits == 32 {
		bcast := make(net.IP, 4)
		for i, b := range prefix.IP.To4().Mask(prefix.Mask) {
			bcast[i] = b | ^prefix.Mask[len(prefix.Mask)-4+i]
		}
		if ip.Equal(bcast) {
			return fmt.Errorf("%s %s is the broadcast address of subnet %s", what, ip, prefix)
		}
	}
	return nil
}

// CheckIfname accepts an interface name a container's end may take: 1-15
// bytes (IFNAMSIZ-1, dev_valid_name in net/core/dev.c) of A-Z a-z 0-9 _ . -.
func CheckIfname(name string) error {
	if !ifnameRE.MatchString(name) {
		return fmt.Errorf("invalid interface name %q (1-15 of A-Z a-z 0-9 _ . -)", name)
	}
	return nil
}

// CheckEndpoint checks an endpoint spec whose defaults are filled in (name
// and MTU set, MAC possibly nil = generated) against its network and the
// parent: interface name, namespace, MTU, MAC, address, gateway and storm
// limit.
func CheckEndpoint(s Spec, n tables.Network, p Parent) error {
	if err := CheckIfname(s.Name); err != nil {
		return err
	}
	if err := CheckStormLimit(s.StormLimit); err != nil {
		return err
	}
	if !s.Host && s.Netns == "" {
		return fmt.Errorf("give the container's namespace (--netns) or ask for a host endpoint (--host)")
	}
	if s.Host && s.Gateway != nil {
		return fmt.Errorf("a host endpoint never gets a default route, so it takes no gateway (%s): the host keeps its own routes", s.Gateway)
	}
	if err := CheckMTU(s.MTU, p); err != nil {
		return err
	}
	if s.MAC != nil {
		if err := CheckMAC(s.MAC, p); err != nil {
			return err
		}
	}
	if s.IP == nil {
		if s.Gateway != nil {
			return fmt.Errorf("a gateway needs an IP address (--ip)")
		}
		return nil
	}
	if err := checkIPv6MTU("address", s.IP, s.MTU); err != nil {
		return err
	}
	own := &net.IPNet{IP: s.IP.IP.Mask(s.IP.Mask), Mask: s.IP.Mask}
	if n.Subnet != nil {
		if !n.Subnet.Contains(s.IP.IP) {
			return fmt.Errorf("IP %s is outside network %s's subnet %s", s.IP.IP, n.Name, n.Subnet)
		}
		wide, _ := s.IP.Mask.Size()
		netOnes, _ := n.Subnet.Mask.Size()
		if wide < netOnes {
			return fmt.Errorf("prefix /%d of %s is wider than network %s's subnet %s", wide, s.IP, n.Name, n.Subnet)
		}
		if err := checkHostAddress("IP", s.IP.IP, n.Subnet); err != nil {
			return err
		}
	}
	if ones, bits := s.IP.Mask.Size(); bits == 0 || ones == 0 {
		return fmt.Errorf("address %s has no usable prefix length", s.IP)
	}
	if err := checkHostAddress("IP", s.IP.IP, own); err != nil {
		return err
	}
	// The gateway of the default route: the one given, else the network's.
	// A host endpoint gets none and may take the gateway's address itself.
	gw, given := s.Gateway, s.Gateway != nil
	if gw == nil && !s.Host {
		gw = n.Gateway
	}
	if gw == nil {
		return nil
	}
	whose, is := "gateway", "the gateway"
	if !given {
		whose = fmt.Sprintf("network %s's gateway", n.Name)
		is = whose
	}
	if gw.Equal(s.IP.IP) {
		return fmt.Errorf("IP %s is %s; only a host endpoint (--host) may take the gateway's address", s.IP.IP, is)
	}
	if !own.Contains(gw) {
		return fmt.Errorf("%s %s is not on %s", whose, gw, s.IP)
	}
	return checkHostAddress(whose, gw, own)
}

// CheckUnique refuses an endpoint whose MAC, address or (namespace,
// interface name) an endpoint of network n already has, naming that
// endpoint. netnsIno identifies the spec's namespace; existing is every
// endpoint of the parent.
func CheckUnique(s Spec, n tables.Network, netnsIno uint64, existing []tables.Endpoint) error {
	for _, ep := range existing {
		if ep.VLAN != n.VLAN {
			continue
		}
		switch {
		case s.MAC != nil && bytes.Equal(ep.MAC, s.MAC):
			return fmt.Errorf("MAC %s already used on network %s by %s", s.MAC, n.Name, Describe(ep))
		case s.IP != nil && ep.IP != nil && ep.IP.IP.Equal(s.IP.IP):
			return fmt.Errorf("address %s already used on network %s by %s", s.IP.IP, n.Name, Describe(ep))
		case netnsIno != 0 && ep.NetnsIno == netnsIno && ep.Ifname == s.Name:
			return fmt.Errorf("%s %s is already an endpoint on network %s (%s)", s.Name, inNS(s), n.Name, details(ep))
		}
	}
	return nil
}

// CheckNameFree refuses an interface name the namespace already has.
// kind is the existing interface's type ("" if there is none); existing
// endpoints of the parent name the holder when it is one of them.
func CheckNameFree(s Spec, kind string, netnsIno uint64, existing []tables.Endpoint) error {
	if kind == "" {
		return nil
	}
	for _, ep := range existing {
		if ep.NetnsIno == netnsIno && ep.Ifname == s.Name {
			return fmt.Errorf("%s already has an interface called %s: the endpoint on VLAN %d (%s)", nsName(s), s.Name, ep.VLAN, details(ep))
		}
	}
	return fmt.Errorf("%s already has an interface called %s (a %s, not an xmacvlan endpoint)", nsName(s), s.Name, kind)
}

// Describe names an endpoint for a message: "eth0 in netns c1 (MAC
// 02:00:00:00:00:01, outer veth xmv0a1b2c3d)" or "xmv-lan on the host (…)".
func Describe(ep tables.Endpoint) string {
	where := "in netns " + ep.Netns
	switch {
	case ep.Host:
		where = "on the host"
	case ep.Netns == "":
		where = "in an unrecorded netns"
	}
	name := ep.Ifname
	if name == "" {
		name = "an unnamed interface"
	}
	return fmt.Sprintf("%s %s (%s)", name, where, details(ep))
}

// details is an endpoint's MAC and outer veth.
func details(ep tables.Endpoint) string {
	outer := fmt.Sprintf("outer veth ifindex %d, gone", ep.Ifindex)
	if l, err := netlink.LinkByIndex(ep.Ifindex); err == nil {
		outer = "outer veth " + l.Attrs().Name
	}
	return fmt.Sprintf("MAC %s, %s", ep.MAC, outer)
}

// inNS is where the spec's inner end goes: "in netns c1" or "on the host".
func inNS(s Spec) string {
	if s.Host {
		return "on the host"
	}
	return "in netns " + s.Netns
}

// nsName is the spec's namespace: "netns c1" or "the host".
func nsName(s Spec) string {
	if s.Host {
		return "the host"
	}
	return "netns " + s.Netns
}
