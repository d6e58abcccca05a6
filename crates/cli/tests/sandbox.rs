//! Faulty plugins are contained: a plugin that traps, loops forever, grows
//! memory without bound, returns an error or reaches for a map it was not
//! granted is stopped or refused, reported in the log and in metrics, and restarted with
//! backoff, while the host and a healthy plugin beside it keep working.

use std::time::Duration;

use conductor_test_support::*;

fn tick_plugin(name: &str, artifact_name: &str, extra: &str) -> String {
    format!(
        r#"
name: {name}
component: {}
tickIntervalMs: 50
limits:
  memoryMib: 32
  callTimeoutMs: 200
{extra}
"#,
        path_str(&artifact(artifact_name))
    )
}

#[test]
fn faulty_plugins_are_contained_and_neighbours_keep_working() {
    if !require_root() {
        return;
    }
    let spec = [
        tick_plugin(
            "steady",
            "testing_steady.wasm",
            "config:\n  greeting: hello-from-spec",
        ),
        tick_plugin("trap", "testing_trap.wasm", ""),
        tick_plugin("spin", "testing_spin.wasm", ""),
        tick_plugin("memhog", "testing_memhog.wasm", ""),
        tick_plugin("failing", "testing_trap.wasm", "config:\n  mode: error"),
    ]
    .join("\n---\n");
    let mut host = Host::start(&spec);

    // Each fault is classified and counted, and each faulty plugin is
    // restarted (backoff starts at 1 s and doubles).
    for (plugin, kind) in [
        ("trap", "trap"),
        ("spin", "timeout"),
        ("memhog", "memory"),
        ("failing", "error"),
    ] {
        host.wait_for_metric(
            &format!(r#"conductor_plugin_faults_total{{plugin="{plugin}",kind="{kind}"}}"#),
            Duration::from_secs(20),
            |v| v >= 2.0,
        );
        host.wait_for_metric(
            &format!(r#"conductor_plugin_restarts_total{{plugin="{plugin}"}}"#),
            Duration::from_secs(20),
            |v| v >= 1.0,
        );
    }

    // The healthy neighbour kept ticking the whole time, was never faulted,
    // and its logs reached the host's log tagged with its name.
    let ticks_before = value(&host.scrape(), r#"steady__ticks_total{plugin="steady"}"#).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let text = host.scrape();
    let ticks_after = value(&text, r#"steady__ticks_total{plugin="steady"}"#).unwrap();
    assert!(
        ticks_after > ticks_before + 3.0,
        "steady stalled: {ticks_before} -> {ticks_after}"
    );
    assert_eq!(
        value(&text, r#"conductor_plugin_up{plugin="steady"}"#),
        Some(1.0)
    );
    assert!(
        value(&text, r#"conductor_plugin_faults_total{plugin="steady""#).is_none(),
        "{text}"
    );
    assert_eq!(
        value(&text, r#"conductor_plugin_restarts_total{plugin="steady"}"#),
        Some(0.0)
    );

    let started = host
        .wait_for_log("steady started: hello-from-spec", Duration::from_secs(5))
        .expect("plugin log line with config value");
    assert!(
        started.contains("plugin=steady") || started.contains("plugin=\"steady\""),
        "{started}"
    );
    let stdout = host
        .wait_for_log("stream=\"stdout\"", Duration::from_secs(5))
        .or_else(|| host.wait_for_log("stream=stdout", Duration::from_secs(1)))
        .expect("plugin stdout routed to the log");
    assert!(stdout.contains("steady"), "{stdout}");

    // The faults were reported with their cause.
    let log = host.log_text();
    assert!(
        log.contains("plugin=spin") && log.contains("fault=\"timeout\"")
            || log.contains("fault=timeout"),
        "{log}"
    );
    assert!(log.contains("memory limit of 32 MiB"), "{log}");
    assert!(log.contains("testing-trap: failing on purpose"), "{log}");

    // The memory hog's memory stayed under its cap.
    let mem = value(&text, r#"conductor_plugin_memory_bytes{plugin="memhog"}"#).unwrap();
    assert!(mem <= (32u64 << 20) as f64, "memhog holds {mem} bytes");

    assert!(host.stop().success());
}

#[test]
fn ungranted_and_read_only_maps_are_typed_errors_not_traps() {
    if !require_root() {
        return;
    }
    let spec = format!(
        r#"
name: sneaky
component: {}
bytecode:
  path: {}
maps:
  - name: ro_hash
    access: read
tickIntervalMs: 50
"#,
        path_str(&artifact("testing_sneaky.wasm")),
        path_str(&artifact("test_maps.bpf.o")),
    );
    let host = Host::start(&spec);
    let attempts = |op: &str, outcome: &str| {
        format!(r#"sneaky__attempts_total{{plugin="sneaky",op="{op}",outcome="{outcome}"}}"#)
    };
    host.wait_for_metric(
        &attempts("open_secret", "not-granted"),
        Duration::from_secs(10),
        |v| v == 1.0,
    );
    let text = host.scrape();
    assert_eq!(
        value(&text, &attempts("update_ro_hash", "read-only")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &attempts("lookup_ro_hash", "ok")),
        Some(1.0),
        "{text}"
    );
    // Still running, never faulted.
    host.wait_for_metric(
        r#"sneaky__ticks_total{plugin="sneaky"}"#,
        Duration::from_secs(5),
        |v| v >= 3.0,
    );
    let text = host.scrape();
    assert!(
        value(&text, r#"conductor_plugin_faults_total{plugin="sneaky""#).is_none(),
        "{text}"
    );
    assert!(host.stop().success());
}
