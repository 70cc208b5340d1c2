package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/xmacvlan/xmacvlan/lifecycle"
	"github.com/xmacvlan/xmacvlan/loader"
)

// globals are the flags every command shares.
type globals struct {
	root   string // --bpffs
	output string // -o
}

// lifecycle is the state root --bpffs names.
func (g *globals) lifecycle() *lifecycle.Root {
	return &lifecycle.Root{Dir: g.root, Followed: func(change string) {
		fmt.Fprintln(os.Stderr, "followed the parent:", change) // stderr: -o json stays one document
	}}
}

func newRootCmd() *cobra.Command {
	g := &globals{}
	cmd := &cobra.Command{
		Use:   "xmacvlan",
		Short: "macvlan + 802.1Q for containers, as an XDP/tcx datapath",
		Long: "xmacvlan puts containers straight on the physical LAN, each with its own MAC, on any\n" +
			"VLAN, without kernel VLAN or macvlan devices. Run it in the parent's network namespace.",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			if g.output != "text" && g.output != "json" {
				return fmt.Errorf("invalid output %q: want text or json", g.output)
			}
			return nil
		},
	}
	cmd.PersistentFlags().StringVar(&g.root, "bpffs", loader.DefaultRoot, "directory on a bpf filesystem that holds the pinned state")
	cmd.PersistentFlags().StringVarP(&g.output, "output", "o", "text", "output format: text or json")
	cmd.AddCommand(
		newAttachCmd(g),
		newDetachCmd(g),
		newStatusCmd(g),
		newNetworkCmd(g),
		newEndpointCmd(g),
		newGCCmd(g),
		newDemoCmd(),
		newStatsCmd(g),
		newMetricsCmd(g),
		newWatchCmd(g),
		newDockerPluginCmd(g),
	)
	return cmd
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
}
