// Package tables is the typed Go view of the xmacvlan tables: the only Go
// code that knows their names and layout. Callers serialise writers (the
// state root's writer lock); the datapath reads concurrently, so every
// change is ordered to be safe for a frame arriving in between.
package tables

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sync"

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

// Tables holds one parent's maps: the objects bpf2go generates, each
// pinned under its map name.
type Tables struct {
	m bpf.XmacvlanMaps
}

// each calls f with every map's name (its pin name) and field, in the
// order of bpf.XmacvlanMaps.
func (t *Tables) each(f func(name string, m **ebpf.Map) error) error {
	v := reflect.ValueOf(&t.m).Elem()
	for i := 0; i < v.NumField(); i++ {
		name := v.Type().Field(i).Tag.Get("ebpf")
		if err := f(name, v.Field(i).Addr().Interface().(**ebpf.Map)); err != nil {
			return err
		}
	}
	return nil
}

// Names lists the map names, which are also their pin file names.
func Names() []string {
	var t Tables
	var names []string
	t.each(func(name string, _ **ebpf.Map) error { names = append(names, name); return nil })
	return names
}

// New wraps maps the caller loaded (bpf.LoadXmacvlanObjects or
// loader.Load). It takes ownership: Close closes them.
func New(m *bpf.XmacvlanMaps) *Tables { return &Tables{m: *m} }

// OpenPinned opens the maps pinned in dir. A missing pin is an error that
// wraps os.ErrNotExist; a table of another layout (another build's) is an
// error that says how to start over. The settings are exempt: attach
// carries an older build's over (UpgradeSettings).
func OpenPinned(dir string) (*Tables, error) {
	t := &Tables{}
	err := t.each(func(name string, m **ebpf.Map) (err error) {
		*m, err = ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("table %s is not pinned in %s (another xmacvlan build's datapath, or one cut short: "+
				"run `xmacvlan detach --force` and attach again): %w", name, dir, err)
		}
		if err != nil {
			return fmt.Errorf("open table %s: %w", name, err)
		}
		if name == SettingsName {
			return nil
		}
		return CheckLayout(name, *m)
	})
	if err != nil {
		t.Close()
		return nil, err
	}
	return t, nil
}

// layouts are this build's tables, to hold pinned ones against.
var layouts = sync.OnceValues(func() (map[string]*ebpf.MapSpec, error) {
	spec, err := bpf.LoadXmacvlan()
	if err != nil {
		return nil, err
	}
	return spec.Maps, nil
})

// CheckLayout refuses a pinned table m whose type, key, value or size
// differ from this build's table called name (ebpf.MapSpec.Compatible):
// its entries would be misread.
func CheckLayout(name string, m *ebpf.Map) error {
	specs, err := layouts()
	if err != nil {
		return err
	}
	if spec, ok := specs[name]; ok {
		if err := spec.Compatible(m); err != nil {
			return fmt.Errorf("pinned table %s does not match this xmacvlan (%v); "+
				"run `xmacvlan detach --force` and attach again", name, err)
		}
	}
	return nil
}

// OpenPinnedSome opens the maps pinned in dir that exist, by name, for an
// attach to reuse; Close the result.
func OpenPinnedSome(dir string) (map[string]*ebpf.Map, error) {
	out := map[string]*ebpf.Map{}
	for _, name := range Names() {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			for _, m := range out {
				m.Close()
			}
			return nil, fmt.Errorf("open pinned table %s: %w", name, err)
		}
		out[name] = m
	}
	return out, nil
}

// Maps returns the typed maps, for programs loaded against them.
func (t *Tables) Maps() *bpf.XmacvlanMaps { return &t.m }

// ByName returns the maps by name: MapReplacements for a collection
// loaded against these tables.
func (t *Tables) ByName() map[string]*ebpf.Map {
	out := map[string]*ebpf.Map{}
	t.each(func(name string, m **ebpf.Map) error { out[name] = *m; return nil })
	return out
}

// MapIDs returns each map's kernel ID, by name.
func (t *Tables) MapIDs() (map[ebpf.MapID]string, error) {
	out := map[ebpf.MapID]string{}
	err := t.each(func(name string, m **ebpf.Map) error {
		info, err := (*m).Info()
		if err != nil {
			return fmt.Errorf("table %s: %w", name, err)
		}
		id, ok := info.ID()
		if !ok {
			return fmt.Errorf("table %s: the kernel reports no map ID", name)
		}
		out[id] = name
		return nil
	})
	return out, err
}

// Pin pins every map in dir under its name, except those for which skip
// is true, and returns the pins it made.
func (t *Tables) Pin(dir string, skip func(name string) bool) ([]string, error) {
	var made []string
	err := t.each(func(name string, m **ebpf.Map) error {
		if skip != nil && skip(name) {
			return nil
		}
		pin := filepath.Join(dir, name)
		if err := (*m).Pin(pin); err != nil {
			return fmt.Errorf("pin table %s: %w", name, err)
		}
		made = append(made, pin)
		return nil
	})
	return made, err
}

// Fill is one table's fill level, for the tables whose fill level matters
// (hash tables; the counters are fixed-size arrays).
type Fill struct {
	Name    string `json:"name"`
	Entries int    `json:"entries"`
	Max     int    `json:"max"`
}

// Fills counts the entries of the hash tables.
func (t *Tables) Fills() []Fill {
	names := map[*ebpf.Map]string{}
	t.each(func(name string, m **ebpf.Map) error { names[*m] = name; return nil })
	var out []Fill
	for _, m := range []*ebpf.Map{t.m.XmvNetworks, t.m.XmvMacs, t.m.XmvEndpoints, t.m.XmvRedirect, t.m.XmvFlood} {
		out = append(out, Fill{Name: names[m], Entries: countEntries(m), Max: int(m.MaxEntries())})
	}
	return out
}

func countEntries(m *ebpf.Map) int {
	n := 0
	key, val := make([]byte, m.KeySize()), make([]byte, m.ValueSize())
	it := m.Iterate()
	for it.Next(&key, &val) {
		n++
	}
	return n
}

// Close releases the file descriptors; pinned maps live on.
func (t *Tables) Close() {
	t.each(func(_ string, m **ebpf.Map) error {
		if *m != nil {
			(*m).Close()
			*m = nil
		}
		return nil
	})
}

// SettingsName is the name (and pin name) of the settings table, which
// records what an attach did.
const SettingsName = bpf.XmacvlanMapXmvSettings
