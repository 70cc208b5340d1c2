package lifecycle

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/loader"
)

// BenchmarkEndpointScale adds XMACVLAN_SCALE endpoints (default 100) to
// one network on one veth parent, spread over 16 container namespaces
// (eth0, eth1, ... in each), deletes them one by one, adds them again and
// detaches the parent with --force. It reports the median and p99 of one
// add and one del in ms, and the detach of all in ms. Run with
// -benchtime=1x.
func BenchmarkEndpointScale(b *testing.B) {
	testutil.Privileged(b)
	n := 100
	if s := os.Getenv("XMACVLAN_SCALE"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			b.Fatalf("XMACVLAN_SCALE=%q: want a positive number", s)
		}
	}
	host := testutil.NewNetns(b, "xb")
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ens33"}, PeerName: "wire"}
	if err := host.NL.LinkAdd(v); err != nil {
		b.Fatal(err)
	}
	for _, name := range []string{"ens33", "wire"} {
		l, _ := host.NL.LinkByName(name)
		host.NL.LinkSetUp(l)
	}
	var nss []*testutil.Netns
	for range min(n, 16) {
		nss = append(nss, testutil.NewNetns(b, "xb"))
	}
	root := filepath.Join("/sys/fs/bpf", testutil.Name("xb"))
	r := &Root{Dir: root}
	b.Cleanup(func() {
		host.Do(func() error { return r.DetachParent("ens33", true) })
		os.RemoveAll(root)
	})
	spec := func(i int) Spec {
		return Spec{Netns: nss[i%len(nss)].Path(), Name: fmt.Sprintf("eth%d", i/len(nss))}
	}
	var adds, dels []time.Duration
	var detach time.Duration
	err := host.Do(func() error {
		for range b.N {
			if _, err := loader.Attach(loader.AttachOptions{Root: root, Parent: "ens33"}); err != nil {
				return err
			}
			if _, err := r.CreateNetwork("ens33", NetworkSpec{Name: "lan"}); err != nil {
				return err
			}
			for i := range n {
				start := time.Now()
				if _, err := r.AddEndpoint("lan", spec(i)); err != nil {
					return fmt.Errorf("add %d: %w", i, err)
				}
				adds = append(adds, time.Since(start))
			}
			for i := range n {
				s := spec(i)
				start := time.Now()
				if found, err := r.DeleteEndpoint("lan", Selector{Netns: s.Netns, Name: s.Name}); err != nil || !found {
					return fmt.Errorf("del %d: found %v, %v", i, found, err)
				}
				dels = append(dels, time.Since(start))
			}
			for i := range n {
				if _, err := r.AddEndpoint("lan", spec(i)); err != nil {
					return fmt.Errorf("add %d again: %w", i, err)
				}
			}
			start := time.Now()
			if err := r.DetachParent("ens33", true); err != nil {
				return err
			}
			detach += time.Since(start)
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(quantile(adds, 0.5), "add-median-ms")
	b.ReportMetric(quantile(adds, 0.99), "add-p99-ms")
	b.ReportMetric(quantile(dels, 0.5), "del-median-ms")
	b.ReportMetric(quantile(dels, 0.99), "del-p99-ms")
	b.ReportMetric(float64(detach.Milliseconds())/float64(b.N), "detach-all-ms")
}

// quantile returns the q-quantile of ds in ms (nearest rank).
func quantile(ds []time.Duration, q float64) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	i = max(0, min(i, len(s)-1))
	return float64(s[i].Microseconds()) / 1000
}
