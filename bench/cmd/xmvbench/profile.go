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
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
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
	name     string
	prog     *ebpf.Program
	link     link.Link // xb_next_tc's, closed by its user
	datapath bool      // one of xmacvlan's programs
	run      time.Duration
	cnt      uint64
}

// In-situ measurement names: the raw run time per run, and the same net
// of the statistics' own cost (xb_next_tc's run time in the same slice).
const (
	mInSitu    = "8 in-situ cost"
	mInSituNet = "8 in-situ cost net of the statistics' own"
)

// attachNext puts xb_next_tc at the head of member m's eth0 tcx ingress,
// ahead of the counter: it runs on every frame and does nothing.
func (b *bench) attachNext(m member) (*profiled, error) {
	var l link.Link
	err := m.ns.do(func() error {
		dev, err := m.ns.link("eth0")
		if err != nil {
			return err
		}
		l, err = link.AttachTCX(link.TCXOptions{Interface: dev.Attrs().Index, Program: b.gen.objs.XbNextTc,
			Attach: ebpf.AttachTCXIngress, Anchor: link.Head()})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("attach xb_next_tc in %s: %w", m.ns.name, err)
	}
	return &profiled{name: "xb_next_tc (empty: the statistics' own cost)", prog: b.gen.objs.XbNextTc, link: l}, nil
}

// fillMACs grows the MAC table of the untagged segment to entries
// entries with synthetic ones pointing at member m; *added counts those
// added so far (they go with the deployment).
func (d *deployment) fillMACs(m member, added *int, entries int) error {
	return d.tables(func(t *tables.Tables) error {
		ep, ok, err := t.EndpointByMAC(0, m.mac)
		if err != nil || !ok {
			return fmt.Errorf("endpoint %s in the tables: %v", m.mac, err)
		}
		want := max(entries-len(d.members), 0)
		if want <= *added {
			return nil
		}
		if err := t.AddSyntheticMACs(*added, want-*added, ep); err != nil {
			return err
		}
		*added = want
		return nil
	})
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
	// An empty program ahead of the counter: its run time in situ is the
	// statistics' own cost (two clock reads), subtracted for the net cost.
	empty, err := b.attachNext(t)
	if err != nil {
		return err
	}
	defer empty.link.Close()
	progs = append(progs, empty)

	type profileCase struct {
		what    string
		frame   []byte
		entries int // MAC-table entries (xmacvlan)
	}
	var cases []profileCase
	deliver := udpFrame(t.mac, b.lab.wireMAC, 0, wireIP, t.ip)
	if p == kernel {
		cases = append(cases, profileCase{"delivery to the stack", deliver, 0})
	} else {
		for _, n := range b.cfg.costSizes {
			cases = append(cases, profileCase{"delivery to the stack", deliver, n})
		}
		cases = append(cases, profileCase{"unknown MAC on VLAN 10 (dropped)", udpFrame(unknownMAC, b.lab.wireMAC, taggedVLAN, wireIP, t.ip), 0})
	}
	synthetic := 0 // entries added so far, on the untagged segment
	for _, c := range cases {
		what := c.what
		if c.entries > 0 {
			if err := d.fillMACs(t, &synthetic, c.entries); err != nil {
				return err
			}
			what = fmt.Sprintf("%s, %d entries", c.what, c.entries)
		}
		for _, x := range progs {
			if err := x.read(); err != nil {
				return err
			}
		}
		var rate float64
		var hot []string
		// Three slices of the window, each a sample: a range, not one figure.
		const slices = 3
		costs := map[*profiled][]float64{}
		err := b.during(c.frame, func() error {
			done := b.perf(&hot, b.cfg.cpu, b.cfg.warmup+b.cfg.window)
			defer done()
			if err := b.sleep(b.cfg.warmup); err != nil {
				return err
			}
			got0, err := k.read()
			if err != nil {
				return err
			}
			t0 := time.Now()
			for _, x := range progs {
				if err := x.read(); err != nil {
					return err
				}
			}
			for range slices {
				if err := b.sleep(b.cfg.window / slices); err != nil {
					return err
				}
				for _, x := range progs {
					run0, cnt0 := x.run, x.cnt
					if err := x.read(); err != nil {
						return err
					}
					// Programs that only saw background frames say nothing.
					if n := x.cnt - cnt0; n >= 1000 {
						costs[x] = append(costs[x], float64(x.run-run0)/float64(n))
					}
				}
			}
			got1, err := k.read()
			rate = float64(got1-got0) / time.Since(t0).Seconds()
			return err
		})
		if err != nil {
			return err
		}
		var parts []string
		for _, x := range progs {
			v := costs[x]
			if len(v) == 0 {
				continue
			}
			for i, ns := range v {
				b.res.add(fmt.Sprintf(mInSitu+", %s, %s", what, x.name), p, "ns/run (EnableStats)", i, ns)
				if e := costs[empty]; x != empty && x.datapath && i < len(e) {
					b.res.add(fmt.Sprintf(mInSituNet+", %s, %s", what, x.name), p, "ns/run (EnableStats, net)", i, ns-e[i])
				}
			}
			parts = append(parts, fmt.Sprintf("%s %.0f ns", x.name, statsOf(v).Median))
		}
		line := fmt.Sprintf("%-11s %s: %s", p, what, strings.Join(parts, "; "))
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
		out = append(out, &profiled{name: l.Program, prog: p, datapath: true})
	}
	return out, nil
}
