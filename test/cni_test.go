package test

// The CNI plugin as container runtimes run it: the xmacvlan-cni binary
// driven by cnitool (libcni, as podman and containerd use it) or executed
// directly with the CNI environment, with the reference host-local IPAM
// and tuning plugins, in a host namespace with its own parent and state.

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/lifecycle"
	"github.com/xmacvlan/xmacvlan/loader"
	"github.com/xmacvlan/xmacvlan/tables"
)

// cniToolsDir is where scripts/setup-host.sh installs cnitool and the
// reference plugins (host-local, static, tuning, macvlan).
const cniToolsDir = "/usr/local/lib/xmacvlan-tools/bin"

var (
	cniBuild    sync.Once
	cniBinDir   string
	cniBuildErr error
)

// cniPluginDir builds xmacvlan-cni once into a directory of its own.
func cniPluginDir(t testing.TB) string {
	t.Helper()
	cniBuild.Do(func() {
		cniBinDir = filepath.Join(filepath.Dir(xmacvlanBin), "cni")
		out, err := exec.Command("go", "build", "-o", filepath.Join(cniBinDir, "xmacvlan-cni"), "../cmd/xmacvlan-cni").CombinedOutput()
		if err != nil {
			cniBuildErr = fmt.Errorf("build xmacvlan-cni: %v\n%s", err, out)
		}
	})
	if cniBuildErr != nil {
		t.Fatal(cniBuildErr)
	}
	for _, tool := range []string{"cnitool", "host-local", "tuning"} {
		if _, err := os.Stat(filepath.Join(cniToolsDir, tool)); err != nil {
			t.Fatalf("%s is not installed (scripts/setup-host.sh installs it): %v", tool, err)
		}
	}
	return cniBinDir
}

// cniHost is a host of the lab whose parent the plugin attaches, with its
// own network config, attachment and IPAM directories.
type cniHost struct {
	*host
	t        testing.TB
	confDir  string
	stateDir string
	ipamDir  string
	path     string // CNI_PATH
}

// newCNILab is a lab with a CNI host and, on a second xmacvlan host, a
// peer on VLAN 10 (172.16.10.99) for the CNI host's containers to reach.
func newCNILab(t testing.TB) (*cniHost, *container) {
	l := newLab(t)
	h := newCNIHost(t, l)
	peer := l.host()
	peer.attach("")
	peer.network("v10", 10, tables.Bridge)
	return h, peer.container("v10", "", "172.16.10.99/24", false)
}

func newCNIHost(t testing.TB, l *lab) *cniHost {
	dir := t.TempDir()
	h := &cniHost{host: l.host(), t: t, confDir: filepath.Join(dir, "net.d"), stateDir: filepath.Join(dir, "state"),
		ipamDir: filepath.Join(dir, "ipam"), path: cniPluginDir(t) + ":" + cniToolsDir}
	os.MkdirAll(h.confDir, 0o755)
	t.Cleanup(func() {
		h.ns.Do(func() error { return h.lc().DetachParent(h.parent, true) })
	})
	return h
}

// plugin is one entry of a conflist's plugins.
type plugin map[string]any

// xmvPlugin is the xmacvlan-cni entry for vlan with host-local handing out
// rangeStart..rangeEnd of subnet; gateway "" means no default route.
func (h *cniHost) xmvPlugin(vlan int, subnet, rangeStart, rangeEnd, gateway string) plugin {
	rng := map[string]any{"subnet": subnet, "rangeStart": rangeStart, "rangeEnd": rangeEnd}
	ipamConf := map[string]any{"type": "host-local", "dataDir": h.ipamDir, "ranges": [][]any{{rng}}}
	if gateway != "" {
		rng["gateway"] = gateway
		ipamConf["routes"] = []any{map[string]any{"dst": "0.0.0.0/0"}}
	}
	return plugin{"type": "xmacvlan-cni", "parent": h.parent, "vlan": vlan, "mode": "bridge",
		"bpffs": h.root, "stateDir": h.stateDir, "ipam": ipamConf,
		"capabilities": map[string]bool{"mac": true}}
}

// conflist writes a network config list and returns its name.
func (h *cniHost) conflist(name, version string, plugins ...plugin) string {
	b, err := json.Marshal(map[string]any{"cniVersion": version, "name": name, "plugins": plugins})
	if err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(h.confDir, name+".conflist"), b, 0o644); err != nil {
		h.t.Fatal(err)
	}
	return name
}

// cnitool runs cnitool in the host's namespace; env adds CNI_IFNAME,
// CNI_ARGS or CAP_ARGS.
func (h *cniHost) cnitool(env []string, args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=" + h.ns.Path(), filepath.Join(cniToolsDir, "cnitool")}, args...)...)
	cmd.Env = append(os.Environ(), append([]string{"NETCONFPATH=" + h.confDir, "CNI_PATH=" + h.path}, env...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("cnitool %s %v: %v\n%s", strings.Join(args, " "), env, err, out)
	}
	return string(out), nil
}

// exec runs the plugin binary itself, as a runtime does: command, the
// CNI environment and the config on stdin. It returns stdout.
func (h *cniHost) exec(command, containerID, netns, ifname, args string, conf any) (string, error) {
	return h.execPlugin("xmacvlan-cni", command, containerID, netns, ifname, args, conf)
}

// execPlugin is exec for another plugin binary (a path, or a name in the
// directory of xmacvlan-cni).
func (h *cniHost) execPlugin(bin, command, containerID, netns, ifname, args string, conf any) (string, error) {
	b, err := json.Marshal(conf)
	if err != nil {
		return "", err
	}
	if !filepath.IsAbs(bin) {
		bin = filepath.Join(cniBinDir, bin)
	}
	cmd := exec.Command("nsenter", "--net="+h.ns.Path(), bin)
	cmd.Env = append(os.Environ(), "CNI_COMMAND="+command, "CNI_CONTAINERID="+containerID, "CNI_NETNS="+netns,
		"CNI_IFNAME="+ifname, "CNI_ARGS="+args, "CNI_PATH="+h.path)
	cmd.Stdin = strings.NewReader(string(b))
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v\n%s", filepath.Base(bin), command, err, out)
	}
	return string(out), nil
}

// announcement watches the switch's port of the host for a gratuitous
// ARP (sender = target address, from mac) or an unsolicited neighbour
// advertisement (ICMPv6 type 136 from mac), tagged or not; seen waits for
// one until timeout.
func (h *cniHost) announcement(mac string, v6 bool) (seen func(time.Duration) bool) {
	t := h.t
	t.Helper()
	hw, err := net.ParseMAC(mac)
	if err != nil {
		t.Fatal(err)
	}
	var fd int
	err = h.lab.sw.Do(func() error {
		port, err := net.InterfaceByName(h.port)
		if err != nil {
			return err
		}
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, int(htons(unix.ETH_P_ALL)))
		if err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: port.Index})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	match := func(f []byte) bool {
		if len(f) < 14 || !bytes.Equal(f[6:12], hw) {
			return false
		}
		f = f[12:]
		if binary.BigEndian.Uint16(f) == unix.ETH_P_8021Q && len(f) > 4 {
			f = f[4:]
		}
		et, p := binary.BigEndian.Uint16(f), f[2:]
		switch {
		case !v6 && et == unix.ETH_P_ARP && len(p) >= 28:
			return bytes.Equal(p[14:18], p[24:28]) // sender IP = target IP
		case v6 && et == unix.ETH_P_IPV6 && len(p) >= 41:
			return p[6] == unix.IPPROTO_ICMPV6 && p[40] == 136
		}
		return false
	}
	return func(timeout time.Duration) bool {
		deadline := time.Now().Add(timeout)
		buf := make([]byte, 2048)
		for time.Now().Before(deadline) {
			tv := unix.NsecToTimeval(int64(time.Until(deadline)))
			unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
			n, _, err := unix.Recvfrom(fd, buf, 0)
			if err == nil && match(buf[:n]) {
				return true
			}
		}
		return false
	}
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// cniResult is the part of a CNI result the tests read.
type cniResult struct {
	CNIVersion string `json:"cniVersion"`
	Interfaces []struct {
		Name    string `json:"name"`
		Mac     string `json:"mac"`
		Sandbox string `json:"sandbox"`
	} `json:"interfaces"`
	IPs []struct {
		Address   string `json:"address"`
		Gateway   string `json:"gateway"`
		Interface *int   `json:"interface"`
	} `json:"ips"`
	Routes []struct {
		Dst string `json:"dst"`
	} `json:"routes"`
}

// add runs `cnitool add` and checks the result's shape: one interface
// named ifname in the namespace, and its addresses point at it.
func (h *cniHost) add(network string, ns *testutil.Netns, ifname string, env ...string) cniResult {
	h.t.Helper()
	out, err := h.cnitool(append(env, "CNI_IFNAME="+ifname), "add", network, ns.Path())
	if err != nil {
		h.t.Fatal(err)
	}
	var r cniResult
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		h.t.Fatalf("ADD result %q: %v", out, err)
	}
	if len(r.Interfaces) != 1 || r.Interfaces[0].Name != ifname || r.Interfaces[0].Sandbox != ns.Path() || r.Interfaces[0].Mac == "" {
		h.t.Fatalf("ADD result interfaces: want one %s in %s with a MAC, got %s", ifname, ns.Path(), out)
	}
	if len(r.IPs) == 0 {
		h.t.Fatalf("ADD result has no address: %s", out)
	}
	for _, ip := range r.IPs {
		if ip.Interface == nil || *ip.Interface != 0 {
			h.t.Fatalf("ADD result address %s is not on interface 0: %s", ip.Address, out)
		}
	}
	if mac := mustLink(h.t, ns, ifname).Attrs().HardwareAddr.String(); mac != r.Interfaces[0].Mac {
		h.t.Fatalf("%s has MAC %s, the result says %s", ifname, mac, r.Interfaces[0].Mac)
	}
	return r
}

func hostIP(r cniResult) string { return strings.Split(r.IPs[0].Address, "/")[0] }

// endpoints lists the endpoints of a network of the host.
func (h *cniHost) endpoints(network string) []lifecycle.EndpointStatus {
	h.t.Helper()
	var eps []lifecycle.EndpointStatus
	err := h.ns.Do(func() (err error) {
		eps, err = h.lc().Endpoints(network)
		return err
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return eps
}

// leftovers lists what DEL should have removed: veths in the host's
// namespace besides the parent, attachment records, leased addresses.
func (h *cniHost) leftovers() []string {
	h.t.Helper()
	var left []string
	links, err := h.ns.NL.LinkList()
	if err != nil {
		h.t.Fatal(err)
	}
	for _, l := range links {
		if name := l.Attrs().Name; name != "lo" && name != h.parent {
			left = append(left, "link "+name)
		}
	}
	files, _ := filepath.Glob(filepath.Join(h.stateDir, "*", "*", "*"))
	for _, f := range files {
		left = append(left, "attachment "+f)
	}
	leases, _ := filepath.Glob(filepath.Join(h.ipamDir, "*", "*.*.*.*"))
	for _, f := range leases {
		left = append(left, "lease "+f)
	}
	// Table entries, flood slots, unicast filter entries, link pins and
	// veths no record accounts for: what `xmacvlan gc --dry-run` finds.
	if _, err := os.Stat(filepath.Join(h.root, h.parent)); err == nil {
		err := h.ns.Do(func() error {
			removed, err := h.lc().GC("", true)
			for _, r := range removed {
				left = append(left, r.String())
			}
			return err
		})
		if err != nil {
			h.t.Fatal(err)
		}
	}
	return left
}

// ADD, CHECK, DEL, DEL again, GC and STATUS with spec 1.1.0: two
// containers and a peer on another host on VLAN 10, one on VLAN 20 in the
// same subnet (unreachable), a container with a second interface on
// VLAN 30 through a chain with tuning.
func TestCNIPlugin(t *testing.T) {
	h, far := newCNILab(t)

	net10 := h.conflist(testutil.Name("c10"), "1.1.0", h.xmvPlugin(10, "172.16.10.0/24", "172.16.10.2", "172.16.10.50", "172.16.10.1"))
	p20 := h.xmvPlugin(20, "172.16.10.0/24", "172.16.10.200", "172.16.10.250", "")
	p20["stormLimit"] = 300
	net20 := h.conflist(testutil.Name("c20"), "1.1.0", p20)
	net30 := h.conflist(testutil.Name("c30"), "1.1.0", h.xmvPlugin(30, "172.16.30.0/24", "172.16.30.2", "172.16.30.50", ""),
		plugin{"type": "tuning", "promisc": true})

	c1, c2, c3, c4 := testutil.NewNetns(t, "xk"), testutil.NewNetns(t, "xk"), testutil.NewNetns(t, "xk"), testutil.NewNetns(t, "xk")
	garp := h.announcement("02:00:00:00:10:01", false)
	r1 := h.add(net10, c1, "eth0", "CNI_ARGS=IgnoreUnknown=1;MAC=02:00:00:00:10:01")
	if !garp(3 * time.Second) {
		t.Fatal("no gratuitous ARP from 02:00:00:00:10:01 on the wire after ADD")
	}
	if r1.Interfaces[0].Mac != "02:00:00:00:10:01" || r1.CNIVersion != "1.1.0" {
		t.Fatalf("ADD with MAC=02:00:00:00:10:01: got MAC %s, version %s", r1.Interfaces[0].Mac, r1.CNIVersion)
	}
	if len(r1.Routes) != 1 || r1.Routes[0].Dst != "0.0.0.0/0" || r1.IPs[0].Gateway != "172.16.10.1" {
		t.Fatalf("ADD result routes %v, gateway %s: want the default route via 172.16.10.1", r1.Routes, r1.IPs[0].Gateway)
	}
	r2 := h.add(net10, c2, "eth0", `CAP_ARGS={"mac":"02:00:00:00:10:02"}`)
	if r2.Interfaces[0].Mac != "02:00:00:00:10:02" {
		t.Fatalf("ADD with runtimeConfig.mac 02:00:00:00:10:02: got %s", r2.Interfaces[0].Mac)
	}
	r3 := h.add(net20, c3, "eth0")
	if eps := h.endpoints(net20); len(eps) != 1 || eps[0].StormLimit != 300 {
		t.Fatalf("stormLimit 300 in the config: endpoints %+v", eps)
	}
	r1b := h.add(net30, c1, "net1")
	r4 := h.add(net30, c4, "eth0")
	if mustLink(t, c1, "net1").Attrs().Promisc == 0 {
		t.Fatal("tuning after xmacvlan-cni did not set net1 promiscuous")
	}

	if err := ping(c1, hostIP(r2)); err != nil {
		t.Fatalf("VLAN 10, same host: %v", err)
	}
	if err := ping(c1, far.ip); err != nil {
		t.Fatalf("VLAN 10, across the switch to the peer host: %v", err)
	}
	if err := ping(c1, hostIP(r4)); err != nil {
		t.Fatalf("VLAN 30 on the second interface net1: %v", err)
	}
	if err := ping(c1, hostIP(r3)); err == nil {
		t.Fatalf("VLAN 10 reached %s on VLAN 20", hostIP(r3))
	}
	_ = r1b

	for _, c := range []struct {
		network string
		ns      *testutil.Netns
		ifname  string
	}{{net10, c1, "eth0"}, {net10, c2, "eth0"}, {net20, c3, "eth0"}, {net30, c1, "net1"}, {net30, c4, "eth0"}} {
		if out, err := h.cnitool([]string{"CNI_IFNAME=" + c.ifname}, "check", c.network, c.ns.Path()); err != nil {
			t.Fatalf("CHECK of a healthy endpoint: %v %s", err, out)
		}
	}
	if _, err := run(c2, "ip", "link", "del", "eth0"); err != nil {
		t.Fatal(err)
	}
	out, err := h.cnitool(nil, "check", net10, c2.Path())
	if err == nil || !strings.Contains(out, "outer veth") || !strings.Contains(out, "inner interface") {
		t.Fatalf("CHECK after the veth was deleted: want a failure naming the outer veth and inner interface, got %v", err)
	}
	for i := 0; i < 2; i++ {
		if _, err := h.cnitool(nil, "del", net10, c2.Path()); err != nil {
			t.Fatalf("DEL %d of an endpoint whose veth is gone: %v", i+1, err)
		}
	}
	if eps := h.endpoints(net10); len(eps) != 1 {
		t.Fatalf("after DEL of c2, network %s has %d endpoints, want 1 (c1's)", net10, len(eps))
	}

	// DEL with the namespace gone, then with an empty CNI_NETNS (containerd's second DEL).
	c3Path := c3.Path()
	run(c3, "true")
	if _, err := runCmd("ip", "netns", "del", c3.Name); err != nil {
		t.Fatal(err)
	}
	if _, err := h.cnitool(nil, "del", net20, c3Path); err != nil {
		t.Fatalf("DEL after the namespace is gone: %v", err)
	}
	conf20 := readConflist(t, h, net20)
	cid := "cnitool-" // any id: nothing recorded for it
	if _, err := h.exec("DEL", cid+"x", "", "eth0", "", conf20); err != nil {
		t.Fatalf("DEL with an empty CNI_NETNS: %v", err)
	}
	if eps := h.endpoints(net20); len(eps) != 0 {
		t.Fatalf("network %s still has %v", net20, eps)
	}

	// GC: keep c1/net1's attachment, drop c4's.
	conf30 := readConflist(t, h, net30)
	conf30["cni.dev/valid-attachments"] = []map[string]string{{"containerID": cnitoolID(c1.Path()), "ifname": "net1"}}
	if _, err := h.exec("GC", "", "", "", "", conf30); err != nil {
		t.Fatalf("GC: %v", err)
	}
	eps := h.endpoints(net30)
	if len(eps) != 1 || eps[0].Ifname != "net1" {
		t.Fatalf("after GC with c1/net1 valid, network %s has %v, want c1's net1 only", net30, eps)
	}
	if _, err := os.Stat(filepath.Join(h.ipamDir, net30, hostIP(r4))); err == nil {
		t.Fatalf("GC did not release %s through host-local", hostIP(r4))
	}
	if _, err := h.cnitool(nil, "status", net30, c1.Path()); err != nil {
		t.Fatalf("STATUS of a working network: %v", err)
	}
	// cnitool gc DELs every cached attachment of the network, then GCs.
	for _, n := range []string{net10, net30} {
		if _, err := h.cnitool(nil, "gc", n, c1.Path()); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []string{net10, net20, net30} {
		if eps := h.endpoints(n); len(eps) != 0 {
			t.Fatalf("network %s still has %v", n, eps)
		}
	}
	if left := h.leftovers(); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}

	if _, err := run(h.ns, "ip", "link", "set", h.parent, "down"); err != nil {
		t.Fatal(err)
	}
	out, err = h.cnitool(nil, "status", net10, c1.Path())
	if err == nil || !strings.Contains(out, "is down") {
		t.Fatalf("STATUS with the parent down: want a failure saying so, got %v %s", err, out)
	}
	if _, err := run(h.ns, "ip", "link", "del", h.parent); err != nil {
		t.Fatal(err)
	}
	out, err = h.exec("STATUS", "", "", "", "", readConflist(t, h, net10))
	if err == nil || !strings.Contains(out, "parent ens33 does not exist") || !strings.Contains(out, `"code": 50`) {
		t.Fatalf("STATUS with the parent removed: want error 50 saying it does not exist, got %v %s", err, out)
	}
}

// cnitoolID is the container ID cnitool derives from a namespace path.
func cnitoolID(path string) string {
	out, _ := exec.Command("sh", "-c", "printf %s '"+path+"' | sha512sum | cut -c1-20").Output()
	return "cnitool-" + strings.TrimSpace(string(out))
}

// readConflist returns the first plugin of a conflist as a plugin config,
// with the list's name and version, as a runtime passes it.
func readConflist(t *testing.T, h *cniHost, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(h.confDir, name+".conflist"))
	if err != nil {
		t.Fatal(err)
	}
	var list struct {
		Version string           `json:"cniVersion"`
		Plugins []map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(b, &list); err != nil {
		t.Fatal(err)
	}
	conf := list.Plugins[0]
	conf["name"], conf["cniVersion"] = name, list.Version
	return conf
}

// Spec versions 0.4.0 and 1.0.0 (podman 4.3, containerd 1.6): the result
// is in the version asked for; CHECK, DEL and DEL again work.
func TestCNIVersions(t *testing.T) {
	l := newLab(t)
	h := newCNIHost(t, l)
	for i, v := range []string{"0.4.0", "1.0.0"} {
		net := h.conflist(testutil.Name("cv"), v, h.xmvPlugin(40+i, "172.16.40.0/24", "172.16.40.2", "172.16.40.50", "172.16.40.1"))
		a, b := testutil.NewNetns(t, "xk"), testutil.NewNetns(t, "xk")
		ra := h.add(net, a, "eth0")
		rb := h.add(net, b, "eth0")
		if ra.CNIVersion != v {
			t.Fatalf("ADD with cniVersion %s returned version %s", v, ra.CNIVersion)
		}
		if err := ping(a, hostIP(rb)); err != nil {
			t.Fatalf("%s: %v", v, err)
		}
		for _, ns := range []*testutil.Netns{a, b} {
			if _, err := h.cnitool(nil, "check", net, ns.Path()); err != nil {
				t.Fatalf("%s: %v", v, err)
			}
			for range 2 {
				if _, err := h.cnitool(nil, "del", net, ns.Path()); err != nil {
					t.Fatalf("%s: %v", v, err)
				}
			}
		}
	}
	if left := h.leftovers(); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// Dual stack: host-local hands out an IPv4 and an IPv6 address; the
// endpoint's record holds the IPv4 one, the IPv6 one is added next to it;
// both answer pings, CHECK sees both, a second ADD of the same attachment
// is refused without harming the first, DEL releases both.
func TestCNIDualStack(t *testing.T) {
	l := newLab(t)
	h := newCNIHost(t, l)
	p := h.xmvPlugin(50, "172.16.50.0/24", "172.16.50.2", "172.16.50.50", "")
	p["ipam"].(map[string]any)["ranges"] = [][]any{
		{map[string]any{"subnet": "172.16.50.0/24", "rangeStart": "172.16.50.2", "rangeEnd": "172.16.50.50"}},
		{map[string]any{"subnet": "fd00:50::/64", "rangeStart": "fd00:50::2", "rangeEnd": "fd00:50::50"}},
	}
	net := h.conflist(testutil.Name("c6"), "1.1.0", p)
	a, b := testutil.NewNetns(t, "xk"), testutil.NewNetns(t, "xk")
	na := h.announcement("02:00:00:00:50:01", true)
	ra := h.add(net, a, "eth0", "CNI_ARGS=IgnoreUnknown=1;MAC=02:00:00:00:50:01")
	if !na(3 * time.Second) {
		t.Fatal("no unsolicited neighbour advertisement from 02:00:00:00:50:01 on the wire after ADD")
	}
	rb := h.add(net, b, "eth0")
	if len(ra.IPs) != 2 || len(rb.IPs) != 2 {
		t.Fatalf("want an IPv4 and an IPv6 address, got %v and %v", ra.IPs, rb.IPs)
	}
	for _, ip := range rb.IPs {
		addr := strings.Split(ip.Address, "/")[0]
		if err := ping(a, addr); err != nil {
			t.Fatalf("to %s: %v", addr, err)
		}
	}
	if _, err := h.cnitool(nil, "check", net, a.Path()); err != nil {
		t.Fatal(err)
	}
	if _, err := h.cnitool(nil, "add", net, a.Path()); err == nil {
		t.Fatal("a second ADD of the same attachment succeeded")
	}
	if _, err := h.cnitool(nil, "check", net, a.Path()); err != nil {
		t.Fatalf("after a refused second ADD: %v", err)
	}
	if _, err := run(a, "ip", "-6", "addr", "del", rb.IPs[1].Address, "dev", "eth0"); err == nil {
		t.Fatal("removed b's address from a")
	}
	if _, err := run(a, "ip", "-6", "addr", "del", ra.IPs[1].Address, "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	out, err := h.cnitool(nil, "check", net, a.Path())
	if err == nil || !strings.Contains(out, "address: want "+ra.IPs[1].Address) {
		t.Fatalf("CHECK after the IPv6 address was removed: want a failure naming it, got %v %s", err, out)
	}
	for _, ns := range []*testutil.Netns{a, b} {
		if _, err := h.cnitool(nil, "del", net, ns.Path()); err != nil {
			t.Fatal(err)
		}
	}
	if left := h.leftovers(); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
	leases, _ := filepath.Glob(filepath.Join(h.ipamDir, net, "fd00*"))
	if len(leases) > 0 {
		t.Fatalf("IPv6 leases left: %v", leases)
	}
}

// ADDs racing on a parent that is not attached yet and a network that
// does not exist yet (a node starting many pods) all succeed, on one
// datapath and one network; their DELs, racing too, leave nothing.
func TestCNIConcurrentAdd(t *testing.T) {
	l := newLab(t)
	h := newCNIHost(t, l)
	net := h.conflist(testutil.Name("cc"), "1.1.0", h.xmvPlugin(60, "172.16.60.0/24", "172.16.60.2", "172.16.60.50", ""))
	const n = 4
	var nss []*testutil.Netns
	for range n {
		nss = append(nss, testutil.NewNetns(t, "xk"))
	}
	parallel := func(cmd string) {
		errs := make(chan error, n)
		for _, ns := range nss {
			go func() {
				_, err := h.cnitool(nil, cmd, net, ns.Path())
				errs <- err
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}
	parallel("add")
	if eps := h.endpoints(net); len(eps) != n {
		t.Fatalf("after %d concurrent ADDs network %s has %d endpoints", n, net, len(eps))
	}
	for _, ns := range nss {
		if _, err := h.cnitool(nil, "check", net, ns.Path()); err != nil {
			t.Fatal(err)
		}
	}
	parallel("del")
	if left := h.leftovers(); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// Invalid configs and arguments get a CNI error with the right code and
// change nothing: no datapath is attached, no network created.
func TestCNIInvalidInput(t *testing.T) {
	l := newLab(t)
	h := newCNIHost(t, l)
	c := testutil.NewNetns(t, "xk")
	good := func() map[string]any {
		p := h.xmvPlugin(10, "172.16.10.0/24", "172.16.10.2", "172.16.10.50", "")
		p["name"], p["cniVersion"] = "bad", "1.1.0"
		return p
	}
	cases := []struct {
		name string
		edit func(map[string]any)
		args string
		code int
		says string
	}{
		{"missing parent", func(p map[string]any) { delete(p, "parent") }, "", 7, `"parent" is required`},
		{"vlan 5000", func(p map[string]any) { p["vlan"] = 5000 }, "", 7, "invalid VLAN 5000: want 1..4094"},
		{"unknown mode", func(p map[string]any) { p["mode"] = "passthru" }, "", 7, `mode "passthru"`},
		{"negative storm limit", func(p map[string]any) { p["stormLimit"] = -1 }, "", 7, "stormLimit -1: want frames per second, 1..100000000, or 0 for no limit"},
		{"bad MAC in CNI_ARGS", func(map[string]any) {}, "IgnoreUnknown=1;MAC=01:00:5e:00:00:01", 4, "MAC=01:00:5e:00:00:01"},
		{"unparsable MAC in CNI_ARGS", func(map[string]any) {}, "IgnoreUnknown=1;MAC=zz", 4, "MAC=zz"},
		{"bad runtimeConfig.mac", func(p map[string]any) { p["runtimeConfig"] = map[string]string{"mac": "nope"} }, "", 7, "runtimeConfig.mac"},
		{"no such namespace", func(map[string]any) {}, "", 4, "CNI_NETNS /var/run/netns/xmv-none"},
		{"IPAM plugin fails after the attach", func(p map[string]any) { p["ipam"] = map[string]any{"type": "host-local"} }, "", 999, "no IP ranges specified"},
	}
	for _, tc := range cases {
		conf := good()
		tc.edit(conf)
		netns := c.Path()
		if tc.name == "no such namespace" {
			netns = "/var/run/netns/xmv-none"
		}
		out, err := h.exec("ADD", "cid1", netns, "eth0", tc.args, conf)
		if err == nil {
			t.Fatalf("%s: ADD succeeded", tc.name)
		}
		var e struct {
			Code int    `json:"code"`
			Msg  string `json:"msg"`
		}
		if jerr := json.Unmarshal([]byte(out), &e); jerr != nil {
			t.Fatalf("%s: not a CNI error on stdout: %q", tc.name, out)
		}
		if e.Code != tc.code || !strings.Contains(e.Msg, tc.says) {
			t.Fatalf("%s: got code %d %q, want code %d saying %q", tc.name, e.Code, e.Msg, tc.code, tc.says)
		}
	}
	if _, err := os.Stat(filepath.Join(h.root, h.parent)); err == nil {
		t.Fatal("a failed ADD left the parent attached")
	}
	if left := h.leftovers(); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
	if links, _ := c.NL.LinkList(); len(links) != 1 {
		t.Fatalf("the container has %d interfaces, want lo only", len(links))
	}
	conf := good()
	conf["bpffs"] = t.TempDir()
	if out, err := h.exec("STATUS", "", "", "", "", conf); err == nil || !strings.Contains(out, `"code": 50`) || !strings.Contains(out, "not on a bpf filesystem") {
		t.Fatalf("STATUS with a state root off bpffs: want code 50 saying so, got %v %s", err, out)
	}

	// What exists is never changed: an attached parent with other
	// settings, a network that disagrees, a VLAN that is another network's.
	if _, err := h.tryAttach(loader.AttachOptions{Hairpin: ptr(true)}); err != nil {
		t.Fatal(err)
	}
	h.network("other", 10, tables.Bridge)
	for _, tc := range []struct {
		name string
		edit func(map[string]any)
		says string
	}{
		{"hairpin differs", func(p map[string]any) { p["hairpin"] = false }, "attached with hairpin on but the config says off"},
		{"VLAN taken", func(map[string]any) {}, "VLAN 10 on ens33 is network other already"},
		{"network differs", func(p map[string]any) { p["name"], p["vlan"] = "other", 20 }, "network other exists as parent ens33, VLAN 10"},
		{"mode differs", func(p map[string]any) { p["name"], p["mode"] = "other", "vepa" }, "bridge mode"},
	} {
		conf := good()
		tc.edit(conf)
		out, err := h.exec("ADD", "cid1", c.Path(), "eth0", "", conf)
		if err == nil || !strings.Contains(out, `"code": 7`) || !strings.Contains(out, tc.says) {
			t.Fatalf("%s: want code 7 saying %q, got %v %s", tc.name, tc.says, err, out)
		}
	}
	h.tables(func(tb *tables.Tables) error {
		if s, err := tb.Settings(); err != nil || !s.Hairpin {
			t.Fatalf("hairpin: %v %v", s.Hairpin, err)
		}
		return nil
	})
	if eps := h.endpoints("other"); len(eps) != 0 {
		t.Fatalf("refused ADDs left %v", eps)
	}
	if left := h.leftovers(); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

func ptr[T any](v T) *T { return &v }
