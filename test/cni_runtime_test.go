package test

// xmacvlan-cni under real container runtimes: podman 4.3 with its CNI
// backend, and containerd 1.6's CRI driven by crictl (the kubelet's call
// path). Each runs with its own config, storage and state directories and
// touches nothing of the host's; the image is busybox, imported offline.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xmacvlan/xmacvlan/internal/nsutil"
	"github.com/xmacvlan/xmacvlan/internal/testutil"
)

// busyboxTarFile writes the busybox image (busyboxTar) to dir, the input
// of `podman import`.
func busyboxTarFile(t *testing.T, dir string) string {
	tarball := filepath.Join(dir, "busybox.tar")
	if err := os.WriteFile(tarball, busyboxTar(t), 0o644); err != nil {
		t.Fatal(err)
	}
	return tarball
}

// podman is podman with a private config and storage under dir, its CNI
// backend reading h's network configs and plugins.
type podman struct {
	t   *testing.T
	h   *cniHost
	env []string
}

// Podman's static and volume dirs stay under graphroot: set elsewhere, its
// exit command misses them and every run waits 20 s for a conmon timeout.
func newPodman(t *testing.T, h *cniHost) *podman {
	dir := t.TempDir()
	conf := fmt.Sprintf(`[network]
network_backend = "cni"
cni_plugin_dirs = [%q, %q]
network_config_dir = %q
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
tmp_dir = %q
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
`, cniBinDir, cniToolsDir, h.confDir, filepath.Join(dir, "tmp"))
	storage := fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n", filepath.Join(dir, "graph"), filepath.Join(dir, "run"))
	os.WriteFile(filepath.Join(dir, "containers.conf"), []byte(conf), 0o644)
	os.WriteFile(filepath.Join(dir, "storage.conf"), []byte(storage), 0o644)
	p := &podman{t: t, h: h, env: []string{"CONTAINERS_CONF=" + filepath.Join(dir, "containers.conf"),
		"CONTAINERS_STORAGE_CONF=" + filepath.Join(dir, "storage.conf")}}
	removeRuntimeNetns(t)
	t.Cleanup(func() {
		p.podman("rm", "-a", "-f")
		p.podman("rmi", "-a", "-f")
		unmountUnder(dir)
	})
	return p
}

// removeRuntimeNetns removes, when t ends, the cni-* namespaces the
// runtime made in RunDir during t and did not remove itself (a sandbox
// whose teardown failed), so a failed run leaves no namespace behind.
// Registered before the runtime's own cleanup, it runs after it.
func removeRuntimeNetns(t *testing.T) {
	before := runtimeNetns()
	t.Cleanup(func() {
		for _, name := range runtimeNetns() {
			if !slices.Contains(before, name) {
				t.Logf("removing namespace %s that the runtime left", name)
				nsutil.DeleteNamed(name)
			}
		}
	})
}

func runtimeNetns() []string {
	names, _ := filepath.Glob(filepath.Join(nsutil.RunDir, "cni-*"))
	for i, n := range names {
		names[i] = filepath.Base(n)
	}
	return names
}

// run runs podman in the host's namespace (where the parent is).
func (p *podman) podman(args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"--net=" + p.h.ns.Path(), "podman"}, args...)...)
	cmd.Env = append(os.Environ(), p.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// `podman run --network NET --ip --mac-address` gets that address and MAC
// from xmacvlan-cni and reaches a peer on VLAN 10 on another host; when
// the container exits nothing is left.
func TestCNIPodman(t *testing.T) {
	h, far := newCNILab(t)
	p := newPodman(t, h)
	if out, err := p.podman("import", "-c", `CMD ["/bin/sh"]`, busyboxTarFile(t, t.TempDir()), "localhost/xmv-busybox:1"); err != nil {
		t.Fatal(err, out)
	}
	// podman 4.3's libcni takes results up to 1.0.0.
	net := h.conflist(testutil.Name("pv"), "1.0.0", h.xmvPlugin(10, "172.16.10.0/24", "172.16.10.2", "172.16.10.50", ""))
	out, err := p.podman("run", "--rm", "--network", net, "--ip", "172.16.10.7", "--mac-address", "02:00:00:00:10:07",
		"localhost/xmv-busybox:1", "sh", "-c", "ip -o addr show eth0; ip -o link show eth0; ping -c 2 -W 2 "+far.ip)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "inet 172.16.10.7/24") || !strings.Contains(out, "02:00:00:00:10:07") || !strings.Contains(out, "2 packets received") {
		t.Fatalf("want 172.16.10.7/24 and 02:00:00:00:10:07 on eth0 and the peer's replies, got:\n%s", out)
	}
	if eps := h.endpoints(net); len(eps) != 0 {
		t.Fatalf("after the container exited, network %s has %v", net, eps)
	}
	if left := h.leftovers(); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}

// containerd is a private containerd (own root, state and socket) started
// in the host's namespace, with CRI's CNI reading h's configs.
type containerd struct {
	t    *testing.T
	h    *cniHost
	sock string
	cmd  *exec.Cmd
}

func startContainerd(t *testing.T, h *cniHost) *containerd {
	dir := t.TempDir()
	state := filepath.Join("/run", testutil.Name("xmvctd"))
	bin := filepath.Join(dir, "bin") // CRI takes one bin_dir
	os.MkdirAll(bin, 0o755)
	os.Symlink(filepath.Join(cniBinDir, "xmacvlan-cni"), filepath.Join(bin, "xmacvlan-cni"))
	for _, p := range []string{"host-local", "loopback"} {
		os.Symlink(filepath.Join(cniToolsDir, p), filepath.Join(bin, p))
	}
	c := &containerd{t: t, h: h, sock: filepath.Join(state, "containerd.sock")}
	conf := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = %q
[ttrpc]
  address = %q
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/xmv-pause:1"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %q
    conf_dir = %q
    max_conf_num = 1
`, filepath.Join(dir, "root"), state, c.sock, filepath.Join(state, "ttrpc.sock"), bin, h.confDir)
	cfg := filepath.Join(dir, "config.toml")
	os.WriteFile(cfg, []byte(conf), 0o644)
	log, err := os.Create(filepath.Join(dir, "containerd.log"))
	if err != nil {
		t.Fatal(err)
	}
	removeRuntimeNetns(t)
	c.cmd = exec.Command("nsenter", "--net="+h.ns.Path(), "containerd", "--config", cfg)
	c.cmd.Stdout, c.cmd.Stderr = log, log
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.crictl("rmp", "-a", "-f")
		c.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- c.cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			c.cmd.Process.Kill()
			<-done
		}
		log.Close()
		unmountUnder(dir)
		unmountUnder(state)
		os.RemoveAll(state)
		if t.Failed() {
			b, _ := os.ReadFile(log.Name())
			t.Logf("containerd log:\n%s", b)
		}
	})
	if err := eventually(20*time.Second, func() error {
		_, err := c.crictl("version")
		return err
	}); err != nil {
		t.Fatalf("containerd did not come up: %v", err)
	}
	return c
}

func (c *containerd) crictl(args ...string) (string, error) {
	ep := "unix://" + c.sock
	cmd := exec.Command(filepath.Join(cniToolsDir, "crictl"), append([]string{"--runtime-endpoint", ep, "--image-endpoint", ep, "--timeout", "20s"}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		return string(out), fmt.Errorf("crictl %s: %v\n%s", strings.Join(args, " "), err, msg)
	}
	return strings.TrimSpace(string(out)), nil
}

// A CRI pod sandbox (RunPodSandbox, as the kubelet asks) gets its address
// from xmacvlan-cni and reaches a peer on VLAN 10 on another host;
// StopPodSandbox and RemovePodSandbox (two DELs, the second with an empty
// CNI_NETNS) leave nothing behind.
func TestCNIContainerd(t *testing.T) {
	h, far := newCNILab(t)

	// The sandbox ("pause") image: busybox sleeping, saved by podman as a
	// docker archive for `ctr images import`.
	p := newPodman(t, h)
	dir := t.TempDir()
	if out, err := p.podman("import", "-c", `CMD ["/bin/sleep", "3600"]`, busyboxTarFile(t, dir), "localhost/xmv-pause:1"); err != nil {
		t.Fatal(err, out)
	}
	archive := filepath.Join(dir, "pause.tar")
	if out, err := p.podman("save", "--format", "docker-archive", "-o", archive, "localhost/xmv-pause:1"); err != nil {
		t.Fatal(err, out)
	}
	net := h.conflist(testutil.Name("kv"), "1.0.0", h.xmvPlugin(10, "172.16.10.0/24", "172.16.10.100", "172.16.10.120", ""))
	c := startContainerd(t, h)
	if out, err := exec.Command("ctr", "-a", c.sock, "-n", "k8s.io", "images", "import", archive).CombinedOutput(); err != nil {
		t.Fatalf("ctr images import: %v %s", err, out)
	}
	podJSON := filepath.Join(dir, "pod.json")
	os.WriteFile(podJSON, []byte(fmt.Sprintf(`{"metadata":{"name":"xmv","namespace":"default","uid":%q,"attempt":0},"log_directory":%q,"linux":{}}`,
		testutil.Name("uid"), filepath.Join(dir, "logs"))), 0o644)
	pod, err := c.crictl("runp", podJSON)
	if err != nil {
		t.Fatal(err)
	}
	eps := h.endpoints(net)
	if len(eps) != 1 || eps[0].IP == nil || eps[0].IP.IP.String() != "172.16.10.100" {
		t.Fatalf("after RunPodSandbox network %s has %v, want one endpoint with 172.16.10.100", net, eps)
	}
	if out, err := exec.Command("nsenter", "--net="+eps[0].Netns, "ping", "-c", "2", "-W", "2", far.ip).CombinedOutput(); err != nil {
		t.Fatalf("pod to the peer on VLAN 10: %v %s", err, out)
	}
	if _, err := c.crictl("stopp", pod); err != nil {
		t.Fatal(err)
	}
	if _, err := c.crictl("rmp", pod); err != nil {
		t.Fatal(err)
	}
	if eps := h.endpoints(net); len(eps) != 0 {
		t.Fatalf("after StopPodSandbox/RemovePodSandbox network %s has %v", net, eps)
	}
	if left := h.leftovers(); len(left) > 0 {
		t.Fatalf("left behind: %v", left)
	}
}
