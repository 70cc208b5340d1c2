package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/xmacvlan/xmacvlan/internal/demo"
)

func newDemoCmd() *cobra.Command {
	var keep, clean bool
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Build the seed tutorial's two-host VLAN 10/20 topology in namespaces and show it working",
		Long: "Builds a switch and two Docker hosts (docker01, docker02) in network namespaces, runs the\n" +
			"xmacvlan commands that replace 8021q + macvlan, prints who can ping whom with the VLAN tag\n" +
			"seen on the wire, prints the counters, and removes everything (unless --keep).",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if clean {
				if err := demo.Clean(); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "demo removed")
				return nil
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			// Stop and clean up on Ctrl-C, kill, a closed terminal, and a
			// reader that went away (`xmacvlan demo | head`): with SIGPIPE
			// caught, a write to the closed pipe fails with EPIPE instead
			// of killing the process with the topology still up.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGPIPE)
			defer stop()
			err = demo.Run(ctx, demo.Options{Out: cmd.OutOrStdout(), Keep: keep, Self: self})
			if err != nil && ctx.Err() != nil {
				return fmt.Errorf("demo stopped by a signal (%v)", err)
			}
			return err
		},
	}
	cmd.Flags().BoolVar(&keep, "keep", false, "leave the topology up to explore")
	cmd.Flags().BoolVar(&clean, "clean", false, "remove a demo left up with --keep")
	return cmd
}
