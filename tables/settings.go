package tables

import (
	"fmt"
	"net"
	"slices"

	"github.com/cilium/ebpf"

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
	// XDPChoice is what attach was asked of XDP: "auto", "on" or "off"
	// (attach --xdp), kept so that a re-attach keeps it; "" before the
	// first attach. Of a parent attached by a build that recorded no
	// choice it is what that build ran: "off" if it attached no XDP
	// program, else "on".
	XDPChoice string `json:"xdp_choice"`
	// NetnsCookie is the network namespace the parent was attached in
	// (SO_NETNS_COOKIE, linux 5.14: unique for the boot, never reused).
	NetnsCookie uint64 `json:"netns_cookie"`
}

// Settings reads the parent's settings.
func (t *Tables) Settings() (Settings, error) {
	var raw bpf.XmacvlanSettings
	if err := t.m.XmvSettings.Lookup(uint32(0), &raw); err != nil {
		return Settings{}, fmt.Errorf("read settings: %w", err)
	}
	return Settings{
		ParentIfindex: int(raw.ParentIfindex),
		ParentMAC:     append(net.HardwareAddr(nil), raw.ParentMac[:]...),
		Hairpin:       raw.Hairpin != 0,
		RestoreRxVLAN: raw.RestoreRxvlan != 0,
		XDPChoice:     xdpChoice(raw),
		NetnsCookie:   raw.NetnsCookie,
	}, nil
}

// xdpChoices are the values of settings.xdp_choice, from 1.
var xdpChoices = []string{"auto", "on", "off"}

func xdpChoice(raw bpf.XmacvlanSettings) string {
	if raw.XdpChoice >= 1 && int(raw.XdpChoice) <= len(xdpChoices) {
		return xdpChoices[raw.XdpChoice-1]
	}
	return "" // none recorded: attach decides (auto)
}

// SetSettings replaces the parent's settings.
func (t *Tables) SetSettings(s Settings) error {
	raw := bpf.XmacvlanSettings{ParentIfindex: uint32(s.ParentIfindex), NetnsCookie: s.NetnsCookie}
	copy(raw.ParentMac[:], s.ParentMAC)
	if s.Hairpin {
		raw.Hairpin = 1
	}
	if s.RestoreRxVLAN {
		raw.RestoreRxvlan = 1
	}
	raw.XdpChoice = uint8(slices.Index(xdpChoices, s.XDPChoice) + 1) // 0 when unknown
	if s.XDPChoice != "" && raw.XdpChoice == 0 {
		return fmt.Errorf("invalid XDP choice %q: want auto, on or off", s.XDPChoice)
	}
	if err := t.m.XmvSettings.Update(uint32(0), raw, 0); err != nil {
		return fmt.Errorf("write settings: %w", err)
	}
	return nil
}

// UpgradeSettings carries the settings of an older build over to this
// build's layout: fields are only ever added at the end of struct settings
// (bpf/types.h), so an older value is a prefix of the new one. It returns
// a new, unpinned map holding the old value, or nil when old has this
// build's layout already; an old map of another shape is an error.
func UpgradeSettings(old *ebpf.Map) (*ebpf.Map, error) {
	spec, err := bpf.LoadXmacvlan()
	if err != nil {
		return nil, err
	}
	ms := spec.Maps[SettingsName]
	if old.ValueSize() == ms.ValueSize {
		return nil, nil
	}
	if old.Type() != ms.Type || old.KeySize() != ms.KeySize || old.MaxEntries() != ms.MaxEntries || old.ValueSize() > ms.ValueSize {
		return nil, fmt.Errorf("pinned table %s has an unknown layout (%s, value %d bytes)", SettingsName, old.Type(), old.ValueSize())
	}
	raw := make([]byte, old.ValueSize())
	if err := old.Lookup(uint32(0), raw); err != nil {
		return nil, fmt.Errorf("read settings: %w", err)
	}
	m, err := ebpf.NewMap(ms)
	if err != nil {
		return nil, err
	}
	value := make([]byte, ms.ValueSize)
	copy(value, raw)
	if err := m.Update(uint32(0), value, 0); err != nil {
		m.Close()
		return nil, fmt.Errorf("write settings: %w", err)
	}
	return m, nil
}
