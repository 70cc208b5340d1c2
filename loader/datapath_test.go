package loader

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
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
}
