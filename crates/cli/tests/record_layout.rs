//! The record layout written once: the host compares each event record a
//! component declares (`conductor_sdk::record!`) with the C struct of the
//! same name in the BTF of the plugin's BPF object, on the real kernel.

use std::time::Duration;

use conductor_test_support::*;

/// A spec running `component` over `object`'s `program` at `attach`.
fn spec(name: &str, component: &str, object: &str, program: &str, attach: &str) -> String {
    format!(
        r#"
name: {name}
component: {}
bytecode:
  path: {}
  programs:
    - name: {program}
      {attach}
maps:
  - name: events
    events: {{maxBatch: 64}}
"#,
        path_str(&artifact(component)),
        path_str(&artifact(object)),
    )
}

#[test]
fn a_record_that_disagrees_with_its_c_struct_is_refused_naming_both_layouts() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        spec(
            "bad-record",
            "testing_bad_record.wasm",
            "exec_counter.bpf.o",
            "handle_exec",
            "tracepoint: sched/sched_process_exec",
        ),
    )
    .unwrap();
    let out = std::process::Command::new(conductor_bin())
        .args(["run", "--metrics-addr", "127.0.0.1:0"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the mismatch was not refused: {err}");
    for needle in [
        "event record ExecEvent of the component does not match struct exec_event of the BPF object",
        "field uid: Rust offset 16 size 8, C offset 16 size 4",
        "field comm: Rust offset 24 size 16, C offset 24 size 16",
        // Both layouts in full.
        "Rust: ExecEvent (40 bytes): cgroup_id @0 (8), pid @8 (4), ppid @12 (4), uid @16 (8), comm @24 (16)",
        "C:    exec_event (40 bytes): cgroup_id @0 (8), pid @8 (4), ppid @12 (4), uid @16 (4), _pad @20 (4), comm @24 (16)",
        "exec_counter.bpf.o",
    ] {
        if needle.starts_with("field comm") {
            assert!(!err.contains(needle), "comm agrees, yet is reported: {err}");
        } else {
            assert!(err.contains(needle), "missing {needle:?} in:\n{err}");
        }
    }
    // Refused before the kernel was touched (other tests load handle_exec
    // concurrently, so the programs loaded are not compared here).
    assert!(!err.contains("verifier"), "{err}");
}

#[test]
fn exec_counter_matches_its_c_struct() {
    if !require_root() {
        return;
    }
    let mut host = Host::start_with(
        &exec_counter_spec("exec-counter"),
        None,
        &[],
        &[("RUST_LOG", "conductor_node=debug,info")],
    );
    let line = host
        .wait_for_log("event record ExecEvent matches", Duration::from_secs(30))
        .unwrap_or_else(|| panic!("no match logged:\n{}", host.log_text()));
    assert!(line.contains("struct exec_event"), "{line}");
    assert!(
        !host.log_text().contains("is not checked"),
        "{}",
        host.log_text()
    );
    assert!(host.stop().success());
}

#[test]
fn a_record_without_btf_is_warned_about_and_the_plugin_runs() {
    if !require_root() {
        return;
    }
    // exec_producer.bpf.o writes the same records into a ring called
    // `events` but has no CONDUCTOR_RECORD: nothing to check against.
    let spec = spec(
        "unchecked",
        "testing_bad_record.wasm",
        "exec_producer.bpf.o",
        "trigger",
        "rawTracepoint: sys_enter",
    );
    let mut host = Host::start(&spec);
    let warned = host
        .wait_for_log(
            "event record ExecEvent is not checked",
            Duration::from_secs(30),
        )
        .unwrap_or_else(|| panic!("no warning:\n{}", host.log_text()));
    assert!(warned.contains("CONDUCTOR_RECORD"), "{warned}");
    assert!(
        host.log_text()
            .contains("event record NotInBtf is not checked")
    );
    assert!(
        host.wait_for_log("bad-record running", Duration::from_secs(30))
            .is_some()
    );
    assert!(host.stop().success());
}
