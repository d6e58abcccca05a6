//! Test component built with wit-bindgen directly against the frozen
//! `conductor:plugin@0.2.0` (`crates/sdk/wit/v0.2.0/`): the host, which
//! links the newest 0.2.x, must serve it through semver matching.

// The `on-events` export's flattened parameters (the batch's lists as
// pointer/length pairs) exceed clippy's default argument count.
#![allow(clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../../../crates/sdk/wit/v0.2.0",
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

/// A `k8s` function of 0.2.0 beyond those of 0.1.0 as first published.
const K8S_EXTRA: fn(u64) = |cgroup| {
    let _ = conductor::plugin::k8s::cgroup_container_id(cgroup);
};

include!("../../legacy-common.rs");
