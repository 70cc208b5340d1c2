package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

func newWatchCmd(g *globals) *cobra.Command {
	var interval time.Duration
	cmd := &cobra.Command{
		Use:   "watch",
		Short: "Keep the endpoints following their parents (MTU, carrier, re-created parents)",
		Long: "Runs until SIGINT or SIGTERM. Reconciles every attached parent under --bpffs at start,\n" +
			"then again whenever a parent's MTU, flags (up, carrier) or ifindex change, and every\n" +
			"--interval (unicast filter entries and link pins change without a link event).\n" +
			"Prints each change it makes, one line each.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			fmt.Fprintf(os.Stderr, "xmacvlan watch: following the parents under %s\n", g.root)
			return g.lifecycle().Watch(ctx, interval, printChanges(cmd.OutOrStdout(), g.output == "json"))
		},
	}
	cmd.Flags().DurationVar(&interval, "interval", 30*time.Second, "also reconcile every parent this often (0: only on link changes)")
	return cmd
}

// printChanges prints what Watch reports: each change on its own line (a
// JSON object per line with -o json), errors on stderr.
func printChanges(w io.Writer, asJSON bool) func(parent string, changes []string, err error) {
	return func(parent string, changes []string, err error) {
		for _, c := range changes {
			if asJSON {
				writeJSONLine(w, map[string]string{"parent": parent, "change": c})
			} else {
				fmt.Fprintln(w, c)
			}
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "xmacvlan watch: %s: %v\n", parent, err)
		}
	}
}

// writeJSONLine writes v as one line, so a stream of changes is JSON Lines.
func writeJSONLine(w io.Writer, v any) {
	json.NewEncoder(w).Encode(v)
}
