// Command xmacvlan attaches the xmacvlan datapath to a parent NIC and
// manages its networks and endpoints. Every command is stateless: the
// pinned tables under --bpffs are the truth.
package main

import (
	"fmt"
	"os"
	"runtime"
)

// One OS thread for the main goroutine, so that the order of its syscalls
// is the same from run to run (the crash tests kill it at the Nth one).
func init() { runtime.LockOSThread() }

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "xmacvlan:", err)
		os.Exit(1)
	}
}
