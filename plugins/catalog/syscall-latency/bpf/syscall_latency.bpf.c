/*
 * syscall_latency.bpf.c - one record per system call of the allow-list,
 * with its duration, for the syscall-latency plugin.
 *
 * on_enter (tp_btf/sys_enter) runs for every system call on the node: it
 * looks the call's number up in `allowed` (filled by the plugin from its
 * config when it starts) and, for an allowed one, keeps the start time per
 * thread. on_exit (tp_btf/sys_exit) submits the duration to the ring
 * buffer `events`. Calls that never return (exit, execve on success) leave
 * an entry in `inflight` that the LRU map recycles.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "conductor.h"

#define MAX_SYSCALLS 1024

/*
 * The record, 24 bytes, native byte order. ABI shared with the plugin
 * (plugins/catalog/syscall-latency/src): change both together.
 */
struct syscall_event {
	__u64 cgroup_id;   /* cgroup v2 id of the calling task */
	__u64 duration_ns; /* from entry to exit */
	__u32 nr;          /* the system call's number on this architecture */
	__u32 _pad;        /* always 0 */
};

_Static_assert(sizeof(struct syscall_event) == 24, "struct syscall_event is an ABI: 24 bytes");

struct inflight_call {
	__u64 start_ns;
	__u64 nr;
};

CONDUCTOR_RINGBUF(events, 4 * 1024 * 1024);

/* System call number -> non-zero if counted. Written by the plugin. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_SYSCALLS);
	__type(key, __u32);
	__type(value, __u32);
} allowed SEC(".maps");

/* Thread id -> the allowed call it is in. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct inflight_call);
} inflight SEC(".maps");

SEC("tp_btf/sys_enter")
int BPF_PROG(on_enter, struct pt_regs *regs, long id)
{
	__u32 nr = (__u32)id;
	__u32 *on;
	__u64 tid;
	struct inflight_call call;

	if (id < 0 || id >= MAX_SYSCALLS)
		return 0;
	on = bpf_map_lookup_elem(&allowed, &nr);
	if (!on || !*on)
		return 0;
	tid = bpf_get_current_pid_tgid();
	call.start_ns = bpf_ktime_get_ns();
	call.nr = nr;
	bpf_map_update_elem(&inflight, &tid, &call, BPF_ANY);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(on_exit, struct pt_regs *regs, long ret)
{
	__u64 tid = bpf_get_current_pid_tgid();
	struct inflight_call *call = bpf_map_lookup_elem(&inflight, &tid);
	struct syscall_event *e;

	if (!call)
		return 0;
	e = conductor_ringbuf_reserve(events, sizeof(*e));
	if (e) {
		e->cgroup_id = bpf_get_current_cgroup_id();
		e->duration_ns = bpf_ktime_get_ns() - call->start_ns;
		e->nr = (__u32)call->nr;
		e->_pad = 0;
		bpf_ringbuf_submit(e, 0);
	}
	bpf_map_delete_elem(&inflight, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
