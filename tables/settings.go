package tables

import (
	"fmt"
	"net"

	"github.com/xmacvlan/xmacvlan/bpf"
)

// Settings is the per-parent configuration the datapath reads.
type Settings struct {
	ParentIfindex int              `json:"parent_ifindex"`
	ParentMAC     net.HardwareAddr `json:"parent_mac"`
	Hairpin       bool             `json:"hairpin"`
	// RestoreRxVLAN records that attach turned the parent's rx-vlan
	// offload off, so that detach turns it back on.
	RestoreRxVLAN bool `json:"restore_rx_vlan"`
}

// Settings reads the parent's settings.
func (t *Tables) Settings() (Settings, error) {
	var raw bpf.XmacvlanSettings
	if err := t.settings.Lookup(uint32(0), &raw); err != nil {
		return Settings{}, fmt.Errorf("read settings: %w", err)
	}
	return Settings{
		ParentIfindex: int(raw.ParentIfindex),
		ParentMAC:     append(net.HardwareAddr(nil), raw.ParentMac[:]...),
		Hairpin:       raw.Hairpin != 0,
		RestoreRxVLAN: raw.RestoreRxvlan != 0,
	}, nil
}

// SetSettings replaces the parent's settings.
func (t *Tables) SetSettings(s Settings) error {
	raw := bpf.XmacvlanSettings{ParentIfindex: uint32(s.ParentIfindex)}
	copy(raw.ParentMac[:], s.ParentMAC)
	if s.Hairpin {
		raw.Hairpin = 1
	}
	if s.RestoreRxVLAN {
		raw.RestoreRxvlan = 1
	}
	if err := t.settings.Update(uint32(0), raw, 0); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	return nil
}
