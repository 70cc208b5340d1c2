package main

import (
	"fmt"
	"net"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/xmacvlan/xmacvlan/lifecycle"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

func newNetworkCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "network", Short: "Create, delete and list networks (one VLAN on a parent)"}
	cmd.AddCommand(newNetworkCreateCmd(g), newNetworkDeleteCmd(g), newNetworkListCmd(g), newNetworkSetCmd(g))
	return cmd
}

// parseVLAN reads --vlan (lifecycle.CheckVLAN). No --vlan, like 0, is the
// untagged segment.
func parseVLAN(s string) (uint16, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("invalid VLAN %q: want a number in 1..%d, or 0 for the untagged segment", s, tables.MaxVLAN)
	}
	if err := lifecycle.CheckVLAN(v); err != nil {
		return 0, err
	}
	return uint16(v), nil
}

func parseIP(flag, s string) (net.IP, error) {
	if s == "" {
		return nil, nil
	}
	ip := net.ParseIP(s)
	if ip == nil {
		return nil, fmt.Errorf("invalid %s %q: not an IP address", flag, s)
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return ip, nil
}

func parseCIDR(flag, s string) (*net.IPNet, error) {
	if s == "" {
		return nil, nil
	}
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		return nil, fmt.Errorf("invalid %s %q: want ADDRESS/PREFIX", flag, s)
	}
	if v4 := ip.To4(); v4 != nil {
		ip = v4
	}
	return &net.IPNet{IP: ip, Mask: n.Mask}, nil
}

func newNetworkCreateCmd(g *globals) *cobra.Command {
	var parent, vlan, mode, subnet, gateway, storm string
	var mtu int
	cmd := &cobra.Command{
		Use:   "create NAME --parent IFACE [--vlan 0-4094]",
		Short: "Create a network: the untagged segment of a parent, or one VLAN on it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s := lifecycle.NetworkSpec{Name: args[0], MTU: mtu}
			var err error
			if s.VLAN, err = parseVLAN(vlan); err != nil {
				return err
			}
			if s.Mode, err = tables.ParseMode(mode); err != nil {
				return err
			}
			if s.Subnet, err = parseCIDR("--subnet", subnet); err != nil {
				return err
			}
			if s.Gateway, err = parseIP("--gateway", gateway); err != nil {
				return err
			}
			if s.StormLimit, err = lifecycle.ParseStormLimit(storm); err != nil {
				return err
			}
			n, err := g.lifecycle().CreateNetwork(parent, s)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return writeJSON(cmd.OutOrStdout(), loader.ParentNetwork{Parent: parent, Network: n})
			}
			where := "untagged"
			if n.VLAN != 0 {
				where = fmt.Sprintf("VLAN %d", n.VLAN)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "created network %s on %s (%s, %s mode)\n", n.Name, parent, where, n.Mode)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&parent, "parent", "", "attached parent interface")
	f.StringVar(&vlan, "vlan", "", "802.1Q VLAN 1-4094; 0 or none: the untagged segment")
	f.StringVar(&mode, "mode", "bridge", "bridge, private or vepa")
	f.StringVar(&subnet, "subnet", "", "the network's subnet, e.g. 172.16.10.0/24")
	f.StringVar(&gateway, "gateway", "", "default gateway for endpoints, inside --subnet")
	f.IntVar(&mtu, "mtu", 0, "endpoints' MTU (default: the parent's)")
	f.StringVar(&storm, "storm-limit", "0", "storm control: broadcast, multicast and (untagged) unknown-unicast frames per second the VLAN floods, all senders and the wire together; 0: no limit")
	return cmd
}

func newNetworkSetCmd(g *globals) *cobra.Command {
	var storm string
	cmd := &cobra.Command{
		Use:   "set NAME --storm-limit PPS",
		Short: "Change a network's storm limit live",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("storm-limit") {
				return fmt.Errorf("nothing to set: give --storm-limit")
			}
			pps, err := lifecycle.ParseStormLimit(storm)
			if err != nil {
				return err
			}
			if err := g.lifecycle().SetNetworkStormLimit(args[0], pps); err != nil {
				return err
			}
			if g.output == "json" {
				return writeJSON(cmd.OutOrStdout(), map[string]any{"network": args[0], "storm_limit": pps})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "network %s: storm limit %s\n", args[0], stormName(pps))
			return nil
		},
	}
	cmd.Flags().StringVar(&storm, "storm-limit", "", "frames per second the VLAN floods, all senders together; 0: no limit")
	return cmd
}

func newNetworkDeleteCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a network (refuses while it has endpoints, unless --force)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.lifecycle().DeleteNetwork(args[0], force); err != nil {
				return err
			}
			if g.output == "json" {
				return writeJSON(cmd.OutOrStdout(), map[string]string{"deleted": args[0]})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "deleted network %s\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "also delete the network's endpoints")
	return cmd
}

func newNetworkListCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List networks",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			nets, err := g.lifecycle().Networks()
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.output == "json" {
				if nets == nil {
					nets = []loader.ParentNetwork{}
				}
				return writeJSON(w, nets)
			}
			tw := newTable(w)
			fmt.Fprintln(tw, "NAME\tPARENT\tVLAN\tMODE\tSUBNET\tGATEWAY\tMTU\tSTORM-LIMIT\tENDPOINTS")
			for _, n := range nets {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", n.Name, n.Parent, vlanName(n.VLAN), n.Mode,
					orDash(n.Subnet), orDash(n.Gateway), mtuName(n.MTU), stormName(n.StormLimit), n.Members)
			}
			return tw.Flush()
		},
	}
}

func vlanName(v uint16) string {
	if v == 0 {
		return "untagged"
	}
	return strconv.Itoa(int(v))
}

// stormName prints a storm limit: "off" or frames per second.
func stormName(pps uint32) string {
	if pps == 0 {
		return "off"
	}
	return strconv.FormatUint(uint64(pps), 10) + "/s"
}

func mtuName(m int) string {
	if m == 0 {
		return "parent"
	}
	return strconv.Itoa(m)
}

// orDash prints a nil address as "-".
func orDash(v fmt.Stringer) string {
	if s := v.String(); s != "<nil>" {
		return s
	}
	return "-"
}
