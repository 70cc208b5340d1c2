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
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// BenchmarkEndpointScale adds XMACVLAN_SCALE endpoints (default 100) on
// one veth parent, 1024 per network (the flood fan-out bound of a VLAN:
// untagged, then VLAN 1, 2, ...), spread over 16 container namespaces
// (eth0, eth1, ... in each), deletes them one by one, adds them again and
// detaches the parent with --force. It reports the median and p99 of one
// add and one del in ms, the median add of the first and of the last
// tenth (the growth), the CPU time per add in user space (our Go code)
// and in the kernel on our behalf (the rest of the wall time is waiting,
// mostly for rtnl and RCU grace periods), and the detach of all in ms.
// Run with -benchtime=1x.
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
	network := func(i int) string { return fmt.Sprintf("n%d", i/tables.MaxVLANMembers) }
	var adds, dels []time.Duration
	var detach, addUser, addSys time.Duration
	err := host.Do(func() error {
		for range b.N {
			if _, err := loader.Attach(loader.AttachOptions{Root: root, Parent: "ens33"}); err != nil {
				return err
			}
			for i := 0; i < n; i += tables.MaxVLANMembers {
				vlan := uint16(i / tables.MaxVLANMembers)
				if _, err := r.CreateNetwork("ens33", NetworkSpec{Name: network(i), VLAN: vlan}); err != nil {
					return err
				}
			}
			user, sys := cpuTimes()
			for i := range n {
				start := time.Now()
				if _, err := r.AddEndpoint(network(i), spec(i)); err != nil {
					return fmt.Errorf("add %d: %w", i, err)
				}
				adds = append(adds, time.Since(start))
			}
			u, s := cpuTimes()
			addUser, addSys = addUser+u-user, addSys+s-sys
			for i := range n {
				s := spec(i)
				start := time.Now()
				if found, err := r.DeleteEndpoint(network(i), Selector{Netns: s.Netns, Name: s.Name}); err != nil || !found {
					return fmt.Errorf("del %d: found %v, %v", i, found, err)
				}
				dels = append(dels, time.Since(start))
			}
			for i := range n {
				if _, err := r.AddEndpoint(network(i), spec(i)); err != nil {
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
	tenth := max(len(adds)/10, 1)
	b.ReportMetric(quantile(adds[:tenth], 0.5), "add-first10%-median-ms")
	b.ReportMetric(quantile(adds[len(adds)-tenth:], 0.5), "add-last10%-median-ms")
	b.ReportMetric(float64(addUser.Microseconds())/1000/float64(len(adds)), "add-user-cpu-ms")
	b.ReportMetric(float64(addSys.Microseconds())/1000/float64(len(adds)), "add-sys-cpu-ms")
	b.ReportMetric(quantile(dels, 0.5), "del-median-ms")
	b.ReportMetric(quantile(dels, 0.99), "del-p99-ms")
	b.ReportMetric(float64(detach.Milliseconds())/float64(b.N), "detach-all-ms")
}

// cpuTimes is the CPU time this process spent in user space and in the
// kernel so far.
func cpuTimes() (user, sys time.Duration) {
	var ru unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

// quantile returns the q-quantile of ds in ms (nearest rank).
func quantile(ds []time.Duration, q float64) float64 {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	i = max(0, min(i, len(s)-1))
	return float64(s[i].Microseconds()) / 1000
}
