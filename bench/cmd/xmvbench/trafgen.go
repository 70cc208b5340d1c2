package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf/link"
)

// ppsTrafgen measures delivered pps at member m's stack with trafgen
// (netsniff-ng) as the generator: a second, independent generator that
// sends skbs through a packet socket instead of XDP frames. It runs on the
// same CPU as the XDP generator.
func (b *bench) ppsTrafgen(m member, frame []byte) (float64, error) {
	k, err := b.cnt.attach(m.ns, "eth0", stackConsumer, 0)
	if err != nil {
		return 0, err
	}
	defer k.close()
	stop, err := b.startTrafgen(b.lab.wire, wireDev, frame, b.cfg.cpu)
	if err != nil {
		return 0, err
	}
	v, werr := b.window(k.read)
	out, err := stop()
	if werr != nil {
		return 0, werr
	}
	if err != nil {
		return 0, err
	}
	if v == 0 {
		return 0, fmt.Errorf("trafgen: nothing arrived at the receiver: %s", out)
	}
	return v, nil
}

// startTrafgen sends frame out of dev in namespace n as fast as trafgen
// can, from cpu, until stop is called; stop returns trafgen's output and
// an error if it failed (rather than being stopped).
func (b *bench) startTrafgen(n *ns, dev string, frame []byte, cpu int) (stop func() (string, error), err error) {
	cfg, err := os.CreateTemp("", "xmvbench-*.trafgen")
	if err != nil {
		return nil, err
	}
	fmt.Fprintln(cfg, trafgenConfig(frame))
	cfg.Close()

	// A cap on the count, should it outlive us.
	maxFrames := strconv.Itoa(int((b.cfg.warmup + b.cfg.window + b.cfg.tcpTime + 10*time.Second).Seconds() * 5e6))
	ctx, cancel := context.WithCancel(b.ctx)
	cmd := n.command(ctx, "taskset", "-c", strconv.Itoa(cpu),
		"trafgen", "--dev", dev, "--conf", cfg.Name(), "--cpus", "1", "--num", maxFrames,
		"--no-sock-mem", "--notouch-irq", "--no-cpu-stats")
	// trafgen forks its sender: kill the whole process group.
	cmd.SysProcAttr.Setpgid = true
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		cancel()
		os.Remove(cfg.Name())
		return nil, fmt.Errorf("trafgen: %w", err)
	}
	return func() (string, error) {
		defer os.Remove(cfg.Name())
		cancel()
		err := cmd.Wait() // killed: an exit error, or the context's
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) && !errors.Is(err, context.Canceled) {
			return out.String(), fmt.Errorf("trafgen: %v: %s", err, out.String())
		}
		return out.String(), nil
	}, nil
}

// trafgenConfig writes frame as a trafgen packet: { 0x02, 0x78, … }.
func trafgenConfig(frame []byte) string {
	var b strings.Builder
	b.WriteString("{ ")
	for i, c := range frame {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "0x%02x", c)
	}
	b.WriteString(" }")
	return b.String()
}

// baseline measures the generator and the wire alone: frames into a parent
// whose only program is XDP_DROP, counted by the parent's rx counter. The
// inverse of a path's rate less the inverse of this one is what the path
// costs per frame beyond the cheapest receiver (see bench/README.md).
func (b *bench) baseline(round int) error {
	par, err := b.lab.host.link(parent)
	if err != nil {
		return err
	}
	var l link.Link
	err = b.lab.host.do(func() (err error) {
		l, err = link.AttachXDP(link.XDPOptions{Interface: par.Attrs().Index, Program: b.gen.objs.XbDrop, Flags: link.XDPDriverMode})
		return err
	})
	if err != nil {
		return fmt.Errorf("XDP_DROP on the parent: %w", err)
	}
	defer l.Close()
	read := func() (uint64, error) {
		st, err := b.lab.parentStats()
		if err != nil {
			return 0, err
		}
		return st.RxPackets, nil
	}
	frame := udpFrame(unknownMAC, b.lab.wireMAC, 0, wireIP, wireIP)
	var v float64
	err = b.during(frame, func() (err error) {
		v, err = b.window(read)
		return err
	})
	if err != nil {
		return err
	}
	b.res.add(mBaseline, "none", "Mpps", round, v/1e6)
	return nil
}
