package testutil

import (
	"bytes"
	"os"
	"os/exec"
	"testing"
)

// Promtool runs `promtool check metrics` (Debian's prometheus package,
// installed by scripts/setup-host.sh) on an exposition. It skips where
// promtool is missing, except under CI=true.
func Promtool(t testing.TB, body []byte) {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI=true and promtool is missing (scripts/setup-host.sh installs it)")
		}
		t.Skip("promtool not installed (apt-get install prometheus)")
	}
	cmd := exec.Command(path, "check", "metrics")
	cmd.Stdin = bytes.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s\n--- exposition:\n%s", err, out, body)
	}
}
