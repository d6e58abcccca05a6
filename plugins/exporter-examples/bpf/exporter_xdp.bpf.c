/*
 * exporter_xdp.bpf.c - packets arriving on one interface by IP protocol
 * and destination port, in ebpf_exporter's style: its own section kind
 * `xdp/<interface>` names the interface to attach to (libbpf has no such
 * kind; ebpf_exporter registers it). The test makes `cndtrxdp0`.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "exporter_maps.h"

#define ETH_P_IP 0x0800
#define IPPROTO_UDP_ 17

/* The headers as far as this program reads them (the examples' vmlinux.h
 * has no network headers). */
struct eth_header {
	__u8 dst[6];
	__u8 src[6];
	__u16 proto;
} __attribute__((packed));

struct ipv4_header {
	__u8 version_ihl;
	__u8 tos;
	__u16 total_len;
	__u16 id;
	__u16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__u32 saddr;
	__u32 daddr;
};

struct udp_header {
	__u16 source;
	__u16 dest;
	__u16 len;
	__u16 check;
};

struct packet_key {
	__u16 ethertype;
	__u16 protocol;
	__u16 dst_port;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct packet_key);
	__type(value, __u64);
} xdp_packets_total SEC(".maps");

SEC("xdp/cndtrxdp0")
int count_packets(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct eth_header *eth = data;
	struct packet_key key = {};

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	key.ethertype = bpf_ntohs(eth->proto);
	if (key.ethertype == ETH_P_IP) {
		struct ipv4_header *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > end)
			return XDP_PASS;
		key.protocol = ip->protocol;
		if (ip->protocol == IPPROTO_UDP_ && (ip->version_ihl & 0xf) == 5) {
			struct udp_header *udp = (void *)(ip + 1);

			if ((void *)(udp + 1) > end)
				return XDP_PASS;
			key.dst_port = bpf_ntohs(udp->dest);
		}
	}
	count_in(&xdp_packets_total, &key, 1);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
