// Package testutil holds what the privileged tests share: the privilege
// gate and network namespaces with unique names that are removed after the
// test, even when it fails.
package testutil

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/xmacvlan/xmacvlan/internal/nsutil"
	"golang.org/x/sys/unix"
)

// Privileged skips a test that needs root, BPF and namespaces when they are
// missing, except under CI=true, where a skip would hide a failure.
func Privileged(t testing.TB) {
	t.Helper()
	var missing string
	switch {
	case os.Geteuid() != 0:
		missing = "root"
	case !isBPFFS("/sys/fs/bpf"):
		missing = "bpffs at /sys/fs/bpf (mount -t bpf bpf /sys/fs/bpf)"
	}
	if missing == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("CI=true and this test needs %s: refusing to skip", missing)
	}
	t.Skipf("needs %s", missing)
}

func isBPFFS(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.BPF_FS_MAGIC
}

// Name returns prefix plus random hex, at most 15 bytes: unique across
// tests running in parallel and short enough for an interface name.
func Name(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	name := prefix + hex.EncodeToString(b)
	if len(name) > 15 {
		name = name[:15]
	}
	return name
}

// Netns is a named network namespace (/var/run/netns/Name) owned by a test.
type Netns struct {
	Name   string
	Handle netns.NsHandle
	NL     *netlink.Handle // netlink in this namespace
}

// Path is what `nsenter --net=` takes.
func (n *Netns) Path() string { return "/var/run/netns/" + n.Name }

// NewNetns creates a namespace with lo up, deleted when the test ends.
func NewNetns(t testing.TB, prefix string) *Netns {
	t.Helper()
	name := Name(prefix)
	ns, err := nsutil.NewNamed(name)
	if err != nil {
		t.Fatalf("create netns %s: %v", name, err)
	}
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		nsutil.DeleteNamed(name)
		t.Fatalf("netlink in %s: %v", name, err)
	}
	n := &Netns{Name: name, Handle: ns, NL: nl}
	t.Cleanup(func() {
		nl.Close()
		ns.Close()
		nsutil.DeleteNamed(name)
	})
	return n
}

// Do runs f on an OS thread inside the namespace. Sockets f opens stay in
// the namespace after Do returns.
func (n *Netns) Do(f func() error) error {
	return nsutil.Do(n.Handle, f)
}
