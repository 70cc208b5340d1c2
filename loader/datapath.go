package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"

	"github.com/xmacvlan/xmacvlan/bpf"
	"github.com/xmacvlan/xmacvlan/tables"
)

// bpfFXDPDevBoundOnly is BPF_F_XDP_DEV_BOUND_ONLY (linux 6.3): the program
// may call the XDP metadata kfuncs of the device it is bound to.
const bpfFXDPDevBoundOnly = 1 << 6

// datapath is the embedded object loaded into the kernel, with the tables
// a previous run pinned in place of fresh ones.
type datapath struct {
	spec    *ebpf.CollectionSpec
	coll    *ebpf.Collection
	metaXDP *ebpf.ProgramSpec // the device-bound variant, loaded on demand
	reused  map[string]bool   // tables that were pinned already
}

// loadDatapath loads the programs, reusing the tables pinned in dir. A
// pinned table whose layout differs from this build's is an error: its
// entries cannot be carried over silently.
func loadDatapath(dir string) (*datapath, error) {
	spec, err := bpf.LoadXmacvlan()
	if err != nil {
		return nil, err
	}
	d := &datapath{spec: spec, reused: map[string]bool{}}
	replacements := map[string]*ebpf.Map{}
	defer func() {
		for _, m := range replacements {
			m.Close() // the collection holds its own clone
		}
	}()
	for _, name := range tables.Names() {
		m, err := ebpf.LoadPinnedMap(filepath.Join(dir, name), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("open pinned table %s: %w", name, err)
		}
		if err := spec.Maps[name].Compatible(m); err != nil {
			m.Close()
			return nil, fmt.Errorf("pinned table %s does not match this xmacvlan (%v); "+
				"run `xmacvlan detach --force` and attach again", name, err)
		}
		replacements[name] = m
		d.reused[name] = true
	}

	d.metaXDP = spec.Programs[bpf.XmacvlanProgXmvRxXdpMeta]
	delete(spec.Programs, bpf.XmacvlanProgXmvRxXdpMeta)
	d.coll, err = ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: replacements})
	if err != nil {
		return nil, fmt.Errorf("load datapath: %w", err)
	}
	return d, nil
}

// loadDevBoundXDP loads the receive program bound to the parent, so that
// it can read a VLAN tag the driver stripped (bpf_xdp_metadata_rx_vlan_tag).
func (d *datapath) loadDevBoundXDP(ifindex int) (*ebpf.Program, error) {
	if err := d.devBoundFits(); err != nil {
		return nil, err
	}
	ps := d.metaXDP.Copy()
	ps.Ifindex = uint32(ifindex)
	ps.Flags |= bpfFXDPDevBoundOnly
	spec := d.spec.Copy()
	spec.Programs = map[string]*ebpf.ProgramSpec{ps.Name: ps}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: d.coll.Maps})
	if err != nil {
		return nil, err
	}
	defer coll.Close()
	return coll.DetachProgram(ps.Name), nil
}

func (d *datapath) program(name string) *ebpf.Program { return d.coll.Programs[name] }

func (d *datapath) close() { d.coll.Close() }
