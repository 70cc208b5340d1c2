package state

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
)

func newRoot(t *testing.T) string {
	testutil.Privileged(t)
	dir := filepath.Join("/sys/fs/bpf", testutil.Name("xs"))
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// opens reports whether Open(dir, access) succeeds within d.
func opens(t *testing.T, dir string, access Access, d time.Duration) bool {
	t.Helper()
	old := LockTimeout
	LockTimeout = d
	defer func() { LockTimeout = old }()
	r, err := Open(dir, access)
	if err != nil {
		if !strings.Contains(err.Error(), "has held the lock") {
			t.Fatalf("open %s: %v", access, err)
		}
		return false
	}
	r.Close()
	return true
}

// Readers never wait for a change, only for attach/detach; writers
// serialise.
func TestLockMatrix(t *testing.T) {
	dir := newRoot(t)
	opens(t, dir, Change, time.Second) // creates the root
	for _, tc := range []struct {
		held               Access
		read, change, resh bool
	}{
		{Read, true, true, false},
		{Change, true, false, false},
		{Reshape, false, false, false},
	} {
		h, err := Open(dir, tc.held)
		if err != nil {
			t.Fatal(err)
		}
		got := []bool{opens(t, dir, Read, 100*time.Millisecond), opens(t, dir, Change, 100*time.Millisecond), opens(t, dir, Reshape, 100*time.Millisecond)}
		want := []bool{tc.read, tc.change, tc.resh}
		for i, a := range []Access{Read, Change, Reshape} {
			if got[i] != want[i] {
				t.Errorf("while %s is held: %s opens = %v, want %v", tc.held, a, got[i], want[i])
			}
		}
		h.Close()
		if !opens(t, dir, Reshape, time.Second) {
			t.Errorf("after %s is closed, reshape still waits", tc.held)
		}
	}
}

// The timeout names who holds the lock.
func TestLockTimeoutNamesHolder(t *testing.T) {
	dir := newRoot(t)
	h, err := Open(dir, Change)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	LockTimeout = 50 * time.Millisecond
	defer func() { LockTimeout = 30 * time.Second }()
	_, err = Open(dir, Change)
	if err == nil || !strings.Contains(err.Error(), "(pid "+strconv.Itoa(os.Getpid())+")") {
		t.Errorf("err %v, want it to name pid %d", err, os.Getpid())
	}
}

func TestReadOfMissingRoot(t *testing.T) {
	dir := newRoot(t)
	if _, err := Open(dir, Read); !errors.Is(err, ErrNoRoot) {
		t.Errorf("err %v, want ErrNoRoot", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Error("a read created the root")
	}
	if _, err := Open("/tmp", Change); err == nil || !strings.Contains(err.Error(), "not on a bpf filesystem") {
		t.Errorf("root on tmpfs: %v", err)
	}
}

func TestParentsSkipsLockDir(t *testing.T) {
	dir := newRoot(t)
	r, err := Open(dir, Reshape)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	os.Mkdir(r.ParentDir("ens33"), 0o700)
	ps, err := r.Parents("")
	if err != nil || len(ps) != 1 || ps[0] != "ens33" {
		t.Errorf("parents %v %v, want [ens33]", ps, err)
	}
	if CheckParentName(WriterLockDir) == nil {
		t.Error("the writer lock's directory has a valid interface name")
	}
}
