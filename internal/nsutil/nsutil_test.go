package nsutil_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/internal/nsutil"
	"github.com/xmacvlan/xmacvlan/internal/testutil"
)

// A later `ip netns add` must not pin our namespaces: both ours and its
// own are deleted afterwards. It runs where /run/netns is a plain
// directory, as after boot: on a thread with a private mount namespace and
// a fresh tmpfs on /run, so the host's /run/netns is not touched.
func TestNamedNamespacesSurviveIPNetnsAdd(t *testing.T) {
	testutil.Privileged(t)
	if _, err := exec.LookPath("ip"); err != nil {
		t.Fatalf("ip (iproute2) is not installed: %v", err)
	}
	errc := make(chan error)
	go func() {
		// Never unlocked: the thread ends with this goroutine, and its
		// mount namespace with everything mounted in it.
		runtime.LockOSThread()
		errc <- withFreshRun(surviveIPNetnsAdd)
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

func withFreshRun(f func() error) error {
	if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
		return fmt.Errorf("unshare mount namespace: %w", err)
	}
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("make / private: %w", err)
	}
	if err := unix.Mount("tmpfs", "/run", "tmpfs", 0, "mode=0755"); err != nil {
		return fmt.Errorf("tmpfs on /run: %w", err)
	}
	return f()
}

func surviveIPNetnsAdd() error {
	ours, theirs := testutil.Name("xn"), testutil.Name("xi")
	ns, err := nsutil.NewNamed(ours)
	if err != nil {
		return err
	}
	ns.Close()
	// exec forks from this locked thread: ip runs in our mount namespace.
	if out, err := exec.Command("ip", "netns", "add", theirs).CombinedOutput(); err != nil {
		nsutil.DeleteNamed(ours)
		return fmt.Errorf("ip netns add %s: %v: %s", theirs, err, out)
	}
	var errs []error
	if err := nsutil.DeleteNamed(ours); err != nil {
		errs = append(errs, fmt.Errorf("after ip netns add: %w", err))
	}
	if out, err := exec.Command("ip", "netns", "del", theirs).CombinedOutput(); err != nil {
		errs = append(errs, fmt.Errorf("ip netns del %s: %v: %s", theirs, err, out))
	}
	for _, name := range []string{ours, theirs} {
		if _, err := os.Stat(filepath.Join(nsutil.RunDir, name)); !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("%s is still in %s", name, nsutil.RunDir))
		}
	}
	return errors.Join(errs...)
}

// Names that are no plain file name in RunDir are refused.
func TestNamedNamespaceBadNames(t *testing.T) {
	for _, name := range []string{"", ".", "..", "a/b", "../x"} {
		if _, err := nsutil.NewNamed(name); err == nil {
			t.Errorf("NewNamed(%q) succeeded", name)
		}
		if err := nsutil.DeleteNamed(name); err == nil {
			t.Errorf("DeleteNamed(%q) succeeded", name)
		}
	}
}
