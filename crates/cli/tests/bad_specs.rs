//! Bad input gives a clear error naming the cause, and leaves nothing
//! attached in the kernel.

use std::path::Path;

use conductor_api::ProgramAttach;
use conductor_kernel::object as bpf;
use conductor_test_support::*;

fn exec_tracepoint(name: &str) -> ProgramAttach {
    ProgramAttach {
        name: name.into(),
        tracepoint: Some("sched/sched_process_exec".into()),
        ..Default::default()
    }
}

#[test]
fn verifier_rejection_names_the_program_and_leaves_nothing_loaded() {
    if !require_root() {
        return;
    }
    let object = artifact("verifier_reject.bpf.o");
    let before = program_ids("good");

    // `good` is listed first, so it is loaded (and would be attached) before
    // `bad` fails: the failure must take it down too.
    let err = bpf::load(&object, &[exec_tracepoint("good"), exec_tracepoint("bad")])
        .expect_err("the verifier must reject `bad`");
    let msg = err.to_string();
    assert!(msg.contains("verifier rejected program \"bad\""), "{msg}");
    assert!(msg.contains("verifier log"), "{msg}");
    assert_eq!(
        program_ids("good"),
        before,
        "program `good` stayed loaded after the failure"
    );

    // The valid program alone loads and attaches; dropping it unloads it.
    let loaded = bpf::load(&object, &[exec_tracepoint("good")]).expect("`good` is valid");
    assert_eq!(program_ids("good").len(), before.len() + 1);
    drop(loaded);
    assert_eq!(program_ids("good"), before);
}

#[test]
fn bpf_object_errors_name_the_cause() {
    if !require_root() {
        return;
    }
    let object = artifact("verifier_reject.bpf.o");
    let msg = bpf::load(&object, &[exec_tracepoint("nope")])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("program \"nope\" is not in BPF object") && msg.contains("good"),
        "{msg}"
    );

    let raw = ProgramAttach {
        name: "good".into(),
        raw_tracepoint: Some("sched_process_exec".into()),
        ..Default::default()
    };
    let msg = bpf::load(&object, &[raw]).unwrap_err().to_string();
    assert!(msg.contains("cannot attach to a raw tracepoint"), "{msg}");

    let msg = bpf::load(Path::new("/nonexistent/x.bpf.o"), &[])
        .unwrap_err()
        .to_string();
    assert!(msg.contains("/nonexistent/x.bpf.o"), "{msg}");

    let not_elf = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(not_elf.path(), b"not an ELF file").unwrap();
    let msg = bpf::load(not_elf.path(), &[]).unwrap_err().to_string();
    assert!(msg.contains("cannot load BPF object"), "{msg}");
}

fn expect_failure(spec: &str, needles: &[&str]) {
    let (status, log) = run_to_exit(spec);
    assert!(!status.success(), "host accepted a bad spec; log:\n{log}");
    for n in needles {
        assert!(log.contains(n), "expected {n:?} in the error; log:\n{log}");
    }
}

#[test]
fn cli_rejects_bad_specs_with_the_cause() {
    let wasm = path_str(&artifact("exec_counter.wasm"));
    let bpf_obj = path_str(&artifact("exec_counter.bpf.o"));

    // Unknown field, named with its path.
    expect_failure(
        &format!("name: x\ncomponent: {wasm}\nlimits:\n  memory: 3\n"),
        &["limits", "unknown field `memory`"],
    );
    // Invalid value, named.
    expect_failure(
        &format!("name: Bad_Name\ncomponent: {wasm}\n"),
        &["name:", "DNS-1035"],
    );
    // Missing component file.
    expect_failure(
        "name: x\ncomponent: /nonexistent/plugin.wasm\n",
        &["cannot read component /nonexistent/plugin.wasm"],
    );
    // A file that is not a component at all.
    expect_failure(
        &format!("name: x\ncomponent: {bpf_obj}\n"),
        &["is not a WebAssembly component"],
    );
    // A component of another world.
    expect_failure(
        &format!(
            "name: x\ncomponent: {}\n",
            path_str(&artifact("testing_wrong_world.wasm"))
        ),
        &[
            "does not implement the world `plugin`",
            &conductor_api::wit::supported_ranges(),
        ],
    );
}

#[test]
fn cli_rejects_bad_bytecode_and_leaves_nothing_attached() {
    if !require_root() {
        return;
    }
    let wasm = path_str(&artifact("exec_counter.wasm"));
    let before = program_ids("good");
    expect_failure(
        &format!(
            r#"
name: rejected
component: {wasm}
bytecode:
  path: {}
  programs:
    - name: good
      tracepoint: sched/sched_process_exec
    - name: bad
      tracepoint: sched/sched_process_exec
"#,
            path_str(&artifact("verifier_reject.bpf.o"))
        ),
        &[
            "cannot load plugin \"rejected\"",
            "verifier rejected program \"bad\"",
        ],
    );
    assert_eq!(program_ids("good"), before);

    // A granted map the object does not have.
    expect_failure(
        &format!(
            "name: x\ncomponent: {wasm}\nbytecode:\n  path: {}\nmaps:\n  - name: nosuchmap\n",
            path_str(&artifact("exec_counter.bpf.o"))
        ),
        &["map \"nosuchmap\" is not in BPF object", "events"],
    );
    // An event source that is not a ring buffer or perf event array.
    expect_failure(
        &format!(
            "name: x\ncomponent: {wasm}\nbytecode:\n  path: {}\nmaps:\n  - name: rw_hash\n    events: {{}}\n",
            path_str(&artifact("test_maps.bpf.o"))
        ),
        &["only ring buffers and perf event arrays can be event sources"],
    );
    // An attach point that does not exist.
    expect_failure(
        &format!(
            "name: x\ncomponent: {wasm}\nbytecode:\n  path: {}\n  programs:\n    - name: handle_exec\n      tracepoint: sched/no_such_tracepoint\n",
            path_str(&artifact("exec_counter.bpf.o"))
        ),
        &["cannot attach program \"handle_exec\" to tracepoint sched/no_such_tracepoint"],
    );
}
