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

var knownOptions = []string{"parent", "vlan", "mode", "hairpin", "delivery"}

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
	if len(req.IPv6Data) > 0 {
		return n, fmt.Errorf("IPv6 (--ipv6) is not supported: an xmacvlan endpoint has one address")
	}
	if len(req.IPv4Data) == 0 || req.IPv4Data[0].Pool == "" {
		return n, fmt.Errorf("a subnet is needed (--subnet)")
	}
	if len(req.IPv4Data) > 1 {
		return n, fmt.Errorf("one subnet per network: got %d", len(req.IPv4Data))
	}
	if _, _, err := net.ParseCIDR(req.IPv4Data[0].Pool); err != nil {
		return n, fmt.Errorf("subnet %q: %v", req.IPv4Data[0].Pool, err)
	}
	n.Subnet = req.IPv4Data[0].Pool
	if gw := req.IPv4Data[0].Gateway; gw != "" {
		ip, _, err := net.ParseCIDR(gw)
		if err != nil {
			return n, fmt.Errorf("gateway %q: %v", gw, err)
		}
		n.Gateway = ip.String()
	}
	return n, nil
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
