package loader

import (
	"errors"
	"fmt"

	"github.com/xmacvlan/xmacvlan/bpf"
)

// The kernel allocates a program in whole pages sized for the instructions
// it was given (bpf_prog_load -> bpf_prog_alloc(bpf_prog_size(insn_cnt)),
// kernel/bpf/syscall.c, core.c). When the verifier's rewrites outgrow those
// pages, bpf_prog_realloc moves the program. On 6.18 a device-bound XDP
// program that moved leaves the device's offload record pointing at the old
// copy, and deleting the device later oopses with rtnl held. So the
// device-bound variant is bound only while its rewritten form stays, with
// room to spare, in the pages it was first given.
const (
	progHeaderBytes    = 96   // offsetof(struct bpf_prog, insns) on 6.18, rounded up
	progPageBytes      = 4096 // PAGE_SIZE on x86-64
	devBoundSlackInsns = 16   // margin for rewrites the estimate cannot see
	insnBytes          = 8    // sizeof(struct bpf_insn)
)

// errDevBoundTooBig says the device-bound variant would be moved by the
// verifier: it is not bound, the plain program takes its place.
var errDevBoundTooBig = errors.New("device-bound XDP program would outgrow its first allocation")

// progFootprint is a program's size in the kernel's allocator, in
// instructions (8 bytes each).
type progFootprint struct {
	Loaded     int // given to BPF_PROG_LOAD (ld_imm64 counts twice)
	Translated int // after the verifier's rewrites (xlated)
}

// allocatedBytes is what bpf_prog_alloc gives for Loaded instructions:
// header + instructions, rounded up to whole pages.
func (f progFootprint) allocatedBytes() int {
	n := progHeaderBytes + f.Loaded*insnBytes
	return (n + progPageBytes - 1) / progPageBytes * progPageBytes
}

// fits reports whether Translated instructions plus the slack still fit in
// allocatedBytes, i.e. bpf_prog_realloc would not move the program.
func (f progFootprint) fits() bool {
	return progHeaderBytes+(f.Translated+devBoundSlackInsns)*insnBytes <= f.allocatedBytes()
}

func (f progFootprint) String() string {
	return fmt.Sprintf("%d instructions loaded (%d bytes allocated), %d after the verifier, slack %d",
		f.Loaded, f.allocatedBytes(), f.Translated, devBoundSlackInsns)
}

// devBoundFootprint estimates the device-bound variant's footprint without
// binding anything. The kernel refuses to load it unbound ("metadata kfuncs
// require device-bound program"), so the measured copy is xmv_rx_xdp, the
// same parent_rx() body minus the kfunc call: its growth under the verifier
// (context loads, inlined map lookups and helpers) is the variant's growth,
// whose extra code is plain ALU and branches the verifier does not expand.
func (d *Datapath) devBoundFootprint() (progFootprint, error) {
	plain := d.Programs.XmvRxXdp
	info, err := plain.Info()
	if err != nil {
		return progFootprint{}, fmt.Errorf("read %s info: %w", bpf.XmacvlanProgXmvRxXdp, err)
	}
	xlated, err := info.TranslatedSize()
	if err != nil {
		return progFootprint{}, fmt.Errorf("read %s translated size: %w", bpf.XmacvlanProgXmvRxXdp, err)
	}
	plainLoaded := int(d.spec.Programs[bpf.XmacvlanProgXmvRxXdp].Instructions.Size()) / insnBytes
	loaded := int(d.spec.Programs[bpf.XmacvlanProgXmvRxXdpMeta].Instructions.Size()) / insnBytes
	return progFootprint{Loaded: loaded, Translated: loaded + xlated/insnBytes - plainLoaded}, nil
}

// devBoundFits returns nil when the device-bound variant may be bound, or
// an error wrapping errDevBoundTooBig with the numbers.
func (d *Datapath) devBoundFits() error {
	f, err := d.devBoundFootprint()
	if err != nil {
		return err
	}
	if !f.fits() {
		return fmt.Errorf("%w: %s", errDevBoundTooBig, f)
	}
	return nil
}
