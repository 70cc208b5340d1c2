package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/xmacvlan/xmacvlan/internal/ethtool"
	"github.com/xmacvlan/xmacvlan/internal/state"
)

// Detach removes every link and pin of a parent. It refuses while the
// parent has endpoints: lifecycle.DetachParent with force removes them
// first.
func Detach(root, parent string) error {
	h, err := OpenState(root, parent)
	if err != nil {
		return err
	}
	defer h.Close()
	return h.Detach()
}

// Detach removes every link and pin of the handle's parent, under the
// handle's lock; it refuses while the parent has endpoint records. Links
// go first, so that no program runs on tables about to go; a crash
// halfway is finished by the next detach.
func (h *Handle) Detach() error {
	if h.Tables != nil {
		recs, err := h.Tables.Records()
		if err != nil {
			return err
		}
		if len(recs) > 0 {
			return fmt.Errorf("%s has %d endpoints; delete them first or detach with --force", h.Parent, len(recs))
		}
		// A NIC renamed since attach is found by its ifindex; a parent
		// that is gone leaves the rest of detach to do.
		if s, err := h.Tables.Settings(); err == nil && s.RestoreRxVLAN {
			if name, ok := parentName(h.Dir, s); ok {
				if err := ethtool.SetRxVLANOffload(name, true); err != nil && !errors.Is(err, ethtool.ErrFixed) {
					fmt.Fprintf(os.Stderr, "warning: could not turn rx-vlan offload back on for %s: %v\n", name, err)
				}
			}
		}
	}
	entries, err := os.ReadDir(h.Dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), state.PinLinkPrefix) {
			if err := removeLink(filepath.Join(h.Dir, e.Name())); err != nil {
				return fmt.Errorf("detach %s: %w", e.Name(), err)
			}
		}
	}
	for _, e := range entries {
		if err := os.Remove(filepath.Join(h.Dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return os.Remove(h.Dir)
}
