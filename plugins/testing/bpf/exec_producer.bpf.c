/*
 * exec_producer.bpf.c - synthetic exec events for the plugin-vs-native
 * benchmark (benches/benches/plugin_vs_native.rs).
 *
 * Every getpgid()-style syscall made by one thread (`target_tid`, syscall
 * number `trigger_nr`, both set at load) emits `per_trigger` records with
 * bpf_loop into the ring buffer `events`: the exec-counter plugin's
 * `struct exec_event` (exec_counter.bpf.c), so the real plugin consumes
 * them. Record `n` carries the cgroup id `cgroups[n % n_cgroups]` (filled in
 * by the benchmark with the inodes of cgroup directories its workload cache
 * knows) and the command name `comms[n % 16]`. Drops (ring full) are counted
 * in `events_lost` (conductor.h); `exec_stats[0]` counts records attempted,
 * so that exec_stats[0] == records consumed + sum(events_lost).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "conductor.h"

#define MAX_CGROUPS 64

const volatile __u32 target_tid = 0;
const volatile __u64 trigger_nr = 0;
const volatile __u32 per_trigger = 1;
const volatile __u32 n_cgroups = 1;      /* 1..MAX_CGROUPS */
const volatile __u64 wakeup_bytes = 0;   /* 0: the kernel's default wakeups */

struct exec_event {
	__u64 cgroup_id;
	__u32 pid;
	__u32 ppid;
	__u32 uid;
	__u32 _pad;
	char comm[16];
};

_Static_assert(sizeof(struct exec_event) == 40, "struct exec_event is an ABI: 40 bytes");

CONDUCTOR_RINGBUF(events, 256 * 1024);

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_CGROUPS);
	__type(key, __u32);
	__type(value, __u64);
} cgroups SEC(".maps");

/* [0]: records attempted */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} exec_stats SEC(".maps");

static const char comms[16][16] = {
	"bash", "ls", "git", "cat", "grep", "sed", "awk", "curl",
	"ssh", "make", "cc", "ld", "rustc", "cargo", "python3", "node",
};

static long emit(__u64 index, void *ctx)
{
	__u32 k0 = 0, slot;
	__u64 *next = bpf_map_lookup_elem(&exec_stats, &k0);
	__u64 *cgroup, n, flags = 0;
	struct exec_event e = {};

	if (!next)
		return 1;
	n = *next;
	*next = n + 1;
	slot = n % (n_cgroups ? n_cgroups : 1);
	cgroup = bpf_map_lookup_elem(&cgroups, &slot);
	e.cgroup_id = cgroup ? *cgroup : 0;
	e.pid = 1000 + (n & 0xffff);
	e.ppid = 1;
	e.uid = 0;
	__builtin_memcpy(e.comm, comms[n % 16], sizeof(e.comm));
	if (wakeup_bytes)
		flags = conductor_ringbuf_wakeup_flags(events, sizeof(e), wakeup_bytes);
	conductor_ringbuf_output(events, &e, sizeof(e), flags);
	return 0;
}

SEC("raw_tracepoint/sys_enter")
int trigger(struct bpf_raw_tracepoint_args *ctx)
{
	if ((__u32)bpf_get_current_pid_tgid() != target_tid)
		return 0;
	if (ctx->args[1] != trigger_nr)
		return 0;
	bpf_loop(per_trigger, emit, NULL, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
