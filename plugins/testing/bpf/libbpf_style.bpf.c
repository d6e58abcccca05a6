/*
 * libbpf_style.bpf.c - an object written for libbpf's auto-attach, with no
 * eBPFConductor convention in it: every program says in its section name
 * where it attaches, and one (xdp) cannot say and is skipped. The host's
 * auto-attach test (crates/kernel/tests/attach.rs) loads it with a spec
 * that lists no programs and counts each program's hits.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

struct pt_regs;

/* [0]: thread to count (set by the test), [1]: its syscall number */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} target SEC(".maps");

/* [0] tp_btf, [1] raw_tp, [2] tracepoint, [3] uprobe, [4] xdp */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 5);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

static __always_inline __u64 get(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&target, &k);

	return v ? *v : 0;
}

static __always_inline void hit(__u32 k)
{
	__u64 *v = bpf_map_lookup_elem(&hits, &k);

	if (v)
		__sync_fetch_and_add(v, 1);
}

static __always_inline int mine(void)
{
	__u64 tid = get(0);

	return tid && (__u32)bpf_get_current_pid_tgid() == tid;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(btf_enter, struct pt_regs *regs, long id)
{
	if (mine() && id == (long)get(1))
		hit(0);
	return 0;
}

SEC("raw_tp/sys_enter")
int raw_enter(struct bpf_raw_tracepoint_args *ctx)
{
	if (mine() && ctx->args[1] == get(1))
		hit(1);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getpgid")
int tp_getpgid(void *ctx)
{
	if (mine())
		hit(2);
	return 0;
}

SEC("uprobe/libc.so.6:getppid")
int libc_getppid(struct pt_regs *ctx)
{
	if (mine())
		hit(3);
	return 0;
}

SEC("xdp")
int not_attached(struct xdp_md *ctx)
{
	hit(4);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
