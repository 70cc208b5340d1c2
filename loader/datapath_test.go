package loader

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/tables"
)

// TestPreviousBuildTablesRefused: tables pinned by the build before the VLAN
// table (struct network with the member count, struct traffic of four
// counters, no xmv_vlans) are refused with the way out, not misread.
func TestPreviousBuildTablesRefused(t *testing.T) {
	testutil.Privileged(t)
	dir := filepath.Join("/sys/fs/bpf", testutil.Name("xmvold"))
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	for _, old := range []*ebpf.MapSpec{
		{Name: "xmv_networks", Type: ebpf.Hash, KeySize: 2, ValueSize: 84, MaxEntries: 4095},
		{Name: "xmv_ep_stats", Type: ebpf.PerCPUArray, KeySize: 4, ValueSize: 32, MaxEntries: 4096},
	} {
		m, err := ebpf.NewMap(old)
		if err != nil {
			t.Fatal(err)
		}
		err = m.Pin(filepath.Join(dir, old.Name))
		m.Close()
		if err != nil {
			t.Fatal(err)
		}
		d, err := loadReusing(dir)
		if err == nil {
			d.Close()
			t.Fatalf("a pinned %s of the previous layout was reused", old.Name)
		}
		if msg := err.Error(); !strings.Contains(msg, "pinned table "+old.Name+" does not match") ||
			!strings.Contains(msg, "detach --force") {
			t.Errorf("error %q does not name %s and the way out", msg, old.Name)
		}
		os.Remove(filepath.Join(dir, old.Name))
	}

	// Readers (status, stats, metrics, every command) refuse it the same
	// way: a whole set of this build's tables but xmv_networks of the old
	// layout, then without xmv_vlans, which the old build did not have.
	d, err := Load()
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.Tables.Pin(dir, func(name string) bool { return name == "xmv_networks" }); err != nil {
		t.Fatal(err)
	}
	old, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.Hash, KeySize: 2, ValueSize: 84, MaxEntries: 4095})
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	if err := old.Pin(filepath.Join(dir, "xmv_networks")); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"pinned table xmv_networks does not match", "table xmv_vlans is not pinned"} {
		tb, err := tables.OpenPinned(dir)
		if err == nil {
			tb.Close()
			t.Fatalf("tables of another build were opened (want %q)", want)
		}
		if !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "detach --force") {
			t.Errorf("error %q, want %q and the way out", err, want)
		}
		// Next: this build's xmv_networks, and no xmv_vlans.
		os.Remove(filepath.Join(dir, "xmv_networks"))
		if err := d.Tables.Maps().XmvNetworks.Pin(filepath.Join(dir, "xmv_networks")); err != nil {
			t.Fatal(err)
		}
		os.Remove(filepath.Join(dir, "xmv_vlans"))
	}
}
