package lifecycle

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// followRig is a parent "ens33" (a veth whose other end, "wire", is in a
// namespace of its own with 10.20.0.1) carrying one endpoint, eth0 with
// 10.20.0.5 in cont, on the untagged network.
type followRig struct {
	host, wire, cont *testutil.Netns
	root             string
	r                *Root
	mac              net.HardwareAddr
}

const endpointIP, wireIP = "10.20.0.5", "10.20.0.1"

func newFollowRig(t *testing.T) *followRig {
	testutil.Privileged(t)
	g := &followRig{host: testutil.NewNetns(t, "xf"), wire: testutil.NewNetns(t, "xf"), cont: testutil.NewNetns(t, "xf")}
	g.root = filepath.Join("/sys/fs/bpf", testutil.Name("xf"))
	g.r = &Root{Dir: g.root}
	t.Cleanup(func() {
		g.host.Do(func() error { return g.r.DetachParent("ens33", true) })
		os.RemoveAll(g.root)
	})
	g.makeParent(t)
	_, subnet, _ := net.ParseCIDR("10.20.0.0/24")
	err := g.host.Do(func() error {
		if _, err := loader.Attach(loader.AttachOptions{Root: g.root, Parent: "ens33"}); err != nil {
			return err
		}
		if _, err := g.r.CreateNetwork("ens33", NetworkSpec{Name: "lan", Subnet: subnet}); err != nil {
			return err
		}
		ep, err := g.r.AddEndpoint("lan", Spec{Netns: g.cont.Path(), IP: &net.IPNet{IP: net.ParseIP(endpointIP).To4(), Mask: subnet.Mask}})
		g.mac = ep.MAC
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	g.ping(t, g.cont, 1400, true) // the rig works, at full size
	return g
}

// makeParent creates ens33 and its wire end, both up, with the wire's
// address; again after a deletion, as a re-created NIC.
func (g *followRig) makeParent(t *testing.T) {
	t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ens33"}, PeerName: "wire", PeerNamespace: netlink.NsFd(g.wire.Handle)}
	if err := g.host.NL.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	p, err := g.host.NL.LinkByName("ens33")
	if err != nil {
		t.Fatal(err)
	}
	w, err := g.wire.NL.LinkByName("wire")
	if err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr(wireIP + "/24")
	if err := g.wire.NL.AddrAdd(w, addr); err != nil {
		t.Fatal(err)
	}
	if err := g.wire.NL.LinkSetUp(w); err != nil {
		t.Fatal(err)
	}
	if err := g.host.NL.LinkSetUp(p); err != nil {
		t.Fatal(err)
	}
}

func (g *followRig) parent(t *testing.T) netlink.Link {
	t.Helper()
	p, err := g.host.NL.LinkByName("ens33")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// setWireMTU sets the MTU of the link, both its ends, as a switch port
// and a NIC agree on it.
func (g *followRig) setWireMTU(t *testing.T, mtu int) {
	t.Helper()
	w, _ := g.wire.NL.LinkByName("wire")
	if err := g.wire.NL.LinkSetMTU(w, mtu); err != nil {
		t.Fatal(err)
	}
	if err := g.host.NL.LinkSetMTU(g.parent(t), mtu); err != nil {
		t.Fatal(err)
	}
}

func (g *followRig) inner(t *testing.T) netlink.Link {
	t.Helper()
	l, err := g.cont.NL.LinkByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (g *followRig) carrier(t *testing.T) bool {
	return g.inner(t).Attrs().RawFlags&unix.IFF_LOWER_UP != 0
}

func (g *followRig) reconcile(t *testing.T) []string {
	t.Helper()
	var changes []string
	err := g.host.Do(func() (err error) {
		changes, err = g.r.Reconcile("ens33")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("reconcile: %q", changes)
	return changes
}

// ping sends one IPv4 echo of the given total size with DF set, from ns
// to the other side, and says whether the reply came.
func (g *followRig) ping(t *testing.T, from *testutil.Netns, size int, want bool) {
	t.Helper()
	to := wireIP
	if from == g.wire {
		to = endpointIP
	}
	out, err := pingCmd(from, size, to)
	if (err == nil) != want {
		t.Fatalf("ping -M do -s %d %s from %s: reply %v, want %v\n%s", size-28, to, from.Name, err == nil, want, out)
	}
}

func pingCmd(from *testutil.Netns, size int, to string) (string, error) {
	out, err := exec.Command("nsenter", "--net="+from.Path(), "ping", "-n", "-c", "1", "-W", "2", "-M", "do", "-s", strconv.Itoa(size-28), to).CombinedOutput()
	return string(out), err
}

// tooBigRefused says the container's own stack refuses a datagram of
// size bytes (EMSGSIZE: "message too long") instead of sending it.
func (g *followRig) tooBigRefused(t *testing.T, size int) bool {
	t.Helper()
	out, err := pingCmd(g.cont, size, wireIP)
	return err != nil && strings.Contains(out, "message too long")
}

func (g *followRig) hasFDB(t *testing.T) bool {
	t.Helper()
	fdb, err := g.host.NL.NeighList(g.parent(t).Attrs().Index, unix.AF_BRIDGE)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range fdb {
		if n.HardwareAddr.String() == g.mac.String() {
			return true
		}
	}
	return false
}

func (g *followRig) checkClean(t *testing.T) {
	t.Helper()
	err := g.host.Do(func() error {
		diffs, err := g.r.CheckEndpoint("lan", Selector{Netns: g.cont.Path()})
		if err == nil && len(diffs) > 0 {
			t.Errorf("endpoint check after reconcile: %v", diffs)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Every check first shows the fault (what the endpoint looks like before
// Reconcile), then that Reconcile repairs it.
func TestEndpointsFollowTheParent(t *testing.T) {
	g := newFollowRig(t)

	t.Log("MTU lowered to 1400")
	g.setWireMTU(t, 1400)
	if mtu := g.inner(t).Attrs().MTU; mtu != 1500 {
		t.Fatalf("eth0 MTU %d before Reconcile, want 1500 (unchanged)", mtu)
	}
	if g.tooBigRefused(t, 1401) {
		t.Fatal("a 1401-byte datagram is refused before Reconcile: the fault is gone by itself?")
	}
	g.ping(t, g.cont, 1450, false) // the fault: sent, and lost on the wire
	g.reconcile(t)
	if mtu := g.inner(t).Attrs().MTU; mtu != 1400 {
		t.Fatalf("eth0 MTU %d after Reconcile, want 1400", mtu)
	}
	g.ping(t, g.cont, 1400, true)
	if !g.tooBigRefused(t, 1401) {
		t.Fatal("a 1401-byte datagram is lost instead of refused locally (EMSGSIZE)")
	}
	g.checkClean(t)
	if changes := g.reconcile(t); len(changes) != 0 {
		t.Errorf("a second Reconcile changed %q", changes)
	}

	t.Log("MTU back to 1500, then 9000: back to the endpoint's own 1500, never above")
	g.setWireMTU(t, 1500)
	if mtu := g.inner(t).Attrs().MTU; mtu != 1400 {
		t.Fatalf("eth0 MTU %d before Reconcile, want 1400", mtu)
	}
	g.reconcile(t)
	if mtu := g.inner(t).Attrs().MTU; mtu != 1500 {
		t.Fatalf("eth0 MTU %d after Reconcile, want 1500", mtu)
	}
	g.ping(t, g.cont, 1500, true)
	g.setWireMTU(t, 9000)
	g.reconcile(t)
	if mtu := g.inner(t).Attrs().MTU; mtu != 1500 {
		t.Fatalf("eth0 MTU %d with the parent at 9000, want its own 1500", mtu)
	}
	g.setWireMTU(t, 1500)

	t.Log("parent down, then up")
	if err := g.host.NL.LinkSetDown(g.parent(t)); err != nil {
		t.Fatal(err)
	}
	if !g.carrier(t) {
		t.Fatal("eth0 lost carrier before Reconcile: the fault is gone by itself?")
	}
	g.reconcile(t)
	if g.carrier(t) {
		t.Fatal("eth0 has carrier with its parent down")
	}
	if err := g.host.NL.LinkSetUp(g.parent(t)); err != nil {
		t.Fatal(err)
	}
	if g.carrier(t) {
		t.Fatal("eth0 has carrier again before Reconcile")
	}
	g.reconcile(t)
	if !g.carrier(t) {
		t.Fatal("eth0 has no carrier with its parent up again")
	}
	g.ping(t, g.cont, 1500, true)

	t.Log("fdb entry deleted")
	e := &netlink.Neigh{LinkIndex: g.parent(t).Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, HardwareAddr: g.mac}
	if err := g.host.NL.NeighDel(e); err != nil {
		t.Fatal(err)
	}
	if g.hasFDB(t) {
		t.Fatal("fdb entry still there after its deletion")
	}
	g.reconcile(t)
	if !g.hasFDB(t) {
		t.Fatal("fdb entry not re-added")
	}

	t.Log("endpoint tcx link gone")
	// withEndpoint runs f with the parent open and its one endpoint.
	withEndpoint := func(f func(h *loader.Handle, rec tables.Record) error) {
		t.Helper()
		err := g.host.Do(func() error {
			h, err := loader.Open(g.root, "ens33")
			if err != nil {
				return err
			}
			defer h.Close()
			recs, err := h.Tables.Records()
			if err != nil || len(recs) != 1 {
				return fmt.Errorf("records %v: %v, want one", recs, err)
			}
			return f(h, recs[0])
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	linkAlive := func() (alive bool) {
		withEndpoint(func(h *loader.Handle, rec tables.Record) error {
			alive = h.EndpointLinkAlive(rec.Ifindex)
			return nil
		})
		return alive
	}
	withEndpoint(func(h *loader.Handle, rec tables.Record) error { return h.DetachEndpointLink(rec.Ifindex) })
	if linkAlive() {
		t.Fatal("tcx link alive after its detach")
	}
	g.reconcile(t)
	if !linkAlive() {
		t.Fatal("tcx link not attached again")
	}
	g.ping(t, g.cont, 1500, true)

	t.Log("parent deleted and re-created")
	old := g.parent(t).Attrs().Index
	if err := g.host.NL.LinkDel(g.parent(t)); err != nil {
		t.Fatal(err)
	}
	g.reconcile(t)
	if g.carrier(t) {
		t.Fatal("eth0 has carrier with its parent gone")
	}
	g.makeParent(t)
	if g.parent(t).Attrs().Index == old {
		t.Fatal("re-created parent has its old ifindex")
	}
	g.ping(t, g.wire, 100, false) // nothing attached to the new NIC yet
	// That failure is cached by the wire's ARP (FAILED) for a while.
	if out, err := exec.Command("ip", "-n", g.wire.Name, "neigh", "flush", "dev", "wire").CombinedOutput(); err != nil {
		t.Fatalf("neigh flush: %v\n%s", err, out)
	}
	changes := g.reconcile(t)
	if len(changes) == 0 || !strings.Contains(changes[0], "attached again") {
		t.Fatalf("changes %q: want the datapath attached again first", changes)
	}
	if !g.carrier(t) || !g.hasFDB(t) {
		t.Fatalf("after re-creation: carrier %v, fdb entry %v", g.carrier(t), g.hasFDB(t))
	}
	g.ping(t, g.wire, 100, true) // a frame from the wire reaches the endpoint
	g.ping(t, g.cont, 1500, true)
	g.checkClean(t)
	withEndpoint(func(h *loader.Handle, rec tables.Record) error {
		l, err := g.host.NL.LinkByIndex(rec.Ifindex)
		if err == nil && l.Attrs().Group != outerGroup(g.parent(t).Attrs().Index) {
			t.Errorf("outer veth in group %#x, want the re-created parent's %#x", l.Attrs().Group, outerGroup(g.parent(t).Attrs().Index))
		}
		return err
	})
}

// A writer command (here network create) makes the endpoints follow the
// parent before it does its own work, and says what it changed.
func TestWriterFollowsTheParent(t *testing.T) {
	g := newFollowRig(t)
	g.setWireMTU(t, 1400)
	var heard []string
	g.r.Followed = func(c string) { heard = append(heard, c) }
	err := g.host.Do(func() error {
		_, err := g.r.CreateNetwork("ens33", NetworkSpec{Name: "v7", VLAN: 7})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if mtu := g.inner(t).Attrs().MTU; mtu != 1400 {
		t.Fatalf("eth0 MTU %d after network create, want 1400", mtu)
	}
	if len(heard) != 1 || !strings.Contains(heard[0], "MTU 1500 -> 1400") {
		t.Errorf("heard %q, want one MTU change", heard)
	}

	// While the parent is as the endpoints last followed it, a writer
	// visits no endpoint (so it costs nothing at 4,096 endpoints): a
	// missing fdb entry waits for Reconcile (watch, attach).
	e := &netlink.Neigh{LinkIndex: g.parent(t).Attrs().Index, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF, State: netlink.NUD_PERMANENT, HardwareAddr: g.mac}
	if err := g.host.NL.NeighDel(e); err != nil {
		t.Fatal(err)
	}
	heard = nil
	err = g.host.Do(func() error { return g.r.DeleteNetwork("v7", false) })
	if err != nil {
		t.Fatal(err)
	}
	if len(heard) != 0 || g.hasFDB(t) {
		t.Errorf("a writer with the parent unchanged visited the endpoints: heard %q", heard)
	}
	if changes := g.reconcile(t); len(changes) != 1 || !g.hasFDB(t) {
		t.Errorf("Reconcile: %q, want the fdb entry re-added", changes)
	}
}

// `xmacvlan watch`, as a separate process, follows the parent within
// seconds and stops cleanly on SIGTERM.
func TestWatchFollowsTheParent(t *testing.T) {
	g := newFollowRig(t)
	bin := filepath.Join(t.TempDir(), "xmacvlan")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/xmacvlan").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	cmd := exec.Command("nsenter", "--net="+g.host.Path(), bin, "--bpffs", g.root, "watch", "--interval", "0")
	stderr, _ := cmd.StderrPipe()
	var stdout strings.Builder
	cmd.Stdout = &stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			t.Log("watch:", sc.Text())
			if strings.Contains(sc.Text(), "following") {
				select {
				case ready <- sc.Text():
				default:
				}
			}
		}
		exited <- cmd.Wait()
	}()
	select {
	case <-ready:
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not start within 10s")
	}

	within := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); !ok(); time.Sleep(50 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 5s", what)
			}
		}
	}
	g.setWireMTU(t, 1400)
	within("eth0 MTU 1400", func() bool { return g.inner(t).Attrs().MTU == 1400 })
	g.ping(t, g.cont, 1400, true)
	if !g.tooBigRefused(t, 1401) {
		t.Fatal("a 1401-byte datagram is lost instead of refused locally (EMSGSIZE)")
	}
	g.setWireMTU(t, 1500)
	within("eth0 MTU 1500", func() bool { return g.inner(t).Attrs().MTU == 1500 })
	g.host.NL.LinkSetDown(g.parent(t))
	within("eth0 carrier off", func() bool { return !g.carrier(t) })
	g.host.NL.LinkSetUp(g.parent(t))
	within("eth0 carrier on", func() bool { return g.carrier(t) })

	if err := g.host.NL.LinkDel(g.parent(t)); err != nil {
		t.Fatal(err)
	}
	within("eth0 carrier off with the parent gone", func() bool { return !g.carrier(t) })
	g.makeParent(t)
	within("eth0 carrier on with the parent re-created", func() bool { return g.carrier(t) })
	g.ping(t, g.wire, 100, true) // attached again: a frame from the wire reaches the endpoint

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("watch exited with %v after SIGTERM", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("watch still running 5s after SIGTERM")
	}
	for _, want := range []string{"MTU 1500 -> 1400", "MTU 1400 -> 1500", "parent is gone", "attached again"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("watch printed %q, want %q", stdout.String(), want)
		}
	}
}
