package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/internal/ethtool"
	"github.com/xmacvlan/xmacvlan/internal/state"
	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/tables"
)

// parentState is everything an attach can change, to compare before and
// after a failed run.
type parentState struct {
	pins    []string
	xdpProg uint32
	rxVLAN  bool
	progs   map[string]string // pin -> program name and ID (a reload gives a new ID)
}

func snapshot(t *testing.T, ns *testutil.Netns, root, parent string) parentState {
	t.Helper()
	var st parentState
	dir := filepath.Join(root, parent)
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		st.pins = append(st.pins, e.Name())
	}
	st.progs = map[string]string{}
	for _, pin := range st.pins {
		if l, err := link.LoadPinnedLink(filepath.Join(dir, pin), nil); err == nil {
			if p, pi, err := linkProgram(l); err == nil {
				id, _ := pi.ID()
				st.progs[pin] = fmt.Sprint(pi.Name, "/", id)
				p.Close()
			}
			l.Close()
		}
	}
	l, err := ns.NL.LinkByName(parent)
	if err != nil {
		t.Fatal(err)
	}
	if x := l.Attrs().Xdp; x != nil {
		st.xdpProg = x.ProgId
	}
	ns.Do(func() (err error) { st.rxVLAN, err = ethtool.RxVLANOffload(parent); return err })
	return st
}

func (a parentState) equal(b parentState) bool {
	return slices.Equal(a.pins, b.pins) && a.xdpProg == b.xdpProg && a.rxVLAN == b.rxVLAN &&
		len(a.progs) == len(b.progs) && func() bool {
		for k, v := range a.progs {
			if b.progs[k] != v {
				return false
			}
		}
		return true
	}()
}

// newParent makes a namespace with parent ens33 (a veth whose peer is in
// another namespace) and a state root, both removed after the test.
func newParent(t *testing.T) (*testutil.Netns, string) {
	testutil.Privileged(t)
	ns := testutil.NewNetns(t, "xl")
	peer := testutil.NewNetns(t, "xl")
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ens33"}, PeerName: "wire", PeerNamespace: netlink.NsFd(peer.Handle)}
	if err := ns.NL.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	l, _ := ns.NL.LinkByName("ens33")
	ns.NL.LinkSetUp(l)
	root := filepath.Join("/sys/fs/bpf", testutil.Name("xt"))
	t.Cleanup(func() {
		ns.Do(func() error { return Detach(root, "ens33") })
		os.RemoveAll(root)
	})
	return ns, root
}

// A run that fails at any step leaves the parent exactly as it found it:
// unattached, or attached with the old programs and tables.
func TestAttachRollsBackOnFailure(t *testing.T) {
	ns, root := newParent(t)
	attach := func(opts AttachOptions) error {
		opts.Root, opts.Parent = root, "ens33"
		return ns.Do(func() error { _, err := Attach(opts); return err })
	}
	injected := errors.New("injected failure")
	steps := []string{"after-xdp", "after-links", "after-settings", "after-pins"}
	defer func() { failpoint = func(string) error { return nil } }()

	for _, attached := range []bool{false, true} {
		if attached {
			if err := attach(AttachOptions{}); err != nil {
				t.Fatal(err)
			}
			// An entry that must survive the failed runs.
			err := ns.Do(func() error {
				h, err := Open(root, "ens33")
				if err != nil {
					return err
				}
				defer h.Close()
				return h.Tables.AddNetwork(tables.Network{Name: "lan"})
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, step := range steps {
			before := snapshot(t, ns, root, "ens33")
			failpoint = func(s string) error {
				if s == step {
					return injected
				}
				return nil
			}
			on := true
			// Replace forces every program to be swapped, so a failure
			// after the swaps must swap the old ones back.
			err := attach(AttachOptions{Replace: true, Hairpin: &on})
			failpoint = func(string) error { return nil }
			if !errors.Is(err, injected) {
				t.Fatalf("attached=%v %s: err %v, want the injected failure", attached, step, err)
			}
			if after := snapshot(t, ns, root, "ens33"); !before.equal(after) {
				t.Errorf("attached=%v, failure %s changed the parent:\nbefore %+v\nafter  %+v", attached, step, before, after)
			}
		}
		if attached {
			var n []tables.Network
			ns.Do(func() error {
				h, err := Open(root, "ens33")
				if err != nil {
					return err
				}
				defer h.Close()
				n, err = h.Tables.Networks()
				return err
			})
			if len(n) != 1 {
				t.Errorf("networks after failed runs: %+v", n)
			}
		}
	}
}

// Readers (status, stats, a Prometheus scrape) go on while a writer holds
// the root for endpoint changes, and wait only for attach/detach.
func TestReadersDoNotWaitForChanges(t *testing.T) {
	ns, root := newParent(t)
	err := ns.Do(func() error {
		_, err := Attach(AttachOptions{Root: root, Parent: "ens33"})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func(old time.Duration) { state.LockTimeout = old }(state.LockTimeout)
	state.LockTimeout = 200 * time.Millisecond

	err = ns.Do(func() error {
		h, err := Open(root, "ens33") // an endpoint add in progress
		if err != nil {
			return err
		}
		defer h.Close()
		if _, err := Snapshots(root, ""); err != nil {
			return fmt.Errorf("stats during a change: %w", err)
		}
		if st, err := Status(root, ""); err != nil || len(st) != 1 || st[0].Error != "" {
			return fmt.Errorf("status during a change: %+v, %v", st, err)
		}
		if _, err := Networks(root); err != nil {
			return fmt.Errorf("network list during a change: %w", err)
		}
		if _, err := Open(root, "ens33"); err == nil || !strings.Contains(err.Error(), "(pid ") {
			return fmt.Errorf("a second writer: %v; want it to wait, then name the holder", err)
		}
		if _, err := Attach(AttachOptions{Root: root, Parent: "ens33"}); err == nil {
			return errors.New("attach did not wait for the writer")
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
}
