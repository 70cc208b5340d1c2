package tables

import (
	"encoding/json"
	"net"
	"reflect"
	"testing"
)

// Every field is written the way a user types it, and reads back.
func TestJSONForms(t *testing.T) {
	_, subnet, _ := net.ParseCIDR("10.0.0.0/24")
	ip := &net.IPNet{IP: net.ParseIP("10.0.0.5").To4(), Mask: net.CIDRMask(24, 32)}
	mac, _ := net.ParseMAC("02:00:00:00:05:11")
	for _, tc := range []struct {
		v, back any
		want    string
	}{
		{Network{VLAN: 10, Mode: VEPA, Members: 1, MTU: 1400, Name: "n10", Subnet: subnet, Gateway: net.ParseIP("10.0.0.1").To4(), StormLimit: 500}, &Network{},
			`{"vlan":10,"mode":"vepa","members":1,"mtu":1400,"name":"n10","gateway":"10.0.0.1","storm_limit":500,"subnet":"10.0.0.0/24"}`},
		{Network{Name: "lan"}, &Network{},
			`{"vlan":0,"mode":"bridge","members":0,"name":"lan","storm_limit":0}`},
		{Endpoint{Ifindex: 7, ID: 2, VLAN: 10, MAC: mac, Netns: "c1", NetnsIno: 42, Ifname: "eth0", IP: ip, StormLimit: 100}, &Endpoint{},
			`{"ifindex":7,"id":2,"vlan":10,"xdp_delivery":false,"host":false,"storm_limit":100,"netns":"c1","netns_ino":42,"ifname":"eth0","mac":"02:00:00:00:05:11","ip":"10.0.0.5/24"}`},
		{Settings{ParentIfindex: 3, ParentMAC: mac, Hairpin: true, XDPChoice: "auto"}, &Settings{},
			`{"parent_ifindex":3,"hairpin":true,"restore_rx_vlan":false,"xdp_choice":"auto","netns_cookie":0,"parent_mac":"02:00:00:00:05:11"}`},
	} {
		got, err := json.Marshal(tc.v)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tc.want {
			t.Errorf("%T:\n got %s\nwant %s", tc.v, got, tc.want)
			continue
		}
		if err := json.Unmarshal(got, tc.back); err != nil {
			t.Fatalf("%T: read back %s: %v", tc.v, got, err)
		}
		if back := reflect.ValueOf(tc.back).Elem().Interface(); !reflect.DeepEqual(back, tc.v) {
			t.Errorf("%T: read back as %+v, want %+v", tc.v, back, tc.v)
		}
	}
}
