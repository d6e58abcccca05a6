//! docs/src/reference/cli.md is what the clap definitions render.
//!
//! Regenerate with `cargo xtask docs`, or
//! `CONDUCTOR_BLESS=1 cargo test -p conductor-cli --test reference`.

#[test]
fn cli_reference_is_current() {
    conductor_test_support::assert_generated_is_current(
        conductor_cli::reference::PATH,
        &conductor_cli::reference::markdown(),
        "conductor-cli",
    );
}
