/*
 * exporter_connect_ips.bpf.c - connect(2) calls by destination address, in
 * ebpf_exporter's style, for the k8s decoders that take a pod IP: the key
 * holds the address (IPv4 as IPv4-mapped IPv6, so one 16-byte label reads
 * both families) twice, once for a `pod` label and once for an `ip` label,
 * since a label reads its bytes once.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "exporter_maps.h"

#define AF_INET 2
#define AF_INET6 10

/* The user's sockaddr_in / sockaddr_in6, as far as the address. */
struct user_sockaddr_in {
	__u16 family;
	__u16 port;
	__u8 addr[4];
};

struct user_sockaddr_in6 {
	__u16 family;
	__u16 port;
	__u32 flowinfo;
	__u8 addr[16];
};

struct ip_key {
	__u8 pod_ip[16];
	__u8 ip[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct ip_key);
	__type(value, __u64);
} exporter_connects_total SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_connect")
int on_connect(struct trace_event_raw_sys_enter *ctx)
{
	const void *uaddr = (const void *)ctx->args[1];
	struct ip_key key = {};
	__u16 family = 0;

	if (bpf_probe_read_user(&family, sizeof(family), uaddr))
		return 0;
	if (family == AF_INET) {
		struct user_sockaddr_in sa;

		if (bpf_probe_read_user(&sa, sizeof(sa), uaddr))
			return 0;
		key.ip[10] = 0xff;
		key.ip[11] = 0xff;
		__builtin_memcpy(&key.ip[12], sa.addr, 4);
	} else if (family == AF_INET6) {
		struct user_sockaddr_in6 sa;

		if (bpf_probe_read_user(&sa, sizeof(sa), uaddr))
			return 0;
		__builtin_memcpy(key.ip, sa.addr, 16);
	} else {
		return 0;
	}
	__builtin_memcpy(key.pod_ip, key.ip, 16);
	count_in(&exporter_connects_total, &key, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
