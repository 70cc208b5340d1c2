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
