/*
 * exporter_maps.h - the one helper the exporter examples share: add to a
 * u64 counter in a hash map, creating it at zero first. ebpf_exporter's
 * examples have their own maps.bpf.h; this is ours, written for these
 * tests (none of ebpf_exporter's sources are copied or fetched).
 */
#pragma once

static __always_inline void count_in(void *map, const void *key, __u64 by)
{
	__u64 zero = 0, *v = bpf_map_lookup_elem(map, key);

	if (!v) {
		bpf_map_update_elem(map, key, &zero, BPF_NOEXIST);
		v = bpf_map_lookup_elem(map, key);
		if (!v)
			return;
	}
	__sync_fetch_and_add(v, by);
}
