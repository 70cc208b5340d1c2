package tables

import (
	"encoding/json"
	"fmt"
	"net"
)

// The JSON forms of the tables' types are what a user writes on the command
// line: MACs as "02:00:00:00:05:11", prefixes as "10.0.0.0/24", addresses
// as text, modes as "bridge". encoding/json would otherwise write a MAC
// ([]byte) in base64 and a *net.IPNet as a struct of bytes.

// textMAC is an Ethernet address in the form of net.HardwareAddr.String.
type textMAC net.HardwareAddr

func (m textMAC) MarshalText() ([]byte, error) { return []byte(net.HardwareAddr(m).String()), nil }

func (m *textMAC) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		*m = nil
		return nil
	}
	hw, err := net.ParseMAC(string(b))
	if err != nil {
		return err
	}
	*m = textMAC(hw)
	return nil
}

// textPrefix is an address with its prefix length, "ADDRESS/LEN" as in
// `ip address`: the address is kept as given, not masked.
type textPrefix net.IPNet

func (p textPrefix) MarshalText() ([]byte, error) { return []byte((*net.IPNet)(&p).String()), nil }

func (p *textPrefix) UnmarshalText(b []byte) error {
	ip, n, err := net.ParseCIDR(string(b))
	if err != nil {
		return fmt.Errorf("prefix %q: want ADDRESS/LEN", b)
	}
	*p = textPrefix{IP: unmap(ip), Mask: n.Mask}
	return nil
}

func prefixOut(p *net.IPNet) *textPrefix { return (*textPrefix)(p) }

func prefixIn(p *textPrefix) *net.IPNet { return (*net.IPNet)(p) }

// plainNetwork, plainEndpoint and plainSettings have the fields and tags of
// their types but not their JSON methods; the fields the wrappers below
// declare again take precedence (encoding/json prefers the shallower one).
type (
	plainNetwork  Network
	plainEndpoint Endpoint
	plainSettings Settings
)

type networkJSON struct {
	*plainNetwork
	Subnet *textPrefix `json:"subnet,omitempty"`
}

func (n Network) MarshalJSON() ([]byte, error) {
	return json.Marshal(networkJSON{(*plainNetwork)(&n), prefixOut(n.Subnet)})
}

func (n *Network) UnmarshalJSON(b []byte) error {
	v := networkJSON{plainNetwork: (*plainNetwork)(n)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	n.Subnet = prefixIn(v.Subnet)
	if n.Gateway != nil {
		n.Gateway = unmap(n.Gateway) // as networkFromRaw gives it
	}
	return nil
}

type endpointJSON struct {
	*plainEndpoint
	MAC textMAC     `json:"mac"`
	IP  *textPrefix `json:"ip,omitempty"`
}

func (ep Endpoint) MarshalJSON() ([]byte, error) {
	return json.Marshal(endpointJSON{(*plainEndpoint)(&ep), textMAC(ep.MAC), prefixOut(ep.IP)})
}

func (ep *Endpoint) UnmarshalJSON(b []byte) error {
	v := endpointJSON{plainEndpoint: (*plainEndpoint)(ep)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	ep.MAC, ep.IP = net.HardwareAddr(v.MAC), prefixIn(v.IP)
	return nil
}

type settingsJSON struct {
	*plainSettings
	ParentMAC textMAC `json:"parent_mac"`
}

func (s Settings) MarshalJSON() ([]byte, error) {
	return json.Marshal(settingsJSON{(*plainSettings)(&s), textMAC(s.ParentMAC)})
}

func (s *Settings) UnmarshalJSON(b []byte) error {
	v := settingsJSON{plainSettings: (*plainSettings)(s)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	s.ParentMAC = net.HardwareAddr(v.ParentMAC)
	return nil
}
