/*
 * exporter_uprobe.bpf.c - calls of libc's getppid() per cgroup, from a
 * uprobe whose section names the library and the function (libbpf's
 * `uprobe/<binary>:<function>`), as ebpf_exporter's uprobe example does.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "exporter_maps.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} exporter_libc_getppid_calls_total SEC(".maps");

SEC("uprobe/libc.so.6:getppid")
int BPF_KPROBE(on_getppid)
{
	__u64 cgroup = bpf_get_current_cgroup_id();

	count_in(&exporter_libc_getppid_calls_total, &cgroup, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
