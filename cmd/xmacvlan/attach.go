package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/xmacvlan/xmacvlan/loader"
)

func newAttachCmd(g *globals) *cobra.Command {
	var mode string
	var replace, hairpin bool
	cmd := &cobra.Command{
		Use:   "attach PARENT",
		Short: "Attach the datapath to a parent NIC (again: upgrade it in place)",
		Long: "Loads the XDP and tcx programs on PARENT and pins them with the tables under --bpffs,\n" +
			"so the datapath keeps forwarding after this command exits. On an attached parent it\n" +
			"keeps the tables and replaces changed programs atomically.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := loader.ParseXDPMode(mode)
			if err != nil {
				return err
			}
			opts := loader.AttachOptions{Root: g.root, Parent: args[0], Mode: m, Replace: replace}
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
			fmt.Fprintf(w, "%s %s: XDP %s mode (%s), tcx ingress, hairpin %s\n", verb, res.Parent, res.XDPMode, res.Program, onOff(res.Hairpin))
			if len(res.Upgraded) > 0 {
				fmt.Fprintf(w, "upgraded in place: %s\n", strings.Join(res.Upgraded, ", "))
			}
			for _, n := range res.Notes {
				fmt.Fprintln(w, n)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&mode, "mode", "auto", "auto (native XDP, else generic), native, or generic (tcx alone, for drivers without XDP)")
	cmd.Flags().BoolVar(&replace, "replace", false, "reload: swap every program in place even if unchanged")
	cmd.Flags().BoolVar(&hairpin, "hairpin", false, "host <-> container traffic on the untagged segment (--hairpin=false turns it off; default: keep)")
	return cmd
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
