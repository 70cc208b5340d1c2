package lifecycle

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/internal/frames"
	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// One broadcast from the wire into a VLAN at its maximum size
// (tables.MaxVLANMembers) reaches every member: each copy goes into the
// member's own veth ring (the inner end has NAPI: GRO on), not into the
// CPU's shared input backlog (netdev_max_backlog), which used to drop the
// copies past ~1,000 silently. Any shortfall must be exactly what the outer
// veths count as dropped (EndpointStatus.RxDropped).
func TestFloodReachesEveryMember(t *testing.T) {
	testutil.Privileged(t)
	if testing.Short() {
		t.Skip("creates 1,024 endpoints")
	}
	host := testutil.NewNetns(t, "xf")
	wire := testutil.NewNetns(t, "xf")
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ens33"}, PeerName: "wire", PeerNamespace: netlink.NsFd(wire.Handle)}
	if err := host.NL.LinkAdd(v); err != nil {
		t.Fatal(err)
	}
	parent, _ := host.NL.LinkByName("ens33")
	host.NL.LinkSetUp(parent)
	w, _ := wire.NL.LinkByName("wire")
	wire.NL.LinkSetUp(w)
	var nss []*testutil.Netns
	for range 8 {
		ns := testutil.NewNetns(t, "xf")
		// No IPv6 chatter from 1,024 members flooding each other.
		if err := ns.Do(func() error {
			return os.WriteFile("/proc/sys/net/ipv6/conf/default/disable_ipv6", []byte("1"), 0)
		}); err != nil {
			t.Fatal(err)
		}
		nss = append(nss, ns)
	}
	root := filepath.Join("/sys/fs/bpf", testutil.Name("xf"))
	r := &Root{Dir: root}
	t.Cleanup(func() {
		host.Do(func() error { return r.DetachParent("ens33", true) })
		os.RemoveAll(root)
	})
	const vlan = 10
	members := tables.MaxVLANMembers
	err := host.Do(func() error {
		if _, err := loader.Attach(loader.AttachOptions{Root: root, Parent: "ens33", XDP: loader.XDPOff}); err != nil {
			return err
		}
		if _, err := r.CreateNetwork("ens33", NetworkSpec{Name: "v10", VLAN: vlan}); err != nil {
			return err
		}
		for i := range members {
			s := Spec{Netns: nss[i%len(nss)].Path(), Name: fmt.Sprintf("eth%d", i/len(nss))}
			if _, err := r.AddEndpoint("v10", s); err != nil {
				return fmt.Errorf("add %d: %w", i, err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	received := func() (n uint64) {
		for _, ns := range nss {
			links, err := ns.NL.LinkList()
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range links {
				if l.Type() == "veth" {
					n += l.Attrs().Statistics.RxPackets
				}
			}
		}
		return n
	}
	dropped := func() (n uint64) {
		host.Do(func() error {
			eps, err := r.Endpoints("v10")
			if err != nil {
				t.Fatal(err)
			}
			for _, ep := range eps {
				n += ep.RxDropped
			}
			return nil
		})
		return n
	}
	sender, err := frames.NewSender(wire.Handle, "wire")
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	frame := []byte{
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 1,
		0x81, 0x00, 0, vlan, 0x88, 0xb5, // 802.1Q, then the local experimental EtherType
	}
	frame = append(frame, make([]byte, 46)...)
	rx0, drop0 := received(), dropped()
	if err := sender.Send(frame); err != nil {
		t.Fatal(err)
	}
	var got, lost uint64
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		got, lost = received()-rx0, dropped()-drop0
		if got+lost >= uint64(members) {
			break
		}
	}
	t.Logf("one broadcast into %d members: %d delivered, %d counted as dropped", members, got, lost)
	if got+lost != uint64(members) {
		t.Errorf("%d delivered + %d counted dropped, want %d: copies lost silently", got, lost, members)
	}
	if lost != 0 {
		t.Errorf("%d copies dropped, want every member to get one", lost)
	}
}
