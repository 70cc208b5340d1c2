package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/xmacvlan/xmacvlan/internal/ethtool"
	"github.com/xmacvlan/xmacvlan/internal/state"
	"github.com/xmacvlan/xmacvlan/tables"
)

// Detach removes every link and pin of a parent, and with force its
// endpoints too (their veths are deleted). Without force it refuses while
// endpoints exist. parent is the name it was attached under; a NIC renamed
// since is found by its ifindex, and gets its rx-vlan offload back.
func Detach(root, parent string, force bool) error {
	if err := state.CheckParentName(parent); err != nil {
		return err
	}
	r, err := state.Open(root, state.Reshape)
	if err != nil {
		return err
	}
	defer r.Close()
	dir := r.ParentDir(parent)
	if !exists(dir) {
		return fmt.Errorf("%s is not attached (no state in %s)", parent, dir)
	}
	if err := checkNetnsOf(r, parent); err != nil {
		return err
	}

	tbl, err := tables.OpenPinned(dir)
	if err == nil {
		defer tbl.Close()
		if err := removeEndpoints(dir, tbl, force); err != nil {
			return err
		}
		if s, err := tbl.Settings(); err == nil && s.RestoreRxVLAN {
			if name, ok := parentName(dir, s); ok {
				if err := ethtool.SetRxVLANOffload(name, true); err != nil && !errors.Is(err, ethtool.ErrFixed) {
					fmt.Fprintf(os.Stderr, "warning: could not turn rx-vlan offload back on for %s: %v\n", name, err)
				}
			}
		}
	}

	// Links first, so that no program runs on tables about to go.
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), state.PinLinkPrefix) {
			if err := removeLink(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("detach %s: %w", e.Name(), err)
			}
		}
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return os.Remove(dir)
}

// removeEndpoints deletes every endpoint of a parent (with force), or
// refuses if there is any.
func removeEndpoints(dir string, tbl *tables.Tables, force bool) error {
	eps, err := tbl.Endpoints()
	if err != nil {
		return err
	}
	if len(eps) > 0 && !force {
		return fmt.Errorf("%s has %d endpoints; delete them first or detach with --force", filepath.Base(dir), len(eps))
	}
	h := &Handle{Dir: dir, Tables: tbl}
	for _, ep := range eps {
		if err := h.RemoveEndpoint(ep); err != nil {
			return err
		}
	}
	return nil
}
