// Package metrics exports the datapath's counters to Prometheus.
//
// The Collector reads the pinned per-CPU tables when Prometheus scrapes:
// there is no polling loop and no cache. Every scrape opens the pins afresh
// under the state root's shared lock (loader.Snapshots): it never waits for
// an endpoint change, only for attach and detach, and endpoints, networks
// and whole parents may come and go between scrapes. A scrape that cannot read everything reports no
// counter at all, only xmacvlan_scrape_errors_total: Prometheus then keeps
// the last good values instead of storing a partial set.
package metrics

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// Namespace prefixes every metric name.
const Namespace = "xmacvlan"

// Source reads the counters of every attached parent; all or nothing.
type Source func() ([]loader.ParentSnapshot, error)

// PinnedSource reads the parents pinned under root (--bpffs).
func PinnedSource(root string) Source {
	return func() ([]loader.ParentSnapshot, error) { return loader.Snapshots(root, "") }
}

// Owner is who an endpoint belongs to: a Docker endpoint ID and its
// container's name ("" while unknown).
type Owner struct{ DockerEndpoint, Container string }

// Owners maps outer veth names to their owners (docker-plugin's state, in
// `xmacvlan metrics`); read at every scrape.
type Owners func() (map[string]Owner, error)

// Collector is a prometheus.Collector over the datapath's counters.
type Collector struct {
	source Source
	owners Owners // nil: no Docker labels
	logf   func(format string, args ...any)

	scrapeErrors prometheus.Counter

	// Per endpoint: {parent, vlan, network, endpoint}.
	rxPackets, rxBytes, txPackets, txBytes *prometheus.Desc
	rxDropped                              *prometheus.Desc
	// Per endpoint, 1: those and {mac, outer, docker_endpoint, container}.
	endpointInfo *prometheus.Desc
	// Per VLAN: {parent, vlan, network}.
	vlanRxPackets, vlanRxBytes, vlanTxPackets, vlanTxBytes *prometheus.Desc
	networkEndpoints                                       *prometheus.Desc
	// Per parent: {parent, reason} and {parent, event}.
	dropPackets, dropBytes   *prometheus.Desc
	eventPackets, eventBytes *prometheus.Desc
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector over source. logf, if not nil, hears
// about every failed scrape (Prometheus only sees the error counter).
// owners, if not nil, labels xmacvlan_endpoint_info with each Docker
// endpoint's ID and container.
func NewCollector(source Source, owners Owners, logf func(format string, args ...any)) *Collector {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	endpoint := []string{"parent", "vlan", "network", "endpoint"}
	vlan := []string{"parent", "vlan", "network"}
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
	}
	return &Collector{
		source: source,
		owners: owners,
		logf:   logf,
		scrapeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: Namespace,
			Name:      "scrape_errors_total",
			Help:      "Scrapes that could not read the pinned tables and so reported no counter.",
		}),
		rxPackets: desc("rx_packets_total", "Frames delivered to the endpoint (from the wire, a neighbour or the host).", endpoint...),
		rxBytes:   desc("rx_bytes_total", "Bytes delivered to the endpoint, without any VLAN tag.", endpoint...),
		txPackets: desc("tx_packets_total", "Frames the endpoint sent that the datapath accepted.", endpoint...),
		txBytes:   desc("tx_bytes_total", "Bytes the endpoint sent that the datapath accepted, before tagging.", endpoint...),
		rxDropped: desc("rx_dropped_total", "Frames towards the endpoint its veth dropped because the endpoint's ring was full: flood copies and host traffic (the outer veth's tx_dropped).", endpoint...),
		endpointInfo: desc("endpoint_info", "Each endpoint, always 1: its MAC, outer veth and, for a Docker endpoint, Docker's endpoint ID and container name. Join on parent, vlan, network, endpoint.",
			append(endpoint, "mac", "outer", "docker_endpoint", "container")...),

		vlanRxPackets: desc("vlan_rx_packets_total", "Frames into the VLAN's endpoints; a flooded frame counts once.", vlan...),
		vlanRxBytes:   desc("vlan_rx_bytes_total", "Bytes into the VLAN's endpoints; a flooded frame counts once.", vlan...),
		vlanTxPackets: desc("vlan_tx_packets_total", "Frames the VLAN's endpoints sent.", vlan...),
		vlanTxBytes:   desc("vlan_tx_bytes_total", "Bytes the VLAN's endpoints sent.", vlan...),
		networkEndpoints: desc("network_endpoints", "Endpoints on the network now.",
			append(vlan, "mode")...),

		dropPackets:  desc("drops_total", "Frames the datapath dropped, by reason (`xmacvlan stats` explains each).", "parent", "reason"),
		dropBytes:    desc("drop_bytes_total", "Bytes of the frames the datapath dropped, by reason.", "parent", "reason"),
		eventPackets: desc("events_total", "Datapath events that are not drops (floods, hairpin, local switching, XDP redirects, host pass), in frames; flood_copies counts copies.", "parent", "event"),
		eventBytes:   desc("event_bytes_total", "Bytes of the datapath events, as events_total.", "parent", "event"),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		c.rxPackets, c.rxBytes, c.txPackets, c.txBytes, c.rxDropped, c.endpointInfo,
		c.vlanRxPackets, c.vlanRxBytes, c.vlanTxPackets, c.vlanTxBytes, c.networkEndpoints,
		c.dropPackets, c.dropBytes, c.eventPackets, c.eventBytes,
	} {
		ch <- d
	}
	c.scrapeErrors.Describe(ch)
}

// Collect implements prometheus.Collector. It is safe to call
// concurrently: each call reads on its own and the loader's lock orders
// the reads.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	// Last, so that it counts this scrape's error.
	defer c.scrapeErrors.Collect(ch)
	snaps, err := c.source()
	var out []prometheus.Metric
	if err == nil {
		out, err = c.metrics(snaps, c.readOwners())
	}
	if err != nil {
		c.scrapeErrors.Inc()
		c.logf("scrape: %v", err)
		return
	}
	for _, m := range out {
		ch <- m
	}
}

// readOwners reads the Docker owners. Without them (no Docker, or its
// state unreadable: logged) the info metric only lacks the Docker labels;
// the counters do not depend on them.
func (c *Collector) readOwners() map[string]Owner {
	if c.owners == nil {
		return nil
	}
	owners, err := c.owners()
	if err != nil {
		c.logf("docker owners: %v", err)
		return nil
	}
	return owners
}

// metrics turns the snapshots into const metrics, all of them or, on an
// error, none.
func (c *Collector) metrics(snaps []loader.ParentSnapshot, owners map[string]Owner) ([]prometheus.Metric, error) {
	var b builder
	for _, s := range snaps {
		names := map[uint16]string{}
		for _, n := range s.Networks {
			names[n.VLAN] = n.Name
			vlan := strconv.Itoa(int(n.VLAN))
			b.add(c.networkEndpoints, prometheus.GaugeValue, uint64(n.Members), s.Parent, vlan, n.Name, n.Mode.String())
		}
		for _, e := range s.Endpoints {
			l := []string{s.Parent, strconv.Itoa(int(e.Endpoint.VLAN)), names[e.Endpoint.VLAN], EndpointLabel(e.Endpoint)}
			b.add(c.rxPackets, prometheus.CounterValue, e.Traffic.RxPackets, l...)
			b.add(c.rxBytes, prometheus.CounterValue, e.Traffic.RxBytes, l...)
			b.add(c.txPackets, prometheus.CounterValue, e.Traffic.TxPackets, l...)
			b.add(c.txBytes, prometheus.CounterValue, e.Traffic.TxBytes, l...)
			b.add(c.rxDropped, prometheus.CounterValue, s.RxDropped[e.Endpoint.Ifindex], l...)
			o := owners[e.Endpoint.Outer]
			b.add(c.endpointInfo, prometheus.GaugeValue, 1, slices.Concat(l, []string{e.Endpoint.MAC.String(), e.Endpoint.Outer, o.DockerEndpoint, o.Container})...)
		}
		for _, v := range s.VLANs {
			l := []string{s.Parent, strconv.Itoa(int(v.VLAN)), names[v.VLAN]}
			b.add(c.vlanRxPackets, prometheus.CounterValue, v.Traffic.RxPackets, l...)
			b.add(c.vlanRxBytes, prometheus.CounterValue, v.Traffic.RxBytes, l...)
			b.add(c.vlanTxPackets, prometheus.CounterValue, v.Traffic.TxPackets, l...)
			b.add(c.vlanTxBytes, prometheus.CounterValue, v.Traffic.TxBytes, l...)
		}
		// Every reason and event the datapath has, zero or not, so that
		// rate() works from the first frame on.
		for i, d := range s.Drops {
			reason := tables.DropReason(i).String()
			b.add(c.dropPackets, prometheus.CounterValue, d.Packets, s.Parent, reason)
			b.add(c.dropBytes, prometheus.CounterValue, d.Bytes, s.Parent, reason)
		}
		for i, e := range s.Events {
			event := tables.EventKind(i).String()
			b.add(c.eventPackets, prometheus.CounterValue, e.Packets, s.Parent, event)
			b.add(c.eventBytes, prometheus.CounterValue, e.Bytes, s.Parent, event)
		}
	}
	return b.done()
}

// EndpointLabel names an endpoint by where it lives, "netns/ifname": what
// the user chose, stable across restarts of the exporter, unlike the
// ifindex or the counter slot. An endpoint registered without that record
// is named by its outer ifindex.
func EndpointLabel(ep tables.Endpoint) string {
	if ep.Netns == "" && ep.Ifname == "" {
		return fmt.Sprintf("ifindex:%d", ep.Ifindex)
	}
	return ep.Netns + "/" + ep.Ifname
}

// builder collects samples keyed by metric and labels. Two samples with
// the same labels (which the registry would reject, failing the whole
// scrape) are added up instead, as cilium's metricsmap does.
type builder struct {
	order []sampleKey
	vals  map[sampleKey]*sample
}

type sampleKey struct {
	desc   *prometheus.Desc
	labels string
}

type sample struct {
	kind   prometheus.ValueType
	value  uint64
	labels []string
}

func (b *builder) add(d *prometheus.Desc, kind prometheus.ValueType, v uint64, labels ...string) {
	if b.vals == nil {
		b.vals = map[sampleKey]*sample{}
	}
	k := sampleKey{d, strings.Join(labels, "\x00")}
	if s, ok := b.vals[k]; ok {
		s.value += v
		return
	}
	b.vals[k] = &sample{kind: kind, value: v, labels: labels}
	b.order = append(b.order, k)
}

func (b *builder) done() ([]prometheus.Metric, error) {
	out := make([]prometheus.Metric, 0, len(b.order))
	for _, k := range b.order {
		s := b.vals[k]
		m, err := prometheus.NewConstMetric(k.desc, s.kind, float64(s.value), s.labels...)
		if err != nil {
			return nil, err
		}
		out = append(out, m)
	}
	return out, nil
}
