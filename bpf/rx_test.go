package bpf_test

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/bpf"
	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// fixture is a freshly loaded, unpinned datapath with a few networks and
// endpoints. The redirect map only takes interfaces that exist, so the
// endpoints are real veths in a namespace of the test's own.
type fixture struct {
	dp     *loader.Datapath
	tbl    *tables.Tables
	ns     *testutil.Netns
	eps    map[string]tables.Endpoint
	model  rxModel
	parent int // ifindex standing in for the parent
}

func newFixture(t testing.TB) *fixture {
	testutil.Privileged(t)
	dp, err := loader.Load()
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	t.Cleanup(dp.Close)
	tbl := dp.Tables
	f := &fixture{dp: dp, tbl: tbl, ns: testutil.NewNetns(t, "xu"), eps: map[string]tables.Endpoint{}}

	for _, n := range []tables.Network{{VLAN: 0}, {VLAN: 10}, {VLAN: 20, Mode: tables.Private}, {VLAN: 40, Mode: tables.VEPA}} {
		if err := tbl.AddNetwork(n); err != nil {
			t.Fatal(err)
		}
	}
	for _, ep := range []struct {
		name string
		vlan uint16
		mac  string
		xdp  bool
	}{
		{"untagged", 0, "02:00:00:00:00:0a", false},
		{"v10skb", 10, "02:00:00:00:10:01", false},
		{"v10xdp", 10, "02:00:00:00:10:02", true},
		// Same MAC as "untagged", on another VLAN: VLANs are separate.
		{"v20xdp", 20, "02:00:00:00:00:0a", true},
		{"v20skb", 20, "02:00:00:00:20:02", false},
		{"v40a", 40, "02:00:00:00:40:01", false},
		{"v40b", 40, "02:00:00:00:40:02", false},
	} {
		ifindex := f.veth(t, ep.name)
		mac, _ := net.ParseMAC(ep.mac)
		var added tables.Endpoint
		err := f.ns.Do(func() (err error) {
			added, err = tbl.AddEndpoint(tables.Endpoint{Ifindex: ifindex, VLAN: ep.vlan, MAC: mac, XDPDelivery: ep.xdp})
			return err
		})
		if err != nil {
			t.Fatalf("add endpoint %s: %v", ep.name, err)
		}
		f.eps[ep.name] = added
	}
	networks, err := tbl.Networks()
	if err != nil {
		t.Fatal(err)
	}
	eps, err := tbl.Endpoints()
	if err != nil {
		t.Fatal(err)
	}
	f.model = newRxModel(networks, eps)
	f.parent = f.veth(t, "parent")
	f.model.parentMTU = f.mtu(t, f.parent)
	err = tbl.SetSettings(tables.Settings{ParentIfindex: f.parent, ParentMAC: mustMAC(parentMAC)})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// parentMAC is the parent's MAC in the fixture's settings.
const parentMAC = "02:00:00:00:ee:ee"

func mustMAC(s string) net.HardwareAddr {
	m, err := net.ParseMAC(s)
	if err != nil {
		panic(err)
	}
	return m
}

// veth creates a veth pair in the fixture's namespace and returns the
// ifindex of the end the datapath would redirect to.
func (f *fixture) veth(t testing.TB, name string) int {
	la := netlink.NewLinkAttrs()
	la.Name = "o" + name
	if len(la.Name) > 15 {
		la.Name = la.Name[:15]
	}
	if err := f.ns.NL.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "i" + la.Name[1:]}); err != nil {
		t.Fatalf("veth %s: %v", name, err)
	}
	for _, name := range []string{la.Name, "i" + la.Name[1:]} {
		l, err := f.ns.NL.LinkByName(name)
		if err == nil {
			err = f.ns.NL.LinkSetUp(l) // flood copies go out only through an up device
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	l, err := f.ns.NL.LinkByName(la.Name)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().Index
}

// mtu reads the MTU of the fixture's interface ifindex.
func (f *fixture) mtu(t testing.TB, ifindex int) int {
	l, err := f.ns.NL.LinkByIndex(ifindex)
	if err != nil {
		t.Fatal(err)
	}
	return l.Attrs().MTU
}

type tag struct{ tpid, tci uint16 }

// ethFrame builds a frame: addresses, 802.1Q/802.1ad tags, an ethertype
// and a payload of n patterned bytes.
func ethFrame(dst, src string, tags []tag, etherType uint16, n int) []byte {
	d, err := net.ParseMAC(dst)
	if err != nil {
		panic(err)
	}
	s, err := net.ParseMAC(src)
	if err != nil {
		panic(err)
	}
	b := append(append([]byte{}, d...), s...)
	for _, tg := range tags {
		b = binary.BigEndian.AppendUint16(b, tg.tpid)
		b = binary.BigEndian.AppendUint16(b, tg.tci)
	}
	b = binary.BigEndian.AppendUint16(b, etherType)
	for i := 0; i < n; i++ {
		b = append(b, byte(i))
	}
	return b
}

// rxRun is one run of the XDP program on a frame.
type rxRun struct {
	action uint32
	out    []byte
	meta   *rxMeta
}

// rxMeta mirrors struct rx_meta in bpf/types.h.
type rxMeta struct {
	Magic   uint32
	Verdict uint8
	Flags   uint8
	Vlan    uint16
	Ifindex uint32
	ID      uint32
}

const rxMetaMagic = 0x786d7631

func (f *fixture) runXDP(t testing.TB, frame []byte) rxRun {
	opts := ebpf.RunOptions{Data: frame, DataOut: make([]byte, len(frame)+256)}
	ret, err := f.dp.Programs.XmvRxXdp.Run(&opts)
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	r := rxRun{action: ret, out: opts.DataOut}
	// On XDP_PASS the output starts at data_meta.
	if len(r.out) >= metaSize {
		var m rxMeta
		binary.Decode(r.out, binary.NativeEndian, &m)
		if m.Magic == rxMetaMagic {
			r.meta = &m
			r.out = r.out[metaSize:]
		}
	}
	return r
}

const metaSize = 16

// check runs frame through the program and the model and compares verdict,
// metadata, output bytes and the counters the program bumped.
func (f *fixture) check(t *testing.T, frame []byte) rxOutcome {
	t.Helper()
	want := f.model.rx(frame)
	dropsBefore, err := f.tbl.Drops()
	if err != nil {
		t.Fatal(err)
	}
	var epBefore tables.Traffic
	if want.endpoint != nil {
		epBefore, _ = f.tbl.EndpointTraffic(want.endpoint.ID)
	}

	got := f.runXDP(t, frame)

	if got.action != want.action {
		t.Fatalf("action %d, model says %d (frame % x)", got.action, want.action, frame[:min(len(frame), 20)])
	}
	if want.action == xdpPass || want.action == xdpRedirect {
		if !bytes.Equal(got.out, want.out) {
			t.Errorf("output frame differs from the model:\n got % x\nwant % x", head(got.out), head(want.out))
		}
	}
	switch want.action {
	case xdpPass:
		if got.meta == nil {
			t.Fatalf("XDP_PASS without metadata")
		}
		if verdict(got.meta.Verdict) != want.verdict {
			t.Errorf("metadata verdict %d, want %d", got.meta.Verdict, want.verdict)
		}
		if want.verdict != verdictHost && got.meta.Vlan != want.vlan {
			t.Errorf("metadata VLAN %d, want %d", got.meta.Vlan, want.vlan)
		}
		if want.verdict == verdictDeliver &&
			(int(got.meta.Ifindex) != want.endpoint.Ifindex || int(got.meta.ID) != want.endpoint.ID ||
				(got.meta.Flags&uint8(bpf.XmacvlanEndpointFlagsEP_HOST) != 0) != want.endpoint.Host) {
			t.Errorf("metadata endpoint ifindex %d id %d flags %#x, want %d %d host=%v",
				got.meta.Ifindex, got.meta.ID, got.meta.Flags, want.endpoint.Ifindex, want.endpoint.ID, want.endpoint.Host)
		}
	case xdpDrop:
		after, _ := f.tbl.Drops()
		for r := range after {
			delta := after[r].Packets - dropsBefore[r].Packets
			if wantDelta := uint64(b2i(tables.DropReason(r) == want.reason)); delta != wantDelta {
				t.Errorf("drop counter %s moved by %d, want %d", tables.DropReason(r), delta, wantDelta)
			}
		}
	case xdpRedirect:
		// The redirect target is the endpoint whose counter moved.
		after, _ := f.tbl.EndpointTraffic(want.endpoint.ID)
		if after.RxPackets != epBefore.RxPackets+1 || after.RxBytes != epBefore.RxBytes+uint64(len(want.out)) {
			t.Errorf("endpoint %d counters %+v -> %+v, want +1 packet +%d bytes", want.endpoint.ID, epBefore, after, len(want.out))
		}
	}
	return want
}

func head(b []byte) []byte { return b[:min(len(b), 32)] }

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

const (
	host      = "02:00:00:00:99:99" // a sender on the wire
	bcast     = "ff:ff:ff:ff:ff:ff"
	v4mcast   = "01:00:5e:00:00:fb"
	ndMcast   = "33:33:ff:00:00:01"
	unknown   = "02:00:00:00:77:77"
	ipv4      = 0x0800
	ipv6      = 0x86dd
	jumboSize = 9000
)

func dot1q(vid uint16) []tag { return []tag{{etherTypeVLAN, vid}} }

// rxCases is the receive spec, one line per kind of frame; each line names
// what the model must predict so a model bug cannot hide a program bug.
var rxCases = []struct {
	name   string
	frame  []byte
	action uint32
}{
	{"untagged hit, skb delivery", ethFrame("02:00:00:00:00:0a", host, nil, ipv4, 50), xdpPass},
	{"untagged miss goes to the host", ethFrame(unknown, host, nil, ipv4, 50), xdpPass},
	{"tagged hit, skb delivery", ethFrame("02:00:00:00:10:01", host, dot1q(10), ipv4, 50), xdpPass},
	{"tagged hit with priority bits", ethFrame("02:00:00:00:10:01", host, dot1q(5<<13|10), ipv4, 50), xdpPass},
	{"tagged hit, XDP delivery pops the tag", ethFrame("02:00:00:00:10:02", host, dot1q(10), ipv6, 60), xdpRedirect},
	{"same MAC on another VLAN is another endpoint", ethFrame("02:00:00:00:00:0a", host, dot1q(20), ipv4, 50), xdpRedirect},
	{"tagged miss is dropped", ethFrame(unknown, host, dot1q(10), ipv4, 50), xdpDrop},
	{"MAC of another VLAN is a miss", ethFrame("02:00:00:00:10:01", host, dot1q(20), ipv4, 50), xdpDrop},
	{"unknown VLAN", ethFrame("02:00:00:00:10:01", host, dot1q(30), ipv4, 50), xdpDrop},
	{"reserved VID 4095", ethFrame("02:00:00:00:10:01", host, dot1q(4095), ipv4, 50), xdpDrop},
	{"priority-tagged (VID 0) is untagged", ethFrame("02:00:00:00:00:0a", host, dot1q(0), ipv4, 50), xdpPass},
	{"untagged broadcast floods", ethFrame(bcast, host, nil, 0x0806, 28), xdpPass},
	{"tagged broadcast floods", ethFrame(bcast, host, dot1q(10), 0x0806, 28), xdpPass},
	{"IPv4 multicast floods", ethFrame(v4mcast, host, dot1q(10), ipv4, 40), xdpPass},
	{"IPv6 ND multicast floods", ethFrame(ndMcast, host, dot1q(20), ipv6, 40), xdpPass},
	{"broadcast on unknown VLAN", ethFrame(bcast, host, dot1q(30), 0x0806, 28), xdpDrop},
	{"802.1ad outer tag", ethFrame("02:00:00:00:10:01", host, []tag{{etherTypeQinQ, 10}, {etherTypeVLAN, 10}}, ipv4, 50), xdpDrop},
	{"802.1ad single tag", ethFrame("02:00:00:00:10:01", host, []tag{{etherTypeQinQ, 10}}, ipv4, 50), xdpDrop},
	{"double 802.1Q", ethFrame("02:00:00:00:10:02", host, []tag{{etherTypeVLAN, 10}, {etherTypeVLAN, 20}}, ipv4, 50), xdpDrop},
	{"untagged QinQ to an endpoint MAC", ethFrame("02:00:00:00:00:0a", host, []tag{{etherTypeQinQ, 0}}, ipv4, 50), xdpDrop},
	// Every tag protocol is a tag: the pre-standard QinQ TPIDs are outer
	// tags too, never an untagged frame with an odd ethertype.
	{"0x9100 outer tag", ethFrame("02:00:00:00:10:01", host, []tag{{etherTypeQinQ1, 10}}, ipv4, 50), xdpDrop},
	{"0x9200 outer tag", ethFrame("02:00:00:00:10:02", host, []tag{{etherTypeQinQ2, 10}}, ipv4, 50), xdpDrop},
	{"0x9300 outer tag", ethFrame("02:00:00:00:10:01", host, []tag{{etherTypeQinQ3, 10}}, ipv4, 50), xdpDrop},
	{"0x9100 tag to an untagged endpoint MAC", ethFrame("02:00:00:00:00:0a", host, []tag{{etherTypeQinQ1, 0}}, ipv4, 50), xdpDrop},
	{"0x9100 tagged broadcast is not flooded", ethFrame(bcast, host, []tag{{etherTypeQinQ1, 0}}, 0x0806, 28), xdpDrop},
	{"0x9200 tagged broadcast is not flooded", ethFrame(bcast, host, []tag{{etherTypeQinQ2, 10}}, 0x0806, 28), xdpDrop},
	{"0x9300 tagged broadcast is not flooded", ethFrame(bcast, host, []tag{{etherTypeQinQ3, 0}}, 0x0806, 28), xdpDrop},
	{"802.1Q over 0x9100", ethFrame("02:00:00:00:10:01", host, []tag{{etherTypeQinQ1, 10}, {etherTypeVLAN, 10}}, ipv4, 50), xdpDrop},
	{"0x9300 inside 802.1Q", ethFrame("02:00:00:00:10:02", host, []tag{{etherTypeVLAN, 10}, {etherTypeQinQ3, 10}}, ipv4, 50), xdpDrop},
	{"runt: truncated 0x9100 tag", ethFrame("02:00:00:00:10:01", host, nil, etherTypeQinQ1, 2), xdpDrop},
	{"runt: header only", ethFrame(unknown, host, nil, ipv4, 0), xdpPass},
	{"runt: truncated tag", ethFrame("02:00:00:00:10:01", host, nil, etherTypeVLAN, 2), xdpDrop},
	{"jumbo untagged hit", ethFrame("02:00:00:00:00:0a", host, nil, ipv4, jumboSize), xdpPass},
	{"jumbo tagged, XDP delivery", ethFrame("02:00:00:00:10:02", host, dot1q(10), ipv4, jumboSize), xdpRedirect},
	{"jumbo tagged miss", ethFrame(unknown, host, dot1q(10), ipv4, jumboSize), xdpDrop},
}

func TestRxXDP(t *testing.T) {
	f := newFixture(t)
	for _, tc := range rxCases {
		t.Run(tc.name, func(t *testing.T) {
			if got := f.check(t, tc.frame); got.action != tc.action {
				t.Fatalf("model predicts action %d, the spec says %d", got.action, tc.action)
			}
		})
	}
}

// FuzzRxXDP feeds arbitrary frames to the program and the model. The seed
// corpus (run by every `go test`) is the spec above.
func FuzzRxXDP(f *testing.F) {
	for _, tc := range rxCases {
		f.Add(tc.frame)
	}
	fx := newFixture(f)
	f.Fuzz(func(t *testing.T, frame []byte) {
		if len(frame) < 14 { // BPF_PROG_RUN refuses shorter input
			return
		}
		fx.check(t, frame)
	})
}
