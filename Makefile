# xmacvlan. `sudo make test` and `sudo make demo` work on a fresh Debian 12
# machine with Go: they install the missing packages first.

GO ?= $(shell command -v go 2>/dev/null || echo /usr/local/go/bin/go)
CLANG ?= clang-14
STRIP ?= llvm-strip-14
FUZZTIME ?= 60s
TESTFLAGS ?=

.PHONY: all build generate test unit fuzz demo bench setup drift clean

all: build

build:
	$(GO) build -o bin/xmacvlan ./cmd/xmacvlan
	$(GO) build -o bin/xmacvlan-cni ./cmd/xmacvlan-cni

# Rebuild the BPF objects and their Go bindings (committed): the datapath
# and the benchmark's generator and counters.
generate:
	BPF2GO_CC=$(CLANG) BPF2GO_STRIP=$(STRIP) $(GO) generate ./bpf/ ./bench/...

# Fails if the committed objects differ from what the sources produce.
drift: generate
	git diff --exit-code --stat -- bpf/ bench/bpf/

setup:
	./scripts/setup-host.sh

# Every test, privileged ones included (run as root).
test: setup
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m $(TESTFLAGS) ./...

# Only what needs no privileges.
unit:
	$(GO) test -count=1 ./tables/ ./cmd/...

fuzz: setup
	$(GO) test ./bpf/ -run XXX -fuzz FuzzRxXDP -fuzztime $(FUZZTIME)
	$(GO) test ./bpf/ -run XXX -fuzz FuzzTxEndpoint -fuzztime $(FUZZTIME)

# The exporter's scrape time with 1,000 endpoints, docker run and CNI ADD/DEL
# latency, endpoint add/del at 4,096 endpoints on one parent, then xmacvlan
# against kernel macvlan, as root (bench/README.md). QUICK=1 is a smoke run.
# Not a test: no number fails the build.
QUICK ?=
bench: setup
	$(GO) test -run XXX -bench . -benchtime $(if $(QUICK),1x,3s) ./metrics/ ./test/
	XMACVLAN_SCALE=$(if $(QUICK),100,4096) $(GO) test -run XXX -bench EndpointScale -benchtime 1x ./lifecycle/
	$(GO) build -o bin/xmvbench ./bench/cmd/xmvbench
	./bin/xmvbench $(if $(QUICK),-quick)

demo: setup build
	./bin/xmacvlan demo

clean:
	rm -rf bin
