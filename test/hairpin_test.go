package test

import (
	"net"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/lifecycle"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// The seed's limitation: a macvlan container cannot reach its own host,
// because frames to the parent's MAC leave on the wire and never return.
func TestKernelMacvlanCannotReachItsHost(t *testing.T) {
	l := newLab(t)
	h := l.host()
	addr(t, h.ns, h.parent, "10.0.0.10/24")
	c := testutil.NewNetns(t, "xc")
	mv := &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "mv0", ParentIndex: mustLink(t, h.ns, h.parent).Attrs().Index}, Mode: netlink.MACVLAN_MODE_BRIDGE}
	if err := h.ns.NL.LinkAdd(mv); err != nil {
		t.Fatalf("macvlan: %v", err)
	}
	if err := h.ns.NL.LinkSetNsFd(mustLink(t, h.ns, "mv0"), int(c.Handle)); err != nil {
		t.Fatal(err)
	}
	up(t, c, "mv0")
	addr(t, c, "mv0", "10.0.0.3/24")

	if err := ping(c, "10.0.0.1"); err != nil {
		t.Fatalf("the macvlan container cannot reach the wire either, the setup is broken: %v", err)
	}
	if err := ping(c, "10.0.0.10"); err == nil {
		t.Fatal("a macvlan container reached its own host: the limitation this test documents is gone")
	}
	if err := ping(h.ns, "10.0.0.3"); err == nil {
		t.Fatal("the host reached its macvlan container")
	}
}

// The same topology with xmacvlan: with hairpin, host and container talk
// both ways (IPv4, IPv6, TCP); without it, they fail as macvlan does.
func TestHairpinHostAndContainer(t *testing.T) {
	l := newLab(t)
	h := l.host()
	addr(t, h.ns, h.parent, "10.0.0.10/24")
	on, off := true, false
	if _, err := h.tryAttach(loader.AttachOptions{Hairpin: &on}); err != nil {
		t.Fatal(err)
	}
	h.network("lan", 0, tables.Bridge)
	c := h.container("lan", "", "10.0.0.2/24", false)

	if err := ping(c.ns, "10.0.0.10"); err != nil {
		t.Errorf("container -> host, IPv4: %v", err)
	}
	if err := ping(h.ns, c.ip); err != nil {
		t.Errorf("host -> container, IPv4: %v", err)
	}
	hostLL, contLL := linkLocal(t, h.ns, h.parent), linkLocal(t, c.ns, "eth0")
	if err := ping(c.ns, hostLL+"%eth0"); err != nil {
		t.Errorf("container -> host, IPv6 link-local: %v", err)
	}
	if err := ping(h.ns, contLL+"%"+h.parent); err != nil {
		t.Errorf("host -> container, IPv6 link-local: %v", err)
	}
	tcpTransfer(t, h.ns, c.ns, "10.0.0.10:5201", 8<<20)
	tcpTransfer(t, c.ns, h.ns, "10.0.0.2:5202", 8<<20)
	if err := ping(c.ns, "10.0.0.1"); err != nil {
		t.Errorf("container -> wire with hairpin on: %v", err)
	}
	var events []tables.Count
	h.tables(func(tb *tables.Tables) (err error) { events, err = tb.Events(); return err })
	if events[tables.EvHairpinToHost].Packets == 0 || events[tables.EvHairpinToEndpoint].Packets == 0 {
		t.Errorf("hairpin counters did not move: %v", events)
	}

	// Off again, on the running parent: the host and the container lose
	// each other as with macvlan; the wire stays reachable.
	if _, err := h.tryAttach(loader.AttachOptions{Hairpin: &off}); err != nil {
		t.Fatal(err)
	}
	run(c.ns, "ip", "neigh", "flush", "all")
	run(h.ns, "ip", "neigh", "flush", "all")
	if err := ping(c.ns, "10.0.0.10"); err == nil {
		t.Error("container reached the host with hairpin off")
	}
	if err := ping(c.ns, "10.0.0.1"); err != nil {
		t.Errorf("container -> wire with hairpin off: %v", err)
	}
	if st := h.status(); st.Hairpin || hasLink(st, "link_host_tx") {
		t.Errorf("hairpin off, but status says hairpin %v with links %+v", st.Hairpin, st.Links)
	}
}

func (h *host) status() loader.ParentStatus {
	h.lab.t.Helper()
	var sts []loader.ParentStatus
	err := h.ns.Do(func() (err error) {
		sts, err = loader.Status(h.root, h.parent)
		return err
	})
	if err != nil || len(sts) != 1 {
		h.lab.t.Fatalf("status: %v %v", sts, err)
	}
	return sts[0]
}

func hasLink(st loader.ParentStatus, pin string) bool {
	for _, l := range st.Links {
		if l.Pin == pin {
			return true
		}
	}
	return false
}

// A host endpoint gives the host an address on a tagged VLAN with no
// kernel VLAN device: it reaches VLAN 10 on the other host, not VLAN 20.
func TestHostEndpointOnVLAN(t *testing.T) {
	l := newLab(t)
	a, b := l.host(), l.host()
	for _, h := range []*host{a, b} {
		h.attach("")
		h.network("v10", 10, tables.Bridge)
		h.network("v20", 20, tables.Bridge)
	}
	// Same subnet on both VLANs: only the tag keeps them apart.
	c10 := b.container("v10", "", "10.10.0.2/24", false)
	b.container("v20", "", "10.10.0.3/24", false)

	var ep tables.Endpoint
	err := a.ns.Do(func() (err error) {
		ep, err = a.lc().AddEndpoint("v10", lifecycle.Spec{Host: true, IP: mustCIDR("10.10.0.100/24")})
		return err
	})
	if err != nil {
		t.Fatalf("host endpoint: %v", err)
	}
	if ep.Ifname != "xmv-v10" || !ep.Host {
		t.Errorf("host endpoint is %+v, want inner end xmv-v10 in the host namespace", ep)
	}
	mustLink(t, a.ns, "xmv-v10") // the inner end stayed on the host
	if err := ping(a.ns, c10.ip); err != nil {
		t.Errorf("host endpoint -> VLAN 10 container on the other host: %v", err)
	}
	if err := ping(c10.ns, "10.10.0.100"); err != nil {
		t.Errorf("VLAN 10 container -> host endpoint: %v", err)
	}
	if err := ping(a.ns, "10.10.0.3"); err == nil {
		t.Error("host endpoint on VLAN 10 reached a container on VLAN 20")
	}
}

// Turning hairpin on and off on a live parent loses no traffic between a
// container and the wire.
func TestHairpinToggleKeepsWireTraffic(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.attach("")
	h.network("lan", 0, tables.Bridge)
	c := h.container("lan", "", "10.0.0.2/24", false)
	if err := ping(c.ns, "10.0.0.1"); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() {
		out, _ := run(c.ns, "ping", "-c", "400", "-i", "0.005", "-W", "1", "10.0.0.1")
		done <- out
	}()
	for i := 0; i < 10; i++ {
		v := i%2 == 0
		if _, err := h.tryAttach(loader.AttachOptions{Hairpin: &v}); err != nil {
			t.Fatal(err)
		}
	}
	out := <-done
	if !strings.Contains(out, " 0% packet loss") {
		t.Fatalf("traffic to the wire was lost while hairpin toggled:\n%s", out)
	}
}

func mustCIDR(s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		panic(err)
	}
	return &net.IPNet{IP: ip, Mask: n.Mask}
}
