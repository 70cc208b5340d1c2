/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Everything the datapath shares with Go. bpf2go mirrors each type below
 * (-type flags in gen.go); the Go package maps/ is the only Go code that
 * reads these layouts. Change a struct here and the pinned maps built from
 * the old layout become incompatible: the loader refuses to reuse them. */
#pragma once

#include <linux/types.h>

#define MAX_VLAN_ID 4094      /* 802.1Q VIDs 1..4094; 0 is the untagged segment */
#define MAX_NETWORKS 4095     /* one per VID 0..4094 */
#define MAX_MACS 65536        /* MAC table entries */
#define MAX_ENDPOINTS 4096    /* endpoint ids are 0..MAX_ENDPOINTS-1 */
#define MAX_VLAN_MEMBERS 1024 /* flood fan-out bound per VLAN */

/* Network (VLAN) modes, as in kernel macvlan. */
enum net_mode {
	MODE_BRIDGE = 0,  /* endpoints of one network talk directly */
	MODE_PRIVATE = 1, /* endpoints of one network never talk */
	MODE_VEPA = 2,    /* endpoint traffic always goes to the wire */
};

#define NAME_LEN 32
#define NETNS_LEN 64
#define IFNAME_LEN 16

/* An IP prefix; IPv4 as IPv4-mapped IPv6. len 0 = none. */
struct prefix {
	__u8 addr[16];
	__u8 len; /* in bits of addr: IPv4 /24 is 96+24 */
	__u8 pad[3];
};

/* Network table value (xmv_networks, by VID): the network's definition,
 * kept here so that the pinned table is the only record of it. Control
 * plane only: the datapath reads struct vlan. */
struct network {
	enum net_mode mode;
	__u32 mtu;       /* endpoints' MTU, 0 = the parent's */
	__u32 storm_pps; /* storm control: frames/s the VLAN floods; 0 = no limit (storm.h) */
	char name[NAME_LEN];
	struct prefix subnet;
	__u8 gateway[16]; /* all zero = none */
};

/* VLAN flags. */
enum vlan_flags {
	VLAN_DEFINED = 1 << 0, /* this VID has a network */
};

/* VLAN table value (xmv_vlans, an array by VID): what the datapath reads
 * of a network. tables/ writes it together with the network's entry in
 * xmv_networks. */
struct vlan {
	__u32 flags; /* enum vlan_flags */
	enum net_mode mode;
	__u32 members;   /* endpoints on this VLAN = valid flood slots */
	__u32 storm_pps; /* storm control: frames/s the VLAN floods; 0 = no limit (storm.h) */
};

/* MAC table key. */
struct mac_key {
	__u16 vlan; /* 0 = untagged */
	__u8 mac[6];
};

/* Endpoint flags. */
enum endpoint_flags {
	EP_XDP_DELIVERY = 1 << 0, /* received frames go by XDP redirect, not the skb path */
	EP_HOST = 1 << 1,         /* inner end lives in the host namespace */
};

/* One endpoint: value of the MAC table (keyed by {vlan, mac}) and of the
 * endpoint table (keyed by outer ifindex), so one lookup gives everything. */
struct endpoint {
	__u32 ifindex; /* outer veth, in the parent's namespace */
	__u32 id;      /* slot in the per-endpoint counters */
	__u16 vlan;
	__u8 mac[6];
	enum endpoint_flags flags; /* a bit set */
	__u32 storm_pps; /* storm control: frames/s it may flood; 0 = no limit (storm.h) */
};

/* Control plane only: the record of an endpoint, keyed by its id. Written
 * before anything of the endpoint exists and removed after everything is
 * gone, so a crash at any step leaves a record that says what to undo. */
struct endpoint_info {
	__u64 netns_ino;       /* identifies the namespace, however it was named */
	char netns[NETNS_LEN]; /* as the user named it */
	char ifname[IFNAME_LEN]; /* the inner interface */
	struct prefix ip;
	__u32 ifindex;         /* outer veth; 0 until it exists */
	__u32 mtu;             /* the inner end's */
	__u16 vlan;
	__u8 mac[6];
	__u8 state;            /* 1 building, 2 ready, 3 deleting */
	__u8 flags;            /* enum endpoint_flags */
	__u8 pad[2];
	char outer[IFNAME_LEN]; /* the outer veth's name */
	__u8 gateway[16];      /* default route we installed; all zero = none */
	__u32 storm_pps;       /* as in struct endpoint */
};

/* Flood list key: member idx (0..vlan.members-1) of a VLAN -> outer ifindex. */
struct flood_key {
	__u16 vlan;
	__u16 idx;
};

/* Per-parent settings, one element, written by the loader. */
struct settings {
	__u32 parent_ifindex;
	__u8 parent_mac[6];
	__u8 hairpin;        /* host <-> untagged endpoints directly */
	__u8 restore_rxvlan; /* control plane only: attach turned rx-vlan offload off */
	__u8 pad;
	__u8 xdp_choice;     /* control plane only: attach --xdp: 0 none recorded, 1 auto, 2 on, 3 off */
	__u64 netns_cookie;  /* control plane only: the parent's network namespace (SO_NETNS_COOKIE) */
};

/* Per-CPU traffic counters, one record per endpoint (by id): rx = towards
 * the endpoint, tx = from it; flood = the part of rx that were flood copies.
 * The same record per VLAN (by VID) counts only what no endpoint does:
 * broadcasts from the wire, once per frame, as rx. Go derives a VLAN's
 * totals from both (tables/counters.go). */
struct traffic {
	__u64 rx_packets;
	__u64 rx_bytes;
	__u64 tx_packets;
	__u64 tx_bytes;
	__u64 flood_packets;
	__u64 flood_bytes;
};

/* Control plane only (xmv_vlan_retired, by VID): the counters of a VLAN's
 * deleted endpoints, added when lifecycle deletes one, so that VLAN totals
 * never go down. last_id/last_ifindex name the endpoint added last, so
 * that finishing a delete a crash interrupted does not add it twice. */
struct retired {
	struct traffic traffic;
	__u32 last_id;
	__u32 last_ifindex;
};

/* Why a frame was dropped. Go keeps a human explanation for each value. */
enum drop_reason {
	DROP_RUNT = 0,            /* shorter than its Ethernet/802.1Q header */
	DROP_UNKNOWN_VLAN,        /* tagged with a VID that has no network */
	DROP_STACKED_VLAN,        /* non-802.1Q outer tag or double tag: never forwarded into a VLAN */
	DROP_UNKNOWN_DST,         /* unicast to no endpoint on a tagged VLAN */
	DROP_SPOOFED_SRC,         /* endpoint sent with a source MAC not its own */
	DROP_TAGGED_FROM_ENDPOINT,/* endpoint sent a tagged frame, any TPID (VLAN hopping) */
	DROP_PRIVATE_MODE,        /* endpoint to endpoint in a private network */
	DROP_NOT_ENDPOINT,        /* frame from an interface missing from the endpoint table */
	DROP_HELPER_FAILED,       /* a tag push/pop or head adjust failed */
	DROP_LOOPED,              /* a local endpoint's flood came back from the wire */
	DROP_TOO_BIG,             /* endpoint's frame longer than the parent's MTU allows */
	DROP_NO_PARENT,           /* endpoint's frame for the wire, and the parent is gone */
	DROP_STORM,               /* flood over the endpoint's or the VLAN's storm limit */
	DROP_REASON_MAX,
};

/* Parent-wide events that are not drops. */
enum event {
	EV_HOST_PASS = 0,     /* frame from the wire left to the host stack */
	EV_FLOOD_FRAMES,      /* broadcast/multicast frames flooded */
	EV_FLOOD_COPIES,      /* copies made by flooding */
	EV_FLOOD_TRUNCATED,   /* flood stopped at MAX_VLAN_MEMBERS */
	EV_LOCAL_SWITCH,      /* endpoint -> endpoint on this host */
	EV_HAIRPIN_TO_HOST,   /* endpoint -> host */
	EV_HAIRPIN_TO_ENDPOINT, /* host -> endpoint */
	EV_XDP_REDIRECT,      /* frames delivered by XDP redirect */
	EV_MAX,
};

/* Per-CPU packet/byte pair for drop reasons and events. */
struct count {
	__u64 packets;
	__u64 bytes;
};

/* What the XDP program decided, handed to the tcx ingress program in the
 * frame's metadata area so that it does not classify the frame again. */
enum verdict {
	VERDICT_HOST = 1,    /* leave to the host stack */
	VERDICT_FLOOD = 2,   /* broadcast/multicast inside vlan */
	VERDICT_DELIVER = 3, /* unicast to an endpoint */
	VERDICT_DROP = 4,    /* never written to metadata: XDP drops itself */
};

#define RX_META_MAGIC 0x786d7631 /* "xmv1" */

/* skb->mark bit on frames an endpoint hairpins into the parent's ingress,
 * so that xmv_rx_tc hands them to the host instead of flooding them again.
 * Set and cleared by xmacvlan only; marks never cross into a container. */
#define MARK_HAIRPIN 0x08000000

struct rx_meta {
	__u32 magic;
	__u8 verdict; /* enum verdict */
	__u8 flags;   /* endpoint's enum endpoint_flags (VERDICT_DELIVER) */
	__u16 vlan;
	__u32 ifindex; /* endpoint's outer veth (VERDICT_DELIVER) */
	__u32 id;      /* endpoint's counter slot (VERDICT_DELIVER) */
};
