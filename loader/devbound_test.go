package loader

import (
	"errors"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/bpf"
	"github.com/xmacvlan/xmacvlan/internal/testutil"
)

func TestDevBoundFootprintArithmetic(t *testing.T) {
	for _, c := range []struct {
		f         progFootprint
		allocated int
		fits      bool
	}{
		// One page holds (4096-96)/8 = 500 instructions, 484 with the slack.
		{progFootprint{Loaded: 300, Translated: 484}, 4096, true},
		{progFootprint{Loaded: 300, Translated: 485}, 4096, false},
		{progFootprint{Loaded: 500, Translated: 500}, 4096, false},
		// A 501st instruction takes a second page.
		{progFootprint{Loaded: 501, Translated: 996}, 8192, true},
		{progFootprint{Loaded: 501, Translated: 997}, 8192, false},
	} {
		if got := c.f.allocatedBytes(); got != c.allocated {
			t.Errorf("%+v: allocated %d bytes, want %d", c.f, got, c.allocated)
		}
		if got := c.f.fits(); got != c.fits {
			t.Errorf("%+v: fits %v, want %v", c.f, got, c.fits)
		}
	}
}

// TestDevBoundVariantStaysInItsPages runs the guard on the real object (the
// current program must fit), then binds the variant to a veth, which the
// guard allowed, and checks the estimate against the kernel's own count.
func TestDevBoundVariantStaysInItsPages(t *testing.T) {
	testutil.Privileged(t)
	d, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	est, err := d.devBoundFootprint()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("xmv_rx_xdp_meta estimate: %s", est)
	if !est.fits() {
		t.Fatalf("the device-bound variant does not fit its pages: %s", est)
	}

	ns := testutil.NewNetns(t, "xdb")
	la := netlink.NewLinkAttrs()
	la.Name = "xdb0"
	if err := ns.NL.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "xdb1"}); err != nil {
		t.Fatal(err)
	}
	l, err := ns.NL.LinkByName(la.Name)
	if err != nil {
		t.Fatal(err)
	}
	var p *ebpf.Program
	err = ns.Do(func() (err error) {
		p, err = d.loadDevBoundXDP(l.Attrs().Index)
		return err
	})
	if err != nil {
		t.Fatalf("bind to a veth: %v", err)
	}
	// Registered after the namespace: the program goes before the device.
	t.Cleanup(func() { p.Close() })
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	xlated, err := info.TranslatedSize()
	if err != nil {
		t.Fatal(err)
	}
	real := progFootprint{Loaded: est.Loaded, Translated: xlated / insnBytes}
	t.Logf("xmv_rx_xdp_meta bound: %s", real)
	if diff := real.Translated - est.Translated; diff > devBoundSlackInsns || -diff > devBoundSlackInsns {
		t.Errorf("estimate %d instructions, the bound program has %d: more than the slack of %d apart",
			est.Translated, real.Translated, devBoundSlackInsns)
	}
	if progHeaderBytes+real.Translated*insnBytes > real.allocatedBytes() {
		t.Errorf("the bound program outgrew its pages: %s", real)
	}
}

// TestDevBoundGuardFallsBack makes the estimate too big (the plain
// program's spec is cut to one instruction, so the verifier's growth reads
// as hundreds of instructions): nothing is bound, the plain program is
// picked, and the note says why. No device-bound program is created.
func TestDevBoundGuardFallsBack(t *testing.T) {
	testutil.Privileged(t)
	d, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	plain := d.spec.Programs[bpf.XmacvlanProgXmvRxXdp].Copy()
	plain.Instructions = asm.Instructions{asm.Return()}
	d.spec.Programs[bpf.XmacvlanProgXmvRxXdp] = plain
	if est, _ := d.devBoundFootprint(); est.fits() {
		t.Fatalf("the doctored estimate fits: %s", est)
	}

	if p, err := d.loadDevBoundXDP(1); !errors.Is(err, errDevBoundTooBig) {
		if p != nil {
			p.Close()
		}
		t.Fatalf("loadDevBoundXDP: %v, want %v", err, errDevBoundTooBig)
	}
	var tx txn
	defer tx.end(false)
	p, name, note := d.xdpProgram(&tx, 1)
	if name != bpf.XmacvlanProgXmvRxXdp || p != d.Programs.XmvRxXdp {
		t.Errorf("picked %s, want %s", name, bpf.XmacvlanProgXmvRxXdp)
	}
	if !strings.Contains(note, "outgrow its first allocation") || !strings.Contains(note, bpf.XmacvlanProgXmvRxXdp+" runs instead") {
		t.Errorf("note %q does not say the variant was refused and what runs instead", note)
	}
}
