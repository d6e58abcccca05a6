/*
 * oomkill.bpf.c - one record per process the OOM killer kills, for the
 * oomkill plugin.
 *
 * tp_btf/mark_victim fires when the OOM killer (global or a cgroup's
 * memory.max) has chosen its victim, before the kill is delivered. The
 * tracepoint passes the victim's task, so the record names the victim's
 * cgroup and command, not those of the task whose allocation failed.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "conductor.h"

/*
 * The record, 40 bytes, native byte order. ABI shared with the plugin
 * (plugins/catalog/oomkill/src): change both together.
 */
struct oom_event {
	__u64 cgroup_id; /* cgroup v2 id of the victim */
	__u32 pid;       /* the victim's process id (tgid) */
	__u32 uid;       /* the victim's uid */
	char comm[16];   /* the victim's command, NUL-padded */
	__u64 _reserved; /* always 0 */
};

_Static_assert(sizeof(struct oom_event) == 40, "struct oom_event is an ABI: 40 bytes");

/* OOM kills are rare: a small ring is plenty. */
CONDUCTOR_RINGBUF(events, 16 * 4096);

SEC("tp_btf/mark_victim")
int BPF_PROG(on_mark_victim, struct task_struct *task, uid_t uid)
{
	struct oom_event *e;

	e = conductor_ringbuf_reserve(events, sizeof(*e));
	if (!e)
		return 0;
	e->cgroup_id = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
	e->pid = BPF_CORE_READ(task, tgid);
	e->uid = uid;
	if (bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), &task->comm) < 0)
		__builtin_memset(e->comm, 0, sizeof(e->comm));
	e->_reserved = 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
