/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Storm control: token buckets for the frames every member of a VLAN gets a
 * copy of (broadcast, multicast, unknown unicast on the untagged segment).
 *
 * A bucket holds tokens in billionths of a frame, so that refilling is
 * elapsed_ns * pps with no division. It refills at pps frames per second and
 * holds at most one second of the rate: a burst of pps frames passes after a
 * quiet second (what ARP/ND/DHCP/mDNS bursts after a link comes up need),
 * and over any window of t seconds at most pps * (t + 1) frames pass.
 * A bucket the control plane zeroed (last_ns 0) starts full.
 *
 * Buckets are shared by every CPU; the spin lock makes the count exact. The
 * cost is paid on the flood path only, never on unicast. */
#pragma once

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "types.h"

#define STORM_TOKEN 1000000000ULL /* one frame, in bucket units (1 s in ns) */

struct storm_bucket {
	struct bpf_spin_lock lock;
	__u32 pad;
	__u64 tokens;  /* in STORM_TOKEN units: frames * 1e9 */
	__u64 last_ns; /* bpf_ktime_get_ns of the last refill; 0 = never used */
};

/* Endpoint id -> its bucket (keys 0..MAX_ENDPOINTS-1); STORM_VLAN_KEY(vid)
 * -> the VLAN's bucket. The control plane zeroes a key when it gives it to
 * a new endpoint or network, so nothing inherits an old bucket. */
#define STORM_VLAN_KEY(vid) (MAX_ENDPOINTS + (__u32)(vid))

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_ENDPOINTS + MAX_VLAN_ID + 1);
	__type(key, __u32);
	__type(value, struct storm_bucket);
} xmv_storm SEC(".maps");

/* Takes one frame from bucket key, refilled at pps frames per second.
 * Returns 1 if the frame may pass: always with pps 0 (no limit, no map
 * access), and if the bucket cannot be read (a key out of range is a bug
 * of ours, not the sender's). */
static __always_inline int storm_allow(__u32 key, __u32 pps)
{
	struct storm_bucket *b;
	__u64 now, elapsed, depth;
	int pass = 0;

	if (!pps)
		return 1;
	b = bpf_map_lookup_elem(&xmv_storm, &key);
	if (!b)
		return 1;
	depth = (__u64)pps * STORM_TOKEN;
	now = bpf_ktime_get_ns(); /* no helper calls under the lock */
	bpf_spin_lock(&b->lock);
	if (!b->last_ns) {
		elapsed = STORM_TOKEN; /* a fresh bucket starts full */
		b->last_ns = now;
	} else if (now > b->last_ns) {
		elapsed = now - b->last_ns;
		if (elapsed > STORM_TOKEN)
			elapsed = STORM_TOKEN; /* a full second refills any bucket */
		b->last_ns = now;
	} else {
		elapsed = 0; /* another CPU read the clock later and refilled first */
	}
	b->tokens += elapsed * pps;
	if (b->tokens > depth)
		b->tokens = depth;
	if (b->tokens >= STORM_TOKEN) {
		b->tokens -= STORM_TOKEN;
		pass = 1;
	}
	bpf_spin_unlock(&b->lock);
	return pass;
}
