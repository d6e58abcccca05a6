/*
 * verifier_reject.bpf.c - an object whose program `bad` compiles fine but
 * is rejected by the kernel verifier, for the host's load-failure tests
 * (loading must fail with the verifier's log and leave nothing attached),
 * and a valid program `good` in the same object.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

/*
 * A hash map, not an array: since Linux 6.14 the verifier knows that an
 * array lookup with a constant in-range key cannot fail and no longer
 * requires the NULL check, so `bad` would load. A hash lookup can always
 * miss.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

/* Valid: does nothing. */
SEC("tracepoint/sched/sched_process_exec")
int good(struct trace_event_raw_sched_process_exec *ctx)
{
	return 0;
}

/*
 * Invalid: bpf_map_lookup_elem() returns NULL when the key is not in the
 * map, so its result is typed `map_value_or_null` and must be compared with
 * NULL before use. This program dereferences it unchecked, and the verifier
 * rejects it with "R0 invalid mem access 'map_value_or_null'" (the register
 * number may differ). C cannot see the problem, so clang compiles it.
 */
SEC("tracepoint/sched/sched_process_exec")
int bad(struct trace_event_raw_sched_process_exec *ctx)
{
	__u32 key = 0;
	__u64 *value = bpf_map_lookup_elem(&counts, &key);

	*value += 1; /* no NULL check: rejected */
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
