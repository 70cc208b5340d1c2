package main

import (
	"fmt"
	"net"

	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/lifecycle"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// path is one way of delivering the parent's frames to containers.
type path string

// The xmacvlan paths say first whether the parent runs the XDP program
// (attach --xdp on) or not (--xdp off: tcx classifies and delivers alone,
// as on a NIC without native XDP, and what --xdp auto picks on a veth
// parent), then how the endpoints take delivery (skb: tcx
// bpf_redirect_peer; xdp: DEVMAP redirect into the endpoint's veth).
const (
	kernel path = "macvlan"     // kernel macvlan, bridge mode, on the parent
	xmvSKB path = "xmv-on-skb"  // XDP on, skb delivery
	xmvXDP path = "xmv-on-xdp"  // XDP on, XDP delivery
	xmvTCX path = "xmv-off-skb" // XDP off: tcx alone, skb delivery
	// xmv-off-skb with a storm limit on every endpoint (the storm line).
	xmvLimit path = "xmv-off-skb+limit"
)

// xdpOn says whether path p attaches the XDP program to the parent.
func (p path) xdpOn() bool { return p == xmvSKB || p == xmvXDP }

const taggedVLAN = 10 // xmacvlan's tagged network; the kernel here has no 8021q

// member is one endpoint: eth0 in a container namespace.
type member struct {
	ns  *ns
	mac net.HardwareAddr
	ip  net.IP
}

// endpointMAC is the MAC of endpoint i on vlan: locally administered,
// 02:78:62 ("xb") then the VLAN and the index.
func endpointMAC(vlan, i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0x78, 0x62, 0x00, byte(vlan), byte(i + 1)}
}

// deployment is a path built on the lab's parent: members on the untagged
// segment, in containers 0..n-1, and for xmacvlan optionally one endpoint
// on VLAN 10 in container n.
type deployment struct {
	lab     *lab
	path    path
	members []member
	tagged  *member
}

// deploy builds path p with n endpoints on the parent.
func (l *lab) deploy(p path, n int, withTagged bool) (d *deployment, err error) {
	d = &deployment{lab: l, path: p}
	for i := range n {
		c, err := l.container(i)
		if err != nil {
			return nil, err
		}
		d.members = append(d.members, member{ns: c, mac: endpointMAC(0, i), ip: net.IPv4(10, 77, 0, byte(10+i))})
	}
	if withTagged && p != kernel {
		c, err := l.container(n)
		if err != nil {
			return nil, err
		}
		d.tagged = &member{ns: c, mac: endpointMAC(taggedVLAN, 0), ip: net.IPv4(10, 77, taggedVLAN, 10)}
	}
	defer func() {
		if err != nil {
			d.remove()
		}
	}()
	if p == kernel {
		return d, d.deployMacvlan()
	}
	return d, d.deployXmacvlan()
}

func (d *deployment) deployMacvlan() error {
	l := d.lab
	par, err := l.host.link(parent)
	if err != nil {
		return err
	}
	for _, m := range d.members {
		mv := &netlink.Macvlan{
			LinkAttrs: netlink.LinkAttrs{Name: "eth0", ParentIndex: par.Attrs().Index,
				HardwareAddr: m.mac, Namespace: netlink.NsFd(m.ns.h)},
			Mode: netlink.MACVLAN_MODE_BRIDGE,
		}
		if err := l.host.nl.LinkAdd(mv); err != nil {
			return fmt.Errorf("macvlan in %s: %w", m.ns.name, err)
		}
		eth0, err := m.ns.link("eth0")
		if err != nil {
			return err
		}
		if err := m.ns.nl.AddrAdd(eth0, &netlink.Addr{IPNet: &net.IPNet{IP: m.ip, Mask: subnetMask}}); err != nil {
			return err
		}
		if err := m.ns.nl.LinkSetUp(eth0); err != nil {
			return err
		}
	}
	return nil
}

func (d *deployment) deployXmacvlan() error {
	l := d.lab
	return l.host.do(func() error {
		mode := loader.XDPOff
		if d.path.xdpOn() {
			mode = loader.XDPOn
		}
		if _, err := loader.Attach(loader.AttachOptions{Root: l.root, Parent: parent, XDP: mode}); err != nil {
			return err
		}
		lc := &lifecycle.Root{Dir: l.root}
		if _, err := lc.CreateNetwork(parent, lifecycle.NetworkSpec{Name: "lan", VLAN: 0, Mode: tables.Bridge}); err != nil {
			return err
		}
		if _, err := lc.CreateNetwork(parent, lifecycle.NetworkSpec{Name: "v10", VLAN: taggedVLAN, Mode: tables.Bridge}); err != nil {
			return err
		}
		add := func(network string, m member, mask net.IPMask) error {
			var limit uint32
			if d.path == xmvLimit {
				limit = stormLimit
			}
			_, err := lc.AddEndpoint(network, lifecycle.Spec{Netns: m.ns.path(), MAC: m.mac,
				IP: &net.IPNet{IP: m.ip, Mask: mask}, XDP: d.path == xmvXDP, StormLimit: limit})
			return err
		}
		for _, m := range d.members {
			if err := add("lan", m, subnetMask); err != nil {
				return err
			}
		}
		if d.tagged != nil {
			return add("v10", *d.tagged, subnetMask)
		}
		return nil
	})
}

// remove takes the path off the parent, endpoints included.
func (d *deployment) remove() error {
	l := d.lab
	if d.path != kernel {
		return l.host.do(func() error { return (&lifecycle.Root{Dir: l.root}).DetachParent(parent, true) })
	}
	var first error
	for _, m := range d.members {
		if eth0, err := m.ns.nl.LinkByName("eth0"); err == nil {
			if err := m.ns.nl.LinkDel(eth0); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}

// tables runs f with the xmacvlan tables open (xmacvlan paths only).
func (d *deployment) tables(f func(*tables.Tables) error) error {
	return d.lab.host.do(func() error {
		h, err := loader.Open(d.lab.root, parent)
		if err != nil {
			return err
		}
		defer h.Close()
		return f(h.Tables)
	})
}
