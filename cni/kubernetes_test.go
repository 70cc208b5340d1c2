package cni

import (
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// Kubernetes cannot run here: the manifests under contrib/kubernetes are
// decoded strictly with the Kubernetes API types (an unknown or misplaced
// field fails) and checked for what the plugin needs on a node.

func readDocs(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	for _, d := range bytes.Split(b, []byte("\n---\n")) {
		if len(bytes.TrimSpace(d)) > 0 {
			docs = append(docs, d)
		}
	}
	return docs
}

func TestKubernetesDaemonSet(t *testing.T) {
	docs := readDocs(t, "../contrib/kubernetes/xmacvlan-daemonset.yaml")
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(docs[0], &ds); err != nil {
		t.Fatalf("DaemonSet: %v", err)
	}
	if ds.APIVersion != "apps/v1" || ds.Kind != "DaemonSet" {
		t.Fatalf("got %s %s", ds.APIVersion, ds.Kind)
	}
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("the datapath attaches to the node's NIC: hostNetwork must be true")
	}
	sel := ds.Spec.Selector.MatchLabels
	for k, v := range sel {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("selector %s=%s does not match the pod template's labels", k, v)
		}
	}
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	mountedAt := func(c corev1.Container, hostPath string) string {
		for _, m := range c.VolumeMounts {
			if hostPaths[m.Name] == hostPath {
				return m.MountPath
			}
		}
		return ""
	}
	if len(spec.InitContainers) != 1 {
		t.Fatalf("want one init container installing the plugin, got %d", len(spec.InitContainers))
	}
	install := spec.InitContainers[0]
	at := mountedAt(install, "/opt/cni/bin")
	if at == "" || !strings.Contains(strings.Join(install.Args, " "), at+"/xmacvlan-cni") {
		t.Errorf("the init container must install xmacvlan-cni into the node's /opt/cni/bin (mounted at %q): %v", at, install.Args)
	}
	if len(spec.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(spec.Containers))
	}
	c := spec.Containers[0]
	if mountedAt(c, "/sys/fs/bpf") != "/sys/fs/bpf" {
		t.Error("the node's bpffs must be mounted at /sys/fs/bpf: the pins outlive the pod")
	}
	args := strings.Join(c.Args, " ")
	if !strings.Contains(args, "xmacvlan attach") || !strings.Contains(args, "xmacvlan metrics") {
		t.Errorf("the container must attach and serve metrics: %q", args)
	}
	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || *sc.Privileged || sc.Capabilities == nil {
		t.Fatal("want an unprivileged container with explicit capabilities")
	}
	for _, need := range []corev1.Capability{"BPF", "NET_ADMIN"} {
		if !slices.Contains(sc.Capabilities.Add, need) {
			t.Errorf("capability %s missing", need)
		}
	}
	port := ds.Spec.Template.Annotations["prometheus.io/port"]
	if ds.Spec.Template.Annotations["prometheus.io/scrape"] != "true" || len(c.Ports) != 1 ||
		port != strings.TrimPrefix(strings.Fields(args[strings.Index(args, "--listen"):])[1], "0.0.0.0:") ||
		c.Ports[0].ContainerPort != mustAtoi(t, port) {
		t.Errorf("the scrape annotation (port %s), the container port and metrics --listen must agree: %q %v", port, args, c.Ports)
	}
}

func mustAtoi(t *testing.T, s string) int32 {
	var n int32
	if err := json.Unmarshal([]byte(s), &n); err != nil {
		t.Fatalf("%q: %v", s, err)
	}
	return n
}

// networkAttachmentDefinition is Multus' k8s.cni.cncf.io/v1 type.
type networkAttachmentDefinition struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Config string `json:"config"`
	} `json:"spec"`
}

func TestKubernetesNetworkAttachmentDefinition(t *testing.T) {
	docs := readDocs(t, "../contrib/kubernetes/network-attachment-definition.yaml")
	if len(docs) != 2 {
		t.Fatalf("want the NetworkAttachmentDefinition and a pod, got %d documents", len(docs))
	}
	var nad networkAttachmentDefinition
	if err := yaml.UnmarshalStrict(docs[0], &nad); err != nil {
		t.Fatal(err)
	}
	if nad.APIVersion != "k8s.cni.cncf.io/v1" || nad.Kind != "NetworkAttachmentDefinition" {
		t.Fatalf("got %s %s", nad.APIVersion, nad.Kind)
	}
	list, err := libcni.ConfListFromBytes([]byte(nad.Spec.Config))
	if err != nil {
		t.Fatalf("the config is not a CNI network config list: %v", err)
	}
	if len(list.Plugins) == 0 || list.Plugins[0].Network.Type != "xmacvlan-cni" {
		t.Fatalf("the first plugin must be xmacvlan-cni: %s", nad.Spec.Config)
	}
	// The plugin's own config check, on the config as a runtime passes it.
	conf, err := libcni.InjectConf(list.Plugins[0], map[string]any{"name": list.Name, "cniVersion": list.CNIVersion})
	if err != nil {
		t.Fatal(err)
	}
	c, err := parseConf(conf.Bytes)
	if err != nil {
		t.Fatalf("xmacvlan-cni rejects the config: %v", err)
	}
	if c.VLAN != 10 || c.IPAM.Type == "" {
		t.Errorf("want VLAN 10 with IPAM, got VLAN %d IPAM %q", c.VLAN, c.IPAM.Type)
	}
	if !slices.Contains(Versions.SupportedVersions(), list.CNIVersion) {
		t.Errorf("cniVersion %s is not served by the plugin", list.CNIVersion)
	}
	var pod corev1.Pod
	if err := yaml.UnmarshalStrict(docs[1], &pod); err != nil {
		t.Fatal(err)
	}
	if pod.Annotations["k8s.v1.cni.cncf.io/networks"] != nad.Name {
		t.Errorf("the example pod must ask for network %s", nad.Name)
	}
}
