package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// attachment is what the plugin remembers of one ADD, keyed by the CNI
// attachment (container ID + ifname): the namespace the endpoint went
// to, so DEL and GC find the endpoint when the runtime no longer gives
// it (containerd's second DEL has an empty CNI_NETNS). The endpoint's
// record in the state root has no room for a container ID, and the root
// is on bpffs, which holds no files: the store is a directory tree,
// STATEDIR/NETWORK/CONTAINERID/IFNAME, one JSON file per attachment.
type attachment struct {
	ContainerID string `json:"containerID"`
	Ifname      string `json:"ifname"`
	Netns       string `json:"netns"`
	MAC         string `json:"mac,omitempty"`
	Outer       string `json:"outer,omitempty"`
}

type store struct{ dir string } // STATEDIR/NETWORK

func openStore(c *NetConf) store { return store{dir: filepath.Join(c.StateDir, c.Name)} }

func (s store) path(containerID, ifname string) string {
	return filepath.Join(s.dir, containerID, ifname)
}

// put writes a atomically (a temporary file renamed over the old one).
func (s store) put(a attachment) error {
	p := s.path(a.ContainerID, a.Ifname)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("attachment record: %w", err)
	}
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("attachment record: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("attachment record: %w", err)
	}
	return nil
}

// get reads the attachment; found is false when there is none.
func (s store) get(containerID, ifname string) (a attachment, found bool, err error) {
	b, err := os.ReadFile(s.path(containerID, ifname))
	if errors.Is(err, os.ErrNotExist) {
		return a, false, nil
	}
	if err != nil {
		return a, false, fmt.Errorf("attachment record: %w", err)
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return a, false, fmt.Errorf("attachment record %s: %w", s.path(containerID, ifname), err)
	}
	return a, true, nil
}

// remove deletes the attachment, and its container's directory once empty.
func (s store) remove(containerID, ifname string) error {
	p := s.path(containerID, ifname)
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("attachment record: %w", err)
	}
	os.Remove(filepath.Dir(p)) // fails while the container has others
	return nil
}

// list returns every attachment of the network.
func (s store) list() ([]attachment, error) {
	files, err := filepath.Glob(filepath.Join(s.dir, "*", "*"))
	if err != nil {
		return nil, err
	}
	var out []attachment
	for _, f := range files {
		if filepath.Ext(f) == ".tmp" {
			continue
		}
		a, found, err := s.get(filepath.Base(filepath.Dir(f)), filepath.Base(f))
		if err != nil {
			return nil, err
		}
		if found {
			out = append(out, a)
		}
	}
	return out, nil
}
