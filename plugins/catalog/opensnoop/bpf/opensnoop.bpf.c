/*
 * opensnoop.bpf.c - one record per openat() with its path and result, for
 * the opensnoop plugin.
 *
 * on_enter (tracepoint/syscalls/sys_enter_openat) keeps the path pointer
 * per thread; on_exit (sys_exit_openat) reads the path, now that the call
 * is done, and submits it with the result to the ring buffer `events`. The
 * plugin matches the path against the prefixes of its config.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "conductor.h"

#define PATH_MAX_READ 256

/*
 * The record, 272 bytes, native byte order. ABI shared with the plugin
 * (plugins/catalog/opensnoop/src): change both together.
 */
struct open_event {
	__u64 cgroup_id;          /* cgroup v2 id of the calling task */
	__s32 ret;                /* file descriptor, or -errno */
	__u32 pid;                /* process id (tgid) */
	char path[PATH_MAX_READ]; /* as passed, NUL-terminated, truncated */
};

_Static_assert(sizeof(struct open_event) == 272, "struct open_event is an ABI: 272 bytes");

CONDUCTOR_RINGBUF(events, 1024 * 1024);

/* Thread id -> the user-space path pointer of its openat() in progress. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, __u64);
} inflight SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int on_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 path = BPF_CORE_READ(ctx, args[1]);

	bpf_map_update_elem(&inflight, &id, &path, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int on_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u64 *path = bpf_map_lookup_elem(&inflight, &id);
	struct open_event *e;

	if (!path)
		return 0;
	e = conductor_ringbuf_reserve(events, sizeof(*e));
	if (e) {
		e->cgroup_id = bpf_get_current_cgroup_id();
		e->ret = (__s32)BPF_CORE_READ(ctx, ret);
		e->pid = id >> 32;
		if (bpf_probe_read_user_str(e->path, sizeof(e->path), (const void *)*path) < 0)
			e->path[0] = 0;
		bpf_ringbuf_submit(e, 0);
	}
	bpf_map_delete_elem(&inflight, &id);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
