// Package docker is xmacvlan's Docker network driver: it serves Docker's
// remote network driver protocol (libnetwork's remote driver API, through
// github.com/docker/go-plugins-helpers/network) and builds each network
// and endpoint with the lifecycle package, as the CLI does.
//
// Docker asks and the driver answers:
//   - CreateNetwork: check the -o options, attach the parent if it is not
//     attached yet, create the xmacvlan network docker-<ID12>.
//   - CreateEndpoint: take the addresses from Docker's IPAM, pick a MAC if
//     Docker has none. The endpoint's record keeps the one of the xmacvlan
//     network's subnet; Docker sets a dual-stack network's IPv6 address
//     itself and the driver announces it too.
//   - Join: build the endpoint with its inner end in the plugin's namespace
//     (lifecycle.Spec.Moved) and hand its name to Docker, which moves it
//     into the container and configures it; the gratuitous ARP follows
//     once the address is there (lifecycle.Root.WaitMoved).
//   - DeleteEndpoint and DeleteNetwork undo them; the parent is detached
//     only if the driver attached it and nothing else is on it.
//
// The driver's state (State) is a JSON file under its state directory,
// reconciled with the pinned tables on start.
package docker

import (
	"fmt"
	"log"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/docker/go-plugins-helpers/network"

	"github.com/xmacvlan/xmacvlan/lifecycle"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// DefaultSocket is where Docker looks for a plugin called xmacvlan
// (the directory is fixed; the driver name is the socket's base name).
const DefaultSocket = "/run/docker/plugins/xmacvlan.sock"

// DefaultStateDir holds the driver's state file.
const DefaultStateDir = "/var/lib/xmacvlan/docker"

// settleTimeout bounds how long the driver waits after Join for Docker to
// configure the interface before it gives up on the gratuitous ARP.
var settleTimeout = 30 * time.Second

// Driver implements network.Driver. Its methods are safe for concurrent
// use: Docker calls them from one goroutine per request.
type Driver struct {
	root     *lifecycle.Root
	stateDir string
	docker   *apiClient // nil: container names are not looked up
	log      *log.Logger

	mu    sync.Mutex // guards st and the state file
	st    *State
	async sync.WaitGroup
}

// Config is what `xmacvlan docker-plugin` passes.
type Config struct {
	Root       string // --bpffs
	StateDir   string // --state
	DockerHost string // --docker-host: unix:///var/run/docker.sock; "" for none
	Log        *log.Logger
}

// New loads the driver's state and reconciles it with the pinned tables:
// parents and networks that are gone (a reboot cleared bpffs) are made
// again; endpoints whose veth is gone are no longer joined.
func New(c Config) (*Driver, error) {
	root, err := lifecycle.Open(c.Root)
	if err != nil {
		return nil, err
	}
	st, err := LoadState(c.StateDir)
	if err != nil {
		return nil, err
	}
	d := &Driver{root: root, stateDir: c.StateDir, st: st, log: c.Log}
	if d.log == nil {
		d.log = log.Default()
	}
	if c.DockerHost != "" {
		if d.docker, err = newAPIClient(c.DockerHost); err != nil {
			return nil, err
		}
	}
	if err := d.reconcile(); err != nil {
		return nil, err
	}
	return d, nil
}

// Close waits for the work Join left running in the background.
func (d *Driver) Close() { d.async.Wait() }

func (d *Driver) reconcile() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	have, err := d.root.Networks()
	if err != nil {
		return err
	}
	for id, n := range d.st.Networks {
		if slices.ContainsFunc(have, func(p loader.ParentNetwork) bool { return p.Name == n.Name }) {
			continue
		}
		d.log.Printf("network %s (docker %s) is gone from the tables: making it again", n.Name, short(id))
		if err := d.makeNetwork(n); err != nil {
			// The other networks still work; this one's containers get
			// the reason at `docker run`, and `docker network rm` works.
			d.log.Printf("network %s (docker %s) cannot be made again: %v", n.Name, short(id), err)
		}
	}
	eps, err := d.root.Endpoints("")
	if err != nil {
		return err
	}
	for id, ep := range d.st.Endpoints {
		if ep.Outer == "" {
			continue
		}
		if !slices.ContainsFunc(eps, func(e lifecycle.EndpointStatus) bool { return e.Outer == ep.Outer && !e.Stale }) {
			d.log.Printf("endpoint %s (%s) is gone: no longer joined", short(id), ep.Outer)
			ep.Outer, ep.Sandbox = "", ""
			d.st.Endpoints[id] = ep
			continue
		}
		if ep.Container == "" {
			// A plugin killed right after Join: finish what settle did
			// not (the record's final name, the announcement, the name).
			name := d.st.Networks[ep.Network].Name
			d.async.Add(1)
			go func() {
				defer d.async.Done()
				d.settle(ep.Network, id, name, ep.Outer)
			}()
		}
	}
	// An endpoint of our networks that no Docker endpoint names was built
	// by a Join the plugin did not live to record: Docker has given up on
	// it (its DeleteEndpoint found nothing to remove).
	joined, ours := map[string]bool{}, map[string]bool{}
	for _, ep := range d.st.Endpoints {
		joined[ep.Outer] = true
	}
	for _, n := range d.st.Networks {
		ours[n.Name] = true
	}
	for _, e := range eps {
		if joined[e.Outer] || !ours[e.Network] {
			continue
		}
		d.log.Printf("endpoint %s on %s: no Docker endpoint has it (a Join cut short): removing it", e.Outer, e.Network)
		if _, err := d.root.DeleteOuter(e.Network, e.Outer); err != nil {
			d.log.Printf("remove endpoint %s: %v", e.Outer, err)
		}
	}
	return d.st.save(d.stateDir)
}

// makeNetwork attaches the parent if needed and creates n there. On
// failure it detaches a parent it attached.
func (d *Driver) makeNetwork(n Network) (err error) {
	parents, err := loader.Parents(d.root.Dir)
	if err != nil {
		return err
	}
	attached := slices.Contains(parents, n.Parent)
	if !attached || n.Hairpin {
		opts := loader.AttachOptions{Root: d.root.Dir, Parent: n.Parent}
		if n.Hairpin {
			opts.Hairpin = &n.Hairpin
		}
		if _, err := loader.Attach(opts); err != nil {
			return fmt.Errorf("attach %s: %w", n.Parent, err)
		}
		if !attached {
			if !slices.Contains(d.st.Attached, n.Parent) {
				d.st.Attached = append(d.st.Attached, n.Parent)
			}
			defer func() {
				if err != nil {
					d.releaseParent(n.Parent)
				}
			}()
		}
	}
	mode, _ := tables.ParseMode(n.Mode)
	_, subnet, _ := net.ParseCIDR(n.Subnet)
	// The gateway stays out of the xmacvlan network: Docker sets the
	// default route only through one of a container's networks, so the
	// endpoint records must not promise one (Join hands it to Docker).
	_, err = d.root.CreateNetwork(n.Parent, lifecycle.NetworkSpec{Name: n.Name, VLAN: n.VLAN, Mode: mode, Subnet: subnet})
	return err
}

// releaseParent detaches parent if the driver attached it and nothing is
// on it any more (no network of anyone, no endpoint).
func (d *Driver) releaseParent(parent string) {
	if !slices.Contains(d.st.Attached, parent) {
		return
	}
	nets, err := d.root.Networks()
	if err != nil {
		d.log.Printf("detach %s: %v", parent, err)
		return
	}
	if slices.ContainsFunc(nets, func(p loader.ParentNetwork) bool { return p.Parent == parent }) {
		return
	}
	if err := d.root.DetachParent(parent, false); err != nil {
		d.log.Printf("detach %s: %v", parent, err)
		return
	}
	d.st.Attached = slices.DeleteFunc(d.st.Attached, func(p string) bool { return p == parent })
}

func (d *Driver) GetCapabilities() (*network.CapabilitiesResponse, error) {
	return &network.CapabilitiesResponse{Scope: network.LocalScope, ConnectivityScope: network.LocalScope}, nil
}

func (d *Driver) CreateNetwork(req *network.CreateNetworkRequest) error {
	n, err := parseNetwork(req)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for id, other := range d.st.Networks {
		if id != req.NetworkID && other.Parent == n.Parent && other.VLAN == n.VLAN {
			return fmt.Errorf("%s on %s is Docker network %s already", vlanName(n.VLAN), n.Parent, short(id))
		}
	}
	// A network of this name is a leftover of this same Docker network
	// (a crash between creating it and saving the state): start afresh.
	if d.hasNetwork(n.Name) {
		if err := d.root.DeleteNetwork(n.Name, true); err != nil {
			return err
		}
	}
	if err := d.makeNetwork(n); err != nil {
		return err
	}
	d.st.Networks[req.NetworkID] = n
	if err := d.st.save(d.stateDir); err != nil {
		delete(d.st.Networks, req.NetworkID)
		d.root.DeleteNetwork(n.Name, true)
		d.releaseParent(n.Parent)
		return fmt.Errorf("save the driver's state: %w", err)
	}
	d.log.Printf("created network %s: docker %s, parent %s, %s, %s", n.Name, short(req.NetworkID), n.Parent, vlanName(n.VLAN), n.Subnet)
	return nil
}

func (d *Driver) DeleteNetwork(req *network.DeleteNetworkRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.st.Networks[req.NetworkID]
	if !ok {
		return nil
	}
	// Docker refuses to remove a network with containers; what is left
	// is ours to remove (endpoints it never deleted, e.g. across a crash).
	if d.hasNetwork(n.Name) {
		if err := d.root.DeleteNetwork(n.Name, true); err != nil {
			return err
		}
	}
	for id, ep := range d.st.Endpoints {
		if ep.Network == req.NetworkID {
			delete(d.st.Endpoints, id)
		}
	}
	delete(d.st.Networks, req.NetworkID)
	d.releaseParent(n.Parent)
	d.log.Printf("deleted network %s (docker %s)", n.Name, short(req.NetworkID))
	return d.st.save(d.stateDir)
}

func (d *Driver) CreateEndpoint(req *network.CreateEndpointRequest) (*network.CreateEndpointResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	n, ok := d.st.Networks[req.NetworkID]
	if !ok {
		return nil, fmt.Errorf("no network %s known to xmacvlan", short(req.NetworkID))
	}
	if req.Interface == nil {
		return nil, fmt.Errorf("no interface in the request: Docker's IPAM gave no address")
	}
	ep := Endpoint{Network: req.NetworkID}
	for _, a := range []string{req.Interface.Address, req.Interface.AddressIPv6} {
		if a == "" {
			continue
		}
		if _, _, err := net.ParseCIDR(a); err != nil {
			return nil, fmt.Errorf("address %q: %v", a, err)
		}
	}
	// The record keeps one address, the one of the xmacvlan network's
	// subnet (parseNetwork): IPv4, or IPv6 on an IPv6-only network. Docker
	// sets the other itself; settle announces it.
	if req.Interface.Address != "" {
		ep.IP, ep.IP6 = req.Interface.Address, req.Interface.AddressIPv6
	} else {
		ep.IP = req.Interface.AddressIPv6
	}
	resp := &network.CreateEndpointResponse{Interface: &network.EndpointInterface{}}
	var mac net.HardwareAddr
	if req.Interface.MacAddress != "" {
		var err error
		if mac, err = net.ParseMAC(req.Interface.MacAddress); err != nil {
			return nil, fmt.Errorf("--mac-address %s: %v", req.Interface.MacAddress, err)
		}
		if err := lifecycle.CheckMAC(mac, lifecycle.Parent{}); err != nil {
			return nil, fmt.Errorf("--mac-address %s: %v", mac, err)
		}
	} else {
		mac = lifecycle.RandomMAC()
		resp.Interface.MacAddress = mac.String() // only when Docker has none
	}
	ep.MAC = mac.String()
	if err := d.macFree(n, req.EndpointID, ep.MAC); err != nil {
		return nil, err
	}
	d.st.Endpoints[req.EndpointID] = ep
	if err := d.st.save(d.stateDir); err != nil {
		delete(d.st.Endpoints, req.EndpointID)
		return nil, fmt.Errorf("save the driver's state: %w", err)
	}
	return resp, nil
}

// macFree refuses a MAC that another endpoint of n's VLAN has: a Docker
// endpoint not joined yet, or any endpoint in the tables (CLI ones too).
func (d *Driver) macFree(n Network, self, mac string) error {
	for id, other := range d.st.Endpoints {
		if id != self && other.MAC == mac && d.st.Networks[other.Network].Parent == n.Parent && d.st.Networks[other.Network].VLAN == n.VLAN {
			return fmt.Errorf("MAC %s is already used on %s of %s (docker endpoint %s)", mac, vlanName(n.VLAN), n.Parent, short(id))
		}
	}
	eps, err := d.root.Endpoints(n.Name)
	if err != nil {
		return err
	}
	for _, e := range eps {
		if e.MAC.String() == mac && !e.Stale {
			return fmt.Errorf("MAC %s is already used on %s of %s (by %s in %s)", mac, vlanName(n.VLAN), n.Parent, e.Ifname, e.Netns)
		}
	}
	return nil
}

func (d *Driver) DeleteEndpoint(req *network.DeleteEndpointRequest) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	ep, ok := d.st.Endpoints[req.EndpointID]
	if !ok {
		return nil
	}
	if err := d.unplug(d.st.Networks[ep.Network], ep); err != nil {
		return err
	}
	delete(d.st.Endpoints, req.EndpointID)
	return d.st.save(d.stateDir)
}

// unplug removes the xmacvlan endpoint of a joined Docker endpoint ep of
// network n.
func (d *Driver) unplug(n Network, ep Endpoint) error {
	if ep.Outer == "" || !d.hasNetwork(n.Name) {
		return nil
	}
	_, err := d.root.DeleteOuter(n.Name, ep.Outer)
	return err
}

func (d *Driver) EndpointInfo(req *network.InfoRequest) (*network.InfoResponse, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	ep, ok := d.st.Endpoints[req.EndpointID]
	if !ok {
		return nil, fmt.Errorf("no endpoint %s known to xmacvlan", short(req.EndpointID))
	}
	n := d.st.Networks[ep.Network]
	return &network.InfoResponse{Value: map[string]string{
		"network": n.Name, "parent": n.Parent, "vlan": vlanName(n.VLAN), "mac": ep.MAC, "outer": ep.Outer,
	}}, nil
}

func (d *Driver) Join(req *network.JoinRequest) (*network.JoinResponse, error) {
	d.mu.Lock()
	ep, ok := d.st.Endpoints[req.EndpointID]
	n := d.st.Networks[ep.Network]
	d.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("no endpoint %s known to xmacvlan", short(req.EndpointID))
	}
	if req.SandboxKey == "" {
		return nil, fmt.Errorf("join without a sandbox (namespace) from Docker")
	}
	if ep.Outer != "" { // joined before and never left: start afresh
		if err := d.unplug(n, ep); err != nil {
			return nil, err
		}
	}
	spec := lifecycle.Spec{Netns: req.SandboxKey, Moved: true, XDP: n.Delivery == "xdp", StormLimit: n.StormLimit}
	if mac, err := net.ParseMAC(ep.MAC); err == nil {
		spec.MAC = mac
	}
	if ep.IP != "" {
		ip, subnet, _ := net.ParseCIDR(ep.IP)
		spec.IP = &net.IPNet{IP: ip, Mask: subnet.Mask}
		if v4 := ip.To4(); v4 != nil {
			spec.IP.IP = v4
		}
	}
	if !d.hasNetwork(n.Name) {
		// Its pins went while the plugin ran (a forced detach): make it
		// again, as a start of the plugin would.
		d.mu.Lock()
		var err error
		if !d.hasNetwork(n.Name) { // another Join may have made it meanwhile
			if err = d.makeNetwork(n); err == nil {
				err = d.st.save(d.stateDir)
			}
		}
		d.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("network %s is gone from the tables and cannot be made again: %w", n.Name, err)
		}
	}
	start := time.Now()
	built, err := d.root.AddEndpoint(n.Name, spec)
	if err != nil {
		return nil, err
	}
	d.log.Printf("endpoint %s: %s on %s, %s, built in %s", short(req.EndpointID), built.Outer, n.Name, strings.TrimSpace(ep.IP+" "+ep.IP6), time.Since(start).Round(time.Millisecond))
	d.mu.Lock()
	ep.Outer, ep.Sandbox = built.Outer, req.SandboxKey
	d.st.Endpoints[req.EndpointID] = ep
	err = d.st.save(d.stateDir)
	d.mu.Unlock()
	if err != nil {
		d.root.DeleteOuter(n.Name, built.Outer)
		return nil, fmt.Errorf("save the driver's state: %w", err)
	}
	d.async.Add(1)
	go func() {
		defer d.async.Done()
		d.settle(req.NetworkID, req.EndpointID, n.Name, built.Outer)
	}()
	resp := &network.JoinResponse{InterfaceName: network.InterfaceName{SrcName: built.Ifname, DstPrefix: "eth"}, GatewayIPv6: n.Gateway6}
	if ip := net.ParseIP(n.Gateway); ip.To4() != nil {
		resp.Gateway = n.Gateway
	} else if ip != nil { // an IPv6-only network
		resp.GatewayIPv6 = n.Gateway
	}
	return resp, nil
}

// settle waits for Docker to configure the interface (then the lifecycle
// records its name and sends the gratuitous ARP) and looks up the
// container's name.
func (d *Driver) settle(networkID, endpointID, name, outer string) {
	start := time.Now()
	ep, err := d.root.WaitMoved(name, outer, settleTimeout)
	if err != nil {
		d.log.Printf("endpoint %s: %v", short(endpointID), err)
		return
	}
	d.log.Printf("endpoint %s: %s configured by Docker %s after Join, announced", short(endpointID), ep.Ifname, time.Since(start).Round(time.Millisecond))
	d.mu.Lock()
	ip6 := d.st.Endpoints[endpointID].IP6
	d.mu.Unlock()
	if ip, _, err := net.ParseCIDR(ip6); err == nil {
		// Docker sets both addresses, the IPv6 one without DAD, before
		// it brings the interface up (libnetwork osl/interface_linux.go:
		// configureInterface, setInterfaceIPv6, then AddInterface's
		// LinkSetUp), so it is there, usable, once WaitMoved returned.
		if err := lifecycle.Announce(ep.Netns, ep.Ifname, ep.MAC, ip); err != nil {
			d.log.Printf("endpoint %s: announce %s: %v", short(endpointID), ip, err)
		}
	}
	if d.docker == nil {
		return
	}
	container, err := d.docker.containerName(networkID, endpointID)
	if err != nil {
		d.log.Printf("endpoint %s: container name: %v", short(endpointID), err)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if ep, ok := d.st.Endpoints[endpointID]; ok && ep.Outer == outer {
		ep.Container = container
		d.st.Endpoints[endpointID] = ep
		if err := d.st.save(d.stateDir); err != nil {
			d.log.Printf("save the driver's state: %v", err)
		}
	}
}

// Leave changes nothing: Docker moves the interface back out of the
// container after Leave, and DeleteEndpoint removes it.
func (d *Driver) Leave(req *network.LeaveRequest) error { return nil }

func (d *Driver) AllocateNetwork(*network.AllocateNetworkRequest) (*network.AllocateNetworkResponse, error) {
	return &network.AllocateNetworkResponse{}, nil
}
func (d *Driver) FreeNetwork(*network.FreeNetworkRequest) error       { return nil }
func (d *Driver) DiscoverNew(*network.DiscoveryNotification) error    { return nil }
func (d *Driver) DiscoverDelete(*network.DiscoveryNotification) error { return nil }
func (d *Driver) RevokeExternalConnectivity(*network.RevokeExternalConnectivityRequest) error {
	return nil
}
func (d *Driver) ProgramExternalConnectivity(*network.ProgramExternalConnectivityRequest) error {
	return nil
}

func vlanName(v uint16) string {
	if v == 0 {
		return "the untagged segment"
	}
	return fmt.Sprintf("VLAN %d", v)
}

// hasNetwork says whether the xmacvlan network name exists.
func (d *Driver) hasNetwork(name string) bool {
	nets, err := d.root.Networks()
	return err == nil && slices.ContainsFunc(nets, func(p loader.ParentNetwork) bool { return p.Name == name })
}
