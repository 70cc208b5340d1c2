// Package scripts holds the test of setup-host.sh: on a fresh Debian 12,
// every program the tests, the demo and the benchmarks run is installed by
// the script.
package scripts

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// programs maps every program the code runs to its Debian 12 package.
// A program the code runs that is missing here fails the test.
var programs = map[string]string{
	"ip":            "iproute2", // also `ip netns exec`
	"bridge":        "iproute2",
	"ethtool":       "ethtool",
	"ping":          "iputils-ping",
	"sysctl":        "procps",
	"iperf3":        "iperf3",
	"trafgen":       "netsniff-ng",
	"modprobe":      "kmod",
	"perf":          "linux-perf",
	"promtool":      "prometheus",
	"strace":        "strace",
	"bpftool":       "bpftool",
	"tcpdump":       "tcpdump", // the demo's explore hints
	"clang-14":      "clang-14",
	"llvm-strip-14": "llvm-14",
	"nsenter":       "util-linux",
	"taskset":       "util-linux",
	"ls":            "coreutils",
	"true":          "coreutils",
	"tar":           "tar",
	"ctr":           "containerd",
	"/bin/busybox":  "busybox-static", // the offline busybox image
	"test":          "coreutils",
	"sh":            "dash",
	"go":            "", // the toolchain the tests are built with
}

// essential packages are in every Debian root, debootstrap minbase too
// (Essential: yes).
var essential = []string{"coreutils", "dash", "util-linux", "tar"}

// runners are the calls that start a program, with the position of the
// program's name among their arguments: os/exec's and the tests' and the
// benchmark's helpers that run a command (in a namespace).
var runners = map[string]int{
	"Command":        0, // exec.Command(name, ...)
	"CommandContext": 1, // exec.CommandContext(ctx, name, ...)
	"LookPath":       0,
	"runCmd":         0, // test: runCmd(name, ...)
	"run":            1, // test: run(ns, name, ...); bench: ns.run(ctx, name, ...)
	"startCmd":       1, // test: startCmd(ns, name, ...)
	"command":        1, // bench: ns.command(ctx, name, ...)
}

func TestSetupHostInstallsEveryProgramRun(t *testing.T) {
	script, err := os.ReadFile("setup-host.sh")
	if err != nil {
		t.Fatal(err)
	}
	pkgs := scriptPackages(t, string(script))
	run := programsRun(t, "..")
	if len(run) < 10 {
		t.Fatalf("found only %v run by the code: the scan is broken", run)
	}
	for _, prog := range run {
		if _, ok := programs[prog]; !ok {
			t.Errorf("the code runs %s, which is not in the table: add it with its Debian 12 package, and the package to setup-host.sh", prog)
		}
	}
	for prog, pkg := range programs {
		if pkg != "" && !slices.Contains(pkgs, pkg) && !slices.Contains(essential, pkg) {
			t.Errorf("%s (package %s) is not installed by setup-host.sh", prog, pkg)
		}
		if _, err := exec.LookPath(prog); err != nil {
			t.Errorf("%s is not installed here (run scripts/setup-host.sh): %v", prog, err)
		}
	}
}

// scriptPackages reads the script's packages=( ... ) list.
func scriptPackages(t *testing.T, script string) []string {
	m := regexp.MustCompile(`(?s)\npackages=\((.*?)\n\)`).FindStringSubmatch(script)
	if m == nil {
		t.Fatal("setup-host.sh has no packages=( ... ) list")
	}
	var out []string
	for _, line := range strings.Split(m[1], "\n") {
		line, _, _ = strings.Cut(line, "#")
		out = append(out, strings.Fields(line)...)
	}
	return out
}

// programsRun lists the programs named by a string literal where a runner
// takes the program, in every Go file under root.
func programsRun(t *testing.T, root string) []string {
	var out []string
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			var name string
			switch fn := call.Fun.(type) {
			case *ast.Ident:
				name = fn.Name
			case *ast.SelectorExpr:
				name = fn.Sel.Name
			}
			i, ok := runners[name]
			if !ok || i >= len(call.Args) {
				return true
			}
			if lit, ok := call.Args[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
				if prog, err := strconv.Unquote(lit.Value); err == nil && !slices.Contains(out, prog) {
					out = append(out, prog)
				}
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}
