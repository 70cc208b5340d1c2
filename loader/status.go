package loader

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/internal/state"
	"github.com/xmacvlan/xmacvlan/tables"
)

// ParentStatus is what `xmacvlan status` reports for one parent.
type ParentStatus struct {
	Parent  string `json:"parent"`
	Ifindex int    `json:"ifindex"`
	Present bool   `json:"present"` // the interface exists here with that ifindex
	// RenamedTo is the parent's name now, when it was renamed since
	// attach (found by its ifindex and the links on it).
	RenamedTo string `json:"renamed_to,omitempty"`
	// XDP is "on" while the XDP program runs on the parent in native
	// mode, else "off" (tcx classifies alone); XDPChoice is what attach
	// --xdp asked, XDPReason why XDP is on or off, Driver the parent's
	// driver (ethtool -i) the choice auto goes by.
	XDP       string           `json:"xdp"`
	XDPChoice XDPChoice        `json:"xdp_choice"`
	XDPReason string           `json:"xdp_reason"`
	Driver    string           `json:"driver"`
	Hairpin   bool             `json:"hairpin"`
	Links     []LinkStatus     `json:"links"`
	Tables    []TableStatus    `json:"tables"`
	Settings  *tables.Settings `json:"settings,omitempty"`
	// How the parent accepts the endpoints' MACs: its promiscuity count
	// (0 = not promiscuous) and the unicast addresses it filters on.
	Promiscuity int    `json:"promiscuity"`
	UnicastMACs int    `json:"unicast_macs"`
	Error       string `json:"error,omitempty"`
}

// LinkStatus describes one pinned link and the program it runs.
type LinkStatus struct {
	Pin       string `json:"pin"`
	Hook      string `json:"hook"`
	Ifindex   int    `json:"ifindex"`
	Alive     bool   `json:"alive"`
	LinkID    int    `json:"link_id"`
	ProgramID int    `json:"program_id"`
	Program   string `json:"program"`
	Tag       string `json:"tag"`
}

// TableStatus is one table's fill level.
type TableStatus = tables.Fill

// Status reports every parent attached under root, or only the one named.
// It reads under the root's shared lock: it waits for an attach or a
// detach, never for endpoint changes.
func Status(root, only string) ([]ParentStatus, error) {
	r, err := openRead(root)
	if r == nil {
		return nil, err
	}
	defer r.Close()
	parents, err := r.Parents(only)
	if err != nil {
		return nil, err
	}
	var out []ParentStatus
	for _, parent := range parents {
		out = append(out, parentStatus(r.ParentDir(parent)))
	}
	return out, nil
}

func parentStatus(dir string) ParentStatus {
	st := ParentStatus{Parent: filepath.Base(dir), XDP: "off", Links: []LinkStatus{}, Tables: []TableStatus{}} // [] not null in JSON
	tables, err := tables.OpenPinned(dir)
	if err != nil {
		st.Error = err.Error()
		return st
	}
	defer tables.Close()
	name := st.Parent
	if s, err := tables.Settings(); err == nil {
		st.Settings = &s
		st.Ifindex = s.ParentIfindex
		st.Hairpin = s.Hairpin
		if now, ok := parentName(dir, s); ok && now != st.Parent {
			st.RenamedTo, name = now, now
		}
	}
	if l, err := netlink.LinkByName(name); err == nil && l.Attrs().Index == st.Ifindex {
		st.Present = true
		st.Promiscuity = l.Attrs().Promisc
		st.UnicastMACs = unicastMACs(st.Ifindex)
		if nativeXDP(l) {
			st.XDP = "on"
		}
		st.Driver = driverOf(name)
		if st.Settings != nil {
			st.XDPChoice = XDPChoice(st.Settings.XDPChoice)
			n, _ := countXDPDelivery(tables)
			want, reason := decideXDP(st.XDPChoice, st.Driver, n)
			switch {
			case want && st.XDP == "off" && st.XDPChoice == XDPAuto && n == 0:
				reason = noNativeXDP(st.Driver)
			case want != (st.XDP == "on"):
				reason += fmt.Sprintf(", but XDP is %s: `xmacvlan attach %s` sets it right", st.XDP, name)
			}
			st.XDPReason = reason
		}
	}
	st.Tables = tables.Fills()

	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), state.PinLinkPrefix) {
			st.Links = append(st.Links, linkStatus(filepath.Join(dir, e.Name())))
		}
	}
	slices.SortFunc(st.Links, func(a, b LinkStatus) int { return strings.Compare(a.Pin, b.Pin) })
	return st
}

func linkStatus(pin string) LinkStatus {
	ls := LinkStatus{Pin: filepath.Base(pin)}
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		return ls
	}
	defer l.Close()
	info, err := l.Info()
	if err != nil {
		return ls
	}
	ls.LinkID = int(info.ID)
	switch {
	case info.XDP() != nil:
		ls.Hook, ls.Ifindex = "xdp", int(info.XDP().Ifindex)
	case info.TCX() != nil:
		ls.Hook, ls.Ifindex = "tcx-"+tcxDirection(info.TCX().AttachType), int(info.TCX().Ifindex)
	}
	ls.Alive = ls.Ifindex != 0
	if p, pi, err := linkProgram(l); err == nil {
		p.Close()
		id, _ := pi.ID()
		ls.ProgramID, ls.Program, ls.Tag = int(id), pi.Name, pi.Tag
	}
	return ls
}

func tcxDirection[T ~uint32](at T) string {
	if ebpf.AttachType(at) == ebpf.AttachTCXEgress {
		return "egress"
	}
	return "ingress"
}

// unicastMACs counts the unicast addresses on the parent's filter list
// (the "self" fdb entries; multicast groups excluded).
func unicastMACs(ifindex int) int {
	neighs, err := netlink.NeighList(ifindex, unix.AF_BRIDGE)
	if err != nil {
		return 0
	}
	n := 0
	for _, ne := range neighs {
		if ne.Flags&netlink.NTF_SELF != 0 && len(ne.HardwareAddr) == 6 && ne.HardwareAddr[0]&1 == 0 {
			n++
		}
	}
	return n
}
