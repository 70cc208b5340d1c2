package lifecycle

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/loader"
)

// A failure at any step of Add leaves no veth, no table entry, no link
// and no unicast filter entry behind; a success then builds the endpoint.
func TestAddRollsBackOnFailure(t *testing.T) {
	testutil.Privileged(t)
	host := testutil.NewNetns(t, "xe")
	wire := testutil.NewNetns(t, "xe")
	cont := testutil.NewNetns(t, "xe")
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ens33"}, PeerName: "wire", PeerNamespace: netlink.NsFd(wire.Handle)}
	if err := host.NL.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	parent, _ := host.NL.LinkByName("ens33")
	host.NL.LinkSetUp(parent)
	root := filepath.Join("/sys/fs/bpf", testutil.Name("xt"))
	t.Cleanup(func() {
		host.Do(func() error { return (&Root{Dir: root}).DetachParent("ens33", true) })
		os.RemoveAll(root)
	})
	r := &Root{Dir: root}
	err := host.Do(func() error {
		if _, err := loader.Attach(loader.AttachOptions{Root: root, Parent: "ens33"}); err != nil {
			return err
		}
		_, err := r.CreateNetwork("ens33", NetworkSpec{Name: "v10", VLAN: 10})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	type state struct{ hostLinks, contLinks, endpoints, records, fdb, pins int }
	snapshot := func() state {
		var s state
		hl, _ := host.NL.LinkList()
		cl, _ := cont.NL.LinkList()
		s.hostLinks, s.contLinks = len(hl), len(cl)
		fdb, _ := host.NL.NeighList(parent.Attrs().Index, 7 /* AF_BRIDGE */)
		s.fdb = len(fdb)
		pins, _ := os.ReadDir(filepath.Join(root, "ens33"))
		s.pins = len(pins)
		host.Do(func() error {
			h, err := loader.Open(root, "ens33")
			if err != nil {
				return err
			}
			defer h.Close()
			eps, err := h.Tables.Endpoints()
			s.endpoints = len(eps)
			recs, _ := h.Tables.Records()
			s.records = len(recs)
			return err
		})
		return s
	}
	_, ipnet, _ := net.ParseCIDR("10.10.0.0/24")
	spec := Spec{Netns: cont.Path(), IP: &net.IPNet{IP: net.ParseIP("10.10.0.5").To4(), Mask: ipnet.Mask}, XDP: true}
	add := func() error {
		return host.Do(func() error {
			_, err := r.AddEndpoint("v10", spec)
			return err
		})
	}

	before := snapshot()
	injected := errors.New("injected failure")
	defer func() { failpoint = func(string) error { return nil } }()
	for _, step := range []string{"in-veth", "after-veth", "after-inner", "after-register"} {
		failpoint = func(s string) error {
			if s == step {
				return injected
			}
			return nil
		}
		if err := add(); !errors.Is(err, injected) {
			t.Fatalf("%s: %v, want the injected failure", step, err)
		}
		if after := snapshot(); after != before {
			t.Errorf("failure %s left %+v, before %+v", step, after, before)
		}
	}
	failpoint = func(string) error { return nil }
	if err := add(); err != nil {
		t.Fatal(err)
	}
	if after := snapshot(); after.endpoints != 1 || after.records != 1 || after.contLinks != before.contLinks+1 || after.fdb != before.fdb+1 {
		t.Errorf("after a successful add: %+v (before %+v)", after, before)
	}
}
