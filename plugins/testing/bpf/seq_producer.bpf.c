/*
 * seq_producer.bpf.c - a ring-buffer producer with sequence numbers, for
 * the host's batching tests and the ring-buffer benchmark (benches/).
 *
 * Every getpgid()-style syscall made by one thread (`target_tid`, syscall
 * number `trigger_nr`, both set at load) emits `per_trigger` records of
 * `record_size` bytes with bpf_loop, like the kernel's bench_ringbufs. A
 * record is a struct of u64 words: word 0 is the sequence number, the last
 * word its complement, so a torn or misplaced record is detected. Every
 * `discard_every`-th sequence number (0: none) is reserved and discarded
 * instead, so consumers must skip discarded records. Drops (ring full) are
 * counted in `seq_ring_lost` (conductor.h), so that
 *   seq_stats[0] (sequence numbers used) ==
 *       records consumed + seq_stats[1] (discarded) + sum(seq_ring_lost).
 * One thread triggers, so plain increments suffice.
 *
 * With `use_perf` set, records go to the perf event array `seq_perf`
 * instead (bpf_perf_event_output on the current CPU, no discards), and
 * failed outputs (buffer full) are counted in `seq_perf_lost`, so the
 * same equation holds with seq_perf_lost for seq_ring_lost.
 *
 * Drops are also logged by episode (a run of consecutive sequence numbers
 * dropped) in `seq_drops`, so a benchmark can say when in a run it lost
 * events and how far behind the consumer was: the first SEQ_EPISODES
 * episodes are kept, later ones only counted in seq_stats[3].
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "conductor.h"

#define MAX_RECORD 4096

const volatile __u32 target_tid = 0;
const volatile __u64 trigger_nr = 0;
const volatile __u32 per_trigger = 1;
const volatile __u32 record_size = 64;   /* multiple of 8, 16..MAX_RECORD */
const volatile __u32 discard_every = 0;
const volatile __u64 wakeup_bytes = 0;  /* 0: the kernel's default wakeups */
const volatile __u32 use_perf = 0;      /* 1: emit into seq_perf */

CONDUCTOR_RINGBUF(seq_ring, 256 * 1024);

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} seq_perf SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} seq_perf_lost SEC(".maps");

/* bpf_perf_event_output needs the program's context: bpf_loop hands it to
 * the callback through a slot on the program's stack. */
struct perf_loop {
	struct bpf_raw_tracepoint_args *ctx;
};

/* [0]: next sequence number, [1]: records discarded, [2]: the sequence
 * number after the last one dropped, [3]: drop episodes */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} seq_stats SEC(".maps");

#define SEQ_EPISODES 64

/* One run of consecutive drops. The ring's positions are read when its
 * first record was dropped. */
struct drop_episode {
	__u64 first_seq;
	__u64 dropped;
	__u64 ktime_ns;         /* CLOCK_MONOTONIC of the first drop */
	__u64 consumer_pos;
	__u64 producer_pos;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SEQ_EPISODES);
	__type(key, __u32);
	__type(value, struct drop_episode);
} seq_drops SEC(".maps");

static __always_inline void log_drop(__u64 seq, void *ring)
{
	__u32 k2 = 2, k3 = 3;
	__u64 *after_last = bpf_map_lookup_elem(&seq_stats, &k2);
	__u64 *episodes = bpf_map_lookup_elem(&seq_stats, &k3);
	struct drop_episode *e;
	__u32 i;

	if (!after_last || !episodes)
		return;
	if (*episodes == 0 || *after_last != seq) {
		i = *episodes;
		*episodes += 1;
		e = bpf_map_lookup_elem(&seq_drops, &i);
		if (e) {
			e->first_seq = seq;
			e->dropped = 1;
			e->ktime_ns = bpf_ktime_get_ns();
			if (ring) {
				e->consumer_pos = bpf_ringbuf_query(ring, BPF_RB_CONS_POS);
				e->producer_pos = bpf_ringbuf_query(ring, BPF_RB_PROD_POS);
			}
		}
	} else if (*episodes <= SEQ_EPISODES) {
		i = *episodes - 1;
		e = bpf_map_lookup_elem(&seq_drops, &i);
		if (e)
			e->dropped += 1;
	}
	*after_last = seq + 1;
}

struct scratch {
	__u64 words[MAX_RECORD / 8];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} seq_scratch SEC(".maps");

static long emit(__u64 index, void *ctx)
{
	__u32 k0 = 0, k1 = 1;
	__u64 *next = bpf_map_lookup_elem(&seq_stats, &k0);
	__u64 *discarded = bpf_map_lookup_elem(&seq_stats, &k1);
	struct scratch *s = bpf_map_lookup_elem(&seq_scratch, &k0);
	__u64 seq, flags = 0;
	__u32 size = record_size, last;

	if (!next || !discarded || !s)
		return 1;
	seq = *next;
	*next = seq + 1;

	if (discard_every && seq % discard_every == 0) {
		__u64 *r = conductor_ringbuf_reserve(seq_ring, 16);

		if (r) {
			r[0] = seq;
			r[1] = ~seq;
			bpf_ringbuf_discard(r, BPF_RB_NO_WAKEUP);
			*discarded += 1;
		}
		return 0;
	}

	if (size < 16 || size > MAX_RECORD)
		return 1;
	last = size / 8 - 1;
	if (last >= MAX_RECORD / 8)
		return 1;
	s->words[0] = seq;
	s->words[last] = ~seq;
	if (wakeup_bytes)
		flags = conductor_ringbuf_wakeup_flags(seq_ring, size, wakeup_bytes);
	if (conductor_ringbuf_output(seq_ring, s, size, flags))
		log_drop(seq, &seq_ring);
	return 0;
}

static long emit_perf(__u64 index, void *loop)
{
	struct bpf_raw_tracepoint_args *ctx = ((struct perf_loop *)loop)->ctx;
	__u32 k0 = 0;
	__u64 *next = bpf_map_lookup_elem(&seq_stats, &k0);
	struct scratch *s = bpf_map_lookup_elem(&seq_scratch, &k0);
	__u32 size = record_size, last;
	__u64 seq;

	if (!next || !s || size < 16 || size > MAX_RECORD)
		return 1;
	last = size / 8 - 1;
	if (last >= MAX_RECORD / 8)
		return 1;
	seq = *next;
	*next = seq + 1;
	s->words[0] = seq;
	s->words[last] = ~seq;
	if (bpf_perf_event_output(ctx, &seq_perf, BPF_F_CURRENT_CPU, s, size)) {
		conductor__count_lost(&seq_perf_lost);
		log_drop(seq, NULL);
	}
	return 0;
}

SEC("raw_tracepoint/sys_enter")
int trigger(struct bpf_raw_tracepoint_args *ctx)
{
	if ((__u32)bpf_get_current_pid_tgid() != target_tid)
		return 0;
	if (ctx->args[1] != trigger_nr)
		return 0;
	if (use_perf) {
		struct perf_loop loop = { .ctx = ctx };

		bpf_loop(per_trigger, emit_perf, &loop, 0);
		return 0;
	}
	bpf_loop(per_trigger, emit, NULL, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
