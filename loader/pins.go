// Package loader loads the embedded datapath, attaches it to a parent with
// bpf_links, pins links and tables under <root>/<parent>/, upgrades a
// running datapath in place and detaches it cleanly. Every entry point
// takes the root's lock, so concurrent CLI runs serialise.
package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultRoot is where pins live unless --bpffs says otherwise.
const DefaultRoot = "/sys/fs/bpf/xmacvlan"

// Pin names inside a parent's directory, next to the tables (named after
// their maps).
const (
	pinXDPLink    = "link_rx_xdp"  // XDP on the parent
	pinRxTCLink   = "link_rx_tc"   // tcx ingress on the parent
	pinHostTxLink = "link_host_tx" // tcx egress on the parent, while hairpin is on
	pinEpTxProg   = "prog_ep_tx"   // what endpoint links run
	pinEpLinkPref = "link_ep_"     // + outer ifindex: tcx ingress on an endpoint
)

// lockTimeout bounds how long a run waits for another one to finish.
var lockTimeout = 30 * time.Second

// failpoint lets tests fail a run at a named step, to check the rollback.
var failpoint = func(step string) error { return nil }

// checkBPFFS refuses a root that is not on a bpf filesystem: pins anywhere
// else would not outlive this process.
func checkBPFFS(root string) error {
	dir := filepath.Clean(root)
	for {
		var st unix.Statfs_t
		err := unix.Statfs(dir, &st)
		if err == nil {
			if st.Type != unix.BPF_FS_MAGIC {
				return fmt.Errorf("%s is not on a bpf filesystem; mount one with: mount -t bpf bpf /sys/fs/bpf", root)
			}
			return nil
		}
		if !errors.Is(err, unix.ENOENT) || dir == "/" {
			return fmt.Errorf("check %s: %w", dir, err)
		}
		dir = filepath.Dir(dir)
	}
}

// lockRoot creates root if needed and takes its lock (flock on the
// directory: bpffs holds no regular files).
func lockRoot(root string) (*os.File, error) {
	if err := checkBPFFS(root); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("create pin root: %w", err)
	}
	f, err := os.Open(root)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(lockTimeout)
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", root, err)
		}
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another xmacvlan has held the lock on %s for %s; try again when it is done", root, lockTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func unlock(f *os.File) {
	unix.Flock(int(f.Fd()), unix.LOCK_UN)
	f.Close()
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// checkParentName keeps a parent name from escaping the root.
func checkParentName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 15 {
		return fmt.Errorf("invalid interface name %q", name)
	}
	return nil
}

// undo collects the inverse of each step of a run, replayed in reverse
// when a later step fails.
type undo []func()

func (u *undo) push(f func()) { *u = append(*u, f) }

func (u *undo) run() {
	for i := len(*u) - 1; i >= 0; i-- {
		(*u)[i]()
	}
	*u = nil
}

// parentDirs lists the parents' directories under root (all of them, or
// only the one named), by parent name. The caller holds root's lock.
func parentDirs(root, only string) ([]string, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && (only == "" || e.Name() == only) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}
