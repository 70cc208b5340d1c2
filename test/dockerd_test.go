package test

// A private Docker daemon and an xmacvlan docker-plugin, both in a lab
// host's namespace: the daemon has its own data-root, exec-root and
// socket, changes no iptables and has no bridge; the plugin serves a
// socket of its own name, so the driver is called that name and a real
// xmacvlan plugin on the machine is never touched. Cleanup stops both and
// unmounts what the daemon mounted.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
)

// dockerCLI is Debian's 20.10 client: a newer client elsewhere in PATH
// refuses --mac-address against this daemon.
const dockerCLI = "/usr/bin/docker"

type dockerEnv struct {
	t       testing.TB
	h       *host
	dir     string // data-root, logs, the plugin's state
	execDir string // exec-root and the daemon's socket (short: containerd's socket paths)
	sock    string
	driver  string // the plugin's name: `docker network create -d driver`
	plugin  *exec.Cmd
	dockerd *exec.Cmd
	// ownMounts: the daemon and the plugin run in a mount namespace of
	// their own with a tmpfs on /run/docker/plugins, so that two daemons
	// on one machine each find their own plugin called xmacvlan, as two
	// hosts would.
	ownMounts bool
}

// needDocker skips without the Docker packages (scripts/setup-host.sh
// installs them), except under CI=true.
func needDocker(t testing.TB) {
	t.Helper()
	testutil.Privileged(t)
	for _, f := range []string{dockerCLI, "/usr/sbin/dockerd", "/bin/busybox"} {
		if _, err := os.Stat(f); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("CI=true and %s is missing (scripts/setup-host.sh installs docker.io and busybox-static)", f)
			}
			t.Skipf("needs %s (docker.io, busybox-static)", f)
		}
	}
}

// newDocker starts a daemon and the plugin in h's namespace, with the
// busybox image imported.
func newDocker(t testing.TB, h *host) *dockerEnv {
	t.Helper()
	return startDocker(t, h, false)
}

// newDockerHost is newDocker in a mount namespace of its own, with the
// plugin under its real name: one "Docker host" of several.
func newDockerHost(t testing.TB, h *host) *dockerEnv {
	t.Helper()
	return startDocker(t, h, true)
}

func startDocker(t testing.TB, h *host, ownMounts bool) *dockerEnv {
	t.Helper()
	needDocker(t)
	name := testutil.Name("xd")
	d := &dockerEnv{t: t, h: h, driver: name, execDir: "/run/" + name, ownMounts: ownMounts}
	if ownMounts {
		d.driver = "xmacvlan"
	}
	var err error
	if d.dir, err = os.MkdirTemp("/var/tmp", "xmacvlan-docker-"); err != nil {
		t.Fatal(err)
	}
	d.sock = filepath.Join(d.execDir, "docker.sock")
	t.Cleanup(d.stop)
	d.startDockerd()
	d.startPlugin()
	if _, err := d.dockerIn(busyboxTar(t), "import", "-c", `CMD ["/bin/sh"]`, "-", "busybox:latest"); err != nil {
		t.Fatalf("import busybox: %v", err)
	}
	return d
}

func (d *dockerEnv) startDockerd() {
	t := d.t
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(d.dir, "dockerd.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := []string{"nsenter", "--net=" + d.h.ns.Path(), "dockerd",
		"--data-root", filepath.Join(d.dir, "data"), "--exec-root", filepath.Join(d.execDir, "exec"),
		"--pidfile", filepath.Join(d.execDir, "dockerd.pid"), "-H", "unix://" + d.sock,
		"--storage-driver", storageDriver(d.dir), "--iptables=false", "--ip-forward=false", "--ip-masq=false",
		"--bridge=none", "--shutdown-timeout=1"}
	if d.ownMounts {
		// The mounts die with the namespace, when dockerd and the plugin exit.
		args = append([]string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
			`mkdir -p /run/docker/plugins && mount -t tmpfs tmpfs /run/docker/plugins && exec "$@"`, "sh"}, args...)
	}
	d.dockerd = exec.Command(args[0], args[1:]...)
	d.dockerd.Stdout, d.dockerd.Stderr = logf, logf
	if err := d.dockerd.Start(); err != nil {
		t.Fatalf("start dockerd: %v", err)
	}
	err = eventually(30*time.Second, func() error {
		_, err := d.docker("version", "-f", "{{.Server.Version}}")
		return err
	})
	if err != nil {
		t.Fatalf("dockerd did not come up: %v\n%s", err, d.tail("dockerd.log"))
	}
}

// stopDockerd stops the daemon as an init system would (SIGTERM, then
// wait): Docker stops the containers and deletes their endpoints.
func (d *dockerEnv) stopDockerd() {
	stopProcess(d.dockerd, 30*time.Second)
	d.dockerd = nil
}

func (d *dockerEnv) startPlugin() {
	t := d.t
	t.Helper()
	logf, err := os.OpenFile(filepath.Join(d.dir, "plugin.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	args := []string{"nsenter", "--net=" + d.h.ns.Path(), xmacvlanBin, "--bpffs", d.h.root, "docker-plugin",
		"--socket", d.pluginSocket(), "--state", d.stateDir(), "--docker-host", "unix://" + d.sock}
	if d.ownMounts {
		args = slices.Insert(args, 1, d.mountArgs()...)
	}
	d.plugin = exec.Command(args[0], args[1:]...)
	d.plugin.Stdout, d.plugin.Stderr = logf, logf
	if err := d.plugin.Start(); err != nil {
		t.Fatalf("start the plugin: %v", err)
	}
	err = eventually(10*time.Second, func() error {
		c, err := net.Dial("unix", d.pluginSocketHere())
		if err == nil {
			c.Close()
		}
		return err
	})
	if err != nil {
		t.Fatalf("the plugin does not answer: %v\n%s", err, d.tail("plugin.log"))
	}
}

// killPlugin kills the plugin with SIGKILL: no cleanup of its own.
func (d *dockerEnv) killPlugin() {
	d.plugin.Process.Kill()
	d.plugin.Wait()
	d.plugin = nil
}

func (d *dockerEnv) pluginSocket() string { return "/run/docker/plugins/" + d.driver + ".sock" }

// pluginSocketHere is the plugin's socket as this process reaches it:
// through the daemon's root when it has mounts of its own.
func (d *dockerEnv) pluginSocketHere() string {
	if d.ownMounts {
		return fmt.Sprintf("/proc/%d/root%s", d.dockerd.Process.Pid, d.pluginSocket())
	}
	return d.pluginSocket()
}
func (d *dockerEnv) stateDir() string { return filepath.Join(d.dir, "state") }

// stop removes the containers and networks (through Docker and the
// plugin), stops both processes and unmounts what the daemon left.
func (d *dockerEnv) stop() {
	if d.dockerd != nil {
		if ids, err := d.docker("ps", "-aq"); err == nil && strings.TrimSpace(ids) != "" {
			d.docker(append([]string{"rm", "-f"}, strings.Fields(ids)...)...)
		}
		if nets, err := d.docker("network", "ls", "-q", "--filter", "driver="+d.driver); err == nil && strings.TrimSpace(nets) != "" {
			d.docker(append([]string{"network", "rm"}, strings.Fields(nets)...)...)
		}
		d.stopDockerd()
	}
	if d.plugin != nil {
		stopProcess(d.plugin, 10*time.Second)
	}
	if !d.ownMounts {
		os.Remove(d.pluginSocket())
	}
	unmountUnder(d.dir)
	unmountUnder(d.execDir)
	if log, _ := os.ReadFile(filepath.Join(d.dir, "plugin.log")); bytes.Contains(log, []byte("DATA RACE")) || bytes.Contains(log, []byte("panic")) {
		d.t.Errorf("the plugin raced or panicked (GOFLAGS=-race builds it with the race detector)")
	}
	if d.t.Failed() {
		d.t.Logf("dockerd log:\n%s\nplugin log:\n%s", d.tail("dockerd.log"), d.tail("plugin.log"))
	}
	os.RemoveAll(d.execDir)
	os.RemoveAll(d.dir)
}

func stopProcess(cmd *exec.Cmd, timeout time.Duration) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
	}
}

// unmountUnder unmounts every mount point under dir, deepest first.
func unmountUnder(dir string) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && (fields[4] == dir || strings.HasPrefix(fields[4], dir+"/")) {
			points = append(points, fields[4])
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, p := range points {
		if unix.Unmount(p, 0) != nil {
			unix.Unmount(p, unix.MNT_DETACH)
		}
	}
}

func (d *dockerEnv) tail(file string) string {
	b, _ := os.ReadFile(filepath.Join(d.dir, file))
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// docker runs the 20.10 client against the private daemon; the error
// carries what Docker printed on stderr.
func (d *dockerEnv) docker(args ...string) (string, error) {
	return d.dockerIn(nil, args...)
}

func (d *dockerEnv) dockerIn(stdin []byte, args ...string) (string, error) {
	cmd := exec.Command(dockerCLI, append([]string{"-H", "unix://" + d.sock}, args...)...)
	if stdin != nil {
		cmd.Stdin = strings.NewReader(string(stdin))
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("docker %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(string(out)), nil
}

func (d *dockerEnv) mustDocker(args ...string) string {
	d.t.Helper()
	out, err := d.docker(args...)
	if err != nil {
		d.t.Fatal(err)
	}
	return out
}

// netns is the path of a running container's network namespace.
func (d *dockerEnv) netns(container string) string {
	d.t.Helper()
	return "/proc/" + d.mustDocker("inspect", "-f", "{{.State.Pid}}", container) + "/ns/net"
}

// pingFrom pings ip from inside the namespace at path.
func pingFrom(path, ip string) error {
	out, err := exec.Command("nsenter", "--net="+path, "ping", "-c", "2", "-i", "0.2", "-W", "1", ip).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ping %s: %v\n%s", ip, err, out)
	}
	return nil
}

// dockerEndpoint is one container on one network, as Docker sees it.
type dockerEndpoint struct {
	Network, Container, EndpointID, MAC, IP string
}

// dockerEndpoints lists the containers on the plugin's networks.
func (d *dockerEnv) dockerEndpoints() []dockerEndpoint {
	d.t.Helper()
	var out []dockerEndpoint
	nets := strings.Fields(d.mustDocker("network", "ls", "-q", "--filter", "driver="+d.driver))
	for _, n := range nets {
		var info []struct {
			Name       string
			Containers map[string]struct{ Name, EndpointID, MacAddress, IPv4Address string }
		}
		if err := json.Unmarshal([]byte(d.mustDocker("network", "inspect", n)), &info); err != nil {
			d.t.Fatal(err)
		}
		for _, c := range info[0].Containers {
			out = append(out, dockerEndpoint{Network: info[0].Name, Container: c.Name, EndpointID: c.EndpointID, MAC: c.MacAddress, IP: c.IPv4Address})
		}
	}
	return out
}

// xmvEndpoint is a row of `xmacvlan endpoint list -o json`.
type xmvEndpoint struct {
	Network, Netns, Ifname, MAC, IP, Outer, State string
	Stale                                         bool
	DockerEndpoint                                string `json:"docker_endpoint"`
	Container                                     string
}

// mountArgs are nsenter's arguments into the daemon's mount namespace,
// keeping its root: entering a mount namespace resets the root to the
// namespace's own, which is not ours under a chroot (setns(2)).
func (d *dockerEnv) mountArgs() []string {
	pid := d.dockerd.Process.Pid
	return []string{fmt.Sprintf("--mount=/proc/%d/ns/mnt", pid), fmt.Sprintf("--root=/proc/%d/root", pid)}
}

// cli runs the xmacvlan CLI on the daemon's host: its network namespace,
// and its mount namespace, where the containers' namespaces are mounted.
func (d *dockerEnv) cli(args ...string) (string, error) {
	if !d.ownMounts {
		return d.h.cli(args...)
	}
	nsenter := append(d.mountArgs(), "--net="+d.h.ns.Path(), xmacvlanBin, "--bpffs", d.h.root)
	out, err := exec.Command("nsenter", append(nsenter, args...)...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("xmacvlan %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func (d *dockerEnv) xmvEndpoints() ([]xmvEndpoint, error) {
	out, err := d.cli("endpoint", "list", "-o", "json", "--docker-state", d.stateDir())
	if err != nil {
		return nil, err
	}
	var rows []xmvEndpoint
	return rows, json.Unmarshal([]byte(out), &rows)
}

// agree checks that xmacvlan's endpoints, its tables and the host's links
// are exactly Docker's containers on the plugin's networks: one healthy
// endpoint (`endpoint check` ok) named after its container per Docker
// endpoint, one outer veth each, no temporary inner end left in the
// host, nothing for gc to remove.
func (d *dockerEnv) agree(step string) {
	t := d.t
	t.Helper()
	want := d.dockerEndpoints()
	var rows []xmvEndpoint
	err := eventually(10*time.Second, func() (err error) {
		if rows, err = d.xmvEndpoints(); err != nil {
			return err
		}
		if len(rows) != len(want) {
			return fmt.Errorf("%d xmacvlan endpoints for %d Docker endpoints", len(rows), len(want))
		}
		for _, w := range want {
			i := slices.IndexFunc(rows, func(r xmvEndpoint) bool { return r.DockerEndpoint == w.EndpointID })
			if i < 0 {
				return fmt.Errorf("no xmacvlan endpoint for container %s (docker endpoint %.12s)", w.Container, w.EndpointID)
			}
			r := rows[i]
			if r.Container != w.Container || r.MAC != w.MAC || r.IP != w.IP || r.Stale || r.State != "ready" {
				return fmt.Errorf("endpoint of %s: %+v, Docker says %+v", w.Container, r, w)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("%s: %v", step, err)
	}
	for _, r := range rows {
		if out, err := d.cli("endpoint", "check", r.Network, "--netns", r.Netns, "--name", r.Ifname); err != nil {
			t.Errorf("%s: endpoint check of %s: %v %s", step, r.Container, err, out)
		}
	}
	links, err := d.h.ns.NL.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var outers []string
	for _, l := range links {
		name := l.Attrs().Name
		switch {
		case strings.HasPrefix(name, "xmi"):
			t.Errorf("%s: temporary inner end %s left in the host", step, name)
		case strings.HasPrefix(name, "xmv"):
			outers = append(outers, name)
		}
	}
	if len(outers) != len(rows) {
		t.Errorf("%s: %d outer veths on the host (%v) for %d endpoints", step, len(outers), outers, len(rows))
	}
	if out, err := d.cli("gc", "--dry-run"); err != nil || !strings.Contains(out, "nothing to remove") {
		if !(len(rows) == 0 && strings.Contains(out+errString(err), "no parent attached")) {
			t.Errorf("%s: gc --dry-run: %s %v", step, out, err)
		}
	}
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

var (
	busyboxOnce sync.Once
	busyboxImg  []byte
	busyboxErr  error
)

// busyboxTar is a busybox root filesystem as a tar stream for `docker
// import`: the static busybox, one link per applet, a passwd file.
func busyboxTar(t testing.TB) []byte {
	busyboxOnce.Do(func() {
		dir, err := os.MkdirTemp("", "xmacvlan-busybox")
		if err != nil {
			busyboxErr = err
			return
		}
		defer os.RemoveAll(dir)
		bin := filepath.Join(dir, "bin")
		os.MkdirAll(bin, 0o755)
		os.MkdirAll(filepath.Join(dir, "etc"), 0o755)
		b, err := os.ReadFile("/bin/busybox")
		if err == nil {
			err = os.WriteFile(filepath.Join(bin, "busybox"), b, 0o755)
		}
		if err != nil {
			busyboxErr = fmt.Errorf("busybox-static (scripts/setup-host.sh installs it): %v", err)
			return
		}
		list, err := exec.Command("/bin/busybox", "--list").Output()
		if err != nil {
			busyboxErr = err
			return
		}
		for _, applet := range strings.Fields(string(list)) {
			if applet != "busybox" {
				os.Symlink("busybox", filepath.Join(bin, applet))
			}
		}
		os.WriteFile(filepath.Join(dir, "etc", "passwd"), []byte("root:x:0:0:root:/root:/bin/sh\n"), 0o644)
		busyboxImg, busyboxErr = exec.Command("tar", "-C", dir, "-c", ".").Output()
	})
	if busyboxErr != nil {
		t.Fatalf("busybox image: %v", busyboxErr)
	}
	return busyboxImg
}

// storageDriver is overlay2, what Docker hosts use, unless dir is itself
// on overlayfs (a container's or chroot's root), where the kernel refuses
// an overlay mount: then vfs, which copies the (tiny) busybox image.
func storageDriver(dir string) string {
	var st unix.Statfs_t
	if unix.Statfs(dir, &st) == nil && st.Type == unix.OVERLAYFS_SUPER_MAGIC {
		return "vfs"
	}
	return "overlay2"
}
