/*
 * exporter_cgroup_storage_map.bpf.c - exporter_cgroup_id_map.bpf.c with a
 * `cgrp_storage` cgroup_id_map: the host writes 1 into the storage of each
 * matching cgroup (through its directory's descriptor); the program reads
 * the current task's cgroup v2 storage, created at 0 for the others.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "exporter_maps.h"

#define BPF_MAP_TYPE_CGRP_STORAGE 32
#define BPF_LOCAL_STORAGE_GET_F_CREATE 1

struct cgroup_key {
	__u64 cgroup;
	__u64 syscall;
};

struct {
	__uint(type, BPF_MAP_TYPE_CGRP_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u64);
} exporter_cgroup_storage SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct cgroup_key);
	__type(value, __u64);
} exporter_storage_matched_syscalls_total SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct cgroup_key);
	__type(value, __u64);
} exporter_storage_unmatched_syscalls_total SEC(".maps");

SEC("tp_btf/sys_enter")
int BPF_PROG(sys_enter, struct pt_regs *regs, long id)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct cgroup *cgrp = task->cgroups->dfl_cgrp;
	struct cgroup_key key = { BPF_CORE_READ(cgrp, kn, id), id };
	__u64 *ok = bpf_cgrp_storage_get(&exporter_cgroup_storage, cgrp, 0,
					 BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (!ok)
		return 0;
	if (*ok)
		count_in(&exporter_storage_matched_syscalls_total, &key, 1);
	else
		count_in(&exporter_storage_unmatched_syscalls_total, &key, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
