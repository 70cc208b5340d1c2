package loader

import (
	"encoding/json"
	"net"
	"reflect"
	"testing"

	"github.com/xmacvlan/xmacvlan/tables"
)

// The parent stays in the JSON of a network listed with its parent.
func TestParentNetworkJSON(t *testing.T) {
	_, subnet, _ := net.ParseCIDR("10.0.0.0/24")
	p := ParentNetwork{Parent: "ens33", Network: tables.Network{VLAN: 10, Mode: tables.Bridge, Name: "n10", Subnet: subnet}}
	got, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"parent":"ens33","vlan":10,"mode":"bridge","members":0,"name":"n10","storm_limit":0,"subnet":"10.0.0.0/24"}`
	if string(got) != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	var back ParentNetwork
	if err := json.Unmarshal(got, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, p) {
		t.Fatalf("read back as %+v, want %+v", back, p)
	}
}
