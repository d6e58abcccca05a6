//! Components built against older versions of the WIT contract still run,
//! next to current ones, on real kernel events: one built against the
//! frozen `conductor:plugin@0.1.0` (batch as a list of spans), one that
//! declares 0.1.0 with the later two-list batch (as main built it before
//! 0.2.0), and one built against the frozen 0.2.0, an older patch release
//! of the current range. All count the exec_counter BPF object's records
//! by command.

use std::time::Duration;

use conductor_api::wit;
use conductor_test_support::*;

fn legacy_spec(name: &str, component: &str) -> String {
    format!(
        r#"
name: {name}
component: {}
bytecode:
  path: {}
  programs:
    - name: handle_exec
      tracepoint: sched/sched_process_exec
maps:
  - name: events
    events: {{maxBatch: 8}}
config: {{a: "1", b: "2", c: "3"}}
"#,
        path_str(&artifact(component)),
        path_str(&artifact("exec_counter.bpf.o")),
    )
}

#[test]
fn components_of_both_0_1_layouts_run_next_to_current_ones() {
    if !require_root() {
        return;
    }
    let spec = [
        legacy_spec("spans", "testing_legacy_v0_1.wasm"),
        legacy_spec("lists", "testing_legacy_main_0_1.wasm"),
        legacy_spec("frozen", "testing_legacy_v0_2.wasm"),
        exec_counter_spec("current"),
    ]
    .join("---\n");
    let host = Host::start(&spec);
    for name in ["spans", "lists"] {
        let said = format!(
            "built against {}@0.1.0, linked through the compatibility layer",
            wit::PACKAGE
        );
        assert!(
            host.log_text()
                .lines()
                .any(|l| l.contains(&said)
                    && l.contains(&format!("legacy_{}", component_stem(name)))),
            "{name}: no compatibility notice; log:\n{}",
            host.log_text()
        );
    }
    let bin = UniqueBinary::new("cndtrwit");
    // More than one batch (maxBatch: 8) per source.
    const N: usize = 30;
    bin.run(N);
    let current = format!(
        r#"current__execs_total{{plugin="current",comm="{}",namespace="",pod="",container=""}}"#,
        bin.comm
    );
    let n = host.wait_for_metric(&current, Duration::from_secs(15), |v| v >= N as f64);
    assert_eq!(n, N as f64, "current: every exec exactly once");
    // 0.2.0 links as it is, without the compatibility layer.
    assert!(
        !host
            .log_text()
            .lines()
            .any(|l| l.contains("compatibility layer") && l.contains("legacy_v0_2")),
        "{}",
        host.log_text()
    );
    for name in ["spans", "lists", "frozen"] {
        let series = format!(
            r#"{name}__events_total{{plugin="{name}",comm="{}"}}"#,
            bin.comm
        );
        let n = host.wait_for_metric(&series, Duration::from_secs(15), |v| v >= N as f64);
        assert_eq!(n, N as f64, "{name}: every exec exactly once");
    }
    let text = host.scrape();
    let g =
        |name: &str, metric: &str| value(&text, &format!(r#"{name}__{metric}{{plugin="{name}"}}"#));
    for name in ["spans", "lists", "frozen"] {
        // Counters never added to have no series.
        assert_eq!(g(name, "bad_records_total"), None, "{name}\n{text}");
        assert_eq!(g(name, "lost_total"), None, "{name}\n{text}");
        assert_eq!(g(name, "config_entries"), Some(3.0), "{name}\n{text}");
        assert_eq!(g(name, "map_refused"), Some(1.0), "{name}\n{text}");
        let calls = g(name, "k8s_calls_total").unwrap_or(0.0);
        assert!(calls >= N as f64, "{name}: k8s lookups {calls}\n{text}");
        assert_eq!(
            value(&text, &format!(r#"conductor_plugin_up{{plugin="{name}"}}"#)),
            Some(1.0),
            "{name}\n{text}"
        );
    }
    assert!(host.stop().success());
}

/// The component file stem each plugin of the test runs.
fn component_stem(name: &str) -> &'static str {
    match name {
        "spans" => "v0_1",
        _ => "main_0_1",
    }
}
