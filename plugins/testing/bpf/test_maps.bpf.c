/*
 * test_maps.bpf.c - maps only, for the host's map-access tests.
 *
 * No program references these maps; they are still emitted (global
 * definitions in the `.maps` section, described by BTF) and the loader
 * creates every map of an object when it loads it. The tests grant them to
 * the testing plugin with different access: `rw_hash` read-write, `ro_hash`
 * read-only, `secret` not at all, and `pcpu` exercises per-CPU values.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} rw_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} ro_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} secret SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} pcpu SEC(".maps");

char LICENSE[] SEC("license") = "GPL";
