/*
 * exporter_write_sizes.bpf.c - a histogram of write(2) sizes per cgroup,
 * from the syscalls:sys_enter_write tracepoint: exp2 buckets (bucket k
 * holds sizes up to 2^k) and the bytes written at key bucket_max + 1, the
 * `sum` convention of ebpf_exporter's histograms.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "exporter_maps.h"

#define BUCKET_MAX 16

struct bucket_key {
	__u64 cgroup;
	__u64 bucket;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct bucket_key);
	__type(value, __u64);
} exporter_write_size_bytes SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_write")
int on_write(struct trace_event_raw_sys_enter *ctx)
{
	__u64 size = ctx->args[2];
	struct bucket_key key = { bpf_get_current_cgroup_id(), 0 };

	/* The smallest k with size <= 2^k, at most BUCKET_MAX. */
	while (key.bucket < BUCKET_MAX && (1ULL << key.bucket) < size)
		key.bucket++;
	count_in(&exporter_write_size_bytes, &key, 1);
	key.bucket = BUCKET_MAX + 1;
	count_in(&exporter_write_size_bytes, &key, size);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
