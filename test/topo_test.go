// Package test holds the integration tests: real frames, pings and TCP
// between network namespaces through the attached datapath. Each test
// builds its own namespaces (unique names) and removes them, even when it
// fails.
//
// The switch is a plain Linux bridge: this kernel has no bridge VLAN
// filtering and no 8021q, so the bridge carries tagged frames through
// untouched, like a trunk, and only xmacvlan hosts speak on VLANs.
package test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/lifecycle"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// lab is a switch namespace with bridge br0 (10.0.0.1/24 on the untagged
// segment) and the hosts plugged into it.
type lab struct {
	t     testing.TB
	sw    *testutil.Netns
	hosts int
}

// host is one machine on the switch: its own namespace, parent ens33 and
// xmacvlan state root.
type host struct {
	lab      *lab
	ns       *testutil.Netns
	parent   string
	port     string // the switch's end of the parent's veth
	root     string
	attached bool
}

func newLab(t testing.TB) *lab {
	testutil.Privileged(t)
	l := &lab{t: t, sw: testutil.NewNetns(t, "xs")}
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}
	if err := l.sw.NL.LinkAdd(br); err != nil {
		t.Fatalf("bridge: %v", err)
	}
	up(t, l.sw, "br0")
	addr(t, l.sw, "br0", "10.0.0.1/24")
	return l
}

// host plugs a new host into the switch.
func (l *lab) host() *host {
	t := l.t
	l.hosts++
	h := &host{
		lab:    l,
		ns:     testutil.NewNetns(t, "xh"),
		parent: "ens33",
		port:   fmt.Sprintf("p%d", l.hosts),
		root:   filepath.Join("/sys/fs/bpf", testutil.Name("xt")),
	}
	t.Cleanup(func() { os.RemoveAll(h.root) })
	veth(t, h.ns, h.parent, l.sw, h.port)
	port, err := l.sw.NL.LinkByName(h.port)
	if err == nil {
		err = l.sw.NL.LinkSetMasterByIndex(port, mustLink(t, l.sw, "br0").Attrs().Index)
	}
	if err != nil {
		t.Fatalf("plug %s into br0: %v", h.port, err)
	}
	return h
}

// veth creates a veth with one end in a and one in b, both up.
func veth(t testing.TB, a *testutil.Netns, aName string, b *testutil.Netns, bName string) {
	t.Helper()
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: aName}, PeerName: bName, PeerNamespace: netlink.NsFd(b.Handle)}
	if err := a.NL.LinkAdd(v); err != nil {
		t.Fatalf("veth %s/%s: %v", aName, bName, err)
	}
	up(t, a, aName)
	up(t, b, bName)
}

func mustLink(t testing.TB, ns *testutil.Netns, name string) netlink.Link {
	t.Helper()
	l, err := ns.NL.LinkByName(name)
	if err != nil {
		t.Fatalf("%s in %s: %v", name, ns.Name, err)
	}
	return l
}

func up(t testing.TB, ns *testutil.Netns, name string) netlink.Link {
	t.Helper()
	link := mustLink(t, ns, name)
	if err := ns.NL.LinkSetUp(link); err != nil {
		t.Fatalf("%s up in %s: %v", name, ns.Name, err)
	}
	return link
}

func addr(t testing.TB, ns *testutil.Netns, dev, cidr string) {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	if err != nil {
		t.Fatal(err)
	}
	a.Flags = unix.IFA_F_NODAD // usable at once
	if err := ns.NL.AddrAdd(mustLink(t, ns, dev), a); err != nil {
		t.Fatalf("address %s on %s: %v", cidr, dev, err)
	}
}

// attach runs loader.Attach in the host's namespace; detach is cleanup.
func (h *host) attach(choice loader.XDPChoice) *loader.AttachResult {
	h.lab.t.Helper()
	res, err := h.tryAttach(loader.AttachOptions{XDP: choice})
	if err != nil {
		h.lab.t.Fatalf("attach: %v", err)
	}
	return res
}

// tryAttach attaches (again) with opts, for the host's parent and root.
func (h *host) tryAttach(opts loader.AttachOptions) (res *loader.AttachResult, err error) {
	opts.Root, opts.Parent = h.root, h.parent
	err = h.ns.Do(func() (err error) {
		res, err = loader.Attach(opts)
		return err
	})
	if err == nil && !h.attached {
		h.attached = true
		h.lab.t.Cleanup(func() { h.ns.Do(func() error { return h.lc().DetachParent(h.parent, true) }) })
	}
	return res, err
}

// tables runs f with the host's tables open.
func (h *host) tables(f func(*tables.Tables) error) {
	t := h.lab.t
	t.Helper()
	err := h.ns.Do(func() error {
		hd, err := loader.Open(h.root, h.parent)
		if err != nil {
			return err
		}
		defer hd.Close()
		return f(hd.Tables)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// lc is the host's state root, as the CLI opens it.
func (h *host) lc() *lifecycle.Root { return &lifecycle.Root{Dir: h.root} }

// network creates a network on the host's parent.
func (h *host) network(name string, vlan uint16, mode tables.Mode) {
	t := h.lab.t
	t.Helper()
	err := h.ns.Do(func() error {
		_, err := h.lc().CreateNetwork(h.parent, lifecycle.NetworkSpec{Name: name, VLAN: vlan, Mode: mode})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// container is an endpoint: a namespace whose eth0 is the inner end of a
// veth, the outer end registered on the host's parent.
type container struct {
	ns *testutil.Netns
	ip string
	ep tables.Endpoint
}

// container adds an endpoint in a new namespace to a network of the host,
// with the lifecycle package (what `xmacvlan endpoint add` runs). cidr may be
// empty; mac may be empty (generated).
func (h *host) container(network, mac, cidr string, xdp bool) *container {
	h.lab.t.Helper()
	c := &container{ns: testutil.NewNetns(h.lab.t, "xc")}
	spec := lifecycle.Spec{Netns: c.ns.Path(), XDP: xdp}
	if mac != "" {
		spec.MAC = mustMAC(mac)
	}
	return h.addEndpoint(c, network, spec, cidr)
}

// addEndpoint adds c's endpoint as spec asks, with the address cidr (may be
// empty), and fails the test if it cannot.
func (h *host) addEndpoint(c *container, network string, spec lifecycle.Spec, cidr string) *container {
	t := h.lab.t
	t.Helper()
	if cidr != "" {
		ip, n, err := net.ParseCIDR(cidr)
		if err != nil {
			t.Fatal(err)
		}
		spec.IP = &net.IPNet{IP: ip, Mask: n.Mask}
		c.ip = ip.String()
	}
	err := h.ns.Do(func() (err error) {
		c.ep, err = h.lc().AddEndpoint(network, spec)
		return err
	})
	if err != nil {
		t.Fatalf("add endpoint: %v", err)
	}
	return c
}

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// run runs a command inside a namespace (nsenter keeps /sys/fs/bpf visible,
// unlike `ip netns exec`).
func run(ns *testutil.Netns, name string, args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=" + ns.Path(), name}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// startCmd starts a command inside a namespace and leaves it running.
func startCmd(ns *testutil.Netns, name string, args ...string) (*exec.Cmd, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=" + ns.Path(), name}, args...)...)
	return cmd, cmd.Start()
}

// runCmd runs a command in the caller's namespace.
func runCmd(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func ping(ns *testutil.Netns, ip string) error {
	_, err := run(ns, "ping", "-c", "2", "-i", "0.2", "-W", "1", ip)
	return err
}

// linkLocal waits for dev's IPv6 link-local address to pass DAD.
func linkLocal(t *testing.T, ns *testutil.Netns, dev string) string {
	t.Helper()
	var ll string
	err := eventually(5*time.Second, func() error {
		addrs, err := ns.NL.AddrList(mustLink(t, ns, dev), netlink.FAMILY_V6)
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if a.IP.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
				ll = a.IP.String()
				return nil
			}
		}
		return fmt.Errorf("no usable link-local address on %s", dev)
	})
	if err != nil {
		t.Fatal(err)
	}
	return ll
}
