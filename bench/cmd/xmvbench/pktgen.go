package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// The kernel's pktgen, where it has one (this project's VM does not): a
// third generator for the stack measurement, the one kernel people quote.
// It is configured through /proc/net/pktgen inside the wire namespace
// (pktgen is per network namespace), the way the kernel's
// samples/pktgen/pktgen_sample03_burst_single_flow.sh does it.

// pktgenAvailable loads the module if it can and says whether the wire
// namespace has /proc/net/pktgen, and if not, why.
func (b *bench) pktgenAvailable() (bool, string) {
	exec.Command("modprobe", "pktgen").Run() // absent modules are fine
	if _, err := b.lab.wire.run(b.ctx, "test", "-w", "/proc/net/pktgen/pgctrl"); err != nil {
		return false, "this kernel has no pktgen (no /proc/net/pktgen; modprobe pktgen fails)"
	}
	return true, ""
}

// ppsPktgen measures delivered pps at member m's stack with pktgen sending
// 64 B IPv4/UDP frames (60 B + FCS) to port 9 of m, from the generator's
// CPU, for as long as the window lasts.
func (b *bench) ppsPktgen(m member) (float64, error) {
	k, err := b.cnt.attach(m.ns, "eth0", stackConsumer, 0)
	if err != nil {
		return 0, err
	}
	defer k.close()

	thread := fmt.Sprintf("/proc/net/pktgen/kpktgend_%d", b.cfg.cpu)
	dev := "/proc/net/pktgen/" + wireDev
	config := []string{
		thread + ": rem_device_all",
		thread + ": add_device " + wireDev,
		dev + ": count 0", // until stopped
		dev + ": pkt_size 60",
		dev + ": clone_skb 0", // a fresh skb each time; veth refuses shared skbs and bursts
		dev + ": delay 0",
		dev + ": dst_mac " + m.mac.String(),
		dev + ": dst " + m.ip.String(),
		dev + ": src_min " + wireIP.String(),
		dev + ": src_max " + wireIP.String(),
		dev + ": udp_dst_min 9",
		dev + ": udp_dst_max 9",
	}
	var script strings.Builder
	for _, c := range config {
		file, cmd, _ := strings.Cut(c, ": ")
		fmt.Fprintf(&script, "echo %q > %s || exit 1\n", cmd, file)
	}
	if out, err := b.lab.wire.run(b.ctx, "sh", "-c", script.String()); err != nil {
		return 0, fmt.Errorf("pktgen setup: %v: %s", err, out)
	}
	defer b.lab.wire.run(context.Background(), "sh", "-c", "echo rem_device_all > "+thread)

	// "start" returns only when pktgen stops.
	start := b.lab.wire.command(b.ctx, "sh", "-c", "echo start > /proc/net/pktgen/pgctrl")
	if err := start.Start(); err != nil {
		return 0, fmt.Errorf("pktgen start: %w", err)
	}
	v, werr := b.window(k.read)
	b.lab.wire.run(context.Background(), "sh", "-c", "echo stop > /proc/net/pktgen/pgctrl")
	start.Wait()
	if werr != nil {
		return 0, werr
	}
	if v == 0 {
		return 0, errors.New("pktgen: nothing arrived at the receiver")
	}
	return v, nil
}
