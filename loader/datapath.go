package loader

import (
	"fmt"

	"github.com/cilium/ebpf"

	"github.com/xmacvlan/xmacvlan/bpf"
	"github.com/xmacvlan/xmacvlan/tables"
)

// bpfFXDPDevBoundOnly is BPF_F_XDP_DEV_BOUND_ONLY (linux 6.3): the program
// may call the XDP metadata kfuncs of the device it is bound to.
const bpfFXDPDevBoundOnly = 1 << 6

// Datapath is the embedded datapath loaded into the kernel and attached
// nowhere: its tables and every program but the device-bound receive
// variant (Programs.XmvRxXdpMeta is nil: it loads only against a device,
// and shares its code with XmvRxXdp). Tests and the bench run it with
// BPF_PROG_RUN; attach hooks it to a parent. Close releases it.
type Datapath struct {
	Tables   *tables.Tables
	Programs bpf.XmacvlanPrograms
	spec     *ebpf.CollectionSpec
	reused   map[string]bool // tables that were pinned already
	// upgradedSettings: the pinned settings had an older build's layout;
	// Tables holds them in this build's, to be pinned in their place.
	upgradedSettings bool
}

// Load loads the datapath with fresh, empty tables.
func Load() (*Datapath, error) { return load(nil) }

// LoadPinned loads the datapath's programs against the tables pinned in
// dir (a parent's directory), which must all exist.
func LoadPinned(dir string) (*Datapath, error) {
	tbl, err := tables.OpenPinned(dir)
	if err != nil {
		return nil, err
	}
	defer tbl.Close() // the datapath holds its own references
	return load(tbl.ByName())
}

// loadReusing loads the datapath, reusing the tables pinned in dir where
// they exist. The settings of an older build are carried over to this
// build's layout in a new table (d.upgradedSettings, pinned by attach in
// place of the old one). Another pinned table whose layout differs from
// this build's is an error: its entries cannot be carried over silently.
func loadReusing(dir string) (*Datapath, error) {
	pinned, err := tables.OpenPinnedSome(dir)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, m := range pinned {
			m.Close()
		}
	}()
	var upgraded *ebpf.Map
	if old := pinned[tables.SettingsName]; old != nil {
		if upgraded, err = tables.UpgradeSettings(old); err != nil {
			return nil, err
		}
		if upgraded != nil {
			pinned[tables.SettingsName] = upgraded
			old.Close()
		}
	}
	d, err := load(pinned)
	if err != nil {
		return nil, err
	}
	for name := range pinned {
		d.reused[name] = true
	}
	if upgraded != nil {
		d.upgradedSettings = true
	}
	return d, nil
}

// load loads the programs and the tables, taking replacements (by map
// name) in place of fresh tables; the caller keeps its references.
func load(replacements map[string]*ebpf.Map) (*Datapath, error) {
	spec, err := bpf.LoadXmacvlan()
	if err != nil {
		return nil, err
	}
	for name, m := range replacements {
		if err := tables.CheckLayout(name, m); err != nil {
			return nil, err
		}
	}
	var objs struct {
		bpf.XmacvlanMaps
		RxXDP  *ebpf.Program `ebpf:"xmv_rx_xdp"`
		RxTC   *ebpf.Program `ebpf:"xmv_rx_tc"`
		HostTx *ebpf.Program `ebpf:"xmv_host_tx"`
		EpTx   *ebpf.Program `ebpf:"xmv_ep_tx"`
	}
	if err := spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: replacements}); err != nil {
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	return &Datapath{
		Tables: tables.New(&objs.XmacvlanMaps),
		Programs: bpf.XmacvlanPrograms{XmvRxXdp: objs.RxXDP, XmvRxTc: objs.RxTC,
			XmvHostTx: objs.HostTx, XmvEpTx: objs.EpTx},
		spec:   spec,
		reused: map[string]bool{},
	}, nil
}

// loadDevBoundXDP loads the receive program bound to the parent, so that
// it can read a VLAN tag the driver stripped (bpf_xdp_metadata_rx_vlan_tag).
func (d *Datapath) loadDevBoundXDP(ifindex int) (*ebpf.Program, error) {
	if err := d.devBoundFits(); err != nil {
		return nil, err
	}
	spec := d.spec.Copy()
	ps := spec.Programs[bpf.XmacvlanProgXmvRxXdpMeta]
	ps.Ifindex = uint32(ifindex)
	ps.Flags |= bpfFXDPDevBoundOnly
	spec.Programs = map[string]*ebpf.ProgramSpec{ps.Name: ps}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: d.Tables.ByName()})
	if err != nil {
		return nil, err
	}
	defer coll.Close()
	return coll.DetachProgram(ps.Name), nil
}

// Close releases the programs and the tables' file descriptors; what is
// pinned or attached lives on.
func (d *Datapath) Close() {
	d.Programs.Close()
	d.Tables.Close()
}
