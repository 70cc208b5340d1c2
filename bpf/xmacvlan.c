//go:build ignore
/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The xmacvlan datapath. One object holds every program so that they share
 * the tables by construction and an upgrade swaps a matching set.
 *
 *   xmv_rx_xdp       XDP on the parent: classify, drop early, XDP-deliver
 *   xmv_rx_xdp_meta  the same, device-bound, reading a stripped tag via kfunc
 *   xmv_rx_tc        tcx ingress on the parent: skb delivery and flooding
 *   xmv_ep_tx        tcx ingress on each endpoint's outer veth: what the
 *                    container sends (anti-spoof, local switch, tag, wire)
 *   xmv_host_tx      tcx egress on the parent, only while hairpin is on:
 *                    host frames to endpoints on the untagged segment
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "types.h"
#include "parse.h"
#include "maps.h"
#include "counters.h"
#include "storm.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Never loaded: its signature puts the counter enums into BTF, where bpf2go
 * finds them to mirror them in Go (the maps keyed by them are arrays, whose
 * keys BTF must describe as plain integers; vlan.flags is a plain __u32). */
__attribute__((noinline)) int xmv_enums_for_go(enum drop_reason r, enum event e, enum vlan_flags v)
{
	return r + e + v;
}

/* Tables no program reads (the control plane's records) are referenced
 * from xmv_rx_tc's drop path under this condition, which the verifier
 * knows false (a constant of frozen .rodata) and removes: no cost, but the
 * tables are the program's, so a re-attach pins them again from the
 * running program if their pins were lost (loader adoptTables). */
volatile const __u32 xmv_never = 0;

static __always_inline void keep_control_tables(void)
{
	__u32 key = 0;
	__u16 vid = 0;

	if (xmv_never) {
		bpf_map_lookup_elem(&xmv_networks, &vid);
		bpf_map_lookup_elem(&xmv_ep_info, &key);
		bpf_map_lookup_elem(&xmv_vlan_retired, &key);
	}
}

/* Reads a VLAN tag the driver moved out of the frame (rx-vlan offload).
 * Only callable from a program bound to a device whose driver has it. */
extern int bpf_xdp_metadata_rx_vlan_tag(const struct xdp_md *ctx, __be16 *vlan_proto,
					__u16 *vlan_tci) __ksym;

/* What to do with a frame from the wire. */
struct decision {
	__u8 verdict; /* enum verdict */
	__u8 reason;  /* enum drop_reason, for VERDICT_DROP */
	__u16 vlan;
	__u32 ifindex; /* endpoint's outer veth, for VERDICT_DELIVER */
	__u32 id;      /* endpoint's counter slot, for VERDICT_DELIVER */
	__u32 flags;   /* endpoint's enum endpoint_flags, for VERDICT_DELIVER */
};

/* MACs in our structs and in frames are 2-byte aligned, no more. */
static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
	const __u16 *x = (const __u16 *)a, *y = (const __u16 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2];
}

static __always_inline struct settings *get_settings(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&xmv_settings, &zero);
}

/* The settings of VLAN vid's network; NULL if it has none. VID 4095 is
 * past the array's end, so it has none either. */
static __always_inline struct vlan *get_vlan(__u16 vid)
{
	__u32 key = vid;
	struct vlan *v = bpf_map_lookup_elem(&xmv_vlans, &key);

	return v && (v->flags & VLAN_DEFINED) ? v : NULL;
}

/* The receive decision, the same for the XDP and the TC program (and
 * mirrored by the Go reference model in bpf/model_test.go). A unicast
 * frame costs one hash lookup ({vlan, mac}); the VLAN's entry is an array
 * element, which the verifier inlines: reading it first costs a hit under
 * a nanosecond and lets a frame of an unknown VLAN go without any hash
 * lookup (BPF_PROG_RUN here: 8 ns against 18 ns looking up the MAC first). */
static __always_inline void classify_rx(const struct frame *f, struct decision *d)
{
	__u16 vlan = f->vlan;

	__builtin_memset(d, 0, sizeof(*d));
	d->vlan = vlan;
	if (f->stacked) {
		d->verdict = VERDICT_DROP;
		d->reason = DROP_STACKED_VLAN;
		return;
	}
	if (!get_vlan(vlan)) {
		/* Untagged frames with no untagged network are the host's. */
		d->verdict = vlan ? VERDICT_DROP : VERDICT_HOST;
		d->reason = DROP_UNKNOWN_VLAN;
		return;
	}
	if (is_multicast(f->eth->h_dest)) {
		d->verdict = VERDICT_FLOOD;
		return;
	}

	struct mac_key key = {.vlan = vlan};
	__builtin_memcpy(key.mac, f->eth->h_dest, ETH_ALEN);
	struct endpoint *ep = bpf_map_lookup_elem(&xmv_macs, &key);
	if (ep) {
		d->verdict = VERDICT_DELIVER;
		d->ifindex = ep->ifindex;
		d->id = ep->id;
		d->flags = ep->flags;
		return;
	}
	/* On the untagged segment an unknown unicast is the host's (or a
	 * neighbour's); on a tagged VLAN nobody here wants it. */
	d->verdict = vlan ? VERDICT_DROP : VERDICT_HOST;
	d->reason = DROP_UNKNOWN_DST;
}

/* ---- XDP on the parent ---------------------------------------------- */

/* Removes the 802.1Q header from the frame bytes. */
static __always_inline int xdp_pop_tag(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct vlan_hdr *vh = (void *)(eth + 1);
	__u8 addrs[2 * ETH_ALEN];

	if ((void *)(vh + 1) > end)
		return -1;
	__be16 inner = vh->encap_proto;
	__builtin_memcpy(addrs, eth, sizeof(addrs));
	if (bpf_xdp_adjust_head(ctx, VLAN_HLEN))
		return -1;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > end)
		return -1;
	__builtin_memcpy(eth, addrs, sizeof(addrs));
	eth->h_proto = inner;
	return 0;
}

/* Hands the decision to xmv_rx_tc. Without metadata support the TC program
 * classifies again, so failure here is not fatal. */
static __always_inline void xdp_write_meta(struct xdp_md *ctx, const struct decision *d)
{
	if (bpf_xdp_adjust_meta(ctx, -(int)sizeof(struct rx_meta)))
		return;
	struct rx_meta *m = (void *)(long)ctx->data_meta;
	if ((void *)(m + 1) > (void *)(long)ctx->data)
		return;
	m->magic = RX_META_MAGIC;
	m->verdict = d->verdict;
	m->flags = d->flags;
	m->vlan = d->vlan;
	m->ifindex = d->ifindex;
	m->id = d->id;
}

static __always_inline int parent_rx(struct xdp_md *ctx, int tag_from_kfunc)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 len = bpf_xdp_get_buff_len(ctx);
	__be16 meta_proto = 0;
	__u16 meta_tci = 0;
	struct frame f;
	struct decision d;

	if (tag_from_kfunc && bpf_xdp_metadata_rx_vlan_tag(ctx, &meta_proto, &meta_tci))
		meta_proto = 0;
	if (parse_frame(data, end, meta_proto, meta_tci, &f) < 0) {
		count_drop(DROP_RUNT, len);
		return XDP_DROP;
	}
	classify_rx(&f, &d);

	if (d.verdict == VERDICT_DROP) {
		count_drop(d.reason, len);
		return XDP_DROP;
	}
	if (d.verdict == VERDICT_DELIVER && (d.flags & EP_XDP_DELIVERY)) {
		if (f.tag_in_bytes) {
			if (xdp_pop_tag(ctx)) {
				count_drop(DROP_HELPER_FAILED, len);
				return XDP_DROP;
			}
			len -= VLAN_HLEN;
		}
		/* A tag in metadata does not travel with a redirected frame. */
		count_rx(&xmv_ep_stats, d.id, len);
		count_event(EV_XDP_REDIRECT, len);
		return bpf_redirect_map(&xmv_redirect, d.ifindex, XDP_DROP);
	}
	/* Everything else finishes in xmv_rx_tc, which counts it. */
	xdp_write_meta(ctx, &d);
	return XDP_PASS;
}

SEC("xdp.frags")
int xmv_rx_xdp(struct xdp_md *ctx)
{
	return parent_rx(ctx, 0);
}

SEC("xdp.frags")
int xmv_rx_xdp_meta(struct xdp_md *ctx)
{
	return parent_rx(ctx, 1);
}

/* ---- TC helpers -------------------------------------------------------- */

/* The VLAN's storm limit, frames per second (0: none). */
static __always_inline __u32 vlan_storm_pps(const struct vlan *v)
{
	return v->storm_pps;
}

/* Storm control for a frame vlan floods: 1 if it may pass. */
static __always_inline int storm_allow_vlan(__u16 vlan, const struct vlan *net)
{
	return storm_allow(STORM_VLAN_KEY(vlan), vlan_storm_pps(net));
}

/* Storm control for a frame an endpoint floods: its own bucket first, so
 * that a storming endpoint is stopped before it spends the VLAN's. */
static __always_inline int storm_allow_tx(const struct endpoint *ep, const struct vlan *net)
{
	return storm_allow(ep->id, ep->storm_pps) && storm_allow_vlan(ep->vlan, net);
}

/* Parses an skb at TC. The stack normally moved the outer tag into
 * skb->vlan_tci already; a tag still in the bytes is handled as well. */
static __always_inline int skb_parse(struct __sk_buff *skb, struct frame *f)
{
	__u32 need = sizeof(struct ethhdr) + VLAN_HLEN;

	if ((void *)(long)skb->data + need > (void *)(long)skb->data_end)
		bpf_skb_pull_data(skb, skb->len < need ? skb->len : need);
	return parse_frame((void *)(long)skb->data, (void *)(long)skb->data_end,
			   skb->vlan_present ? skb->vlan_proto : 0, skb->vlan_tci, f);
}

struct flood_ctx {
	struct __sk_buff *skb;
	__u32 len;
	__u32 copies;
	__u16 vlan;
	__u8 skip[ETH_ALEN]; /* the sender's MAC */
};

static long flood_one(__u32 idx, void *data)
{
	struct flood_ctx *c = data;
	struct flood_key key = {.vlan = c->vlan, .idx = idx};
	struct endpoint *m = bpf_map_lookup_elem(&xmv_flood, &key);

	if (!m || mac_equal(m->mac, c->skip))
		return 0;
	/* Egress of the outer veth = ingress of the container's end. */
	if (bpf_clone_redirect(c->skb, m->ifindex, 0) == 0) {
		count_flood_copy(m->id, c->len);
		c->copies++;
	}
	return 0;
}

/* Copies a frame to every member of vlan but the one with MAC skip (the
 * sender). The caller has removed any tag already. */
static __always_inline void flood(struct __sk_buff *skb, __u16 vlan, __u32 members,
				  const __u8 *skip)
{
	struct flood_ctx c = {.skb = skb, .len = skb->len, .vlan = vlan};

	__builtin_memcpy(c.skip, skip, ETH_ALEN);
	if (members > MAX_VLAN_MEMBERS) {
		count_event(EV_FLOOD_TRUNCATED, c.len);
		members = MAX_VLAN_MEMBERS;
	}
	bpf_loop(members, flood_one, &c, 0);
	count_event(EV_FLOOD_FRAMES, c.len);
	count_event_n(EV_FLOOD_COPIES, c.copies, (__u64)c.copies * c.len);
}

/* Removes the frame's 802.1Q tag, from skb metadata or from the bytes. */
static __always_inline int skb_strip_tag(struct __sk_buff *skb)
{
	if ((skb->vlan_present || is_vlan_proto(skb->protocol)) && bpf_skb_vlan_pop(skb)) {
		count_drop(DROP_HELPER_FAILED, skb->len);
		return -1;
	}
	return 0;
}

/* Redirects from a tcx ingress hook to the inner end of an endpoint's veth.
 * bpf_redirect_peer switches namespace ingress to ingress without the
 * backlog, but refuses a peer in the caller's own namespace: a host
 * endpoint is reached through the outer end's transmit instead. */
static __always_inline int to_endpoint(__u32 ifindex, __u32 flags)
{
	if (flags & EP_HOST)
		return bpf_redirect(ifindex, 0);
	return bpf_redirect_peer(ifindex, 0);
}

/* Delivers an skb into an endpoint's namespace on the skb path, which keeps
 * GSO/GRO and checksum offload intact. */
static __always_inline int deliver_skb(struct __sk_buff *skb, const struct decision *d)
{
	if (skb_strip_tag(skb))
		return TC_ACT_SHOT;
	count_rx(&xmv_ep_stats, d->id, skb->len);
	return to_endpoint(d->ifindex, d->flags);
}

/* ---- tcx ingress on the parent ----------------------------------------- */

SEC("tcx/ingress")
int xmv_rx_tc(struct __sk_buff *skb)
{
	struct rx_meta *m;
	struct decision d;
	struct frame f;

	if (skb->mark & MARK_HAIRPIN) {
		/* An endpoint's frame for the host; its copies are made. */
		skb->mark &= ~MARK_HAIRPIN;
		return TC_ACT_OK;
	}
	if (skb_parse(skb, &f) < 0) {
		count_drop(DROP_RUNT, skb->len);
		return TC_ACT_SHOT;
	}
	/* Trust the XDP decision if it saw the same VLAN as the stack did
	 * (a tag hidden from XDP in skb metadata would read as VID 0). */
	m = (void *)(long)skb->data_meta;
	if ((void *)(m + 1) <= (void *)(long)skb->data && m->magic == RX_META_MAGIC &&
	    m->vlan == f.vlan && !f.stacked) {
		__builtin_memset(&d, 0, sizeof(d));
		d.verdict = m->verdict;
		d.vlan = m->vlan;
		d.ifindex = m->ifindex;
		d.id = m->id;
		d.flags = m->flags;
	} else {
		classify_rx(&f, &d);
	}

	switch (d.verdict) {
	case VERDICT_DELIVER:
		return deliver_skb(skb, &d);
	case VERDICT_FLOOD: {
		__u16 vlan = d.vlan;
		struct vlan *net = get_vlan(vlan);
		__u8 src[ETH_ALEN];

		if (!net)
			return TC_ACT_OK;
		__builtin_memcpy(src, f.eth->h_source, ETH_ALEN);
		/* A switch that reflects frames (hairpin port) sends a local
		 * endpoint's flood back: the members had their copies already
		 * (bridge) or must not have any (private). vepa relies on it. */
		if (net->mode != MODE_VEPA) {
			struct mac_key key = {.vlan = vlan};
			__builtin_memcpy(key.mac, src, ETH_ALEN);
			if (bpf_map_lookup_elem(&xmv_macs, &key)) {
				count_drop(DROP_LOOPED, skb->len);
				return TC_ACT_SHOT;
			}
		}
		/* Over the limit, no member gets a copy; the host, which
		 * the limit does not cover, still gets its own. */
		if (!storm_allow_vlan(vlan, net)) {
			count_drop(DROP_STORM, skb->len);
			return vlan ? TC_ACT_SHOT : TC_ACT_OK;
		}
		if (skb_strip_tag(skb))
			return TC_ACT_SHOT;
		/* The VLAN counts the frame once; its members count the copies. */
		count_rx(&xmv_vlan_stats, vlan, skb->len);
		flood(skb, vlan, net->members, src);
		/* The host lives on the untagged segment only. */
		return vlan ? TC_ACT_SHOT : TC_ACT_OK;
	}
	case VERDICT_DROP:
		keep_control_tables(); /* off the delivery path */
		count_drop(d.reason, skb->len);
		return TC_ACT_SHOT;
	default:
		count_event(EV_HOST_PASS, skb->len);
		return TC_ACT_OK;
	}
}

/* ---- tcx ingress on an endpoint's outer veth (= what it sends) --------- */

/* Sends an endpoint's frame out of the parent, tagged with its VLAN. What
 * the parent cannot carry is counted here, not lost in the redirect: a frame
 * longer than its MTU (bpf_check_mtu; a GSO skb passes, it is segmented
 * later), or a parent that no longer exists (-ENODEV). The tag goes into
 * skb metadata and does not count against the MTU, as on a VLAN device. */
static __always_inline int to_wire(struct __sk_buff *skb, const struct endpoint *ep,
				   const struct settings *cfg)
{
	__u32 mtu_len = 0;
	long fit = bpf_check_mtu(skb, cfg->parent_ifindex, &mtu_len, 0, 0);

	if (fit < 0) {
		count_drop(DROP_NO_PARENT, skb->len);
		return TC_ACT_SHOT;
	}
	if (fit != BPF_MTU_CHK_RET_SUCCESS) {
		count_drop(DROP_TOO_BIG, skb->len);
		return TC_ACT_SHOT;
	}
	if (ep->vlan && bpf_skb_vlan_push(skb, bpf_htons(ETH_P_8021Q), ep->vlan)) {
		count_drop(DROP_HELPER_FAILED, skb->len);
		return TC_ACT_SHOT;
	}
	return bpf_redirect(cfg->parent_ifindex, 0);
}

/* Hands an endpoint's frame to the host stack as if it arrived on the
 * parent (the host's sockets and firewall see it on the parent). */
static __always_inline int to_host(struct __sk_buff *skb, int copy)
{
	struct settings *cfg = get_settings();
	__u32 mark = skb->mark;
	int ret;

	if (!cfg)
		return TC_ACT_SHOT;
	count_event(EV_HAIRPIN_TO_HOST, skb->len);
	skb->mark = mark | MARK_HAIRPIN;
	if (!copy)
		return bpf_redirect(cfg->parent_ifindex, BPF_F_INGRESS);
	ret = bpf_clone_redirect(skb, cfg->parent_ifindex, BPF_F_INGRESS);
	skb->mark = mark;
	return ret;
}

SEC("tcx/ingress")
int xmv_ep_tx(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;
	struct endpoint *ep = bpf_map_lookup_elem(&xmv_endpoints, &ifindex);
	struct settings *cfg = get_settings();
	struct frame f;

	if (!ep || !cfg) {
		count_drop(DROP_NOT_ENDPOINT, skb->len);
		return TC_ACT_SHOT;
	}
	if (skb_parse(skb, &f) < 0) {
		count_drop(DROP_RUNT, skb->len);
		return TC_ACT_SHOT;
	}
	/* A container never chooses its VLAN: any tag is VLAN hopping. */
	if (skb->vlan_present || f.tag_in_bytes) {
		count_drop(DROP_TAGGED_FROM_ENDPOINT, skb->len);
		return TC_ACT_SHOT;
	}
	if (!mac_equal(f.eth->h_source, ep->mac)) {
		count_drop(DROP_SPOOFED_SRC, skb->len);
		return TC_ACT_SHOT;
	}

	__u16 vlan = ep->vlan;
	struct vlan *net = get_vlan(vlan);
	if (!net) {
		count_drop(DROP_NOT_ENDPOINT, skb->len);
		return TC_ACT_SHOT;
	}

	/* The host lives on the untagged segment; with hairpin on it hears
	 * its endpoints directly, as kernel macvlan cannot arrange. */
	int hairpin = cfg->hairpin && vlan == 0;
	int multicast = is_multicast(f.eth->h_dest);
	int for_host = !multicast && hairpin && mac_equal(f.eth->h_dest, cfg->parent_mac);
	struct endpoint *peer = 0;

	if (!multicast && !for_host) {
		struct mac_key key = {.vlan = vlan};
		__builtin_memcpy(key.mac, f.eth->h_dest, ETH_ALEN);
		peer = bpf_map_lookup_elem(&xmv_macs, &key);
	}
	/* Storm control, before any copy: what every member gets, and an
	 * unknown unicast on the untagged segment, which every switch floods. */
	if ((multicast || (!peer && !for_host && vlan == 0)) && !storm_allow_tx(ep, net)) {
		count_drop(DROP_STORM, skb->len);
		return TC_ACT_SHOT;
	}
	count_tx(&xmv_ep_stats, ep->id, skb->len);

	if (multicast) {
		/* In bridge mode the other members get a copy here; in vepa
		 * mode the switch reflects it; in private mode nobody does. */
		if (net->mode == MODE_BRIDGE)
			flood(skb, vlan, net->members, ep->mac);
		if (hairpin)
			to_host(skb, 1);
		return to_wire(skb, ep, cfg);
	}
	if (for_host)
		return to_host(skb, 0);
	if (peer) {
		if (net->mode == MODE_PRIVATE) {
			count_drop(DROP_PRIVATE_MODE, skb->len);
			return TC_ACT_SHOT;
		}
		if (net->mode == MODE_BRIDGE) {
			count_event(EV_LOCAL_SWITCH, skb->len);
			count_rx(&xmv_ep_stats, peer->id, skb->len);
			return to_endpoint(peer->ifindex, peer->flags);
		}
	}
	return to_wire(skb, ep, cfg);
}

/* ---- tcx egress on the parent (hairpin only) -------------------------- */

SEC("tcx/egress")
int xmv_host_tx(struct __sk_buff *skb)
{
	struct settings *cfg = get_settings();
	struct frame f;

	/* Attached only while hairpin is on; the flag covers the moment
	 * between the settings change and the link change. */
	if (!cfg || !cfg->hairpin || skb->vlan_present)
		return TC_ACT_OK;
	if (skb_parse(skb, &f) < 0 || f.tag_in_bytes)
		return TC_ACT_OK;

	/* Endpoints' own frames leave through here too: leave them be. */
	struct mac_key key = {.vlan = 0};
	__builtin_memcpy(key.mac, f.eth->h_source, ETH_ALEN);
	if (bpf_map_lookup_elem(&xmv_macs, &key))
		return TC_ACT_OK;
	struct vlan *net = get_vlan(0);
	if (!net)
		return TC_ACT_OK;

	if (is_multicast(f.eth->h_dest)) {
		/* The limit covers the endpoints' copies, not the host's
		 * frame to the wire. */
		if (!storm_allow_vlan(0, net)) {
			count_drop(DROP_STORM, skb->len);
			return TC_ACT_OK;
		}
		count_event(EV_HAIRPIN_TO_ENDPOINT, skb->len);
		flood(skb, 0, net->members, f.eth->h_source);
		return TC_ACT_OK; /* and on to the wire */
	}
	__builtin_memcpy(key.mac, f.eth->h_dest, ETH_ALEN);
	struct endpoint *ep = bpf_map_lookup_elem(&xmv_macs, &key);
	if (!ep)
		return TC_ACT_OK;
	count_event(EV_HAIRPIN_TO_ENDPOINT, skb->len);
	count_rx(&xmv_ep_stats, ep->id, skb->len);
	/* Egress of the outer veth = ingress of the endpoint. */
	return bpf_redirect(ep->ifindex, 0);
}
