package docker

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/docker/go-plugins-helpers/network"
)

// Listen opens the plugin's unix socket at path (Docker finds plugins in
// /run/docker/plugins/NAME.sock). A socket left by a plugin that died is
// replaced; one a live plugin answers on is refused.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return nil, fmt.Errorf("%s: another plugin is serving there", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	return net.Listen("unix", path)
}

// Serve answers Docker's requests on l until l is closed.
func Serve(l net.Listener, d *Driver) error {
	err := network.NewHandler(d).Serve(l)
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
