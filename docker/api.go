package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"
)

// apiClient asks the Docker Engine API (over its unix socket) which
// container an endpoint belongs to.
type apiClient struct {
	http *http.Client
}

// newAPIClient accepts unix:///path/to/docker.sock, as DOCKER_HOST does.
func newAPIClient(host string) (*apiClient, error) {
	path, ok := strings.CutPrefix(host, "unix://")
	if !ok || path == "" {
		return nil, fmt.Errorf("--docker-host %q: want unix:///path/to/docker.sock", host)
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	return &apiClient{http: &http.Client{Transport: tr, Timeout: 5 * time.Second}}, nil
}

// containerName finds the container of endpointID in `docker network
// inspect networkID` (GET /networks/{id}, Engine API 1.41). Docker lists
// the endpoint there only once the Join has completed, so it asks a few
// times.
func (c *apiClient) containerName(networkID, endpointID string) (string, error) {
	var last error
	for delay := 50 * time.Millisecond; delay < 5*time.Second; delay *= 2 {
		name, err := c.lookup(networkID, endpointID)
		if err == nil {
			return name, nil
		}
		last = err
		time.Sleep(delay)
	}
	return "", last
}

func (c *apiClient) lookup(networkID, endpointID string) (string, error) {
	resp, err := c.http.Get("http://docker/v1.41/networks/" + networkID)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /networks/%s: %s", short(networkID), resp.Status)
	}
	var body struct {
		Containers map[string]struct {
			Name       string
			EndpointID string
		}
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return "", err
	}
	for _, c := range body.Containers {
		if c.EndpointID == endpointID {
			return c.Name, nil
		}
	}
	return "", fmt.Errorf("endpoint %s not in network %s yet", short(endpointID), short(networkID))
}
