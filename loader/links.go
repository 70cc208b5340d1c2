package loader

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
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
	info, err := l.Info()
	if err != nil {
		return l, false, nil
	}
	var target uint32
	switch {
	case info.XDP() != nil:
		target = info.XDP().Ifindex
	case info.TCX() != nil:
		target = info.TCX().Ifindex
	}
	return l, target != 0 && int(target) == ifindex, nil
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

// sameProgram compares by name and tag (a hash of the instructions).
func sameProgram(a *ebpf.ProgramInfo, b *ebpf.Program) bool {
	bi, err := b.Info()
	return err == nil && a.Name == bi.Name && a.Tag == bi.Tag
}

// upgradeLink swaps the program of the live link pinned at pin, atomically
// (BPF_LINK_UPDATE: no moment without a program), if it differs or if
// always is set. It reports whether it swapped; rollback swaps back.
func upgradeLink(t *txn, pin string, l link.Link, prog *ebpf.Program, always bool) (bool, error) {
	old, oldInfo, err := linkProgram(l)
	if err != nil {
		return false, fmt.Errorf("inspect %s: %w", pin, err)
	}
	t.finally.push(func() { old.Close() })
	if !always && sameProgram(oldInfo, prog) {
		return false, nil
	}
	if err := l.Update(prog); err != nil {
		return false, fmt.Errorf("replace program of %s: %w", pin, err)
	}
	t.rollback.push(func() {
		if l, err := link.LoadPinnedLink(pin, nil); err == nil {
			l.Update(old)
			l.Close()
		}
	})
	return true, nil
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
