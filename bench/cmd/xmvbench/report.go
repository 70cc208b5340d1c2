package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
)

// sample is one round's value of a measurement.
type sample struct {
	round int
	v     float64
}

type key struct {
	name string
	path path
}

// series is one measurement on one path, over the rounds.
type series struct {
	key
	unit    string
	samples []sample
}

// results collects the samples in the order measurements first appear.
type results struct {
	order []key
	m     map[key]*series
}

func newResults() *results { return &results{m: map[key]*series{}} }

func (r *results) add(name string, p path, unit string, round int, v float64) {
	k := key{name, p}
	s := r.m[k]
	if s == nil {
		s = &series{key: k, unit: unit}
		r.m[k] = s
		r.order = append(r.order, k)
	}
	s.samples = append(s.samples, sample{round, v})
}

// Stats is a median and range.
type Stats struct {
	Rounds []float64 `json:"rounds"`
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
}

func statsOf(v []float64) Stats {
	if len(v) == 0 {
		return Stats{Rounds: []float64{}}
	}
	s := slices.Clone(v)
	slices.Sort(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return Stats{Rounds: v, Median: med, Min: s[0], Max: s[len(s)-1]}
}

// Record is one measurement on one path, as written to latest.json.
type Record struct {
	Name   string    `json:"name"`
	Path   string    `json:"path"`
	Unit   string    `json:"unit"`
	Rounds []float64 `json:"rounds"`
	Median float64   `json:"median"`
	Min    float64   `json:"min"`
	Max    float64   `json:"max"`
	// RatioToKernel is this path's value over kernel macvlan's in the same
	// round, for measurements that have a kernel value.
	RatioToKernel *Stats `json:"ratio_to_kernel,omitempty"`
	Target        string `json:"target,omitempty"`
	Met           *bool  `json:"met,omitempty"`
}

// target is the goal a record is held against (reported, never enforced).
type target struct {
	text string
	met  func(r Record) bool
}

// targetFor says which goal of issue 6 applies to a measurement on a path.
func targetFor(name string, p path) *target {
	ratioAtLeast := func(x float64) *target {
		return &target{fmt.Sprintf("≥ %.1fx", x), func(r Record) bool {
			return r.RatioToKernel != nil && r.RatioToKernel.Median >= x
		}}
	}
	switch {
	case name == mStack && p == xmvSKB:
		return ratioAtLeast(1.0)
	case name == mXDP && p == xmvXDP:
		return ratioAtLeast(1.5)
	case (name == mDropMAC || name == mDropVLAN) && (p == xmvSKB || p == xmvXDP):
		return ratioAtLeast(3.0)
	case strings.HasPrefix(name, "4 TCP") && p == xmvSKB:
		return ratioAtLeast(1.0)
	case name == mUpgrade:
		return &target{"0 lost", func(r Record) bool { return r.Max == 0 }}
	case strings.HasPrefix(name, "5 program cost") && strings.Contains(name, " hit,"):
		return &target{"≤ 30 ns", func(r Record) bool { return r.Median <= 30 }}
	}
	return nil
}

// records turns the samples into records, with per-round ratios to the
// kernel's value of the same round.
func (r *results) records() []Record {
	var out []Record
	for _, k := range r.order {
		s := r.m[k]
		var vals []float64
		for _, x := range s.samples {
			vals = append(vals, x.v)
		}
		st := statsOf(vals)
		rec := Record{Name: k.name, Path: string(k.path), Unit: s.unit, Rounds: st.Rounds,
			Median: st.Median, Min: st.Min, Max: st.Max}
		if base := r.m[key{k.name, kernel}]; base != nil && k.path != kernel && hasRatio(k.name) {
			var ratios []float64
			for _, x := range s.samples {
				for _, y := range base.samples {
					switch {
					case y.round != x.round || y.v <= 0 || x.v <= 0:
					case isCost(s.unit): // lower is better: how many times cheaper
						ratios = append(ratios, y.v/x.v)
					default:
						ratios = append(ratios, x.v/y.v)
					}
				}
			}
			if len(ratios) > 0 {
				rs := statsOf(ratios)
				rec.RatioToKernel = &rs
			}
		}
		if t := targetFor(k.name, k.path); t != nil {
			met := t.met(rec)
			rec.Target, rec.Met = t.text, &met
		}
		out = append(out, rec)
	}
	return out
}

func isCost(unit string) bool { return strings.HasPrefix(unit, "ns/") }

// hasRatio says whether a ratio to the kernel means anything for a
// measurement: not for in-situ program costs (the programs differ) nor
// for drop counts.
func hasRatio(name string) bool {
	return !strings.HasPrefix(name, "8 ") && !strings.Contains(name, "backlog")
}

// Receive costs derived from the rates: one core carries the generator
// and the receive path in turn, so 1/rate is the time both take per
// frame; less the baseline's 1/rate (generator, wire and an XDP_DROP on
// the parent), it leaves what the path costs the receiving host per frame
// beyond the cheapest possible receiver.
var derived = map[string]string{
	mStack:    "9 receive cost per frame, stack",
	mXDP:      "9 receive cost per frame, XDP consumer",
	mDropMAC:  "9 receive cost per frame, unwanted, unknown MAC",
	mDropVLAN: "9 receive cost per frame, unwanted, unknown VLAN",
}

func (r *results) deriveReceiveCosts() {
	base := r.m[key{mBaseline, "none"}]
	if base == nil {
		return
	}
	for _, name := range []string{mStack, mXDP, mDropMAC, mDropVLAN} {
		for _, p := range []path{kernel, xmvSKB, xmvXDP, xmvTCX} {
			s := r.m[key{name, p}]
			if s == nil {
				continue
			}
			for _, x := range s.samples {
				for _, b := range base.samples {
					if b.round == x.round && x.v > 0 && b.v > 0 {
						r.add(derived[name], p, "ns/frame (derived)", x.round, 1e3/x.v-1e3/b.v)
					}
				}
			}
		}
	}
}

// Report is latest.json.
type Report struct {
	Machine   Machine  `json:"machine"`
	Settings  []string `json:"settings"`
	Started   string   `json:"started"`
	Seconds   float64  `json:"seconds"`
	Complete  bool     `json:"complete"`
	Records   []Record `json:"records"`
	Profile   []string `json:"profile,omitempty"`
	Leftovers []string `json:"leftovers"`
}

// Machine describes where the numbers come from.
type Machine struct {
	Cores      int    `json:"cores"`
	CPU        string `json:"cpu"`
	Kernel     string `json:"kernel"`
	PacketSize string `json:"packet_size"`
	Generator  string `json:"generator"`
}

func num(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

// printTable writes the human table.
func printTable(w io.Writer, rep *Report) {
	m := rep.Machine
	fmt.Fprintf(w, "\nxmacvlan vs kernel macvlan: %d cores (%s), kernel %s\n", m.Cores, m.CPU, m.Kernel)
	fmt.Fprintf(w, "packets: %s; generator: %s\n", m.PacketSize, m.Generator)
	for _, s := range rep.Settings {
		fmt.Fprintf(w, "  %s\n", s)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "measurement\tpath\tunit\tmedian\t[min .. max]\tratio to kernel\t[min .. max]\tper-round ratios\ttarget\t")
	last := ""
	for _, r := range rep.Records {
		name := r.Name
		if name == last {
			name = ""
		}
		last = r.Name
		ratio, rrange, rounds := "", "", ""
		if r.RatioToKernel != nil {
			ratio = num(r.RatioToKernel.Median) + "x"
			rrange = fmt.Sprintf("[%s .. %s]", num(r.RatioToKernel.Min), num(r.RatioToKernel.Max))
			var rs []string
			for _, x := range r.RatioToKernel.Rounds {
				rs = append(rs, num(x))
			}
			rounds = strings.Join(rs, " ")
		}
		tgt := ""
		if r.Met != nil {
			tgt = r.Target + map[bool]string{true: " met", false: " MISSED"}[*r.Met]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t[%s .. %s]\t%s\t%s\t%s\t%s\t\n", name, r.Path, r.Unit,
			num(r.Median), num(r.Min), num(r.Max), ratio, rrange, rounds, tgt)
	}
	tw.Flush()
	if len(rep.Profile) > 0 {
		fmt.Fprintln(w, "\nin-situ program cost (ebpf.EnableStats, one window per path, stack consumer):")
		for _, p := range rep.Profile {
			fmt.Fprintf(w, "  %s\n", p)
		}
	}
}

// writeReport writes latest.json and the chart next to it.
func writeReport(dir string, rep *Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := writeFile(filepath.Join(dir, "latest.json"), append(b, '\n')); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, "latest.svg"), []byte(chart(rep)))
}

// writeFile replaces path in one rename, so an interrupted run never
// leaves half a file.
func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// chart draws the ratios to kernel macvlan as horizontal bars (median) with
// the range of the rounds as a whisker, and a line at 1.0x.
func chart(rep *Report) string {
	var rows []Record
	maxRatio := 2.0
	for _, r := range rep.Records {
		if r.RatioToKernel != nil && !isCost(r.Unit) {
			rows = append(rows, r)
			maxRatio = max(maxRatio, r.RatioToKernel.Max*1.1)
		}
	}
	const (
		left, right, top, rowH, barW = 430.0, 40.0, 60.0, 22.0, 460.0
	)
	width := left + barW + right
	height := top + rowH*float64(len(rows)) + 50
	x := func(v float64) float64 { return left + barW*v/maxRatio }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="22" font-size="15" font-weight="bold">xmacvlan / kernel macvlan, per-round ratio: median bar, min-max whisker</text>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="42" fill="#555">%s; %d cores; kernel %s; %s</text>`+"\n",
		xmlEscape(rep.Started), rep.Machine.Cores, xmlEscape(rep.Machine.Kernel), xmlEscape(rep.Machine.PacketSize))
	for v := 0.0; v <= maxRatio; v += 0.5 {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#ddd"/>`+"\n", x(v), top-5, x(v), height-40)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle" fill="#555">%.1fx</text>`+"\n", x(v), height-25, v)
	}
	for i, r := range rows {
		y := top + rowH*float64(i)
		color := map[string]string{string(xmvXDP): "#e08a2c", string(xmvTCX): "#6aa84f"}[r.Path]
		if color == "" {
			color = "#4a7bd0"
		}
		rr := r.RatioToKernel
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s (%s)</text>`+"\n", left-8, y+14, xmlEscape(r.Name), r.Path)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", left, y+3, x(rr.Median)-left, rowH-8, color)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", x(rr.Min), y+rowH/2, x(rr.Max), y+rowH/2)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#333">%sx</text>`+"\n", x(rr.Max)+4, y+14, num(rr.Median))
	}
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#c00" stroke-width="1.5"/>`+"\n", x(1), top-5, x(1), height-40)
	b.WriteString("</svg>\n")
	return b.String()
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}
