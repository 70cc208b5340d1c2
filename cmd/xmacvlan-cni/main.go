// Command xmacvlan-cni is xmacvlan's CNI plugin: put it in the runtime's
// CNI bin directory (/opt/cni/bin) and name it in a network config with
// "type": "xmacvlan-cni" where the macvlan plugin's config says "macvlan".
// See package cni for the config.
package main

import (
	"github.com/containernetworking/cni/pkg/skel"

	"github.com/xmacvlan/xmacvlan/cni"
)

func main() {
	skel.PluginMainFuncs(cni.Funcs(), cni.Versions, "xmacvlan-cni: xmacvlan (eBPF macvlan) CNI plugin, spec 0.4.0, 1.0.0, 1.1.0")
}
