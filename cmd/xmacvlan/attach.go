package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/xmacvlan/xmacvlan/loader"
)

func newAttachCmd(g *globals) *cobra.Command {
	var xdp, mode string
	var replace, hairpin bool
	cmd := &cobra.Command{
		Use:   "attach PARENT",
		Short: "Attach the datapath to a parent NIC (again: upgrade it in place)",
		Long: "Loads the tcx programs on PARENT, and the XDP program where --xdp says so, and pins\n" +
			"them with the tables under --bpffs, so the datapath keeps forwarding after this command\n" +
			"exits. On an attached parent it keeps the tables and replaces changed programs atomically.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			choice, err := xdpChoice(cmd, xdp, mode)
			if err != nil {
				return err
			}
			opts := loader.AttachOptions{Root: g.root, Parent: args[0], XDP: choice, Replace: replace}
			if cmd.Flags().Changed("hairpin") {
				opts.Hairpin = &hairpin
			}
			res, err := loader.Attach(opts)
			if err != nil {
				return err
			}
			// The endpoints follow what the parent became since (watch.go).
			followed, ferr := g.lifecycle().Follow(args[0])
			for _, c := range followed {
				fmt.Fprintln(cmd.ErrOrStderr(), "followed the parent:", c)
			}
			if ferr != nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: endpoints not all following the parent:", ferr)
			}
			w := cmd.OutOrStdout()
			if g.output == "json" {
				return writeJSON(w, res)
			}
			verb := "re-attached (state reused)"
			if res.New {
				verb = "attached"
			}
			xdp := "XDP off"
			if res.XDP == "on" {
				xdp = "XDP on (" + res.Program + ")"
			}
			fmt.Fprintf(w, "%s %s: %s, tcx ingress, hairpin %s\n", verb, res.Parent, xdp, onOff(res.Hairpin))
			fmt.Fprintf(w, "XDP %s: %s\n", res.XDPChoice, res.XDPReason)
			if len(res.Upgraded) > 0 {
				fmt.Fprintf(w, "upgraded in place: %s\n", strings.Join(res.Upgraded, ", "))
			}
			for _, n := range res.Notes {
				fmt.Fprintln(w, n)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&xdp, "xdp", "", "auto, on (native XDP or fail) or off (tcx alone); auto decides by the driver and the endpoints' delivery "+
		"(default: what the parent was attached with, else auto)")
	cmd.Flags().StringVar(&mode, "mode", "", "deprecated: --xdp (native = on, generic = off)")
	cmd.Flags().MarkHidden("mode")
	cmd.Flags().BoolVar(&replace, "replace", false, "reload: swap every program in place even if unchanged")
	cmd.Flags().BoolVar(&hairpin, "hairpin", false, "host <-> container traffic on the untagged segment (--hairpin=false turns it off; default: keep)")
	return cmd
}

// xdpChoice reads --xdp, or the deprecated --mode it replaced (with a
// notice on stderr).
func xdpChoice(cmd *cobra.Command, xdp, mode string) (loader.XDPChoice, error) {
	if !cmd.Flags().Changed("mode") {
		if !cmd.Flags().Changed("xdp") {
			return "", nil // keep the recorded choice
		}
		return loader.ParseXDPChoice(xdp)
	}
	if cmd.Flags().Changed("xdp") {
		return "", fmt.Errorf("--mode and --xdp both given: use --xdp alone (--mode is deprecated)")
	}
	old := map[string]loader.XDPChoice{"native": loader.XDPOn, "generic": loader.XDPOff, "auto": loader.XDPAuto}
	c, ok := old[mode]
	if !ok {
		return "", fmt.Errorf("invalid --mode %q: want auto, native or generic (deprecated: use --xdp auto, on or off)", mode)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "warning: --mode is deprecated: use --xdp %s\n", c)
	return c, nil
}

func newDetachCmd(g *globals) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "detach PARENT",
		Short: "Remove the datapath, its links and pins from a parent",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.lifecycle().DetachParent(args[0], force); err != nil {
				return err
			}
			if g.output == "json" {
				return writeJSON(cmd.OutOrStdout(), map[string]string{"detached": args[0]})
			}
			fmt.Fprintf(cmd.OutOrStdout(), "detached %s\n", args[0])
			return nil
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "also delete the parent's endpoints")
	return cmd
}
