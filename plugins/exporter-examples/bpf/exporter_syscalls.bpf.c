/*
 * exporter_syscalls.bpf.c - syscalls and syscall errors per cgroup, in
 * ebpf_exporter's style: tp_btf programs that attach from their section
 * names, hash maps named after the metrics, u64 values, keys laid out as
 * the YAML's labels read them (cgroup id, then syscall number or errno).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "exporter_maps.h"

struct cgroup_key {
	__u64 cgroup;
	__u64 value;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct cgroup_key);
	__type(value, __u64);
} exporter_syscalls_total SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct cgroup_key);
	__type(value, __u64);
} exporter_syscall_errors_total SEC(".maps");

SEC("tp_btf/sys_enter")
int BPF_PROG(sys_enter, struct pt_regs *regs, long id)
{
	struct cgroup_key key = { bpf_get_current_cgroup_id(), id };

	count_in(&exporter_syscalls_total, &key, 1);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(sys_exit, struct pt_regs *regs, long ret)
{
	struct cgroup_key key = { bpf_get_current_cgroup_id(), -ret };

	if (ret < 0)
		count_in(&exporter_syscall_errors_total, &key, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
