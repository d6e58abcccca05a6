/*
 * exec_counter.bpf.c - one record per exec, for the exec-counter plugin.
 *
 * Attached to tracepoint sched/sched_process_exec, which fires after a
 * successful execve() once the task runs the new program. Each exec is
 * written to the ring buffer `events` (with its drop counter `events_lost`,
 * see conductor.h) as a struct exec_event, which the wasm plugin decodes.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include "conductor.h"

/*
 * The record, 40 bytes, native byte order. Its layout is an ABI shared with
 * the plugin (plugins/exec-counter/src): change both together (the host
 * refuses to load them if they disagree).
 */
struct exec_event {
	__u64 cgroup_id; /* cgroup v2 id of the task */
	__u32 pid;       /* process id (tgid) */
	__u32 ppid;      /* parent's process id */
	__u32 uid;       /* real uid */
	__u32 _pad;      /* always 0 */
	char comm[16];   /* the new program's name, NUL-padded */
};

_Static_assert(sizeof(struct exec_event) == 40, "struct exec_event is an ABI: 40 bytes");

/* Into the BTF, where the host checks the plugin's ExecEvent against it. */
CONDUCTOR_RECORD(exec_event);

CONDUCTOR_RINGBUF(events, 256 * 1024);

SEC("tracepoint/sched/sched_process_exec")
int handle_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct exec_event *e;

	e = conductor_ringbuf_reserve(events, sizeof(*e));
	if (!e)
		return 0;

	e->cgroup_id = bpf_get_current_cgroup_id();
	e->pid = bpf_get_current_pid_tgid() >> 32;
	/* CO-RE: both offsets are relocated against the running kernel. */
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->_pad = 0;
	/* At sched_process_exec the comm is already the new program's. */
	if (bpf_get_current_comm(e->comm, sizeof(e->comm)))
		__builtin_memset(e->comm, 0, sizeof(e->comm));

	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
