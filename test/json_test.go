package test

import (
	"flag"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/xmacvlan/xmacvlan/internal/testutil"
)

var updateJSON = flag.Bool("update", false, "rewrite the golden files in testdata/json/")

// Every command's `-o json`, run as a user would on a real attached parent,
// matches its golden file in testdata/json/: each field in the form a user
// writes it (MACs "02:00:00:00:05:11", prefixes "10.0.0.0/24", modes
// "bridge"). Only what differs from run to run is replaced by "*": kernel
// ids and ifindexes, program tags, times, namespace inodes and the test's
// random names. go test ./test -run JSONGolden -update rewrites the files.
func TestJSONGolden(t *testing.T) {
	testutil.Privileged(t)
	host, wire, ctr := testutil.NewNetns(t, "xj"), testutil.NewNetns(t, "xw"), testutil.NewNetns(t, "xc")
	for _, ns := range []*testutil.Netns{host, wire, ctr} {
		quiet(t, ns) // no IPv6 chatter moving the counters
	}
	parentMAC, _ := net.ParseMAC("02:00:00:00:00:01")
	v := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "ens33", HardwareAddr: parentMAC}, PeerName: "wire0",
		PeerNamespace: netlink.NsFd(wire.Handle)}
	if err := host.NL.LinkAdd(v); err != nil {
		t.Fatalf("veth: %v", err)
	}
	up(t, host, "ens33")
	up(t, wire, "wire0")
	root := filepath.Join("/sys/fs/bpf", testutil.Name("xj"))
	t.Cleanup(func() {
		run(host, xmacvlanBin, "--bpffs", root, "detach", "--force", "ens33")
		os.RemoveAll(root)
	})

	for _, step := range []struct{ golden, args string }{
		{"attach", "attach ens33"},
		{"network-create", "network create lan10 --parent ens33 --vlan 10 --mode private --subnet 10.0.0.0/24 --gateway 10.0.0.1 --mtu 1400 --storm-limit 500"},
		{"network-create-untagged", "network create lan --parent ens33"},
		{"endpoint-add", "endpoint add lan10 --netns " + ctr.Name + " --mac 02:00:00:00:05:11 --ip 10.0.0.5/24 --storm-limit 100"},
		{"network-list", "network list"},
		{"endpoint-list", "endpoint list"},
		{"status", "status"},
		{"stats", "stats ens33"},
		{"endpoint-del", "endpoint del lan10 --netns " + ctr.Name},
		{"network-delete", "network delete lan10"},
		{"detach", "detach --force ens33"},
	} {
		args := append([]string{"--bpffs", root, "-o", "json"}, strings.Fields(step.args)...)
		out, err := run(host, xmacvlanBin, args...)
		if err != nil {
			t.Fatalf("%s: %v", step.args, err)
		}
		got := normaliseJSON(out, map[string]string{ctr.Name: "CONTAINER", root: "ROOT"})
		checkGolden(t, filepath.Join("testdata", "json", step.golden+".json"), got)
	}
}

// varying are the fields whose values differ between runs.
var varying = regexp.MustCompile(`(?m)^(\s*"(?:ifindex|outer_ifindex|parent_ifindex|link_id|program_id|tag|netns_ino|netns_cookie|time|outer)": )("[^"]*"|\d+)`)

// endpointLinkPin is an endpoint's link pin, named by its ifindex.
var endpointLinkPin = regexp.MustCompile(`"link_ep_\d+"`)

func normaliseJSON(out string, names map[string]string) string {
	out = varying.ReplaceAllString(out, `$1"*"`)
	out = endpointLinkPin.ReplaceAllString(out, `"link_ep_*"`)
	for name, placeholder := range names {
		out = strings.ReplaceAll(out, name, placeholder)
	}
	return out
}

func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if *updateJSON {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./test -run JSONGolden -update writes it)", err)
	}
	if got != string(want) {
		t.Errorf("%s differs from the output; if the change is meant, run go test ./test -run JSONGolden -update\n--- got:\n%s\n--- want:\n%s", path, got, want)
	}
}
