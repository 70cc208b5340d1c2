package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// The reference scenario (README "The demo"): two hosts on a switch, each with
// containers on VLAN 10 and VLAN 20 that share one subnet. Same VLAN across
// hosts talks (IPv4 and IPv6 link-local), different VLANs do not, and the
// wire carries the VLAN tags.
func TestTwoHostsVLAN10And20(t *testing.T) {
	l := newLab(t)
	a, b := l.host(), l.host()
	for _, h := range []*host{a, b} {
		h.attach("")
		h.network("v10", 10, tables.Bridge)
		h.network("v20", 20, tables.Bridge)
	}
	a10 := a.container("v10", "", "10.10.0.1/24", false)
	a20 := a.container("v20", "", "10.10.0.11/24", false)
	b10 := b.container("v10", "", "10.10.0.2/24", false)
	b20 := b.container("v20", "", "10.10.0.12/24", false)

	tags := startCapture(t, l.sw, "br0")
	for _, p := range []struct {
		from, to *container
		ok       bool
	}{
		{a10, b10, true}, {b10, a10, true}, {a20, b20, true}, {b20, a20, true},
		{a10, b20, false}, {a20, b10, false}, {b10, a20, false},
	} {
		err := ping(p.from.ns, p.to.ip)
		if p.ok && err != nil {
			t.Errorf("%s -> %s (same VLAN): %v", p.from.ip, p.to.ip, err)
		}
		if !p.ok && err == nil {
			t.Errorf("%s -> %s crossed VLANs", p.from.ip, p.to.ip)
		}
	}
	if err := ping(a10.ns, linkLocal(t, b10.ns, "eth0")+"%eth0"); err != nil {
		t.Errorf("IPv6 link-local on VLAN 10: %v", err)
	}
	if err := ping(a10.ns, linkLocal(t, b20.ns, "eth0")+"%eth0"); err == nil {
		t.Error("IPv6 link-local crossed from VLAN 10 to VLAN 20")
	}
	// On the wire, a10's echo requests carry VLAN 10, a20's VLAN 20.
	for _, c := range []struct {
		from *container
		vid  uint16
	}{{a10, 10}, {a20, 20}} {
		found := false
		for _, f := range tags.matching(c.from.ep.MAC) {
			if len(f) > 18 && string(f[6:12]) == string(c.from.ep.MAC) {
				if f[12] != 0x81 || f[13] != 0x00 || uint16(f[14]&0x0f)<<8|uint16(f[15]) != c.vid {
					t.Errorf("frame from %s on the wire: % x, want tag %d", c.from.ip, f[:18], c.vid)
				}
				found = true
			}
		}
		if !found {
			t.Errorf("no frame from %s seen on the wire", c.from.ip)
		}
	}
}

// Every receive path × delivery × tag placement carries traffic between
// two hosts on VLAN 10.
func TestVLANAcrossHostsEveryPath(t *testing.T) {
	// --xdp off refuses XDP delivery; under auto the first XDP-delivery
	// endpoint turns XDP on.
	for _, p := range []struct {
		choice loader.XDPChoice
		xdp    bool
	}{{loader.XDPOn, false}, {loader.XDPOff, false}, {loader.XDPOn, true}, {loader.XDPAuto, true}} {
		mode, xdp := p.choice, p.xdp
		{
			for _, tagInMeta := range []bool{true, false} {
				t.Run(fmt.Sprintf("xdp=%s xdp-delivery=%v tag-in-metadata=%v", mode, xdp, tagInMeta), func(t *testing.T) {
					l := newLab(t)
					a, b := l.host(), l.host()
					if !tagInMeta {
						run(l.sw, "ethtool", "-K", a.port, "txvlan", "off")
						run(l.sw, "ethtool", "-K", b.port, "txvlan", "off")
					}
					for _, h := range []*host{a, b} {
						want := "off" // off, and auto on a veth
						if mode == loader.XDPOn {
							want = "on"
						}
						if res := h.attach(mode); res.XDP != want {
							t.Fatalf("attached with --xdp %s: XDP %s, want %s", mode, res.XDP, want)
						}
						h.network("v10", 10, tables.Bridge)
					}
					ca := a.container("v10", "", "10.10.0.1/24", xdp)
					cb := b.container("v10", "", "10.10.0.2/24", xdp)
					if err := ping(ca.ns, cb.ip); err != nil {
						t.Error(err)
					}
				})
			}
		}
	}
}

// bridge: neighbours talk directly; private: never; vepa: only through the
// switch, when it reflects frames (hairpin mode on its port), as with
// kernel macvlan.
func TestNetworkModes(t *testing.T) {
	for _, tc := range []struct {
		mode         tables.Mode
		reflect      bool // the switch port reflects frames back
		neighbours   bool
		viaTheSwitch bool
	}{
		{tables.Bridge, false, true, false},
		{tables.Private, false, false, false},
		{tables.Private, true, false, false},
		{tables.VEPA, false, false, false},
		{tables.VEPA, true, true, true},
	} {
		t.Run(fmt.Sprintf("%s reflect=%v", tc.mode, tc.reflect), func(t *testing.T) {
			l := newLab(t)
			h := l.host()
			h.attach("")
			h.network("lan", 0, tc.mode)
			if tc.reflect {
				if _, err := run(l.sw, "bridge", "link", "set", "dev", h.port, "hairpin", "on"); err != nil {
					t.Fatal(err)
				}
			}
			c1 := h.container("lan", "", "10.0.0.2/24", false)
			c2 := h.container("lan", "", "10.0.0.3/24", false)
			wire := startCapture(t, l.sw, h.port)
			inC2 := startCapture(t, c2.ns, "eth0")
			if tc.mode == tables.Private {
				// c1 knows c2's MAC, so it tries unicast, which the
				// datapath refuses (and counts).
				run(c1.ns, "ip", "neigh", "replace", c2.ip, "lladdr", c2.ep.MAC.String(), "dev", "eth0")
			}
			err := ping(c1.ns, c2.ip)
			if tc.neighbours && err != nil {
				t.Errorf("neighbours cannot talk: %v", err)
			}
			if !tc.neighbours && err == nil {
				t.Error("neighbours talked")
			}
			sawOnWire := len(wire.unicast(c1.ep.MAC, c2.ep.MAC)) > 0
			if tc.neighbours && sawOnWire != tc.viaTheSwitch {
				t.Errorf("unicast between neighbours seen on the wire: %v, want %v", sawOnWire, tc.viaTheSwitch)
			}
			if fromC1 := len(inC2.from(c1.ep.MAC)); !tc.neighbours && fromC1 > 0 {
				t.Errorf("c2 received %d frames from c1", fromC1)
			}
			if tc.reflect && tc.mode != tables.VEPA && h.drops()[tables.DropLooped].Packets == 0 {
				t.Error("reflected broadcasts were not dropped")
			}
			if err := ping(c1.ns, "10.0.0.1"); err != nil {
				t.Errorf("the wire is unreachable: %v", err)
			}
			if tc.mode == tables.Private && h.drops()[tables.DropPrivateMode].Packets == 0 {
				t.Error("private mode dropped nothing it counted")
			}
		})
	}
}

// A broadcast from a container reaches the other members of its VLAN on
// this host and the wire (tagged), never another VLAN or the sender.
func TestFloodingStaysInItsVLAN(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.attach("")
	h.network("lan", 0, tables.Bridge)
	h.network("v10", 10, tables.Bridge)
	h.network("v20", 20, tables.Bridge)
	sender := h.container("v10", "", "", false)
	members := []*container{h.container("v10", "", "", false), h.container("v10", "", "", true)}
	others := []*container{h.container("v20", "", "", false), h.container("lan", "", "", false)}
	caps := map[*container]*capture{}
	for _, c := range append(append([]*container{sender}, members...), others...) {
		caps[c] = startCapture(t, c.ns, "eth0")
	}
	wire := startCapture(t, l.sw, h.port)
	out := newSender(t, sender.ns, "eth0")
	for _, dst := range []string{"ff:ff:ff:ff:ff:ff", "33:33:ff:00:00:01", "01:00:5e:00:00:fb"} {
		marker := []byte("flood-" + dst)
		out.send(t, frame(mustMAC(dst), sender.ep.MAC, nil, marker))
		err := eventually(2*time.Second, func() error {
			for _, m := range members {
				if n := len(caps[m].matching(marker)); n != 1 {
					return fmt.Errorf("member %s got %d copies of %s", m.ep.MAC, n, dst)
				}
			}
			var tagged int
			for _, f := range wire.matching(marker) {
				if f[12] == 0x81 && f[15] == 10 {
					tagged++
				}
			}
			if tagged != 1 {
				return fmt.Errorf("%d copies of %s on the wire tagged 10, want 1", tagged, dst)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		time.Sleep(100 * time.Millisecond)
		for _, o := range others {
			if n := len(caps[o].matching(marker)); n != 0 {
				t.Errorf("%s on VLAN %d got %d copies of a VLAN 10 flood", o.ep.MAC, o.ep.VLAN, n)
			}
		}
		if n := len(caps[sender].matching(marker)); n != 0 {
			t.Errorf("the sender got its own %s back %d times", dst, n)
		}
	}
}

// A container cannot spoof another MAC or tag its own frames: such frames
// never reach the wire and are counted as drops.
func TestContainerCannotSpoofOrHopVLANs(t *testing.T) {
	l := newLab(t)
	h := l.host()
	h.attach("")
	h.network("v10", 10, tables.Bridge)
	h.network("v20", 20, tables.Bridge)
	c := h.container("v10", "", "", false)
	wire := startCapture(t, l.sw, h.port)
	out := newSender(t, c.ns, "eth0")
	dst := mustMAC("02:00:00:00:77:77")
	cases := []struct {
		name   string
		frame  []byte
		reason tables.DropReason
	}{
		{"own MAC (control)", frame(dst, c.ep.MAC, nil, []byte("honest")), 0},
		{"spoofed source MAC", frame(dst, mustMAC("02:00:00:00:66:66"), nil, []byte("spoof")), tables.DropSpoofedSrc},
		{"802.1Q tag for VLAN 20", frame(dst, c.ep.MAC, [][2]uint16{{tpid8021Q, 20}}, []byte("hop-q")), tables.DropTaggedFromEndpoint},
		{"802.1ad double tag", frame(dst, c.ep.MAC, [][2]uint16{{tpid8021AD, 20}, {tpid8021Q, 10}}, []byte("hop-ad")), tables.DropTaggedFromEndpoint},
	}
	for _, tc := range cases {
		before := h.drops()
		out.send(t, tc.frame)
		time.Sleep(200 * time.Millisecond)
		seen := len(wire.matching(tc.frame[len(tc.frame)-46:]))
		if tc.reason == 0 {
			if seen != 1 {
				t.Errorf("%s: %d frames on the wire, want 1", tc.name, seen)
			}
			continue
		}
		if seen != 0 {
			t.Errorf("%s reached the wire", tc.name)
		}
		if d := h.drops()[tc.reason].Packets - before[tc.reason].Packets; d != 1 {
			t.Errorf("%s: drop counter %s +%d, want 1", tc.name, tc.reason, d)
		}
	}
}

// TCP between containers on two hosts, through the VLAN: iperf3, and a
// checksummed transfer.
func TestTCPAcrossHosts(t *testing.T) {
	l := newLab(t)
	a, b := l.host(), l.host()
	for _, h := range []*host{a, b} {
		h.attach("")
		h.network("v10", 10, tables.Bridge)
	}
	ca := a.container("v10", "", "10.10.0.1/24", false)
	cb := b.container("v10", "", "10.10.0.2/24", false)
	tcpTransfer(t, cb.ns, ca.ns, "10.10.0.2:5301", 64<<20)

	srv, err := startCmd(cb.ns, "iperf3", "-s", "-1", "-p", "5201")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Process.Kill()
	var out string
	err = eventually(3*time.Second, func() (err error) {
		out, err = run(ca.ns, "iperf3", "-c", cb.ip, "-p", "5201", "-t", "2", "-f", "g")
		return err
	})
	if err != nil {
		t.Fatalf("iperf3: %v", err)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, "receiver") {
			t.Logf("iperf3 across hosts on VLAN 10: %s", strings.TrimSpace(line))
		}
	}
}
