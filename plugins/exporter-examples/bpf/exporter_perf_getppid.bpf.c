/*
 * exporter_perf_getppid.bpf.c - getppid() calls sent as perf events, one
 * per call carrying the caller's cgroup id, in the style of ebpf_exporter's
 * oomkill example: the counter is a `perf_event_array: true` counter that
 * counts events by their decoded bytes, not a map read at scrape time.
 *
 * `repeat` (1 unless set at load) sends that many events per call with
 * bpf_loop: the exporter benchmark (benches/benches/exporter.rs) uses it to
 * offer more events than one syscall each.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

const volatile __u32 repeat = 1;

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} exporter_getppid_events_total SEC(".maps");

/* bpf_perf_event_output needs the program's context: bpf_loop hands it to
 * the callback through the caller's stack. */
struct emit_args {
	void *ctx;
	__u64 cgroup;
};

static long emit(__u64 index, void *data)
{
	struct emit_args *e = data;

	bpf_perf_event_output(e->ctx, &exporter_getppid_events_total,
			      BPF_F_CURRENT_CPU, &e->cgroup, sizeof(e->cgroup));
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int on_getppid(void *ctx)
{
	struct emit_args e = { .ctx = ctx, .cgroup = bpf_get_current_cgroup_id() };

	if (repeat <= 1)
		emit(0, &e);
	else
		bpf_loop(repeat, emit, &e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
