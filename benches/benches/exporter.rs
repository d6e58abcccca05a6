//! Scrape cost of the built-in ebpf_exporter with 10,000 series.
//!
//! Loads `exporter_syscalls.bpf.o` (from `cargo xtask build`) with an
//! ebpf_exporter config whose counter reads its `(cgroup id, syscall)` hash
//! map through `uint` and `uint` + `syscall` decoders, fills the map with
//! 10,000 keys from user space, and times, in the same run: reading and
//! decoding the map (`Exporter::collect`, labels cached after the first
//! scrape), and a whole `/metrics` exposition of the node's registry with
//! the exporter in it, against the same registry without it.
//!
//! Needs root. Run: `cargo bench -p conductor-benches --bench exporter`

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor_exporter::{Config, Exporter, ExporterSet, Kallsyms, SystemHost};
use conductor_node::metrics::Metrics;

const SERIES: u64 = 10_000;
const ROUNDS: usize = 21;

const CONFIG: &str = "
metrics:
  counters:
    - name: exporter_syscalls_total
      help: Syscalls entered, by cgroup id and syscall name
      labels:
        - name: cgroup_id
          size: 8
          decoders: [{name: uint}]
        - name: syscall
          size: 8
          decoders: [{name: uint}, {name: syscall}]
";

fn artifacts() -> PathBuf {
    std::env::var_os("CONDUCTOR_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"))
}

fn median(mut f: impl FnMut()) -> Duration {
    f(); // the first scrape fills the label cache
    let mut times: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[ROUNDS / 2]
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let object = artifacts().join("exporter_syscalls.bpf.o");
    let config = Config::parse("bench", CONFIG).expect("the bench config is valid");
    let host = Arc::new(SystemHost::new(Kallsyms::default(), None));
    let exporter = Exporter::load(&config, &object, host, |_| None).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run as root, after `cargo xtask build`)",
            object.display()
        )
    });
    let map = exporter.map("exporter_syscalls_total").expect("the map");
    for i in 0..SERIES {
        // Cgroup ids no real cgroup has, 20 syscalls each.
        let key = [(1u64 << 40) + i / 20, i % 20]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect::<Vec<u8>>();
        map.update(&key, &i.to_ne_bytes(), 0).expect("fill the map");
    }
    let set = Arc::new(ExporterSet::new(vec![Arc::new(exporter)]));
    let series: usize = set.exporters()[0]
        .collect()
        .iter()
        .map(|f| f.series.len())
        .sum();

    let collect = median(|| {
        std::hint::black_box(set.exporters()[0].collect());
    });
    let metrics = Metrics::new();
    let without = median(|| {
        std::hint::black_box(metrics.encode().unwrap());
    });
    let encoder = set.clone();
    metrics.add_builtin("ebpf_exporter", Arc::new(move |e| encoder.encode_into(e)));
    let mut bytes = 0;
    let with = median(|| {
        bytes = metrics.encode().unwrap().len();
    });
    let scrape = with.saturating_sub(without);
    println!("ebpf_exporter built-in, {series} series (10,000 filled + the live program's own):");
    println!(
        "  read + decode the map (collect):   {:>8.2} ms  ({:.0} ns/series)",
        collect.as_secs_f64() * 1e3,
        collect.as_nanos() as f64 / series as f64
    );
    println!(
        "  /metrics exposition, with it:      {:>8.2} ms  ({} bytes)",
        with.as_secs_f64() * 1e3,
        bytes
    );
    println!(
        "  /metrics exposition, without it:   {:>8.2} ms",
        without.as_secs_f64() * 1e3
    );
    println!(
        "  scrape cost of the config:         {:>8.2} ms  ({:.0} ns/series)",
        scrape.as_secs_f64() * 1e3,
        scrape.as_nanos() as f64 / series as f64
    );
}
