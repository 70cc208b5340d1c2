package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// xmacvlanBin is the CLI built once for the tests that run it as a user
// would, as a separate process that exits.
var xmacvlanBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "xmacvlan-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	xmacvlanBin = filepath.Join(dir, "xmacvlan")
	build := exec.Command("go", "build", "-o", xmacvlanBin, "../cmd/xmacvlan")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build the CLI:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cli runs the xmacvlan binary in the host's namespace with its root.
func (h *host) cli(args ...string) (string, error) {
	return run(h.ns, xmacvlanBin, append([]string{"--bpffs", h.root}, args...)...)
}
