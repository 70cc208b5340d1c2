// Package nsutil runs code inside another network namespace. setns(2)
// affects one OS thread, so the goroutine stays locked to its thread for
// the whole call.
package nsutil

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
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

// Open resolves a namespace given as a name under /var/run/netns, a path
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
		path = "/var/run/netns/" + spec
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

// NewNamed creates a network namespace bound at /var/run/netns/NAME, with
// lo up, without moving the caller into it.
func NewNamed(name string) (netns.NsHandle, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return 0, err
	}
	defer orig.Close()
	ns, err := netns.NewNamed(name)
	if err != nil {
		return 0, fmt.Errorf("create netns %s: %w", name, err)
	}
	if err := netns.Set(orig); err != nil {
		panic(fmt.Sprintf("cannot return to the original netns: %v", err))
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
		netns.DeleteNamed(name)
		return 0, err
	}
	return ns, nil
}
