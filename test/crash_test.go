package test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/loader"
)

// cliKilledAt runs the CLI under strace, which sends it SIGKILL on entry
// to its nth call of sc. killed says whether it died that way; otherwise
// err is the command's own result.
func (h *host) cliKilledAt(sc string, n int, args ...string) (killed bool, out string, err error) {
	cmd := exec.Command("nsenter", append([]string{"--net=" + h.ns.Path(), "strace", "-f", "-qq", "-o", "/dev/null",
		"-e", "trace=" + sc, "-e", fmt.Sprintf("inject=%s:signal=SIGKILL:when=%d", sc, n),
		xmacvlanBin, "--bpffs", h.root}, args...)...)
	b, err := cmd.CombinedOutput()
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL {
		return true, string(b), nil
	}
	return false, string(b), err
}

// killEverywhere kills `xmacvlan args` at its 1st, 2nd, ... bpf and
// sendto call until it completes unkilled; after each kill, next (the
// natural next command) must repair what the kill left, then reset puts
// the state back for the next run. It returns the number of kills.
func killEverywhere(t *testing.T, h *host, args []string, next, reset func(killedAt string) error) int {
	t.Helper()
	kills := 0
	for _, sc := range []string{"bpf", "sendto"} {
		for n := 1; ; n++ {
			at := fmt.Sprintf("%s #%d", sc, n)
			killed, out, err := h.cliKilledAt(sc, n, args...)
			if !killed {
				if err != nil {
					t.Fatalf("xmacvlan %s (not killed, %s): %v\n%s", strings.Join(args, " "), at, err, out)
				}
				if err := reset(at); err != nil {
					t.Fatalf("after a complete run: %v", err)
				}
				break
			}
			kills++
			if err := next(at); err != nil {
				t.Fatalf("killed at %s, the next command did not repair it: %v", at, err)
			}
			if err := reset(at); err != nil {
				t.Fatalf("killed at %s, then reset: %v", at, err)
			}
			if n > 500 {
				t.Fatalf("xmacvlan %s still killed at %s", strings.Join(args, " "), at)
			}
		}
	}
	return kills
}

func (h *host) cliErr(args ...string) error {
	if out, err := h.cli(args...); err != nil {
		return fmt.Errorf("xmacvlan %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return nil
}

// A SIGKILL at any bpf or netlink call of `endpoint add`, `endpoint del`,
// `attach` or `detach --force` leaves state that the natural next command
// repairs: afterwards every endpoint checks clean, gc finds nothing, no
// veth, link pin or fdb entry is left over, and the flood lists match
// (an innocent endpoint stays on its VLAN's flood list).
func TestKillAtEveryStep(t *testing.T) {
	if testing.Short() {
		t.Skip("kills four commands at every step")
	}
	l := newLab(t)

	t.Run("endpoint add", func(t *testing.T) {
		h := l.host()
		h.mustCLI("attach", h.parent)
		t.Cleanup(func() { h.cli("detach", "--force", h.parent) })
		h.mustCLI("network", "create", "lan", "--parent", h.parent, "--subnet", "10.0.0.0/24")
		innocent, c := testutil.NewNetns(t, "xc"), testutil.NewNetns(t, "xc")
		h.mustCLI("endpoint", "add", "lan", "--netns", innocent.Name, "--ip", "10.0.0.10/24")
		add := []string{"endpoint", "add", "lan", "--netns", c.Name, "--ip", "10.0.0.11/24", "--mac", "02:00:00:00:05:11"}
		kills := killEverywhere(t, h, add,
			func(string) error {
				if err := h.cliErr(add...); err != nil {
					return err
				}
				return h.consistency()
			},
			func(string) error {
				if err := h.cliErr("endpoint", "del", "lan", "--netns", c.Name); err != nil {
					return err
				}
				return h.consistency()
			})
		t.Logf("%d kills", kills)
	})

	t.Run("endpoint del", func(t *testing.T) {
		h := l.host()
		h.mustCLI("attach", h.parent)
		t.Cleanup(func() { h.cli("detach", "--force", h.parent) })
		h.mustCLI("network", "create", "lan", "--parent", h.parent, "--subnet", "10.0.0.0/24")
		// c sits between two innocents on the flood list, so that its
		// removal moves the last one into its slot.
		before, c, after := testutil.NewNetns(t, "xc"), testutil.NewNetns(t, "xc"), testutil.NewNetns(t, "xc")
		h.mustCLI("endpoint", "add", "lan", "--netns", before.Name, "--ip", "10.0.0.10/24")
		add := []string{"endpoint", "add", "lan", "--netns", c.Name, "--ip", "10.0.0.11/24"}
		del := []string{"endpoint", "del", "lan", "--netns", c.Name}
		addAfter := []string{"endpoint", "add", "lan", "--netns", after.Name, "--ip", "10.0.0.12/24"}
		h.mustCLI(add...)
		h.mustCLI(addAfter...)
		kills := killEverywhere(t, h, del,
			func(string) error {
				if err := h.cliErr(del...); err != nil {
					return err
				}
				if _, err := c.NL.LinkByName("eth0"); err == nil {
					return errors.New("the container's eth0 is still there")
				}
				return h.consistency()
			},
			func(string) error {
				if err := h.cliErr(add...); err != nil {
					return err
				}
				if err := h.cliErr("endpoint", "del", "lan", "--netns", after.Name); err != nil {
					return err
				}
				if err := h.cliErr(addAfter...); err != nil {
					return err
				}
				return h.consistency()
			})
		t.Logf("%d kills", kills)
	})

	t.Run("attach", func(t *testing.T) {
		h := l.host()
		t.Cleanup(func() { h.cli("detach", "--force", h.parent) })
		attach := []string{"attach", h.parent, "--xdp", "on"} // every link, the XDP one too
		kills := killEverywhere(t, h, attach,
			func(string) error {
				if err := h.cliErr(attach...); err != nil {
					return err
				}
				var sts []loader.ParentStatus
				err := h.ns.Do(func() (err error) { sts, err = loader.Status(h.root, h.parent); return err })
				if err != nil || len(sts) != 1 {
					return fmt.Errorf("status: %v %v", sts, err)
				}
				if len(sts[0].Links) < 2 {
					return fmt.Errorf("links after attach: %+v", sts[0].Links)
				}
				for _, lk := range sts[0].Links {
					if !lk.Alive {
						return fmt.Errorf("link %s defunct after attach", lk.Pin)
					}
				}
				return h.consistency()
			},
			func(string) error {
				if err := h.cliErr("detach", h.parent); err != nil {
					return err
				}
				return h.nothingLeft(nil)
			})
		t.Logf("%d kills", kills)
	})

	t.Run("detach --force", func(t *testing.T) {
		h := l.host()
		t.Cleanup(func() { h.cli("detach", "--force", h.parent) })
		cs := []*testutil.Netns{testutil.NewNetns(t, "xc"), testutil.NewNetns(t, "xc")}
		setup := func() error {
			if err := h.cliErr("attach", h.parent); err != nil {
				return err
			}
			if err := h.cliErr("network", "create", "lan", "--parent", h.parent); err != nil {
				return err
			}
			for _, c := range cs {
				if err := h.cliErr("endpoint", "add", "lan", "--netns", c.Name); err != nil {
					return err
				}
			}
			return nil
		}
		if err := setup(); err != nil {
			t.Fatal(err)
		}
		detach := []string{"detach", "--force", h.parent}
		kills := killEverywhere(t, h, detach,
			func(string) error {
				out, err := h.cli(detach...)
				if err != nil && !strings.Contains(out, "not attached") {
					return fmt.Errorf("%v\n%s", err, out)
				}
				return h.nothingLeft(cs)
			},
			func(string) error {
				if err := h.nothingLeft(cs); err != nil {
					return err
				}
				return setup()
			})
		t.Logf("%d kills", kills)
	})
}

// nothingLeft checks that the host's parent is detached without a trace:
// no pin directory, no outer veth, no inner end in cs, no endpoint MAC on
// the parent's unicast filter, no XDP program on the parent.
func (h *host) nothingLeft(cs []*testutil.Netns) error {
	if _, err := os.Stat(filepath.Join(h.root, h.parent)); !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("pin directory left: %v", err)
	}
	links, err := h.ns.NL.LinkList()
	if err != nil {
		return err
	}
	for _, l := range links {
		if strings.HasPrefix(l.Attrs().Name, "xmv") {
			return fmt.Errorf("veth %s left", l.Attrs().Name)
		}
		if l.Attrs().Name == h.parent && l.Attrs().Xdp != nil && l.Attrs().Xdp.Attached {
			return errors.New("XDP program left on the parent")
		}
	}
	for _, c := range cs {
		if _, err := c.NL.LinkByName("eth0"); err == nil {
			return fmt.Errorf("eth0 left in %s", c.Name)
		}
	}
	p, err := h.ns.NL.LinkByName(h.parent)
	if err != nil {
		return err
	}
	fdb, err := h.ns.NL.NeighList(p.Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		return err
	}
	for _, n := range fdb {
		if n.Flags&netlink.NTF_SELF != 0 && len(n.HardwareAddr) == 6 && n.HardwareAddr[0]&3 == 2 {
			return fmt.Errorf("fdb entry %s left on the parent", n.HardwareAddr)
		}
	}
	return nil
}
