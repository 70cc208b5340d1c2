// Package endpoint does for xmacvlan what a container runtime asks of a
// macvlan driver: it builds an endpoint (a veth pair whose inner end sits
// in the container's namespace with the endpoint's MAC, IP and routes),
// registers it with the datapath, and takes it apart again.
package endpoint

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/internal/ethtool"
	"github.com/xmacvlan/xmacvlan/internal/nsutil"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// Spec is what `xmacvlan endpoint add` asks for.
type Spec struct {
	Netns   string           // name under /var/run/netns, a path or a PID; ignored with Host
	Host    bool             // the inner end stays in the caller's namespace (host endpoint)
	Name    string           // inner interface name; default eth0 (host: xmv-NETWORK)
	MAC     net.HardwareAddr // nil: a generated locally administered one
	IP      *net.IPNet       // address and prefix length; nil: none
	Gateway net.IP           // default route's gateway, containers only (DefaultGateway); nil: the network's
	MTU     int              // 0: the network's, else the parent's
	XDP     bool             // receive by native XDP redirect instead of the skb path
}

// failpoint lets tests fail Add at a named step, to check the rollback.
var failpoint = func(step string) error { return nil }

// target is the namespace the inner end goes to.
type target struct {
	ns    netns.NsHandle
	nl    *netlink.Handle
	name  string // as the user gave it
	ino   uint64
	host  bool
	close func()
}

func openTarget(s Spec) (*target, error) {
	var (
		ns  netns.NsHandle
		err error
	)
	if s.Host {
		ns, err = netns.Get()
	} else {
		ns, err = nsutil.Open(s.Netns)
	}
	if err != nil {
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(ns), &st); err != nil {
		ns.Close()
		return nil, err
	}
	nl, err := netlink.NewHandleAt(ns)
	if err != nil {
		ns.Close()
		return nil, err
	}
	t := &target{ns: ns, nl: nl, name: s.Netns, ino: st.Ino, host: s.Host}
	if s.Host {
		t.name = "host"
	}
	t.close = func() { nl.Close(); ns.Close() }
	return t, nil
}

// Add builds the endpoint and registers it on network n of the parent
// h holds. Every check runs before anything is built; tables are written
// last, so no frame is forwarded to a half-built endpoint; any failure
// removes everything built so far.
func Add(h *loader.Handle, n tables.Network, s Spec) (ep tables.Endpoint, err error) {
	settings, err := h.Tables.Settings()
	if err != nil {
		return ep, err
	}
	parent, err := netlink.LinkByIndex(settings.ParentIfindex)
	if err != nil {
		return ep, fmt.Errorf("parent %s (ifindex %d) is gone: %w", h.Parent, settings.ParentIfindex, err)
	}
	p := Parent{Name: h.Parent, MAC: parent.Attrs().HardwareAddr, MTU: parent.Attrs().MTU}
	existing, err := h.Tables.Endpoints()
	if err != nil {
		return ep, err
	}
	complete(&s, n, p, existing)
	if err := CheckEndpoint(s, n, p); err != nil {
		return ep, err
	}
	tg, err := openTarget(s)
	if err != nil {
		return ep, err
	}
	defer tg.close()
	if err := CheckUnique(s, n, tg.ino, existing); err != nil {
		return ep, err
	}
	kind := ""
	if l, err := tg.nl.LinkByName(s.Name); err == nil {
		kind = l.Type()
	}
	if err := CheckNameFree(s, kind, tg.ino, existing); err != nil {
		return ep, err
	}
	var gateway net.IP
	if s.IP != nil {
		have, err := defaultRoute(tg.nl, family(s.IP.IP))
		if err != nil {
			return ep, err
		}
		if gateway, err = DefaultGateway(s, n, have); err != nil {
			return ep, err
		}
	}
	outer, err := outerName()
	if err != nil {
		return ep, err
	}

	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()
	undo = append(undo, func() { deleteLink(outer) }) // takes the inner end with it
	if err := createVeth(outer, s, tg); err != nil {
		return ep, err
	}
	outerLink, err := netlink.LinkByName(outer)
	if err != nil {
		return ep, err
	}
	if err := failpoint("after-veth"); err != nil {
		return ep, err
	}
	if err := configureInner(tg, s, gateway); err != nil {
		return ep, err
	}
	if err := failpoint("after-inner"); err != nil {
		return ep, err
	}
	ep, err = h.AddEndpoint(tables.Endpoint{
		Ifindex: outerLink.Attrs().Index, VLAN: n.VLAN, MAC: s.MAC, XDPDelivery: s.XDP, Host: s.Host,
		Netns: tg.name, NetnsIno: tg.ino, Ifname: s.Name, IP: s.IP,
	})
	if err != nil {
		return ep, err
	}
	undo = append(undo, func() { h.RemoveEndpoint(ep) })
	if err := failpoint("after-register"); err != nil {
		return ep, err
	}
	// Peers learn the new MAC at once. Best effort: the endpoint works
	// without it, as it would after a reboot of the container.
	announce(tg, s)
	return ep, nil
}

// complete fills the defaults of s: the interface name, the MTU (the
// network's, else the parent's) and, without one given, a generated MAC
// no endpoint of the network has.
func complete(s *Spec, n tables.Network, p Parent, existing []tables.Endpoint) {
	if s.Name == "" {
		s.Name = "eth0"
		if s.Host {
			s.Name = hostIfname(n)
		}
	}
	if s.MTU == 0 {
		s.MTU = n.MTU
	}
	if s.MTU == 0 {
		s.MTU = p.MTU
	}
	for s.MAC == nil {
		s.MAC = randomMAC()
		for _, ep := range existing {
			if ep.VLAN == n.VLAN && bytes.Equal(ep.MAC, s.MAC) {
				s.MAC = nil
			}
		}
	}
}

// hostIfname is the default name of network n's host endpoint.
func hostIfname(n tables.Network) string {
	name := "xmv-" + n.Name
	if len(name) > 15 {
		name = name[:15]
	}
	return name
}

// randomMAC returns a locally administered unicast address, as the kernel
// gives a macvlan without one.
func randomMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	rand.Read(mac)
	mac[0] = mac[0]&0xfe | 0x02
	return mac
}

// outerName picks an unused name for the outer end in the parent's
// namespace.
func outerName() (string, error) {
	for range 16 {
		b := make([]byte, 4)
		rand.Read(b)
		name := fmt.Sprintf("xmv%x", b)
		if _, err := netlink.LinkByName(name); err != nil {
			return name, nil
		}
	}
	return "", fmt.Errorf("no free interface name")
}

// createVeth creates the pair with the inner end already in its namespace
// under its final name, so a name clash there fails the creation itself.
func createVeth(outer string, s Spec, tg *target) error {
	v := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: outer, MTU: s.MTU},
		PeerName:         s.Name,
		PeerHardwareAddr: s.MAC,
		PeerMTU:          uint32(s.MTU),
		PeerNamespace:    netlink.NsFd(tg.ns),
	}
	if err := netlink.LinkAdd(v); err != nil {
		if errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("namespace %s already has an interface called %s", tg.name, s.Name)
		}
		return fmt.Errorf("create veth %s/%s: %w", outer, s.Name, err)
	}
	if err := failpoint("in-veth"); err != nil {
		return err
	}
	link, err := netlink.LinkByName(outer)
	if err != nil {
		return err
	}
	// The outer end only carries frames: no addresses, no IPv6 chatter
	// of its own towards the container. Below MinIPv6MTU the kernel gave
	// it no IPv6 to silence.
	if s.MTU >= MinIPv6MTU {
		if err := netlink.LinkSetIP6AddrGenMode(link, 1 /* IN6_ADDR_GEN_MODE_NONE */); err != nil {
			return fmt.Errorf("outer %s: %w", outer, err)
		}
	}
	return netlink.LinkSetUp(link)
}

// configureInner brings the inner end up with its address and, with a
// gateway, the default route (DefaultGateway decides).
func configureInner(tg *target, s Spec, gateway net.IP) error {
	link, err := tg.nl.LinkByName(s.Name)
	if err != nil {
		return err
	}
	if s.MTU < MinIPv6MTU {
		if err := disableIPv6(tg, s.Name); err != nil {
			return err
		}
	}
	if err := tg.nl.LinkSetUp(link); err != nil {
		return err
	}
	if s.XDP {
		// Frames XDP-redirected into a veth are dropped silently unless the
		// receiving end has NAPI: GRO on gives it one (once the device is
		// up), and leaves the XDP hook free for the container's own program.
		if err := nsutil.Do(tg.ns, func() error { return ethtool.SetGRO(s.Name, true) }); err != nil {
			return fmt.Errorf("GRO on %s: %w", s.Name, err)
		}
	}
	if s.IP != nil {
		a := &netlink.Addr{IPNet: s.IP}
		if s.IP.IP.To4() == nil {
			a.Flags = unix.IFA_F_NODAD // usable, and announced, at once
		}
		if err := tg.nl.AddrAdd(link, a); err != nil {
			return fmt.Errorf("address %s on %s: %w", s.IP, s.Name, err)
		}
	}
	if gateway != nil {
		return addDefaultRoute(tg.nl, link, gateway)
	}
	return nil
}

// disableIPv6 turns IPv6 off on an interface below MinIPv6MTU, so that
// raising its MTU later does not bring IPv6 up behind the user's back.
// The kernel gives such an interface no IPv6 configuration at all
// (addrconf_notify), and then there is nothing to turn off.
func disableIPv6(tg *target, ifname string) error {
	return nsutil.Do(tg.ns, func() error {
		path := "/proc/sys/net/ipv6/conf/" + ifname + "/disable_ipv6"
		err := os.WriteFile(path, []byte("1"), 0)
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("disable IPv6 on %s (MTU below %d): %w", ifname, MinIPv6MTU, err)
		}
		return nil
	})
}

// Delete takes the endpoint called name in namespace netnsSpec (or the host
// endpoint called name) off network n and removes its veth. Deleting an
// endpoint that does not exist is not an error: found says which it was.
func Delete(h *loader.Handle, n tables.Network, netnsSpec string, host bool, name string) (found bool, err error) {
	if name == "" {
		name = "eth0"
		if host {
			name = hostIfname(n)
		}
	}
	var ino uint64
	tg, err := openTarget(Spec{Netns: netnsSpec, Host: host})
	if err == nil {
		ino = tg.ino
		defer tg.close()
	}
	eps, err := h.Tables.Endpoints()
	if err != nil {
		return false, err
	}
	for _, ep := range eps {
		sameNS := (ino != 0 && ep.NetnsIno == ino) || (!host && ep.Netns == netnsSpec)
		if ep.VLAN != n.VLAN || ep.Ifname != name || ep.Host != host || !sameNS {
			continue
		}
		if ino != 0 && ep.NetnsIno == ino {
			if err := removeOwnRoutes(tg.nl, name); err != nil {
				return true, err
			}
		}
		return true, Remove(h, ep)
	}
	return false, nil
}

// Remove takes a registered endpoint apart and deletes its veth.
func Remove(h *loader.Handle, ep tables.Endpoint) error {
	return h.RemoveEndpoint(ep)
}

func deleteLink(name string) {
	if l, err := netlink.LinkByName(name); err == nil {
		netlink.LinkDel(l)
	}
}
