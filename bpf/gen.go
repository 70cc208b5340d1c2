// Package bpf holds the xmacvlan datapath: the C programs and the Go
// bindings bpf2go generates from them. The generated *_bpfel.go and *.o
// files are committed so that `go build` works without clang; `make
// generate` rebuilds them with Debian's clang-14.
package bpf

//go:generate go tool bpf2go -target bpfel -output-stem xmacvlan -type drop_reason -type event -type net_mode -type endpoint_flags -type vlan_flags -type prefix Xmacvlan xmacvlan.c -- -I/usr/include/x86_64-linux-gnu -Wall -Werror
