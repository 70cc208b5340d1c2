package docker

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	"github.com/docker/go-plugins-helpers/network"
	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/lifecycle"
	"github.com/xmacvlan/xmacvlan/tables"
)

// genericOptions is where Docker puts the `-o key=value` options of
// `docker network create`.
const genericOptions = "com.docker.network.generic"

var knownOptions = []string{"parent", "vlan", "mode", "hairpin", "delivery", "storm-limit"}

// parseNetwork checks a CreateNetwork request and returns the network it
// asks for. Every error names the option and what it accepts: Docker shows
// it to the user as the reason `docker network create` failed.
func parseNetwork(req *network.CreateNetworkRequest) (Network, error) {
	n := Network{Name: networkName(req.NetworkID), Mode: "bridge", Delivery: "skb"}
	opts := map[string]string{}
	if g, ok := req.Options[genericOptions].(map[string]any); ok {
		for k, v := range g {
			s, ok := v.(string)
			if !ok {
				return n, fmt.Errorf("option %s: want a string, got %v", k, v)
			}
			opts[k] = s
		}
	}
	var unknown []string
	for k := range opts {
		if !contains(knownOptions, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return n, fmt.Errorf("unknown option %s (xmacvlan knows -o %s)", strings.Join(unknown, ", "), strings.Join(knownOptions, ", -o "))
	}
	n.Parent = opts["parent"]
	if n.Parent == "" {
		return n, fmt.Errorf("-o parent=NIC is required: the interface the network's containers share")
	}
	if _, err := netlink.LinkByName(n.Parent); err != nil {
		return n, fmt.Errorf("-o parent=%s: no such interface", n.Parent)
	}
	if v, ok := opts["vlan"]; ok {
		id, err := strconv.Atoi(v)
		if err != nil {
			return n, fmt.Errorf("-o vlan=%s: want a VLAN ID 1-%d (0 or none: the untagged segment)", v, tables.MaxVLAN)
		}
		if err := lifecycle.CheckVLAN(id); err != nil {
			return n, fmt.Errorf("-o vlan=%s: %v", v, err)
		}
		n.VLAN = uint16(id)
	}
	if v, ok := opts["mode"]; ok {
		if _, err := tables.ParseMode(v); err != nil {
			return n, fmt.Errorf("-o mode=%s: want bridge, private or vepa", v)
		}
		n.Mode = v
	}
	if v, ok := opts["hairpin"]; ok {
		switch v {
		case "on", "true":
			n.Hairpin = true
		case "off", "false":
		default:
			return n, fmt.Errorf("-o hairpin=%s: want on or off", v)
		}
	}
	if v, ok := opts["delivery"]; ok {
		if v != "skb" && v != "xdp" {
			return n, fmt.Errorf("-o delivery=%s: want skb or xdp", v)
		}
		n.Delivery = v
	}
	if v, ok := opts["storm-limit"]; ok {
		pps, err := lifecycle.ParseStormLimit(v)
		if err != nil {
			return n, fmt.Errorf("-o storm-limit=%s: want frames per second each container may flood, 1..%d, or 0 for no limit", v, lifecycle.MaxStormLimit)
		}
		n.StormLimit = pps
	}
	if len(req.IPv4Data) > 1 || len(req.IPv6Data) > 1 {
		return n, fmt.Errorf("one subnet per address family and network: got %d IPv4 and %d IPv6", len(req.IPv4Data), len(req.IPv6Data))
	}
	v4, err := ipamSubnet(req.IPv4Data)
	if err != nil {
		return n, err
	}
	v6, err := ipamSubnet(req.IPv6Data)
	if err != nil {
		return n, err
	}
	// The xmacvlan network knows one subnet, the IPv4 one (the IPv6 one on
	// an IPv6-only network); Docker configures the other family itself.
	switch {
	case v4 != nil:
		n.Subnet, n.Gateway = v4.pool, v4.gateway
		if v6 != nil {
			n.Subnet6, n.Gateway6 = v6.pool, v6.gateway
		}
	case v6 != nil:
		n.Subnet, n.Gateway = v6.pool, v6.gateway
	default:
		return n, fmt.Errorf("a subnet is needed (--subnet)")
	}
	return n, nil
}

type subnet struct{ pool, gateway string }

// ipamSubnet is the subnet of data (one of Docker's IPAM data lists) and
// its gateway's address; nil if data has none.
func ipamSubnet(data []*network.IPAMData) (*subnet, error) {
	if len(data) == 0 || data[0].Pool == "" {
		return nil, nil
	}
	if _, _, err := net.ParseCIDR(data[0].Pool); err != nil {
		return nil, fmt.Errorf("subnet %q: %v", data[0].Pool, err)
	}
	s := &subnet{pool: data[0].Pool}
	if gw := data[0].Gateway; gw != "" {
		ip, _, err := net.ParseCIDR(gw)
		if err != nil {
			return nil, fmt.Errorf("gateway %q: %v", gw, err)
		}
		s.gateway = ip.String()
	}
	return s, nil
}

// networkName is the xmacvlan network made for Docker network id.
func networkName(id string) string { return "docker-" + short(id) }

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
