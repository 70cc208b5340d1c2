package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/lifecycle"
	"github.com/xmacvlan/xmacvlan/loader"
)

// settle is how long watch collects link updates before it acts on them:
// one `ip link set` can send several, and a burst is one Reconcile.
const settle = 100 * time.Millisecond

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
			return watch(ctx, g.lifecycle(), interval, cmd.OutOrStdout(), g.output == "json")
		},
	}
	cmd.Flags().DurationVar(&interval, "interval", 30*time.Second, "also reconcile every parent this often (0: only on link changes)")
	return cmd
}

// linkState is what watch compares to decide that a parent changed.
type linkState struct {
	ifindex, mtu int
	flags        uint32 // IFF_UP, IFF_LOWER_UP
}

func stateOf(name string) (linkState, bool) {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return linkState{}, false
	}
	a := l.Attrs()
	return linkState{ifindex: a.Index, mtu: a.MTU, flags: a.RawFlags & (unix.IFF_UP | unix.IFF_LOWER_UP)}, true
}

func watch(ctx context.Context, root *lifecycle.Root, interval time.Duration, w io.Writer, asJSON bool) error {
	updates := make(chan netlink.LinkUpdate, 1024)
	done := make(chan struct{})
	defer close(done)
	subErr := make(chan error, 1)
	// Subscribed before the first pass, so no change falls in between.
	if err := netlink.LinkSubscribeWithOptions(updates, done, netlink.LinkSubscribeOptions{
		ErrorCallback: func(err error) {
			select {
			case subErr <- err:
			default:
			}
		},
	}); err != nil {
		return fmt.Errorf("subscribe to link updates: %w", err)
	}

	show := func(parent string, changes []string, err error) {
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
	seen := map[string]linkState{}
	reconcile := func(parent string) {
		st, _ := stateOf(parent)
		seen[parent] = st
		changes, err := root.Reconcile(parent)
		show(parent, changes, err)
	}
	all := func() []string {
		parents, err := loader.Parents(root.Dir)
		if err != nil {
			fmt.Fprintf(os.Stderr, "xmacvlan watch: list parents: %v\n", err)
		}
		return parents
	}
	parents := all()
	for _, p := range parents {
		reconcile(p)
	}
	fmt.Fprintf(os.Stderr, "xmacvlan watch: following %d parents under %s\n", len(parents), root.Dir)

	var tick <-chan time.Time
	if interval > 0 {
		t := time.NewTicker(interval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-subErr:
			return fmt.Errorf("link updates: %w (restart to resubscribe)", err)
		case <-tick:
			for _, p := range all() {
				reconcile(p)
			}
		case u, ok := <-updates:
			if !ok {
				return fmt.Errorf("link updates ended (restart to resubscribe)")
			}
			names := []string{u.Attrs().Name}
			deadline := time.After(settle)
		collect:
			for {
				select {
				case u, ok := <-updates:
					if !ok {
						break collect
					}
					if n := u.Attrs().Name; !slices.Contains(names, n) {
						names = append(names, n)
					}
				case <-deadline:
					break collect
				}
			}
			// The list of parents is read again: one may have been
			// attached since.
			for _, p := range all() {
				if !slices.Contains(names, p) {
					continue
				}
				if st, _ := stateOf(p); st != seen[p] {
					reconcile(p)
				}
			}
		}
	}
}

// writeJSONLine writes v as one line, so a stream of changes is JSON Lines.
func writeJSONLine(w io.Writer, v any) {
	json.NewEncoder(w).Encode(v)
}
