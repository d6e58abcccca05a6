//! Per-event cost of recording a labelled counter increment from a plugin.
//!
//! The `testing_counter_bench` component adds 1 to `hits{comm}` a configured
//! number of times per `tick` (16 label values in turn). We time ticks of
//! 0 and of N increments in the real runtime and registry; the difference
//! divided by N is the cost of one increment: the guest SDK call, the
//! component-model crossing with its label values, the series lookup and the
//! atomic add. For comparison, the same increment made by host code on the
//! registry directly.
//!
//! Needs `cargo xtask build` first (the component in target/plugins/).
//! Run: `cargo bench -p conductor-benches --bench metrics`

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor_node::metrics::Metrics;
use conductor_runtime::{Call, PluginHost, Runtime};

const N: usize = 100_000;
const ROUNDS: usize = 30;
const COMMS: [&str; 16] = [
    "bash", "ls", "git", "cat", "grep", "sed", "awk", "curl", "ssh", "make", "cc", "ld", "rustc",
    "cargo", "python3", "node",
];

fn artifacts() -> PathBuf {
    std::env::var_os("CONDUCTOR_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"))
}

/// Median wall time of one tick of a fresh instance doing `increments`.
fn tick_time(
    runtime: &Runtime,
    metrics: &Metrics,
    component: &Path,
    increments: usize,
) -> Duration {
    let prepared = runtime.prepare(component).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run `cargo xtask build` first)",
            component.display()
        )
    });
    let name = format!("bench-{increments}");
    let config = BTreeMap::from([("increments".to_owned(), increments.to_string())]);
    let host = Arc::new(PluginHost::new(
        &name,
        config,
        HashMap::new(),
        metrics.add_plugin(&name, 10_000),
    ));
    let timeout = Duration::from_secs(60);
    let mut instance = runtime
        .instantiate(&prepared, host, 64 << 20, timeout)
        .expect("instantiate");
    instance.call(Call::Init, timeout).expect("init");
    // Warm up: series created, caches and branch predictors settled.
    for _ in 0..3 {
        instance.call(Call::Tick, timeout).expect("tick");
    }
    let mut times: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            instance.call(Call::Tick, timeout).expect("tick");
            t.elapsed()
        })
        .collect();
    times.sort();
    times[ROUNDS / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let runtime = Runtime::new(None).expect("wasm runtime");
    let metrics = Metrics::new();
    let component = artifacts().join("testing_counter_bench.wasm");

    let empty = tick_time(&runtime, &metrics, &component, 0);
    let full = tick_time(&runtime, &metrics, &component, N);
    let per_increment = full.saturating_sub(empty).as_nanos() as f64 / N as f64;

    let host_side = metrics.add_plugin("direct", 10_000);
    let hits = host_side
        .counter("hits", "Increments recorded.", vec!["comm".into()])
        .expect("declare");
    let t = Instant::now();
    for i in 0..N {
        hits.add(vec![COMMS[i % COMMS.len()].to_owned()], 1)
            .expect("add");
    }
    let direct = t.elapsed().as_nanos() as f64 / N as f64;

    println!(
        "metrics: labelled counter increment (1 label, 16 series), median of {ROUNDS} ticks of {N}"
    );
    println!("  from a plugin (wasm call + registry): {per_increment:8.1} ns/increment");
    println!("  host code on the registry directly:   {direct:8.1} ns/increment");
    println!(
        "  empty tick (call overhead):           {:8.1} µs",
        empty.as_nanos() as f64 / 1e3
    );
}
