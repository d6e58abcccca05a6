/*
 * pod_traffic.bpf.c - bytes and packets per cgroup and peer address, and
 * packet drops per cgroup, for the pod-traffic plugin.
 *
 * count_ingress / count_egress are cgroup_skb programs attached to the root
 * of the cgroup v2 hierarchy, so they run for every socket of every cgroup
 * below it (every pod): ingress when a packet is delivered to a socket,
 * egress when a socket sends one. They see the packet from its IP header on
 * (skb->len is the IP datagram's length) and always let it pass.
 *
 * count_drop is tp_btf/kfree_skb, which the kernel fires for every packet it
 * drops (consumed packets go to consume_skb instead), with the reason and,
 * on receive, the socket it was meant for.
 *
 * Nothing is sent to user space per packet: counters live in two per-CPU
 * LRU hash maps that the plugin reads when metrics are collected.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

enum direction {
	DIR_RX = 0,
	DIR_TX = 1,
};

/*
 * The key of `traffic`, 32 bytes: whose socket, which peer, which way.
 * An IPv4 peer is stored IPv4-mapped (::ffff:a.b.c.d). ABI shared with the
 * plugin (plugins/catalog/pod-traffic/src): change both together.
 */
struct traffic_key {
	__u64 cgroup_id; /* cgroup v2 id of the socket's cgroup */
	__u8 peer[16];   /* the other end's address, network byte order */
	__u8 direction;  /* enum direction */
	__u8 _pad[7];    /* always 0 */
};

struct traffic_value {
	__u64 bytes;   /* IP datagram bytes (headers included) */
	__u64 packets;
};

_Static_assert(sizeof(struct traffic_key) == 32, "struct traffic_key is an ABI: 32 bytes");
_Static_assert(sizeof(struct traffic_value) == 16, "struct traffic_value is an ABI: 16 bytes");

/* Drop categories: stable numbers, unlike the kernel's enum skb_drop_reason
 * whose values move between kernels. The plugin names them. */
enum drop_kind {
	DROP_OTHER = 0,
	DROP_NOT_SPECIFIED = 1,
	DROP_NO_SOCKET = 2,
	DROP_SOCKET_FILTER = 3,
	DROP_NETFILTER = 4,
	DROP_SOCKET_RCVBUFF = 5,
	DROP_PROTO_MEM = 6,
	DROP_CPU_BACKLOG = 7,
	DROP_QDISC = 8,
};

/* The key of `drops`, 16 bytes. */
struct drop_key {
	__u64 cgroup_id; /* of the socket the packet came from or was for; 0 if none */
	__u32 kind;      /* enum drop_kind */
	__u32 _pad;      /* always 0 */
};

_Static_assert(sizeof(struct drop_key) == 16, "struct drop_key is an ABI: 16 bytes");

/* Per-CPU, so the hot path adds without atomics; LRU, so a node with more
 * (pod, peer) pairs than entries forgets the least recently active ones
 * rather than refusing new ones (the plugin notices a restarted entry). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct traffic_key);
	__type(value, struct traffic_value);
} traffic SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 4096);
	__type(key, struct drop_key);
	__type(value, __u64);
} drops SEC(".maps");

static __always_inline void count(struct __sk_buff *skb, enum direction dir)
{
	struct traffic_key key = {};
	struct traffic_value *v, one;
	/* The peer is the source of what arrives, the destination of what leaves. */
	__u32 off;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		off = dir == DIR_RX ? 12 : 16;
		key.peer[10] = 0xff;
		key.peer[11] = 0xff;
		if (bpf_skb_load_bytes(skb, off, &key.peer[12], 4))
			return;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		off = dir == DIR_RX ? 8 : 24;
		if (bpf_skb_load_bytes(skb, off, key.peer, 16))
			return;
	} else {
		return;
	}
	key.cgroup_id = bpf_skb_cgroup_id(skb);
	key.direction = dir;

	v = bpf_map_lookup_elem(&traffic, &key);
	if (v) {
		/* This CPU's slot, but egress runs preemptibly (migration
		 * disabled only): two senders may interleave on one CPU, so
		 * add atomically (uncontended, hence cheap). */
		__sync_fetch_and_add(&v->bytes, skb->len);
		__sync_fetch_and_add(&v->packets, 1);
		return;
	}
	one.bytes = skb->len;
	one.packets = 1;
	bpf_map_update_elem(&traffic, &key, &one, BPF_NOEXIST);
	/* Another CPU may have created the key meanwhile: then this CPU's
	 * slot is still ours to fill. */
	v = bpf_map_lookup_elem(&traffic, &key);
	if (v && v->packets == 0) {
		__sync_fetch_and_add(&v->bytes, skb->len);
		__sync_fetch_and_add(&v->packets, 1);
	}
}

SEC("cgroup_skb/ingress")
int count_ingress(struct __sk_buff *skb)
{
	count(skb, DIR_RX);
	return 1; /* let it pass */
}

SEC("cgroup_skb/egress")
int count_egress(struct __sk_buff *skb)
{
	count(skb, DIR_TX);
	return 1; /* let it pass */
}

#define KIND(reason, kind)                                                       \
	if (bpf_core_enum_value_exists(enum skb_drop_reason, reason) &&        \
	    r == bpf_core_enum_value(enum skb_drop_reason, reason))            \
		return kind;

static __always_inline __u32 drop_kind(__u32 r)
{
	KIND(SKB_DROP_REASON_NOT_SPECIFIED, DROP_NOT_SPECIFIED);
	KIND(SKB_DROP_REASON_NO_SOCKET, DROP_NO_SOCKET);
	KIND(SKB_DROP_REASON_SOCKET_FILTER, DROP_SOCKET_FILTER);
	KIND(SKB_DROP_REASON_NETFILTER_DROP, DROP_NETFILTER);
	KIND(SKB_DROP_REASON_SOCKET_RCVBUFF, DROP_SOCKET_RCVBUFF);
	KIND(SKB_DROP_REASON_PROTO_MEM, DROP_PROTO_MEM);
	KIND(SKB_DROP_REASON_CPU_BACKLOG, DROP_CPU_BACKLOG);
	KIND(SKB_DROP_REASON_QDISC_DROP, DROP_QDISC);
	return DROP_OTHER;
}

/* Linux 6.12 added the receiving socket (rx_sk) to the tracepoint. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(count_drop, struct sk_buff *skb, void *location, enum skb_drop_reason reason,
	     struct sock *rx_sk)
{
	struct drop_key key = {};
	struct sock *sk = rx_sk;
	__u64 one = 1, *n;

	if (!sk)
		sk = BPF_CORE_READ(skb, sk);
	if (sk)
		key.cgroup_id = BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
	key.kind = drop_kind(reason);

	n = bpf_map_lookup_elem(&drops, &key);
	if (n) {
		__sync_fetch_and_add(n, 1);
		return 0;
	}
	bpf_map_update_elem(&drops, &key, &one, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
