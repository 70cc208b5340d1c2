package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/loader"
)

// profile measures what each BPF program costs per run inside the live
// path, with the kernel's run-time statistics (ebpf.EnableStats, which
// bpftool prog profile is not needed for). Statistics cost two clock reads
// per run, so this runs apart from the measured rounds.
func (b *bench) profile() error {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return fmt.Errorf("enable BPF run-time statistics: %w", err)
	}
	defer stats.Close()
	for _, p := range []path{kernel, xmvSKB, xmvXDP, xmvTCX} {
		if err := b.profilePath(p); err != nil {
			return fmt.Errorf("profile %s: %w", p, err)
		}
	}
	return nil
}

type profiled struct {
	name string
	prog *ebpf.Program
	run  time.Duration
	cnt  uint64
}

func (b *bench) profilePath(p path) error {
	d, err := b.lab.deploy(p, b.cfg.endpoints, false)
	if err != nil {
		return err
	}
	defer d.remove()
	t := d.members[0]
	k, err := b.cnt.attach(t.ns, "eth0", stackConsumer, 0)
	if err != nil {
		return err
	}
	defer k.close()
	progs := []*profiled{{name: "xb_gen (generator)", prog: b.gen.objs.XbGen}, {name: "xb_count_tc (receiver)", prog: k.prog}}
	if p != kernel {
		xmv, err := b.datapathPrograms()
		if err != nil {
			return err
		}
		defer func() {
			for _, x := range xmv {
				x.prog.Close()
			}
		}()
		progs = append(progs, xmv...)
	}
	type profileCase struct {
		what  string
		frame []byte
	}
	cases := []profileCase{{"delivery to the stack", udpFrame(t.mac, b.lab.wireMAC, 0, wireIP, t.ip)}}
	if p != kernel {
		cases = append(cases, profileCase{"unknown MAC on VLAN 10 (dropped)", udpFrame(unknownMAC, b.lab.wireMAC, taggedVLAN, wireIP, t.ip)})
	}
	for _, c := range cases {
		for _, x := range progs {
			if err := x.read(); err != nil {
				return err
			}
		}
		var rate float64
		var hot []string
		err := b.during(c.frame, func() (err error) {
			done := b.perf(&hot, b.cfg.cpu, b.cfg.warmup+b.cfg.window)
			rate, err = b.window(k.read)
			done()
			return err
		})
		if err != nil {
			return err
		}
		var parts []string
		for _, x := range progs {
			run0, cnt0 := x.run, x.cnt
			if err := x.read(); err != nil {
				return err
			}
			// Programs that only saw background frames say nothing.
			if n := x.cnt - cnt0; n >= 1000 {
				ns := float64(x.run-run0) / float64(n)
				parts = append(parts, fmt.Sprintf("%s %.0f ns", x.name, ns))
				b.res.add(fmt.Sprintf("8 in-situ cost, %s, %s", c.what, x.name), p, "ns/run (EnableStats)", 0, ns)
			}
		}
		line := fmt.Sprintf("%-8s %s: %s", p, c.what, strings.Join(parts, "; "))
		if c.what == "delivery to the stack" {
			line += fmt.Sprintf(" (%.2f Mpps delivered with statistics on)", rate/1e6)
		}
		b.profileLines = append(b.profileLines, line)
		if len(hot) > 0 {
			b.profileLines = append(b.profileLines, "    perf, hottest symbols on the CPU: "+strings.Join(hot, ", "))
		}
	}

	// Where TCP from the wire spends its time (all CPUs: iperf3 is not pinned).
	var hot []string
	done := b.perf(&hot, -1, b.cfg.tcpTime)
	if _, err := t.ns.run(b.ctx, "ping", "-c", "1", "-W", "2", wireIP.String()); err != nil {
		return err
	}
	v, err := b.tcp(t, 1, true)
	done()
	if err != nil {
		return err
	}
	if len(hot) > 0 {
		b.profileLines = append(b.profileLines, fmt.Sprintf("%-8s TCP 1 stream wire->endpoint, %.2f Gbit/s; perf, hottest symbols on all CPUs: %s",
			p, v/1e9, strings.Join(hot, ", ")))
	}
	return nil
}

// perf samples cpu (-1: all CPUs) for d, where perf is installed, and puts
// the hottest symbols in hot when the returned function is called.
func (b *bench) perf(hot *[]string, cpu int, d time.Duration) func() {
	bin, err := exec.LookPath("perf")
	if err != nil || !b.cfg.perf {
		return func() {}
	}
	data := filepath.Join(os.TempDir(), fmt.Sprintf("xmvbench-%d.perf", os.Getpid()))
	where := []string{"-a"}
	if cpu >= 0 {
		where = []string{"-C", strconv.Itoa(cpu)}
	}
	args := append(append([]string{"record", "-q"}, where...), "-o", data, "--", "sleep", fmt.Sprintf("%.1f", d.Seconds()))
	rec := exec.CommandContext(b.ctx, bin, args...)
	if rec.Start() != nil {
		return func() {}
	}
	return func() {
		defer os.Remove(data)
		if rec.Wait() != nil {
			return
		}
		out, err := exec.CommandContext(b.ctx, bin, "report", "-i", data, "--stdio", "--no-children",
			"--sort", "sym", "--percent-limit", "2").Output()
		if err != nil {
			return
		}
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			if len(f) >= 3 && strings.HasSuffix(f[0], "%") && len(*hot) < 12 {
				*hot = append(*hot, f[len(f)-1]+" "+f[0])
			}
		}
	}
}

func (x *profiled) read() error {
	st, err := x.prog.Stats()
	if err != nil {
		return err
	}
	x.run, x.cnt = st.Runtime, st.RunCount
	return nil
}

// datapathPrograms opens the programs xmacvlan's links run on the parent
// and the endpoints.
func (b *bench) datapathPrograms() ([]*profiled, error) {
	var st []loader.ParentStatus
	err := b.lab.host.do(func() (err error) {
		st, err = loader.Status(b.lab.root, parent)
		return err
	})
	if err != nil || len(st) == 0 {
		return nil, fmt.Errorf("xmacvlan status: %v", err)
	}
	var out []*profiled
	var seen []int
	for _, l := range st[0].Links {
		if l.ProgramID == 0 || slices.Contains(seen, l.ProgramID) {
			continue
		}
		seen = append(seen, l.ProgramID)
		p, err := ebpf.NewProgramFromID(ebpf.ProgramID(l.ProgramID))
		if err != nil {
			return nil, err
		}
		out = append(out, &profiled{name: l.Program, prog: p})
	}
	return out, nil
}
