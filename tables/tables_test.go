package tables

import (
	"errors"
	"math/rand"
	"net"
	"slices"
	"testing"

	"github.com/xmacvlan/xmacvlan/bpf"
	"github.com/xmacvlan/xmacvlan/internal/testutil"
)

func TestEveryReasonAndEventDescribed(t *testing.T) {
	for _, r := range DropReasons() {
		if r.String() == "" || r.Explain() == "" {
			t.Errorf("drop reason %d has no name or explanation", r)
		}
	}
	for _, e := range EventKinds() {
		if e.String() == "" || e.Explain() == "" {
			t.Errorf("event %d has no name or explanation", e)
		}
	}
}

// newTables loads the datapath's maps, unpinned, for one test.
func newTables(t *testing.T) *Tables {
	testutil.Privileged(t)
	var m bpf.XmacvlanMaps
	if err := bpf.LoadXmacvlanObjects(&m, nil); err != nil {
		t.Fatal(err)
	}
	tb := New(&m)
	t.Cleanup(tb.Close)
	return tb
}

func mac(i int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}
}

func TestBadInputChangesNothing(t *testing.T) {
	tb := newTables(t)
	if err := tb.AddNetwork(Network{VLAN: 10, Name: "v10"}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddEndpoint(Endpoint{Ifindex: 100, VLAN: 10, MAC: mac(1)}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"VLAN 4095", tb.AddNetwork(Network{VLAN: 4095})},
		{"duplicate VLAN", tb.AddNetwork(Network{VLAN: 10})},
		{"long name", tb.AddNetwork(Network{VLAN: 11, Name: "0123456789012345678901234567890123"})},
		{"no network", func() error { _, err := tb.AddEndpoint(Endpoint{Ifindex: 101, VLAN: 11, MAC: mac(2)}); return err }()},
		{"duplicate MAC", func() error { _, err := tb.AddEndpoint(Endpoint{Ifindex: 101, VLAN: 10, MAC: mac(1)}); return err }()},
		{"duplicate ifindex", func() error { _, err := tb.AddEndpoint(Endpoint{Ifindex: 100, VLAN: 10, MAC: mac(2)}); return err }()},
		{"short MAC", func() error {
			_, err := tb.AddEndpoint(Endpoint{Ifindex: 101, VLAN: 10, MAC: net.HardwareAddr{2, 0, 0, 0, 1}})
			return err
		}()},
		{"delete network in use", tb.DeleteNetwork(10)},
	} {
		if tc.err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	eps, _ := tb.Endpoints()
	nets, _ := tb.Networks()
	if len(eps) != 1 || len(nets) != 1 || nets[0].Members != 1 {
		t.Errorf("tables changed: %d endpoints, networks %+v", len(eps), nets)
	}
}

func TestFullTablesSayFull(t *testing.T) {
	tb := newTables(t)
	for v := 1; v <= 8; v++ {
		if err := tb.AddNetwork(Network{VLAN: uint16(v)}); err != nil {
			t.Fatal(err)
		}
	}
	// One VLAN floods to at most MaxVLANMembers endpoints.
	for i := 0; i < MaxVLANMembers; i++ {
		if _, err := tb.AddEndpoint(Endpoint{Ifindex: 1000 + i, VLAN: 1, MAC: mac(i)}); err != nil {
			t.Fatalf("endpoint %d: %v", i, err)
		}
	}
	_, err := tb.AddEndpoint(Endpoint{Ifindex: 99999, VLAN: 1, MAC: mac(99999)})
	if !errors.Is(err, ErrFull) {
		t.Fatalf("endpoint past the VLAN bound: %v, want ErrFull", err)
	}
	// The parent holds at most MaxEndpoints.
	for i := MaxVLANMembers; i < MaxEndpoints; i++ {
		vlan := uint16(2 + (i-MaxVLANMembers)/MaxVLANMembers)
		if _, err := tb.AddEndpoint(Endpoint{Ifindex: 1000 + i, VLAN: vlan, MAC: mac(i)}); err != nil {
			t.Fatalf("endpoint %d: %v", i, err)
		}
	}
	_, err = tb.AddEndpoint(Endpoint{Ifindex: 99999, VLAN: 8, MAC: mac(99999)})
	if !errors.Is(err, ErrFull) {
		t.Fatalf("endpoint past the table: %v, want ErrFull", err)
	}
	if _, ok, _ := tb.Endpoint(99999); ok {
		t.Error("a refused endpoint was left in the table")
	}
}

// The flood list stays dense and exact under any order of adds and
// deletes (a swap-with-last removal, checked against a set).
func TestFloodListStaysExact(t *testing.T) {
	tb := newTables(t)
	if err := tb.AddNetwork(Network{VLAN: 7}); err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewSource(1))
	live := map[int]bool{}
	for step := 0; step < 600; step++ {
		i := rng.Intn(40)
		if live[i] {
			if err := tb.DeleteEndpoint(1000 + i); err != nil {
				t.Fatal(err)
			}
			delete(live, i)
		} else {
			if _, err := tb.AddEndpoint(Endpoint{Ifindex: 1000 + i, VLAN: 7, MAC: mac(i)}); err != nil {
				t.Fatal(err)
			}
			live[i] = true
		}
		n, _, _ := tb.Network(7)
		if n.Members != len(live) {
			t.Fatalf("step %d: %d members, want %d", step, n.Members, len(live))
		}
		seen := map[int]bool{}
		for idx := 0; idx < n.Members; idx++ {
			var ep bpf.XmacvlanEndpoint
			if err := tb.m.XmvFlood.Lookup(bpf.XmacvlanFloodKey{Vlan: 7, Idx: uint16(idx)}, &ep); err != nil {
				t.Fatalf("step %d: slot %d: %v", step, idx, err)
			}
			seen[int(ep.Ifindex)-1000] = true
		}
		if len(seen) != len(live) {
			t.Fatalf("step %d: flood list %v, live %v", step, seen, live)
		}
		for i := range live {
			if !seen[i] {
				t.Fatalf("step %d: %d missing from the flood list", step, i)
			}
		}
		var ep bpf.XmacvlanEndpoint
		if tb.m.XmvFlood.Lookup(bpf.XmacvlanFloodKey{Vlan: 7, Idx: uint16(n.Members)}, &ep) == nil {
			t.Fatalf("step %d: stale slot past the end", step)
		}
	}
}

func TestNetworkFieldsRoundTrip(t *testing.T) {
	tb := newTables(t)
	_, subnet, _ := net.ParseCIDR("172.16.10.0/24")
	want := Network{VLAN: 10, Mode: VEPA, MTU: 1400, Name: "bbox10", Subnet: subnet, Gateway: net.ParseIP("172.16.10.1").To4()}
	if err := tb.AddNetwork(want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := tb.Network(10)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if got.Name != want.Name || got.Mode != want.Mode || got.MTU != want.MTU ||
		got.Subnet.String() != want.Subnet.String() || !got.Gateway.Equal(want.Gateway) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// TestVLANTableFollowsNetworks: AddNetwork and DeleteNetwork write the
// definition and the VLAN table together; a crash between the two writes
// (simulated by writing one of them alone) is found by SyncVLANs, reported
// by a dry run without change, and repaired.
func TestVLANTableFollowsNetworks(t *testing.T) {
	tb := newTables(t)
	if err := tb.AddNetwork(Network{VLAN: 10, Name: "v10", Mode: Private}); err != nil {
		t.Fatal(err)
	}
	if _, err := tb.AddEndpoint(Endpoint{Ifindex: 100, VLAN: 10, MAC: mac(1)}); err != nil {
		t.Fatal(err)
	}
	v, err := tb.vlanEntry(10)
	if err != nil {
		t.Fatal(err)
	}
	if want := (bpf.XmacvlanVlan{Flags: uint32(bpf.XmacvlanVlanFlagsVLAN_DEFINED), Mode: bpf.XmacvlanNetModeMODE_PRIVATE, Members: 1}); v != want {
		t.Fatalf("VLAN 10's entry %+v, want %+v", v, want)
	}
	if wrong, err := tb.SyncVLANs(true); err != nil || len(wrong) != 0 {
		t.Fatalf("consistent tables: SyncVLANs says %v, %v", wrong, err)
	}

	// Killed inside AddNetwork of VLAN 20: a definition the datapath does
	// not see. Killed inside DeleteNetwork of VLAN 30 the same way. An
	// entry without a definition (VLAN 40) cannot come from either, but is
	// repaired as well.
	for _, vlan := range []uint16{20, 30} {
		if err := tb.m.XmvNetworks.Update(vlan, Network{VLAN: vlan, Mode: VEPA}.raw(), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := tb.putVLAN(40, bpf.XmacvlanVlan{Flags: uint32(bpf.XmacvlanVlanFlagsVLAN_DEFINED)}); err != nil {
		t.Fatal(err)
	}
	wrong, err := tb.SyncVLANs(true)
	if err != nil || !slices.Equal(wrong, []uint16{20, 30, 40}) {
		t.Fatalf("dry run: %v, %v; want VLANs 20, 30, 40", wrong, err)
	}
	if v, _ := tb.vlanEntry(20); defined(v) {
		t.Fatalf("the dry run changed VLAN 20: %+v", v)
	}
	if wrong, err = tb.SyncVLANs(false); err != nil || len(wrong) != 3 {
		t.Fatalf("repair: %v, %v", wrong, err)
	}
	for vlan, want := range map[uint16]bpf.XmacvlanVlan{
		10: {Flags: uint32(bpf.XmacvlanVlanFlagsVLAN_DEFINED), Mode: bpf.XmacvlanNetModeMODE_PRIVATE, Members: 1},
		20: {Flags: uint32(bpf.XmacvlanVlanFlagsVLAN_DEFINED), Mode: bpf.XmacvlanNetModeMODE_VEPA},
		30: {Flags: uint32(bpf.XmacvlanVlanFlagsVLAN_DEFINED), Mode: bpf.XmacvlanNetModeMODE_VEPA},
		40: {},
	} {
		if v, _ := tb.vlanEntry(vlan); v != want {
			t.Errorf("VLAN %d after repair: %+v, want %+v", vlan, v, want)
		}
	}
	if err := tb.DeleteNetwork(20); err != nil {
		t.Fatal(err)
	}
	if v, _ := tb.vlanEntry(20); v != (bpf.XmacvlanVlan{}) {
		t.Errorf("deleted network's VLAN entry: %+v", v)
	}
}
