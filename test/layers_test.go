package test

import (
	"os/exec"
	"strings"
	"testing"
)

// layer is each package's place in the README's package diagram: a package
// imports only packages of lower layers. Tests are not checked (they may
// reach across layers to set up and inspect).
var layer = map[string]int{
	"bpf": 0, "bench/bpf": 0,
	"internal/ethtool": 0, "internal/nsutil": 0, "internal/iperf3": 0, "internal/state": 0,
	"internal/frames": 1, "internal/testutil": 1,
	"internal/demo": 2,
	"tables":        1,
	"loader":        2,
	"lifecycle":     3, "metrics": 3,
	"cni": 4, "docker": 4,
	"cmd/xmacvlan": 5, "cmd/xmacvlan-cni": 5, "bench/cmd/xmvbench": 5,
	"test": 6, "scripts": 6,
}

func TestPackageLayers(t *testing.T) {
	const module = "github.com/xmacvlan/xmacvlan/"
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "../...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(fields[0], module)
		mine, ok := layer[pkg]
		if !ok {
			t.Errorf("package %s has no place in the package diagram (README, Architecture): add it there and to this test", pkg)
			continue
		}
		for _, imp := range fields[1:] {
			dep, ours := strings.CutPrefix(imp, module)
			if !ours {
				continue
			}
			checked++
			if layer[dep] >= mine {
				t.Errorf("%s (layer %d) imports %s (layer %d): a package imports only lower layers", pkg, mine, dep, layer[dep])
			}
		}
	}
	if checked < 10 {
		t.Fatalf("checked only %d imports: the listing is broken", checked)
	}
}
