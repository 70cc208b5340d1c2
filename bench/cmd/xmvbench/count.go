package main

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	benchbpf "github.com/xmacvlan/xmacvlan/bench/bpf"
)

// consumer is what receives the frames inside a container.
type consumer string

const (
	stackConsumer      consumer = "stack"       // tcx ingress: the frames the container's stack gets
	xdpNativeConsumer  consumer = "xdp-native"  // an XDP program in the driver (veth)
	xdpGenericConsumer consumer = "xdp-generic" // an XDP program on the skb (macvlan, or a veth fed by redirect_peer)
)

// xdpConsumer is how a container's XDP program runs on each path: only
// frames that cross the veth by XDP redirect meet a native XDP program;
// macvlan has no native XDP, and bpf_redirect_peer skips the veth's
// driver, so there an XDP program must be generic to see anything.
func xdpConsumer(p path) consumer {
	if p == xmvXDP {
		return xdpNativeConsumer
	}
	return xdpGenericConsumer
}

// counters loads counting programs that share one map of per-slot counts.
type counters struct {
	spec *ebpf.CollectionSpec
	objs *benchbpf.BenchObjects
}

// counter is a counting program attached to one interface.
type counter struct {
	c    *counters
	slot int
	prog *ebpf.Program
	link link.Link
}

// attach loads a counter for slot and attaches it to ifname in namespace n.
func (c *counters) attach(n *ns, ifname string, kind consumer, slot int) (*counter, error) {
	spec := c.spec.Copy()
	name := benchbpf.BenchProgXbCountTc
	if kind != stackConsumer {
		name = benchbpf.BenchProgXbCountXdp
	}
	spec.Programs = map[string]*ebpf.ProgramSpec{name: spec.Programs[name]}
	if err := spec.Variables["slot"].Set(uint32(slot)); err != nil {
		return nil, err
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		benchbpf.BenchMapXbCounts: c.objs.XbCounts,
		benchbpf.BenchMapXbSent:   c.objs.XbSent,
		benchbpf.BenchMapXbFrame:  c.objs.XbFrame,
	}})
	if err != nil {
		return nil, fmt.Errorf("load counter: %w", err)
	}
	defer coll.Close()
	prog := coll.DetachProgram(name)
	if err := c.zero(slot); err != nil {
		prog.Close()
		return nil, err
	}
	var l link.Link
	err = n.do(func() error {
		dev, err := n.link(ifname)
		if err != nil {
			return err
		}
		idx := dev.Attrs().Index
		switch kind {
		case stackConsumer:
			l, err = link.AttachTCX(link.TCXOptions{Interface: idx, Program: prog, Attach: ebpf.AttachTCXIngress})
		case xdpNativeConsumer:
			l, err = link.AttachXDP(link.XDPOptions{Interface: idx, Program: prog, Flags: link.XDPDriverMode})
		default:
			l, err = link.AttachXDP(link.XDPOptions{Interface: idx, Program: prog, Flags: link.XDPGenericMode})
		}
		return err
	})
	if err != nil {
		prog.Close()
		return nil, fmt.Errorf("attach %s counter to %s in %s: %w", kind, ifname, n.name, err)
	}
	return &counter{c: c, slot: slot, prog: prog, link: l}, nil
}

func (k *counter) close() {
	k.link.Close()
	k.prog.Close()
}

// read sums the slot's packets over CPUs.
func (k *counter) read() (uint64, error) { return k.c.read(k.slot) }

func (c *counters) read(slot int) (uint64, error) {
	var perCPU []benchbpf.BenchCount
	if err := c.objs.XbCounts.Lookup(uint32(slot), &perCPU); err != nil {
		return 0, err
	}
	var n uint64
	for _, v := range perCPU {
		n += v.Packets
	}
	return n, nil
}

func (c *counters) zero(slot int) error {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	return c.objs.XbCounts.Update(uint32(slot), make([]benchbpf.BenchCount, cpus), ebpf.UpdateAny)
}

// counterSet is several counters read as one sum.
type counterSet []*counter

func (s counterSet) read() (uint64, error) {
	var sum uint64
	for _, k := range s {
		n, err := k.read()
		if err != nil {
			return 0, err
		}
		sum += n
	}
	return sum, nil
}

func (s counterSet) close() {
	for _, k := range s {
		k.close()
	}
}
