/*
 * conductor.h - eBPFConductor's BPF-side convention for event sources.
 *
 * Include after "vmlinux.h" and <bpf/bpf_helpers.h>.
 *
 * Ring buffers
 * ------------
 * When a BPF ring buffer is full, bpf_ringbuf_reserve() returns NULL and
 * bpf_ringbuf_output() returns an error: the record is dropped, and nothing
 * tells user space that it was. So every ring buffer a plugin consumes is
 * declared with CONDUCTOR_RINGBUF(name, bytes), which declares two maps:
 *
 *   name        BPF_MAP_TYPE_RINGBUF, `bytes` bytes (a power of two and a
 *               multiple of the page size; the loader rounds it up if not);
 *   name_lost   BPF_MAP_TYPE_PERCPU_ARRAY, 1 entry, key __u32 0, value __u64:
 *               the number of records dropped on each CPU.
 *
 * and records are written with conductor_ringbuf_reserve() (then
 * bpf_ringbuf_submit() / bpf_ringbuf_discard() as usual) or
 * conductor_ringbuf_output(), which count every failure in `name_lost`.
 *
 * The host looks for a map called `<source>_lost` next to every ring buffer
 * it delivers as events, sums the value over all CPUs and reports it as the
 * source's dropped events (metric and log), so an overloaded plugin is
 * visible instead of silently losing data.
 *
 * Keep `name` at most 10 characters if you want the kernel-side names of
 * both maps intact in `bpftool map` (the kernel keeps 15 characters of a
 * map name); the host finds maps by their full name in the object either way.
 *
 * Example:
 *
 *   CONDUCTOR_RINGBUF(events, 256 * 1024);
 *
 *   struct event *e = conductor_ringbuf_reserve(events, sizeof(*e));
 *   if (!e)
 *       return 0;          // already counted in events_lost
 *   ...
 *   bpf_ringbuf_submit(e, 0);
 *
 * Wakeups
 * -------
 * By default the kernel wakes the consumer whenever it commits a record
 * while the consumer is caught up: at low rates every record costs the
 * producer an irq_work (about a microsecond). At high rates a program can
 * pass conductor_ringbuf_wakeup_flags(name, size, wakeup_bytes) as the
 * flags of bpf_ringbuf_submit()/conductor_ringbuf_output(): it asks for a
 * wakeup only when this record makes the unconsumed data cross
 * `wakeup_bytes`, and suppresses it otherwise. Records that never reach the
 * threshold are then picked up by the host's timer: set `maxLatencyMs` on
 * the source in the spec, or they wait for the next crossing.
 *
 * Perf event arrays
 * -----------------
 * Need no convention: the kernel itself reports lost samples to the reader
 * (PERF_RECORD_LOST), and the host counts those.
 *
 * Records
 * -------
 * The plugin declares each record it decodes with the SDK's record! macro,
 * which writes the Rust layout into the component. When the plugin is
 * loaded, the host compares it with the struct of the same name (the Rust
 * name or its snake_case form: ExecEvent -> exec_event) in this object's
 * BTF and refuses a mismatch, naming both layouts. clang puts a struct in
 * the BTF only when a global refers to it, so name each record once:
 *
 *   CONDUCTOR_RECORD(exec_event);
 *
 * It declares an unused pointer in the section .conductor.records, which
 * the host's loader (aya) ignores: no map is created. Without it the host warns that the
 * record is not checked.
 */
#ifndef __CONDUCTOR_H__
#define __CONDUCTOR_H__

#define CONDUCTOR_RECORD(name)                                                 \
	const struct name *conductor_record__##name                            \
		__attribute__((section(".conductor.records"), used))

#define CONDUCTOR_RINGBUF(name, bytes)                                         \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_RINGBUF);                            \
		__uint(max_entries, (bytes));                                  \
	} name SEC(".maps");                                                   \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);                       \
		__uint(max_entries, 1);                                        \
		__type(key, __u32);                                            \
		__type(value, __u64);                                          \
	} name##_lost SEC(".maps")

/* Add one to the drop counter `lost` (a CONDUCTOR_RINGBUF `_lost` map). */
static __always_inline void conductor__count_lost(void *lost)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(lost, &zero);

	/* Per-CPU slot, but programs only disable migration, not preemption:
	 * two programs may interleave on one CPU, so add atomically. */
	if (n)
		__sync_fetch_and_add(n, 1);
}

static __always_inline void *conductor__ringbuf_reserve(void *ringbuf, void *lost, __u64 size)
{
	void *p = bpf_ringbuf_reserve(ringbuf, size, 0);

	if (!p)
		conductor__count_lost(lost);
	return p;
}

static __always_inline long conductor__ringbuf_output(void *ringbuf, void *lost, void *data,
						      __u64 size, __u64 flags)
{
	long err = bpf_ringbuf_output(ringbuf, data, size, flags);

	if (err)
		conductor__count_lost(lost);
	return err;
}

/*
 * Reserve `size` bytes (a compile-time constant) in ring buffer `name`.
 * Returns the record to fill in and submit, or NULL (the ring is full) after
 * counting the drop in `name_lost`.
 */
#define conductor_ringbuf_reserve(name, size)                                  \
	conductor__ringbuf_reserve(&(name), &(name##_lost), (size))

/*
 * Copy `size` bytes at `data` into ring buffer `name`. Returns 0, or a
 * negative error (the ring is full) after counting the drop in `name_lost`.
 */
#define conductor_ringbuf_output(name, data, size, flags)                      \
	conductor__ringbuf_output(&(name), &(name##_lost), (data), (size), (flags))

/*
 * Wakeup flags for a record of `size` bytes going into ring buffer `name`:
 * BPF_RB_FORCE_WAKEUP if it makes the unconsumed data cross `wakeup_bytes`,
 * BPF_RB_NO_WAKEUP otherwise (see "Wakeups" above). Racing producers on
 * other CPUs may both miss the crossing; `maxLatencyMs` bounds the delay.
 */
#define conductor_ringbuf_wakeup_flags(name, size, wakeup_bytes)              \
	conductor__wakeup_flags(bpf_ringbuf_query(&(name), BPF_RB_AVAIL_DATA), \
				(size), (wakeup_bytes))

static __always_inline __u64 conductor__wakeup_flags(__u64 avail, __u64 size, __u64 threshold)
{
	/* 8-byte record header, record rounded up to 8 bytes. */
	__u64 after = avail + ((size + 8 + 7) & ~7ULL);

	return avail < threshold && after >= threshold ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

#endif /* __CONDUCTOR_H__ */
