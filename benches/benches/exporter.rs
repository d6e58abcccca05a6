//! The built-in ebpf_exporter: scrape cost with 10,000 series, and events
//! per second through a `perf_event_array` counter against a wasm plugin
//! doing the same counting, in one run.
//!
//! Scrape: loads `exporter_syscalls.bpf.o` (from `cargo xtask build`) with an
//! ebpf_exporter config whose counter reads its `(cgroup id, syscall)` hash
//! map through `uint` and `uint` + `syscall` decoders, fills the map with
//! 10,000 keys from user space, and times, in the same run: reading and
//! decoding the map (`Exporter::collect`, labels cached after the first
//! scrape), and a whole `/metrics` exposition of the node's registry with
//! the exporter in it, against the same registry without it.
//!
//! Perf events: `exporter_perf_getppid.bpf.o` sends `REPEAT` perf events
//! (an 8-byte cgroup id each) per getppid() call; a thread pinned to CPU 0
//! calls getppid() for `SECS` seconds. Consumers, one after the other,
//! each with a fresh load of the object: the built-in exporter's
//! `perf_event_array` counter (`uint`-decoded cgroup label; its reader
//! thread pinned to CPU 1) and `testing_perf_count.wasm` (the same count
//! by cgroup id, in the host's plugin thread pinned to CPU 1, batches of up
//! to 4096). Both use 1024-page per-CPU buffers, as ebpf_exporter does.
//! Printed per consumer: events handled per second (from the first call
//! to the last event read), samples the kernel dropped (buffer full)
//! beside it, and the consumer thread's CPU time per event; then the
//! ratios. The producer is as fast as it can be, so drops are expected:
//! this measures the consumer's throughput, not a zero-loss rate.
//!
//! Needs root. Run: `cargo bench -p conductor-benches --bench exporter`

#[path = "common/threads.rs"]
mod threads;
use threads::{find_thread, gettid, thread_cpu, wait_until};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use conductor_api::{GlobalValue, PluginSpec};
use conductor_exporter::{Config, Exporter, ExporterSet, Kallsyms, SystemHost};
use conductor_node::metrics::{LostLabels, Metrics, SourceLabels};
use conductor_node::plugin::Plugin;
use conductor_runtime::Runtime;

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

fn main() -> Result<()> {
    // `cargo bench` passes --bench; nothing to parse.
    scrape();
    perf_events()
}

fn scrape() {
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

/// Perf events per getppid() call.
const REPEAT: u64 = 64;
/// Seconds the producer runs.
const SECS: u64 = 3;
const PRODUCER_CPU: usize = 0;
const CONSUMER_CPU: usize = 1;
const PERF_METRIC: &str = "exporter_getppid_events_total";

const PERF_CONFIG: &str = "
metrics:
  counters:
    - name: exporter_getppid_events_total
      help: Calls of getppid(), by cgroup id, counted from perf events
      perf_event_array: true
      labels:
        - name: cgroup
          size: 8
          decoders: [{name: uint}]
";

/// One consumer's run.
struct Outcome {
    /// Events the producer sent (this process's calls × REPEAT).
    sent: u64,
    /// Events the consumer read (any process's: others calling getppid
    /// add a few).
    handled: u64,
    /// Samples the kernel dropped (buffer full).
    dropped: u64,
    elapsed: Duration,
    consumer_cpu: Duration,
}

impl Outcome {
    fn rate(&self) -> f64 {
        self.handled as f64 / self.elapsed.as_secs_f64()
    }
    fn cpu_per_event(&self) -> f64 {
        self.consumer_cpu.as_nanos() as f64 / self.handled.max(1) as f64
    }
    fn print(&self, name: &str) {
        println!(
            "  {name:<28} {:>6.3} M events/s  dropped {:>5.1} % ({} of {} sent)  consumer CPU {:>5.0} ns/event",
            self.rate() / 1e6,
            100.0 * self.dropped as f64 / self.sent.max(1) as f64,
            self.dropped,
            self.sent,
            self.cpu_per_event()
        );
    }
}

/// Call getppid() on a thread pinned to the producer CPU for `SECS`;
/// returns when it started and how many calls it made.
fn produce() -> (Instant, u64) {
    std::thread::spawn(|| {
        pin(gettid(), PRODUCER_CPU);
        let started = Instant::now();
        let until = started + Duration::from_secs(SECS);
        let mut calls = 0u64;
        while Instant::now() < until {
            for _ in 0..64 {
                // SAFETY: getppid has no arguments and cannot fail.
                unsafe { libc::getppid() };
            }
            calls += 64;
        }
        (started, calls)
    })
    .join()
    .expect("the producer thread")
}

fn perf_events() -> Result<()> {
    let object = artifacts().join("exporter_perf_getppid.bpf.o");
    let globals = BTreeMap::from([("repeat".to_owned(), GlobalValue::Unsigned(REPEAT))]);
    println!(
        "\nperf_event_array counter, {REPEAT} events per getppid() call for {SECS} s (producer on CPU {PRODUCER_CPU}, consumer on CPU {CONSUMER_CPU}):"
    );

    let exporter = {
        let config = Config::parse("bench_perf", PERF_CONFIG)?;
        let host = Arc::new(SystemHost::new(Kallsyms::default(), None));
        Exporter::load_with_globals(&config, &object, host, |_| None, &globals).with_context(
            || {
                format!(
                    "{} (run as root, after `cargo xtask build`)",
                    object.display()
                )
            },
        )?
    };
    // The reader thread is named (by itself) once it runs.
    let reader = &format!("perf-{PERF_METRIC}")[..15];
    wait_until(Duration::from_secs(10), || find_thread(reader).is_ok())?;
    let tid = find_thread(reader)?;
    pin(tid, CONSUMER_CPU);
    let (events0, dropped0) = exporter
        .perf_events(PERF_METRIC)
        .context("the perf counter")?;
    let cpu0 = thread_cpu(tid)?;
    let (started, calls) = produce();
    let sent = calls * REPEAT;
    let seen = || {
        let (e, d) = exporter.perf_events(PERF_METRIC).unwrap_or_default();
        (e - events0, d - dropped0)
    };
    wait_until(Duration::from_secs(120), || {
        let (e, d) = seen();
        e + d >= sent
    })
    .context("the exporter did not read every event")?;
    let elapsed = started.elapsed();
    let consumer_cpu = thread_cpu(tid)? - cpu0;
    let (handled, dropped) = seen();
    let series: u64 = exporter
        .collect()
        .iter()
        .filter(|f| f.name == format!("ebpf_exporter_{PERF_METRIC}"))
        .flat_map(|f| &f.series)
        .map(|(_, v)| match v {
            conductor_exporter::exporter::Value::Counter(n) => *n,
            _ => 0,
        })
        .sum();
    if series != handled + events0 {
        bail!("the counter's series add up to {series}, but {handled} events were read");
    }
    let builtin = Outcome {
        sent,
        handled,
        dropped,
        elapsed,
        consumer_cpu,
    };
    drop(exporter);
    builtin.print("built-in exporter");

    let plugin = plugin_run(&object)?;
    plugin.print("wasm plugin (perf-count)");
    println!(
        "  ratios built-in / plugin: events/s {:.2}x, CPU per event {:.2}x (the machine is shared: compare within a run)",
        builtin.rate() / plugin.rate(),
        builtin.cpu_per_event() / plugin.cpu_per_event()
    );
    Ok(())
}

/// The same count by `testing_perf_count.wasm` in the host's plugin thread.
fn plugin_run(object: &Path) -> Result<Outcome> {
    let cache = tempfile::tempdir()?;
    let runtime = Runtime::new(Some(cache.path().to_owned()))?;
    let metrics = Arc::new(Metrics::new());
    // Short: the thread name (`plugin-<name>`) is cut at 15 bytes.
    let name = "bperf";
    let spec = PluginSpec::from_yaml(&format!(
        "name: {name}
component: {}
bytecode:
  path: {}
  globalData: {{repeat: {REPEAT}}}
  programs:
    - name: on_getppid
      tracepoint: syscalls/sys_enter_getppid
maps:
  - name: {PERF_METRIC}
    events: {{maxBatch: 4096, perfPages: 1024}}
limits: {{callTimeoutMs: 10000}}
",
        artifacts().join("testing_perf_count.wasm").display(),
        object.display()
    ))?;
    let plugin = Plugin::start(&runtime, &metrics, &spec, Path::new("/"))?;
    wait_until(Duration::from_secs(60), || {
        plugin.status().phase == conductor_api::Phase::Running
    })
    .context("the plugin did not start")?;
    let source = SourceLabels {
        plugin: name.into(),
        source: PERF_METRIC.into(),
    };
    let received = metrics.host.events_received.get_or_create_owned(&source);
    let lost = |reason| {
        metrics
            .host
            .events_lost
            .get_or_create_owned(&LostLabels {
                plugin: name.into(),
                source: PERF_METRIC.into(),
                reason,
            })
            .get()
    };
    let tid = find_thread(&format!("plugin-{name}"))?;
    pin(tid, CONSUMER_CPU);
    let (received0, dropped0) = (received.get(), lost("kernel") + lost("host"));
    let cpu0 = thread_cpu(tid)?;
    let (started, calls) = produce();
    let sent = calls * REPEAT;
    let seen = || {
        (
            received.get() - received0,
            lost("kernel") + lost("host") - dropped0,
        )
    };
    wait_until(Duration::from_secs(120), || {
        let (e, d) = seen();
        e + d >= sent
    })
    .context("the plugin did not read every event")?;
    let elapsed = started.elapsed();
    let consumer_cpu = thread_cpu(tid)? - cpu0;
    let (handled, dropped) = seen();
    plugin.stop();
    Ok(Outcome {
        sent,
        handled,
        dropped,
        elapsed,
        consumer_cpu,
    })
}

/// Pin thread `tid` to `cpu` (modulo the CPUs there are).
fn pin(tid: u32, cpu: usize) {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // SAFETY: a zeroed cpu_set_t is a valid empty set; `cpu % cpus` < CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu % cpus, &mut set);
        libc::sched_setaffinity(tid as i32, size_of::<libc::cpu_set_t>(), &set);
    }
}
