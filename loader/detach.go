package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/xmacvlan/xmacvlan/internal/ethtool"
	"github.com/xmacvlan/xmacvlan/tables"
)

// Detach removes every link and pin of a parent, and with force its
// endpoints too (their veths are deleted). Without force it refuses while
// endpoints exist.
func Detach(root, parent string, force bool) error {
	if err := checkParentName(parent); err != nil {
		return err
	}
	lock, err := lockRoot(root)
	if err != nil {
		return err
	}
	defer unlock(lock)
	dir := filepath.Join(root, parent)
	if !exists(dir) {
		return fmt.Errorf("%s is not attached (no state in %s)", parent, dir)
	}

	tbl, err := tables.OpenPinned(dir)
	if err == nil {
		defer tbl.Close()
		if err := removeEndpoints(dir, tbl, force); err != nil {
			return err
		}
		if s, err := tbl.Settings(); err == nil && s.RestoreRxVLAN {
			if err := ethtool.SetRxVLANOffload(parent, true); err != nil && !errors.Is(err, ethtool.ErrFixed) {
				// The parent may be gone; the rest of detach still applies.
				fmt.Fprintf(os.Stderr, "warning: could not turn rx-vlan offload back on for %s: %v\n", parent, err)
			}
		}
	}

	// Links first, so that no program runs on tables about to go.
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "link_") {
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
