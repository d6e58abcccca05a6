/*
 * {{crate}}.bpf.c - one record per exec, for the {{name}} plugin.
 *
 * Attached to tracepoint sched/sched_process_exec (see package.yaml), which
 * fires after a successful execve() once the task runs the new program.
 * Each exec is written to the ring buffer `events` (with its drop counter
 * `events_lost`, see include/conductor.h) as a struct event, which the wasm
 * component (src/) decodes.
 *
 * Built by `conductor build` with clang -O2 -g -target bpf (CO-RE: field
 * offsets read with BPF_CORE_READ are relocated against the running
 * kernel's BTF when the program loads).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "conductor.h"

/* The record, 32 bytes, native byte order: an ABI shared with the component in src/. */
struct event {
	__u64 cgroup_id; /* cgroup v2 id of the task */
	__u32 pid;       /* process id (tgid) */
	__u32 _pad;      /* always 0 */
	char comm[16];   /* the new program's name, NUL-padded */
};

_Static_assert(sizeof(struct event) == 32, "struct event is an ABI: 32 bytes");
/* Puts struct event into the object's BTF, where `conductor build` and the
 * host compare it with the component's `record!`. */
CONDUCTOR_RECORD(event);

CONDUCTOR_RINGBUF(events, 256 * 1024);

SEC("tracepoint/sched/sched_process_exec")
int handle_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct event *e = conductor_ringbuf_reserve(events, sizeof(*e));
	if (!e)
		return 0; /* counted in events_lost */

	e->cgroup_id = bpf_get_current_cgroup_id();
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->_pad = 0;
	/* At sched_process_exec the comm is already the new program's. */
	if (bpf_get_current_comm(e->comm, sizeof(e->comm)))
		__builtin_memset(e->comm, 0, sizeof(e->comm));

	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
