/*
 * exporter_cgroup_id_map.bpf.c - syscalls by cgroup and name, split by
 * whether the cgroup is in the map the host fills from the YAML's
 * `cgroup_id_map` (ebpf_exporter's cgroup filter): a hash map of u64
 * cgroup ids to u64 1.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "exporter_maps.h"

struct cgroup_key {
	__u64 cgroup;
	__u64 syscall;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u64);
} exporter_cgroup_ids SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct cgroup_key);
	__type(value, __u64);
} exporter_matched_syscalls_total SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct cgroup_key);
	__type(value, __u64);
} exporter_unmatched_syscalls_total SEC(".maps");

SEC("tp_btf/sys_enter")
int BPF_PROG(sys_enter, struct pt_regs *regs, long id)
{
	struct cgroup_key key = { bpf_get_current_cgroup_id(), id };

	if (bpf_map_lookup_elem(&exporter_cgroup_ids, &key.cgroup))
		count_in(&exporter_matched_syscalls_total, &key, 1);
	else
		count_in(&exporter_unmatched_syscalls_total, &key, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
