/*
 * dns.bpf.c - the DNS messages of every pod's UDP sockets, passed whole (up
 * to 512 bytes) to the dns plugin, which parses them.
 *
 * on_ingress / on_egress are cgroup_skb programs attached to the root of
 * the cgroup v2 hierarchy, so they run for every socket of every cgroup
 * below it: egress when a socket sends, ingress when a packet is delivered
 * to a socket. They see the packet from its IP header on and always let it
 * pass. Only the client side of DNS is kept: queries a socket sends to
 * port 53 and responses it receives from port 53 (a resolver's own traffic,
 * to and from its port 53, is not). TCP DNS and IPv6 extension headers are
 * not followed.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "conductor.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_UDP_ 17
#define DNS_PORT 53
#define DNS_MAX 512 /* a classic UDP DNS message's largest size */
#define DNS_HEADER 12

enum direction {
	DIR_RX = 0, /* a response received */
	DIR_TX = 1, /* a query sent */
};

/*
 * The record, 536 bytes, native byte order. ABI shared with the plugin
 * (plugins/catalog/dns/src): change both together.
 */
struct dns_event {
	__u64 cgroup_id;        /* cgroup v2 id of the socket's cgroup */
	__u64 ts_ns;            /* bpf_ktime_get_ns() when seen */
	__u16 local_port;       /* the client socket's port, host byte order */
	__u16 len;              /* bytes of `message` filled */
	__u8 direction;         /* enum direction */
	__u8 _pad[3];           /* always 0 */
	__u8 message[DNS_MAX];  /* the DNS message, truncated to DNS_MAX */
};

_Static_assert(sizeof(struct dns_event) == 536, "struct dns_event is an ABI: 536 bytes");

CONDUCTOR_RINGBUF(events, 1024 * 1024);

static __always_inline void capture(struct __sk_buff *skb, enum direction dir)
{
	__u8 first, proto;
	__u16 ports[2];
	__u32 off, len;
	__u64 n;
	struct dns_event *e;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		__u16 frag;

		if (bpf_skb_load_bytes(skb, 0, &first, 1) ||
		    bpf_skb_load_bytes(skb, 9, &proto, 1) ||
		    bpf_skb_load_bytes(skb, 6, &frag, 2))
			return;
		/* Not UDP, or a fragment after the first: no UDP header. */
		if (proto != IPPROTO_UDP_ || (bpf_ntohs(frag) & 0x1fff))
			return;
		off = (first & 0x0f) * 4;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes(skb, 6, &proto, 1) || proto != IPPROTO_UDP_)
			return;
		off = 40;
	} else {
		return;
	}
	if (bpf_skb_load_bytes(skb, off, ports, sizeof(ports)))
		return;
	/* ports[0] is the source, ports[1] the destination. */
	if (dir == DIR_TX && ports[1] != bpf_htons(DNS_PORT))
		return;
	if (dir == DIR_RX && ports[0] != bpf_htons(DNS_PORT))
		return;
	off += 8;
	if (skb->len <= off)
		return;
	len = skb->len - off;
	if (len < DNS_HEADER)
		return;
	if (len > DNS_MAX)
		len = DNS_MAX;

	e = conductor_ringbuf_reserve(events, sizeof(*e));
	if (!e)
		return;
	/* Checked again as a 64-bit value the compiler cannot fold into the
	 * checks above, so the verifier sees the bounds 1..DNS_MAX. */
	n = len;
	barrier_var(n);
	if (n < 1 || n > DNS_MAX || bpf_skb_load_bytes(skb, off, e->message, n)) {
		bpf_ringbuf_discard(e, 0);
		return;
	}
	e->cgroup_id = bpf_skb_cgroup_id(skb);
	e->ts_ns = bpf_ktime_get_ns();
	e->local_port = bpf_ntohs(dir == DIR_TX ? ports[0] : ports[1]);
	e->len = len;
	e->direction = dir;
	e->_pad[0] = e->_pad[1] = e->_pad[2] = 0;
	bpf_ringbuf_submit(e, 0);
}

SEC("cgroup_skb/ingress")
int on_ingress(struct __sk_buff *skb)
{
	capture(skb, DIR_RX);
	return 1; /* let it pass */
}

SEC("cgroup_skb/egress")
int on_egress(struct __sk_buff *skb)
{
	capture(skb, DIR_TX);
	return 1; /* let it pass */
}

char LICENSE[] SEC("license") = "GPL";
