package main

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"time"

	"github.com/xmacvlan/xmacvlan/internal/iperf3"
	"github.com/xmacvlan/xmacvlan/tables"
)

// The storm line (10): one endpoint broadcasts as fast as trafgen can
// while another endpoint of the same VLAN receives a TCP stream from the
// wire. The victim's throughput during the storm over its throughput
// without it, in the same round on the same deployment, says how much a
// storm in one container hurts the others.
//
// On two cores a sender that spins takes a core whatever the path does
// with its frames, so the storm is pinned to the generator's CPU and the
// TCP test (server and client) to another one, in both halves: the
// fraction then measures what the storm's frames cost the victim (the
// copies, the queues and devices they share with its stream: the wire's
// veth, whose NAPI and 256-frame ring also carry the victim's ACKs), not
// the sender's own CPU, which a real host charges to the guilty container.
const (
	mStorm     = "10 storm, victim TCP during / without a broadcast storm"
	mStormBusy = "10 storm control, victim TCP with the sender as busy on its own lo / without"
	// The storm's own share: during the storm over the control, whose
	// sender is as busy.
	mStormNet    = "10 storm, victim TCP during the storm / with the sender as busy on its own lo"
	mStormTCP    = "10 storm, victim TCP wire->endpoint, %s"
	mStormSent   = "10 storm, broadcasts sent by the storming endpoint"
	mStormCopies = "10 storm, broadcast copies each peer got"
	mStormDrops  = "10 storm, frames xmacvlan dropped as storm"
	mStormWire   = "10 storm, frames the wire got (broadcasts and the victim's ACKs)"
)

// stormMembers: the victim, the storming endpoint and two more peers.
const stormMembers = 4

// stormPort is the iperf3 server of the storm line: a one-off server on
// its own port, pinned like the client.
const stormPort = 5301

// stormLimit is the limit of the xmv-off-skb+limit path, in broadcast
// frames per second per endpoint: a thousand times what ARP, DHCP and
// mDNS of a busy container send (a few per second), two thousandths of
// the storm trafgen makes here.
const stormLimit = 1000

// tcpCPU is the CPU of the storm line's TCP test: not the storm's.
func (b *bench) tcpCPU() int { return (b.cfg.cpu + 1) % runtime.NumCPU() }

// storm runs the storm line on path p: one round of it.
func (b *bench) storm(round int, p path) error {
	d, err := b.lab.deploy(p, stormMembers, false)
	if err != nil {
		return fmt.Errorf("deploy %s: %w", p, err)
	}
	defer func() {
		if err := d.remove(); err != nil {
			b.log("remove %s: %v", p, err)
		}
	}()
	victim, sender := d.members[0], d.members[1]
	// Every member but the sender counts the storm's copies it gets (the
	// counter takes only UDP to port 9: the victim's TCP passes).
	var peers counterSet
	defer func() { peers.close() }()
	for i, m := range d.members {
		if i == 1 {
			continue
		}
		k, err := b.cnt.attach(m.ns, "eth0", stackConsumer, i)
		if err != nil {
			return err
		}
		peers = append(peers, k)
	}
	if _, err := victim.ns.run(b.ctx, "ping", "-c", "1", "-W", "2", wireIP.String()); err != nil {
		return fmt.Errorf("%s: the victim cannot reach the wire: %w", p, err)
	}
	frame := udpFrame(broadcastMAC, sender.mac, 0, sender.ip, net.IPv4(10, 77, 0, 255))

	var calm, stormy float64
	measureCalm := func() (err error) {
		calm, err = b.stormTCP(victim)
		return err
	}
	measureStorm := func() error {
		stop, err := b.startTrafgen(sender.ns, "eth0", frame, b.cfg.cpu)
		if err != nil {
			return err
		}
		err = b.sleep(b.cfg.warmup)
		var sent0, sent1, got0, got1, wire0, wire1, dropped0, dropped1 uint64
		var t0 time.Time
		if err == nil {
			sent0, got0, wire0, err = b.stormCounts(sender, peers)
			t0 = time.Now()
		}
		if err == nil {
			dropped0, err = stormDrops(d)
		}
		if err == nil {
			stormy, err = b.stormTCP(victim)
		}
		if err == nil {
			sent1, got1, wire1, err = b.stormCounts(sender, peers)
		}
		if err == nil {
			dropped1, err = stormDrops(d)
		}
		secs := time.Since(t0).Seconds()
		out, serr := stop()
		if err != nil {
			return err
		}
		if serr != nil {
			return serr
		}
		if sent1 == sent0 {
			return fmt.Errorf("the storming endpoint sent nothing: %s", out)
		}
		b.res.add(mStormSent, p, "kpps", round, float64(sent1-sent0)/secs/1e3)
		b.res.add(mStormCopies, p, "kpps/peer", round, float64(got1-got0)/secs/1e3/float64(len(peers)))
		b.res.add(mStormWire, p, "kpps", round, float64(wire1-wire0)/secs/1e3)
		if p != kernel {
			b.res.add(mStormDrops, p, "kpps", round, float64(dropped1-dropped0)/secs/1e3)
		}
		return nil
	}
	// The control: the same sender as busy on its own lo, where no frame
	// leaves its namespace. What the victim loses then is the rig's (two
	// vCPUs), which no datapath can give back.
	var busy float64
	measureBusy := func() error {
		stop, err := b.startTrafgen(sender.ns, "lo", frame, b.cfg.cpu)
		if err != nil {
			return err
		}
		err = b.sleep(b.cfg.warmup)
		if err == nil {
			busy, err = b.stormTCP(victim)
		}
		if _, serr := stop(); err == nil {
			err = serr
		}
		return err
	}
	// Rotate which third comes first, so a drift of the machine does not
	// always favour one.
	for _, h := range rotate3([]func() error{measureCalm, measureStorm, measureBusy}, round) {
		if err := h(); err != nil {
			return fmt.Errorf("storm on %s: %w", p, err)
		}
	}
	b.res.add(fmt.Sprintf(mStormTCP, "without the storm"), p, "Gbit/s", round, calm/1e9)
	b.res.add(fmt.Sprintf(mStormTCP, "during the storm"), p, "Gbit/s", round, stormy/1e9)
	b.res.add(fmt.Sprintf(mStormTCP, "sender as busy on its own lo (control)"), p, "Gbit/s", round, busy/1e9)
	b.res.add(mStorm, p, "fraction", round, stormy/calm)
	b.res.add(mStormBusy, p, "fraction", round, busy/calm)
	b.res.add(mStormNet, p, "fraction", round, stormy/busy)
	return nil
}

func rotate3(f []func() error, round int) []func() error {
	i := round % len(f)
	return append(append([]func() error{}, f[i:]...), f[:i]...)
}

// stormCounts reads the frames the storming endpoint has sent (its eth0's
// tx counter), the copies its peers have got, and the frames the wire got.
func (b *bench) stormCounts(sender member, peers counterSet) (sent, got, wire uint64, err error) {
	eth0, err := sender.ns.link("eth0")
	if err != nil {
		return 0, 0, 0, err
	}
	w, err := b.lab.wire.link(wireDev)
	if err != nil {
		return 0, 0, 0, err
	}
	got, err = peers.read()
	return eth0.Attrs().Statistics.TxPackets, got, w.Attrs().Statistics.RxPackets, err
}

// stormTCP runs one iperf3 stream from the wire to member m for
// cfg.stormTime, server and client pinned to tcpCPU, and returns what the
// receiver got in bit/s.
func (b *bench) stormTCP(m member) (float64, error) {
	cpu := strconv.Itoa(b.tcpCPU())
	port := strconv.Itoa(stormPort)
	ctx, cancel := context.WithCancel(b.ctx)
	defer cancel()
	srv := b.lab.wire.command(ctx, "taskset", "-c", cpu, "iperf3", "--server", "--one-off",
		"--bind", wireIP.String(), "--port", port)
	if err := srv.Start(); err != nil {
		return 0, fmt.Errorf("iperf3 server: %w", err)
	}
	defer func() {
		cancel() // a server whose client failed is still waiting
		srv.Wait()
	}()
	if err := b.sleep(200 * time.Millisecond); err != nil { // until it listens
		return 0, err
	}
	out, err := m.ns.run(b.ctx, "taskset", "-c", cpu, "iperf3", "--client", wireIP.String(), "--port", port,
		"--time", strconv.Itoa(int(b.cfg.stormTime.Seconds())), "--reverse", "--json")
	if err != nil {
		return 0, err
	}
	return iperf3.Received([]byte(out))
}

// stormPaths are the paths of the storm line.
func stormPaths() []path { return []path{kernel, xmvTCX, xmvLimit} }

// stormDrops reads xmacvlan's storm drop counter (0 for kernel macvlan).
func stormDrops(d *deployment) (n uint64, err error) {
	if d.path == kernel {
		return 0, nil
	}
	err = d.tables(func(t *tables.Tables) error {
		drops, err := t.Drops()
		if err == nil {
			n = drops[tables.DropStorm].Packets
		}
		return err
	})
	return n, err
}
