package main

import (
	"encoding/binary"
	"fmt"
	"net"
	"time"

	"github.com/cilium/ebpf"
	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/bpf"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// skbCtx is the start of struct __sk_buff, as BPF_PROG_RUN takes it: the
// fields up to ifindex (the kernel zero-fills the rest).
type skbCtx struct {
	Len, PktType, Mark, QueueMapping, Protocol, VlanPresent, VlanTCI, VlanProto, Priority, IngressIfindex, Ifindex uint32
}

// costEndpoint is an endpoint of the program-cost fixture.
type costEndpoint struct {
	dev  string // outer veth in the fixture's namespace
	vlan uint16
	mac  net.HardwareAddr
	xdp  bool
}

var (
	epA  = costEndpoint{"a0", 0, endpointMAC(0, 0), false}
	epA2 = costEndpoint{"a1", 0, endpointMAC(0, 1), false}
	epB  = costEndpoint{"b0", 0, endpointMAC(0, 2), true}
	epC  = costEndpoint{"c0", taggedVLAN, endpointMAC(taggedVLAN, 0), false}
	epD  = costEndpoint{"d0", taggedVLAN, endpointMAC(taggedVLAN, 1), true}
)

// Verdicts the cases expect: a case that returns anything else is not
// measuring what its name says.
const (
	xdpDrop     = 1
	xdpPass     = 2
	xdpRedirect = 4
	tcOK        = 0
	tcShot      = 2
	tcRedirect  = 7
)

// costCase is one program on one kind of frame.
type costCase struct {
	prog    string
	name    string
	eps     []costEndpoint // registered for the case; the first sends (ep_tx)
	dst     net.HardwareAddr
	vlan    int // tag on the frame
	verdict uint32
	// fresh: the program changes the frame (tag pop/push, metadata), and
	// BPF_PROG_RUN with repeat does not reset it between runs, so each
	// run gets a fresh copy (one syscall per run).
	fresh bool
}

func costCases() []costCase {
	rx, tc, tx := bpf.XmacvlanProgXmvRxXdp, bpf.XmacvlanProgXmvRxTc, bpf.XmacvlanProgXmvEpTx
	return []costCase{
		{rx, "hit", []costEndpoint{epA}, epA.mac, 0, xdpPass, true},
		{rx, "hit xdp-delivery", []costEndpoint{epB}, epB.mac, 0, xdpRedirect, false},
		{rx, "miss", []costEndpoint{epC}, unknownMAC, taggedVLAN, xdpDrop, false},
		{rx, "tagged", []costEndpoint{epC}, epC.mac, taggedVLAN, xdpPass, true},
		{rx, "tagged xdp-delivery", []costEndpoint{epD}, epD.mac, taggedVLAN, xdpRedirect, true},
		{rx, "broadcast", []costEndpoint{epA}, broadcastMAC, 0, xdpPass, true},
		{tc, "hit", []costEndpoint{epA}, epA.mac, 0, tcRedirect, false},
		{tc, "miss", []costEndpoint{epC}, unknownMAC, taggedVLAN, tcShot, false},
		{tc, "tagged", []costEndpoint{epC}, epC.mac, taggedVLAN, tcRedirect, true},
		{tc, "broadcast", []costEndpoint{epA}, broadcastMAC, 0, tcOK, false},
		{tx, "hit", []costEndpoint{epA, epA2}, epA2.mac, 0, tcRedirect, false},
		{tx, "miss", []costEndpoint{epA}, unknownMAC, 0, tcRedirect, false},
		{tx, "tagged", []costEndpoint{epC}, unknownMAC, 0, tcRedirect, true},
		{tx, "broadcast", []costEndpoint{epA}, broadcastMAC, 0, tcRedirect, false},
	}
}

// costFixture is an unpinned datapath in a namespace of its own, whose
// endpoints are real veths (the redirect map takes only live devices).
type costFixture struct {
	ns      *ns
	dp      *loader.Datapath
	tables  *tables.Tables
	ifindex map[string]int
}

func (b *bench) newCostFixture() (f *costFixture, err error) {
	n, err := newNS(b.lab.prefix + "cost")
	if err != nil {
		return nil, err
	}
	f = &costFixture{ns: n, ifindex: map[string]int{}}
	defer func() {
		if err != nil {
			f.close()
		}
	}()
	for _, dev := range []string{"par", epA.dev, epA2.dev, epB.dev, epC.dev, epD.dev} {
		v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: dev}, PeerName: dev + "x"}
		if err := n.nl.LinkAdd(v); err != nil {
			return nil, err
		}
		for _, name := range []string{dev, dev + "x"} {
			l, err := n.link(name)
			if err == nil {
				err = n.nl.LinkSetUp(l)
			}
			if err != nil {
				return nil, err
			}
			f.ifindex[name] = l.Attrs().Index
		}
	}
	if f.dp, err = loader.Load(); err != nil {
		return nil, err
	}
	f.tables = f.dp.Tables
	for _, net := range []tables.Network{{Name: "lan", VLAN: 0}, {Name: "v10", VLAN: taggedVLAN}} {
		if err := f.tables.AddNetwork(net); err != nil {
			return nil, err
		}
	}
	par, _ := n.link("par")
	err = f.tables.SetSettings(tables.Settings{ParentIfindex: par.Attrs().Index, ParentMAC: par.Attrs().HardwareAddr})
	return f, err
}

func (f *costFixture) close() error {
	if f.dp != nil {
		f.dp.Close()
	}
	return f.ns.close()
}

// programCost measures ns per frame of each datapath program with
// BPF_PROG_RUN, net of an empty program's cost measured the same way (5).
func (b *bench) programCost() error {
	f, err := b.newCostFixture()
	if err != nil {
		return fmt.Errorf("program cost fixture: %w", err)
	}
	defer func() {
		if err := f.close(); err != nil {
			b.log("cleanup: %v", err)
		}
	}()
	return f.ns.do(func() error {
		restore, err := pinThread(b.cfg.cpu)
		if err != nil {
			return err
		}
		defer restore()
		for _, size := range b.cfg.costSizes {
			for _, c := range costCases() {
				if err := b.ctx.Err(); err != nil {
					return err
				}
				if err := b.costCase(f, c, size); err != nil {
					return fmt.Errorf("program cost %s %s, %d entries: %w", c.prog, c.name, size, err)
				}
			}
		}
		return nil
	})
}

// costCase registers the case's endpoints, fills the MAC table up to size
// entries with synthetic ones, and measures. Runs inside the fixture's
// namespace.
func (b *bench) costCase(f *costFixture, c costCase, size int) error {
	var eps []tables.Endpoint
	defer func() {
		for _, ep := range eps {
			f.tables.DeleteEndpoint(ep.Ifindex)
		}
	}()
	for _, e := range c.eps {
		ep, err := f.tables.AddEndpoint(tables.Endpoint{Ifindex: f.ifindex[e.dev], VLAN: e.vlan, MAC: e.mac, XDPDelivery: e.xdp})
		if err != nil {
			return err
		}
		eps = append(eps, ep)
	}
	synthetic := max(size-len(eps), 0)
	if err := f.tables.AddSyntheticMACs(0, synthetic, eps[0]); err != nil {
		return err
	}
	defer f.tables.DeleteSyntheticMACs(eps[0].VLAN, 0, synthetic)

	prog := map[string]*ebpf.Program{
		bpf.XmacvlanProgXmvRxXdp: f.dp.Programs.XmvRxXdp,
		bpf.XmacvlanProgXmvRxTc:  f.dp.Programs.XmvRxTc,
		bpf.XmacvlanProgXmvEpTx:  f.dp.Programs.XmvEpTx,
	}[c.prog]
	empty := b.gen.objs.XbEmptyTc
	src := b.lab.wireMAC
	var ctx []byte
	switch c.prog {
	case bpf.XmacvlanProgXmvRxXdp:
		empty = b.gen.objs.XbEmptyXdp
	case bpf.XmacvlanProgXmvRxTc:
		ctx = skbCtx{Ifindex: uint32(f.ifindex["par"])}.bytes()
	case bpf.XmacvlanProgXmvEpTx:
		ctx = skbCtx{Ifindex: uint32(eps[0].Ifindex)}.bytes()
		src = c.eps[0].mac
	}
	vlan := c.vlan
	if c.prog == bpf.XmacvlanProgXmvEpTx {
		vlan = 0 // an endpoint sends untagged; its VLAN is pushed
	}
	frame := udpFrame(c.dst, src, vlan, wireIP, net.IPv4(10, 77, 0, 99))

	verdict, _, err := progRun(prog, frame, ctx, 1, 0, 0)
	if err != nil {
		return err
	}
	if verdict != c.verdict {
		return fmt.Errorf("verdict %d, want %d: the case does not measure what it says", verdict, c.verdict)
	}
	unit := "ns/frame (repeat)"
	if c.fresh {
		unit = "ns/frame (fresh copies)"
	}
	name := fmt.Sprintf("5 program cost, %s, %d entries", c.name, max(size, len(eps)))
	for r := range b.cfg.rounds {
		var progNs, emptyNs float64
		if c.fresh {
			progNs, emptyNs, err = b.timeFresh(prog, empty, frame, ctx)
		} else {
			progNs, emptyNs, err = b.timeRepeat(prog, empty, frame, ctx)
		}
		if err != nil {
			return err
		}
		b.res.add(name, path(c.prog), unit, r, progNs-emptyNs)
	}
	return nil
}

// timeRepeat runs each program cfg.costRepeat times over in one
// BPF_PROG_RUN and returns the kernel's mean ns per run.
func (b *bench) timeRepeat(prog, empty *ebpf.Program, frame, ctx []byte) (float64, float64, error) {
	n := uint32(b.cfg.costRepeat)
	_, p, err := progRun(prog, frame, ctx, n, 0, 0)
	if err != nil {
		return 0, 0, err
	}
	_, e, err := progRun(empty, frame, ctx, n, 0, 0)
	return float64(p), float64(e), err
}

// timeFresh runs each program once per BPF_PROG_RUN, on a fresh copy of
// the frame each time, cfg.costFresh times, alternating the two, and
// returns the mean ns per run (which includes the timer's own reads,
// cancelled by subtracting the empty program's).
func (b *bench) timeFresh(prog, empty *ebpf.Program, frame, ctx []byte) (float64, float64, error) {
	var p, e time.Duration
	for range b.cfg.costFresh {
		_, d, err := progRun(prog, frame, ctx, 1, 0, 0)
		if err != nil {
			return 0, 0, err
		}
		p += d
		if _, d, err = progRun(empty, frame, ctx, 1, 0, 0); err != nil {
			return 0, 0, err
		}
		e += d
	}
	n := float64(b.cfg.costFresh)
	return float64(p) / n, float64(e) / n, nil
}

func (c skbCtx) bytes() []byte {
	b, _ := binary.Append(nil, binary.NativeEndian, c)
	return b
}
