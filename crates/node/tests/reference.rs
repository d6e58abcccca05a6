//! docs/src/reference/metrics.md is what the host's metric registry renders.
//!
//! Regenerate with `cargo xtask docs`, or
//! `CONDUCTOR_BLESS=1 cargo test -p conductor-node --test reference`.

#[test]
fn metric_reference_is_current() {
    conductor_test_support::assert_generated_is_current(
        conductor_node::reference::PATH,
        &conductor_node::reference::markdown(),
        "conductor-node",
    );
}
