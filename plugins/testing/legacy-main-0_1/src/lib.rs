//! Test component declaring `conductor:plugin@0.1.0` with the contract as
//! main had it before 0.2.0 (`wit/plugin.wit`, kept verbatim): the batch
//! as two `u32` lists and the later `k8s` functions, both added under 0.1.0
//! without a version bump. The host must still link and feed it.

// The `on-events` export's flattened parameters (the batch's lists as
// pointer/length pairs) exceed clippy's default argument count.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "wit",
    world: "plugin",
});

/// The records of a batch, through its offsets and lengths.
fn records(batch: &EventBatch) -> Result<Vec<&[u8]>, String> {
    batch
        .offsets
        .iter()
        .zip(&batch.lengths)
        .map(|(&offset, &len)| {
            batch
                .data
                .get(offset as usize..)
                .and_then(|d| d.get(..len as usize))
                .ok_or_else(|| format!("record {offset}+{len} outside the batch"))
        })
        .collect()
}

/// A `k8s` function added under 0.1.0 after it was first published.
const K8S_EXTRA: fn(u64) = |cgroup| {
    let _ = conductor::plugin::k8s::cgroup_container_id(cgroup);
};

include!("../../legacy-common.rs");
