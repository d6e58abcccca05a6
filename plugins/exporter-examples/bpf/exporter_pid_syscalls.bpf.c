/*
 * exporter_pid_syscalls.bpf.c - syscalls by process (tgid) and name, for
 * the `pid_cgroup_id` decoder: the YAML turns the pid into its cgroup id
 * at scrape time, then into a pod with `k8s_pod`.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "exporter_maps.h"

struct pid_key {
	__u32 pid;
	__u32 pad;
	__u64 syscall;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct pid_key);
	__type(value, __u64);
} exporter_pid_syscalls_total SEC(".maps");

SEC("tp_btf/sys_enter")
int BPF_PROG(sys_enter, struct pt_regs *regs, long id)
{
	struct pid_key key = { bpf_get_current_pid_tgid() >> 32, 0, id };

	count_in(&exporter_pid_syscalls_total, &key, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
