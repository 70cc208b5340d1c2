package main

import (
	"fmt"
	"net"
	"slices"

	"github.com/spf13/cobra"

	"github.com/xmacvlan/xmacvlan/docker"
	"github.com/xmacvlan/xmacvlan/lifecycle"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

func newEndpointCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "endpoint", Short: "Add, delete and list endpoints (container interfaces)"}
	cmd.AddCommand(newEndpointAddCmd(g), newEndpointDelCmd(g), newEndpointListCmd(g), newEndpointCheckCmd(g), newEndpointSetCmd(g))
	return cmd
}

func newEndpointAddCmd(g *globals) *cobra.Command {
	var s lifecycle.Spec
	var mac, ip, gateway, delivery, storm string
	cmd := &cobra.Command{
		Use:   "add NETWORK (--netns NS | --host)",
		Short: "Give a container (or the host) an interface on a network",
		Long: "Creates a veth pair: the outer end stays here, the inner end goes into the namespace\n" +
			"(a name under /var/run/netns, a path such as /proc/PID/ns/net, or a PID), named --name,\n" +
			"with the MAC, IP, MTU and default route; then registers it with the datapath.\n" +
			"--host keeps the inner end in this namespace: the host gets an address on the network.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if s.Host && s.Netns != "" {
				return errHostAndNetns
			}
			if mac != "" {
				if s.MAC, err = net.ParseMAC(mac); err != nil {
					return fmt.Errorf("invalid --mac %q: %v", mac, err)
				}
			}
			switch delivery {
			case "skb":
			case "xdp":
				s.XDP = true
			default:
				return fmt.Errorf("invalid --delivery %q: want skb or xdp", delivery)
			}
			if s.Gateway, err = parseIP("--gateway", gateway); err != nil {
				return err
			}
			if s.IP, err = parseEndpointIP(g, ip, args[0]); err != nil {
				return err
			}
			if s.StormLimit, err = lifecycle.ParseStormLimit(storm); err != nil {
				return err
			}
			ep, err := g.lifecycle().AddEndpoint(args[0], s)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return writeJSON(cmd.OutOrStdout(), endpointRow(lifecycle.EndpointStatus{Network: args[0], Endpoint: ep, State: tables.Ready}))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added %s in %s to %s: MAC %s, IP %s, delivery %s\n",
				ep.Ifname, ep.Netns, args[0], ep.MAC, orDash(ep.IP), deliveryName(ep))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&s.Netns, "netns", "", "the container's network namespace: name, path or PID")
	f.BoolVar(&s.Host, "host", false, "a host endpoint: the inner end stays in this namespace")
	f.StringVar(&s.Name, "name", "", "inner interface name (default eth0; with --host xmv-NETWORK)")
	f.StringVar(&mac, "mac", "", "MAC address (default: generated, locally administered)")
	f.StringVar(&ip, "ip", "", "IP address, ADDRESS/PREFIX or ADDRESS inside the network's subnet")
	f.StringVar(&gateway, "gateway", "", "default gateway (default: the network's)")
	f.IntVar(&s.MTU, "mtu", 0, "MTU (default: the network's, else the parent's)")
	f.StringVar(&delivery, "delivery", "skb", "skb (bpf_redirect_peer: keeps GRO/TSO) or xdp (native XDP redirect, for XDP/AF_XDP consumers; needs the parent attached with --xdp auto, which then runs XDP, or on)")
	f.StringVar(&storm, "storm-limit", "0", "storm control: broadcast, multicast and (untagged) unknown-unicast frames per second this endpoint may send; 0: no limit")
	return cmd
}

// parseEndpointIP accepts ADDRESS/PREFIX, or ADDRESS with the prefix of
// the subnet of the network called network.
func parseEndpointIP(g *globals, s, network string) (*net.IPNet, error) {
	if s == "" {
		return nil, nil
	}
	if ip := net.ParseIP(s); ip != nil {
		nets, err := g.lifecycle().Networks()
		if err != nil {
			return nil, err
		}
		i := slices.IndexFunc(nets, func(n loader.ParentNetwork) bool { return n.Name == network })
		if i < 0 {
			return nil, fmt.Errorf("no network called %q (xmacvlan network list)", network)
		}
		n := nets[i]
		if n.Subnet == nil {
			return nil, fmt.Errorf("--ip %s has no prefix length and network %s has no subnet", s, n.Name)
		}
		if v4 := ip.To4(); v4 != nil {
			ip = v4
		}
		return &net.IPNet{IP: ip, Mask: n.Subnet.Mask}, nil
	}
	return parseCIDR("--ip", s)
}

var errHostAndNetns = fmt.Errorf("--host and --netns exclude each other")

// checkSelector refuses a selector that names no endpoint, or two: a
// container's namespace and the host endpoint at once.
func checkSelector(sel lifecycle.Selector) error {
	switch {
	case sel.Host && sel.Netns != "":
		return errHostAndNetns
	case !sel.Host && sel.Netns == "":
		return fmt.Errorf("give the container's namespace (--netns) or --host")
	}
	return nil
}

func newEndpointSetCmd(g *globals) *cobra.Command {
	var sel lifecycle.Selector
	var storm string
	cmd := &cobra.Command{
		Use:   "set NETWORK (--netns NS | --host) [--name eth0] --storm-limit PPS",
		Short: "Change an endpoint's storm limit live",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkSelector(sel); err != nil {
				return err
			}
			if !cmd.Flags().Changed("storm-limit") {
				return fmt.Errorf("nothing to set: give --storm-limit")
			}
			pps, err := lifecycle.ParseStormLimit(storm)
			if err != nil {
				return err
			}
			if err := g.lifecycle().SetEndpointStormLimit(args[0], sel, pps); err != nil {
				return err
			}
			who := "host endpoint"
			if !sel.Host {
				who = "endpoint in " + sel.Netns
			}
			if sel.Name != "" {
				who += " (" + sel.Name + ")"
			}
			if g.output == "json" {
				return writeJSON(cmd.OutOrStdout(), map[string]any{"network": args[0], "netns": sel.Netns, "host": sel.Host,
					"name": sel.Name, "storm_limit": pps})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "network %s, %s: storm limit %s\n", args[0], who, stormName(pps))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&sel.Netns, "netns", "", "the container's network namespace: name, path or PID")
	f.BoolVar(&sel.Host, "host", false, "the host endpoint of this network")
	f.StringVar(&sel.Name, "name", "", "inner interface name (default eth0; with --host xmv-NETWORK)")
	f.StringVar(&storm, "storm-limit", "", "broadcast, multicast and (untagged) unknown-unicast frames per second it may send; 0: no limit")
	return cmd
}

func newEndpointDelCmd(g *globals) *cobra.Command {
	var netnsSpec, name string
	var host bool
	cmd := &cobra.Command{
		Use:   "del NETWORK (--netns NS | --host) [--name eth0]",
		Short: "Remove an endpoint and its veth (nothing to remove is not an error)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			sel := lifecycle.Selector{Netns: netnsSpec, Host: host, Name: name}
			if err := checkSelector(sel); err != nil {
				return err
			}
			found, err := g.lifecycle().DeleteEndpoint(args[0], sel)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.output == "json" {
				return writeJSON(w, map[string]bool{"deleted": found})
			}
			if found {
				fmt.Fprintln(w, "deleted")
			} else {
				fmt.Fprintln(w, "no such endpoint: nothing to delete")
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&netnsSpec, "netns", "", "the container's network namespace: name, path or PID")
	f.BoolVar(&host, "host", false, "the host endpoint of this network")
	f.StringVar(&name, "name", "", "inner interface name (default eth0; with --host xmv-NETWORK)")
	return cmd
}

// endpointRowJSON is one line of `endpoint list`.
type endpointRowJSON struct {
	Network  string `json:"network"`
	VLAN     uint16 `json:"vlan"`
	Netns    string `json:"netns"`
	Ifname   string `json:"ifname"`
	MAC      string `json:"mac"`
	IP       string `json:"ip,omitempty"`
	Delivery string `json:"delivery"`
	Host     bool   `json:"host"`
	// StormLimit: frames per second it may flood; 0 = no limit.
	StormLimit uint32 `json:"storm_limit"`
	Outer      string `json:"outer"`
	Ifindex    int    `json:"outer_ifindex"`
	ID         int    `json:"id"`
	State      string `json:"state"`
	Stale      bool   `json:"stale"`
	// RxDropped: frames towards the endpoint its veth dropped, ring full
	// (flood copies, host traffic).
	RxDropped uint64 `json:"rx_dropped"`
	// A Docker endpoint's ID and container (docker-plugin's state).
	DockerEndpoint string `json:"docker_endpoint,omitempty"`
	Container      string `json:"container,omitempty"`
}

func endpointRow(e lifecycle.EndpointStatus) endpointRowJSON {
	r := endpointRowJSON{Network: e.Network, VLAN: e.VLAN, Netns: e.Netns, Ifname: e.Ifname, MAC: e.MAC.String(),
		Delivery: deliveryName(e.Endpoint), Host: e.Host, StormLimit: e.StormLimit, Ifindex: e.Ifindex, ID: e.ID, Outer: e.Outer,
		State: e.State.String(), Stale: e.Stale, RxDropped: e.RxDropped}
	if e.IP != nil {
		r.IP = e.IP.String()
	}
	return r
}

func deliveryName(ep tables.Endpoint) string {
	if ep.XDPDelivery {
		return "xdp"
	}
	return "skb"
}

func newEndpointListCmd(g *globals) *cobra.Command {
	var dockerState string
	cmd := &cobra.Command{
		Use:   "list [NETWORK]",
		Short: "List endpoints (stale: the namespace or outer veth is gone; `xmacvlan gc` removes them)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			network := ""
			if len(args) == 1 {
				network = args[0]
			}
			eps, err := g.lifecycle().Endpoints(network)
			if err != nil {
				return err
			}
			owners := dockerOwners(dockerState)
			rows := []endpointRowJSON{}
			for _, e := range eps {
				r := endpointRow(e)
				if o, ok := owners[r.Outer]; ok {
					r.DockerEndpoint, r.Container = o.Endpoint, o.Container
				}
				rows = append(rows, r)
			}
			w := cmd.OutOrStdout()
			if g.output == "json" {
				return writeJSON(w, rows)
			}
			tw := newTable(w)
			fmt.Fprintln(tw, "NETWORK\tVLAN\tNAMESPACE\tIFNAME\tMAC\tIP\tDELIVERY\tSTORM-LIMIT\tRX DROPPED\tOUTER")
			for _, r := range rows {
				outer := r.Outer
				switch {
				case r.Stale:
					outer += " (gone: stale)"
				case r.State != "ready":
					outer += " (" + r.State + ")"
				}
				netns := r.Netns
				if o, ok := owners[r.Outer]; ok {
					netns = o.String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", r.Network, vlanName(r.VLAN), netns, r.Ifname,
					r.MAC, dashIfEmpty(r.IP), r.Delivery, stormName(r.StormLimit), r.RxDropped, outer)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&dockerState, "docker-state", docker.DefaultStateDir, "docker-plugin's --state: name the containers of Docker endpoints")
	return cmd
}

func newEndpointCheckCmd(g *globals) *cobra.Command {
	var sel lifecycle.Selector
	cmd := &cobra.Command{
		Use:   "check NETWORK (--netns NS | --host) [--name eth0]",
		Short: "Compare an endpoint with its record; print each difference, exit non-zero on any",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkSelector(sel); err != nil {
				return err
			}
			diffs, err := g.lifecycle().CheckEndpoint(args[0], sel)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.output == "json" {
				if diffs == nil {
					diffs = []lifecycle.Difference{}
				}
				if err := writeJSON(w, map[string]any{"ok": len(diffs) == 0, "differences": diffs}); err != nil {
					return err
				}
			} else {
				for _, d := range diffs {
					fmt.Fprintln(w, d)
				}
				if len(diffs) == 0 {
					fmt.Fprintln(w, "ok")
				}
			}
			if len(diffs) > 0 {
				return fmt.Errorf("endpoint differs from its record in %d ways", len(diffs))
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&sel.Netns, "netns", "", "the container's network namespace: name, path or PID")
	f.BoolVar(&sel.Host, "host", false, "the host endpoint of this network")
	f.StringVar(&sel.Name, "name", "", "inner interface name (default eth0; with --host xmv-NETWORK)")
	return cmd
}

func newGCCmd(g *globals) *cobra.Command {
	var dryRun bool
	cmd := &cobra.Command{
		Use:   "gc [NETWORK]",
		Short: "Remove endpoints whose namespace or veth is gone, and leftovers no endpoint accounts for",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			network := ""
			if len(args) == 1 {
				network = args[0]
			}
			removed, err := g.lifecycle().GC(network, dryRun)
			w := cmd.OutOrStdout()
			if g.output == "json" {
				if werr := writeJSON(w, map[string]any{"dry_run": dryRun, "removed": removed}); werr != nil {
					return werr
				}
				return err
			}
			verb := "removed"
			if dryRun {
				verb = "would remove"
			}
			for _, r := range removed {
				fmt.Fprintf(w, "%s %s\n", verb, r)
			}
			if len(removed) == 0 && err == nil {
				fmt.Fprintln(w, "nothing to remove")
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "only say what would be removed")
	return cmd
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
