/*
 * usdt_section.bpf.c - one program in a libbpf `usdt/` section, which the
 * host does not support yet: loading it must fail naming the section
 * (crates/cli/tests/exporter.rs).
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

SEC("usdt/python3:python:function__entry")
int on_function_entry(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
