package tables

import "fmt"

// Snapshot is every counter of one parent with the networks and endpoints
// they belong to, read in one pass. It only reads, and it may run while an
// endpoint comes or goes (readers do not wait for writers): each network's
// Members is then the number of endpoints this read listed on it, so that
// one snapshot always agrees with itself.
type Snapshot struct {
	Networks  []Network          // ordered by VLAN
	Endpoints []EndpointCounters // ordered by VLAN, then ID
	VLANs     []VLANCounters     // one per network, ordered by VLAN
	Drops     []Count            // indexed by DropReason
	Events    []Count            // indexed by EventKind
}

// EndpointCounters is an endpoint and its traffic.
type EndpointCounters struct {
	Endpoint Endpoint
	Traffic  Traffic
}

// VLANCounters is a VLAN's traffic. VLAN counters are not the sum of their
// endpoints': a flooded frame counts once here and once per copy there, and
// deleted endpoints still count here (VLANTraffic).
type VLANCounters struct {
	VLAN    uint16
	Traffic Traffic
}

// Snapshot reads every counter. Any failure fails the whole read: a caller
// never sees part of the counters.
func (t *Tables) Snapshot() (Snapshot, error) {
	var s Snapshot
	var err error
	if s.Networks, err = t.Networks(); err != nil {
		return Snapshot{}, err
	}
	eps, err := t.Endpoints()
	if err != nil {
		return Snapshot{}, err
	}
	onVLAN := map[uint16]int{}
	for _, ep := range eps {
		onVLAN[ep.VLAN]++
	}
	for i := range s.Networks {
		s.Networks[i].Members = onVLAN[s.Networks[i].VLAN]
	}
	s.Endpoints = make([]EndpointCounters, 0, len(eps))
	for _, ep := range eps {
		tr, err := t.EndpointTraffic(ep.ID)
		if err != nil {
			return Snapshot{}, fmt.Errorf("endpoint %d: %w", ep.Ifindex, err)
		}
		s.Endpoints = append(s.Endpoints, EndpointCounters{Endpoint: ep, Traffic: tr})
	}
	// Only VLANs with a network: the others never count traffic (their
	// frames are drops), and the table has 4095 slots to read.
	vlans := make([]uint16, 0, len(s.Networks))
	for _, n := range s.Networks {
		vlans = append(vlans, n.VLAN)
	}
	tot, err := t.VLANTraffic(vlans, eps)
	if err != nil {
		return Snapshot{}, err
	}
	s.VLANs = make([]VLANCounters, 0, len(s.Networks))
	for _, vlan := range vlans {
		s.VLANs = append(s.VLANs, VLANCounters{VLAN: vlan, Traffic: tot[vlan]})
	}
	if s.Drops, err = t.Drops(); err != nil {
		return Snapshot{}, err
	}
	if s.Events, err = t.Events(); err != nil {
		return Snapshot{}, err
	}
	return s, nil
}
