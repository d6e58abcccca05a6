/*
 * test_events.bpf.c - two event sources firing on every exec, for the
 * host's event-delivery tests: a perf event array fed by a tracepoint and a
 * ring buffer (with its `raw_events_lost` drop counter, see conductor.h)
 * fed by a raw tracepoint. Both write a struct exec_record.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "conductor.h"

struct exec_record {
	char comm[16]; /* the new program's name, NUL-padded */
	__u32 pid;     /* process id (tgid) */
	__u32 cpu;     /* CPU the program ran on */
};

_Static_assert(sizeof(struct exec_record) == 24, "struct exec_record is an ABI: 24 bytes");

/* max_entries 0: the loader sets it to the number of possible CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf_events SEC(".maps");

CONDUCTOR_RINGBUF(raw_events, 256 * 1024);

static __always_inline void fill(struct exec_record *r)
{
	if (bpf_get_current_comm(r->comm, sizeof(r->comm)))
		__builtin_memset(r->comm, 0, sizeof(r->comm));
	r->pid = bpf_get_current_pid_tgid() >> 32;
	r->cpu = bpf_get_smp_processor_id();
}

SEC("tracepoint/sched/sched_process_exec")
int tp_exec_perf(struct trace_event_raw_sched_process_exec *ctx)
{
	struct exec_record r = {};

	fill(&r);
	bpf_perf_event_output(ctx, &perf_events, BPF_F_CURRENT_CPU, &r, sizeof(r));
	return 0;
}

SEC("raw_tracepoint/sched_process_exec")
int raw_exec(struct bpf_raw_tracepoint_args *ctx)
{
	struct exec_record *r = conductor_ringbuf_reserve(raw_events, sizeof(*r));

	if (!r)
		return 0;
	fill(r);
	bpf_ringbuf_submit(r, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
