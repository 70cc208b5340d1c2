package loader

import (
	"encoding/json"
	"slices"
)

// MarshalJSON writes the parent, then the network's fields in the form of
// tables.Network.MarshalJSON. Without it, the method promoted from the
// embedded tables.Network would write the network alone.
func (p ParentNetwork) MarshalJSON() ([]byte, error) {
	parent, err := json.Marshal(p.Parent)
	if err != nil {
		return nil, err
	}
	n, err := json.Marshal(p.Network) // an object with at least "vlan"
	if err != nil {
		return nil, err
	}
	return slices.Concat([]byte(`{"parent":`), parent, []byte(","), n[1:]), nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (p *ParentNetwork) UnmarshalJSON(b []byte) error {
	var v struct {
		Parent string `json:"parent"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	p.Parent = v.Parent
	return json.Unmarshal(b, &p.Network)
}
