// Command xmacvlan attaches the xmacvlan datapath to a parent NIC and
// manages its networks and endpoints. Every command is stateless: the
// pinned tables under --bpffs are the truth.
package main

import (
	"fmt"
	"os"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "xmacvlan:", err)
		os.Exit(1)
	}
}
