//! End to end on the real kernel: `conductor run` with the real
//! exec-counter plugin counts execs of a binary we run, scraped over HTTP.

use std::time::Duration;

use conductor_test_support::*;

#[test]
fn counts_execs_of_a_known_binary() {
    if !require_root() {
        return;
    }
    let host = Host::start(&exec_counter_spec("exec-counter"));
    // This host's own handle_exec: other tests of this binary run hosts
    // of the same plugin at the same time.
    let held = conductor_test_support::daemon::held_program_ids(host.pid());
    let ours: Vec<u32> = program_ids("handle_exec")
        .into_iter()
        .filter(|id| held.contains(id))
        .collect();
    assert!(
        !ours.is_empty(),
        "handle_exec is not loaded while the host runs"
    );
    let bin = UniqueBinary::new("cndtre2e");
    const N: usize = 25;
    bin.run(N);

    let series = format!(
        r#"exec_counter__execs_total{{plugin="exec-counter",comm="{}",namespace="",pod="",container=""}}"#,
        bin.comm
    );
    let count = host.wait_for_metric(&series, Duration::from_secs(15), |v| v >= N as f64);
    assert_eq!(count, N as f64, "each exec is counted exactly once");
    // No node name: Kubernetes metadata in local mode, said once; this
    // test's processes are the node's own (empty workload labels above).
    assert_eq!(
        host.log_text().matches("local mode").count(),
        1,
        "{}",
        host.log_text()
    );

    let text = host.scrape();
    assert!(
        value(
            &text,
            r#"exec_counter__distinct_commands{plugin="exec-counter"}"#
        )
        .unwrap()
            >= 1.0
    );
    // The host's own view of the same events.
    let received = value(
        &text,
        r#"conductor_events_received_total{plugin="exec-counter",source="events"}"#,
    )
    .unwrap();
    assert!(received >= N as f64, "{text}");
    assert_eq!(
        value(
            &text,
            r#"conductor_events_lost_total{plugin="exec-counter",source="events",reason="kernel"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&text, r#"conductor_plugin_up{plugin="exec-counter"}"#),
        Some(1.0)
    );

    // Ctrl-C (SIGINT) stops the host cleanly and detaches its programs.
    let status = host.stop();
    assert!(status.success(), "{status:?}");
    let left: Vec<u32> = program_ids("handle_exec")
        .into_iter()
        .filter(|id| ours.contains(id))
        .collect();
    assert!(
        left.is_empty(),
        "programs {left:?} still loaded after the host stopped"
    );
}

#[test]
fn second_start_uses_the_compile_cache() {
    if !require_root() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let spec = exec_counter_spec("exec-counter");
    let mut first = Host::start_with_cache(&spec, Some(cache.path()));
    let line = first
        .wait_for_log("plugin running", Duration::from_secs(30))
        .expect("plugin did not start");
    assert!(line.contains("from_cache=false"), "{line}");
    assert!(first.stop().success());

    let mut second = Host::start_with_cache(&spec, Some(cache.path()));
    let line = second
        .wait_for_log("plugin running", Duration::from_secs(30))
        .expect("plugin did not start");
    assert!(
        line.contains("from_cache=true"),
        "second start recompiled: {line}"
    );
    assert!(second.stop().success());
}

#[test]
fn example_spec_parses_and_names_built_artifacts() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/exec-counter.yaml");
    let specs = conductor_api::load_file(&path).expect("examples/exec-counter.yaml is valid");
    let base = path.parent().unwrap();
    let spec = &specs[0];
    assert_eq!(spec.name, "exec-counter");
    // The example's paths are where `cargo xtask build` puts the artifacts.
    for (path, built) in [
        (&spec.component, "exec_counter.wasm"),
        (&spec.bytecode.as_ref().unwrap().path, "exec_counter.bpf.o"),
    ] {
        let resolved = base.join(path);
        assert!(
            resolved.ends_with(format!("target/plugins/{built}")),
            "{}",
            resolved.display()
        );
        artifact(built);
    }
}
