package tables

import (
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/xmacvlan/xmacvlan/bpf"
)

// Traffic is one endpoint's or VLAN's counters, summed over CPUs. rx is
// towards the endpoint (from the wire or a neighbour), tx from it.
type Traffic struct {
	RxPackets uint64 `json:"rx_packets"`
	RxBytes   uint64 `json:"rx_bytes"`
	TxPackets uint64 `json:"tx_packets"`
	TxBytes   uint64 `json:"tx_bytes"`
}

// Count is a packet and byte count, summed over CPUs.
type Count struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// DropReason mirrors enum drop_reason in bpf/types.h.
type DropReason uint32

// EventKind mirrors enum event in bpf/types.h.
type EventKind uint32

type described struct{ name, help string }

// Indexed by the C enums: the array length makes the compiler reject a
// table longer than the enum; TestEveryReasonDescribed rejects a shorter one.
var dropReasons = [bpf.XmacvlanDropReasonDROP_REASON_MAX]described{
	bpf.XmacvlanDropReasonDROP_RUNT:                 {"runt", "frame shorter than its Ethernet/802.1Q header"},
	bpf.XmacvlanDropReasonDROP_UNKNOWN_VLAN:         {"unknown_vlan", "tagged with a VLAN that has no network on this parent"},
	bpf.XmacvlanDropReasonDROP_STACKED_VLAN:         {"stacked_vlan", "outer tag other than 802.1Q (802.1ad, 0x9100/0x9200/0x9300) or double-tagged frame; never forwarded into a VLAN"},
	bpf.XmacvlanDropReasonDROP_UNKNOWN_DST:          {"unknown_dst", "unicast to a MAC no endpoint has, on a tagged VLAN"},
	bpf.XmacvlanDropReasonDROP_SPOOFED_SRC:          {"spoofed_src", "endpoint sent a frame whose source MAC is not its own"},
	bpf.XmacvlanDropReasonDROP_TAGGED_FROM_ENDPOINT: {"tagged_from_endpoint", "endpoint sent a tagged frame, any tag protocol (VLAN hopping)"},
	bpf.XmacvlanDropReasonDROP_PRIVATE_MODE:         {"private_mode", "endpoint to endpoint inside a private network"},
	bpf.XmacvlanDropReasonDROP_NOT_ENDPOINT:         {"not_endpoint", "frame from an interface that is not (yet, or any more) an endpoint, e.g. sent while its endpoint was being built"},
	bpf.XmacvlanDropReasonDROP_HELPER_FAILED:        {"helper_failed", "a VLAN tag push/pop or head adjustment failed in the kernel"},
	bpf.XmacvlanDropReasonDROP_LOOPED:               {"looped", "a local endpoint's broadcast came back from the wire (reflecting switch); only vepa networks take those"},
	bpf.XmacvlanDropReasonDROP_TOO_BIG:              {"too_big", "endpoint sent a frame longer than the parent's MTU allows"},
	bpf.XmacvlanDropReasonDROP_NO_PARENT:            {"no_parent", "endpoint sent a frame for the wire and the parent interface no longer exists"},
	bpf.XmacvlanDropReasonDROP_STORM:                {"storm", "broadcast, multicast or untagged unknown unicast over the sending endpoint's or the VLAN's --storm-limit (storm control)"},
}

var events = [bpf.XmacvlanEventEV_MAX]described{
	bpf.XmacvlanEventEV_HOST_PASS:           {"host_pass", "frames from the wire left to the host stack"},
	bpf.XmacvlanEventEV_FLOOD_FRAMES:        {"flood_frames", "broadcast/multicast frames flooded inside their VLAN"},
	bpf.XmacvlanEventEV_FLOOD_COPIES:        {"flood_copies", "copies made by flooding"},
	bpf.XmacvlanEventEV_FLOOD_TRUNCATED:     {"flood_truncated", "floods cut short at the per-VLAN member bound"},
	bpf.XmacvlanEventEV_LOCAL_SWITCH:        {"local_switch", "endpoint to endpoint frames switched on this host"},
	bpf.XmacvlanEventEV_HAIRPIN_TO_HOST:     {"hairpin_to_host", "endpoint to host frames (hairpin)"},
	bpf.XmacvlanEventEV_HAIRPIN_TO_ENDPOINT: {"hairpin_to_endpoint", "host to endpoint frames (hairpin)"},
	bpf.XmacvlanEventEV_XDP_REDIRECT:        {"xdp_redirect", "frames delivered by native XDP redirect"},
}

// Events the tests and tools name directly.
const (
	EvHostPass          = EventKind(bpf.XmacvlanEventEV_HOST_PASS)
	EvFloodFrames       = EventKind(bpf.XmacvlanEventEV_FLOOD_FRAMES)
	EvFloodCopies       = EventKind(bpf.XmacvlanEventEV_FLOOD_COPIES)
	EvLocalSwitch       = EventKind(bpf.XmacvlanEventEV_LOCAL_SWITCH)
	EvHairpinToHost     = EventKind(bpf.XmacvlanEventEV_HAIRPIN_TO_HOST)
	EvHairpinToEndpoint = EventKind(bpf.XmacvlanEventEV_HAIRPIN_TO_ENDPOINT)
	EvXDPRedirect       = EventKind(bpf.XmacvlanEventEV_XDP_REDIRECT)
)

// Drop reasons the tests and tools name directly.
const (
	DropRunt               = DropReason(bpf.XmacvlanDropReasonDROP_RUNT)
	DropUnknownVLAN        = DropReason(bpf.XmacvlanDropReasonDROP_UNKNOWN_VLAN)
	DropStackedVLAN        = DropReason(bpf.XmacvlanDropReasonDROP_STACKED_VLAN)
	DropUnknownDst         = DropReason(bpf.XmacvlanDropReasonDROP_UNKNOWN_DST)
	DropSpoofedSrc         = DropReason(bpf.XmacvlanDropReasonDROP_SPOOFED_SRC)
	DropTaggedFromEndpoint = DropReason(bpf.XmacvlanDropReasonDROP_TAGGED_FROM_ENDPOINT)
	DropPrivateMode        = DropReason(bpf.XmacvlanDropReasonDROP_PRIVATE_MODE)
	DropLooped             = DropReason(bpf.XmacvlanDropReasonDROP_LOOPED)
	DropTooBig             = DropReason(bpf.XmacvlanDropReasonDROP_TOO_BIG)
	DropNoParent           = DropReason(bpf.XmacvlanDropReasonDROP_NO_PARENT)
	DropStorm              = DropReason(bpf.XmacvlanDropReasonDROP_STORM)
)

// DropReasons lists every reason, in enum order.
func DropReasons() []DropReason {
	out := make([]DropReason, len(dropReasons))
	for i := range out {
		out[i] = DropReason(i)
	}
	return out
}

// EventKinds lists every event, in enum order.
func EventKinds() []EventKind {
	out := make([]EventKind, len(events))
	for i := range out {
		out[i] = EventKind(i)
	}
	return out
}

func (r DropReason) String() string {
	if int(r) < len(dropReasons) {
		return dropReasons[r].name
	}
	return fmt.Sprintf("reason_%d", uint32(r))
}

// Explain says in words why a frame was dropped.
func (r DropReason) Explain() string {
	if int(r) < len(dropReasons) {
		return dropReasons[r].help
	}
	return "unknown reason"
}

func (e EventKind) String() string {
	if int(e) < len(events) {
		return events[e].name
	}
	return fmt.Sprintf("event_%d", uint32(e))
}

// Explain says in words what an event counts.
func (e EventKind) Explain() string {
	if int(e) < len(events) {
		return events[e].help
	}
	return "unknown event"
}

// EndpointTraffic reads the counters of the endpoint with counter slot id.
func (t *Tables) EndpointTraffic(id int) (Traffic, error) {
	return readTraffic(t.m.XmvEpStats, uint32(id))
}

// VLANTraffic reads a VLAN's counters.
func (t *Tables) VLANTraffic(vlan uint16) (Traffic, error) {
	return readTraffic(t.m.XmvVlanStats, uint32(vlan))
}

// Drops reads the drop counters, indexed by DropReason.
func (t *Tables) Drops() ([]Count, error) {
	out := make([]Count, len(dropReasons))
	for i := range out {
		var perCPU []bpf.XmacvlanCount
		if err := t.m.XmvDrops.Lookup(uint32(i), &perCPU); err != nil {
			return nil, fmt.Errorf("read drop counters: %w", err)
		}
		out[i] = sumCounts(perCPU)
	}
	return out, nil
}

// Events reads the event counters, indexed by EventKind.
func (t *Tables) Events() ([]Count, error) {
	out := make([]Count, len(events))
	for i := range out {
		var perCPU []bpf.XmacvlanCount
		if err := t.m.XmvEvents.Lookup(uint32(i), &perCPU); err != nil {
			return nil, fmt.Errorf("read event counters: %w", err)
		}
		out[i] = sumCounts(perCPU)
	}
	return out, nil
}

func readTraffic(m *ebpf.Map, key uint32) (Traffic, error) {
	var perCPU []bpf.XmacvlanTraffic
	if err := m.Lookup(key, &perCPU); err != nil {
		return Traffic{}, fmt.Errorf("read counters %d: %w", key, err)
	}
	var sum Traffic
	for _, c := range perCPU {
		sum.RxPackets += c.RxPackets
		sum.RxBytes += c.RxBytes
		sum.TxPackets += c.TxPackets
		sum.TxBytes += c.TxBytes
	}
	return sum, nil
}

func sumCounts(perCPU []bpf.XmacvlanCount) Count {
	var sum Count
	for _, c := range perCPU {
		sum.Packets += c.Packets
		sum.Bytes += c.Bytes
	}
	return sum
}

// StormVLANKey is the storm bucket of vlan (bpf/storm.h STORM_VLAN_KEY);
// endpoints' buckets are keyed by their ID.
func StormVLANKey(vlan uint16) uint32 { return MaxEndpoints + uint32(vlan) }

// resetStorm empties storm bucket key, which then starts full: a new
// endpoint or network never inherits an old one's bucket.
func (t *Tables) resetStorm(key uint32) error {
	if err := t.m.XmvStorm.Update(key, bpf.XmacvlanStormBucket{}, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("reset storm bucket %d: %w", key, err)
	}
	return nil
}

// zeroStats resets an endpoint's counter slot before the slot is reused.
func (t *Tables) zeroStats(id int) error {
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return err
	}
	if err := t.m.XmvEpStats.Update(uint32(id), make([]bpf.XmacvlanTraffic, cpus), 0); err != nil {
		return fmt.Errorf("reset counters of endpoint %d: %w", id, err)
	}
	return nil
}
