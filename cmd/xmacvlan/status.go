package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/xmacvlan/xmacvlan/loader"
)

func newStatusCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "status [PARENT]",
		Short: "Show attached parents: XDP on or off and why, programs, table sizes",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			only := ""
			if len(args) == 1 {
				only = args[0]
			}
			sts, err := loader.Status(g.root, only)
			if err != nil {
				return err
			}
			if only != "" && len(sts) == 0 {
				return fmt.Errorf("%s is not attached", only)
			}
			w := cmd.OutOrStdout()
			if g.output == "json" {
				return writeJSON(w, withStale(g, sts))
			}
			if len(sts) == 0 {
				fmt.Fprintf(w, "no parent attached (state root %s)\n", g.root)
				return nil
			}
			for i, st := range sts {
				if i > 0 {
					fmt.Fprintln(w)
				}
				printStatus(cmd, st)
				printStale(w, g, st.Parent)
			}
			return nil
		},
	}
}

func printStatus(cmd *cobra.Command, st loader.ParentStatus) {
	w := cmd.OutOrStdout()
	presence := ""
	if st.RenamedTo != "" {
		presence = fmt.Sprintf("  (renamed to %s since attach)", st.RenamedTo)
	}
	if !st.Present {
		presence = "  (interface not found in this network namespace)"
	}
	fmt.Fprintf(w, "parent %s  ifindex %d  driver %s  XDP %s  hairpin %s%s\n", st.Parent, st.Ifindex, st.Driver, st.XDP, onOff(st.Hairpin), presence)
	if st.XDPChoice != "" {
		fmt.Fprintf(w, "  XDP %s: %s\n", st.XDPChoice, st.XDPReason)
	}
	if st.Present {
		filter := "unicast filter"
		if st.Promiscuity > 0 {
			filter = "promiscuous (the driver has no unicast filter, or something else asked for it)"
		}
		fmt.Fprintf(w, "  accepts endpoint MACs by: %s; %d unicast MACs on the parent's list\n", filter, st.UnicastMACs)
	}
	if st.Error != "" {
		fmt.Fprintf(w, "  error: %s\n", st.Error)
		return
	}
	tw := newTable(w)
	fmt.Fprintln(tw, "  HOOK\tIFINDEX\tPROGRAM\tPROG ID\tTAG\tLINK ID\tPIN")
	for _, l := range st.Links {
		hook := l.Hook
		if !l.Alive {
			hook += " (defunct)"
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%d\t%s\t%d\t%s\n", hook, l.Ifindex, l.Program, l.ProgramID, l.Tag, l.LinkID, l.Pin)
	}
	tw.Flush()
	tw = newTable(w)
	fmt.Fprintln(tw, "  TABLE\tENTRIES\tMAX")
	for _, t := range st.Tables {
		fmt.Fprintf(tw, "  %s\t%d\t%d\n", t.Name, t.Entries, t.Max)
	}
	tw.Flush()
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}
