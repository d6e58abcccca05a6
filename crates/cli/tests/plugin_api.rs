//! The WIT host interfaces seen from real components on the real kernel:
//! map access through `maps`, and batched events from a ring buffer (raw
//! tracepoint) and a perf event array (tracepoint).

use std::time::Duration;

use conductor_test_support::*;

#[test]
fn maps_interface_reads_writes_iterates_and_checks_sizes() {
    if !require_root() {
        return;
    }
    let spec = format!(
        r#"
name: probe
component: {}
bytecode:
  path: {}
maps:
  - name: rw_hash
    access: readWrite
  - name: pcpu
    access: readWrite
"#,
        path_str(&artifact("testing_maps_probe.wasm")),
        path_str(&artifact("test_maps.bpf.o")),
    );
    let host = Host::start(&spec);
    let g = |name: &str| format!(r#"probe__{name}{{plugin="probe"}}"#);
    host.wait_for_metric(&g("lookup_42"), Duration::from_secs(15), |v| v == 420.0);
    let text = host.scrape();
    let cpus = conductor_kernel::maps::possible_cpus().unwrap() as f64;
    for (name, want) in [
        ("removed", 10.0),
        ("keys_seen", 90.0),
        // Keys 11..=100 remain, each holding key * 10.
        ("sum_of_values", 10.0 * ((11..=100).sum::<u32>() as f64)),
        ("create_existing_failed", 1.0),
        ("pcpu_cpus", cpus),
        ("sum_of_pcpu", 7.0 * cpus),
        ("rw_key_size", 4.0),
        ("rw_value_size", 8.0),
        ("wrong_size_rejected", 1.0),
    ] {
        assert_eq!(value(&text, &g(name)), Some(want), "{name}\n{text}");
    }
    assert!(host.stop().success());
}

#[test]
fn events_arrive_in_batches_from_ring_buffers_and_perf_arrays() {
    if !require_root() {
        return;
    }
    let spec = format!(
        r#"
name: echo
component: {}
bytecode:
  path: {}
  programs:
    - name: tp_exec_perf
      tracepoint: sched/sched_process_exec
    - name: raw_exec
      rawTracepoint: sched_process_exec
maps:
  - name: perf_events
    events: {{maxBatch: 16, perfPages: 8}}
  - name: raw_events
    events: {{maxBatch: 16}}
"#,
        path_str(&artifact("testing_event_echo.wasm")),
        path_str(&artifact("test_events.bpf.o")),
    );
    let host = Host::start(&spec);
    let bin = UniqueBinary::new("cndtrev");
    const N: usize = 40;
    bin.run(N);
    for source in ["perf_events", "raw_events"] {
        let series = format!(
            r#"echo__events_total{{plugin="echo",source="{source}",comm="{}"}}"#,
            bin.comm
        );
        let n = host.wait_for_metric(&series, Duration::from_secs(15), |v| v >= N as f64);
        assert_eq!(n, N as f64, "{source}: every exec exactly once");
    }
    let text = host.scrape();
    let max_batch = value(&text, r#"echo__max_batch{plugin="echo"}"#).unwrap();
    assert!(
        (1.0..=16.0).contains(&max_batch),
        "maxBatch not honoured: {max_batch}"
    );
    for source in ["perf_events", "raw_events"] {
        assert_eq!(
            value(
                &text,
                &format!(
                    r#"conductor_events_lost_total{{plugin="echo",source="{source}",reason="kernel"}}"#
                )
            ),
            Some(0.0),
            "{text}"
        );
    }
    assert!(host.stop().success());
}
