// Package maps is the typed Go view of the xmacvlan tables: the only Go code
// that knows their layout. Callers serialise writers (the loader's lock);
// the datapath reads concurrently, so every change is ordered to be safe
// for a frame arriving in between.
package tables

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/cilium/ebpf"

	"github.com/xmacvlan/xmacvlan/bpf"
)

// Size limits, as compiled into the datapath (bpf/types.h).
const (
	MaxVLAN        = 4094
	MaxEndpoints   = 4096
	MaxMACs        = 65536
	MaxVLANMembers = 1024
)

// ErrFull is returned when a table has no room left.
var ErrFull = errors.New("table full")

// Tables holds one parent's maps.
type Tables struct {
	networks  *ebpf.Map
	macs      *ebpf.Map
	endpoints *ebpf.Map
	epInfo    *ebpf.Map
	redirect  *ebpf.Map
	flood     *ebpf.Map
	settings  *ebpf.Map
	epStats   *ebpf.Map
	vlanStats *ebpf.Map
	drops     *ebpf.Map
	events    *ebpf.Map
}

// fields maps each pinned map name to its field, the one place that ties
// names to tables.
func (t *Tables) fields() map[string]**ebpf.Map {
	return map[string]**ebpf.Map{
		bpf.XmacvlanMapXmvNetworks:  &t.networks,
		bpf.XmacvlanMapXmvMacs:      &t.macs,
		bpf.XmacvlanMapXmvEndpoints: &t.endpoints,
		bpf.XmacvlanMapXmvEpInfo:    &t.epInfo,
		bpf.XmacvlanMapXmvRedirect:  &t.redirect,
		bpf.XmacvlanMapXmvFlood:     &t.flood,
		bpf.XmacvlanMapXmvSettings:  &t.settings,
		bpf.XmacvlanMapXmvEpStats:   &t.epStats,
		bpf.XmacvlanMapXmvVlanStats: &t.vlanStats,
		bpf.XmacvlanMapXmvDrops:     &t.drops,
		bpf.XmacvlanMapXmvEvents:    &t.events,
	}
}

// Names lists the map names, which are also their pin file names.
func Names() []string {
	var t Tables
	names := make([]string, 0, 11)
	for name := range t.fields() {
		names = append(names, name)
	}
	return names
}

// New wraps maps loaded by the caller, keyed by map name. It takes no
// ownership: closing the Tables closes the maps.
func New(m map[string]*ebpf.Map) (*Tables, error) {
	t := &Tables{}
	for name, field := range t.fields() {
		if m[name] == nil {
			return nil, fmt.Errorf("map %s missing", name)
		}
		*field = m[name]
	}
	return t, nil
}

// OpenPinned opens the maps pinned in dir.
func OpenPinned(dir string) (*Tables, error) {
	t := &Tables{}
	for name, field := range t.fields() {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("open table %s: %w", name, err)
		}
		*field = m
	}
	return t, nil
}

// Maps returns the maps by name, for the loader to pin and to hand to
// programs it loads.
func (t *Tables) Maps() map[string]*ebpf.Map {
	m := make(map[string]*ebpf.Map)
	for name, field := range t.fields() {
		m[name] = *field
	}
	return m
}

// Close releases the file descriptors; pinned maps live on.
func (t *Tables) Close() {
	for _, field := range t.fields() {
		if *field != nil {
			(*field).Close()
			*field = nil
		}
	}
}
