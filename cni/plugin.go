package cni

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
	"github.com/containernetworking/plugins/pkg/ipam"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/lifecycle"
	"github.com/xmacvlan/xmacvlan/loader"
)

// Versions are the CNI spec versions the plugin serves: podman 4.3 and
// containerd 1.6 speak 1.0.0 at most, Multus and older runtimes 0.4.0.
var Versions = version.PluginSupports("0.4.0", "1.0.0", "1.1.0")

// Funcs are the plugin's commands, for skel.PluginMainFuncs.
func Funcs() skel.CNIFuncs {
	return skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, Status: cmdStatus, GC: cmdGC}
}

// ErrEndpointDiffers is the CNI error code CHECK returns when the
// endpoint differs from what ADD made (codes from 100 are the plugin's,
// CNI spec "Error").
const ErrEndpointDiffers = 100

func cmdAdd(args *skel.CmdArgs) (err error) {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if !containerIDRE.MatchString(args.ContainerID) {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_CONTAINERID %q: want A-Z a-z 0-9 _ . -", args.ContainerID), "")
	}
	if err := lifecycle.CheckIfname(args.IfName); err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_IFNAME: %v", err), "")
	}
	if args.Netns == "" {
		return types.NewError(types.ErrInvalidEnvironmentVariables, "ADD needs CNI_NETNS", "")
	}
	if target, err := ns.GetNS(args.Netns); err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_NETNS %s: %v", args.Netns, err), "")
	} else {
		target.Close()
	}
	mac, err := endpointMAC(c, args.Args)
	if err != nil {
		return err
	}
	root, err := lifecycle.Open(c.BPFFS)
	if err != nil {
		return err
	}
	// What this ADD attached or created is undone if it fails; what was
	// there before is never touched.
	attached, err := ensureParent(c)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil && attached {
			root.DetachParent(c.Parent, false) // refuses once another ADD has endpoints
		}
	}()
	created, err := ensureNetwork(root, c)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil && created {
			root.DeleteNetwork(c.Name, false) // refuses once another ADD has endpoints
		}
	}()

	st := openStore(c)
	// A second ADD of an attachment must not touch the first: its rollback
	// would release the first one's addresses and record.
	if _, found, err := st.get(args.ContainerID, args.IfName); err != nil {
		return err
	} else if found {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf(
			"container %s already has %s on network %s; DEL it first", args.ContainerID, args.IfName, c.Name), "")
	}

	result := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if c.IPAM.Type != "" {
		var r types.Result
		if r, err = ipam.ExecAdd(c.IPAM.Type, args.StdinData); err != nil {
			return err
		}
		defer func() {
			if err != nil {
				ipam.ExecDel(c.IPAM.Type, args.StdinData)
			}
		}()
		if result, err = current.NewResultFromResult(r); err != nil {
			return err
		}
		if len(result.IPs) == 0 {
			return fmt.Errorf("IPAM plugin %s returned no address", c.IPAM.Type)
		}
	}

	att := attachment{ContainerID: args.ContainerID, Ifname: args.IfName, Netns: args.Netns}
	// Written first: a DEL after a crash from here on finds the namespace.
	if err := st.put(att); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			st.remove(att.ContainerID, att.Ifname)
		}
	}()

	spec := lifecycle.Spec{Netns: args.Netns, Name: args.IfName, MAC: mac, MTU: c.MTU, XDP: c.Delivery == "xdp",
		StormLimit: uint32(c.StormLimit)}
	primary, gateway := pickPrimary(result)
	if primary != nil {
		spec.IP, spec.Gateway = &primary.Address, gateway
	}
	ep, err := root.AddEndpoint(c.Name, spec)
	if err != nil {
		return err
	}
	sel := lifecycle.Selector{Netns: args.Netns, Name: args.IfName}
	defer func() {
		if err != nil {
			root.DeleteEndpoint(c.Name, sel)
		}
	}()
	if err := configureRest(args.Netns, args.IfName, ep.MAC, result, primary, gateway); err != nil {
		return err
	}
	att.MAC, att.Outer = ep.MAC.String(), ep.Outer
	if err := st.put(att); err != nil {
		return err
	}

	result.Interfaces = []*current.Interface{{Name: args.IfName, Mac: ep.MAC.String(), Mtu: ep.MTU, Sandbox: args.Netns}}
	for _, ip := range result.IPs {
		ip.Interface = current.Int(0)
	}
	if len(c.DNS.Nameservers) > 0 || len(c.DNS.Search) > 0 {
		result.DNS = c.DNS
	}
	return types.PrintResult(result, c.CNIVersion)
}

// pickPrimary chooses the address the endpoint's record holds (the record
// has room for one): the first IPv4 address, else the first one. gateway
// is the default route's for that family when it is on the address's
// subnet; lifecycle installs that route, configureRest the others.
func pickPrimary(r *current.Result) (primary *current.IPConfig, gateway net.IP) {
	for _, ip := range r.IPs {
		if ip.Address.IP.To4() != nil {
			primary = ip
			break
		}
	}
	if primary == nil && len(r.IPs) > 0 {
		primary = r.IPs[0]
	}
	if primary == nil {
		return nil, nil
	}
	for _, rt := range r.Routes {
		if !isDefaultFor(rt, primary) {
			continue
		}
		gw := rt.GW
		if gw == nil {
			gw = primary.Gateway
		}
		if gw != nil && primary.Address.Contains(gw) && !gw.Equal(primary.Address.IP) {
			return primary, gw
		}
	}
	return primary, nil
}

func isDefaultFor(rt *types.Route, ip *current.IPConfig) bool {
	ones, _ := rt.Dst.Mask.Size()
	return ones == 0 && (rt.Dst.IP.To4() != nil) == (ip.Address.IP.To4() != nil)
}

// configureRest adds, in the container, the addresses and routes of the
// IPAM result that lifecycle did not (all but the primary address and its
// default route), and announces each new address.
func configureRest(netnsPath, ifname string, mac net.HardwareAddr, r *current.Result, primary *current.IPConfig, gateway net.IP) error {
	var added []net.IP
	err := ns.WithNetNSPath(netnsPath, func(ns.NetNS) error {
		link, err := netlink.LinkByName(ifname)
		if err != nil {
			return err
		}
		for _, ip := range r.IPs {
			if ip == primary {
				continue
			}
			a := &netlink.Addr{IPNet: &ip.Address}
			if ip.Address.IP.To4() == nil {
				a.Flags = unix.IFA_F_NODAD // usable, and announced, at once
			}
			if err := netlink.AddrAdd(link, a); err != nil {
				return fmt.Errorf("address %s on %s: %w", ip.Address.String(), ifname, err)
			}
			added = append(added, ip.Address.IP)
		}
		for _, rt := range r.Routes {
			if primary != nil && gateway != nil && isDefaultFor(rt, primary) {
				continue // lifecycle's
			}
			gw := rt.GW
			if gw == nil {
				gw = gatewayFor(r, rt.Dst.IP)
			}
			route := &netlink.Route{LinkIndex: link.Attrs().Index, Dst: &rt.Dst, Gw: gw, MTU: rt.MTU, AdvMSS: rt.AdvMSS, Priority: rt.Priority}
			if rt.Table != nil {
				route.Table = *rt.Table
			}
			if rt.Scope != nil {
				route.Scope = netlink.Scope(*rt.Scope)
			}
			if err := netlink.RouteAdd(route); err != nil && !errors.Is(err, unix.EEXIST) {
				return fmt.Errorf("route %s via %v on %s: %w", rt.Dst.String(), gw, ifname, err)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, ip := range added {
		lifecycle.Announce(netnsPath, ifname, mac, ip) // best effort, as lifecycle's own
	}
	return nil
}

// gatewayFor is the gateway of the result's first address of dst's family.
func gatewayFor(r *current.Result, dst net.IP) net.IP {
	for _, ip := range r.IPs {
		if (ip.Address.IP.To4() != nil) == (dst.To4() != nil) && ip.Gateway != nil {
			return ip.Gateway
		}
	}
	return nil
}

// ensureParent attaches the datapath to the parent unless it is attached.
// An attached parent is never changed: a hairpin setting that differs
// from the config is refused.
func ensureParent(c *NetConf) (attached bool, err error) {
	h, err := loader.Open(c.BPFFS, c.Parent)
	if errors.Is(err, loader.ErrNotAttached) {
		res, err := loader.Attach(loader.AttachOptions{Root: c.BPFFS, Parent: c.Parent, Hairpin: c.Hairpin})
		if err != nil {
			return false, fmt.Errorf("attach %s: %w", c.Parent, err)
		}
		return res.New, nil // a concurrent ADD may have attached it first
	}
	if err != nil {
		return false, err
	}
	defer h.Close()
	if c.Hairpin != nil {
		s, err := h.Tables.Settings()
		if err != nil {
			return false, err
		}
		if s.Hairpin != *c.Hairpin {
			return false, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(
				"parent %s is attached with hairpin %s but the config says %s; the plugin does not change an attached parent (`xmacvlan attach %s --hairpin=%t` does)",
				c.Parent, onOff(s.Hairpin), onOff(*c.Hairpin), c.Parent, *c.Hairpin), "")
		}
	}
	return false, nil
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// ensureNetwork creates the config's network unless it exists; one that
// exists must agree with the config (parent, VLAN, mode, MTU).
func ensureNetwork(root *lifecycle.Root, c *NetConf) (created bool, err error) {
	for try := 0; ; try++ {
		nets, err := root.Networks()
		if err != nil {
			return false, err
		}
		for _, n := range nets {
			switch {
			case n.Name == c.Name:
				if n.Parent != c.Parent || int(n.VLAN) != c.VLAN || n.Mode != c.mode || (c.MTU != 0 && n.MTU != c.MTU) {
					return false, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(
						"network %s exists as parent %s, %s, %s mode, MTU %s; the config says parent %s, %s, %s mode, MTU %s "+
							"(make the config match, or `xmacvlan network delete %s` once no container uses it)",
						n.Name, n.Parent, vlanName(int(n.VLAN)), n.Mode, mtuName(n.MTU), c.Parent, vlanName(c.VLAN), c.mode, mtuName(c.MTU), n.Name), "")
				}
				return false, nil
			case n.Parent == c.Parent && int(n.VLAN) == c.VLAN:
				return false, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf(
					"%s on %s is network %s already; name the CNI network %s or use another VLAN", vlanName(c.VLAN), c.Parent, n.Name, n.Name), "")
			}
		}
		_, err = root.CreateNetwork(c.Parent, lifecycle.NetworkSpec{Name: c.Name, VLAN: uint16(c.VLAN), Mode: c.mode, MTU: c.MTU})
		if err == nil {
			return true, nil
		}
		if try > 0 {
			return false, err
		}
		// Another ADD may have created it meanwhile: look again.
	}
}

func vlanName(v int) string {
	if v == 0 {
		return "untagged"
	}
	return fmt.Sprintf("VLAN %d", v)
}

func mtuName(m int) string {
	if m == 0 {
		return "the parent's"
	}
	return fmt.Sprint(m)
}

// networkExists says whether the config's network exists under its root.
func networkExists(root *lifecycle.Root, c *NetConf) (bool, error) {
	nets, err := root.Networks()
	if err != nil {
		return false, err
	}
	for _, n := range nets {
		if n.Name == c.Name {
			return true, nil
		}
	}
	return false, nil
}

// cmdDel removes the endpoint of the attachment and releases its
// addresses. Idempotent: the namespace, the endpoint, the network or the
// whole datapath may be gone already, and CNI_NETNS may be empty.
func cmdDel(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if !containerIDRE.MatchString(args.ContainerID) {
		return types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("CNI_CONTAINERID %q: want A-Z a-z 0-9 _ . -", args.ContainerID), "")
	}
	st := openStore(c)
	att, found, err := st.get(args.ContainerID, args.IfName)
	if err != nil {
		return err
	}
	netnsPath := args.Netns
	if found {
		netnsPath = att.Netns
	}
	if err := deleteEndpoint(c, netnsPath, args.IfName); err != nil {
		return err
	}
	if c.IPAM.Type != "" {
		if err := ipam.ExecDel(c.IPAM.Type, args.StdinData); err != nil {
			return err
		}
	}
	return st.remove(args.ContainerID, args.IfName)
}

// deleteEndpoint removes the endpoint ifname in netnsPath from the
// config's network, if there is one.
func deleteEndpoint(c *NetConf, netnsPath, ifname string) error {
	if netnsPath == "" {
		return nil // nothing names an endpoint
	}
	root, err := lifecycle.Open(c.BPFFS)
	if err != nil {
		return err
	}
	if ok, err := networkExists(root, c); err != nil || !ok {
		return err
	}
	_, err = root.DeleteEndpoint(c.Name, lifecycle.Selector{Netns: netnsPath, Name: ifname})
	return err
}

// cmdCheck compares the endpoint with its record (lifecycle.CheckEndpoint)
// and with the result ADD returned (prevResult: MAC, addresses, routes).
func cmdCheck(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if c.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "CHECK needs prevResult (the result of ADD)", "")
	}
	prev, err := current.NewResultFromResult(c.PrevResult)
	if err != nil {
		return err
	}
	if c.IPAM.Type != "" {
		if err := ipam.ExecCheck(c.IPAM.Type, args.StdinData); err != nil {
			return err
		}
	}
	root, err := lifecycle.Open(c.BPFFS)
	if err != nil {
		return err
	}
	where := fmt.Sprintf("endpoint %s in %s on network %s", args.IfName, args.Netns, c.Name)
	diffs, err := root.CheckEndpoint(c.Name, lifecycle.Selector{Netns: args.Netns, Name: args.IfName})
	if err != nil {
		return types.NewError(ErrEndpointDiffers, where+": "+err.Error(), "")
	}
	var msgs []string
	for _, d := range diffs {
		msgs = append(msgs, d.String())
	}
	var ips []*current.IPConfig
	for _, ip := range prev.IPs {
		if ip.Interface == nil || (*ip.Interface < len(prev.Interfaces) && prev.Interfaces[*ip.Interface].Name == args.IfName) {
			ips = append(ips, ip)
		}
	}
	err = ns.WithNetNSPath(args.Netns, func(ns.NetNS) error {
		link, err := netlink.LinkByName(args.IfName)
		if err != nil {
			return nil // lifecycle said so already
		}
		for _, i := range prev.Interfaces {
			if i.Name == args.IfName && i.Sandbox == args.Netns && i.Mac != link.Attrs().HardwareAddr.String() {
				msgs = append(msgs, fmt.Sprintf("MAC: want %s (the ADD result), got %s", i.Mac, link.Attrs().HardwareAddr))
			}
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_ALL)
		if err != nil {
			return err
		}
		for _, ip := range ips {
			found := false
			for _, a := range addrs {
				if a.IPNet.String() == ip.Address.String() {
					found = true
				}
			}
			if !found {
				msgs = append(msgs, fmt.Sprintf("address: want %s (the ADD result), got absent", ip.Address.String()))
			}
		}
		for _, rt := range prev.Routes {
			if !hasRoute(link, rt, prev) {
				msgs = append(msgs, fmt.Sprintf("route: want %s (the ADD result), got absent", rt.Dst.String()))
			}
		}
		return nil
	})
	if err != nil {
		msgs = append(msgs, fmt.Sprintf("namespace %s: %v", args.Netns, err))
	}
	if len(msgs) > 0 {
		return types.NewError(ErrEndpointDiffers, where+" differs: "+strings.Join(msgs, "; "), "")
	}
	return nil
}

// hasRoute says whether the route to rt.Dst exists on link (in the
// current namespace).
func hasRoute(link netlink.Link, rt *types.Route, r *current.Result) bool {
	family := netlink.FAMILY_V4
	if rt.Dst.IP.To4() == nil {
		family = netlink.FAMILY_V6
	}
	routes, err := netlink.RouteList(link, family)
	if err != nil {
		return false
	}
	for _, have := range routes {
		dst := have.Dst
		if dst == nil {
			if ones, _ := rt.Dst.Mask.Size(); ones == 0 {
				return true
			}
			continue
		}
		if dst.String() == rt.Dst.String() {
			return true
		}
	}
	return false
}

// cmdStatus fails (code 50, plugin not available) when the parent is
// missing or down, or its datapath is attached to an interface that is
// gone or has lost its links. A parent that is not attached yet is fine:
// ADD attaches it.
func cmdStatus(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	unavailable := func(format string, a ...any) error {
		return types.NewError(types.ErrPluginNotAvailable, fmt.Sprintf(format, a...), "")
	}
	link, err := netlink.LinkByName(c.Parent)
	if err != nil {
		return unavailable("parent %s does not exist", c.Parent)
	}
	if link.Attrs().Flags&net.FlagUp == 0 {
		return unavailable("parent %s is down", c.Parent)
	}
	if !onBPFFS(c.BPFFS) {
		return unavailable("state root %s is not on a bpf filesystem: the datapath cannot be attached (mount -t bpf bpf /sys/fs/bpf)", c.BPFFS)
	}
	st, err := loader.Status(c.BPFFS, c.Parent)
	if err != nil {
		return unavailable("datapath state of %s under %s: %v", c.Parent, c.BPFFS, err)
	}
	for _, p := range st {
		if p.Error != "" {
			return unavailable("datapath of %s: %s (`xmacvlan attach %s` repairs it)", c.Parent, p.Error, c.Parent)
		}
		if !p.Present {
			return unavailable("datapath of %s is attached to ifindex %d, which is gone (`xmacvlan detach %s` then attach)", c.Parent, p.Ifindex, c.Parent)
		}
		for _, l := range p.Links {
			if !l.Alive && l.Ifindex == p.Ifindex {
				return unavailable("datapath of %s: link %s is defunct (`xmacvlan attach %s` repairs it)", c.Parent, l.Pin, c.Parent)
			}
		}
	}
	if c.IPAM.Type != "" {
		return ipam.ExecStatus(c.IPAM.Type, args.StdinData)
	}
	return nil
}

// onBPFFS says whether dir, or the closest of its parents that exists
// (attach creates the rest), is on a bpf filesystem.
func onBPFFS(dir string) bool {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		var st unix.Statfs_t
		if err := unix.Statfs(d, &st); err == nil {
			return st.Type == unix.BPF_FS_MAGIC
		}
		if d == "/" {
			return false
		}
	}
}

// cmdGC removes the endpoints of the network whose attachment is not in
// cni.dev/valid-attachments, then has the IPAM plugin do the same.
// Endpoints no ADD of this plugin made (the CLI's) are left alone.
func cmdGC(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	valid := map[types.GCAttachment]bool{}
	for _, a := range c.ValidAttachments {
		valid[a] = true
	}
	st := openStore(c)
	atts, err := st.list()
	if err != nil {
		return err
	}
	var errs []error
	for _, a := range atts {
		if valid[types.GCAttachment{ContainerID: a.ContainerID, IfName: a.Ifname}] {
			continue
		}
		if err := deleteEndpoint(c, a.Netns, a.Ifname); err != nil {
			errs = append(errs, fmt.Errorf("%s/%s: %w", a.ContainerID, a.Ifname, err))
			continue
		}
		errs = append(errs, st.remove(a.ContainerID, a.Ifname))
	}
	if c.IPAM.Type != "" {
		errs = append(errs, invoke.DelegateGC(context.TODO(), c.IPAM.Type, args.StdinData, nil))
	}
	return errors.Join(errs...)
}
