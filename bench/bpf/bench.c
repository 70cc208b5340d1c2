//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The benchmark's own programs: a frame generator for the live-frames mode
 * of BPF_PROG_RUN, and the counters that count frames where they arrive.
 *
 *   xb_gen        run by BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES on the
 *                 wire's veth: XDP_TX sends each frame out of that veth
 *   xb_count_tc   tcx ingress on a container's interface: the frames that
 *                 reach the container's stack
 *   xb_count_xdp  XDP on a container's interface: an XDP consumer
 *   xb_drop       XDP on the parent for the generator's baseline: the
 *                 cheapest receiver there is
 *   xb_empty_*    do nothing: the baseline subtracted from program costs
 *   xb_next_tc    does nothing and lets the next tcx program run: in situ,
 *                 its run time is the run-time statistics' own cost
 *
 * Only bench frames (IPv4, UDP to BENCH_PORT) are counted and then dropped,
 * so that the count measures the delivery path, not the container's UDP
 * stack (the same for every path); other traffic passes untouched. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define BENCH_PORT 9 /* discard */
#define MAX_SLOTS 256
#define FRAME_LEN 60 /* 64 B on a wire, with the FCS */

struct count {
	__u64 packets;
	__u64 bytes;
};

/* Receivers' counts, one slot per receiver, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct count);
} xb_counts SEC(".maps");

/* Frames the generator handed to the wire, per CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct count);
} xb_sent SEC(".maps");

/* The frame the generator sends, written from Go. */
struct frame {
	__u32 words[FRAME_LEN / 4];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct frame);
} xb_frame SEC(".maps");

/* Pacing: with interval_ns set, the generator sends one frame per interval
 * and drops (recycles, unsent) the runs in between. After a stall (the
 * receive path runs on the same CPU between batches) it catches up with at
 * most PACE_BURST frames back to back, well under a veth's 256-frame ring. */
#define PACE_BURST 32

struct pace {
	__u64 interval_ns;
	__u64 next_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pace);
} xb_pace SEC(".maps");

/* Which slot of xb_counts a loaded counter writes; set from Go per copy. */
volatile const __u32 slot = 0;

static __always_inline void add(void *map, __u32 key, __u64 bytes)
{
	struct count *c = bpf_map_lookup_elem(map, &key);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* is_bench_frame says whether [data, end) is an untagged IPv4/UDP frame to
 * BENCH_PORT, as the generators build them. */
static __always_inline int is_bench_frame(void *data, void *end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);

	if ((void *)(udp + 1) > end)
		return 0;
	return eth->h_proto == bpf_htons(ETH_P_IP) && ip->ihl == 5 && ip->protocol == IPPROTO_UDP &&
	       udp->dest == bpf_htons(BENCH_PORT);
}

/* Live-frames mode recycles a frame's page once the receiver is done with
 * it, but restores only the frame's pointers, not its bytes: a receiver
 * that changed the frame in place (popped a VLAN tag, say) would change
 * what is sent next. So the generator writes the whole frame every time. */
SEC("xdp")
int xb_gen(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct frame *f = bpf_map_lookup_elem(&xb_frame, &zero);
	struct pace *p = bpf_map_lookup_elem(&xb_pace, &zero);
	__u32 *w = data;

	if (!f || !p || data + FRAME_LEN > end)
		return XDP_ABORTED;
	if (p->interval_ns) {
		__u64 now = bpf_ktime_get_ns();

		if (now < p->next_ns)
			return XDP_DROP;
		if (p->next_ns + PACE_BURST * p->interval_ns < now)
			p->next_ns = now - PACE_BURST * p->interval_ns;
		p->next_ns += p->interval_ns;
	}
#pragma unroll
	for (int i = 0; i < FRAME_LEN / 4; i++)
		w[i] = f->words[i];
	add(&xb_sent, 0, end - data);
	return XDP_TX;
}

#define BENCH_HDRS (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr))

SEC("tcx/ingress")
int xb_count_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;

	/* An skb from a packet socket's TX ring (trafgen) keeps its bytes in
	 * page fragments: bring the headers into the linear part. */
	if (data + BENCH_HDRS > end && skb->len >= BENCH_HDRS) {
		bpf_skb_pull_data(skb, BENCH_HDRS);
		data = (void *)(long)skb->data;
		end = (void *)(long)skb->data_end;
	}
	if (!is_bench_frame(data, end))
		return TC_ACT_OK;
	add(&xb_counts, slot, skb->len);
	return TC_ACT_SHOT;
}

SEC("xdp")
int xb_count_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	if (!is_bench_frame(data, end))
		return XDP_PASS;
	add(&xb_counts, slot, end - data);
	return XDP_DROP;
}

SEC("xdp")
int xb_drop(struct xdp_md *ctx)
{
	return XDP_DROP;
}

SEC("xdp")
int xb_empty_xdp(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("tc")
int xb_empty_tc(struct __sk_buff *skb)
{
	return TC_ACT_OK;
}

/* TCX_NEXT (-1): the next program on the hook runs, as if this one were
 * not there. Older uapi headers lack the name. */
SEC("tcx/ingress")
int xb_next_tc(struct __sk_buff *skb)
{
	return -1;
}
