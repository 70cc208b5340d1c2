package lifecycle

// An endpoint is what a container runtime asks of a macvlan driver: a veth
// pair whose inner end sits in the container's namespace with the
// endpoint's MAC, IP and routes, registered with the datapath.

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

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
	Moved   bool             // the runtime moves and configures the inner end (runtime.go)
	// StormLimit caps the broadcast, multicast and untagged unknown-unicast
	// frames this endpoint sends, in frames per second (0: no limit; else
	// 1..MaxStormLimit). README "Storm control".
	StormLimit uint32
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

// addEndpoint builds the endpoint and registers it on network n of the
// parent h holds. Its record is written first (Building) and marked Ready
// last; the datapath tables are written after everything else, so no frame
// is forwarded to a half-built endpoint. Any failure removes everything
// built so far; a crash leaves the record, and the next writer removes
// what it names (repair). Every check runs before anything is built.
//
// recs are the parent's records, as repair left them.
func addEndpoint(h *loader.Handle, n tables.Network, s Spec, recs []tables.Record) (ep tables.Endpoint, err error) {
	settings, err := h.Tables.Settings()
	if err != nil {
		return ep, err
	}
	parent, err := netlink.LinkByIndex(settings.ParentIfindex)
	if err != nil {
		return ep, fmt.Errorf("parent %s (ifindex %d) is gone: %w", h.Parent, settings.ParentIfindex, err)
	}
	if reaped, err := reapStaleHolders(h, n, s, recs); err != nil {
		return ep, err
	} else if reaped {
		if recs, err = h.Tables.Records(); err != nil {
			return ep, err
		}
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
	tg, err := openEndpointTarget(s)
	if err != nil {
		return ep, err
	}
	defer tg.close()
	if err := CheckUnique(s, n, tg.ino, existing); err != nil {
		return ep, err
	}
	// A moved inner end is named, addressed and routed by the runtime.
	var gateway net.IP
	if !s.Moved {
		kind := ""
		if l, err := tg.nl.LinkByName(s.Name); err == nil {
			kind = l.Type()
		}
		if err := CheckNameFree(s, kind, tg.ino, existing); err != nil {
			return ep, err
		}
		if s.IP != nil {
			have, err := defaultRoute(tg.nl, family(s.IP.IP))
			if err != nil {
				return ep, err
			}
			if gateway, err = DefaultGateway(s, n, have); err != nil {
				return ep, err
			}
		}
	}
	if s.XDP {
		// The XDP program first (auto attaches it for the first such
		// endpoint; off refuses): nothing is built yet.
		if err := h.SyncXDP(true); err != nil {
			return ep, err
		}
		defer func() {
			if err != nil {
				h.SyncXDP(false)
			}
		}()
	}
	id, err := h.Tables.FreeID(recs)
	if err != nil {
		return ep, err
	}
	outer, err := outerName(settings.ParentIfindex, n.VLAN, id)
	if err != nil {
		return ep, err
	}
	if s.Moved {
		s.Name = movedName(outer)
	}
	rec := tables.Record{State: tables.Building, Endpoint: tables.Endpoint{
		ID: id, VLAN: n.VLAN, MAC: s.MAC, XDPDelivery: s.XDP, Host: s.Host, StormLimit: s.StormLimit,
		Netns: tg.name, NetnsIno: tg.ino, Ifname: s.Name, IP: s.IP,
		Outer: outer, MTU: s.MTU, Gateway: gateway,
	}}
	if err := h.Tables.PutRecord(rec); err != nil {
		return ep, err
	}
	defer func() {
		if err != nil {
			if rerr := teardown(h, rec.ID); rerr != nil {
				err = fmt.Errorf("%w (and rolling back: %v; `xmacvlan gc` retries)", err, rerr)
			}
		}
	}()
	if s.Moved {
		err = createMovedVeth(outer, s, outerGroup(settings.ParentIfindex))
	} else {
		err = createVeth(outer, s, tg, outerGroup(settings.ParentIfindex))
	}
	if err != nil {
		return ep, err
	}
	outerLink, err := netlink.LinkByName(outer)
	if err != nil {
		return ep, err
	}
	rec.Ifindex = outerLink.Attrs().Index
	if err := h.Tables.PutRecord(rec); err != nil {
		return ep, err
	}
	if err := failpoint("after-veth"); err != nil {
		return ep, err
	}
	if !s.Moved {
		if err := configureInner(tg, s, gateway); err != nil {
			return ep, err
		}
	}
	if err := failpoint("after-inner"); err != nil {
		return ep, err
	}
	if err := plug(h, rec.Endpoint); err != nil {
		return ep, err
	}
	if err := failpoint("after-register"); err != nil {
		return ep, err
	}
	// Peers learn the new MAC at once. Best effort: the endpoint works
	// without it, as it would after a reboot of the container. Before the
	// record is Ready, so that an add killed at any step is rolled back
	// whole and the same add then succeeds. A moved endpoint announces
	// once the runtime has configured it (SettleMoved).
	if !s.Moved {
		announce(tg, s)
	}
	rec.State = tables.Ready
	if err := h.Tables.PutRecord(rec); err != nil {
		return ep, err
	}
	return rec.Endpoint, nil
}

// complete fills the defaults of s: the interface name, the MTU (the
// network's, else the parent's) and, without one given, a generated MAC
// no endpoint of the network has.
func complete(s *Spec, n tables.Network, p Parent, existing []tables.Endpoint) {
	if s.Name == "" {
		s.Name = defaultName(n, s.Host)
	}
	if s.MTU == 0 {
		s.MTU = n.MTU
	}
	if s.MTU == 0 {
		s.MTU = p.MTU
	}
	for s.MAC == nil {
		s.MAC = RandomMAC()
		for _, ep := range existing {
			if ep.VLAN == n.VLAN && bytes.Equal(ep.MAC, s.MAC) {
				s.MAC = nil
			}
		}
	}
}

// RandomMAC returns a locally administered unicast address, as the kernel
// gives a macvlan without one (eth_random_addr).
func RandomMAC() net.HardwareAddr {
	mac := make(net.HardwareAddr, 6)
	rand.Read(mac)
	mac[0] = mac[0]&0xfe | 0x02
	return mac
}

// outerName names the outer end after the parent's ifindex, the VLAN and
// the endpoint's id, all in hex: xmv<parent><vlan:3><id:3>, at most 15
// bytes. The name alone says which endpoint a veth was built for, so a
// leftover of a crash is found by name.
func outerName(parentIfindex int, vlan uint16, id int) (string, error) {
	name := fmt.Sprintf("xmv%x%03x%03x", parentIfindex, vlan, id)
	if len(name) > 15 {
		return "", fmt.Errorf("parent ifindex %d too large to name its endpoints' veths", parentIfindex)
	}
	return name, nil
}

// ours says whether name is an outer veth name of the parent h holds.
// One NIC has one datapath, so within the parent's namespace the name
// alone says which root and parent own the veth.
func ours(h *loader.Handle, name string) bool {
	s, err := h.Tables.Settings()
	if err != nil {
		return false
	}
	prefix := fmt.Sprintf("xmv%x", s.ParentIfindex)
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok || len(rest) != 6 {
		return false
	}
	_, err = strconv.ParseUint(rest, 16, 32)
	return err == nil
}

// outerGroup is the interface group of a parent's outer veths: "xm" in the
// high 16 bits, the parent's ifindex in the low ones. Detach deletes the
// whole group with one RTM_DELLINK (rtnl_group_dellink), so the kernel
// unregisters every veth in one batch and waits for RCU once, not per
// veth.
func outerGroup(parentIfindex int) uint32 {
	return 0x786d0000 | uint32(parentIfindex)&0xffff
}

// createVeth creates the pair with the inner end already in its namespace
// under its final name, so a name clash there fails the creation itself.
// The outer end joins group.
func createVeth(outer string, s Spec, tg *target, group uint32) error {
	v := &netlink.Veth{
		LinkAttrs:        netlink.LinkAttrs{Name: outer, MTU: s.MTU, Group: group},
		PeerName:         s.Name,
		PeerHardwareAddr: s.MAC,
		PeerMTU:          uint32(s.MTU),
		PeerNamespace:    netlink.NsFd(tg.ns),
	}
	if err := netlink.LinkAdd(v); err != nil {
		if errors.Is(err, unix.EEXIST) {
			if _, err := netlink.LinkByName(outer); err == nil {
				return fmt.Errorf("interface %s exists already (left by a crash? `xmacvlan gc` removes it)", outer)
			}
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
	// veth_xmit puts a frame into the inner end's NAPI ring (giveNAPI)
	// only when the sender has no TSO (veth_skb_is_eligible_for_gro);
	// otherwise it goes to the CPU's backlog. The outer end sends flood
	// copies and host traffic only: unicast from the wire skips it
	// (bpf_redirect_peer).
	if err := ethtool.SetTSO(outer, false); err != nil {
		return fmt.Errorf("TSO off on %s: %w", outer, err)
	}
	return netlink.LinkSetUp(link)
}

// giveNAPI turns GRO on for the inner end inner, which gives it a NAPI
// context with its own ring once it is up (veth_gro_requested,
// veth_napi_enable). Without it, XDP-redirected frames are dropped, and
// every flood copy sent through the outer end is queued on the CPU's
// shared input backlog (netdev_max_backlog, 1,000 frames), which drops the
// copies past it when one frame floods a large VLAN. It also leaves the
// XDP hook free for the container's own program.
func giveNAPI(inner string) error {
	if err := ethtool.SetGRO(inner, true); err != nil {
		return fmt.Errorf("GRO on %s: %w", inner, err)
	}
	return nil
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
	if err := nsutil.Do(tg.ns, func() error { return giveNAPI(s.Name) }); err != nil {
		return err
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

// defaultName is the inner interface name when none is given: eth0, or
// xmv-NETWORK (cut to 15 bytes) for a host endpoint.
func defaultName(n tables.Network, host bool) string {
	if !host {
		return "eth0"
	}
	name := "xmv-" + n.Name
	if len(name) > 15 {
		name = name[:15]
	}
	return name
}

// findRecord finds the record among recs on network n that sel names:
// same inner name and the same namespace (by inode when the namespace
// still opens, else by the name it was given).
func findRecord(n tables.Network, sel Selector, recs []tables.Record) (tables.Record, bool) {
	name := sel.Name
	if name == "" {
		name = defaultName(n, sel.Host)
	}
	var ino uint64
	if tg, err := openTarget(Spec{Netns: sel.Netns, Host: sel.Host}); err == nil {
		ino = tg.ino
		tg.close()
	}
	for _, r := range recs {
		sameNS := (ino != 0 && r.NetnsIno == ino) || (!sel.Host && r.Netns == sel.Netns)
		if r.VLAN == n.VLAN && r.Ifname == name && r.Host == sel.Host && sameNS {
			return r, true
		}
	}
	return tables.Record{}, false
}
