package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/docker"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// statsJSON is the schema of `xmacvlan stats -o json`: one object, or with
// --watch one object per line and interval. It is its own set of types
// (not the maps package's) so that the output changes only on purpose:
// fields are added, never renamed or removed. testdata/stats*.golden.json
// pin it.
type statsJSON struct {
	Time time.Time `json:"time"`
	// --watch: the seconds the rates cover (absent on the first sample).
	Interval float64           `json:"interval_seconds,omitempty"`
	Parents  []parentStatsJSON `json:"parents"`
	// --watch: why this sample has no counters (the watch goes on).
	Error string `json:"error,omitempty"`
}

type parentStatsJSON struct {
	Parent    string              `json:"parent"`
	Endpoints []endpointStatsJSON `json:"endpoints"`
	VLANs     []vlanStatsJSON     `json:"vlans"`
	Drops     []dropStatsJSON     `json:"drops"`
	Events    []eventStatsJSON    `json:"events"`
}

// trafficJSON: rx is towards the endpoint, tx from it.
type trafficJSON struct {
	RxPackets uint64 `json:"rx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
}

// trafficRateJSON is per second over the interval; bps is bits.
type trafficRateJSON struct {
	RxPPS float64 `json:"rx_pps"`
	RxBPS float64 `json:"rx_bps"`
	TxPPS float64 `json:"tx_pps"`
	TxBPS float64 `json:"tx_bps"`
}

type countRateJSON struct {
	PPS float64 `json:"pps"`
	BPS float64 `json:"bps"`
}

type endpointStatsJSON struct {
	Network string `json:"network"`
	VLAN    uint16 `json:"vlan"`
	Netns   string `json:"netns"`
	Ifname  string `json:"ifname"`
	MAC     string `json:"mac"`
	Ifindex int    `json:"outer_ifindex"`
	ID      int    `json:"id"`
	// A Docker endpoint's ID and container (docker-plugin's state).
	DockerEndpoint string `json:"docker_endpoint,omitempty"`
	Container      string `json:"container,omitempty"`
	trafficJSON
	// RxDropped: frames towards the endpoint its veth dropped, ring full
	// (loader.VethRxDropped).
	RxDropped uint64 `json:"rx_dropped"`
	// --watch: absent on the first sample and after a counter reset.
	Rate *trafficRateJSON `json:"rate,omitempty"`
}

type vlanStatsJSON struct {
	VLAN      uint16 `json:"vlan"`
	Network   string `json:"network"`
	Mode      string `json:"mode"`
	Endpoints int    `json:"endpoints"`
	trafficJSON
	Rate *trafficRateJSON `json:"rate,omitempty"`
}

type dropStatsJSON struct {
	Reason      string         `json:"reason"`
	Explanation string         `json:"explanation"`
	Packets     uint64         `json:"packets"`
	Bytes       uint64         `json:"bytes"`
	Rate        *countRateJSON `json:"rate,omitempty"`
}

type eventStatsJSON struct {
	Event       string         `json:"event"`
	Explanation string         `json:"explanation"`
	Packets     uint64         `json:"packets"`
	Bytes       uint64         `json:"bytes"`
	Rate        *countRateJSON `json:"rate,omitempty"`
}

// minWatchInterval keeps --watch from hammering the state root's lock.
const minWatchInterval = 100 * time.Millisecond

func newStatsCmd(g *globals) *cobra.Command {
	var interval time.Duration
	var dockerState string
	cmd := &cobra.Command{
		Use:   "stats [PARENT] [--watch [INTERVAL]]",
		Short: "Show traffic per endpoint and VLAN, drops by reason and datapath events",
		Long: "Reads the datapath's counters (per CPU, summed) of every attached parent, or of PARENT:\n" +
			"traffic per endpoint and per VLAN (rx = towards the endpoint), drops with the reason\n" +
			"explained, and events (floods, hairpin, local switching, XDP redirects, host pass).\n" +
			"--watch redraws live rates (packets and bits per second) every INTERVAL (default 1s) in\n" +
			"place like top on a terminal; otherwise it appends one line per row and interval\n" +
			"(with -o json one object per line). Ctrl-C stops it. A Docker endpoint shows its container\n" +
			"and Docker endpoint ID (docker-plugin's state in --docker-state).",
		Example: "  xmacvlan stats\n  xmacvlan stats ens33 -o json\n  xmacvlan stats --watch\n  xmacvlan stats ens33 --watch 2s",
		Args:    cobra.MaximumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			watching := cmd.Flags().Changed("watch")
			args = intervalArg(args, watching, &interval)
			if len(args) > 1 {
				return fmt.Errorf("want at most one PARENT, got %s", strings.Join(args, " "))
			}
			only := ""
			if len(args) == 1 {
				only = args[0]
			}
			read := func() ([]loader.ParentSnapshot, error) { return loader.Snapshots(g.root, only) }
			owners := func() map[string]docker.Owner { return dockerOwners(dockerState) }
			w := cmd.OutOrStdout()
			if !watching {
				snaps, err := read()
				if err != nil {
					return err
				}
				s := buildStats(time.Now(), snaps, owners(), nil)
				if g.output == "json" {
					return writeJSON(w, s)
				}
				if len(s.Parents) == 0 {
					fmt.Fprintf(w, "no parent attached (state root %s)\n", g.root)
					return nil
				}
				return writeStatsText(w, s)
			}
			if interval < minWatchInterval {
				return fmt.Errorf("watch interval %s is shorter than %s", interval, minWatchInterval)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			ticker := time.NewTicker(interval)
			defer ticker.Stop()
			mode := watchPlain
			switch {
			case g.output == "json":
				mode = watchJSON
			case isTerminal(w):
				mode = watchTerminal
			}
			return watchStats(ctx, w, mode, interval, read, owners, time.Now, ticker.C)
		},
	}
	cmd.Flags().StringVar(&dockerState, "docker-state", docker.DefaultStateDir, "docker-plugin's --state: name the containers of Docker endpoints")
	cmd.Flags().DurationVar(&interval, "watch", time.Second, "redraw live rates every INTERVAL (--watch, --watch 2s, --watch=500ms)")
	// --watch alone means every second. pflag then leaves a following
	// value to the arguments; intervalArg picks it up there.
	cmd.Flags().Lookup("watch").NoOptDefVal = "1s"
	return cmd
}

// intervalArg takes a watch interval given as a separate argument
// (`--watch 2s`, `--watch 0.5`) out of args.
func intervalArg(args []string, watching bool, interval *time.Duration) []string {
	if !watching {
		return args
	}
	var rest []string
	found := false
	for _, a := range args {
		if d, ok := parseInterval(a); ok && !found {
			*interval, found = d, true
			continue
		}
		rest = append(rest, a)
	}
	return rest
}

// parseInterval accepts a Go duration (2s, 500ms) or seconds (2, 0.5).
func parseInterval(s string) (time.Duration, bool) {
	if d, err := time.ParseDuration(s); err == nil {
		return d, true
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && f > 0 && !math.IsInf(f, 0) {
		return time.Duration(f * float64(time.Second)), true
	}
	return 0, false
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// buildStats turns snapshots into the output schema, naming Docker
// endpoints by owners (by outer veth; nil: none); with prev (the previous
// sample of a watch) it adds the rates since then.
func buildStats(now time.Time, snaps []loader.ParentSnapshot, owners map[string]docker.Owner, prev *statsJSON) statsJSON {
	s := statsJSON{Time: now, Parents: []parentStatsJSON{}}
	var secs float64
	var before previous
	if prev != nil {
		secs = now.Sub(prev.Time).Seconds()
		if secs > 0 {
			s.Interval = secs
			before = indexStats(*prev)
		}
	}
	for _, snap := range snaps {
		p := parentStatsJSON{Parent: snap.Parent, Endpoints: []endpointStatsJSON{}, VLANs: []vlanStatsJSON{},
			Drops: []dropStatsJSON{}, Events: []eventStatsJSON{}}
		nets := map[uint16]tables.Network{}
		for _, n := range snap.Networks {
			nets[n.VLAN] = n
		}
		for _, e := range snap.Endpoints {
			ep := e.Endpoint
			row := endpointStatsJSON{Network: netName(nets, ep.VLAN), VLAN: ep.VLAN, Netns: ep.Netns, Ifname: ep.Ifname,
				MAC: ep.MAC.String(), Ifindex: ep.Ifindex, ID: ep.ID, trafficJSON: trafficOf(e.Traffic), RxDropped: snap.RxDropped[ep.Ifindex]}
			if o, ok := owners[ep.Outer]; ok && ep.Outer != "" {
				row.DockerEndpoint, row.Container = o.Endpoint, o.Container
			}
			if old, ok := before.traffic[endpointKey(p.Parent, row)]; ok {
				row.Rate = trafficRate(old, row.trafficJSON, secs)
			}
			p.Endpoints = append(p.Endpoints, row)
		}
		for _, v := range snap.VLANs {
			n := nets[v.VLAN]
			row := vlanStatsJSON{VLAN: v.VLAN, Network: n.Name, Mode: n.Mode.String(), Endpoints: n.Members,
				trafficJSON: trafficOf(v.Traffic)}
			if old, ok := before.traffic[vlanKey(p.Parent, v.VLAN)]; ok {
				row.Rate = trafficRate(old, row.trafficJSON, secs)
			}
			p.VLANs = append(p.VLANs, row)
		}
		for i, c := range snap.Drops {
			r := tables.DropReason(i)
			row := dropStatsJSON{Reason: r.String(), Explanation: r.Explain(), Packets: c.Packets, Bytes: c.Bytes}
			if old, ok := before.counts[dropKey(p.Parent, row.Reason)]; ok {
				row.Rate = countRate(old, c, secs)
			}
			p.Drops = append(p.Drops, row)
		}
		for i, c := range snap.Events {
			e := tables.EventKind(i)
			row := eventStatsJSON{Event: e.String(), Explanation: e.Explain(), Packets: c.Packets, Bytes: c.Bytes}
			if old, ok := before.counts[eventKey(p.Parent, row.Event)]; ok {
				row.Rate = countRate(old, c, secs)
			}
			p.Events = append(p.Events, row)
		}
		s.Parents = append(s.Parents, p)
	}
	return s
}

func netName(nets map[uint16]tables.Network, vlan uint16) string {
	if n, ok := nets[vlan]; ok {
		return n.Name
	}
	return ""
}

func trafficOf(t tables.Traffic) trafficJSON {
	return trafficJSON{RxPackets: t.RxPackets, RxBytes: t.RxBytes, TxPackets: t.TxPackets, TxBytes: t.TxBytes}
}

// previous is the counters of the previous sample of a watch, by row.
// Rows of consecutive samples are matched by key. An endpoint is its outer
// ifindex and counter slot: a new endpoint in a reused slot starts from
// zero and must not read as a negative rate.
type previous struct {
	traffic map[string]trafficJSON  // endpoints and VLANs
	counts  map[string]tables.Count // drop reasons and events
}

func endpointKey(parent string, e endpointStatsJSON) string {
	return fmt.Sprintf("endpoint/%s/%d/%d", parent, e.Ifindex, e.ID)
}
func vlanKey(parent string, vlan uint16) string { return fmt.Sprintf("vlan/%s/%d", parent, vlan) }
func dropKey(parent, reason string) string      { return "drop/" + parent + "/" + reason }
func eventKey(parent, event string) string      { return "event/" + parent + "/" + event }

func indexStats(s statsJSON) previous {
	p := previous{traffic: map[string]trafficJSON{}, counts: map[string]tables.Count{}}
	for _, ps := range s.Parents {
		for _, e := range ps.Endpoints {
			p.traffic[endpointKey(ps.Parent, e)] = e.trafficJSON
		}
		for _, v := range ps.VLANs {
			p.traffic[vlanKey(ps.Parent, v.VLAN)] = v.trafficJSON
		}
		for _, d := range ps.Drops {
			p.counts[dropKey(ps.Parent, d.Reason)] = tables.Count{Packets: d.Packets, Bytes: d.Bytes}
		}
		for _, e := range ps.Events {
			p.counts[eventKey(ps.Parent, e.Event)] = tables.Count{Packets: e.Packets, Bytes: e.Bytes}
		}
	}
	return p
}

// trafficRate is nil when a counter went backwards (the parent was
// detached and attached again): no rate can be told for that interval.
func trafficRate(old, cur trafficJSON, secs float64) *trafficRateJSON {
	if cur.RxPackets < old.RxPackets || cur.RxBytes < old.RxBytes || cur.TxPackets < old.TxPackets || cur.TxBytes < old.TxBytes {
		return nil
	}
	return &trafficRateJSON{
		RxPPS: float64(cur.RxPackets-old.RxPackets) / secs,
		RxBPS: float64(cur.RxBytes-old.RxBytes) * 8 / secs,
		TxPPS: float64(cur.TxPackets-old.TxPackets) / secs,
		TxBPS: float64(cur.TxBytes-old.TxBytes) * 8 / secs,
	}
}

func countRate(old, cur tables.Count, secs float64) *countRateJSON {
	if cur.Packets < old.Packets || cur.Bytes < old.Bytes {
		return nil
	}
	return &countRateJSON{PPS: float64(cur.Packets-old.Packets) / secs, BPS: float64(cur.Bytes-old.Bytes) * 8 / secs}
}

// writeStatsText prints the tables: totals, or with rates (a watch
// sample) rates first.
func writeStatsText(w io.Writer, s statsJSON) error {
	rates := s.Interval > 0
	for i, p := range s.Parents {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "parent %s\n", p.Parent)
		tw := newTable(w)
		if rates {
			fmt.Fprintln(tw, "  NETWORK\tVLAN\tNAMESPACE\tIFNAME\tMAC\tRX PPS\tRX BIT/S\tTX PPS\tTX BIT/S\tRX PKTS\tTX PKTS\tRX DROPPED")
		} else {
			fmt.Fprintln(tw, "  NETWORK\tVLAN\tNAMESPACE\tIFNAME\tMAC\tRX PKTS\tRX BYTES\tTX PKTS\tTX BYTES\tRX DROPPED")
		}
		for _, e := range p.Endpoints {
			netns := dashIfEmpty(e.Netns)
			if e.DockerEndpoint != "" {
				netns = docker.Owner{Endpoint: e.DockerEndpoint, Container: e.Container}.String()
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\t%s\t%d\n", dashIfEmpty(e.Network), vlanName(e.VLAN), netns,
				dashIfEmpty(e.Ifname), e.MAC, trafficColumns(e.trafficJSON, e.Rate, rates), e.RxDropped)
		}
		if len(p.Endpoints) == 0 {
			fmt.Fprintln(tw, "  (no endpoints)")
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
		tw = newTable(w)
		if rates {
			fmt.Fprintln(tw, "  VLAN\tNETWORK\tMODE\tENDPOINTS\tRX PPS\tRX BIT/S\tTX PPS\tTX BIT/S\tRX PKTS\tTX PKTS")
		} else {
			fmt.Fprintln(tw, "  VLAN\tNETWORK\tMODE\tENDPOINTS\tRX PKTS\tRX BYTES\tTX PKTS\tTX BYTES")
		}
		for _, v := range p.VLANs {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\n", vlanName(v.VLAN), v.Network, v.Mode, v.Endpoints,
				trafficColumns(v.trafficJSON, v.Rate, rates))
		}
		if len(p.VLANs) == 0 {
			fmt.Fprintln(tw, "  (no networks)")
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
		tw = newTable(w)
		if rates {
			fmt.Fprintln(tw, "  DROP REASON\tPPS\tPACKETS\tBYTES\tWHY")
		} else {
			fmt.Fprintln(tw, "  DROP REASON\tPACKETS\tBYTES\tWHY")
		}
		for _, d := range p.Drops {
			fmt.Fprintf(tw, "  %s\t%s%d\t%d\t%s\n", d.Reason, ppsColumn(d.Rate, rates), d.Packets, d.Bytes, d.Explanation)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
		tw = newTable(w)
		if rates {
			fmt.Fprintln(tw, "  EVENT\tPPS\tPACKETS\tBYTES\tMEANING")
		} else {
			fmt.Fprintln(tw, "  EVENT\tPACKETS\tBYTES\tMEANING")
		}
		for _, e := range p.Events {
			fmt.Fprintf(tw, "  %s\t%s%d\t%d\t%s\n", e.Event, ppsColumn(e.Rate, rates), e.Packets, e.Bytes, e.Explanation)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	return nil
}

func trafficColumns(t trafficJSON, r *trafficRateJSON, rates bool) string {
	if !rates {
		return fmt.Sprintf("%d\t%d\t%d\t%d", t.RxPackets, t.RxBytes, t.TxPackets, t.TxBytes)
	}
	if r == nil {
		return fmt.Sprintf("-\t-\t-\t-\t%d\t%d", t.RxPackets, t.TxPackets)
	}
	return fmt.Sprintf("%s\t%s\t%s\t%s\t%d\t%d", si(r.RxPPS, ""), si(r.RxBPS, "bit/s"), si(r.TxPPS, ""), si(r.TxBPS, "bit/s"),
		t.RxPackets, t.TxPackets)
}

func ppsColumn(r *countRateJSON, rates bool) string {
	switch {
	case !rates:
		return ""
	case r == nil:
		return "-\t"
	}
	return si(r.PPS, "") + "\t"
}

// si writes v with a k/M/G prefix and three significant digits.
func si(v float64, unit string) string {
	prefixes := []string{"", "k", "M", "G", "T"}
	i := 0
	for v >= 999.5 && i < len(prefixes)-1 {
		v /= 1000
		i++
	}
	var num string
	switch {
	case v == 0 || (i == 0 && v == math.Trunc(v)):
		num = strconv.FormatFloat(v, 'f', 0, 64)
	case v < 9.995:
		num = strconv.FormatFloat(v, 'f', 2, 64)
	case v < 99.95:
		num = strconv.FormatFloat(v, 'f', 1, 64)
	default:
		num = strconv.FormatFloat(v, 'f', 0, 64)
	}
	if unit == "" {
		return num + prefixes[i]
	}
	return num + " " + prefixes[i] + unit
}

type watchMode int

const (
	watchTerminal watchMode = iota // redraw in place, like top
	watchPlain                     // append key=value lines
	watchJSON                      // append one JSON object per sample
)

// watchStats samples at every tick until ctx ends. The first read must
// work; later failures (a parent detached for a while) are shown and the
// watch goes on, reading the parent again when it is back.
func watchStats(ctx context.Context, w io.Writer, mode watchMode, interval time.Duration,
	read func() ([]loader.ParentSnapshot, error), owners func() map[string]docker.Owner, now func() time.Time, tick <-chan time.Time) error {
	var prev *statsJSON
	for first := true; ; first = false {
		snaps, err := read()
		t := now()
		if err != nil && first {
			return err
		}
		var s statsJSON
		if err != nil {
			s = statsJSON{Time: t, Parents: []parentStatsJSON{}, Error: err.Error()}
		} else {
			var o map[string]docker.Owner
			if owners != nil {
				o = owners()
			}
			s = buildStats(t, snaps, o, prev)
			prev = &s
		}
		if err := writeSample(w, mode, interval, s); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			if mode == watchTerminal {
				fmt.Fprintln(w)
			}
			return nil
		case <-tick:
		}
	}
}

func writeSample(w io.Writer, mode watchMode, interval time.Duration, s statsJSON) error {
	switch mode {
	case watchJSON:
		b, err := json.Marshal(s)
		if err != nil {
			return err
		}
		_, err = w.Write(append(b, '\n'))
		return err
	case watchPlain:
		return writePlainSample(w, s)
	}
	// Home, each line cleared to its end, the rest of the screen cleared:
	// a redraw without the flicker of clearing everything first.
	var buf bytes.Buffer
	fmt.Fprintf(&buf, "xmacvlan stats  every %s  %s  (Ctrl-C quits)\n\n", interval, s.Time.Format("15:04:05"))
	switch {
	case s.Error != "":
		fmt.Fprintf(&buf, "error: %s\n", s.Error)
	case len(s.Parents) == 0:
		fmt.Fprintln(&buf, "no parent attached")
	default:
		if err := writeStatsText(&buf, s); err != nil {
			return err
		}
	}
	out := bufio.NewWriter(w)
	out.WriteString("\x1b[H")
	for _, line := range strings.SplitAfter(buf.String(), "\n") {
		if line == "" {
			continue
		}
		out.WriteString(strings.TrimSuffix(line, "\n") + "\x1b[K\n")
	}
	out.WriteString("\x1b[J")
	return out.Flush()
}

// writePlainSample appends one key=value line per endpoint and VLAN, and
// per drop reason and event that moved. The first sample only sets the
// baseline of the rates.
func writePlainSample(w io.Writer, s statsJSON) error {
	ts := s.Time.Format(time.RFC3339)
	if s.Error != "" {
		_, err := fmt.Fprintf(w, "%s error=%q\n", ts, s.Error)
		return err
	}
	if s.Interval == 0 {
		return nil
	}
	out := bufio.NewWriter(w)
	for _, p := range s.Parents {
		for _, e := range p.Endpoints {
			container := ""
			if e.Container != "" {
				container = " container=" + e.Container
			}
			fmt.Fprintf(out, "%s parent=%s endpoint=%s/%s network=%s vlan=%d mac=%s%s %s\n", ts, p.Parent,
				e.Netns, e.Ifname, e.Network, e.VLAN, e.MAC, container, plainRate(e.Rate))
		}
		for _, v := range p.VLANs {
			fmt.Fprintf(out, "%s parent=%s vlan=%d network=%s %s\n", ts, p.Parent, v.VLAN, v.Network, plainRate(v.Rate))
		}
		for _, d := range p.Drops {
			if d.Rate != nil && d.Rate.PPS > 0 {
				fmt.Fprintf(out, "%s parent=%s drop=%s pps=%.1f bps=%.0f\n", ts, p.Parent, d.Reason, d.Rate.PPS, d.Rate.BPS)
			}
		}
		for _, e := range p.Events {
			if e.Rate != nil && e.Rate.PPS > 0 {
				fmt.Fprintf(out, "%s parent=%s event=%s pps=%.1f bps=%.0f\n", ts, p.Parent, e.Event, e.Rate.PPS, e.Rate.BPS)
			}
		}
	}
	return out.Flush()
}

func plainRate(r *trafficRateJSON) string {
	if r == nil {
		return "rate=reset"
	}
	return fmt.Sprintf("rx_pps=%.1f rx_bps=%.0f tx_pps=%.1f tx_bps=%.0f", r.RxPPS, r.RxBPS, r.TxPPS, r.TxBPS)
}
