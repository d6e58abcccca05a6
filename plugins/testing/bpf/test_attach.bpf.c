/*
 * test_attach.bpf.c - one small counting program per attach kind, for the
 * host's attach tests (crates/kernel/tests/attach.rs). Every program adds
 * to its own slot of `counts` (and, for packets, the bytes to `bytes`), so
 * a test triggers exactly N real events and reads back exactly N.
 *
 * `cfg` (written by the test before it triggers anything) narrows what is
 * counted to the test's own activity: its thread for syscalls and file
 * opens, and UDP datagrams to its port for packets.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

struct file;
struct filename;
struct bpf_sock;
struct bpf_sock_addr;

struct cfg {
	__u32 tid;  /* thread whose syscalls / file opens count */
	__u32 nr;   /* syscall number counted by the tp_btf program */
	__u32 port; /* UDP destination port counted by the packet programs */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cfg);
} cfg SEC(".maps");

enum slot {
	TP_BTF, UPROBE_BIN, UPROBE_LIBC, URETPROBE_BIN, XDP, TC, TCX, CGROUP_SKB,
	LSM, PERF, KPROBE, FENTRY, CGROUP_SOCK, CGROUP_CONNECT, WEIGHTED, BY_COMM,
	SLOTS
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} bytes SEC(".maps");

static __always_inline struct cfg *config(void)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem(&cfg, &zero);
}

static __always_inline void add(__u32 slot, __u64 len)
{
	__u64 *c = bpf_map_lookup_elem(&counts, &slot);
	__u64 *b = bpf_map_lookup_elem(&bytes, &slot);

	if (c)
		__sync_fetch_and_add(c, 1);
	if (b)
		__sync_fetch_and_add(b, len);
}

static __always_inline int my_thread(void)
{
	struct cfg *c = config();

	return c && c->tid && (__u32)bpf_get_current_pid_tgid() == c->tid;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(on_sys_enter, struct pt_regs *regs, long id)
{
	struct cfg *c = config();

	if (c && my_thread() && id == c->nr)
		add(TP_BTF, 0);
	return 0;
}

/* Global data, set from the spec's bytecode.globalData. */
const volatile __u32 weight = 1; /* added to bytes[WEIGHTED] per syscall */
const volatile __u8 small = 0;   /* only for the size check */

/* Counts the syscalls `on_sys_enter` counts, weighted by `weight`. */
SEC("raw_tp/sys_enter")
int on_weighted(struct bpf_raw_tracepoint_args *ctx)
{
	struct cfg *c = config();

	if (c && my_thread() && ctx->args[1] == c->nr)
		add(WEIGHTED, weight + small);
	return 0;
}

/* Typed global data: counts syscall `nr` of any thread named target_comm. */
const volatile char target_comm[16] = "";

SEC("raw_tp/sys_enter")
int on_comm(struct bpf_raw_tracepoint_args *ctx)
{
	struct cfg *c = config();
	char comm[16];

	if (!c || ctx->args[1] != c->nr || !target_comm[0])
		return 0;
	if (bpf_get_current_comm(comm, sizeof(comm)))
		return 0;
	for (int i = 0; i < 16; i++) {
		if (comm[i] != target_comm[i])
			return 0;
		if (!comm[i])
			break;
	}
	add(BY_COMM, 0);
	return 0;
}

SEC("uprobe")
int on_uprobe_bin(struct pt_regs *ctx)
{
	add(UPROBE_BIN, 0);
	return 0;
}

SEC("uretprobe")
int on_uretprobe_bin(struct pt_regs *ctx)
{
	add(URETPROBE_BIN, 0);
	return 0;
}

SEC("uprobe")
int on_uprobe_libc(struct pt_regs *ctx)
{
	add(UPROBE_LIBC, 0);
	return 0;
}

#define ETH_HLEN 14
#define ETH_P_IP 0x0800
#define PROTO_UDP 17

/* Wire formats (not kernel structs: no CO-RE). */
struct eth_hdr {
	__u8 dst[6];
	__u8 src[6];
	__be16 proto;
};

struct ip4_hdr {
	__u8 ver_ihl; /* 0x45: IPv4 without options */
	__u8 tos;
	__be16 tot_len;
	__be16 id;
	__be16 frag_off;
	__u8 ttl;
	__u8 protocol;
	__u16 check;
	__be32 saddr;
	__be32 daddr;
};

struct udp_hdr {
	__be16 source;
	__be16 dest;
	__be16 len;
	__u16 check;
};

/* The UDP destination port of an IPv4 packet whose IP header starts at
 * `ip`, or 0. */
static __always_inline __u16 udp_dport(void *ip, void *end)
{
	struct ip4_hdr *iph = ip;
	struct udp_hdr *udp;

	if ((void *)(iph + 1) > end || iph->protocol != PROTO_UDP || iph->ver_ihl != 0x45)
		return 0;
	udp = (void *)(iph + 1);
	if ((void *)(udp + 1) > end)
		return 0;
	return bpf_ntohs(udp->dest);
}

static __always_inline int my_port(__u16 port)
{
	struct cfg *c = config();

	return c && port && port == c->port;
}

SEC("xdp")
int on_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct eth_hdr *eth = data;

	if ((void *)(eth + 1) > end || eth->proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	if (my_port(udp_dport(eth + 1, end)))
		add(XDP, end - data);
	return XDP_PASS;
}

/* The UDP destination port of an skb whose data starts at `offset` bytes
 * before the IP header (14 for TC, 0 for cgroup skb). */
static __always_inline __u16 skb_dport(struct __sk_buff *skb, __u32 offset)
{
	struct ip4_hdr iph;
	struct udp_hdr udp;

	if (skb->protocol != bpf_htons(ETH_P_IP))
		return 0;
	if (bpf_skb_load_bytes(skb, offset, &iph, sizeof(iph)) || iph.protocol != PROTO_UDP ||
	    iph.ver_ihl != 0x45)
		return 0;
	if (bpf_skb_load_bytes(skb, offset + sizeof(iph), &udp, sizeof(udp)))
		return 0;
	return bpf_ntohs(udp.dest);
}

/* TC_ACT_UNSPEC / TCX_NEXT: let the packet go on as if we were not here. */
#define NEXT -1

SEC("classifier")
int on_tc(struct __sk_buff *skb)
{
	if (my_port(skb_dport(skb, ETH_HLEN)))
		add(TC, skb->len);
	return NEXT;
}

SEC("classifier")
int on_tcx(struct __sk_buff *skb)
{
	if (my_port(skb_dport(skb, ETH_HLEN)))
		add(TCX, skb->len);
	return NEXT;
}

SEC("cgroup_skb/egress")
int on_cgroup_egress(struct __sk_buff *skb)
{
	if (my_port(skb_dport(skb, 0)))
		add(CGROUP_SKB, skb->len);
	return 1; /* allow */
}

/* Sockets created by processes in the cgroup. */
SEC("cgroup/sock_create")
int on_sock_create(struct bpf_sock *sk)
{
	add(CGROUP_SOCK, 0);
	return 1; /* allow */
}

/* IPv4 connect() calls of processes in the cgroup. */
SEC("cgroup/connect4")
int on_connect4(struct bpf_sock_addr *ctx)
{
	add(CGROUP_CONNECT, 0);
	return 1; /* allow */
}

SEC("lsm/file_open")
int BPF_PROG(on_file_open, struct file *file)
{
	if (my_thread())
		add(LSM, 0);
	return 0; /* allow */
}

SEC("perf_event")
int on_perf(struct bpf_perf_event_data *ctx)
{
	add(PERF, 0);
	return 0;
}

/* Loaded and verified everywhere; attached only where the kernel has
 * kprobes and BPF trampolines. */
SEC("kprobe/do_unlinkat")
int on_kprobe(struct pt_regs *ctx)
{
	add(KPROBE, 0);
	return 0;
}

SEC("kretprobe/do_unlinkat")
int on_kretprobe(struct pt_regs *ctx)
{
	add(KPROBE, 0);
	return 0;
}

SEC("fentry/do_unlinkat")
int BPF_PROG(on_fentry, int dfd, struct filename *name)
{
	add(FENTRY, 0);
	return 0;
}

SEC("fexit/do_unlinkat")
int BPF_PROG(on_fexit, int dfd, struct filename *name, long ret)
{
	add(FENTRY, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
