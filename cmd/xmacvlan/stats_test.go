package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/xmacvlan/xmacvlan/docker"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// statsFixture is a fixed snapshot: one parent, an untagged and a private
// tagged network, three endpoints. Exactly nine reasons and eight events,
// as the datapath had when the golden files were written: reasons added
// later do not change them. step scales the counters, for a second sample.
func statsFixture(step uint64) []loader.ParentSnapshot {
	mac := func(s string) net.HardwareAddr { m, _ := net.ParseMAC(s); return m }
	tr := func(rx, tx uint64) tables.Traffic {
		return tables.Traffic{RxPackets: rx * step, RxBytes: rx * step * 100, TxPackets: tx * step, TxBytes: tx * step * 100}
	}
	s := loader.ParentSnapshot{Parent: "ens33", Snapshot: tables.Snapshot{
		Networks: []tables.Network{
			{VLAN: 0, Name: "lan", Mode: tables.Bridge, Members: 1},
			{VLAN: 10, Name: "v10", Mode: tables.Private, Members: 2},
		},
		Endpoints: []tables.EndpointCounters{
			{Endpoint: tables.Endpoint{Ifindex: 7, ID: 0, VLAN: 0, MAC: mac("02:00:00:00:00:01"), Netns: "web", Ifname: "eth0"}, Traffic: tr(10, 20)},
			{Endpoint: tables.Endpoint{Ifindex: 8, ID: 1, VLAN: 10, MAC: mac("02:00:00:00:10:01"), Netns: "db", Ifname: "eth0"}, Traffic: tr(3, 4)},
			{Endpoint: tables.Endpoint{Ifindex: 9, ID: 2, VLAN: 10, MAC: mac("02:00:00:00:10:02"), Netns: "cache", Ifname: "eth1"}, Traffic: tr(5, 0)},
		},
		VLANs: []tables.VLANCounters{{VLAN: 0, Traffic: tr(10, 20)}, {VLAN: 10, Traffic: tr(8, 4)}},
	}}
	for i := range 9 {
		s.Drops = append(s.Drops, tables.Count{Packets: uint64(i) * step, Bytes: uint64(i) * step * 64})
	}
	for i := range 8 {
		s.Events = append(s.Events, tables.Count{Packets: uint64(i) * step * 2, Bytes: uint64(i) * step * 128})
	}
	return []loader.ParentSnapshot{s}
}

// fixedWords replaces the explanations, which the maps package owns and
// may reword, with placeholders: the golden files pin this command's
// schema and layout, not maps' wording. It checks them first.
func fixedWords(t *testing.T, s statsJSON) statsJSON {
	t.Helper()
	for i := range s.Parents {
		p := &s.Parents[i]
		for j := range p.Drops {
			d := &p.Drops[j]
			if want := tables.DropReason(j).Explain(); d.Explanation != want || want == "" {
				t.Errorf("reason %s explained as %q, want %q", d.Reason, d.Explanation, want)
			}
			d.Explanation = "why " + d.Reason
		}
		for j := range p.Events {
			e := &p.Events[j]
			if want := tables.EventKind(j).Explain(); e.Explanation != want || want == "" {
				t.Errorf("event %s explained as %q, want %q", e.Event, e.Explanation, want)
			}
			e.Explanation = "what " + e.Event + " counts"
		}
	}
	return s
}

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./cmd/xmacvlan -run Stats -update writes it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the output; if the change is meant, run go test ./cmd/xmacvlan -run Stats -update\n--- got:\n%s", path, got)
	}
}

// The JSON schema of `stats -o json` is stable.
func TestStatsJSONGolden(t *testing.T) {
	var buf bytes.Buffer
	if err := writeJSON(&buf, fixedWords(t, buildStats(t0, statsFixture(1), nil, nil))); err != nil {
		t.Fatal(err)
	}
	golden(t, "stats.golden.json", buf.Bytes())
}

// With --watch each sample carries the rates since the previous one; an
// endpoint new in a reused slot (counters went down) has no rate.
func TestStatsWatchJSONGolden(t *testing.T) {
	first := buildStats(t0, statsFixture(1), nil, nil)
	snaps := statsFixture(3)
	snaps[0].Endpoints[2].Traffic = tables.Traffic{RxPackets: 1, RxBytes: 60} // reset
	var buf bytes.Buffer
	if err := writeJSON(&buf, fixedWords(t, buildStats(t0.Add(2*time.Second), snaps, nil, &first))); err != nil {
		t.Fatal(err)
	}
	golden(t, "stats-watch.golden.json", buf.Bytes())

	var s statsJSON
	if err := json.Unmarshal(buf.Bytes(), &s); err != nil {
		t.Fatal(err)
	}
	// web/eth0: rx 10 -> 30 packets in 2 s, 1000 -> 3000 bytes.
	if r := s.Parents[0].Endpoints[0].Rate; r == nil || r.RxPPS != 10 || r.RxBPS != 8000 || r.TxPPS != 20 {
		t.Errorf("web/eth0 rate %+v, want rx 10 pps 8000 bit/s, tx 20 pps", r)
	}
	if r := s.Parents[0].Endpoints[2].Rate; r != nil {
		t.Errorf("reset endpoint has rate %+v, want none", r)
	}
}

func TestStatsTextGolden(t *testing.T) {
	var buf bytes.Buffer
	s := buildStats(t0, statsFixture(1), nil, nil)
	if err := writeStatsText(&buf, s); err != nil {
		t.Fatal(err)
	}
	for _, r := range tables.DropReasons()[:9] {
		if !strings.Contains(buf.String(), r.Explain()) {
			t.Errorf("no explanation of %s", r)
		}
	}
	buf.Reset()
	if err := writeStatsText(&buf, fixedWords(t, s)); err != nil {
		t.Fatal(err)
	}
	golden(t, "stats.golden.txt", buf.Bytes())
}

// runWatch drives watchStats through n samples with a fake clock and
// ticker, then stops it as Ctrl-C would.
func runWatch(t *testing.T, mode watchMode, n int, read func(i int) ([]loader.ParentSnapshot, error)) string {
	t.Helper()
	var buf bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	tick := make(chan time.Time)
	i := 0
	now := func() time.Time { return t0.Add(time.Duration(i) * time.Second) }
	done := make(chan error)
	go func() {
		done <- watchStats(ctx, &buf, mode, time.Second, func() ([]loader.ParentSnapshot, error) {
			i++
			return read(i)
		}, nil, now, tick)
	}()
	for range n - 1 {
		tick <- time.Time{}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("watch: %v", err)
	}
	if i != n {
		t.Fatalf("%d samples, want %d", i, n)
	}
	return buf.String()
}

func TestStatsWatchPlainLines(t *testing.T) {
	out := runWatch(t, watchPlain, 3, func(i int) ([]loader.ParentSnapshot, error) { return statsFixture(uint64(i)), nil })
	lines := strings.Split(strings.TrimSpace(out), "\n")
	// The first sample is the baseline; then per sample 3 endpoints, 2
	// VLANs, 8 reasons and 7 events that moved (index 0 never does).
	if want := 2 * (3 + 2 + 8 + 7); len(lines) != want {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), want, out)
	}
	if strings.Contains(out, "\x1b[") {
		t.Error("escape sequences in plain output")
	}
	want := "2025-01-02T03:04:07Z parent=ens33 endpoint=web/eth0 network=lan vlan=0 mac=02:00:00:00:00:01 rx_pps=10.0 rx_bps=8000 tx_pps=20.0 tx_bps=16000"
	if lines[0] != want {
		t.Errorf("first line:\n got %s\nwant %s", lines[0], want)
	}
}

func TestStatsWatchJSONLines(t *testing.T) {
	out := runWatch(t, watchJSON, 3, func(i int) ([]loader.ParentSnapshot, error) { return statsFixture(uint64(i)), nil })
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines, want 3", len(lines))
	}
	for i, l := range lines {
		var s statsJSON
		if err := json.Unmarshal([]byte(l), &s); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if hasRate := s.Parents[0].Endpoints[0].Rate != nil; hasRate != (i > 0) {
			t.Errorf("sample %d: rate present %v", i, hasRate)
		}
	}
}

// On a terminal the screen is redrawn in place; a read failure in the
// middle of a watch (the parent detached) is shown and the watch goes on.
func TestStatsWatchTerminal(t *testing.T) {
	out := runWatch(t, watchTerminal, 3, func(i int) ([]loader.ParentSnapshot, error) {
		if i == 2 {
			return nil, loader.ErrNotAttached
		}
		return statsFixture(uint64(i)), nil
	})
	if n := strings.Count(out, "\x1b[H"); n != 3 {
		t.Errorf("%d redraws, want 3", n)
	}
	if !strings.Contains(out, "error: not attached") {
		t.Error("read error not shown")
	}
	last := out[strings.LastIndex(out, "\x1b[H"):]
	// Rates over the 2 s since the last good sample: web/eth0 received
	// 20 frames of 100 bytes.
	for _, want := range []string{"RX PPS", "RX BIT/S", "8.00 kbit/s", "unknown_vlan"} {
		if !strings.Contains(last, want) {
			t.Errorf("last screen lacks %q:\n%s", want, last)
		}
	}
}

func TestStatsWatchFirstReadFails(t *testing.T) {
	err := watchStats(context.Background(), &bytes.Buffer{}, watchPlain, time.Second,
		func() ([]loader.ParentSnapshot, error) { return nil, loader.ErrNotAttached }, nil, time.Now, nil)
	if err == nil {
		t.Fatal("watch of nothing attached started")
	}
}

func TestStatsIntervalArg(t *testing.T) {
	for _, c := range []struct {
		args     []string
		watching bool
		rest     string
		interval time.Duration
	}{
		{[]string{"ens33"}, false, "ens33", time.Second},
		{[]string{"2s"}, false, "2s", time.Second}, // a parent called 2s
		{[]string{"2s"}, true, "", 2 * time.Second},
		{[]string{"ens33", "0.5"}, true, "ens33", 500 * time.Millisecond},
		{[]string{"250ms", "ens33"}, true, "ens33", 250 * time.Millisecond},
		{[]string{"ens33"}, true, "ens33", time.Second},
	} {
		interval := time.Second
		rest := intervalArg(c.args, c.watching, &interval)
		if strings.Join(rest, " ") != c.rest || interval != c.interval {
			t.Errorf("%v watching=%v: %v %v, want %q %v", c.args, c.watching, rest, interval, c.rest, c.interval)
		}
	}
}

func TestStatsSI(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 7: "7", 2.5: "2.50", 999: "999", 1000: "1.00k", 12345: "12.3k", 9.87e9: "9.87G"} {
		if got := si(v, ""); got != want {
			t.Errorf("si(%v) = %q, want %q", v, got, want)
		}
	}
	if got := si(1.5e6, "bit/s"); got != "1.50 Mbit/s" {
		t.Errorf("si bit/s = %q", got)
	}
}

// The command end to end without privileges: a state root that is not on
// a bpf filesystem (as under `ip netns exec`) is named as the problem,
// rather than reported as having no parents, whatever --watch took for
// its interval.
func TestStatsCommandNoState(t *testing.T) {
	root := filepath.Join(t.TempDir(), "none")
	for _, args := range [][]string{{"stats", "-o", "json"}, {"stats", "--watch", "2s", "ens33"}} {
		var out bytes.Buffer
		cmd := newRootCmd()
		cmd.SetOut(&out)
		cmd.SetArgs(append([]string{"--bpffs", root}, args...))
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), root+" is not on a bpf filesystem") {
			t.Errorf("%v: %v %s", args, err, out.String())
		}
	}
}

// A Docker endpoint (by outer veth, in docker-plugin's state) carries its
// container in -o json and in the table; the others carry no such key.
func TestStatsDockerOwner(t *testing.T) {
	snaps := statsFixture(1)
	snaps[0].Endpoints[1].Endpoint.Outer = "xmv8"
	s := buildStats(t0, snaps, map[string]docker.Owner{"xmv8": {Endpoint: "0123456789abcdef", Container: "bbox10"}}, nil)
	var buf bytes.Buffer
	if err := writeJSON(&buf, s); err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Parents []struct{ Endpoints []map[string]any }
	}
	if err := json.Unmarshal(buf.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	eps := raw.Parents[0].Endpoints
	if eps[1]["container"] != "bbox10" || eps[1]["docker_endpoint"] != "0123456789abcdef" {
		t.Errorf("Docker endpoint: %v", eps[1])
	}
	if _, ok := eps[0]["container"]; ok {
		t.Errorf("an endpoint of no container has a container key: %v", eps[0])
	}
	buf.Reset()
	if err := writeStatsText(&buf, s); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(buf.String(), "container bbox10 (docker endpoint 0123456789ab)") {
		t.Errorf("the table does not name the container:\n%s", buf.String())
	}
}
