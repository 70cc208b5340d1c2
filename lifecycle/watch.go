package lifecycle

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/loader"
)

// settle is how long Watch collects link updates before it acts on them:
// one `ip link set` can send several, and a burst is one Reconcile.
const settle = 100 * time.Millisecond

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

// Watch keeps the endpoints of every parent under the root following their
// parent until ctx ends: it reconciles every parent at start, again
// whenever a parent's MTU, flags (up, carrier) or ifindex change (netlink
// link updates), and every interval (0: only on link changes), since
// unicast filter entries and link pins change without a link event. Each
// Reconcile's changes and error go to report. It returns nil when ctx ends,
// and an error when the link updates fail (restart it to resubscribe).
func (root *Root) Watch(ctx context.Context, interval time.Duration, report func(parent string, changes []string, err error)) error {
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

	seen := map[string]linkState{}
	reconcile := func(parent string) {
		st, _ := stateOf(parent)
		seen[parent] = st
		changes, err := root.Reconcile(parent)
		report(parent, changes, err)
	}
	all := func() []string {
		parents, err := loader.Parents(root.Dir)
		if err != nil {
			report("", nil, fmt.Errorf("list parents: %w", err))
		}
		return parents
	}
	for _, p := range all() {
		reconcile(p)
	}

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
