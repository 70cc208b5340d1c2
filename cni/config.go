// Package cni is xmacvlan's CNI plugin (CNI spec 1.1.0, also serving
// 1.0.0 and 0.4.0): ADD, DEL, CHECK, STATUS and GC on top of lifecycle,
// the same code path as the CLI. Addresses come from the IPAM plugin the
// network config names.
package cni

import (
	"encoding/json"
	"fmt"
	"net"
	"regexp"

	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/xmacvlan/xmacvlan/internal/state"
	"github.com/xmacvlan/xmacvlan/lifecycle"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// DefaultStateDir holds the attachment records (container ID + ifname ->
// endpoint), next to the reference IPAM plugins' own state.
const DefaultStateDir = "/var/lib/cni/xmacvlan"

// NetConf is the plugin's network config: the CNI fields plus
//
//	parent    attached (or to attach) parent interface, required
//	vlan      802.1Q VLAN 1..4094; 0 or absent: the untagged segment
//	mode      bridge (default), private or vepa
//	mtu       endpoints' MTU; 0: the parent's
//	hairpin   host <-> container traffic on the untagged segment; only
//	          used when ADD attaches the parent; an attached parent that
//	          differs is refused, never changed
//	delivery  skb (default) or xdp (native XDP redirect into the veth)
//	stormLimit  broadcast/multicast frames per second the container may
//	          send (its endpoint's storm limit); 0 or absent: no limit
//	bpffs     state root; default /sys/fs/bpf/xmacvlan
//	stateDir  attachment records; default /var/lib/cni/xmacvlan
//
// and runtimeConfig.mac (the "mac" capability).
type NetConf struct {
	types.NetConf
	Parent   string `json:"parent"`
	VLAN     int    `json:"vlan"`
	Mode     string `json:"mode"`
	MTU      int    `json:"mtu"`
	Hairpin  *bool  `json:"hairpin"`
	Delivery string `json:"delivery"`
	// A wider type than the limit's, so that -1 or 2^32 get our error.
	StormLimit int64  `json:"stormLimit"`
	BPFFS      string `json:"bpffs"`
	StateDir   string `json:"stateDir"`

	RuntimeConfig struct {
		MAC string `json:"mac"`
	} `json:"runtimeConfig"`

	mode tables.Mode
}

// containerIDRE is the CNI spec's rule for CNI_CONTAINERID (SPEC.md,
// "Parameters"): it names a directory of the state dir.
var containerIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// parseConf decodes and checks a network config. Errors are CNI errors
// with code 7 (invalid network config) or 1 (incompatible version).
func parseConf(stdin []byte) (*NetConf, error) {
	c := &NetConf{}
	if err := json.Unmarshal(stdin, c); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "cannot decode the network config", err.Error())
	}
	if err := version.ParsePrevResult(&c.NetConf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, "cannot decode prevResult", err.Error())
	}
	bad := func(format string, a ...any) error {
		return types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(format, a...), "")
	}
	// The CNI network name is the xmacvlan network's.
	if err := lifecycle.CheckNetworkName(c.Name); err != nil {
		return nil, bad("%v", err)
	}
	if c.Parent == "" {
		return nil, bad(`"parent" is required: the interface the network lives on`)
	}
	if err := state.CheckParentName(c.Parent); err != nil {
		return nil, bad("parent: %v", err)
	}
	if err := lifecycle.CheckVLAN(c.VLAN); err != nil {
		return nil, bad("vlan: %v", err)
	}
	if c.Mode == "" {
		c.Mode = "bridge"
	}
	m, err := tables.ParseMode(c.Mode)
	if err != nil {
		return nil, bad("mode %q: want bridge, private or vepa", c.Mode)
	}
	c.mode = m
	if c.MTU < 0 {
		return nil, bad("mtu %d is negative", c.MTU)
	}
	switch c.Delivery {
	case "":
		c.Delivery = "skb"
	case "skb", "xdp":
	default:
		return nil, bad("delivery %q: want skb or xdp", c.Delivery)
	}
	if c.StormLimit < 0 || c.StormLimit > lifecycle.MaxStormLimit {
		return nil, bad("stormLimit %d: want frames per second, 1..%d, or 0 for no limit", c.StormLimit, lifecycle.MaxStormLimit)
	}
	if c.BPFFS == "" {
		c.BPFFS = loader.DefaultRoot
	}
	if c.StateDir == "" {
		c.StateDir = DefaultStateDir
	}
	if c.RuntimeConfig.MAC != "" {
		if _, err := parseMAC(c.RuntimeConfig.MAC); err != nil {
			return nil, bad("runtimeConfig.mac: %v", err)
		}
	}
	return c, nil
}

// cniArgs are the CNI_ARGS keys the plugin reads; others are ignored (the
// runtimes send IgnoreUnknown=1, and IP= is the IPAM plugin's).
type cniArgs struct {
	types.CommonArgs
	MAC types.UnmarshallableString
}

// endpointMAC is the MAC the runtime asks for: CNI_ARGS MAC= first, then
// runtimeConfig.mac; nil for a generated one. A bad CNI_ARGS is a CNI
// error with code 4 (invalid environment variables).
func endpointMAC(c *NetConf, args string) (net.HardwareAddr, error) {
	a := cniArgs{}
	a.IgnoreUnknown = true
	if err := types.LoadArgs(args, &a); err != nil {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, "cannot parse CNI_ARGS", err.Error())
	}
	if s := string(a.MAC); s != "" {
		mac, err := parseMAC(s)
		if err != nil {
			return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_ARGS MAC=%s: %v", s, err), "")
		}
		return mac, nil
	}
	if c.RuntimeConfig.MAC != "" {
		return parseMAC(c.RuntimeConfig.MAC)
	}
	return nil, nil
}

// parseMAC accepts a unicast 6-byte Ethernet address (lifecycle.CheckMAC;
// the endpoint add checks it against the parent too).
func parseMAC(s string) (net.HardwareAddr, error) {
	mac, err := net.ParseMAC(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a MAC address", s)
	}
	if err := lifecycle.CheckMAC(mac, lifecycle.Parent{}); err != nil {
		return nil, err
	}
	return mac, nil
}
