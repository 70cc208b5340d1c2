// Package nsutil runs code inside another network namespace. setns(2)
// affects one OS thread, so the goroutine stays locked to its thread for
// the whole call.
package nsutil

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Do runs f on an OS thread inside ns. Sockets f opens stay in ns.
func Do(ns netns.NsHandle, f func() error) error {
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return err
	}
	defer orig.Close()
	if err := netns.Set(ns); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("enter netns: %w", err)
	}
	ferr := f()
	if err := netns.Set(orig); err != nil {
		// Leave the thread locked: the runtime discards it on exit.
		return fmt.Errorf("leave netns: %w", err)
	}
	runtime.UnlockOSThread()
	return ferr
}

// Open resolves a namespace given as a name under RunDir, a path
// (/proc/PID/ns/net) or a PID.
func Open(spec string) (netns.NsHandle, error) {
	path := spec
	switch {
	case spec == "":
		return 0, fmt.Errorf("no network namespace given")
	case strings.Contains(spec, "/"):
	case isPID(spec):
		path = "/proc/" + spec + "/ns/net"
	default:
		path = filepath.Join(RunDir, spec)
	}
	if _, err := os.Stat(path); err != nil {
		return 0, fmt.Errorf("network namespace %q: %w", spec, err)
	}
	ns, err := netns.GetFromPath(path)
	if err != nil {
		return 0, fmt.Errorf("network namespace %q: %w", spec, err)
	}
	return ns, nil
}

func isPID(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n > 0
}

// RunDir is where named namespaces are bound, as iproute2 keeps them
// (NETNS_RUN_DIR): `ip netns` and `nsenter --net=RunDir/NAME` find them here.
const RunDir = "/var/run/netns"

// NewNamed creates a network namespace bound at RunDir/NAME, with lo up,
// without moving the caller into it. It makes the namespace the way
// `ip netns add` does (iproute2 ip/ipnetns.c, netns_add): RunDir is first
// made a shared mount, bound onto itself if it is not a mount point yet.
// Otherwise a later `ip netns add` by anyone binds RunDir onto itself with
// our bind mounts copied underneath, and unlinking them fails with EBUSY.
// It fails if NAME exists or is not a plain file name.
func NewNamed(name string) (netns.NsHandle, error) {
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return 0, fmt.Errorf("invalid network namespace name %q", name)
	}
	if err := shareRunDir(); err != nil {
		return 0, err
	}
	path := filepath.Join(RunDir, name)
	f, err := os.OpenFile(path, os.O_RDONLY|os.O_CREATE|os.O_EXCL, 0)
	if err != nil {
		return 0, fmt.Errorf("create netns %s: %w", name, err)
	}
	f.Close()
	ns, err := newBound(path)
	if err != nil {
		os.Remove(path)
		return 0, fmt.Errorf("create netns %s: %w", name, err)
	}
	err = Do(ns, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	if err != nil {
		ns.Close()
		DeleteNamed(name)
		return 0, fmt.Errorf("netns %s: lo up: %w", name, err)
	}
	return ns, nil
}

// newBound creates a network namespace on this thread, binds it at path
// and returns the thread to the namespace it was in.
func newBound(path string) (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return 0, err
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		return 0, err
	}
	// thread-self: other threads of this process stay where they are.
	mountErr := unix.Mount("/proc/thread-self/ns/net", path, "none", unix.MS_BIND, "")
	if err := netns.Set(orig); err != nil {
		panic(fmt.Sprintf("cannot return to the original netns: %v", err))
	}
	if mountErr != nil {
		ns.Close()
		return 0, fmt.Errorf("bind mount onto %s: %w", path, mountErr)
	}
	return ns, nil
}

// shareRunDir makes RunDir a shared mount as iproute2 does: MS_SHARED
// fails with EINVAL on a directory that is no mount point, which is then
// bound onto itself. A lock on the directory keeps two of our processes
// from binding it twice.
func shareRunDir() error {
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", RunDir, err)
	}
	dir, err := os.Open(RunDir)
	if err != nil {
		return err
	}
	defer dir.Close()
	if err := unix.Flock(int(dir.Fd()), unix.LOCK_EX); err != nil {
		return fmt.Errorf("lock %s: %w", RunDir, err)
	}
	bound := false
	for {
		err := unix.Mount("", RunDir, "none", unix.MS_SHARED|unix.MS_REC, "")
		if err == nil {
			return nil
		}
		if err != unix.EINVAL || bound {
			return fmt.Errorf("make %s a shared mount: %w", RunDir, err)
		}
		if err := unix.Mount(RunDir, RunDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s onto itself: %w", RunDir, err)
		}
		bound = true
	}
}

// DeleteNamed removes the namespace bound at RunDir/NAME as `ip netns del`
// does: detach the bind mount, then unlink the file. The namespace itself
// lives on while a process or handle holds it. A name that does not exist
// is an error that wraps os.ErrNotExist.
func DeleteNamed(name string) error {
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return fmt.Errorf("invalid network namespace name %q", name)
	}
	path := filepath.Join(RunDir, name)
	unix.Unmount(path, unix.MNT_DETACH) // EINVAL when not mounted: the unlink says more
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("delete netns %s: %w", name, err)
	}
	return nil
}
