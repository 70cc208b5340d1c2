// Package bpf holds the benchmark's own BPF programs (the live-frames
// generator and the receive counters) and the Go bindings bpf2go generates
// from them. Like the datapath's, the generated *_bpfel.go and *.o files
// are committed; `make generate` rebuilds them with Debian's clang-14.
package bpf

//go:generate go tool bpf2go -target bpfel -output-stem bench -type count Bench bench.c -- -I/usr/include/x86_64-linux-gnu -Wall -Werror
