package test

import (
	"slices"
	"testing"
	"time"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
)

// BenchmarkCNIAddDel is the latency of a CNI ADD and of a DEL as a runtime
// sees it (the plugin binary executed with the CNI environment, host-local
// IPAM included), for xmacvlan-cni on VLAN 10 and the reference macvlan
// plugin (bridge mode, untagged: this kernel has no 8021q) on the same
// parent, in one run. Each iteration is one ADD and one DEL of eth0 in the
// same namespace; run with -benchtime 100x for 100 calls of each.
// Reported: add-median-ms, add-p99-ms, del-median-ms, del-p99-ms.
func BenchmarkCNIAddDel(b *testing.B) {
	l := newLab(b)
	h := newCNIHost(b, l)
	xmv := h.xmvPlugin(10, "172.16.10.0/24", "172.16.10.2", "172.16.10.200", "")
	xmv["name"], xmv["cniVersion"] = testutil.Name("bx"), "1.1.0"
	ref := plugin{"type": "macvlan", "master": h.parent, "mode": "bridge", "name": testutil.Name("bm"), "cniVersion": "1.1.0",
		"ipam": map[string]any{"type": "host-local", "dataDir": h.ipamDir, "ranges": [][]any{{map[string]any{"subnet": "172.16.20.0/24"}}}}}
	c := testutil.NewNetns(b, "xk")
	for _, p := range []struct {
		name string
		conf plugin
	}{{"xmacvlan-cni", xmv}, {"macvlan", ref}} {
		b.Run(p.name, func(b *testing.B) {
			var adds, dels []time.Duration
			bin := "xmacvlan-cni"
			if p.name == "macvlan" {
				bin = cniToolsDir + "/macvlan"
			}
			for i := 0; i < b.N; i++ {
				start := time.Now()
				if _, err := h.execPlugin(bin, "ADD", "bench", c.Path(), "eth0", "", p.conf); err != nil {
					b.Fatal(err)
				}
				adds = append(adds, time.Since(start))
				start = time.Now()
				if _, err := h.execPlugin(bin, "DEL", "bench", c.Path(), "eth0", "", p.conf); err != nil {
					b.Fatal(err)
				}
				dels = append(dels, time.Since(start))
			}
			b.ReportMetric(percentileMS(adds, 50), "add-median-ms")
			b.ReportMetric(percentileMS(adds, 99), "add-p99-ms")
			b.ReportMetric(percentileMS(dels, 50), "del-median-ms")
			b.ReportMetric(percentileMS(dels, 99), "del-p99-ms")
		})
	}
}

// percentileMS is the p-th percentile (nearest rank) of d, in milliseconds.
func percentileMS(d []time.Duration, p int) float64 {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	if i < 1 {
		i = 1
	}
	return float64(s[i-1].Microseconds()) / 1000
}
