//! docs/src/reference/cli.md is what the clap definitions render.
//!
//! Regenerate with `cargo xtask docs`, or
//! `CONDUCTOR_BLESS=1 cargo test -p conductor-cli --test reference`.

use std::path::Path;

#[test]
fn cli_reference_is_current() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .join(conductor_cli::reference::PATH);
    let rendered = conductor_cli::reference::markdown();
    if std::env::var_os("CONDUCTOR_BLESS").is_some_and(|v| v != "0") {
        std::fs::write(&path, &rendered).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != rendered {
        let line = committed
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(rendered.lines().count()));
        panic!(
            "{} is out of date (first difference at line {}: committed {:?}, rendered {:?}).\n\
             Regenerate it with `cargo xtask docs` \
             (or `CONDUCTOR_BLESS=1 cargo test -p conductor-cli --test reference`) and commit it.",
            conductor_cli::reference::PATH,
            line + 1,
            committed.lines().nth(line).unwrap_or("<end of file>"),
            rendered.lines().nth(line).unwrap_or("<end of file>"),
        );
    }
}
