/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Ethernet + 802.1Q parsing shared by the XDP and TC programs. Every read is
 * bounds-checked against data_end first. */
#pragma once

#include <linux/types.h>
#include <linux/if_ether.h>
#include <bpf/bpf_endian.h>
#include "types.h"

#define VLAN_HLEN 4
#define VLAN_VID_MASK 0x0fff

struct vlan_hdr {
	__be16 tci;
	__be16 encap_proto;
};

/* What the parser learnt about one frame. */
struct frame {
	struct ethhdr *eth;
	__u16 vlan;        /* VID the frame belongs to; 0 = untagged or priority-tagged */
	__be16 proto;      /* ethertype after the 802.1Q tag, if any */
	__u8 tag_in_bytes; /* the 802.1Q header sits in the frame bytes (else in metadata) */
	__u8 stacked;      /* outer tag other than 802.1Q, or a second tag: never ours */
};

/* Every tag protocol is a tag: 802.1Q, 802.1ad, and the pre-standard QinQ
 * TPIDs 0x9100/0x9200/0x9300 (linux/if_ether.h ETH_P_QINQ1..3) that switches
 * still use as an outer tag. A frame the datapath took for untagged because
 * of its TPID would be flooded, or sent from a container onto the wire. */
static __always_inline int is_vlan_proto(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD) ||
	       proto == bpf_htons(ETH_P_QINQ1) || proto == bpf_htons(ETH_P_QINQ2) ||
	       proto == bpf_htons(ETH_P_QINQ3);
}

static __always_inline int is_multicast(const __u8 *mac)
{
	return mac[0] & 1; /* broadcast is multicast too */
}

/* parse_frame fills f from [data, data_end). meta_proto/meta_tci describe a
 * tag the NIC or the stack moved out of the bytes (skb->vlan_tci, or the
 * XDP rx_vlan_tag kfunc); meta_proto == 0 means none. Returns -1 for a runt. */
static __always_inline int parse_frame(void *data, void *data_end, __be16 meta_proto,
				       __u16 meta_tci, struct frame *f)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	f->eth = eth;
	f->proto = eth->h_proto;
	f->tag_in_bytes = 0;
	f->stacked = 0;
	f->vlan = 0;

	if (meta_proto) {
		/* Outer tag already stripped. Anything but a single 802.1Q tag
		 * is a stacked (QinQ) frame. */
		f->vlan = meta_tci & VLAN_VID_MASK;
		if (meta_proto != bpf_htons(ETH_P_8021Q) || is_vlan_proto(f->proto))
			f->stacked = 1;
		return 0;
	}
	if (!is_vlan_proto(f->proto))
		return 0;

	struct vlan_hdr *vh = (void *)(eth + 1);
	if ((void *)(vh + 1) > data_end)
		return -1;
	f->vlan = bpf_ntohs(vh->tci) & VLAN_VID_MASK;
	f->tag_in_bytes = 1;
	if (eth->h_proto != bpf_htons(ETH_P_8021Q) || is_vlan_proto(vh->encap_proto))
		f->stacked = 1;
	f->proto = vh->encap_proto;
	return 0;
}
