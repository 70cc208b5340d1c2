package loader

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/xmacvlan/xmacvlan/internal/state"
	"github.com/xmacvlan/xmacvlan/tables"
)

// txn is one run's record: rollback undoes its steps if the run fails;
// finally releases what it held either way.
type txn struct {
	rollback undo
	finally  undo
}

func (t *txn) end(failed bool) {
	if failed {
		t.rollback.run()
	}
	t.finally.run()
}

// pinnedLink opens the link pinned at pin and says whether it still drives
// ifindex. A link outlives its device as a defunct link with ifindex 0,
// and a parent deleted and re-created comes back with a new ifindex.
func pinnedLink(pin string, ifindex int) (l link.Link, alive bool, err error) {
	l, err = link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("open pinned link %s: %w", pin, err)
	}
	target := linkTarget(l)
	return l, target != 0 && target == ifindex, nil
}

// linkProgram is the program a link runs now.
func linkProgram(l link.Link) (*ebpf.Program, *ebpf.ProgramInfo, error) {
	info, err := l.Info()
	if err != nil {
		return nil, nil, err
	}
	p, err := ebpf.NewProgramFromID(info.Program)
	if err != nil {
		return nil, nil, err
	}
	pi, err := p.Info()
	if err != nil {
		p.Close()
		return nil, nil, err
	}
	return p, pi, nil
}

// sameProgram compares by name and tag (a hash of the instructions; it
// does not cover which maps the program uses).
func sameProgram(a *ebpf.ProgramInfo, b *ebpf.Program) bool {
	bi, err := b.Info()
	return err == nil && a.Name == bi.Name && a.Tag == bi.Tag
}

// usesTables says whether every xmacvlan table the program uses is one of
// tables (by kernel map ID). Other maps (a section's global data) are
// the program's own.
func usesTables(pi *ebpf.ProgramInfo, tables map[ebpf.MapID]string) (bool, error) {
	ids, ok := pi.MapIDs()
	if !ok {
		return false, fmt.Errorf("the kernel does not report the maps of program %s", pi.Name)
	}
	for _, id := range ids {
		if _, ok := tables[id]; ok {
			continue
		}
		name, err := mapName(id)
		if err != nil {
			return false, err
		}
		if strings.HasPrefix(name, objectPrefix) {
			return false, nil
		}
	}
	return true, nil
}

func mapName(id ebpf.MapID) (string, error) {
	m, err := ebpf.NewMapFromID(id)
	if err != nil {
		return "", fmt.Errorf("open map %d: %w", id, err)
	}
	defer m.Close()
	info, err := m.Info()
	if err != nil {
		return "", err
	}
	return info.Name, nil
}

// usesTables is usesTables for the run's tables, once per program (every
// endpoint link runs the same one).
func (a *attachRun) usesTables(pi *ebpf.ProgramInfo) (bool, error) {
	id, _ := pi.ID()
	if ok, seen := a.checked[id]; seen {
		return ok, nil
	}
	ok, err := usesTables(pi, a.tables)
	if err == nil {
		if a.checked == nil {
			a.checked = map[ebpf.ProgramID]bool{}
		}
		a.checked[id] = ok
	}
	return ok, err
}

// upgradeLink swaps the program of the live link pinned at pin, atomically
// (BPF_LINK_UPDATE: no moment without a program), if it differs, if it
// reads tables other than the run's, or with --replace. Rollback swaps
// back.
func (a *attachRun) upgradeLink(pin string, l link.Link, prog *ebpf.Program) error {
	old, oldInfo, err := linkProgram(l)
	if err != nil {
		return fmt.Errorf("inspect %s: %w", pin, err)
	}
	a.t.finally.push(func() { old.Close() })
	current, err := a.usesTables(oldInfo)
	if err != nil {
		return fmt.Errorf("inspect %s: %w", pin, err)
	}
	if !a.replace && current && sameProgram(oldInfo, prog) {
		return nil
	}
	if err := l.Update(prog); err != nil {
		return fmt.Errorf("replace program of %s: %w", pin, err)
	}
	a.t.rollback.push(func() {
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			l.Update(old)
			l.Close()
		}
	})
	a.res.Upgraded = append(a.res.Upgraded, filepath.Base(pin))
	if !current {
		a.res.Notes = append(a.res.Notes, fmt.Sprintf("%s ran a program on tables that are not the pinned ones (a killed attach or a lost pin): replaced", filepath.Base(pin)))
	}
	return nil
}

// adoptTables pins again a table whose pin was lost while the parent's
// programs run on it, so that its entries carry on: it takes the table a
// program behind a live link pinned in dir uses (receive links first).
func adoptTables(t *txn, dir string, res *AttachResult) error {
	var missing []string
	for _, name := range tables.Names() {
		if !exists(filepath.Join(dir, name)) {
			missing = append(missing, name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	pins := []string{state.PinRxTCLink, state.PinXDPLink, state.PinHostTxLink}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if _, ok := state.EndpointLinkIfindex(e.Name()); ok {
			pins = append(pins, e.Name())
		}
	}
	for _, pin := range pins {
		var adopted []string
		for _, id := range liveLinkMaps(filepath.Join(dir, pin)) {
			m, err := ebpf.NewMapFromID(id)
			if err != nil {
				continue
			}
			info, err := m.Info()
			if err != nil || !slices.Contains(missing, info.Name) {
				m.Close()
				continue
			}
			pinPath := filepath.Join(dir, info.Name)
			err = m.Pin(pinPath)
			m.Close()
			if err != nil {
				return fmt.Errorf("pin table %s again: %w", info.Name, err)
			}
			t.rollback.push(func() { os.Remove(pinPath) })
			adopted = append(adopted, info.Name)
			missing = slices.DeleteFunc(missing, func(n string) bool { return n == info.Name })
		}
		if len(adopted) > 0 {
			res.Notes = append(res.Notes, fmt.Sprintf("tables without a pin (a killed attach or a removed pin): pinned again those %s runs on: %s",
				pin, strings.Join(adopted, ", ")))
		}
		if len(missing) == 0 {
			return nil
		}
	}
	return nil
}

// liveLinkMaps lists the maps of the program behind the link pinned at
// pin, if the link still drives a device.
func liveLinkMaps(pin string) []ebpf.MapID {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		return nil
	}
	defer l.Close()
	if linkTarget(l) == 0 {
		return nil
	}
	p, pi, err := linkProgram(l)
	if err != nil {
		return nil
	}
	p.Close()
	ids, _ := pi.MapIDs()
	return ids
}

// pinNewLink pins a link this run created; rollback detaches it.
func pinNewLink(t *txn, pin string, l link.Link) error {
	if err := l.Pin(pin); err != nil {
		l.Close()
		return fmt.Errorf("pin %s: %w", pin, err)
	}
	t.rollback.push(func() {
		l.Unpin()
		l.Close()
	})
	t.finally.push(func() { l.Close() })
	return nil
}

// removeLink detaches the link pinned at pin and removes the pin.
func removeLink(pin string) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		// Not a link we can open: the pin is all that is left.
		return os.Remove(pin)
	}
	defer l.Close()
	if err := l.Unpin(); err != nil {
		return err
	}
	// Detach now even if someone (bpftool) still holds a reference.
	if err := l.Detach(); err != nil && !errors.Is(err, ebpf.ErrNotSupported) {
		return nil // a defunct link has nothing left to detach
	}
	return nil
}

// replacePin pins obj at pin, replacing what is there in one rename.
func replacePin(pin string, obj interface{ Pin(string) error }) error {
	tmp := pin + "_new" // bpffs refuses dots in names
	os.Remove(tmp)
	if err := obj.Pin(tmp); err != nil {
		return fmt.Errorf("pin %s: %w", pin, err)
	}
	if err := os.Rename(tmp, pin); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("pin %s: %w", pin, err)
	}
	return nil
}
