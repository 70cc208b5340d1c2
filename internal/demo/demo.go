// Package demo builds the seed tutorial's topology in network namespaces,
// with xmacvlan in place of 8021q + macvlan: a switch, two Docker hosts
// (docker01, docker02) with ens33 on the switch, networks macvlan10 and
// macvlan20 on VLAN 10 and 20, and containers bbox10 and bbox20 on each
// host. It runs the same xmacvlan commands a user would, then shows who
// can ping whom, the VLAN tag on the wire, and the counters.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/internal/frames"
	"github.com/xmacvlan/xmacvlan/internal/nsutil"
)

// Root holds both hosts' pinned state; its presence marks a demo as ours.
const Root = "/sys/fs/bpf/xmacvlan-demo"

const (
	nsSwitch = "switch"
	lanNet   = "192.168.100"
)

// hosts and containers of the tutorial.
var hosts = []struct {
	name string
	n    int // last octet, as in the tutorial's .11 / .12
}{{"docker01", 11}, {"docker02", 12}}

// Namespaces lists every namespace the demo creates, in creation order.
func Namespaces() []string {
	out := []string{nsSwitch}
	for _, h := range hosts {
		out = append(out, h.name, h.name+"-bbox10", h.name+"-bbox20")
	}
	return append(out, "docker01-web", "docker01-mv")
}

// Options of a demo run.
type Options struct {
	Out  io.Writer
	Keep bool   // leave the topology up
	Self string // the xmacvlan binary the steps run
}

type run struct {
	Options
	ns map[string]netns.NsHandle
}

// Run builds the topology, shows the results and, unless Keep, removes
// everything again (also when it fails or ctx is cancelled).
func Run(ctx context.Context, o Options) (err error) {
	for _, name := range Namespaces() {
		if _, err := os.Stat("/var/run/netns/" + name); err == nil {
			return fmt.Errorf("network namespace %s exists already: a demo is up (xmacvlan demo --clean removes it) or the name is taken", name)
		}
	}
	if _, err := os.Stat(Root); err == nil {
		return fmt.Errorf("%s exists: a demo is up; `xmacvlan demo --clean` removes it", Root)
	}
	r := &run{Options: o, ns: map[string]netns.NsHandle{}}
	defer func() {
		if o.Keep && err == nil {
			r.explain()
			return
		}
		r.say("\n== Cleaning up")
		if cerr := Clean(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	if err := r.build(ctx); err != nil {
		return err
	}
	failures, err := r.matrix(ctx)
	if err != nil {
		return err
	}
	r.counters()
	if failures > 0 {
		return fmt.Errorf("%d reachability results differ from what the tutorial expects", failures)
	}
	return nil
}

func (r *run) say(format string, args ...any) { fmt.Fprintf(r.Out, format+"\n", args...) }

// build creates the namespaces and wires, then runs the tutorial's steps
// with the xmacvlan CLI.
func (r *run) build(ctx context.Context) error {
	for _, name := range Namespaces() {
		h, err := nsutil.NewNamed(name)
		if err != nil {
			return err
		}
		r.ns[name] = h
	}
	if err := os.MkdirAll(Root, 0o700); err != nil {
		return fmt.Errorf("create %s: %w (is /sys/fs/bpf a bpffs?)", Root, err)
	}

	r.say("== 1. The wire: namespace %q with bridge br0 as the trunk switch", nsSwitch)
	r.say("   (this kernel has no bridge VLAN filtering: br0 forwards every tag, like a trunk)")
	sw := r.nl(nsSwitch)
	if err := sw.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "br0"}}); err != nil {
		return err
	}
	if err := r.upAddr(nsSwitch, "br0", lanNet+".1/24"); err != nil {
		return err
	}
	for _, h := range hosts {
		port := "p-" + h.name
		if err := r.veth(h.name, "ens33", nsSwitch, port); err != nil {
			return err
		}
		br, _ := sw.LinkByName("br0")
		p, _ := sw.LinkByName(port)
		if err := sw.LinkSetMaster(p, br); err != nil {
			return err
		}
		if err := r.upAddr(h.name, "ens33", fmt.Sprintf("%s.%d/24", lanNet, h.n)); err != nil {
			return err
		}
		r.say("   %s: ens33 %s.%d on switch port %s", h.name, lanNet, h.n, port)
	}

	r.say("\n== 2. Each host: xmacvlan on ens33 instead of ens33.10/ens33.20 and macvlan devices")
	for _, h := range hosts {
		steps := [][]string{
			{"attach", "ens33", "--hairpin"},
			{"network", "create", "macvlan10", "--parent", "ens33", "--vlan", "10", "--subnet", "172.16.10.0/24", "--gateway", "172.16.10.1"},
			{"network", "create", "macvlan20", "--parent", "ens33", "--vlan", "20", "--subnet", "172.16.20.0/24", "--gateway", "172.16.20.1"},
			{"endpoint", "add", "macvlan10", "--netns", h.name + "-bbox10", "--ip", fmt.Sprintf("172.16.10.%d", h.n)},
			{"endpoint", "add", "macvlan20", "--netns", h.name + "-bbox20", "--ip", fmt.Sprintf("172.16.20.%d", h.n)},
		}
		if h.name == "docker01" {
			steps = append(steps,
				// The untagged segment, where the host lives: a container
				// the host can reach thanks to hairpin.
				[]string{"network", "create", "lan", "--parent", "ens33", "--subnet", lanNet + ".0/24", "--gateway", lanNet + ".1"},
				[]string{"endpoint", "add", "lan", "--netns", "docker01-web", "--ip", lanNet + ".21"},
				// The host itself on VLAN 10, without a VLAN device.
				[]string{"endpoint", "add", "macvlan10", "--host", "--ip", "172.16.10.101"},
			)
		}
		for _, s := range steps {
			if err := ctx.Err(); err != nil {
				return err
			}
			if _, err := r.xmacvlan(h.name, s...); err != nil {
				return err
			}
		}
	}

	// For comparison: a kernel macvlan container on docker01's ens33.
	mv := &netlink.Macvlan{LinkAttrs: netlink.LinkAttrs{Name: "mv0", ParentIndex: r.index("docker01", "ens33"),
		Namespace: netlink.NsFd(r.ns["docker01-mv"])}, Mode: netlink.MACVLAN_MODE_BRIDGE}
	if err := r.nl("docker01").LinkAdd(mv); err != nil {
		return fmt.Errorf("kernel macvlan for comparison: %w", err)
	}
	if err := r.upAddr("docker01-mv", "mv0", lanNet+".31/24"); err != nil {
		return err
	}
	r.say("   docker01: and, for comparison, a kernel macvlan container (docker01-mv, %s.31)", lanNet)
	return nil
}

// xmacvlan runs one CLI step inside a host's namespace, as a user would.
func (r *run) xmacvlan(host string, args ...string) (string, error) {
	r.say("   %s# xmacvlan %s", host, strings.Join(args, " "))
	full := append([]string{"--net=/var/run/netns/" + host, r.Self, "--bpffs", filepath.Join(Root, host)}, args...)
	out, err := exec.Command("nsenter", full...).CombinedOutput()
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line != "" {
			r.say("     %s", line)
		}
	}
	if err != nil {
		return string(out), fmt.Errorf("xmacvlan %s on %s: %w", strings.Join(args, " "), host, err)
	}
	return string(out), nil
}

type probe struct {
	from, fromNS string
	to, ip       string
	want         bool
	why          string
}

// matrix pings every pair that tells a story, captures the switch to show
// each frame's VLAN tag, and counts results that differ from expectation.
func (r *run) matrix(ctx context.Context) (int, error) {
	r.say("\n== 3. Who can ping whom (ping from FROM to TO; the tag is read off the switch)")
	probes := []probe{
		{"docker01/bbox10", "docker01-bbox10", "docker02/bbox10", "172.16.10.12", true, "same VLAN across hosts"},
		{"docker02/bbox10", "docker02-bbox10", "docker01/bbox10", "172.16.10.11", true, "same VLAN across hosts"},
		{"docker01/bbox20", "docker01-bbox20", "docker02/bbox20", "172.16.20.12", true, "same VLAN across hosts"},
		{"docker01/bbox10", "docker01-bbox10", "docker02/bbox20", "172.16.20.12", false, "other VLAN, no router"},
		{"docker01/bbox10", "docker01-bbox10", "docker01/bbox20", "172.16.20.11", false, "other VLAN, no router"},
		{"docker01 (host)", "docker01", "docker01/web", lanNet + ".21", true, "hairpin: macvlan cannot"},
		{"docker01/web", "docker01-web", "docker01 (host)", lanNet + ".11", true, "hairpin: macvlan cannot"},
		{"docker01/web", "docker01-web", "docker02 (host)", lanNet + ".12", true, "untagged segment"},
		{"docker01/mv0 (macvlan)", "docker01-mv", "docker01 (host)", lanNet + ".11", false, "the kernel macvlan limit"},
		{"docker01 xmv-macvlan10", "docker01", "docker02/bbox10", "172.16.10.12", true, "host endpoint on VLAN 10"},
	}
	// The switch port of each host sees, incoming, what that host sends.
	ports := map[string]*frames.Capture{}
	for _, h := range hosts {
		c, err := frames.Listen(r.ns[nsSwitch], "p-"+h.name)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		ports[h.name] = c
	}
	tw := tabwriter.NewWriter(r.Out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "   FROM\tTO\t\tPING\tON THE WIRE\tWHY")
	failures := 0
	for _, p := range probes {
		if err := ctx.Err(); err != nil {
			return failures, err
		}
		for _, c := range ports {
			c.Reset()
		}
		ok := exec.Command("nsenter", "--net=/var/run/netns/"+p.fromNS, "ping", "-c", "1", "-W", "1", p.ip).Run() == nil
		result := "ok"
		if !ok {
			result = "no"
		}
		mark := ""
		if ok != p.want {
			mark = "  <-- unexpected"
			failures++
		}
		host := strings.SplitN(p.fromNS, "-", 2)[0]
		tag := wireTag(ports[host], p.ip)
		// The capture reads in the background: a request the switch
		// carried may reach it a moment after the reply reached ping.
		for i := 0; ok && tag == "-" && i < 10; i++ {
			time.Sleep(20 * time.Millisecond)
			tag = wireTag(ports[host], p.ip)
		}
		fmt.Fprintf(tw, "   %s\t%s\t%s\t%s\t%s\t%s%s\n", p.from, p.to, p.ip, result, tag, p.why, mark)
	}
	tw.Flush()
	return failures, nil
}

// wireTag says how echo requests to ip entered the switch.
func wireTag(c *frames.Capture, ip string) string {
	dst := net.ParseIP(ip).To4()
	tags := map[int]bool{}
	for _, f := range c.Select(func(f []byte) bool { return isEchoRequestTo(f, dst) }) {
		tags[frames.VLAN(f)] = true
	}
	switch {
	case len(tags) == 0:
		return "-"
	case tags[-1] && len(tags) == 1:
		return "untagged"
	}
	var out []string
	for t := range tags {
		if t >= 0 {
			out = append(out, fmt.Sprintf("vlan %d", t))
		}
	}
	return strings.Join(out, ",")
}

// isEchoRequestTo matches an ICMP echo request to dst, tagged or not.
func isEchoRequestTo(f []byte, dst net.IP) bool {
	off := 12
	if frames.VLAN(f) >= 0 {
		off = 16
	}
	if len(f) < off+2+20+1 || f[off] != 0x08 || f[off+1] != 0x00 {
		return false
	}
	ip := f[off+2:]
	hl := int(ip[0]&0x0f) * 4
	return ip[9] == 1 && net.IP(ip[16:20]).Equal(dst) && len(ip) > hl && ip[hl] == 8
}

// counters shows what each host's datapath did.
func (r *run) counters() {
	r.say("\n== 4. What the datapath counted")
	for _, h := range hosts {
		r.xmacvlan(h.name, "stats")
	}
}

func (r *run) explain() {
	r.say("\n== The demo is still up (--keep). Explore it with, for example:")
	r.say("   nsenter --net=/var/run/netns/docker01 %s --bpffs %s/docker01 status", r.Self, Root)
	r.say("   nsenter --net=/var/run/netns/docker01-bbox10 ping 172.16.10.12")
	r.say("   nsenter --net=/var/run/netns/switch tcpdump -eni p-docker01 vlan")
	r.say("   bpftool map dump pinned %s/docker01/ens33/xmv_macs", Root)
	r.say("Remove it with: xmacvlan demo --clean")
}

// Clean removes a demo: the pinned state, then the namespaces (their
// interfaces go with them).
func Clean() error {
	var errs []error
	for _, h := range hosts {
		root := filepath.Join(Root, h.name)
		if _, err := os.Stat(root); err == nil {
			ns, err := netns.GetFromName(h.name)
			if err == nil {
				self, _ := os.Executable()
				out, err := exec.Command("nsenter", "--net=/var/run/netns/"+h.name, self, "--bpffs", root, "detach", "--force", "ens33").CombinedOutput()
				if err != nil && !strings.Contains(string(out), "not attached") {
					errs = append(errs, fmt.Errorf("detach on %s: %v: %s", h.name, err, out))
				}
				ns.Close()
			}
		}
	}
	if err := os.RemoveAll(Root); err != nil {
		errs = append(errs, err)
	}
	for _, name := range Namespaces() {
		if err := nsutil.DeleteNamed(name); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOENT) {
			errs = append(errs, fmt.Errorf("delete netns %s: %w", name, err))
		}
	}
	// Let the kernel finish tearing down the namespaces' interfaces.
	time.Sleep(100 * time.Millisecond)
	return errors.Join(errs...)
}

func (r *run) nl(ns string) *netlink.Handle {
	h, err := netlink.NewHandleAt(r.ns[ns])
	if err != nil {
		panic(err)
	}
	return h
}

func (r *run) index(ns, dev string) int {
	l, err := r.nl(ns).LinkByName(dev)
	if err != nil {
		return 0
	}
	return l.Attrs().Index
}

func (r *run) veth(aNS, a, bNS, b string) error {
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: a}, PeerName: b, PeerNamespace: netlink.NsFd(r.ns[bNS])}
	if err := r.nl(aNS).LinkAdd(v); err != nil {
		return fmt.Errorf("veth %s/%s: %w", a, b, err)
	}
	if err := r.upAddr(bNS, b, ""); err != nil {
		return err
	}
	return nil
}

// upAddr brings dev up, with an address unless cidr is empty.
func (r *run) upAddr(ns, dev, cidr string) error {
	h := r.nl(ns)
	defer h.Close()
	l, err := h.LinkByName(dev)
	if err != nil {
		return err
	}
	if cidr != "" {
		a, err := netlink.ParseAddr(cidr)
		if err != nil {
			return err
		}
		if err := h.AddrAdd(l, a); err != nil {
			return fmt.Errorf("%s on %s/%s: %w", cidr, ns, dev, err)
		}
	}
	return h.LinkSetUp(l)
}
