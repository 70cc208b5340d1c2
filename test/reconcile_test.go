package test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/bpf"
	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/lifecycle"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// plainNetns creates a named namespace the test holds no handle on, so
// that `ip netns del` really destroys it, as when a container dies.
func plainNetns(t *testing.T) string {
	t.Helper()
	name := testutil.Name("xd")
	if out, err := runCmd("ip", "netns", "add", name); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	t.Cleanup(func() { runCmd("ip", "netns", "del", name) })
	return name
}

func (h *host) mustCLI(args ...string) string {
	h.lab.t.Helper()
	out, err := h.cli(args...)
	if err != nil {
		h.lab.t.Fatalf("xmacvlan %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// A container died without del: its namespace is gone, and the same name
// is a new namespace. The same `endpoint add` reaps the stale holder of
// the MAC and address and succeeds, as kernel macvlan would.
func TestStaleHolderIsReaped(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.mustCLI("attach", h.parent)
	t.Cleanup(func() { h.cli("detach", "--force", h.parent) })
	h.mustCLI("network", "create", "lan", "--parent", h.parent, "--subnet", "10.0.0.0/24")
	c1 := plainNetns(t)
	add := []string{"endpoint", "add", "lan", "--netns", c1, "--ip", "10.0.0.11/24", "--mac", "02:00:00:00:05:11"}
	h.mustCLI(add...)
	if out, err := runCmd("ip", "netns", "del", c1); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := runCmd("ip", "netns", "add", c1); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	h.mustCLI(add...)
	var eps []lifecycle.EndpointStatus
	h.ns.Do(func() (err error) { eps, err = h.lc().Endpoints("lan"); return err })
	if len(eps) != 1 || eps[0].Stale {
		t.Fatalf("endpoints after the re-add: %+v, want one live", eps)
	}
	if out, err := h.cli("endpoint", "check", "lan", "--netns", c1); err != nil {
		t.Errorf("check after the re-add: %v\n%s", err, out)
	}
	if err := ping(l.sw, "10.0.0.11"); err != nil {
		t.Errorf("the re-added endpoint is not reachable: %v", err)
	}
	h.consistent(t)
}

// check reports each way an endpoint differs from its record and exits
// non-zero; gc removes the endpoints whose veth or namespace is gone and
// the leftovers no record accounts for, and says what it removed.
func TestCheckAndGC(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.mustCLI("attach", h.parent)
	t.Cleanup(func() { h.cli("detach", "--force", h.parent) })
	h.mustCLI("network", "create", "lan", "--parent", h.parent, "--subnet", "10.0.0.0/24", "--gateway", "10.0.0.1")
	var cs []string
	for i := range 4 {
		c := plainNetns(t)
		cs = append(cs, c)
		h.mustCLI("endpoint", "add", "lan", "--netns", c, "--ip", fmt.Sprintf("10.0.0.%d/24", 11+i), "--mac", fmt.Sprintf("02:00:00:00:05:%02x", 0x11+i))
	}
	for _, c := range cs {
		if out, err := h.cli("endpoint", "check", "lan", "--netns", c); err != nil || !strings.Contains(out, "ok") {
			t.Fatalf("check of a healthy endpoint: %v\n%s", err, out)
		}
	}
	if out := h.mustCLI("gc", "--dry-run"); !strings.Contains(out, "nothing to remove") {
		t.Fatalf("gc --dry-run on healthy state: %s", out)
	}
	eps := map[string]lifecycle.EndpointStatus{}
	h.ns.Do(func() error {
		all, err := h.lc().Endpoints("")
		for _, e := range all {
			eps[e.Netns] = e
		}
		return err
	})
	parentIdx := mustLink(t, h.ns, h.parent).Attrs().Index

	// Faults in a live endpoint, each reported by check.
	h.tables(func(tb *tables.Tables) error { return tb.DeleteEndpoint(eps[cs[2]].Ifindex) })
	h.ns.NL.NeighDel(&netlink.Neigh{LinkIndex: parentIdx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT, HardwareAddr: eps[cs[3]].MAC})
	c3 := testutil.Netns{Name: cs[3]}
	run(&c3, "ip", "link", "set", "eth0", "mtu", "1400")
	run(&c3, "ip", "route", "del", "default")
	for c, want := range map[string][]string{
		cs[2]: {"endpoint table", "MAC table", "flood list"},
		cs[3]: {"unicast filter", "MTU: want 1500, got 1400", "default route"},
	} {
		out, err := h.cli("endpoint", "check", "lan", "--netns", c)
		if err == nil {
			t.Errorf("check of a broken endpoint exited 0:\n%s", out)
		}
		for _, w := range want {
			if !strings.Contains(out, w) {
				t.Errorf("check does not report %q:\n%s", w, out)
			}
		}
	}

	// Gone: one outer veth deleted, one namespace deleted.
	if err := h.ns.NL.LinkDel(mustLink(t, h.ns, eps[cs[0]].Outer)); err != nil {
		t.Fatal(err)
	}
	if out, err := h.cli("endpoint", "check", "lan", "--netns", cs[0]); err == nil || !strings.Contains(out, "outer veth") {
		t.Errorf("check with the outer veth gone: %v\n%s", err, out)
	}
	runCmd("ip", "netns", "del", cs[1])
	err := eventually(5*time.Second, func() error {
		if _, err := h.ns.NL.LinkByName(eps[cs[1]].Outer); err == nil {
			return fmt.Errorf("veth of a deleted namespace still there")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if out := h.mustCLI("endpoint", "list"); strings.Count(out, "stale") != 2 {
		t.Errorf("endpoint list does not mark the two stale endpoints:\n%s", out)
	}
	if out := h.mustCLI("status"); !strings.Contains(out, "stale endpoints: 2") {
		t.Errorf("status does not count the stale endpoints:\n%s", out)
	}

	// Leftovers no record accounts for: a veth of ours, a link pin, an
	// fdb entry.
	var h0 *loader.Handle
	h.ns.Do(func() (err error) { h0, err = loader.Open(h.root, h.parent); return err })
	orphanName := fmt.Sprintf("xmv%x000fff", parentIdx) // as an add killed after creating its veth leaves it
	orphan := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: orphanName}, PeerName: "orphanpeer"}
	if err := h.ns.NL.LinkAdd(orphan); err != nil {
		t.Fatal(err)
	}
	pinned := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "xtpin"}, PeerName: "xtpinp"}
	if err := h.ns.NL.LinkAdd(pinned); err != nil {
		t.Fatal(err)
	}
	pinIdx := mustLink(t, h.ns, "xtpin").Attrs().Index
	if err := h.ns.Do(func() error { return h0.AttachEndpointLink(pinIdx) }); err != nil {
		t.Fatal(err)
	}
	h0.Close()
	strayMAC, _ := net.ParseMAC("02:00:00:00:0e:01")
	if err := h.ns.NL.NeighAppend(&netlink.Neigh{LinkIndex: parentIdx, Family: unix.AF_BRIDGE, Flags: netlink.NTF_SELF,
		State: netlink.NUD_PERMANENT, HardwareAddr: strayMAC}); err != nil {
		t.Fatal(err)
	}

	// Not ours: a kernel macvlan on the same parent puts its MAC on the
	// parent's unicast list too.
	mv := &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "mv0", ParentIndex: parentIdx}, Mode: netlink.MACVLAN_MODE_BRIDGE}
	if err := h.ns.NL.LinkAdd(mv); err != nil {
		t.Fatal(err)
	}
	mvMAC := up(t, h.ns, "mv0").Attrs().HardwareAddr

	// The network's entry in the VLAN table lost, as a kill between the
	// two writes of network delete leaves it (gc repairs without asking
	// first; a writing command, or check, repairs it before its work).
	h.tables(func(tb *tables.Tables) error { return tb.Maps().XmvVlans.Update(uint32(0), bpf.XmacvlanVlan{}, 0) })

	dry := h.mustCLI("gc", "--dry-run")
	for _, w := range []string{cs[0], cs[1], orphanName, fmt.Sprintf("link_ep_%d", pinIdx), strayMAC.String(), "VLAN 0 disagreed"} {
		if !strings.Contains(dry, w) {
			t.Errorf("gc --dry-run does not name %s:\n%s", w, dry)
		}
	}
	if again := h.mustCLI("gc", "--dry-run"); again != dry {
		t.Errorf("gc --dry-run changed something:\n%s\nthen\n%s", dry, again)
	}
	out := h.mustCLI("gc", "-o", "json")
	var res struct{ Removed []lifecycle.Removed }
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("gc -o json: %v\n%s", err, out)
	}
	if len(res.Removed) != 6 {
		t.Errorf("gc removed %d things, want 6:\n%s", len(res.Removed), out)
	}
	if _, err := h.ns.NL.LinkByName(orphanName); err == nil {
		t.Error("gc left the orphan veth")
	}
	if _, err := os.Stat(fmt.Sprintf("%s/%s/link_ep_%d", h.root, h.parent, pinIdx)); err == nil {
		t.Error("gc left the orphan link pin")
	}
	if fdb, _ := h.ns.NL.NeighList(parentIdx, unix.AF_BRIDGE); !slices.ContainsFunc(fdb, func(n netlink.Neigh) bool {
		return n.HardwareAddr.String() == mvMAC.String()
	}) {
		t.Errorf("gc removed the macvlan's MAC %s from the parent", mvMAC)
	}
	h.ns.NL.LinkDel(mustLink(t, h.ns, "xtpin"))
	if out := h.mustCLI("gc", "--dry-run"); !strings.Contains(out, "nothing to remove") {
		t.Errorf("gc --dry-run after gc: %s", out)
	}
	// The two broken live endpoints stay: gc removes only what is gone.
	// del and add repair them.
	for i, c := range cs[2:] {
		h.mustCLI("endpoint", "del", "lan", "--netns", c)
		h.mustCLI("endpoint", "add", "lan", "--netns", c, "--ip", fmt.Sprintf("10.0.0.%d/24", 13+i))
	}
	h.consistent(t)
}

// consistent fails t unless the host's state is whole: every endpoint
// checks clean, gc finds nothing, every outer veth named like ours is an
// endpoint's.
func (h *host) consistent(t *testing.T) {
	t.Helper()
	if err := h.consistency(); err != nil {
		t.Fatal(err)
	}
}

func (h *host) consistency() error {
	lc := h.lc()
	return h.ns.Do(func() error {
		removed, err := lc.GC("", true)
		if err != nil {
			return fmt.Errorf("gc --dry-run: %w", err)
		}
		if len(removed) > 0 {
			return fmt.Errorf("gc --dry-run would remove %v", removed)
		}
		eps, err := lc.Endpoints("")
		if err != nil {
			return err
		}
		outers := map[string]bool{}
		for _, e := range eps {
			outers[e.Outer] = true
			diffs, err := lc.CheckEndpoint(e.Network, lifecycle.Selector{Netns: e.Netns, Host: e.Host, Name: e.Ifname})
			if err != nil {
				return fmt.Errorf("check %s in %s: %w", e.Ifname, e.Netns, err)
			}
			if len(diffs) > 0 {
				return fmt.Errorf("check %s in %s: %v", e.Ifname, e.Netns, diffs)
			}
		}
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			if name := l.Attrs().Name; strings.HasPrefix(name, "xmv") && !strings.Contains(name, "-") && !outers[name] {
				return fmt.Errorf("veth %s left with no endpoint", name)
			}
		}
		return nil
	})
}
