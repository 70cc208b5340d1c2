package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/xmacvlan/xmacvlan/bpf"
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
	// Target is the goal of issue 13 the record is held against (reported,
	// never enforced): TargetOf (ratio_to_kernel: its median; median; max)
	// compared by the operator in Target with TargetValue.
	Target      string   `json:"target,omitempty"`
	TargetOf    string   `json:"target_of,omitempty"`
	TargetValue *float64 `json:"target_value,omitempty"`
	Met         *bool    `json:"met,omitempty"`
}

// target is a goal: of (ratioOf, "median" or "max") at least (or at most)
// value.
type target struct {
	of      string
	atLeast bool
	value   float64
	unit    string // "x" for ratios, " ns", ""
}

const ratioOf = "ratio_to_kernel"

func (t *target) text() string {
	op := "≤"
	if t.atLeast {
		op = "≥"
	}
	if t.of == "max" && t.value == 0 && !t.atLeast {
		return "0 in every round"
	}
	v := strconv.FormatFloat(t.value, 'g', -1, 64)
	if t.unit == "x" {
		v = fmt.Sprintf("%.1f", t.value)
	}
	return fmt.Sprintf("%s %s%s", op, v, t.unit)
}

func (t *target) met(r Record) bool {
	var v float64
	switch t.of {
	case ratioOf:
		if r.RatioToKernel == nil {
			return false
		}
		v = r.RatioToKernel.Median
	case "max":
		v = r.Max
	default:
		v = r.Median
	}
	if t.atLeast {
		return v >= t.value
	}
	return v <= t.value
}

// targetFor says which goal of issue 13 applies to a measurement on a path
// (issue 6's for the upgrade): the skb-delivery paths (XDP on and off) for
// delivery into the stack and TCP, the XDP-delivery path for an XDP
// consumer, the XDP-on paths for early drops, every xmacvlan path for
// flooding, the storm-limited path for the storm line.
func targetFor(name string, p path) *target {
	ratio := func(x float64) *target { return &target{ratioOf, true, x, "x"} }
	skb := p == xmvSKB || p == xmvTCX
	switch {
	case name == mStack && skb:
		return ratio(1.0)
	case strings.HasPrefix(name, "4 TCP") && skb:
		return ratio(1.0)
	case name == mXDP && p == xmvXDP:
		return ratio(1.5)
	case (name == mDropMAC || name == mDropVLAN) && p.xdpOn():
		return ratio(3.0)
	case p == kernel || p == "none":
		return nil
	case isFlood(name, ""):
		return ratio(1.0)
	case isFlood(name, mFloodLost):
		return &target{"max", false, 0, ""}
	case (name == mStorm || name == mStormNet) && p == xmvLimit:
		return &target{"median", true, 0.9, ""}
	case name == mUpgrade:
		return &target{"max", false, 0, ""}
	case strings.HasPrefix(name, "5 program cost") && strings.Contains(name, " hit,"):
		return &target{"median", false, 30, " ns"}
	case strings.HasPrefix(name, mInSituNet) && strings.Contains(name, "delivery to the stack"):
		return &target{"median", false, 30, " ns"}
	}
	return nil
}

// isFlood says whether name is flood line kind (mFlood itself when kind
// is "") at some size.
func isFlood(name, kind string) bool {
	if kind == "" {
		kind = mFlood
	}
	for _, n := range []int{1, 8, 64, 1024} {
		if name == fmt.Sprintf(kind, n) {
			return true
		}
	}
	return false
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
			met, v := t.met(rec), t.value
			rec.Target, rec.TargetOf, rec.TargetValue, rec.Met = t.text(), t.of, &v, &met
		}
		out = append(out, rec)
	}
	return out
}

func isCost(unit string) bool { return strings.HasPrefix(unit, "ns/") }

// hasRatio says whether a ratio to the kernel means anything for a
// measurement: not for in-situ program costs (the programs differ), drop
// counts, nor the storm line (its own figure is a fraction).
func hasRatio(name string) bool {
	return !strings.HasPrefix(name, "8 ") && !strings.HasPrefix(name, "10 ") &&
		!strings.Contains(name, "drops") && !strings.Contains(name, "short")
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
	Machine  Machine  `json:"machine"`
	Settings []string `json:"settings"`
	Started  string   `json:"started"`
	Seconds  float64  `json:"seconds"`
	Complete bool     `json:"complete"`
	Records  []Record `json:"records"`
	// RatioLines are the lines the targets are about, each a number with
	// its range over the rounds: every ratio to kernel macvlan, the storm
	// line's fraction, and every record that has a target.
	RatioLines  []Line           `json:"ratio_lines"`
	ProgramCost []ProgramCostRow `json:"program_cost,omitempty"`
	Profile     []string         `json:"profile,omitempty"`
	Leftovers   []string         `json:"leftovers"`
}

// Line is one line of the summary: what its figure is (Of), its median
// and range over the rounds, and its target.
type Line struct {
	Name        string    `json:"name"`
	Path        string    `json:"path"`
	Of          string    `json:"of"`
	Median      float64   `json:"median"`
	Min         float64   `json:"min"`
	Max         float64   `json:"max"`
	Rounds      []float64 `json:"rounds"`
	Target      string    `json:"target,omitempty"`
	TargetOf    string    `json:"target_of,omitempty"`
	TargetValue *float64  `json:"target_value,omitempty"`
	Met         *bool     `json:"met,omitempty"`
}

// stormFractions are the storm line's ratios, and what each is of.
var stormFractions = map[string]string{
	mStorm:     "victim's TCP during the storm / without it, same round and deployment",
	mStormBusy: "victim's TCP with the sender as busy on its own lo / without the storm (control)",
	mStormNet:  "victim's TCP during the storm / with the sender as busy on its own lo",
}

// ratioLines picks the summary out of the records.
func ratioLines(recs []Record) []Line {
	out := []Line{}
	for _, r := range recs {
		l := Line{Name: r.Name, Path: r.Path, Target: r.Target, TargetOf: r.TargetOf, TargetValue: r.TargetValue, Met: r.Met}
		switch {
		case r.RatioToKernel != nil && (r.Target == "" || r.TargetOf == ratioOf):
			l.Of = "xmacvlan / kernel macvlan in the same round (for ns: kernel / xmacvlan)"
			l.Median, l.Min, l.Max, l.Rounds = r.RatioToKernel.Median, r.RatioToKernel.Min, r.RatioToKernel.Max, r.RatioToKernel.Rounds
		case stormFractions[r.Name] != "" || r.Target != "":
			l.Of = r.Unit
			if of := stormFractions[r.Name]; of != "" {
				l.Of = of
			}
			l.Median, l.Min, l.Max, l.Rounds = r.Median, r.Min, r.Max, r.Rounds
		default:
			continue
		}
		out = append(out, l)
	}
	return out
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
	printProgramCost(w, rep.ProgramCost)
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

// chart draws the ratio lines (ratios to kernel macvlan of rates, and the
// storm line's fractions) as horizontal bars (median) with the range of
// the rounds as a whisker, a line at 1.0x, and each row's target as a
// dashed red mark.
func chart(rep *Report) string {
	type row struct {
		label  string
		path   string
		st     Stats
		target *float64
		met    *bool
	}
	var rows []row
	maxRatio := 2.0
	for _, r := range rep.Records {
		var rw row
		switch {
		case r.RatioToKernel != nil && !isCost(r.Unit) && (r.Target == "" || r.TargetOf == ratioOf):
			rw = row{fmt.Sprintf("%s (%s)", r.Name, r.Path), r.Path, *r.RatioToKernel, nil, r.Met}
		case stormFractions[r.Name] != "":
			rw = row{fmt.Sprintf("%s (%s), fraction", r.Name, r.Path), r.Path, Stats{Median: r.Median, Min: r.Min, Max: r.Max}, nil, r.Met}
		default:
			continue
		}
		if r.TargetValue != nil {
			rw.target = r.TargetValue
		}
		rows = append(rows, rw)
		maxRatio = max(maxRatio, rw.st.Max*1.1)
	}
	const (
		left, right, top, rowH, barW = 560.0, 60.0, 60.0, 22.0, 460.0
	)
	width := left + barW + right
	height := top + rowH*float64(len(rows)) + 50
	x := func(v float64) float64 { return left + barW*min(v, maxRatio)/maxRatio }
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="22" font-size="15" font-weight="bold">xmacvlan / kernel macvlan per round (storm: victim's TCP during / without): median bar, min-max whisker, target dashed red</text>`+"\n")
	fmt.Fprintf(&b, `<text x="10" y="42" fill="#555">%s; %d cores; kernel %s; %s</text>`+"\n",
		xmlEscape(rep.Started), rep.Machine.Cores, xmlEscape(rep.Machine.Kernel), xmlEscape(rep.Machine.PacketSize))
	for v := 0.0; v <= maxRatio; v += 0.5 {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#ddd"/>`+"\n", x(v), top-5, x(v), height-40)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle" fill="#555">%.1fx</text>`+"\n", x(v), height-25, v)
	}
	for i, r := range rows {
		y := top + rowH*float64(i)
		color := map[string]string{string(kernel): "#999999", string(xmvXDP): "#e08a2c", string(xmvTCX): "#6aa84f", string(xmvLimit): "#8e44ad"}[r.path]
		if color == "" {
			color = "#4a7bd0"
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", left-8, y+14, xmlEscape(r.label))
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"/>`+"\n", left, y+3, x(r.st.Median)-left, rowH-8, color)
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="black"/>`+"\n", x(r.st.Min), y+rowH/2, x(r.st.Max), y+rowH/2)
		label := num(r.st.Median) + "x"
		if r.target != nil {
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#c00" stroke-width="2" stroke-dasharray="3,2"/>`+"\n", x(*r.target), y, x(*r.target), y+rowH)
			if r.met != nil {
				label += map[bool]string{true: " met", false: " missed"}[*r.met]
			}
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#333">%s</text>`+"\n", max(x(r.st.Max), x(1))+4, y+14, label)
	}
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#555" stroke-width="1.5"/>`+"\n", x(1), top-5, x(1), height-40)
	b.WriteString("</svg>\n")
	return b.String()
}

func xmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace(s)
}

// ProgramCostRow puts a program's in-situ cost on a hit next to its
// BPF_PROG_RUN cost on a hit, at one MAC-table size.
type ProgramCostRow struct {
	Program string `json:"program"` // as the live path runs it
	Path    string `json:"path"`
	Entries int    `json:"entries"`
	// Medians over the window's slices, ns per run: raw (with the
	// statistics' clock reads) and net of them.
	InSituNs    float64 `json:"in_situ_ns"`
	InSituNetNs float64 `json:"in_situ_net_ns"`
	// BPF_PROG_RUN of the same program (its name without a variant
	// suffix such as _meta) on a hit, net of an empty program; 0 if not
	// measured in this run.
	ProgRunNs   float64 `json:"bpf_prog_run_ns,omitempty"`
	ProgRunUnit string  `json:"bpf_prog_run_unit,omitempty"`
}

// programCostTable pairs the in-situ and BPF_PROG_RUN costs of each
// xmacvlan program on a hit (delivery to the stack), by table size.
func programCostTable(recs []Record) []ProgramCostRow {
	byName := map[key]Record{}
	for _, r := range recs {
		byName[key{r.Name, path(r.Path)}] = r
	}
	var out []ProgramCostRow
	prefix := mInSituNet + ", delivery to the stack, "
	for _, r := range recs {
		rest, ok := strings.CutPrefix(r.Name, prefix)
		if !ok {
			continue
		}
		n, prog, ok := strings.Cut(rest, " entries, ")
		entries, err := strconv.Atoi(n)
		if !ok || err != nil {
			continue
		}
		row := ProgramCostRow{Program: prog, Path: r.Path, Entries: entries, InSituNetNs: r.Median}
		raw := byName[key{mInSitu + ", delivery to the stack, " + rest, path(r.Path)}]
		row.InSituNs = raw.Median
		for _, base := range []string{bpf.XmacvlanProgXmvRxXdp, bpf.XmacvlanProgXmvRxTc, bpf.XmacvlanProgXmvEpTx} {
			if !strings.HasPrefix(prog, base) {
				continue
			}
			if pr, ok := byName[key{fmt.Sprintf("5 program cost, hit, %d entries", entries), path(base)}]; ok {
				row.ProgRunNs, row.ProgRunUnit = pr.Median, pr.Unit
			}
		}
		out = append(out, row)
	}
	return out
}

func printProgramCost(w io.Writer, rows []ProgramCostRow) {
	if len(rows) == 0 {
		return
	}
	fmt.Fprintln(w, "\nprogram cost on a hit, ns per run: BPF_PROG_RUN (5) next to in situ (8, ebpf.EnableStats; net = less xb_next_tc's run time, the statistics' own):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "program\tpath\tentries\tBPF_PROG_RUN\tin situ\tin situ, net\t")
	for _, r := range rows {
		pr := "-"
		if r.ProgRunUnit != "" {
			pr = num(r.ProgRunNs) + " " + strings.TrimPrefix(r.ProgRunUnit, "ns/frame ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t\n", r.Program, r.Path, r.Entries, pr, num(r.InSituNs), num(r.InSituNetNs))
	}
	tw.Flush()
}
