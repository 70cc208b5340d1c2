package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/xmacvlan/xmacvlan/docker"
	"github.com/xmacvlan/xmacvlan/internal/testutil"
	"github.com/xmacvlan/xmacvlan/tables"
)

// The tutorial with Docker: `docker network create -d xmacvlan -o
// parent=ens33 -o vlan=10` instead of a macvlan on ens33.10. A second host
// (xmacvlan's CLI path) answers on VLAN 10 and VLAN 20, using VLAN 10's
// subnet on VLAN 20 too: only the tag keeps them apart.
func TestDockerTutorial(t *testing.T) {
	l := newLab(t)
	a, b := l.host(), l.host()
	d := newDocker(t, a)
	b.attach("")
	b.network("v10", 10, tables.Bridge)
	b.network("v20", 20, tables.Bridge)
	peer10 := b.container("v10", "", "172.16.10.100/24", false)
	peer20same := b.container("v20", "", "172.16.10.200/24", false) // VLAN 10's subnet, on VLAN 20
	peer20 := b.container("v20", "", "172.16.20.100/24", false)
	tags := startCapture(t, l.sw, "br0")

	d.mustDocker("network", "create", "-d", d.driver, "--subnet", "172.16.10.0/24", "--gateway", "172.16.10.1",
		"-o", "parent=ens33", "-o", "vlan=10", "mac_net10")
	d.mustDocker("network", "create", "-d", d.driver, "--subnet", "172.16.20.0/24", "--gateway", "172.16.20.1",
		"-o", "parent=ens33", "-o", "vlan=20", "-o", "mode=private", "mac_net20")
	d.mustDocker("run", "-d", "--name", "bbox10", "--network", "mac_net10", "--ip", "172.16.10.10", "busybox", "sleep", "1d")
	d.mustDocker("run", "-d", "--name", "bbox11", "--network", "mac_net10", "--mac-address", "02:42:ac:10:0a:0b", "busybox", "sleep", "1d")
	d.mustDocker("run", "-d", "--name", "bbox20", "--network", "mac_net20", "--ip", "172.16.20.10", "busybox", "sleep", "1d")
	d.agree("docker run")
	if mac := d.mustDocker("inspect", "-f", "{{.NetworkSettings.Networks.mac_net10.MacAddress}}", "bbox11"); mac != "02:42:ac:10:0a:0b" {
		t.Errorf("--mac-address 02:42:ac:10:0a:0b: the container has %s", mac)
	}
	namedInStatsAndMetrics(t, d)
	bbox10MAC := mustMAC(d.mustDocker("inspect", "-f", "{{.NetworkSettings.Networks.mac_net10.MacAddress}}", "bbox10"))
	bbox20MAC := mustMAC(d.mustDocker("inspect", "-f", "{{.NetworkSettings.Networks.mac_net20.MacAddress}}", "bbox20"))

	// The gratuitous ARP once Docker has configured eth0, tagged 10.
	err := eventually(5*time.Second, func() error {
		for _, f := range tags.from(bbox10MAC) {
			if isGratuitousARP(f, 10, net.ParseIP("172.16.10.10")) {
				return nil
			}
		}
		return fmt.Errorf("no gratuitous ARP for 172.16.10.10 on VLAN 10 from %s", bbox10MAC)
	})
	if err != nil {
		t.Error(err)
	}

	bbox10, bbox20 := d.netns("bbox10"), d.netns("bbox20")
	bbox11IP := d.mustDocker("inspect", "-f", "{{.NetworkSettings.Networks.mac_net10.IPAddress}}", "bbox11")
	for _, p := range []struct {
		what, from, to string
		ok             bool
	}{
		{"bbox10 -> peer on VLAN 10", bbox10, "172.16.10.100", true},
		{"bbox10 -> bbox11 (same host, VLAN 10)", bbox10, bbox11IP, true},
		{"bbox20 -> peer on VLAN 20", bbox20, "172.16.20.100", true},
		{"bbox10 -> VLAN 20 peer in VLAN 10's subnet", bbox10, "172.16.10.200", false},
		{"VLAN 20 peer in VLAN 10's subnet -> bbox10", peer20same.ns.Path(), "172.16.10.10", false},
		{"peer on VLAN 10 -> bbox10", peer10.ns.Path(), "172.16.10.10", true},
	} {
		err := pingFrom(p.from, p.to)
		if p.ok && err != nil {
			t.Errorf("%s: %v", p.what, err)
		}
		if !p.ok && err == nil {
			t.Errorf("%s: crossed VLANs", p.what)
		}
	}

	// A second interface on another VLAN.
	d.mustDocker("network", "connect", "mac_net20", "bbox10")
	d.agree("docker network connect")
	if err := pingFrom(bbox10, peer20.ip); err != nil {
		t.Errorf("bbox10's second interface (VLAN 20) -> peer on VLAN 20: %v", err)
	}

	// On the wire, bbox10's frames carry VLAN 10, bbox20's VLAN 20.
	for _, c := range []struct {
		mac net.HardwareAddr
		vid uint16
	}{{bbox10MAC, 10}, {bbox20MAC, 20}} {
		frames := tags.from(c.mac)
		if len(frames) == 0 {
			t.Errorf("no frame from %s seen on the wire", c.mac)
		}
		for _, f := range frames {
			if len(f) < 18 || f[12] != 0x81 || f[13] != 0x00 || uint16(f[14]&0x0f)<<8|uint16(f[15]) != c.vid {
				t.Errorf("frame from %s on the wire: % x, want tag %d", c.mac, f[:min(len(f), 18)], c.vid)
				break
			}
		}
	}

	// Docker refuses to remove a network in use; once empty, nothing of
	// it is left.
	if _, err := d.docker("network", "rm", "mac_net10"); err == nil {
		t.Error("docker removed mac_net10 with containers on it")
	}
	d.mustDocker("rm", "-f", "bbox10", "bbox11")
	d.mustDocker("network", "rm", "mac_net10")
	d.agree("docker network rm")
	if out, _ := a.cli("network", "list"); strings.Contains(out, " 10 ") {
		t.Errorf("VLAN 10 still has a network after docker network rm:\n%s", out)
	}
}

// The tutorial's two hosts: two daemons, each in its own network and
// mount namespace with its own plugin called xmacvlan, parents on one
// switch. On host 2, VLAN 20 uses the upper half of VLAN 10's subnet, so
// host 1's bbox10 takes bbox20 for a neighbour: only the tag keeps them
// apart.
func TestDockerTwoHosts(t *testing.T) {
	l := newLab(t)
	h1, h2 := l.host(), l.host()
	d1, d2 := newDockerHost(t, h1), newDockerHost(t, h2)
	create := func(d *dockerEnv, name, vlan, subnet, gateway string) {
		d.mustDocker("network", "create", "-d", "xmacvlan", "--subnet", subnet, "--gateway", gateway,
			"-o", "parent=ens33", "-o", "vlan="+vlan, name)
	}
	create(d1, "mac_net10", "10", "172.16.10.0/24", "172.16.10.1")
	create(d1, "mac_net20", "20", "172.16.20.0/24", "172.16.20.1")
	create(d2, "mac_net10", "10", "172.16.10.0/25", "172.16.10.1")
	create(d2, "mac_net20", "20", "172.16.10.128/25", "172.16.10.129")
	d1.mustDocker("run", "-d", "--name", "bbox10", "--network", "mac_net10", "--ip", "172.16.10.10", "busybox", "sleep", "1d")
	d1.mustDocker("run", "-d", "--name", "bbox20", "--network", "mac_net20", "--ip", "172.16.20.10", "busybox", "sleep", "1d")
	d2.mustDocker("run", "-d", "--name", "bbox10", "--network", "mac_net10", "--ip", "172.16.10.11", "busybox", "sleep", "1d")
	d2.mustDocker("run", "-d", "--name", "bbox20", "--network", "mac_net20", "--ip", "172.16.10.130", "busybox", "sleep", "1d")
	d1.agree("host 1")
	d2.agree("host 2")

	if err := pingFrom(d1.netns("bbox10"), "172.16.10.11"); err != nil {
		t.Errorf("bbox10 on host 1 -> bbox10 on host 2 (VLAN 10): %v", err)
	}
	if err := pingFrom(d2.netns("bbox10"), "172.16.10.10"); err != nil {
		t.Errorf("bbox10 on host 2 -> bbox10 on host 1 (VLAN 10): %v", err)
	}
	if pingFrom(d1.netns("bbox10"), "172.16.10.130") == nil {
		t.Error("bbox10 on host 1 (VLAN 10) reached bbox20 on host 2 (VLAN 20)")
	}
}

// namedInStatsAndMetrics checks that `xmacvlan stats -o json` and a
// scrape of `xmacvlan metrics` (xmacvlan_endpoint_info) name every Docker
// endpoint's container and Docker endpoint ID.
func namedInStatsAndMetrics(t *testing.T, d *dockerEnv) {
	t.Helper()
	want := d.dockerEndpoints()
	if len(want) == 0 {
		t.Fatal("no Docker endpoint to look for")
	}
	out, err := d.cli("stats", "-o", "json", "--docker-state", d.stateDir())
	if err != nil {
		t.Fatal(err)
	}
	var stats struct {
		Parents []struct {
			Endpoints []struct {
				DockerEndpoint string `json:"docker_endpoint"`
				Container      string
			}
		}
	}
	if err := json.Unmarshal([]byte(out), &stats); err != nil {
		t.Fatalf("stats -o json: %v\n%s", err, out)
	}
	for _, w := range want {
		found := false
		for _, p := range stats.Parents {
			for _, e := range p.Endpoints {
				found = found || (e.DockerEndpoint == w.EndpointID && e.Container == w.Container)
			}
		}
		if !found {
			t.Errorf("stats -o json does not name container %s (docker endpoint %.12s):\n%s", w.Container, w.EndpointID, out)
		}
	}

	cmd, stdout := startCLI(t, "--bpffs", d.h.root, "metrics", "--listen", "127.0.0.1:0", "--docker-state", d.stateDir())
	defer interrupt(t, cmd)
	line, err := stdout.ReadString('\n')
	i := strings.Index(line, "http://")
	if err != nil || i < 0 {
		t.Fatalf("metrics printed %q (%v), want its URL", line, err)
	}
	resp, err := http.Get(strings.TrimSpace(line[i:]))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s %v", resp.Status, err)
	}
	info := parseExposition(t, body)["xmacvlan_endpoint_info"]
	for _, w := range want {
		found := false
		for _, m := range info.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			found = found || (labels["docker_endpoint"] == w.EndpointID && labels["container"] == w.Container && m.GetGauge().GetValue() == 1)
		}
		if !found {
			t.Errorf("no xmacvlan_endpoint_info for container %s (docker endpoint %.12s):\n%s", w.Container, w.EndpointID, body)
		}
	}
	testutil.Promtool(t, body)
}

// isGratuitousARP says whether f is an ARP for ip from ip, tagged vid.
func isGratuitousARP(f []byte, vid uint16, ip net.IP) bool {
	if len(f) < 46 || f[12] != 0x81 || f[13] != 0 || uint16(f[14]&0x0f)<<8|uint16(f[15]) != vid || f[16] != 0x08 || f[17] != 0x06 {
		return false
	}
	arp := f[18:]
	return bytes.Equal(arp[14:18], ip.To4()) && bytes.Equal(arp[24:28], ip.To4())
}

// A dual-stack network: the endpoint's record keeps the IPv4 address,
// Docker sets the --ip6 address too and the driver announces it (an
// unsolicited NA, tagged, on the wire); a peer across the wire reaches the
// container over IPv6 and `endpoint check` takes Docker's extra address
// for no difference.
func TestDockerIPv6(t *testing.T) {
	l := newLab(t)
	a := l.host()
	d := newDocker(t, a)
	// A second xmacvlan host answers on VLAN 10, across the switch.
	b := l.host()
	b.attach("")
	b.network("v10", 10, tables.Bridge)
	peer := b.container("v10", "", "fd00:10::100/64", false)
	addr(t, peer.ns, "eth0", "172.16.10.100/24")
	wire := startCapture(t, l.sw, "br0")

	d.mustDocker("network", "create", "-d", d.driver, "--ipv6", "--subnet", "172.16.10.0/24", "--gateway", "172.16.10.1",
		"--subnet", "fd00:10::/64", "--gateway", "fd00:10::1", "-o", "parent=ens33", "-o", "vlan=10", "mac_net10")
	d.mustDocker("run", "-d", "--name", "bbox10", "--network", "mac_net10", "--ip", "172.16.10.10", "--ip6", "fd00:10::10", "busybox", "sleep", "1d")
	d.agree("docker run --ip6") // endpoint check included
	if ip6 := d.mustDocker("inspect", "-f", "{{.NetworkSettings.Networks.mac_net10.GlobalIPv6Address}}", "bbox10"); ip6 != "fd00:10::10" {
		t.Errorf("--ip6 fd00:10::10: Docker gave %q", ip6)
	}
	mac := mustMAC(d.mustDocker("inspect", "-f", "{{.NetworkSettings.Networks.mac_net10.MacAddress}}", "bbox10"))

	// Before any traffic: the gratuitous ARP and the unsolicited NA.
	err := eventually(5*time.Second, func() error {
		var arp, na bool
		for _, f := range wire.from(mac) {
			arp = arp || isGratuitousARP(f, 10, net.ParseIP("172.16.10.10"))
			na = na || isUnsolicitedNA(f, 10, net.ParseIP("fd00:10::10"))
		}
		if !arp || !na {
			return fmt.Errorf("from %s on VLAN 10: gratuitous ARP %v, unsolicited NA for fd00:10::10 %v", mac, arp, na)
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	if err := pingFrom(peer.ns.Path(), "fd00:10::10"); err != nil {
		t.Errorf("peer across the wire -> container over IPv6: %v", err)
	}
	if err := pingFrom(d.netns("bbox10"), "fd00:10::100"); err != nil {
		t.Errorf("container -> peer over IPv6: %v", err)
	}
	if err := pingFrom(d.netns("bbox10"), "172.16.10.100"); err != nil {
		t.Errorf("container -> peer over IPv4: %v", err)
	}
	d.mustDocker("rm", "-f", "bbox10")
	d.mustDocker("network", "rm", "mac_net10")
	d.agree("docker network rm")
}

// isUnsolicitedNA says whether f is a neighbour advertisement for ip to
// all nodes (ff02::1), neither solicited nor a reply, tagged vid.
func isUnsolicitedNA(f []byte, vid uint16, ip net.IP) bool {
	const icmp = 18 + 40 // Ethernet, 802.1Q, IPv6 header
	if len(f) < icmp+24 || f[12] != 0x81 || f[13] != 0 || uint16(f[14]&0x0f)<<8|uint16(f[15]) != vid || f[16] != 0x86 || f[17] != 0xdd {
		return false
	}
	return bytes.Equal(f[:6], []byte{0x33, 0x33, 0, 0, 0, 1}) && f[18+6] == 58 && f[icmp] == 136 &&
		f[icmp+4]&0x40 == 0 && bytes.Equal(f[icmp+8:icmp+24], ip.To16())
}

// Host <-> container with -o hairpin=on, which Docker's own macvlan on the
// same parent cannot do.
func TestDockerHairpin(t *testing.T) {
	l := newLab(t)
	a := l.host()
	addr(t, a.ns, a.parent, "10.0.0.10/24")
	d := newDocker(t, a)

	d.mustDocker("network", "create", "-d", "macvlan", "--subnet", "10.0.0.0/24", "--gateway", "10.0.0.1", "-o", "parent=ens33", "mv")
	d.mustDocker("run", "-d", "--name", "m1", "--network", "mv", "--ip", "10.0.0.3", "busybox", "sleep", "1d")
	m1 := d.netns("m1")
	if err := pingFrom(m1, "10.0.0.1"); err != nil {
		t.Fatalf("Docker's macvlan container cannot reach the wire either, the setup is broken: %v", err)
	}
	if pingFrom(m1, "10.0.0.10") == nil {
		t.Error("Docker's macvlan container reached its host: the limitation this test shows is gone")
	}
	if pingFrom(a.ns.Path(), "10.0.0.3") == nil {
		t.Error("the host reached Docker's macvlan container")
	}
	d.mustDocker("rm", "-f", "m1")
	d.mustDocker("network", "rm", "mv")

	d.mustDocker("network", "create", "-d", d.driver, "--subnet", "10.0.0.0/24", "--gateway", "10.0.0.1", "-o", "parent=ens33", "-o", "hairpin=on", "lan")
	d.mustDocker("run", "-d", "--name", "x1", "--network", "lan", "--ip", "10.0.0.2", "busybox", "sleep", "1d")
	x1 := d.netns("x1")
	if err := pingFrom(x1, "10.0.0.10"); err != nil {
		t.Errorf("container -> host with hairpin=on: %v", err)
	}
	if err := pingFrom(a.ns.Path(), "10.0.0.2"); err != nil {
		t.Errorf("host -> container with hairpin=on: %v", err)
	}
	if err := pingFrom(x1, "10.0.0.1"); err != nil {
		t.Errorf("container -> wire with hairpin=on: %v", err)
	}
	d.agree("hairpin")
}

// Every way Docker changes endpoints, and the plugin's and the daemon's
// restarts: afterwards xmacvlan's endpoints, tables and links are exactly
// Docker's containers, and they talk.
func TestDockerLifecycle(t *testing.T) {
	l := newLab(t)
	a := l.host()
	d := newDocker(t, a)
	d.mustDocker("network", "create", "-d", d.driver, "--subnet", "10.0.0.0/24", "--gateway", "10.0.0.1", "-o", "parent=ens33", "lan")
	for _, c := range []string{"c1", "c2", "c3"} {
		args := []string{"run", "-d", "--name", c, "--network", "lan"}
		if c == "c1" {
			args = append(args, "--ip", "10.0.0.2")
		}
		d.mustDocker(append(args, "busybox", "sleep", "1d")...)
	}
	d.agree("docker run")
	if err := pingFrom(d.netns("c2"), "10.0.0.2"); err != nil {
		t.Errorf("c2 -> c1: %v", err)
	}
	if err := pingFrom(d.netns("c1"), "10.0.0.1"); err != nil {
		t.Errorf("c1 -> wire: %v", err)
	}

	d.mustDocker("rm", "-f", "c3")
	d.agree("docker rm -f")

	d.mustDocker("network", "create", "-d", d.driver, "--subnet", "10.30.0.0/24", "-o", "parent=ens33", "-o", "vlan=30", "v30")
	d.mustDocker("network", "connect", "v30", "c1")
	d.agree("docker network connect")
	d.mustDocker("network", "disconnect", "v30", "c1")
	d.agree("docker network disconnect")
	d.mustDocker("network", "connect", "v30", "c2")

	// SIGKILL: the datapath keeps forwarding without the plugin, and the
	// plugin started again knows Docker's networks and endpoints.
	d.killPlugin()
	if err := pingFrom(d.netns("c2"), "10.0.0.2"); err != nil {
		t.Errorf("c2 -> c1 while the plugin is dead: %v", err)
	}
	// What a Join killed before the plugin saved its state leaves: an
	// endpoint on the plugin's network that no Docker endpoint names.
	orphan := testutil.NewNetns(t, "xc")
	lan := "docker-" + d.mustDocker("network", "inspect", "-f", "{{.Id}}", "lan")[:12]
	if out, err := a.cli("endpoint", "add", lan, "--netns", orphan.Path()); err != nil {
		t.Fatal(out, err)
	}
	d.startPlugin()
	d.mustDocker("run", "-d", "--name", "c4", "--network", "lan", "busybox", "sleep", "1d")
	if err := pingFrom(d.netns("c4"), "10.0.0.2"); err != nil {
		t.Errorf("c4 (run after the plugin's restart) -> c1: %v", err)
	}
	d.agree("plugin SIGKILL and restart")

	// Ten at once: each gets its own endpoint and connectivity.
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			name := fmt.Sprintf("p%d", i)
			if _, errs[i] = d.docker("run", "-d", "--name", name, "--network", "lan", "busybox", "sleep", "1d"); errs[i] != nil {
				return
			}
			pid, err := d.docker("inspect", "-f", "{{.State.Pid}}", name)
			if err != nil {
				errs[i] = err
				return
			}
			errs[i] = pingFrom("/proc/"+pid+"/ns/net", "10.0.0.2")
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("parallel run p%d: %v", i, err)
		}
	}
	d.agree("20 parallel docker run")

	// A reboot: Docker stops the containers and deletes their endpoints,
	// the pinned state goes (a forced detach here), the driver's state
	// file stays. The plugin's start attaches the parent and makes the
	// networks again, since Docker does not create them again; then
	// starting the containers works.
	d.stopDockerd()
	if rows, err := d.xmvEndpoints(); err != nil || len(rows) != 0 {
		t.Errorf("after dockerd stopped its containers: %d endpoints left (%v)", len(rows), err)
	}
	d.killPlugin()
	if out, err := a.cli("detach", "ens33", "--force"); err != nil {
		t.Fatal(out, err)
	}
	d.startPlugin()
	if out, err := a.cli("network", "list"); err != nil || strings.Count(out, "docker-") != 2 {
		t.Errorf("the plugin did not make its 2 networks again after the pins were gone:\n%s %v", out, err)
	}
	d.startDockerd()
	d.mustDocker("start", "c1", "c2")
	d.agree("reboot: dockerd and plugin restart, pins gone")
	if err := pingFrom(d.netns("c2"), "10.0.0.2"); err != nil {
		t.Errorf("c2 -> c1 after the reboot: %v", err)
	}

	// Everything removed: the plugin detaches the parent it attached.
	ids := strings.Fields(d.mustDocker("ps", "-aq"))
	d.mustDocker(append([]string{"rm", "-f"}, ids...)...)
	d.mustDocker("network", "rm", "lan", "v30")
	d.agree("docker network rm")
	if out, _ := a.cli("status"); !strings.Contains(out, "no parent attached") {
		t.Errorf("the plugin's parent is still attached after its last network went:\n%s", out)
	}
	st, err := docker.LoadState(d.stateDir())
	if err != nil || len(st.Networks) != 0 || len(st.Endpoints) != 0 || len(st.Attached) != 0 {
		t.Errorf("the plugin's state is not empty: %+v %v", st, err)
	}
}

// Bad options are refused at `docker network create`, with the reason in
// Docker's error, and nothing is made.
func TestDockerBadOptions(t *testing.T) {
	l := newLab(t)
	a := l.host()
	d := newDocker(t, a)
	for i, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-o", "parent=nosuch"}, "-o parent=nosuch: no such interface"},
		{[]string{"-o", "parent=ens33", "-o", "vlan=5000"}, "-o vlan=5000: invalid VLAN 5000: want 1..4094, or 0 for the untagged segment"},
		{[]string{"-o", "parent=ens33", "-o", "vlan=ten"}, "-o vlan=ten: want a VLAN ID 1-4094"},
		{[]string{"-o", "parent=ens33", "-o", "mode=passthru"}, "-o mode=passthru: want bridge, private or vepa"},
		{[]string{"-o", "parent=ens33", "-o", "hairpin=maybe"}, "-o hairpin=maybe: want on or off"},
		{[]string{"-o", "parent=ens33", "-o", "delivery=tcp"}, "-o delivery=tcp: want skb or xdp"},
		{[]string{"-o", "parent=ens33", "-o", "storm-limit=lots"}, "-o storm-limit=lots: want frames per second each container may flood, 1..100000000, or 0 for no limit"},
		{[]string{"-o", "parent=ens33", "-o", "colour=blue"}, "unknown option colour"},
		{[]string{"-o", "vlan=10"}, "-o parent=NIC is required"},
	} {
		name := fmt.Sprintf("bad%d", i)
		args := append([]string{"network", "create", "-d", d.driver, "--subnet", fmt.Sprintf("10.9.%d.0/24", i)}, c.args...)
		_, err := d.docker(append(args, name)...)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want an error with %q", c.args, err, c.want)
		}
	}
	if out := d.mustDocker("network", "ls", "-q", "--filter", "driver="+d.driver); out != "" {
		t.Errorf("refused networks exist in Docker: %s", out)
	}
	if out, _ := a.cli("status"); !strings.Contains(out, "no parent attached") {
		t.Errorf("a refused network attached the parent:\n%s", out)
	}

	// A MAC already on the VLAN.
	d.mustDocker("network", "create", "-d", d.driver, "--subnet", "10.0.0.0/24", "-o", "parent=ens33", "lan")
	d.mustDocker("run", "-d", "--name", "c1", "--network", "lan", "--mac-address", "02:00:00:00:00:01", "busybox", "sleep", "1d")
	_, err := d.docker("run", "-d", "--name", "c2", "--network", "lan", "--mac-address", "02:00:00:00:00:01", "busybox", "sleep", "1d")
	if err == nil || !strings.Contains(err.Error(), "MAC 02:00:00:00:00:01 is already used") {
		t.Errorf("a second container with c1's MAC: got %v", err)
	}
	d.docker("rm", "-f", "c2")
	d.agree("refused MAC")
}

// BenchmarkDockerRunToFirstPing times `docker run -d` to the first echo
// reply from the container, seen from the wire (the switch), for xmacvlan
// and for Docker's own macvlan on the same veth parent. Reports the median
// (run with -benchtime=20x for the median of 20).
func BenchmarkDockerRunToFirstPing(b *testing.B) {
	l := newLab(b)
	a := l.host()
	d := newDocker(b, a)
	for _, driver := range []string{d.driver, "macvlan"} {
		label := driver
		if driver == d.driver {
			label = "xmacvlan"
		}
		b.Run(label, func(b *testing.B) {
			if _, err := d.docker("network", "create", "-d", driver, "--subnet", "10.0.0.0/24", "--gateway", "10.0.0.1", "-o", "parent=ens33", "bench"); err != nil {
				b.Fatal(err)
			}
			defer d.docker("network", "rm", "bench")
			var times []time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				ip := fmt.Sprintf("10.0.0.%d", 100+i%100)
				name := fmt.Sprintf("bench%d", i)
				run(l.sw, "ip", "neigh", "flush", "all")
				b.StartTimer()
				start := time.Now()
				if _, err := d.docker("run", "-d", "--name", name, "--network", "bench", "--ip", ip, "busybox", "sleep", "1d"); err != nil {
					b.Fatal(err)
				}
				if _, err := run(l.sw, "ping", "-n", "-q", "-i", "0.002", "-c", "1", "-w", "10", ip); err != nil {
					b.Fatal(err)
				}
				times = append(times, time.Since(start))
				b.StopTimer()
				d.docker("rm", "-f", name)
				b.StartTimer()
			}
			slices.Sort(times)
			b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "ms-median")
			b.Logf("%s, %d runs: %v", label, len(times), times)
		})
	}
}
