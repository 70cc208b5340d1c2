package test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cilium/ebpf/link"

	"github.com/xmacvlan/xmacvlan/internal/ethtool"
	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// The CLI exits after attach; the pinned links keep the datapath running,
// and status (a new process) finds everything.
func TestPinsOutliveTheCLI(t *testing.T) {
	l := newLab(t)
	h := l.host()
	for _, args := range [][]string{
		{"attach", h.parent, "--xdp", "on"},
		{"network", "create", "lan", "--parent", h.parent, "--subnet", "10.0.0.0/24", "--gateway", "10.0.0.1"},
	} {
		if out, err := h.cli(args...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	t.Cleanup(func() { h.cli("detach", "--force", h.parent) })
	c := h.container("lan", "", "10.0.0.2/24", false)
	if err := ping(l.sw, c.ip); err != nil {
		t.Fatal(err)
	}
	out, err := h.cli("status", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var sts []loader.ParentStatus
	if err := json.Unmarshal([]byte(out), &sts); err != nil {
		t.Fatalf("status -o json: %v\n%s", err, out)
	}
	if len(sts) != 1 || sts[0].XDP != "on" || sts[0].XDPChoice != loader.XDPOn || sts[0].Driver != "veth" || !sts[0].Present {
		t.Fatalf("status: %+v", sts)
	}
	progs := map[string]bool{}
	for _, lk := range sts[0].Links {
		if !lk.Alive || lk.ProgramID == 0 || lk.Tag == "" {
			t.Errorf("link %+v", lk)
		}
		progs[lk.Program] = true
	}
	for _, p := range []string{"xmv_rx_xdp_meta", "xmv_rx_tc", "xmv_ep_tx"} {
		if !progs[p] {
			t.Errorf("status lists no link running %s: %+v", p, sts[0].Links)
		}
	}
	if text, _ := h.cli("status"); !strings.Contains(text, "XDP on") || !strings.Contains(text, "XDP on: as asked (--xdp on)") {
		t.Errorf("status text does not say XDP on and why:\n%s", text)
	}
}

// Attaching again keeps the tables and the traffic: same programs, nothing
// swapped; a reload (--replace) or a different program swaps them in place
// with link.Update while a ping stream loses nothing.
func TestReattachKeepsEntriesAndTraffic(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.attach(loader.XDPOn)
	h.network("lan", 0, tables.Bridge)
	c := h.container("lan", "", "10.0.0.2/24", false)
	if err := ping(l.sw, c.ip); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() {
		out, _ := run(l.sw, "ping", "-c", "300", "-i", "0.005", "-W", "1", c.ip)
		done <- out
	}()

	res, err := h.tryAttach(loader.AttachOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.New || len(res.Upgraded) != 0 {
		t.Errorf("re-attach of the same build: new=%v upgraded=%v, want neither", res.New, res.Upgraded)
	}
	res, err = h.tryAttach(loader.AttachOptions{Replace: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Upgraded) < 3 {
		t.Errorf("reload swapped %v, want every link", res.Upgraded)
	}
	// An older build's program on the XDP link (here: the other variant).
	swapXDPProgram(t, h)
	res, err = h.tryAttach(loader.AttachOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Upgraded) != 1 || res.Upgraded[0] != "link_rx_xdp" || res.Program != "xmv_rx_xdp_meta" {
		t.Errorf("upgrade: %+v, want only link_rx_xdp back to xmv_rx_xdp_meta", res)
	}

	if out := <-done; !strings.Contains(out, " 0% packet loss") {
		t.Errorf("traffic lost during re-attach:\n%s", out)
	}
	var eps []tables.Endpoint
	h.tables(func(tb *tables.Tables) (err error) { eps, err = tb.Endpoints(); return err })
	if len(eps) != 1 || eps[0].Ifindex != c.ep.Ifindex {
		t.Errorf("endpoints after re-attach: %+v", eps)
	}
}

// swapXDPProgram puts the plain receive program on the parent's XDP link,
// as an older xmacvlan would have left it.
func swapXDPProgram(t *testing.T, h *host) {
	t.Helper()
	dir := filepath.Join(h.root, h.parent)
	dp, err := loader.LoadPinned(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer dp.Close()
	lk, err := link.LoadPinnedLink(filepath.Join(dir, "link_rx_xdp"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Close()
	if err := lk.Update(dp.Programs.XmvRxXdp); err != nil {
		t.Fatal(err)
	}
}

// Detach removes every program, link, pin and endpoint device, and gives
// the parent back its rx-vlan offload.
func TestDetachLeavesNothing(t *testing.T) {
	l := newLab(t)
	h := l.host()
	var offloadBefore bool
	h.ns.Do(func() (err error) { offloadBefore, err = ethtool.RxVLANOffload(h.parent); return err })
	on := true
	if _, err := h.tryAttach(loader.AttachOptions{Hairpin: &on}); err != nil {
		t.Fatal(err)
	}
	h.network("lan", 0, tables.Bridge)
	h.network("v10", 10, tables.Bridge)
	c1 := h.container("lan", "", "10.0.0.2/24", false)
	c2 := h.container("v10", "", "", true)
	parentIdx := mustLink(t, h.ns, h.parent).Attrs().Index
	var linkIDs []int
	for _, lk := range h.status().Links {
		linkIDs = append(linkIDs, lk.LinkID)
	}
	if len(linkIDs) != 5 { // XDP, tcx ingress, hairpin egress, two endpoints
		t.Fatalf("%d links before detach, want 5", len(linkIDs))
	}

	out, err := h.cli("detach", h.parent)
	if err == nil || !strings.Contains(out, "2 endpoints") {
		t.Fatalf("detach with endpoints should refuse: %v\n%s", err, out)
	}
	if out, err := h.cli("detach", "--force", h.parent); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(h.root, h.parent)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin directory left behind: %v", err)
	}
	for _, id := range linkIDs {
		if lk, err := link.NewFromID(link.ID(id)); err == nil {
			lk.Close()
			t.Errorf("link %d left behind", id)
		}
	}
	for _, c := range []*container{c1, c2} {
		if _, err := c.ns.NL.LinkByName("eth0"); err == nil {
			t.Errorf("endpoint veth left in %s", c.ns.Name)
		}
	}
	if x := mustLink(t, h.ns, h.parent).Attrs().Xdp; x != nil && x.Attached {
		t.Error("XDP program left on the parent")
	}
	var offloadAfter bool
	h.ns.Do(func() (err error) { offloadAfter, err = ethtool.RxVLANOffload(h.parent); return err })
	if offloadAfter != offloadBefore {
		t.Errorf("rx-vlan offload %v after detach, %v before", offloadAfter, offloadBefore)
	}
	neighs, _ := h.ns.NL.NeighList(parentIdx, 7 /* AF_BRIDGE */)
	for _, n := range neighs {
		if n.HardwareAddr.String() == c1.ep.MAC.String() || n.HardwareAddr.String() == c2.ep.MAC.String() {
			t.Errorf("endpoint MAC %s left in the parent's unicast filter", n.HardwareAddr)
		}
	}
}

// Two xmacvlan instances, in two namespaces with their own roots and the
// same parent name, do not see each other: detaching one leaves the other.
func TestTwoInstancesDoNotInterfere(t *testing.T) {
	l := newLab(t)
	a, b := l.host(), l.host()
	a.attach(loader.XDPOn)
	b.attach(loader.XDPOn)
	a.network("lan", 0, tables.Bridge)
	b.network("lan", 0, tables.Bridge)
	ca := a.container("lan", "", "10.0.0.2/24", false)
	cb := b.container("lan", "", "10.0.0.3/24", false)
	if err := ping(ca.ns, cb.ip); err != nil {
		t.Fatal(err)
	}
	if out, err := a.cli("detach", "--force", a.parent); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if err := ping(l.sw, cb.ip); err != nil {
		t.Errorf("b lost traffic when a detached: %v", err)
	}
	if st := b.status(); len(st.Links) != 3 {
		t.Errorf("b's links after a detached: %+v", st.Links)
	}
}

// Concurrent runs serialise on the root's lock: all succeed, one creates.
func TestConcurrentAttachSerialises(t *testing.T) {
	l := newLab(t)
	h := l.host()
	var wg sync.WaitGroup
	results := make(chan *loader.AttachResult, 6)
	errs := make(chan error, 6)
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := h.tryAttach(loader.AttachOptions{})
			results <- res
			errs <- err
		}()
	}
	wg.Wait()
	close(results)
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	created := 0
	for r := range results {
		if r.New {
			created++
		}
	}
	if created != 1 {
		t.Errorf("%d runs created the state, want 1", created)
	}
}

// Bad input gets a clear error and changes nothing.
func TestAttachBadInput(t *testing.T) {
	l := newLab(t)
	h := l.host()
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"attach", "nosuch0"}, "unknown parent"},
		{[]string{"attach", "../x"}, "invalid interface name"},
		{[]string{"attach", h.parent, "--xdp", "turbo"}, `invalid --xdp "turbo": want auto, on or off`},
		{[]string{"attach", h.parent, "--mode", "turbo"}, `invalid --mode "turbo"`},
		{[]string{"attach", h.parent, "--mode", "native", "--xdp", "on"}, "--mode and --xdp both given"},
		{[]string{"--bpffs", "/tmp/not-bpffs", "attach", h.parent}, "not on a bpf filesystem"},
		{[]string{"detach", h.parent}, "not attached"},
		{[]string{"network", "create", "x", "--parent", h.parent}, "not attached"},
	}
	for _, tc := range cases {
		out, err := h.cli(tc.args...)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("xmacvlan %s: %v, output %q; want an error saying %q", strings.Join(tc.args, " "), err, out, tc.want)
		}
	}
	if _, err := os.Stat(filepath.Join(h.root, h.parent)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed command left state behind")
	}
	if x := mustLink(t, h.ns, h.parent).Attrs().Xdp; x != nil && x.Attached {
		t.Error("a failed command left an XDP program")
	}
}

// The README's "run the main job" command: the demo builds the tutorial's
// topology, checks its own reachability matrix, and removes everything.
func TestDemo(t *testing.T) {
	testutil.Privileged(t)
	out, err := runCmd(xmacvlanBin, "demo")
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{"same VLAN across hosts", "vlan 10", "vlan 20", "hairpin", "DROP REASON", "Cleaning up"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if strings.Contains(out, "unexpected") {
		t.Errorf("demo matrix has unexpected results:\n%s", out)
	}
	for _, ns := range []string{"switch", "docker01", "docker02-bbox10"} {
		if _, err := os.Stat("/var/run/netns/" + ns); err == nil {
			t.Errorf("demo left namespace %s", ns)
		}
	}
	if _, err := os.Stat("/sys/fs/bpf/xmacvlan-demo"); err == nil {
		t.Error("demo left its pins")
	}
}
