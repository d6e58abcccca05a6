//! Test component built with wit-bindgen directly against the frozen
//! `conductor:plugin@0.1.0` (`crates/sdk/wit/v0.1.0/`), whose batch is a
//! list of `span` records: the host must still link and feed it.

wit_bindgen::generate!({
    path: "../../../crates/sdk/wit/v0.1.0",
    world: "plugin",
});

/// The records of a 0.1.0 batch, through its spans.
fn records(batch: &EventBatch) -> Result<Vec<&[u8]>, String> {
    batch
        .spans
        .iter()
        .map(|s| {
            batch
                .data
                .get(s.offset as usize..)
                .and_then(|d| d.get(..s.len as usize))
                .ok_or_else(|| format!("span {}+{} outside the batch", s.offset, s.len))
        })
        .collect()
}

/// 0.1.0 as first published has no other k8s function to call.
const K8S_EXTRA: fn(u64) = |_| {};

include!("../../legacy-common.rs");
