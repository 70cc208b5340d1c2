// Package state is the xmacvlan state root: a directory on a bpf
// filesystem with one subdirectory per attached parent, the names of the
// pins in them, and the locks that order the commands using them.
//
// Two flocks (flock(2) on directory fds: bpffs holds no regular files):
//
//   - the layout lock, on the root directory: readers take it shared,
//     attach and detach (which create and remove pins) exclusive;
//   - the writer lock, on the subdirectory WriterLockDir: every writer
//     takes it exclusive, so changes serialise.
//
// So `status`, `stats` and a Prometheus scrape wait only for an attach or
// a detach, never for an `endpoint add`. Writers take the writer lock
// before the layout lock, so two writers never deadlock.
package state

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultRoot is where pins live unless --bpffs says otherwise.
const DefaultRoot = "/sys/fs/bpf/xmacvlan"

// Pin names inside a parent's directory, next to the tables (which the
// tables package names after their maps).
const (
	PinXDPLink      = "link_rx_xdp"  // XDP on the parent
	PinRxTCLink     = "link_rx_tc"   // tcx ingress on the parent
	PinHostTxLink   = "link_host_tx" // tcx egress on the parent, while hairpin is on
	PinEpTxProg     = "prog_ep_tx"   // what endpoint links run
	PinEpLinkPrefix = "link_ep_"     // + outer ifindex: tcx ingress on an endpoint
	PinLinkPrefix   = "link_"        // every link pin
)

// WriterLockDir is the writer lock's directory under the root. It is 16
// bytes long, so no interface (IFNAMSIZ: at most 15) can have its name.
const WriterLockDir = "lock_for_writers"

// Access is what a command does with the root.
type Access int

const (
	// Read reads tables and links: the layout lock, shared.
	Read Access = iota
	// Change changes tables and endpoint links of attached parents: the
	// writer lock, then the layout lock shared.
	Change
	// Reshape attaches or detaches parents, creating and removing their
	// pins: the writer lock, then the layout lock exclusive.
	Reshape
)

func (a Access) String() string {
	return [...]string{"read", "change", "reshape"}[a]
}

// LockTimeout bounds how long Open waits for another command.
var LockTimeout = 30 * time.Second

// ErrNoRoot is returned by Open(Read) for a root that does not exist:
// nothing is attached there.
var ErrNoRoot = errors.New("no state root")

// Root is an open state root, locked for its Access until Close.
type Root struct {
	Dir    string
	Access Access
	layout *os.File
	writer *os.File
}

// Open locks the root at dir for access. Change and Reshape create dir
// (and the writer lock's directory) if needed; Read on a missing root
// returns ErrNoRoot. After LockTimeout it gives up with an error naming
// the command that holds the lock.
func Open(dir string, access Access) (*Root, error) {
	// Checked first, so that a reader where no bpffs is mounted (or
	// under `ip netns exec`) is told so rather than "nothing attached".
	if err := checkBPFFS(dir); err != nil {
		return nil, err
	}
	if access == Read {
		if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: %w", dir, ErrNoRoot)
		}
	}
	r := &Root{Dir: dir, Access: access}
	if access != Read {
		if err := os.MkdirAll(filepath.Join(dir, WriterLockDir), 0o700); err != nil {
			return nil, fmt.Errorf("create state root: %w", err)
		}
		w, err := lock(filepath.Join(dir, WriterLockDir), unix.LOCK_EX)
		if err != nil {
			return nil, err
		}
		r.writer = w
	}
	how := unix.LOCK_SH
	if access == Reshape {
		how = unix.LOCK_EX
	}
	l, err := lock(dir, how)
	if err != nil {
		r.Close()
		return nil, err
	}
	r.layout = l
	return r, nil
}

// Close releases the locks.
func (r *Root) Close() {
	for _, f := range []*os.File{r.layout, r.writer} {
		if f != nil {
			unix.Flock(int(f.Fd()), unix.LOCK_UN)
			f.Close()
		}
	}
	r.layout, r.writer = nil, nil
}

// ParentDir is the directory of a parent's pins.
func (r *Root) ParentDir(parent string) string { return filepath.Join(r.Dir, parent) }

// Pin is the path of a pin in a parent's directory.
func (r *Root) Pin(parent, name string) string { return filepath.Join(r.Dir, parent, name) }

// Parents lists the parents' directories (all, or only the one named), by
// parent name.
func (r *Root) Parents(only string) ([]string, error) {
	entries, err := os.ReadDir(r.Dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() && e.Name() != WriterLockDir && (only == "" || e.Name() == only) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// EndpointLinkPin is the name of the pin of an endpoint's tcx link.
func EndpointLinkPin(ifindex int) string { return PinEpLinkPrefix + strconv.Itoa(ifindex) }

// EndpointLinkIfindex parses a pin name made by EndpointLinkPin.
func EndpointLinkIfindex(pin string) (int, bool) {
	s, ok := strings.CutPrefix(pin, PinEpLinkPrefix)
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(s)
	return n, err == nil && n > 0
}

// CheckParentName refuses what cannot be an interface name
// (dev_valid_name in net/core/dev.c), so that a name never escapes the
// root.
func CheckParentName(name string) error {
	if name == "" || name == "." || name == ".." || len(name) > 15 ||
		strings.ContainsAny(name, "/:\x00 \t\n\v\f\r") {
		return fmt.Errorf("invalid interface name %q", name)
	}
	return nil
}

// checkBPFFS refuses a root that is not on a bpf filesystem: pins anywhere
// else would not outlive this process.
func checkBPFFS(root string) error {
	dir := filepath.Clean(root)
	for {
		var st unix.Statfs_t
		err := unix.Statfs(dir, &st)
		if err == nil {
			if st.Type != unix.BPF_FS_MAGIC {
				return fmt.Errorf("%s is not on a bpf filesystem; mount one with: mount -t bpf bpf /sys/fs/bpf "+
					"(under `ip netns exec`, which mounts a /sys of its own, run xmacvlan with `nsenter --net=/var/run/netns/NAME` instead)", root)
			}
			return nil
		}
		if !errors.Is(err, unix.ENOENT) || dir == "/" {
			return fmt.Errorf("check %s: %w", dir, err)
		}
		dir = filepath.Dir(dir)
	}
}

// lock takes a flock on the directory at path, polling until LockTimeout.
func lock(path string, how int) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(LockTimeout)
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if time.Now().After(deadline) {
			holder := holders(f)
			f.Close()
			return nil, fmt.Errorf("%s has held the lock on %s for over %s; try again when it is done", holder, path, LockTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// holders names the processes that hold a flock on f, from /proc/locks
// ("1: FLOCK  ADVISORY  WRITE 1234 00:21:5678 0 EOF").
func holders(f *os.File) string {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "another xmacvlan"
	}
	id := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	locks, err := os.Open("/proc/locks")
	if err != nil {
		return "another xmacvlan"
	}
	defer locks.Close()
	var who []string
	seen := map[string]bool{}
	s := bufio.NewScanner(locks)
	for s.Scan() {
		fields := strings.Fields(s.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[5] != id || seen[fields[4]] {
			continue
		}
		seen[fields[4]] = true
		cmd, _ := os.ReadFile("/proc/" + fields[4] + "/cmdline")
		args := strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))
		if args == "" {
			args = "a process"
		}
		who = append(who, fmt.Sprintf("%q (pid %s)", args, fields[4]))
	}
	if len(who) == 0 {
		return "another xmacvlan"
	}
	return strings.Join(who, " and ")
}
