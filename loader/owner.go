package loader

import (
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/internal/state"
	"github.com/xmacvlan/xmacvlan/tables"
)

// objectPrefix starts the name of every program and map of the datapath
// (bpf/xmacvlan.c), as the kernel reports them.
const objectPrefix = "xmv_"

// netnsCookie identifies the caller's network namespace: SO_NETNS_COOKIE
// (linux 5.14) of a socket made here, unique for the boot and never
// reused, unlike the namespace's inode number.
func netnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, fmt.Errorf("identify the network namespace: %w", err)
	}
	defer unix.Close(fd)
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("identify the network namespace (SO_NETNS_COOKIE): %w", err)
	}
	return c, nil
}

// checkNetns refuses to use a root (its parent only, or all of them) from
// a network namespace other than the one its parents were attached in:
// ifindexes and interface names mean something else here, so the tables
// would point at the wrong devices.
func checkNetns(root *state.Root, only string, cookie uint64) error {
	parents, err := root.Parents(only)
	if err != nil {
		return err
	}
	for _, parent := range parents {
		tbl, err := tables.OpenPinned(root.ParentDir(parent))
		if err != nil {
			continue // nothing recorded
		}
		s, err := tbl.Settings()
		tbl.Close()
		if err != nil {
			continue // an older build's layout: it recorded no namespace
		}
		if s.NetnsCookie != 0 && s.NetnsCookie != cookie {
			return fmt.Errorf("%s belongs to another network namespace: %s was attached there "+
				"(netns cookie %d; this one is %d); use a --bpffs root of its own in each namespace",
				root.Dir, parent, s.NetnsCookie, cookie)
		}
	}
	return nil
}

// checkNetnsOf is checkNetns for one parent, in the caller's namespace.
func checkNetnsOf(root *state.Root, parent string) error {
	cookie, err := netnsCookie()
	if err != nil {
		return err
	}
	return checkNetns(root, parent, cookie)
}

// checkOneDatapath refuses a parent whose NIC carries xmacvlan programs
// other than those behind the links pinned for it in root: another root's
// datapath, or this root's under the NIC's old name. Two datapaths on one
// NIC would each claim its frames, and one of them would report a network
// that gets nothing.
func checkOneDatapath(root *state.Root, parent string, ifindex int) error {
	ours := map[ebpf.ProgramID]bool{}
	for _, pin := range []string{state.PinXDPLink, state.PinRxTCLink, state.PinHostTxLink} {
		l, _, err := pinnedLink(root.Pin(parent, pin), ifindex)
		if err != nil || l == nil {
			continue
		}
		if elsewhere := linkTarget(l); elsewhere != 0 && elsewhere != ifindex {
			l.Close()
			name := fmt.Sprintf("ifindex %d", elsewhere)
			if nl, err := netlink.LinkByIndex(elsewhere); err == nil {
				name = nl.Attrs().Name
			}
			return fmt.Errorf("the datapath attached as %s runs on %s now (renamed since?), not on this %s; "+
				"detach it first: `xmacvlan detach %s`", parent, name, parent, parent)
		}
		if p, pi, err := linkProgram(l); err == nil {
			id, _ := pi.ID()
			ours[id] = true
			p.Close()
		}
		l.Close()
	}
	var attached []ebpf.ProgramID
	if nl, err := netlink.LinkByIndex(ifindex); err == nil {
		if x := nl.Attrs().Xdp; x != nil && x.Attached && x.ProgId != 0 {
			attached = append(attached, ebpf.ProgramID(x.ProgId))
		}
	}
	for _, at := range []ebpf.AttachType{ebpf.AttachTCXIngress, ebpf.AttachTCXEgress} {
		q, err := link.QueryPrograms(link.QueryOptions{Target: ifindex, Attach: at})
		if err != nil {
			continue
		}
		for _, p := range q.Programs {
			attached = append(attached, p.ID)
		}
	}
	for _, id := range attached {
		if ours[id] {
			continue
		}
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // detached meanwhile
		}
		pi, err := p.Info()
		p.Close()
		if err != nil || !strings.HasPrefix(pi.Name, objectPrefix) {
			continue // not ours to judge; attaching next to it fails or works on its own terms
		}
		return fmt.Errorf("%s already carries an xmacvlan datapath (program %s, id %d) %s; "+
			"one NIC carries one datapath: detach that one first", parent, pi.Name, id, ownerOf(pi, root))
	}
	return nil
}

// ownerOf says where the tables of a program are pinned: the root and the
// parent name it was attached under. It searches the bpf filesystem for a
// pin of one of the program's xmacvlan tables.
func ownerOf(pi *ebpf.ProgramInfo, root *state.Root) string {
	ids, _ := pi.MapIDs()
	mine := map[string]ebpf.MapID{}
	for _, id := range ids {
		if name, err := mapName(id); err == nil && strings.HasPrefix(name, objectPrefix) {
			mine[name] = id
		}
	}
	var found string
	const base = "/sys/fs/bpf"
	filepath.WalkDir(base, func(path string, e fs.DirEntry, err error) error {
		if found != "" {
			return fs.SkipAll
		}
		if err != nil {
			return nil
		}
		if e.IsDir() && strings.Count(strings.TrimPrefix(path, base), "/") > 4 {
			return fs.SkipDir
		}
		want, ok := mine[e.Name()]
		if !ok || e.IsDir() {
			return nil
		}
		m, err := ebpf.LoadPinnedMap(path, &ebpf.LoadPinOptions{ReadOnly: true})
		if err != nil {
			return nil
		}
		defer m.Close()
		if info, err := m.Info(); err == nil {
			if id, _ := info.ID(); id == want {
				found = filepath.Dir(path)
			}
		}
		return nil
	})
	if found == "" {
		return "whose tables are pinned nowhere under " + base
	}
	otherRoot, otherParent := filepath.Dir(found), filepath.Base(found)
	if otherRoot == filepath.Clean(root.Dir) {
		return fmt.Sprintf("attached as %s in this root (renamed since?): `xmacvlan detach %s`", otherParent, otherParent)
	}
	return fmt.Sprintf("attached as %s under root %s: `xmacvlan --bpffs %s detach %s`", otherParent, otherRoot, otherRoot, otherParent)
}

// parentName is the name the parent recorded in settings has now, found
// by its ifindex, if it still carries the links pinned in dir: a parent
// renamed since attach is still the same NIC.
func parentName(dir string, s tables.Settings) (string, bool) {
	l, alive, err := pinnedLink(filepath.Join(dir, state.PinRxTCLink), s.ParentIfindex)
	if l != nil {
		l.Close()
	}
	if err != nil || !alive {
		return "", false
	}
	nl, err := netlink.LinkByIndex(s.ParentIfindex)
	if err != nil {
		return "", false
	}
	return nl.Attrs().Name, true
}

// linkTarget is the ifindex a live XDP or tcx link drives (0: defunct).
func linkTarget(l link.Link) int {
	info, err := l.Info()
	if err != nil {
		return 0
	}
	switch {
	case info.XDP() != nil:
		return int(info.XDP().Ifindex)
	case info.TCX() != nil:
		return int(info.TCX().Ifindex)
	}
	return 0
}
