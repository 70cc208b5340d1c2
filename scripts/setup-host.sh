#!/usr/bin/env bash
# Prepares a Debian 12 machine for xmacvlan's tests, demo and benchmarks:
# installs the packages that are missing and mounts bpffs. Idempotent.
# scripts/setup_host_test.go fails when the code runs a program that no
# package here installs (nsenter, taskset, sh come with every Debian root).
set -euo pipefail

packages=(
	clang-14 llvm-14 libbpf-dev linux-libc-dev # make generate: BPF C, llvm-strip-14
	bpftool                                    # inspection, tests
	iproute2 procps ethtool iputils-ping       # ip, bridge, sysctl, ethtool, ping
	iperf3 tcpdump arping                      # traffic
	strace                                     # tests that stop a command mid-way
	netsniff-ng kmod linux-perf                # bench: trafgen, modprobe pktgen, perf
	prometheus                                 # promtool check metrics
	docker.io podman containerd runc busybox-static # runtimes the Docker driver and CNI tests run
)

if [ "$(id -u)" -ne 0 ]; then
	echo "setup-host: run as root (sudo make test)" >&2
	exit 1
fi

missing=()
for p in "${packages[@]}"; do
	dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "setup-host: installing ${missing[*]}"
	# Quiet unless it fails: then apt's own words say why.
	if ! out=$(apt-get update -qq 2>&1 &&
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" 2>&1); then
		echo "$out" >&2
		exit 1
	fi
fi

if [ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" != "bpf_fs" ]; then
	echo "setup-host: mounting bpffs on /sys/fs/bpf"
	mount -t bpf bpf /sys/fs/bpf
fi
mkdir -p /var/run/netns

# CNI plugin tests (test/cni*_test.go): cnitool, the reference plugins and
# crictl, built from source (Debian's stop at CNI spec 1.0.0). They go to
# one fixed directory, not the CNI bin dir of the host.
cni_tools=/usr/local/lib/xmacvlan-tools/bin
go_bin=$(command -v go || echo /usr/local/go/bin/go)
cni_go_tools=(
	cnitool:github.com/containernetworking/cni/cnitool@v1.3.1
	host-local:github.com/containernetworking/plugins/plugins/ipam/host-local@v1.10.0
	static:github.com/containernetworking/plugins/plugins/ipam/static@v1.10.0
	tuning:github.com/containernetworking/plugins/plugins/meta/tuning@v1.10.0
	macvlan:github.com/containernetworking/plugins/plugins/main/macvlan@v1.10.0
	loopback:github.com/containernetworking/plugins/plugins/main/loopback@v1.10.0
	crictl:sigs.k8s.io/cri-tools/cmd/crictl@v1.37.0 # about 3 minutes to build
)
mkdir -p "$cni_tools"
for t in "${cni_go_tools[@]}"; do
	if [ ! -x "$cni_tools/${t%%:*}" ]; then
		echo "setup-host: go install ${t#*:}"
		GOBIN="$cni_tools" GOFLAGS=-mod=mod "$go_bin" install "${t#*:}"
	fi
done
