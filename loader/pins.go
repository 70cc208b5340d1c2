// Package loader loads the embedded datapath, attaches it to a parent with
// bpf_links, pins links and tables under <root>/<parent>/, upgrades a
// running datapath in place and detaches it cleanly. Every entry point
// locks the state root (internal/state): readers shared, writers
// exclusive.
package loader

import (
	"os"

	"github.com/xmacvlan/xmacvlan/internal/state"
)

// DefaultRoot is where pins live unless --bpffs says otherwise.
const DefaultRoot = state.DefaultRoot

// failpoint lets tests fail a run at a named step, to check the rollback.
var failpoint = func(step string) error { return nil }

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}

// undo collects the inverse of each step of a run, replayed in reverse
// when a later step fails.
type undo []func()

func (u *undo) push(f func()) { *u = append(*u, f) }

func (u *undo) run() {
	for i := len(*u) - 1; i >= 0; i-- {
		(*u)[i]()
	}
	*u = nil
}
