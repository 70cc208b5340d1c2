package main

import (
	"fmt"
	"io"

	"github.com/xmacvlan/xmacvlan/loader"
)

// parentStatusJSON is a parent's status with the number of its endpoints
// whose namespace or outer veth is gone (`xmacvlan gc` removes them).
type parentStatusJSON struct {
	loader.ParentStatus
	StaleEndpoints int `json:"stale_endpoints"`
}

func withStale(g *globals, sts []loader.ParentStatus) []parentStatusJSON {
	out := []parentStatusJSON{}
	for _, st := range sts {
		n, _ := g.lifecycle().StaleEndpoints(st.Parent)
		out = append(out, parentStatusJSON{ParentStatus: st, StaleEndpoints: n})
	}
	return out
}

func printStale(w io.Writer, g *globals, parent string) {
	if n, err := g.lifecycle().StaleEndpoints(parent); err == nil {
		fmt.Fprintf(w, "  stale endpoints: %d", n)
		if n > 0 {
			fmt.Fprint(w, " (namespace or veth gone; `xmacvlan gc` removes them)")
		}
		fmt.Fprintln(w)
	}
}
