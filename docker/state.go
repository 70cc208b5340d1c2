package docker

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// StateFile is the name of the driver's state file in its state directory.
const StateFile = "state.json"

// State is what Docker told the driver and does not tell again: Docker
// does not replay CreateNetwork after a restart of dockerd or of the
// plugin, so the driver keeps it in a file of its own.
type State struct {
	Networks  map[string]Network  `json:"networks"`  // by Docker network ID
	Endpoints map[string]Endpoint `json:"endpoints"` // by Docker endpoint ID
	Attached  []string            `json:"attached"`  // parents the driver attached itself
}

// Network is a Docker network and the xmacvlan network made for it.
type Network struct {
	Name     string `json:"name"` // the xmacvlan network: docker-<first 12 of the ID>
	Parent   string `json:"parent"`
	VLAN     uint16 `json:"vlan"` // 0: untagged
	Mode     string `json:"mode"`
	Hairpin  bool   `json:"hairpin"`
	Delivery string `json:"delivery"`
	// StormLimit: broadcast/multicast frames per second each container
	// may send (its endpoint's storm limit); 0 = no limit.
	StormLimit uint32 `json:"storm_limit,omitempty"`
	Subnet     string `json:"subnet"`            // 172.16.10.0/24; fd00:10::/64 on an IPv6-only network
	Gateway    string `json:"gateway,omitempty"` // 172.16.10.1
	// The IPv6 subnet of a dual-stack network (--ipv6): Docker configures
	// its addresses, the xmacvlan network knows only Subnet.
	Subnet6  string `json:"subnet6,omitempty"`  // fd00:10::/64
	Gateway6 string `json:"gateway6,omitempty"` // fd00:10::1
}

// Endpoint is a Docker endpoint: its address from Docker's IPAM and,
// once joined, its xmacvlan endpoint (by outer veth) and container.
type Endpoint struct {
	Network   string `json:"network"` // Docker network ID
	MAC       string `json:"mac"`
	IP        string `json:"ip,omitempty"`        // 172.16.10.10/24: the xmacvlan endpoint's address
	IP6       string `json:"ip6,omitempty"`       // fd00:10::10/64 of a dual-stack network: Docker's to set, announced once set
	Outer     string `json:"outer,omitempty"`     // set while joined
	Sandbox   string `json:"sandbox,omitempty"`   // the container's netns path
	Container string `json:"container,omitempty"` // the container's name, from the Docker API
}

func newState() *State {
	return &State{Networks: map[string]Network{}, Endpoints: map[string]Endpoint{}, Attached: []string{}}
}

// LoadState reads the state file in dir; a missing file is an empty state.
func LoadState(dir string) (*State, error) {
	b, err := os.ReadFile(filepath.Join(dir, StateFile))
	if errors.Is(err, os.ErrNotExist) {
		return newState(), nil
	}
	if err != nil {
		return nil, err
	}
	s := newState()
	if err := json.Unmarshal(b, s); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, StateFile), err)
	}
	if s.Networks == nil {
		s.Networks = map[string]Network{}
	}
	if s.Endpoints == nil {
		s.Endpoints = map[string]Endpoint{}
	}
	return s, nil
}

// save writes the state file atomically: a temporary file in the same
// directory, synced, renamed over the old one.
func (s *State) save(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, StateFile+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), filepath.Join(dir, StateFile))
}

// Owner is who a Docker endpoint belongs to.
type Owner struct {
	Endpoint  string // Docker endpoint ID
	Container string // "" while unknown
}

func (o Owner) String() string {
	s := "docker endpoint " + short(o.Endpoint)
	if o.Container != "" {
		s = "container " + o.Container + " (" + s + ")"
	}
	return s
}

// ReadOwners maps the outer veth of every joined Docker endpoint to its
// owner, from the state file in dir (docker-plugin's --state): how
// `endpoint list`, `stats` and the exporter name a Docker endpoint's
// container. No state file is no owner.
func ReadOwners(dir string) (map[string]Owner, error) {
	st, err := LoadState(dir)
	if err != nil {
		return nil, err
	}
	return st.Owners(), nil
}

// Owners maps the outer veth of every joined Docker endpoint to its owner.
func (s *State) Owners() map[string]Owner {
	out := map[string]Owner{}
	for id, ep := range s.Endpoints {
		if ep.Outer != "" {
			out[ep.Outer] = Owner{Endpoint: id, Container: ep.Container}
		}
	}
	return out
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
