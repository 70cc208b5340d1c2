package main

import (
	"fmt"
	"net"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/endpoint"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

func newEndpointCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "endpoint", Short: "Add, delete and list endpoints (container interfaces)"}
	cmd.AddCommand(newEndpointAddCmd(g), newEndpointDelCmd(g), newEndpointListCmd(g))
	return cmd
}

func newEndpointAddCmd(g *globals) *cobra.Command {
	var s endpoint.Spec
	var mac, ip, gateway, delivery string
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
				return fmt.Errorf("--host and --netns exclude each other")
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
			h, n, err := loader.OpenNetwork(g.root, args[0])
			if err != nil {
				return err
			}
			defer h.Close()
			if s.IP, err = parseEndpointIP(ip, n); err != nil {
				return err
			}
			ep, err := endpoint.Add(h, n, s)
			if err != nil {
				return err
			}
			if g.output == "json" {
				return writeJSON(cmd.OutOrStdout(), endpointRow(n.Name, ep))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added %s in %s to %s: MAC %s, IP %s, delivery %s\n",
				ep.Ifname, ep.Netns, n.Name, ep.MAC, orDash(ep.IP), deliveryName(ep))
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
	f.StringVar(&delivery, "delivery", "skb", "skb (bpf_redirect_peer: keeps GRO/TSO) or xdp (native XDP redirect, for XDP/AF_XDP consumers)")
	return cmd
}

// parseEndpointIP accepts ADDRESS/PREFIX, or ADDRESS with the prefix of
// the network's subnet.
func parseEndpointIP(s string, n tables.Network) (*net.IPNet, error) {
	if s == "" {
		return nil, nil
	}
	if ip := net.ParseIP(s); ip != nil {
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

func newEndpointDelCmd(g *globals) *cobra.Command {
	var netnsSpec, name string
	var host bool
	cmd := &cobra.Command{
		Use:   "del NETWORK (--netns NS | --host) [--name eth0]",
		Short: "Remove an endpoint and its veth (nothing to remove is not an error)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !host && netnsSpec == "" {
				return fmt.Errorf("give the container's namespace (--netns) or --host")
			}
			h, n, err := loader.OpenNetwork(g.root, args[0])
			if err != nil {
				return err
			}
			defer h.Close()
			found, err := endpoint.Delete(h, n, netnsSpec, host, name)
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
	Outer    string `json:"outer"`
	Ifindex  int    `json:"outer_ifindex"`
	ID       int    `json:"id"`
}

func endpointRow(network string, ep tables.Endpoint) endpointRowJSON {
	r := endpointRowJSON{Network: network, VLAN: ep.VLAN, Netns: ep.Netns, Ifname: ep.Ifname, MAC: ep.MAC.String(),
		Delivery: deliveryName(ep), Host: ep.Host, Ifindex: ep.Ifindex, ID: ep.ID, Outer: "(gone)"}
	if ep.IP != nil {
		r.IP = ep.IP.String()
	}
	if l, err := netlink.LinkByIndex(ep.Ifindex); err == nil {
		r.Outer = l.Attrs().Name
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
	return &cobra.Command{
		Use:   "list [NETWORK]",
		Short: "List endpoints",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			rows, err := listEndpoints(g.root, args)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if g.output == "json" {
				return writeJSON(w, rows)
			}
			tw := newTable(w)
			fmt.Fprintln(tw, "NETWORK\tVLAN\tNAMESPACE\tIFNAME\tMAC\tIP\tDELIVERY\tOUTER")
			for _, r := range rows {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Network, vlanName(r.VLAN), r.Netns, r.Ifname,
					r.MAC, dashIfEmpty(r.IP), r.Delivery, r.Outer)
			}
			return tw.Flush()
		},
	}
}

func listEndpoints(root string, only []string) ([]endpointRowJSON, error) {
	nets, err := loader.Networks(root)
	if err != nil {
		return nil, err
	}
	rows := []endpointRowJSON{}
	found := false
	for _, n := range nets {
		if len(only) == 1 && n.Name != only[0] {
			continue
		}
		found = true
		h, err := loader.Open(root, n.Parent)
		if err != nil {
			return nil, err
		}
		eps, err := h.Tables.Endpoints()
		h.Close()
		if err != nil {
			return nil, err
		}
		for _, ep := range eps {
			if ep.VLAN == n.VLAN {
				rows = append(rows, endpointRow(n.Name, ep))
			}
		}
	}
	if len(only) == 1 && !found {
		return nil, fmt.Errorf("no network called %q", only[0])
	}
	return rows, nil
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
