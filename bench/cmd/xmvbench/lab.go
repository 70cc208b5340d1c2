package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/internal/nsutil"
)

// Everything the benchmark creates is named xb-<pid>-…: namespaces under
// /var/run/netns and the pin root under /sys/fs/bpf. No interface is
// created in the caller's namespace, so deleting the namespaces and the
// pin root leaves nothing behind. The pid lets the sweeper tell the
// leftovers of a dead run from the state of a live one.
const namePrefix = "xb-"

const (
	netnsDir = "/var/run/netns"
	bpffsDir = "/sys/fs/bpf"
	wireDev  = "wire0" // the wire's end, in the wire namespace
)

// parent is the parent NIC, in the host namespace.
var parent = fmt.Sprintf("xb%d", os.Getpid())

// The untagged segment: the wire (switch and the other hosts) has .1,
// endpoint i has .10+i.
var (
	wireIP     = net.IPv4(10, 77, 0, 1)
	subnetMask = net.CIDRMask(24, 32)
)

// ns is a named network namespace the benchmark owns.
type ns struct {
	name string
	h    netns.NsHandle
	nl   *netlink.Handle
}

func (n *ns) path() string { return filepath.Join(netnsDir, n.name) }

// do runs f on an OS thread inside the namespace.
func (n *ns) do(f func() error) error { return nsutil.Do(n.h, f) }

// command builds a command that runs inside the namespace. nsenter keeps
// /sys/fs/bpf visible, unlike `ip netns exec`. The child dies with us.
func (n *ns) command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=" + n.path(), name}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return cmd
}

// run runs a command inside the namespace and returns its output.
func (n *ns) run(ctx context.Context, name string, args ...string) (string, error) {
	out, err := n.command(ctx, name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s in %s: %v: %s", name, strings.Join(args, " "), n.name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func (n *ns) link(name string) (netlink.Link, error) {
	l, err := n.nl.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("%s in %s: %w", name, n.name, err)
	}
	return l, nil
}

// newNS creates a named namespace with lo up, without moving the caller.
func newNS(name string) (*ns, error) {
	h, err := nsutil.NewNamed(name)
	if err != nil {
		return nil, err
	}
	nl, err := netlink.NewHandleAt(h)
	if err != nil {
		h.Close()
		nsutil.DeleteNamed(name)
		return nil, err
	}
	return &ns{name: name, h: h, nl: nl}, nil
}

// close deletes the namespace; its interfaces go with it.
func (n *ns) close() error {
	n.nl.Close()
	n.h.Close()
	return deleteNamed(n.name)
}

// deleteNamed deletes a named namespace, trying again for a few seconds
// while its file is busy, and says why it failed: how many mounts still
// sit on the file in this mount namespace (a bind mount stacked on ours,
// e.g. by an `ip netns add` that bound /run/netns onto itself before it
// was a shared mount, keeps the file busy).
func deleteNamed(name string) error {
	var err error
	for delay := 10 * time.Millisecond; ; delay *= 2 {
		err = nsutil.DeleteNamed(name)
		if err == nil || errors.Is(err, os.ErrNotExist) || !errors.Is(err, unix.EBUSY) || delay > 2*time.Second {
			break
		}
		time.Sleep(delay)
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		if n := mountsOn(filepath.Join(netnsDir, name)); n > 0 {
			err = fmt.Errorf("%w (still %d mount(s) on it in this mount namespace)", err, n)
		}
	}
	return err
}

// mountsOn counts the mounts on path in this mount namespace.
func mountsOn(path string) int {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		// mountinfo: ID PARENT MAJ:MIN ROOT MOUNTPOINT ...
		if f := strings.Fields(line); len(f) > 4 && (f[4] == path || f[4] == strings.Replace(path, "/var/run/", "/run/", 1)) {
			n++
		}
	}
	return n
}

// lab is the topology: a wire namespace whose veth feeds the parent in a
// host namespace, and container namespaces for the endpoints.
type lab struct {
	prefix     string // xb-<pid>-
	root       string // xmacvlan pin root
	wire, host *ns
	containers []*ns
	wireMAC    net.HardwareAddr
	wireIndex  int // wire0's ifindex, in the wire namespace
	iperf      *exec.Cmd
	iperfDone  chan struct{} // closed when the iperf3 server exits
}

func newLab(ctx context.Context) (l *lab, err error) {
	prefix := fmt.Sprintf("%s%d-", namePrefix, os.Getpid())
	l = &lab{prefix: prefix, root: filepath.Join(bpffsDir, strings.TrimSuffix(prefix, "-"))}
	defer func() {
		if err != nil {
			l.close()
		}
	}()
	if l.wire, err = newNS(prefix + "wire"); err != nil {
		return l, err
	}
	if l.host, err = newNS(prefix + "host"); err != nil {
		return l, err
	}
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: wireDev, MTU: 1500}, PeerName: parent,
		PeerNamespace: netlink.NsFd(l.host.h)}
	if err := l.wire.nl.LinkAdd(v); err != nil {
		return l, fmt.Errorf("wire veth: %w", err)
	}
	w, err := l.wire.link(wireDev)
	if err != nil {
		return l, err
	}
	l.wireMAC, l.wireIndex = w.Attrs().HardwareAddr, w.Attrs().Index
	if err := l.wire.nl.AddrAdd(w, &netlink.Addr{IPNet: &net.IPNet{IP: wireIP, Mask: subnetMask}}); err != nil {
		return l, err
	}
	for _, side := range []struct {
		n   *ns
		dev string
	}{{l.wire, wireDev}, {l.host, parent}} {
		link, err := side.n.link(side.dev)
		if err == nil {
			err = side.n.nl.LinkSetUp(link)
		}
		if err != nil {
			return l, err
		}
		// The wire offloads, the same for every path (bench/README.md):
		// frames cross the wire MTU-sized with full checksums, as on a
		// real wire (and as an XDP redirect needs); receivers aggregate
		// with GRO, which also gives a veth the NAPI context that frames
		// from the XDP generator need. GRO only after the link is up.
		if _, err := side.n.run(ctx, "ethtool", "-K", side.dev, "tx", "off", "gso", "on", "gro", "on"); err != nil {
			return l, err
		}
	}
	return l, l.startIperf()
}

// startIperf starts the iperf3 server that answers TCP tests on the wire
// (again, if one died: iperf3 3.12's server sometimes exits after a test).
func (l *lab) startIperf() error {
	if l.iperf != nil {
		select {
		case <-l.iperfDone:
		default:
			return nil // still running
		}
	}
	l.iperf = l.wire.command(context.Background(), "iperf3", "--server", "--bind", wireIP.String())
	if err := l.iperf.Start(); err != nil {
		return fmt.Errorf("iperf3 server: %w", err)
	}
	done := make(chan struct{})
	l.iperfDone = done
	go func(cmd *exec.Cmd) {
		cmd.Wait()
		close(done)
	}(l.iperf)
	time.Sleep(100 * time.Millisecond) // until it listens
	return nil
}

// container returns container namespace i, creating those missing.
func (l *lab) container(i int) (*ns, error) {
	for len(l.containers) <= i {
		c, err := newNS(fmt.Sprintf("%sc%d", l.prefix, len(l.containers)))
		if err != nil {
			return nil, err
		}
		l.containers = append(l.containers, c)
	}
	return l.containers[i], nil
}

// parentStats reads the parent's counters.
func (l *lab) parentStats() (*netlink.LinkStatistics, error) {
	p, err := l.host.link(parent)
	if err != nil {
		return nil, err
	}
	if p.Attrs().Statistics == nil {
		return nil, errors.New("no statistics for the parent")
	}
	return p.Attrs().Statistics, nil
}

func (l *lab) setPromisc(on bool) error {
	p, err := l.host.link(parent)
	if err != nil {
		return err
	}
	if on {
		return l.host.nl.SetPromiscOn(p)
	}
	return l.host.nl.SetPromiscOff(p)
}

// close removes everything the lab made. It is safe on a half-built lab.
func (l *lab) close() []error {
	var errs []error
	if l.iperf != nil && l.iperf.Process != nil {
		l.iperf.Process.Kill()
		<-l.iperfDone
	}
	for _, c := range l.containers {
		if err := c.close(); err != nil {
			errs = append(errs, err)
		}
	}
	l.containers = nil
	for _, n := range []*ns{l.host, l.wire} {
		if n != nil {
			if err := n.close(); err != nil {
				errs = append(errs, err)
			}
		}
	}
	l.host, l.wire = nil, nil
	// The links pinned here are defunct once their devices are gone.
	if err := os.RemoveAll(l.root); err != nil {
		errs = append(errs, err)
	}
	return errs
}

var leftoverRE = regexp.MustCompile(`^` + namePrefix + `(\d+)(-|$)`)

// sweep removes what earlier runs left behind (namespaces and pin roots
// named xb-<pid>…) when their process is gone. Runs of the benchmark that
// are alive keep theirs.
func sweep() []string {
	var removed []string
	for _, dir := range []string{netnsDir, bpffsDir} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			m := leftoverRE.FindStringSubmatch(e.Name())
			if m == nil {
				continue
			}
			pid, _ := strconv.Atoi(m[1])
			if pid == os.Getpid() || benchAlive(pid) {
				continue
			}
			var err error
			if dir == netnsDir {
				err = deleteNamed(e.Name())
			} else {
				err = os.RemoveAll(filepath.Join(dir, e.Name()))
			}
			if err == nil {
				removed = append(removed, filepath.Join(dir, e.Name()))
			} else {
				logf("cannot remove a leftover of an earlier run: %v", err)
			}
		}
	}
	return removed
}

// benchAlive says whether pid is a running benchmark (not a reused pid).
func benchAlive(pid int) bool {
	if unix.Kill(pid, 0) != nil {
		return false
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return err == nil && strings.TrimSpace(string(comm)) == filepath.Base(os.Args[0])
}

// leftovers lists what this run still has, for the final check.
func (l *lab) leftovers() []string {
	var out []string
	for _, dir := range []string{netnsDir, bpffsDir} {
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			if e.Name() == filepath.Base(l.root) || strings.HasPrefix(e.Name(), l.prefix) {
				out = append(out, filepath.Join(dir, e.Name()))
			}
		}
	}
	return out
}
