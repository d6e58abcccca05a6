/*
 * vmlinux.h - the kernel types eBPFConductor's BPF programs use, written by
 * hand.
 *
 * Why not `bpftool btf dump file /sys/kernel/btf/vmlinux format c`? That dump
 * is ~3 MB, describes one particular kernel build, and would have to be
 * regenerated (and reviewed) for every kernel. The programs here need a
 * handful of types, so this header declares only those:
 *
 *  - the fixed-width typedefs libbpf's <bpf/bpf_helpers.h> and
 *    <bpf/bpf_helper_defs.h> expect (__u8 .. __u64, __s*, __be*, __wsum);
 *  - the UAPI enums the programs use (map types, update and output flags).
 *    These are ABI: their values never change between kernels;
 *  - the kernel structs the programs read, containing ONLY the fields read.
 *    They are compiled with `preserve_access_index`, so clang emits a CO-RE
 *    relocation for every field access and the loader (aya) rewrites each
 *    offset against the running kernel's BTF (/sys/kernel/btf/vmlinux).
 *    The layout written here is therefore never trusted: fields can be
 *    listed in any order and unused fields are simply left out. A struct or
 *    field that does not exist on the running kernel makes loading fail
 *    with a clear relocation error instead of reading garbage.
 *
 * To read another kernel field: add it (with the kernel's name and a
 * compatible type) to the struct below, or add the struct inside the
 * `#pragma clang attribute` block, and read it with BPF_CORE_READ().
 */
#ifndef __CONDUCTOR_VMLINUX_H__
#define __CONDUCTOR_VMLINUX_H__

/* ---- Basic types --------------------------------------------------------- */

typedef signed char __s8;
typedef unsigned char __u8;
typedef signed short __s16;
typedef unsigned short __u16;
typedef signed int __s32;
typedef unsigned int __u32;
typedef signed long long __s64;
typedef unsigned long long __u64;

typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s32 s32;
typedef __s64 s64;

typedef __u16 __be16;
typedef __u32 __be32;
typedef __u64 __be64;
typedef __u32 __wsum;

typedef int pid_t;
typedef unsigned int uid_t;
typedef unsigned int gid_t;

#ifndef __cplusplus
typedef _Bool bool;
#define true 1
#define false 0
#endif

#ifndef NULL
#define NULL ((void *)0)
#endif

/* ---- UAPI enums (stable ABI values, from include/uapi/linux/bpf.h) ------- */

enum bpf_map_type {
	BPF_MAP_TYPE_UNSPEC = 0,
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PROG_ARRAY = 3,
	BPF_MAP_TYPE_PERF_EVENT_ARRAY = 4,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_STACK_TRACE = 7,
	BPF_MAP_TYPE_CGROUP_ARRAY = 8,
	BPF_MAP_TYPE_LRU_HASH = 9,
	BPF_MAP_TYPE_LRU_PERCPU_HASH = 10,
	BPF_MAP_TYPE_LPM_TRIE = 11,
	BPF_MAP_TYPE_QUEUE = 22,
	BPF_MAP_TYPE_STACK = 23,
	BPF_MAP_TYPE_RINGBUF = 27,
	BPF_MAP_TYPE_BLOOM_FILTER = 30,
};

/* flags of bpf_map_update_elem() */
enum {
	BPF_ANY = 0,     /* create a new element or update an existing one */
	BPF_NOEXIST = 1, /* create a new element only if it did not exist */
	BPF_EXIST = 2,   /* update an existing element */
	BPF_F_LOCK = 4,  /* spin_lock-ed map_lookup/map_update */
};

/* map_flags of a map definition */
enum {
	BPF_F_NO_PREALLOC = 1,
	BPF_F_NO_COMMON_LRU = 2,
	BPF_F_NUMA_NODE = 4,
	BPF_F_RDONLY = 8,
	BPF_F_WRONLY = 16,
	BPF_F_RDONLY_PROG = 128,
	BPF_F_WRONLY_PROG = 256,
	BPF_F_MMAPABLE = 1024,
};

/* flags of bpf_perf_event_output() */
enum {
	BPF_F_INDEX_MASK = 0xffffffffULL,
	BPF_F_CURRENT_CPU = BPF_F_INDEX_MASK,
	BPF_F_CTXLEN_MASK = (0xfffffULL << 32),
};

/* flags of bpf_ringbuf_output() / bpf_ringbuf_submit() / bpf_ringbuf_discard() */
enum {
	BPF_RB_NO_WAKEUP = 1,
	BPF_RB_FORCE_WAKEUP = 2,
};

/* what bpf_ringbuf_query() reports */
enum {
	BPF_RB_AVAIL_DATA = 0,
	BPF_RB_RING_SIZE = 1,
	BPF_RB_CONS_POS = 2,
	BPF_RB_PROD_POS = 3,
};

/* Context of raw_tracepoint programs: the tracepoint's arguments. */
struct bpf_raw_tracepoint_args {
	__u64 args[0];
};

/* ---- Program contexts of network programs (UAPI, fixed layout) -----------
 * The verifier rewrites accesses to these by offset, so they are NOT CO-RE
 * relocated: each is a prefix of the UAPI struct, exactly as laid out there. */

/* Context of XDP programs. */
struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

enum xdp_action {
	XDP_ABORTED = 0,
	XDP_DROP = 1,
	XDP_PASS = 2,
	XDP_TX = 3,
	XDP_REDIRECT = 4,
};

/* Context of TC, TCX and cgroup skb programs (a prefix). */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol; /* network byte order, e.g. htons(0x0800) for IPv4 */
};

/* Context of perf_event programs; only passed on, never read here. */
struct bpf_perf_event_data;

/* ---- Kernel structs, CO-RE relocated -------------------------------------- */

#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)

struct task_struct {
	int pid;  /* thread id */
	int tgid; /* process id */
	struct task_struct *real_parent;
	struct css_set *cgroups; /* its cgroups; dfl_cgrp is the v2 one */
	char comm[16];
};

/* Common header of every tracepoint record (include/linux/trace_events.h). */
struct trace_entry {
	unsigned short type;
	unsigned char flags;
	unsigned char preempt_count;
	int pid;
};

/* Context of tracepoint/sched/sched_process_exec (see
 * /sys/kernel/tracing/events/sched/sched_process_exec/format). */
struct trace_event_raw_sched_process_exec {
	struct trace_entry ent;
	u32 __data_loc_filename; /* (length << 16) | offset of the filename */
	pid_t pid;
	pid_t old_pid;
	char __data[0];
};

/* ---- Catalog plugins (plugins/catalog/) ---------------------------------- */

/* Contexts of tracepoint/syscalls/sys_enter_* and sys_exit_*. */
struct trace_event_raw_sys_enter {
	struct trace_entry ent;
	long id;
	unsigned long args[6];
};

struct trace_event_raw_sys_exit {
	struct trace_entry ent;
	long id;
	long ret;
};

/* The cgroup v2 id of a socket or task: its cgroup's kernfs node id, the
 * number bpf_get_current_cgroup_id() and bpf_skb_cgroup_id() return. */
struct kernfs_node {
	u64 id;
};

struct cgroup {
	struct kernfs_node *kn;
};

struct sock_cgroup_data {
	struct cgroup *cgroup;
};

struct in6_addr {
	union {
		__u8 u6_addr8[16];
	} in6_u;
};

struct sock_common {
	unsigned short skc_family;
	__be32 skc_daddr;
	struct in6_addr skc_v6_daddr;
};

struct sock {
	struct sock_common __sk_common;
	u16 sk_protocol;
	struct sock_cgroup_data sk_cgrp_data;
};

/* Smoothed round-trip time, in microseconds << 3. */
struct tcp_sock {
	u32 srtt_us;
};

struct sk_buff {
	struct sock *sk;
};

struct css_set {
	struct cgroup *dfl_cgrp;
};

/* The kernel's drop reasons (include/net/dropreason-core.h). Their values
 * change between kernels, so programs read them with bpf_core_enum_value()
 * and never trust the numbers written here. */
enum skb_drop_reason {
	SKB_DROP_REASON_NOT_SPECIFIED = 2,
	SKB_DROP_REASON_NO_SOCKET = 3,
	SKB_DROP_REASON_SOCKET_FILTER = 6,
	SKB_DROP_REASON_NETFILTER_DROP = 10,
	SKB_DROP_REASON_SOCKET_RCVBUFF = 11,
	SKB_DROP_REASON_PROTO_MEM = 12,
	SKB_DROP_REASON_CPU_BACKLOG = 40,
	SKB_DROP_REASON_QDISC_DROP = 41,
};

#pragma clang attribute pop

#endif /* __CONDUCTOR_VMLINUX_H__ */
