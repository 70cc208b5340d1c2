/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The tables. The loader pins each one under <bpffs>/<parent>/ by name;
 * BTF types make `bpftool map dump pinned …` print named fields. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"

/* VID -> network definition on this parent (control plane only; only
 * defined networks, so `bpftool map dump` lists exactly them). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_NETWORKS);
	__type(key, __u16);
	__type(value, struct network);
} xmv_networks SEC(".maps");

/* VID -> what the datapath reads of its network. An array: the verifier
 * inlines its lookup, a hash lookup costs 25-30 ns. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_NETWORKS);
	__type(key, __u32);
	__type(value, struct vlan);
} xmv_vlans SEC(".maps");

/* {vlan, mac} -> endpoint: the receive and local-switch lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_MACS);
	__type(key, struct mac_key);
	__type(value, struct endpoint);
} xmv_macs SEC(".maps");

/* outer veth ifindex -> endpoint: the transmit-side checks. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct endpoint);
} xmv_endpoints SEC(".maps");

/* endpoint id -> the endpoint's record (lifecycle). Never read by the
 * datapath; pinned with the rest so the tables stay the one record. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct endpoint_info);
} xmv_ep_info SEC(".maps");

/* Outer veths of endpoints with XDP delivery, for bpf_redirect_map. */
struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, __u32);
} xmv_redirect SEC(".maps");

/* {vlan, idx} -> member endpoint, idx < vlan.members: who gets a flood copy. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_ENDPOINTS);
	__type(key, struct flood_key);
	__type(value, struct endpoint);
} xmv_flood SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct settings);
} xmv_settings SEC(".maps");

/* Counters, per CPU; Go sums the CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_ENDPOINTS);
	__type(key, __u32);
	__type(value, struct traffic);
} xmv_ep_stats SEC(".maps");

/* Per VLAN: what no endpoint counts (struct traffic). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_VLAN_ID + 1);
	__type(key, __u32);
	__type(value, struct traffic);
} xmv_vlan_stats SEC(".maps");

/* Per VLAN: its deleted endpoints' counters. Never touched by the
 * datapath; pinned with the rest so the tables stay the one record. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_VLAN_ID + 1);
	__type(key, __u32);
	__type(value, struct retired);
} xmv_vlan_retired SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DROP_REASON_MAX);
	__type(key, __u32); /* enum drop_reason; array keys must be plain ints */
	__type(value, struct count);
} xmv_drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EV_MAX);
	__type(key, __u32); /* enum event */
	__type(value, struct count);
} xmv_events SEC(".maps");
