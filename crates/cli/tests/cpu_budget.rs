//! `limits.cpu` on the real kernel: a plugin that burns CPU in many short
//! calls is held to its share, measured from the kernel's own per-thread
//! accounting, while an unlimited neighbour in the same daemon keeps
//! running. Bounds are ratios (to the wall time and to the neighbour's
//! share in the same run), never absolute durations.

use std::time::{Duration, Instant};

use conductor_test_support::daemon::*;
use conductor_test_support::*;

/// The budget of the capped plugin, in millicores.
const CAPPED_MILLICORES: u32 = 50;
/// Spins per tick: milliseconds of CPU per call, well inside the call
/// timeout even on a loaded machine.
const SPINS: u64 = 10_000_000;

fn spin_spec(name: &str, cpu: Option<u32>) -> String {
    let limits = match cpu {
        Some(m) => format!("limits: {{cpu: {m}, callTimeoutMs: 600000}}\n"),
        None => "limits: {callTimeoutMs: 600000}\n".to_owned(),
    };
    format!(
        "name: {name}\ncomponent: {}\nconfig: {{spins: \"{SPINS}\"}}\ntickIntervalMs: 10\n{limits}",
        path_str(&artifact("testing_spin.wasm"))
    )
}

/// Nanoseconds the thread named `plugin-<plugin>` of process `pid` ran,
/// from `/proc/<pid>/task/<tid>/schedstat` (the scheduler's own count).
fn thread_cpu_ns(pid: i32, plugin: &str) -> u64 {
    let comm = format!("plugin-{plugin}");
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if name.trim_end() == comm {
            let stat = std::fs::read_to_string(dir.join("schedstat")).unwrap();
            return stat
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .expect("schedstat starts with the time on CPU in ns");
        }
    }
    panic!("no thread {comm:?} in process {pid}");
}

fn ticks(d: &Daemon, plugin: &str) -> f64 {
    value(
        &d.scrape(),
        &format!(
            "conductor_plugin_call_duration_seconds_count{{plugin=\"{plugin}\",call=\"tick\"}}"
        ),
    )
    .unwrap_or(0.0)
}

#[test]
fn a_cpu_budget_holds_a_busy_plugin_to_its_share_while_its_neighbour_runs() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    d.load_by_hand(&spin_spec("free", None));
    d.load_by_hand(&spin_spec("capped", Some(CAPPED_MILLICORES)));
    // Both have run some ticks (past the capped one's saved-up burst).
    d.wait_for_metric(
        "conductor_plugin_call_duration_seconds_count{plugin=\"capped\",call=\"tick\"}",
        Duration::from_secs(60),
        |v| v >= 3.0,
    );
    d.wait_for_metric(
        "conductor_plugin_call_duration_seconds_count{plugin=\"free\",call=\"tick\"}",
        Duration::from_secs(60),
        |v| v >= 3.0,
    );

    let pid = d.pid();
    let (free0, capped0) = (thread_cpu_ns(pid, "free"), thread_cpu_ns(pid, "capped"));
    let (free_ticks0, capped_ticks0) = (ticks(&d, "free"), ticks(&d, "capped"));
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let wall = started.elapsed().as_nanos() as f64;
    let free = (thread_cpu_ns(pid, "free") - free0) as f64 / wall;
    let capped = (thread_cpu_ns(pid, "capped") - capped0) as f64 / wall;
    let (free_ticks, capped_ticks) = (
        ticks(&d, "free") - free_ticks0,
        ticks(&d, "capped") - capped_ticks0,
    );
    let budget = f64::from(CAPPED_MILLICORES) / 1000.0;
    eprintln!(
        "CPU share over {:.1} s: capped ({CAPPED_MILLICORES}m) {capped:.3} in {capped_ticks} ticks, unlimited {free:.3} in {free_ticks} ticks",
        wall / 1e9
    );

    // The capped plugin stays within its budget (twice it, for the burst
    // and the last call, paid back after the window), ...
    assert!(
        capped <= 2.0 * budget,
        "capped plugin used {capped:.3} CPUs, budget {budget}; log:\n{}",
        d.log_text()
    );
    // ... far below what the same plugin takes without a budget, ...
    assert!(
        capped * 2.0 <= free,
        "capped {capped:.3} vs unlimited {free:.3} CPUs: the budget made no difference"
    );
    // ... yet it is throttled, not stopped, and its neighbour keeps going.
    assert!(capped_ticks >= 1.0, "the capped plugin made no progress");
    assert!(free_ticks > capped_ticks, "{free_ticks} vs {capped_ticks}");
    let text = d.scrape();
    let throttled = value(
        &text,
        "conductor_plugin_cpu_throttled_seconds_total{plugin=\"capped\"}",
    )
    .expect("a throttled-time series for the capped plugin");
    assert!(throttled > 0.0, "{throttled}");
    assert_eq!(
        value(
            &text,
            "conductor_plugin_cpu_throttled_seconds_total{plugin=\"free\"}"
        ),
        Some(0.0)
    );
    // The host's own measure of the plugin's CPU agrees in kind.
    let measured = value(
        &text,
        "conductor_plugin_cpu_seconds_total{plugin=\"capped\"}",
    )
    .expect("a CPU series for the capped plugin");
    assert!(measured > 0.0, "{measured}");
    for p in d.list() {
        assert_eq!(phase(&p), conductor_api::v1::Phase::Running, "{p:?}");
    }
}
