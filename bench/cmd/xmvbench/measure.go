package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/xmacvlan/xmacvlan/internal/iperf3"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// bench holds what every measurement uses.
type bench struct {
	ctx context.Context
	cfg config
	lab *lab
	gen *generator
	cnt *counters
	res *results
	log func(format string, args ...any)

	pktgen       bool // the kernel has pktgen: a third generator
	profileLines []string
}

// sleep waits d or until the run is interrupted.
func (b *bench) sleep(d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-b.ctx.Done():
		return b.ctx.Err()
	}
}

// window measures how fast read grows, over cfg.window after cfg.warmup.
func (b *bench) window(read func() (uint64, error)) (float64, error) {
	if err := b.sleep(b.cfg.warmup); err != nil {
		return 0, err
	}
	c0, err := read()
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	if err := b.sleep(b.cfg.window); err != nil {
		return 0, err
	}
	c1, err := read()
	if err != nil {
		return 0, err
	}
	return float64(c1-c0) / time.Since(t0).Seconds(), nil
}

// during runs the generator with frame while f measures.
func (b *bench) during(frame []byte, f func() error) error {
	s := b.gen.start(frame, 0)
	err := f()
	if serr := s.stop(); err == nil {
		err = serr
	}
	return err
}

// Measurement names: one record per name and path.
const (
	mBaseline  = "0 generator baseline (parent XDP_DROP)"
	mStack     = "1 delivered pps, stack"
	mXDP       = "1 delivered pps, XDP consumer"
	mTrafgen   = "1 delivered pps, stack, trafgen"
	mPktgen    = "1 delivered pps, stack, pktgen"
	mDropMAC   = "2 unwanted drop, unknown MAC"
	mDropVLAN  = "2 unwanted drop, unknown VLAN"
	mTagged    = "3 VLAN-tagged delivered pps, stack"
	mTaggedXDP = "3 VLAN-tagged delivered pps, XDP consumer"
	mTCP       = "4 TCP %d stream(s), %s"
	mFlood     = "6 flood, %d member(s)"
	mFloodLost = "6 flood, %d member(s), input backlog drops (all CPUs)"
	// The drop counters of the parent, the outer veths and the members.
	mFloodDevDrops = "6 flood, %d member(s), interface drops (parent, members' veths or macvlans)"
	// Copies owed (broadcasts the parent took x members) less delivered.
	mFloodShort = "6 flood, %d member(s), copies short (parent rx x members - delivered)"
	// xmacvlan's flood_copies event over the window.
	mFloodMade  = "6 flood, %d member(s), copies xmacvlan made (flood_copies)"
	mUpgrade    = "7 upgrade under load, frames lost"
	mUpgradeCtl = "7 same stream without upgrade, frames lost"
	mUpgradeTx  = "7 upgrade under load, frames sent"
)

var unknownMAC = net.HardwareAddr{0x02, 0x78, 0x62, 0xee, 0xee, 0xee}

const unknownVLAN = 99

// pathRound runs measurements 1-4 on path p: one round of it.
func (b *bench) pathRound(round int, p path) error {
	d, err := b.lab.deploy(p, b.cfg.endpoints, true)
	if err != nil {
		return fmt.Errorf("deploy %s: %w", p, err)
	}
	defer func() {
		if err := d.remove(); err != nil {
			b.log("remove %s: %v", p, err)
		}
	}()
	t := d.members[0]
	frame := udpFrame(t.mac, b.lab.wireMAC, 0, wireIP, t.ip)

	// 1. Delivered pps, counted inside the container.
	for _, m := range []struct {
		name string
		kind consumer
	}{{mStack, stackConsumer}, {mXDP, xdpConsumer(p)}} {
		v, err := b.pps(t, m.kind, frame)
		if err != nil {
			return fmt.Errorf("%s on %s: %w", m.name, p, err)
		}
		b.res.add(m.name, p, "Mpps", round, v/1e6)
	}
	if b.cfg.trafgen {
		v, err := b.ppsTrafgen(t, frame)
		if err != nil {
			return fmt.Errorf("%s on %s: %w", mTrafgen, p, err)
		}
		b.res.add(mTrafgen, p, "Mpps", round, v/1e6)
	}
	if b.pktgen {
		v, err := b.ppsPktgen(t)
		if err != nil {
			return fmt.Errorf("%s on %s: %w", mPktgen, p, err)
		}
		b.res.add(mPktgen, p, "Mpps", round, v/1e6)
	}

	// 2. Unwanted frames, counted where they are disposed of: the parent.
	// (xmv-off-skb drops them in tcx, after the skb is built.)
	// xmacvlan drops unknown unicast on tagged VLANs (on the untagged
	// segment it belongs to the host, as with macvlan); the kernel, with
	// a promiscuous parent and no macvlan for the MAC, builds an skb and
	// drops it, tagged or not.
	vlan := 0
	if p != kernel {
		vlan = taggedVLAN
	}
	for _, m := range []struct {
		name  string
		frame []byte
	}{
		{mDropMAC, udpFrame(unknownMAC, b.lab.wireMAC, vlan, wireIP, net.IPv4(10, 77, 0, 250))},
		{mDropVLAN, udpFrame(unknownMAC, b.lab.wireMAC, unknownVLAN, wireIP, net.IPv4(10, 77, 0, 250))},
	} {
		v, err := b.dropRate(d, m.frame)
		if err != nil {
			return fmt.Errorf("%s on %s: %w", m.name, p, err)
		}
		b.res.add(m.name, p, "Mpps", round, v/1e6)
	}

	// 3. Tagged delivery: xmacvlan only (no 8021q on this kernel).
	if d.tagged != nil {
		tf := udpFrame(d.tagged.mac, b.lab.wireMAC, taggedVLAN, wireIP, d.tagged.ip)
		for _, m := range []struct {
			name string
			kind consumer
		}{{mTagged, stackConsumer}, {mTaggedXDP, xdpConsumer(p)}} {
			v, err := b.pps(*d.tagged, m.kind, tf)
			if err != nil {
				return fmt.Errorf("%s on %s: %w", m.name, p, err)
			}
			b.res.add(m.name, p, "Mpps", round, v/1e6)
		}
	}

	// 4. TCP with iperf3, measured by the receiver.
	if _, err := t.ns.run(b.ctx, "ping", "-c", "1", "-W", "2", wireIP.String()); err != nil {
		return fmt.Errorf("%s: endpoint cannot reach the wire: %w", p, err)
	}
	for _, dir := range []string{"wire->endpoint", "endpoint->wire"} {
		for _, streams := range []int{1, 4} {
			v, err := b.tcp(t, streams, dir == "wire->endpoint")
			if err != nil {
				return fmt.Errorf("TCP on %s: %w", p, err)
			}
			b.res.add(fmt.Sprintf(mTCP, streams, dir), p, "Gbit/s", round, v/1e9)
		}
	}
	return nil
}

// pps measures frames per second arriving at member m's consumer.
func (b *bench) pps(m member, kind consumer, frame []byte) (float64, error) {
	k, err := b.cnt.attach(m.ns, "eth0", kind, 0)
	if err != nil {
		return 0, err
	}
	defer k.close()
	var v float64
	err = b.during(frame, func() (err error) {
		v, err = b.window(k.read)
		return err
	})
	if err == nil && v == 0 {
		err = errors.New("nothing arrived at the receiver")
	}
	return v, err
}

// dropRate measures how many unwanted frames per second the parent takes
// off the wire (and disposes of), from its rx counter. The parent is
// promiscuous meanwhile, as a parent with many macvlans often is.
func (b *bench) dropRate(d *deployment, frame []byte) (float64, error) {
	if err := b.lab.setPromisc(true); err != nil {
		return 0, err
	}
	defer b.lab.setPromisc(false)
	read := func() (uint64, error) {
		st, err := b.lab.parentStats()
		if err != nil {
			return 0, err
		}
		return st.RxPackets, nil
	}
	var dropped0, dropped1 uint64
	xdpDrops := func(into *uint64) error {
		if d.path == kernel {
			return nil
		}
		return d.tables(func(t *tables.Tables) error {
			drops, err := t.Drops()
			for _, c := range drops {
				*into += c.Packets
			}
			return err
		})
	}
	var v float64
	err := b.during(frame, func() (err error) {
		if err := xdpDrops(&dropped0); err != nil {
			return err
		}
		r0, err := read()
		if err != nil {
			return err
		}
		v, err = b.window(read)
		if err != nil {
			return err
		}
		r1, err := read()
		if err != nil {
			return err
		}
		if err := xdpDrops(&dropped1); err != nil {
			return err
		}
		// Cross-check: xmacvlan's own counters saw these frames dropped.
		if rx, dr := r1-r0, dropped1-dropped0; d.path != kernel && (dr < rx*9/10) {
			b.log("warning: %s: parent took %d frames, xmacvlan dropped %d", d.path, rx, dr)
		}
		return nil
	})
	return v, err
}

// tcp runs iperf3 between member m and the wire for cfg.tcpTime and returns
// the receiver's bits per second.
func (b *bench) tcp(m member, streams int, toEndpoint bool) (float64, error) {
	args := []string{"--client", wireIP.String(), "--time", strconv.Itoa(int(b.cfg.tcpTime.Seconds())),
		"--parallel", strconv.Itoa(streams), "--json"}
	if toEndpoint {
		args = append(args, "--reverse") // the server, on the wire, sends
	}
	var out string
	var err error
	for try := 0; try < 3; try++ {
		if err := b.lab.startIperf(); err != nil {
			return 0, err
		}
		out, err = m.ns.run(b.ctx, "iperf3", args...)
		if err == nil || b.ctx.Err() != nil {
			break
		}
		b.log("iperf3 (try %d): %v", try+1, err)
		b.sleep(time.Second) // the server is finishing the previous test, or restarts
	}
	if err != nil {
		return 0, err
	}
	return iperf3.Received([]byte(out))
}

// flood measures broadcast frames per second delivered to each member of
// one VLAN with n members (6).
func (b *bench) flood(round, n int, p path) error {
	d, err := b.lab.deploy(p, n, false)
	if err != nil {
		return fmt.Errorf("deploy %s with %d endpoints: %w", p, n, err)
	}
	defer func() {
		if err := d.remove(); err != nil {
			b.log("remove %s: %v", p, err)
		}
	}()
	var set counterSet
	defer func() { set.close() }()
	for i, m := range d.members {
		k, err := b.cnt.attach(m.ns, "eth0", stackConsumer, i)
		if err != nil {
			return err
		}
		set = append(set, k)
	}
	frame := udpFrame(broadcastMAC, b.lab.wireMAC, 0, wireIP, net.IPv4(10, 77, 0, 255))
	var v, backlog, devDrops, short, made float64
	err = b.during(frame, func() (err error) {
		if err := b.sleep(b.cfg.warmup); err != nil {
			return err
		}
		backlog0 := backlogDrops()
		dev0, err := d.deviceDrops()
		if err != nil {
			return err
		}
		rx0, err := b.lab.parentStats()
		if err != nil {
			return err
		}
		made0, err := floodCopies(d)
		if err != nil {
			return err
		}
		got0, err := set.read()
		if err != nil {
			return err
		}
		t0 := time.Now()
		if err := b.sleep(b.cfg.window); err != nil {
			return err
		}
		got1, err := set.read()
		if err != nil {
			return err
		}
		rx1, err := b.lab.parentStats()
		if err != nil {
			return err
		}
		dev1, err := d.deviceDrops()
		if err != nil {
			return err
		}
		made1, err := floodCopies(d)
		if err != nil {
			return err
		}
		secs := time.Since(t0).Seconds()
		made = float64(made1-made0) / secs
		backlog = float64(backlogDrops()-backlog0) / secs
		devDrops = float64(dev1-dev0) / secs
		v = float64(got1-got0) / secs
		// Every broadcast the parent took owes each member a copy.
		short = (float64(rx1.RxPackets-rx0.RxPackets)*float64(n) - float64(got1-got0)) / secs
		return nil
	})
	if err != nil {
		return err
	}
	if v == 0 {
		return fmt.Errorf("flood on %s with %d members: nothing arrived", p, n)
	}
	b.res.add(fmt.Sprintf(mFlood, n), p, "kpps/member", round, v/float64(n)/1e3)
	b.res.add(fmt.Sprintf(mFloodLost, n), p, "kpps", round, backlog/1e3)
	b.res.add(fmt.Sprintf(mFloodDevDrops, n), p, "kpps", round, devDrops/1e3)
	b.res.add(fmt.Sprintf(mFloodShort, n), p, "kpps", round, short/1e3)
	if p != kernel {
		b.res.add(fmt.Sprintf(mFloodMade, n), p, "kpps", round, made/1e3)
	}
	return nil
}

// floodCopies reads xmacvlan's flood_copies event counter (0 for kernel
// macvlan): the copies its programs made, to tell copies never made from
// copies lost after.
func floodCopies(d *deployment) (n uint64, err error) {
	if d.path == kernel {
		return 0, nil
	}
	err = d.tables(func(t *tables.Tables) error {
		ev, err := t.Events()
		if err == nil {
			n = ev[tables.EvFloodCopies].Packets
		}
		return err
	})
	return n, err
}

// deviceDrops sums the drop counters of the deployment's interfaces, each
// refused copy once: the parent's rx_dropped and tx_dropped (kernel
// macvlan counts there the broadcasts its queue refuses); for kernel
// macvlan each member's eth0; for xmacvlan each outer veth's tx_dropped,
// where veth_xmit counts a copy that its peer's ring or the CPU's backlog
// refused (the backlog also counts it on the inner end's rx_dropped, so
// the inner ends are left out).
func (d *deployment) deviceDrops() (uint64, error) {
	var sum uint64
	links, err := d.lab.host.nl.LinkList()
	if err != nil {
		return 0, err
	}
	for _, l := range links {
		st := l.Attrs().Statistics
		switch {
		case st == nil:
		case l.Attrs().Name == parent:
			sum += st.RxDropped + st.TxDropped
		case l.Type() == "veth":
			sum += st.TxDropped
		}
	}
	if d.path != kernel {
		return sum, nil
	}
	for _, m := range d.members {
		eth0, err := m.ns.link("eth0")
		if err != nil {
			return 0, err
		}
		if st := eth0.Attrs().Statistics; st != nil {
			sum += st.RxDropped + st.TxDropped
		}
	}
	return sum, nil
}

// backlogDrops reads how many frames the CPUs' input backlogs
// (netdev_max_backlog) have dropped: the second column of
// /proc/net/softnet_stat, in hex, one line per CPU.
func backlogDrops() uint64 {
	b, _ := os.ReadFile("/proc/net/softnet_stat")
	var sum uint64
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 {
			n, _ := strconv.ParseUint(f[1], 16, 64)
			sum += n
		}
	}
	return sum
}

// upgrade counts the frames lost while the programs are replaced under a
// paced stream, and in the same stream without replacement (7).
func (b *bench) upgrade(round int, p path) error {
	d, err := b.lab.deploy(p, b.cfg.endpoints, false)
	if err != nil {
		return fmt.Errorf("deploy %s: %w", p, err)
	}
	defer func() {
		if err := d.remove(); err != nil {
			b.log("remove %s: %v", p, err)
		}
	}()
	t := d.members[0]
	k, err := b.cnt.attach(t.ns, "eth0", stackConsumer, 0)
	if err != nil {
		return err
	}
	defer k.close()
	frame := udpFrame(t.mac, b.lab.wireMAC, 0, wireIP, t.ip)

	for _, swaps := range []int{0, b.cfg.swaps} {
		sent0, err := b.gen.sent()
		if err != nil {
			return err
		}
		got0, err := k.read()
		if err != nil {
			return err
		}
		s := b.gen.start(frame, b.cfg.upgradeRate)
		step := b.cfg.upgradeWindow / time.Duration(swaps+1)
		var swapErr error
		for i := 0; i < swaps && swapErr == nil; i++ {
			if swapErr = b.sleep(step); swapErr == nil {
				swapErr = b.lab.host.do(func() error {
					_, err := loader.Attach(loader.AttachOptions{Root: b.lab.root, Parent: parent,
						XDP: loader.XDPOn, Replace: true})
					return err
				})
			}
		}
		if swapErr == nil {
			swapErr = b.sleep(step)
		}
		if err := s.stop(); swapErr == nil {
			swapErr = err
		}
		if swapErr != nil {
			return swapErr
		}
		if err := b.sleep(200 * time.Millisecond); err != nil { // frames in flight
			return err
		}
		sent1, err := b.gen.sent()
		if err != nil {
			return err
		}
		got1, err := k.read()
		if err != nil {
			return err
		}
		sent, got := sent1-sent0, got1-got0
		lost := float64(sent) - float64(got)
		if swaps == 0 {
			b.res.add(mUpgradeCtl, p, "frames", round, lost)
			continue
		}
		b.res.add(mUpgrade, p, "frames", round, lost)
		b.res.add(mUpgradeTx, p, "frames", round, float64(sent))
		b.log("  %s: %d swaps, sent %d, received %d", p, swaps, sent, got)
	}
	return nil
}
