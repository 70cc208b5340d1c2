package docker

import (
	"os"
	"strings"
	"testing"

	"github.com/docker/go-plugins-helpers/network"
)

func createRequest(opts map[string]any, v4 ...*network.IPAMData) *network.CreateNetworkRequest {
	if v4 == nil {
		v4 = []*network.IPAMData{{Pool: "172.16.10.0/24", Gateway: "172.16.10.1/24"}}
	}
	return &network.CreateNetworkRequest{
		NetworkID: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		Options:   map[string]any{genericOptions: opts},
		IPv4Data:  v4,
	}
}

func TestParseNetwork(t *testing.T) {
	n, err := parseNetwork(createRequest(map[string]any{"parent": "lo", "vlan": "10", "mode": "private", "hairpin": "on", "delivery": "xdp", "storm-limit": "2000"}))
	if err != nil {
		t.Fatal(err)
	}
	want := Network{Name: "docker-0123456789ab", Parent: "lo", VLAN: 10, Mode: "private", Hairpin: true, Delivery: "xdp", StormLimit: 2000,
		Subnet: "172.16.10.0/24", Gateway: "172.16.10.1"}
	if n != want {
		t.Errorf("got %+v, want %+v", n, want)
	}
	n, err = parseNetwork(createRequest(map[string]any{"parent": "lo"}))
	if err != nil || n.VLAN != 0 || n.Mode != "bridge" || n.Delivery != "skb" || n.Hairpin || n.StormLimit != 0 {
		t.Errorf("defaults: %+v %v", n, err)
	}
}

// Dual stack: the xmacvlan network gets the IPv4 subnet, the driver keeps
// the IPv6 one for Docker; an IPv6-only network gets the IPv6 subnet.
func TestParseNetworkIPv6(t *testing.T) {
	req := createRequest(map[string]any{"parent": "lo"})
	req.IPv6Data = []*network.IPAMData{{Pool: "fd00:10::/64", Gateway: "fd00:10::1/64"}}
	n, err := parseNetwork(req)
	if err != nil || n.Subnet != "172.16.10.0/24" || n.Gateway != "172.16.10.1" || n.Subnet6 != "fd00:10::/64" || n.Gateway6 != "fd00:10::1" {
		t.Errorf("dual stack: %+v %v", n, err)
	}
	req.IPv4Data = nil
	n, err = parseNetwork(req)
	if err != nil || n.Subnet != "fd00:10::/64" || n.Gateway != "fd00:10::1" || n.Subnet6 != "" {
		t.Errorf("IPv6 only: %+v %v", n, err)
	}
}

func TestParseNetworkRefuses(t *testing.T) {
	for _, c := range []struct {
		req  *network.CreateNetworkRequest
		want string
	}{
		{createRequest(map[string]any{}), "-o parent=NIC is required"},
		{createRequest(map[string]any{"parent": "nosuch0"}), "-o parent=nosuch0: no such interface"},
		{createRequest(map[string]any{"parent": "lo", "vlan": "4095"}), "-o vlan=4095: invalid VLAN 4095: want 1..4094"},
		{createRequest(map[string]any{"parent": "lo", "vlan": "x"}), "-o vlan=x"},
		{createRequest(map[string]any{"parent": "lo", "mode": "passthru"}), "-o mode=passthru: want bridge, private or vepa"},
		{createRequest(map[string]any{"parent": "lo", "hairpin": "yes"}), "-o hairpin=yes: want on or off"},
		{createRequest(map[string]any{"parent": "lo", "delivery": "af_xdp"}), "-o delivery=af_xdp: want skb or xdp"},
		{createRequest(map[string]any{"parent": "lo", "storm-limit": "-1"}), "-o storm-limit=-1: want frames per second each container may flood, 1..100000000, or 0 for no limit"},
		{createRequest(map[string]any{"parent": "lo", "storm-limit": "100000001"}), "-o storm-limit=100000001: want"},
		{createRequest(map[string]any{"parent": "lo", "b": "1", "a": "2"}), "unknown option a, b"},
		{createRequest(map[string]any{"parent": "lo"}, []*network.IPAMData{}...), "a subnet is needed"},
		{createRequest(map[string]any{"parent": "lo"}, &network.IPAMData{Pool: "10.0.0.0/24"}, &network.IPAMData{Pool: "10.1.0.0/24"}), "one subnet per address family and network: got 2 IPv4"},
		{createRequest(map[string]any{"parent": "lo"}, &network.IPAMData{Pool: "10.0.0/24"}), `subnet "10.0.0/24"`},
	} {
		_, err := parseNetwork(c.req)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want %q", c.req.Options[genericOptions], err, c.want)
		}
	}
}

func TestStateSaveLoad(t *testing.T) {
	dir := t.TempDir()
	st, err := LoadState(dir)
	if err != nil || len(st.Networks) != 0 {
		t.Fatalf("a missing file is an empty state: %+v %v", st, err)
	}
	st.Networks["n1"] = Network{Name: "docker-n1", Parent: "ens33", VLAN: 10, Mode: "bridge", Delivery: "skb", Subnet: "10.0.0.0/24"}
	st.Endpoints["e1"] = Endpoint{Network: "n1", MAC: "02:00:00:00:00:01", IP: "10.0.0.2/24", Outer: "xmv2000000", Container: "c1"}
	st.Attached = append(st.Attached, "ens33")
	if err := st.save(dir); err != nil {
		t.Fatal(err)
	}
	got, err := LoadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got.Networks["n1"] != st.Networks["n1"] || got.Endpoints["e1"] != st.Endpoints["e1"] || len(got.Attached) != 1 {
		t.Errorf("round trip: got %+v", got)
	}
	if o := got.Owners()["xmv2000000"]; o.Container != "c1" || o.Endpoint != "e1" || o.String() != "container c1 (docker endpoint e1)" {
		t.Errorf("owner: %+v %q", o, o)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Errorf("temporary files left next to the state: %v", entries)
	}
	os.WriteFile(dir+"/"+StateFile, []byte("{"), 0o600)
	if _, err := LoadState(dir); err == nil || !strings.Contains(err.Error(), StateFile) {
		t.Errorf("a corrupt state file: got %v, want an error naming it", err)
	}
}
