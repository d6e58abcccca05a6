//! A plugin author's workflow, outside this repository: `conductor new` in
//! a temporary directory, `conductor build` (clang and cargo for real),
//! the project's own test on real events, `conductor push` to a real
//! registry on loopback, `conductor sign`, and `conductor run oci://…`
//! under a `required` signature policy, where the real kernel counts the
//! execs the test causes exactly.
//!
//! The new project's component is a crate of its own, so cargo would build
//! its dependencies (wit-bindgen, the SDK) from scratch each time: every
//! build here shares one target directory, `target/author-plugins` (or
//! `$CONDUCTOR_AUTHOR_TARGET`), so only the first run of a machine pays
//! for that (about 2.5 minutes on the 2-core CI VM, under a second after).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use conductor_test_support::registry::*;
use conductor_test_support::*;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The cargo target directory every project built here shares.
fn shared_target() -> PathBuf {
    std::env::var_os("CONDUCTOR_AUTHOR_TARGET")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/author-plugins"))
}

/// The toolchain this repository pins (rust-toolchain.toml), which
/// `cargo xtask deps` gives the wasm32-wasip2 target; the project, outside
/// the repository, would otherwise get rustup's default.
fn toolchain() -> String {
    let text = std::fs::read_to_string(repo_root().join("rust-toolchain.toml")).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("channel = "))
        .map(|v| v.trim_matches('"').to_owned())
        .expect("rust-toolchain.toml names a channel")
}

/// `conductor <args>` in `dir`, with the shared target and the pinned toolchain.
fn author(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(conductor_bin());
    cmd.current_dir(dir)
        .args(args)
        .env("CARGO_TARGET_DIR", shared_target())
        .env("RUSTUP_TOOLCHAIN", toolchain())
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// `conductor new <name>` in a new temporary directory outside the
/// repository, with the SDK of this checkout.
fn new_project(name: &str) -> (tempfile::TempDir, PathBuf) {
    let parent = tempfile::tempdir().unwrap();
    let parent_path = parent.path().canonicalize().unwrap();
    assert!(
        !parent_path.starts_with(repo_root()),
        "the project must be outside the repository: {}",
        parent_path.display()
    );
    let sdk = repo_root().join("crates/sdk");
    let out = author(
        &parent_path,
        &["new", name, "--sdk-path", sdk.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "new failed: {}", stderr(&out));
    (parent, parent_path.join(name))
}

fn build(project: &Path, env: &[(&str, &str)]) -> Output {
    author(project, &["build"], env)
}

#[test]
fn new_build_push_sign_and_run_from_the_registry_counts_real_execs() {
    if !require_root() {
        return;
    }
    let (_parent, project) = new_project("my-probe");
    let out = build(&project, &[]);
    assert!(out.status.success(), "build failed:\n{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "WIT: conductor:plugin@{}",
            conductor_api::wit::CURRENT
        )),
        "{text}"
    );
    let package = project.join("target/conductor");
    for f in ["package.yaml", "my_probe.wasm", "my_probe.bpf.o"] {
        assert!(
            package.join(f).is_file(),
            "{f} is not in the package: {text}"
        );
    }

    // The project's own test: the plugin on real events, from its directory.
    let port = free_port().to_string();
    let out = Command::new("sh")
        .arg("tests/run-on-events.sh")
        .current_dir(&project)
        .env("CONDUCTOR", conductor_bin())
        .env("METRICS_PORT", &port)
        .env("CARGO_TARGET_DIR", shared_target())
        .env("RUSTUP_TOOLCHAIN", toolchain())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the project's test failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("ok: my-probe counted 5 execs"),
        "{}",
        stdout(&out)
    );

    // Push, sign, run by reference with signatures required.
    let reg = Registry::start();
    let reference = format!("oci://{}/authors/my-probe:0.1.0", reg.addr);
    let out = author(
        &project,
        &["push", "--package", "target/conductor", &reference],
        &[],
    );
    assert!(out.status.success(), "push failed: {}", stderr(&out));
    assert!(stdout(&out).contains("digest sha256:"), "{}", stdout(&out));
    let keys = tempfile::tempdir().unwrap();
    let prefix = keys.path().join("author");
    let password = [("COSIGN_PASSWORD", "author-password")];
    let out = author(
        &project,
        &[
            "generate-key-pair",
            "--output-key-prefix",
            prefix.to_str().unwrap(),
        ],
        &password,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let key = prefix.with_extension("key");
    let public = prefix.with_extension("pub");
    let out = author(
        &project,
        &["sign", &reference, "--key", key.to_str().unwrap()],
        &password,
    );
    assert!(out.status.success(), "sign failed: {}", stderr(&out));

    let mut host = Host::start_package(
        &reference,
        None,
        &[
            "--signature-policy",
            "required",
            "--trusted-key",
            public.to_str().unwrap(),
        ],
    );
    let line = host
        .wait_for_log("package resolved", Duration::from_secs(5))
        .unwrap();
    assert!(line.contains("signature=verified"), "{line}");
    let bin = UniqueBinary::new("cndtrau");
    const N: usize = 7;
    bin.run(N);
    let series = format!(
        r#"my_probe__execs_total{{plugin="my-probe",comm="{}"}}"#,
        bin.comm
    );
    let count = host.wait_for_metric(&series, Duration::from_secs(15), |v| v >= N as f64);
    assert_eq!(count, N as f64, "{}", host.scrape());
    assert!(host.stop().success());
}

#[test]
fn build_refuses_programs_and_maps_the_object_lacks_and_says_how_to_get_clang() {
    let (_parent, project) = new_project("checked");
    let yaml = project.join("package.yaml");
    let original = std::fs::read_to_string(&yaml).unwrap();

    std::fs::write(
        &yaml,
        original.replace("name: handle_exec", "name: handle_exek"),
    )
    .unwrap();
    let out = build(&project, &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(r#"attaches program "handle_exek""#)
            && err.contains("its programs: handle_exec"),
        "{err}"
    );

    std::fs::write(&yaml, original.replace("- name: events", "- name: evnts")).unwrap();
    let err = stderr(&build(&project, &[]));
    assert!(
        err.contains(r#"grants map "evnts""#) && err.contains("its maps: events, events_lost"),
        "{err}"
    );

    std::fs::write(&yaml, &original).unwrap();
    let out = build(&project, &[("CONDUCTOR_CLANG", "/nonexistent/clang")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("apt-get install clang libbpf-dev"), "{err}");
    // Nothing half-built was left as a package.
    assert!(!project.join("target/conductor/package.yaml").exists());

    // The C and the spec agree again: it builds, its record checked.
    let out = build(&project, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("has no BTF"), "{}", stderr(&out));

    // A Rust record that disagrees with the C struct is refused with both
    // layouts named (pid widened to 8 bytes over C's pid + _pad).
    let lib = project.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    let widened = source.replace("pid: u32, _pad: u32,", "pid: u64,");
    assert_ne!(
        widened, source,
        "the template's record changed: update this test"
    );
    std::fs::write(&lib, widened).unwrap();
    let out = build(&project, &[]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("do not match the C structs") && err.contains("Event") && err.contains("pid"),
        "{err}"
    );
    std::fs::write(&lib, source).unwrap();
}

#[test]
fn new_refuses_bad_names_and_existing_directories() {
    let (parent, _project) = new_project("taken");
    let out = author(parent.path(), &["new", "taken"], &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));
    let out = author(parent.path(), &["new", "Bad_Name"], &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not a plugin name"),
        "{}",
        stderr(&out)
    );
    assert!(!parent.path().join("Bad_Name").exists());
}
