//! The stock gRPC clients from PyPI and npm (Python's grpcio, Node's
//! grpc-js) that `cargo xtask deps` installs into `target/clients`, with
//! their scripts in `crates/cli/tests/clients`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// `target/clients`, or `CONDUCTOR_CLIENTS`.
fn installed_dir() -> PathBuf {
    std::env::var_os("CONDUCTOR_CLIENTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/clients"))
}

/// The client scripts and their pinned versions.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../cli/tests/clients")
}

/// The directory holding `conductor/v1/conductor.proto`.
pub fn proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/proto")
}

/// A client toolchain that is missing: under CI a failure, never a silent
/// skip; on a developer machine the test says why it skips.
fn missing(what: &str, looked: &Path) -> Option<Command> {
    let why = format!(
        "{what} is not installed at {}: run `cargo xtask deps` (it installs the pinned clients from PyPI and npm)",
        looked.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why} (CI=true forbids skipping)");
    }
    eprintln!("SKIPPED: {why}");
    None
}

/// `python` of the venv with grpcio, running `grpc_client.py`; `None` (a
/// skip) if it is not installed and this is not CI.
pub fn python() -> Option<Command> {
    let python = installed_dir().join("python/bin/python");
    if !python.is_file() {
        return missing("Python's grpcio", &python);
    }
    let mut cmd = Command::new(python);
    cmd.arg(scripts_dir().join("grpc_client.py"));
    Some(cmd)
}

/// `node` with grpc-js on its module path, running `grpc_client.js`.
pub fn node() -> Option<Command> {
    let modules = installed_dir().join("node/node_modules");
    if !modules.join("@grpc/grpc-js").is_dir() {
        return missing("Node's @grpc/grpc-js", &modules);
    }
    let mut cmd = Command::new("node");
    cmd.env("NODE_PATH", modules)
        .arg(scripts_dir().join("grpc_client.js"));
    Some(cmd)
}

/// Run a client script with its arguments, capturing its output.
pub fn run(mut cmd: Command, args: &[&str]) -> Output {
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}
