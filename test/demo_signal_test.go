package test

import (
	"bufio"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/internal/demo"
	"github.com/xmacvlan/xmacvlan/internal/nsutil"
	"github.com/xmacvlan/xmacvlan/internal/testutil"
)

// A demo whose reader goes away (`xmacvlan demo | head -3`), or that is
// interrupted or terminated, removes everything it built before it exits.
func TestDemoCleansUpWhenItsReaderGoes(t *testing.T) {
	testutil.Privileged(t)
	for _, tc := range []struct {
		name string
		stop func(*exec.Cmd, *os.File) // after the first lines were read
	}{
		{"reader closes", func(_ *exec.Cmd, r *os.File) { r.Close() }},
		{"SIGINT", func(c *exec.Cmd, _ *os.File) { c.Process.Signal(syscall.SIGINT) }},
		{"SIGTERM", func(c *exec.Cmd, _ *os.File) { c.Process.Signal(syscall.SIGTERM) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			r, w, err := os.Pipe()
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			cmd := exec.CommandContext(ctx, xmacvlanBin, "demo")
			cmd.Stdout = w
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			w.Close()
			t.Cleanup(func() { demo.Clean() }) // only if the demo failed to
			lines := bufio.NewScanner(r)
			for i := 0; i < 3; i++ {
				if !lines.Scan() {
					t.Fatalf("demo printed %d lines, then: %v", i, lines.Err())
				}
			}
			tc.stop(cmd, r)
			err = cmd.Wait()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || ctx.Err() != nil {
				t.Fatalf("demo: %v (want it to stop with an error status)", err)
			}
			if st := exit.Sys().(syscall.WaitStatus); st.Signaled() {
				t.Errorf("demo was killed by %v instead of stopping", st.Signal())
			}
			checkNoDemoLeft(t)
		})
	}
}

func checkNoDemoLeft(t *testing.T) {
	t.Helper()
	for _, ns := range demo.Namespaces() {
		if _, err := os.Stat(filepath.Join(nsutil.RunDir, ns)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("demo left namespace %s", ns)
		}
	}
	if _, err := os.Stat(demo.Root); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("demo left its pins in %s", demo.Root)
	}
	// Its veths live in its namespaces; none may be in ours.
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		for _, ns := range demo.Namespaces() {
			if l.Attrs().Name == "p-"+ns {
				t.Errorf("demo left veth %s", l.Attrs().Name)
			}
		}
	}
}
