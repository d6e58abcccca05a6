/*
 * tcp.bpf.c - TCP connection events per socket cgroup and peer, for the
 * tcp plugin.
 *
 * on_state (tp_btf/inet_sock_set_state) sees every state change of a TCP
 * socket and reports the ones that open, accept, fail or close a
 * connection; on_retransmit (tp_btf/tcp_retransmit_skb) every segment the
 * kernel sends again (SYNs included). Records go to the ring buffer
 * `events`: one per connection event, not per packet.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "conductor.h"

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

/* include/net/tcp_states.h: UAPI-stable values. */
enum {
	TCP_ESTABLISHED = 1,
	TCP_SYN_SENT = 2,
	TCP_SYN_RECV = 3,
	TCP_CLOSE = 7,
	TCP_LISTEN = 10,
};

enum tcp_kind {
	KIND_OPENED = 1,     /* an outgoing connection was established */
	KIND_ACCEPTED = 2,   /* an incoming connection was established */
	KIND_FAILED = 3,     /* a connection attempt ended before it was established */
	KIND_CLOSED = 4,     /* an established connection ended */
	KIND_RETRANSMIT = 5, /* a segment was sent again */
};

/*
 * The record, 32 bytes, native byte order. ABI shared with the plugin
 * (plugins/catalog/tcp/src): change both together.
 */
struct tcp_event {
	__u64 cgroup_id; /* cgroup v2 id of the socket's cgroup */
	__u8 peer[16];   /* remote address; IPv4 as ::ffff:a.b.c.d */
	__u32 srtt_us;   /* KIND_CLOSED: smoothed RTT in microseconds; else 0 */
	__u8 kind;       /* enum tcp_kind */
	__u8 _pad[3];    /* always 0 */
};

_Static_assert(sizeof(struct tcp_event) == 32, "struct tcp_event is an ABI: 32 bytes");

CONDUCTOR_RINGBUF(events, 256 * 1024);

static __always_inline void emit(const struct sock *sk, __u8 kind, __u32 srtt_us)
{
	struct tcp_event *e;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	e = conductor_ringbuf_reserve(events, sizeof(*e));
	if (!e)
		return;
	__builtin_memset(e, 0, sizeof(*e));
	e->cgroup_id = BPF_CORE_READ(sk, sk_cgrp_data.cgroup, kn, id);
	if (family == AF_INET) {
		__be32 daddr = BPF_CORE_READ(sk, __sk_common.skc_daddr);

		e->peer[10] = 0xff;
		e->peer[11] = 0xff;
		__builtin_memcpy(&e->peer[12], &daddr, 4);
	} else if (family == AF_INET6) {
		BPF_CORE_READ_INTO(&e->peer, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	}
	e->srtt_us = srtt_us;
	e->kind = kind;
	bpf_ringbuf_submit(e, 0);
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(on_state, const struct sock *sk, const int oldstate, const int newstate)
{
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	if (newstate == TCP_ESTABLISHED) {
		if (oldstate == TCP_SYN_SENT)
			emit(sk, KIND_OPENED, 0);
		else if (oldstate == TCP_SYN_RECV)
			emit(sk, KIND_ACCEPTED, 0);
	} else if (newstate == TCP_CLOSE) {
		if (oldstate == TCP_SYN_SENT || oldstate == TCP_SYN_RECV)
			emit(sk, KIND_FAILED, 0);
		else if (oldstate != TCP_LISTEN && oldstate != TCP_CLOSE)
			emit(sk, KIND_CLOSED,
			     BPF_CORE_READ((const struct tcp_sock *)sk, srtt_us) >> 3);
	}
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(on_retransmit, const struct sock *sk)
{
	emit(sk, KIND_RETRANSMIT, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
