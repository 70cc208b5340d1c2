package test

import (
	"fmt"
	"testing"
	"time"

	"github.com/xmacvlan/xmacvlan/internal/iperf3"
	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// TCP throughput over the hairpin path next to the same container's
// traffic with the wire, in one topology and one run (`make bench` runs
// it): the host (10.0.0.10 on its parent) and a container (10.0.0.2) on the
// untagged segment with hairpin on; the wire is the switch namespace
// (10.0.0.1 on its bridge). One iperf3 stream per direction and iteration,
// reported as Gbit/s received (iperf3's receiver sum).
func BenchmarkHairpinTCP(b *testing.B) {
	l := newLab(b)
	h := l.host()
	addr(b, h.ns, h.parent, "10.0.0.10/24")
	on := true
	if _, err := h.tryAttach(loader.AttachOptions{Hairpin: &on}); err != nil {
		b.Fatal(err)
	}
	h.network("lan", 0, tables.Bridge)
	c := h.container("lan", "", "10.0.0.2/24", false)
	paths := []struct {
		name           string
		client, server *testutil.Netns
		serverIP       string
	}{
		{"container->host", c.ns, h.ns, "10.0.0.10"},
		{"host->container", h.ns, c.ns, "10.0.0.2"},
		{"container->wire", c.ns, l.sw, "10.0.0.1"},
		{"wire->container", l.sw, c.ns, "10.0.0.2"},
	}
	for i, p := range paths {
		b.Run(p.name, func(b *testing.B) {
			port := fmt.Sprint(5400 + i)
			srv, err := startCmd(p.server, "iperf3", "-s", "-p", port)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { srv.Process.Kill(); srv.Wait() }()
			var sum float64
			n := 0
			for b.Loop() {
				var gbps float64
				err := eventually(3*time.Second, func() (err error) {
					gbps, err = iperf3Gbps(p.client, p.serverIP, port)
					return err
				})
				if err != nil {
					b.Fatal(err)
				}
				sum += gbps
				n++
			}
			b.ReportMetric(sum/float64(n), "Gbit/s")
		})
	}
}

// iperf3 runs one 1-second stream to ip:port and returns the Gbit/s its
// receiver got.
func iperf3Gbps(client *testutil.Netns, ip, port string) (float64, error) {
	out, err := run(client, "iperf3", "-c", ip, "-p", port, "-t", "1", "-J")
	if err != nil {
		return 0, err
	}
	bps, err := iperf3.Received([]byte(out))
	return bps / 1e9, err
}
