package tables

import (
	"errors"
	"fmt"
	"net"

	"github.com/cilium/ebpf"
)

// For load tests only (bench/): a MAC table as full as thousands of
// endpoints would make it, without thousands of interfaces.
//
// AddSyntheticMACs puts count entries into the MAC table, numbered from
// first, that all point at the registered endpoint target, on target's
// VLAN. Their MACs are 06:b0:NN:NN:NN:NN (locally administered unicast,
// NN… the entry's number, big-endian); should a real endpoint have one of
// them, its entry is left as it is. They are MAC entries only: not
// endpoints, flood members or counter slots, so frames to them are
// delivered to target. Remove them with DeleteSyntheticMACs before target
// goes, or detach the parent.
func (t *Tables) AddSyntheticMACs(first, count int, target Endpoint) error {
	if first < 0 || count < 0 || first+count > MaxMACs {
		return fmt.Errorf("synthetic MACs %d..%d outside the table's %d entries", first, first+count, MaxMACs)
	}
	raw := target.raw()
	for i := first; i < first+count; i++ {
		err := t.m.XmvMacs.Update(macKey(target.VLAN, SyntheticMAC(i)), raw, ebpf.UpdateNoExist)
		if err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			return fullOr(err, "MAC")
		}
	}
	return nil
}

// DeleteSyntheticMACs removes the entries AddSyntheticMACs made on vlan.
// Entries already gone are not an error.
func (t *Tables) DeleteSyntheticMACs(vlan uint16, first, count int) error {
	for i := first; i < first+count; i++ {
		err := t.m.XmvMacs.Delete(macKey(vlan, SyntheticMAC(i)))
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("delete synthetic MAC %d: %w", i, err)
		}
	}
	return nil
}

// SyntheticMAC is the MAC of synthetic entry i.
func SyntheticMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x06, 0xb0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
}
