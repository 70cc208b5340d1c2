package bpf_test

import (
	"encoding/binary"
	"net"
	"slices"

	"github.com/xmacvlan/xmacvlan/tables"
)

// A pure-Go reference model of the receive decision (classify_rx and
// parent_rx in xmacvlan.c), written from the README's datapath description rather than from the C.

const (
	xdpAborted  = 0
	xdpDrop     = 1
	xdpPass     = 2
	xdpRedirect = 4

	etherTypeVLAN  = 0x8100
	etherTypeQinQ  = 0x88a8
	etherTypeQinQ1 = 0x9100 // pre-standard QinQ tags
	etherTypeQinQ2 = 0x9200
	etherTypeQinQ3 = 0x9300
)

// tagTypes is every tag protocol: each one is a tag, whatever it carries.
var tagTypes = []uint16{etherTypeVLAN, etherTypeQinQ, etherTypeQinQ1, etherTypeQinQ2, etherTypeQinQ3}

type verdict uint8

const (
	verdictHost    verdict = 1
	verdictFlood   verdict = 2
	verdictDeliver verdict = 3
)

// rxOutcome is what the XDP program should do with one frame.
type rxOutcome struct {
	action   uint32            // XDP_* return code
	reason   tables.DropReason // for xdpDrop
	verdict  verdict           // for xdpPass: what the metadata tells TC
	vlan     uint16            // for xdpPass
	endpoint *tables.Endpoint  // for xdpPass with verdictDeliver and xdpRedirect
	out      []byte            // frame after the program (xdpPass, xdpRedirect)
}

type rxModel struct {
	parentMTU  int  // the parent's MTU: frames to the wire up to it plus the Ethernet header
	parentGone bool // the parent interface no longer exists
	networks   map[uint16]bool
	modes      map[uint16]tables.Mode
	endpoints  map[uint16]map[string]tables.Endpoint // vlan -> MAC -> endpoint
}

func newRxModel(networks []tables.Network, eps []tables.Endpoint) rxModel {
	m := rxModel{networks: map[uint16]bool{}, modes: map[uint16]tables.Mode{}, endpoints: map[uint16]map[string]tables.Endpoint{}}
	for _, n := range networks {
		m.networks[n.VLAN] = true
		m.modes[n.VLAN] = n.Mode
		m.endpoints[n.VLAN] = map[string]tables.Endpoint{}
	}
	for _, ep := range eps {
		m.endpoints[ep.VLAN][ep.MAC.String()] = ep
	}
	return m
}

func isVLANType(t uint16) bool { return slices.Contains(tagTypes, t) }

func (m rxModel) rx(frame []byte) rxOutcome {
	drop := func(r tables.DropReason) rxOutcome { return rxOutcome{action: xdpDrop, reason: r} }
	const runt, unknownVLAN, stacked, unknownDst = 0, 1, 2, 3

	if len(frame) < 14 {
		return drop(runt)
	}
	dst := net.HardwareAddr(frame[0:6])
	outer := binary.BigEndian.Uint16(frame[12:14])
	var vlan uint16
	tagged := isVLANType(outer)
	if tagged {
		if len(frame) < 18 {
			return drop(runt)
		}
		vlan = binary.BigEndian.Uint16(frame[14:16]) & 0x0fff
		inner := binary.BigEndian.Uint16(frame[16:18])
		// Only a single 802.1Q tag is a VLAN of ours.
		if outer != etherTypeVLAN || isVLANType(inner) {
			return drop(stacked)
		}
	}
	if !m.networks[vlan] {
		if vlan != 0 {
			return drop(unknownVLAN)
		}
		return rxOutcome{action: xdpPass, verdict: verdictHost, out: frame}
	}
	if dst[0]&1 != 0 {
		return rxOutcome{action: xdpPass, verdict: verdictFlood, vlan: vlan, out: frame}
	}
	ep, ok := m.endpoints[vlan][dst.String()]
	switch {
	case !ok && vlan != 0:
		return drop(unknownDst)
	case !ok:
		return rxOutcome{action: xdpPass, verdict: verdictHost, out: frame}
	case !ep.XDPDelivery:
		return rxOutcome{action: xdpPass, verdict: verdictDeliver, vlan: vlan, endpoint: &ep, out: frame}
	}
	out := frame
	if tagged { // the tag comes off on the way into the endpoint
		out = append(append([]byte{}, frame[:12]...), frame[16:]...)
	}
	return rxOutcome{action: xdpRedirect, vlan: vlan, endpoint: &ep, out: out}
}

// The transmit decision (xmv_ep_tx): what a frame an endpoint sends becomes.

const (
	tcActShot     = 2
	tcActRedirect = 7
)

type txOutcome struct {
	action      uint32
	reason      tables.DropReason // for tcActShot
	localTo     *tables.Endpoint  // switched to this endpoint on the host
	toHost      bool              // hairpinned to the host
	floodCopies int               // copies to other members on the host
}

func (m rxModel) tx(from tables.Endpoint, frame []byte, hairpin bool, parentMAC net.HardwareAddr) txOutcome {
	const runt, spoofed, tagged, private = 0, 4, 5, 6
	drop := func(r tables.DropReason) txOutcome { return txOutcome{action: tcActShot, reason: r} }
	if len(frame) < 14 {
		return drop(runt)
	}
	if isVLANType(binary.BigEndian.Uint16(frame[12:14])) {
		if len(frame) < 18 {
			return drop(runt)
		}
		return drop(tagged)
	}
	if !bytesEqual(frame[6:12], from.MAC) {
		return drop(spoofed)
	}
	dst := net.HardwareAddr(frame[0:6])
	mode := m.modes[from.VLAN]
	// What goes to the wire must fit the parent, which must exist.
	wire := func(o txOutcome) txOutcome {
		switch {
		case m.parentGone:
			o.action, o.reason = tcActShot, tables.DropNoParent
		case len(frame) > m.parentMTU+14:
			o.action, o.reason = tcActShot, tables.DropTooBig
		}
		return o
	}
	toHost := hairpin && from.VLAN == 0
	if dst[0]&1 != 0 {
		copies := 0
		// Copies go out through each member's veth, which refuses a frame
		// longer than its MTU (1500 here) + Ethernet header + one tag.
		if mode == tables.Bridge && len(frame) <= 1500+14+4 {
			copies = len(m.endpoints[from.VLAN]) - 1
		}
		return wire(txOutcome{action: tcActRedirect, floodCopies: copies, toHost: toHost})
	}
	if toHost && bytesEqual(dst, parentMAC) {
		return txOutcome{action: tcActRedirect, toHost: true}
	}
	if peer, ok := m.endpoints[from.VLAN][dst.String()]; ok {
		switch mode {
		case tables.Private:
			return drop(private)
		case tables.Bridge:
			return txOutcome{action: tcActRedirect, localTo: &peer}
		}
	}
	return wire(txOutcome{action: tcActRedirect}) // to the wire, tagged with the VLAN
}

func bytesEqual(a, b []byte) bool { return string(a) == string(b) }

// Storm control (bpf/storm.h): a token bucket per endpoint and per VLAN,
// refilled at pps frames per second, holding one second of the rate, full
// when new.

const stormToken = 1_000_000_000 // one frame, in bucket units (ns per second)

type stormBucket struct {
	pps    uint64
	tokens uint64 // frames * stormToken
	last   int64  // ns; 0 = never used
}

// take says whether a frame at time now (ns) passes; pps 0 passes all.
func (b *stormBucket) take(now int64) bool {
	if b.pps == 0 {
		return true
	}
	elapsed := uint64(stormToken)
	if b.last != 0 {
		elapsed = uint64(max(now-b.last, 0))
	}
	b.last = max(now, b.last)
	b.tokens = min(b.tokens+min(elapsed, stormToken)*b.pps, b.pps*stormToken)
	if b.tokens < stormToken {
		return false
	}
	b.tokens -= stormToken
	return true
}

// stormPasses bounds how many of a burst of frames a fresh bucket of pps
// lets through when the burst takes at most elapsed: at least what passes
// at one instant, at most that plus what elapsed refills (for elapsed under
// a second).
func stormPasses(pps uint64, frames int, elapsed int64) (lo, hi int) {
	at, spread := stormBucket{pps: pps}, stormBucket{pps: pps}
	for i := range frames {
		if at.take(1) {
			lo++
		}
		// The bucket emptied at once, the rest as late as possible: the
		// most refill that can be spent.
		when := int64(1)
		if uint64(i) >= pps {
			when = 1 + elapsed
		}
		if spread.take(when) {
			hi++
		}
	}
	return lo, hi
}
