// Command xmvbench is `make bench`: xmacvlan against kernel macvlan, with
// the same generator on the same topology in one run. It builds a wire
// namespace whose veth feeds a parent in a host namespace, and container
// namespaces for the endpoints; then, alternating the paths round by round
// (kernel macvlan in bridge mode; xmacvlan with the parent's XDP program on
// or off, and skb or XDP delivery), it measures what arrives at the
// receivers, floods, a broadcast storm's effect on a TCP stream, upgrades
// and program costs. It prints a table, and writes
// bench/results/latest.json and latest.svg.
//
// It needs root, bpffs and the tools scripts/setup-host.sh installs. It is
// not a test: nothing here runs under `go test`, and no number fails a
// build. bench/README.md says what each measurement means.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	benchbpf "github.com/xmacvlan/xmacvlan/bench/bpf"
)

// config is what a run measures and for how long.
type config struct {
	quick         bool
	rounds        int
	floodRounds   int
	stormRounds   int
	window        time.Duration // each rate is measured over this
	warmup        time.Duration // after the generator starts
	tcpTime       time.Duration
	stormTime     time.Duration // each half of the storm line
	endpoints     int
	floodSizes    []int
	cpu           int // the generator's CPU, and so the receive path's
	upgradeRate   float64
	upgradeWindow time.Duration
	swaps         int
	costRepeat    int // BPF_PROG_RUN repeat for program cost
	costFresh     int // single runs on fresh copies, for programs that change the frame
	costSizes     []int
	trafgen       bool
	profile       bool
	perf          bool
	only          string // comma-separated phases, for development
	out           string
}

// runs says whether phase (paths, flood, storm, upgrade, cost, profile) is on.
func (c *config) runs(phase string) bool {
	return c.only == "" || strings.Contains(","+c.only+",", ","+phase+",")
}

func main() {
	var cfg config
	flag.BoolVar(&cfg.quick, "quick", false, "smoke run: fewer and shorter rounds (under 3 minutes)")
	flag.IntVar(&cfg.rounds, "rounds", 0, "rounds per measurement (default 5, quick 2)")
	flag.IntVar(&cfg.endpoints, "endpoints", 2, "endpoints on the parent")
	flag.IntVar(&cfg.cpu, "cpu", runtime.NumCPU()-1, "CPU the generator, and so the receive path, runs on")
	flag.BoolVar(&cfg.trafgen, "trafgen", true, "cross-check delivered pps with trafgen")
	flag.BoolVar(&cfg.profile, "profile", true, "measure in-situ program cost with ebpf.EnableStats")
	flag.BoolVar(&cfg.perf, "perf", true, "sample the receive CPU with perf during the profile, where perf is installed")
	flag.StringVar(&cfg.only, "only", "", "run only these phases: paths,flood,storm,upgrade,cost,profile")
	flag.StringVar(&cfg.out, "out", "bench/results", "directory for latest.json and latest.svg")
	window := flag.Duration("window", 0, "override the measuring window")
	flag.Parse()
	cfg.fill()
	if *window > 0 {
		cfg.window = *window
	}
	os.Exit(run(cfg))
}

// fill sets the defaults of a full or a quick run.
func (c *config) fill() {
	c.floodSizes = []int{1, 8, 64}
	c.costSizes = []int{1, 4096, 65536}
	c.upgradeRate = 1e6
	if c.quick {
		if c.rounds == 0 {
			c.rounds = 2
		}
		c.floodRounds, c.stormRounds = 1, 1
		c.window, c.warmup = 500*time.Millisecond, 200*time.Millisecond
		c.tcpTime = time.Second
		c.stormTime = time.Second
		c.upgradeWindow, c.swaps = time.Second, 2
		c.costRepeat, c.costFresh = 20000, 2000
		return
	}
	if c.rounds == 0 {
		c.rounds = 5
	}
	c.floodRounds, c.stormRounds = min(c.rounds, 3), min(c.rounds, 3)
	c.window, c.warmup = 2*time.Second, 500*time.Millisecond
	c.tcpTime = 10 * time.Second
	c.stormTime = 3 * time.Second
	c.upgradeWindow, c.swaps = 3*time.Second, 5
	c.costRepeat, c.costFresh = 200000, 20000
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func run(cfg config) (code int) {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "xmvbench: run as root (sudo make bench)")
		return 1
	}
	started := time.Now()
	for _, r := range sweep() {
		logf("removed a leftover of an earlier run: %s", r)
	}
	// Ctrl-C (or TERM) stops the measurements; everything is removed
	// below on the way out.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()

	rep := &Report{Machine: machine(cfg), Started: started.Format(time.RFC3339), Settings: settings(cfg)}
	res := newResults()
	l, err := newLab(ctx)
	defer func() {
		if l != nil {
			for _, err := range l.close() {
				logf("cleanup: %v", err)
			}
			rep.Leftovers = l.leftovers()
			if len(rep.Leftovers) > 0 {
				logf("cleanup: left behind: %s", strings.Join(rep.Leftovers, ", "))
				code = 1
			}
		}
		res.deriveReceiveCosts()
		rep.Records = res.records()
		rep.RatioLines = ratioLines(rep.Records)
		rep.ProgramCost = programCostTable(rep.Records)
		rep.Seconds = time.Since(started).Seconds()
		rep.Leftovers = append([]string{}, rep.Leftovers...)
		if len(rep.Records) > 0 {
			printTable(os.Stdout, rep)
			if err := writeReport(cfg.out, rep); err != nil {
				logf("write results: %v", err)
				code = 1
			} else {
				fmt.Printf("\nwrote %s/latest.json and latest.svg (%.0f s, complete: %v, nothing left behind: %v)\n",
					cfg.out, rep.Seconds, rep.Complete, len(rep.Leftovers) == 0)
			}
		}
	}()
	if err != nil {
		logf("build the topology: %v", err)
		return 1
	}

	var objs benchbpf.BenchObjects
	spec, err := benchbpf.LoadBench()
	if err == nil {
		err = spec.LoadAndAssign(&objs, nil)
	}
	if err != nil {
		logf("load the bench programs: %v", err)
		return 1
	}
	defer objs.Close()
	b := &bench{
		ctx: ctx, cfg: cfg, lab: l, res: res, log: logf,
		gen: &generator{objs: &objs, lab: l, cpu: cfg.cpu},
		cnt: &counters{spec: spec, objs: &objs},
	}
	var why string
	if b.pktgen, why = b.pktgenAvailable(); b.pktgen {
		rep.Settings = append(rep.Settings, "pktgen: a third generator for delivered pps into the stack")
	} else {
		logf("pktgen: %s; measuring with the XDP generator and trafgen", why)
		rep.Settings = append(rep.Settings, "pktgen: not used, "+why)
	}
	if err := b.all(); err != nil {
		if errors.Is(err, context.Canceled) {
			logf("interrupted: cleaning up")
			return 130
		}
		logf("%v", err)
		return 1
	}
	rep.Profile = b.profileLines
	rep.Complete = true
	return 0
}

// all runs every measurement.
func (b *bench) all() error {
	cfg := b.cfg
	paths := []path{kernel, xmvSKB, xmvXDP, xmvTCX}
	for r := range cfg.rounds {
		if !cfg.runs("paths") {
			break
		}
		b.log("round %d/%d: generator baseline", r+1, cfg.rounds)
		if err := b.baseline(r); err != nil {
			return err
		}
		for _, p := range rotate(paths, r) {
			b.log("round %d/%d: %s: delivered pps, unwanted drop, tagged, TCP", r+1, cfg.rounds, p)
			if err := b.pathRound(r, p); err != nil {
				return err
			}
		}
	}
	for _, n := range cfg.floodSizes {
		if !cfg.runs("flood") {
			break
		}
		for r := range cfg.floodRounds {
			for _, p := range rotate([]path{kernel, xmvSKB, xmvTCX}, r) {
				b.log("flood round %d/%d: %s, %d members", r+1, cfg.floodRounds, p, n)
				if err := b.flood(r, n, p); err != nil {
					return err
				}
			}
		}
	}
	for r := range cfg.stormRounds {
		if !cfg.runs("storm") {
			break
		}
		for _, p := range rotate(stormPaths(), r) {
			b.log("storm round %d/%d: %s", r+1, cfg.stormRounds, p)
			if err := b.storm(r, p); err != nil {
				return err
			}
		}
	}
	for r := range cfg.rounds {
		if !cfg.runs("upgrade") {
			break
		}
		for _, p := range rotate([]path{xmvSKB, xmvXDP}, r) {
			b.log("upgrade round %d/%d: %s", r+1, cfg.rounds, p)
			if err := b.upgrade(r, p); err != nil {
				return err
			}
		}
	}
	if cfg.runs("cost") {
		b.log("program cost (BPF_PROG_RUN)")
		if err := b.programCost(); err != nil {
			return err
		}
	}
	if cfg.profile && cfg.runs("profile") {
		b.log("in-situ program cost (ebpf.EnableStats)")
		if err := b.profile(); err != nil {
			return err
		}
	}
	return nil
}

// rotate starts the path order at a different path each round, so that no
// path always runs first (or right after another).
func rotate(paths []path, round int) []path {
	i := round % len(paths)
	return append(append([]path{}, paths[i:]...), paths[:i]...)
}

func machine(cfg config) Machine {
	var u unix.Utsname
	unix.Uname(&u)
	return Machine{
		Cores:      runtime.NumCPU(),
		CPU:        cpuModel(),
		Kernel:     unix.ByteSliceToString(u.Release[:]),
		PacketSize: "64 B (60 B + FCS), IPv4/UDP",
		Generator: fmt.Sprintf("XDP live frames (BPF_PROG_RUN + BPF_F_TEST_XDP_LIVE_FRAMES, XDP_TX on the wire veth), pinned to CPU %d, which also runs the receive path (softirq)%s",
			cfg.cpu, map[bool]string{true: "; trafgen cross-check", false: ""}[cfg.trafgen]),
	}
}

func cpuModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

func settings(cfg config) []string {
	mode := "full"
	if cfg.quick {
		mode = "QUICK (smoke run)"
	}
	return []string{
		fmt.Sprintf("%s: %d rounds (flood %d, storm %d), paths alternate each round; rates over %s after %s warm-up; TCP %s per test (storm line %s)",
			mode, cfg.rounds, cfg.floodRounds, cfg.stormRounds, cfg.window, cfg.warmup, cfg.tcpTime, cfg.stormTime),
		"ratio = xmacvlan / kernel macvlan in the same round; counted at the receiver (tcx counter for the stack, XDP counter for an XDP consumer; the parent's rx counter for unwanted frames)",
		"wire veth pair (wire0 <-> the parent): tx-checksum off (so TSO off), GSO on, GRO on, MTU 1500: MTU-sized frames with full checksums on the wire",
		fmt.Sprintf("%d endpoints on the untagged segment (frames to the first); xmv-on-*: attach --xdp on (XDP program on the parent); xmv-off-skb: --xdp off (tcx alone; what --xdp auto picks on a veth parent); -skb/-xdp: the endpoints' delivery", cfg.endpoints),
		"VLAN-tagged delivery: xmacvlan only, this kernel has no 8021q (kernel VLAN sub-interfaces cannot be built)",
		"XDP consumer: native XDP on the veth for xmv-on-xdp; generic XDP for macvlan (no native XDP), xmv-on-skb and xmv-off-skb (bpf_redirect_peer skips the veth driver)",
		fmt.Sprintf("storm line: %d endpoints, one broadcasting with trafgen on CPU %d, the victim's iperf3 (both ends) on CPU %d; xmv-off-skb+limit: --storm-limit %d on every endpoint", stormMembers, cfg.cpu, (cfg.cpu+1)%runtime.NumCPU(), stormLimit),
	}
}
