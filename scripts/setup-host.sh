#!/usr/bin/env bash
# Prepares a Debian 12 machine for xmacvlan's tests, demo and benchmarks:
# installs the packages that are missing and mounts bpffs. Idempotent.
set -euo pipefail

packages=(
	clang-14 llvm-14 libbpf-dev linux-libc-dev # make generate: BPF C
	bpftool                                    # inspection, tests
	iproute2 ethtool iputils-ping arping tcpdump iperf3 # namespaces, traffic
	netsniff-ng                                # trafgen, benchmarks
	prometheus                                 # promtool check metrics
	docker.io busybox-static                   # Docker driver tests: private dockerd, busybox image built offline
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
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ "$(stat -f -c %T /sys/fs/bpf 2>/dev/null)" != "bpf_fs" ]; then
	echo "setup-host: mounting bpffs on /sys/fs/bpf"
	mount -t bpf bpf /sys/fs/bpf
fi
mkdir -p /var/run/netns
