/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Every counter update goes through here. Per-CPU values: no atomics. */
#pragma once

#include "maps.h"

static __always_inline void count_add(struct count *c, __u64 bytes)
{
	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

static __always_inline void count_event_n(enum event ev, __u64 packets, __u64 bytes)
{
	__u32 key = ev;
	struct count *c = bpf_map_lookup_elem(&xmv_events, &key);
	if (c) {
		c->packets += packets;
		c->bytes += bytes;
	}
}

static __always_inline void count_drop(enum drop_reason reason, __u64 bytes)
{
	__u32 key = reason;
	count_add(bpf_map_lookup_elem(&xmv_drops, &key), bytes);
}

static __always_inline void count_event(enum event ev, __u64 bytes)
{
	__u32 key = ev;
	count_add(bpf_map_lookup_elem(&xmv_events, &key), bytes);
}

static __always_inline void count_rx(void *map, __u32 key, __u64 bytes)
{
	struct traffic *t = bpf_map_lookup_elem(map, &key);
	if (t) {
		t->rx_packets++;
		t->rx_bytes += bytes;
	}
}

static __always_inline void count_tx(void *map, __u32 key, __u64 bytes)
{
	struct traffic *t = bpf_map_lookup_elem(map, &key);
	if (t) {
		t->tx_packets++;
		t->tx_bytes += bytes;
	}
}

/* A flood copy into an endpoint: rx, and the flood part of rx. */
static __always_inline void count_flood_copy(__u32 id, __u64 bytes)
{
	struct traffic *t = bpf_map_lookup_elem(&xmv_ep_stats, &id);
	if (t) {
		t->rx_packets++;
		t->rx_bytes += bytes;
		t->flood_packets++;
		t->flood_bytes += bytes;
	}
}
