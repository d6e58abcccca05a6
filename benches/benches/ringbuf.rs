//! Ring buffer → consumer throughput, native consumers against
//! eBPFConductor, all in one run (root needed):
//!
//!   cargo bench --bench ringbuf -- [--duration SECS] [--sweep-duration SECS] [--json PATH]
//!
//! One producer (`seq_producer.bpf.c`): every getpgid() of a trigger thread
//! pinned to CPU 0 emits `--per-trigger` records of `--event-size` bytes with
//! bpf_loop. Each consumer, pinned to CPU 1, gets a fresh copy of the
//! producer for `--duration` seconds (both threads at nice -20):
//!
//! - `aya`: aya's `RingBuf::next()`, counting;
//! - `libbpf`: libbpf-rs `RingBuffer` with a no-op callback (the C reference);
//! - `conductor`: the host's plugin thread delivering batches to the
//!   `seq-sum` wasm plugin, which decodes every record and sums a field;
//! - `conductor-per-event`: the same with `maxBatch: 1`, one guest call per
//!   event (the design of Inspektor Gadget and wasm-bpf);
//! - `aya-perf`, `libbpf-perf`, `conductor-perf`: the same consumers over a
//!   perf event array (the producer's `use_perf`), one buffer per CPU of
//!   `--ring-bytes` each.
//!
//! Then the zero-loss sweep (as RFC 2544 finds a forwarder's throughput):
//! the producer is paced at each rate of `--rates` for `--sweep-duration`
//! seconds per trial, from a fresh producer each time; above the highest
//! rate without a single drop, `--bisect` more trials halve the gap to the
//! lowest rate that dropped. A consumer's `zero_loss_rate` is the highest
//! offered rate (produced / firing time, as measured) with no drop.
//!
//! Every mode must satisfy produced == consumed + dropped exactly (drops are
//! counted by the BPF side when the ring is full, and by the host). Consumer
//! CPU is read from the consumer thread's schedstat. Also measured: plugin
//! cold start (spec to first event handled, warm compile cache) and the
//! resident memory of idle plugins.

#[path = "common/threads.rs"]
mod threads;
use threads::{find_thread, gettid, thread_cpu, wait_until};

use std::cell::Cell;
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use aya::maps::perf::PerfEvent;
use aya::maps::{Array, PerCpuArray, PerfEventArray, RingBuf};
use aya::programs::RawTracePoint;
use aya::{Ebpf, EbpfLoader};
use clap::Parser;
use conductor_api::PluginSpec;
use conductor_node::metrics::{LostLabels, Metrics, SourceLabels};
use conductor_node::plugin::Plugin;
use conductor_runtime::Runtime;
use serde_json::json;

#[derive(Parser, Debug, Clone)]
#[command(about = "Ring buffer throughput: aya, libbpf and eBPFConductor consumers in one run")]
struct Args {
    /// Seconds each consumer runs at full speed.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Seconds of each trial of the zero-loss sweep (0: no sweep).
    #[arg(long, default_value_t = 1.0)]
    sweep_duration: f64,
    /// Offered rates of the sweep, in millions of events per second,
    /// ascending. A consumer's ladder stops after two rates with drops.
    #[arg(long, value_delimiter = ',', default_values_t = [0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 20.0])]
    rates: Vec<f64>,
    /// Trials halving the gap between the highest zero-loss rate and the
    /// lowest that dropped.
    #[arg(long, default_value_t = 3)]
    bisect: u32,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Bytes per event (a multiple of 8, 16..=4096).
    #[arg(long, default_value_t = 64)]
    event_size: u32,
    /// Events emitted per trigger (one syscall).
    #[arg(long, default_value_t = 512)]
    per_trigger: u32,
    /// Ring buffer size in bytes (a power of two, at least a page).
    #[arg(long, default_value_t = 1 << 20)]
    ring_bytes: u32,
    /// The producer wakes the consumer when this much data is pending
    /// (conductor_ringbuf_wakeup_flags); consumers also poll every 1 ms.
    #[arg(long, default_value_t = 128 << 10)]
    wakeup_bytes: u64,
    /// Events per guest call in the batched conductor mode.
    #[arg(long, default_value_t = 4096)]
    max_batch: u32,
    /// `busyPollMs` of the conductor consumers' event source [default: the
    /// spec's default].
    #[arg(long)]
    busy_poll_ms: Option<u32>,
    /// Write the bar chart here [default: target/ringbuf.png in the workspace];
    /// the sweep's drops go next to it (`<name>-sweep.png`).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Idle plugins started to measure resident memory per plugin.
    #[arg(long, default_value_t = 16)]
    idle_plugins: usize,
    /// Run only these consumers (comma-separated names as printed, e.g.
    /// `conductor,aya`) [default: all].
    #[arg(long, value_delimiter = ',')]
    consumers: Vec<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const POLL: Duration = Duration::from_millis(1);
const PRODUCER_CPU: usize = 0;
const CONSUMER_CPU: usize = 1;

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(
        nix_is_root(),
        "this benchmark loads BPF programs: run it as root"
    );
    ensure!(
        args.event_size % 8 == 0 && (16..=4096).contains(&args.event_size),
        "--event-size must be a multiple of 8 in 16..=4096"
    );
    for name in &args.consumers {
        ensure!(
            Mode::ALL.iter().any(|m| m.name() == name),
            "--consumers: no consumer `{name}`; the consumers are {}",
            Mode::ALL.map(Mode::name).join(", ")
        );
    }
    let chosen =
        |m: &Mode| args.consumers.is_empty() || args.consumers.iter().any(|n| n == m.name());
    conductor_kernel::object::prepare_host();
    // Thread priorities only count within a scheduler autogroup (one per
    // session): on a machine shared with builds in other sessions, raise
    // ours too, or a consumer that sleeps briefly waits behind them and a
    // drop measures the builds instead of the consumer.
    if std::fs::write("/proc/self/autogroup", "-20").is_err() {
        println!(
            "note: could not raise this session's autogroup priority; other sessions' load counts against the consumers"
        );
    }
    let artifacts = artifacts()?;
    let bpffs = PathBuf::from(format!(
        "/sys/fs/bpf/conductor-bench-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&bpffs)
        .with_context(|| format!("cannot create {}", bpffs.display()))?;
    let _cleanup = RemoveDir(bpffs.clone());
    let cache = tempfile::tempdir()?;
    let runtime = Runtime::new(Some(cache.path().to_owned()))?;
    let trigger = Trigger::spawn(args.per_trigger)?;

    let bench = Bench {
        args: args.clone(),
        artifacts,
        bpffs,
        runtime,
        trigger,
    };
    println!(
        "ring buffer benchmark: {} s per consumer, {}-byte events, {} per trigger, {} KiB ring, wakeup at {} KiB pending, {} CPUs",
        args.duration,
        args.event_size,
        args.per_trigger,
        args.ring_bytes >> 10,
        args.wakeup_bytes >> 10,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let mut results = Vec::new();
    for mode in Mode::ALL.into_iter().filter(chosen) {
        let r = bench.run(mode, None, args.duration)?;
        println!(
            "  {:<20} {:>12.0} events/s  (produced {}, consumed {}, dropped {})",
            mode.name(),
            r.events_per_sec(),
            r.produced,
            r.consumed,
            r.dropped
        );
        if let Some(e) = r.episodes.first() {
            println!(
                "  {:<20} {} runs of drops; the first at {:.1} ms ({} events, consumer {} KiB behind)",
                "",
                r.episode_count,
                e.at.as_secs_f64() * 1e3,
                e.dropped,
                e.behind_bytes >> 10
            );
        }
        results.push((mode, r));
    }
    let mut sweep = Vec::new();
    if args.sweep_duration > 0.0 {
        println!(
            "zero-loss sweep: {} s per trial, rates {:?} M events/s",
            args.sweep_duration, args.rates
        );
        for mode in Mode::SWEPT.into_iter().filter(chosen) {
            sweep.extend(bench.sweep(mode)?);
        }
    }
    let cold_start = bench.cold_start()?;
    let idle_rss = bench.idle_rss()?;
    bench.trigger.exit();

    report(&args, &results, &sweep, cold_start, idle_rss)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Aya,
    Libbpf,
    Conductor,
    PerEvent,
    AyaPerf,
    LibbpfPerf,
    ConductorPerf,
}

impl Mode {
    const ALL: [Mode; 7] = [
        Mode::Aya,
        Mode::Libbpf,
        Mode::Conductor,
        Mode::PerEvent,
        Mode::AyaPerf,
        Mode::LibbpfPerf,
        Mode::ConductorPerf,
    ];
    /// The per-event mode is left out of the sweep: it drops at any rate
    /// worth measuring the others at.
    const SWEPT: [Mode; 6] = [
        Mode::Aya,
        Mode::Libbpf,
        Mode::Conductor,
        Mode::AyaPerf,
        Mode::LibbpfPerf,
        Mode::ConductorPerf,
    ];

    fn name(self) -> &'static str {
        match self {
            Mode::Aya => "aya",
            Mode::Libbpf => "libbpf",
            Mode::Conductor => "conductor",
            Mode::PerEvent => "conductor-per-event",
            Mode::AyaPerf => "aya-perf",
            Mode::LibbpfPerf => "libbpf-perf",
            Mode::ConductorPerf => "conductor-perf",
        }
    }

    fn perf(self) -> bool {
        matches!(self, Mode::AyaPerf | Mode::LibbpfPerf | Mode::ConductorPerf)
    }

    /// The event map the producer writes in this mode.
    fn map(self) -> &'static str {
        if self.perf() { "seq_perf" } else { "seq_ring" }
    }
}

/// One trial of the sweep.
#[derive(Debug, Clone)]
struct Trial {
    mode: Mode,
    /// The rate asked of the producer (events/s).
    target: f64,
    outcome: Outcome,
}

#[derive(Debug, Default, Clone)]
struct Outcome {
    produced: u64,
    consumed: u64,
    /// Kernel (ring full) plus host drops.
    dropped: u64,
    /// From the first trigger to the last event consumed.
    elapsed: Duration,
    /// How long the producer fired.
    firing: Duration,
    consumer_cpu: Duration,
    producer_cpu: Duration,
    /// Guest calls (conductor modes).
    batches: Option<u64>,
    /// Of `consumer_cpu`, the time the conductor consumer spent polling the
    /// ring between batches instead of sleeping (`busyPollMs`).
    polled: Duration,
    /// Runs of consecutive drops, the first [`EPISODES_KEPT`] of them, as
    /// the producer logged them (`seq_drops`).
    episodes: Vec<Episode>,
    /// How many runs of drops there were in all.
    episode_count: u64,
}

/// As many drop episodes as `seq_drops` keeps (SEQ_EPISODES).
const EPISODES_KEPT: u32 = 64;

/// A run of consecutive sequence numbers the producer could not output.
#[derive(Debug, Clone)]
struct Episode {
    /// When the first of them was dropped, from the start of firing.
    at: Duration,
    first_seq: u64,
    dropped: u64,
    /// Producer minus consumer position at the first drop (ring buffers:
    /// how far behind the consumer was; 0 for perf event arrays).
    behind_bytes: u64,
}

impl Episode {
    fn json(&self) -> serde_json::Value {
        json!({
            "at_ms": self.at.as_secs_f64() * 1e3,
            "first_seq": self.first_seq,
            "dropped": self.dropped,
            "behind_bytes": self.behind_bytes,
        })
    }
}

impl Outcome {
    fn events_per_sec(&self) -> f64 {
        self.consumed as f64 / self.elapsed.as_secs_f64()
    }
    /// The rate the producer actually offered.
    fn offered(&self) -> f64 {
        self.produced as f64 / self.firing.as_secs_f64()
    }
    fn drop_ratio(&self) -> f64 {
        self.dropped as f64 / self.produced.max(1) as f64
    }
    fn cpu_ns_per_event(&self) -> f64 {
        self.consumer_cpu.as_nanos() as f64 / self.consumed.max(1) as f64
    }
    /// CPU per event without the time spent polling: the work.
    fn work_ns_per_event(&self) -> f64 {
        self.consumer_cpu.saturating_sub(self.polled).as_nanos() as f64
            / self.consumed.max(1) as f64
    }
}

struct Bench {
    args: Args,
    artifacts: PathBuf,
    bpffs: PathBuf,
    runtime: Arc<Runtime>,
    trigger: Trigger,
}

/// A freshly loaded producer, attached.
struct Producer {
    ebpf: Ebpf,
}

impl Producer {
    /// (sequence numbers used, records dropped by the kernel)
    fn stats(&self, mode: Mode) -> Result<(u64, u64)> {
        let stats: Array<_, u64> =
            Array::try_from(self.ebpf.map("seq_stats").context("no seq_stats map")?)?;
        let lost = format!("{}_lost", mode.map());
        let lost: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(&lost).context("no lost map")?)?;
        let lost = lost.get(&0, 0)?.iter().sum();
        Ok((stats.get(&0, 0)?, lost))
    }

    /// The drop episodes the producer logged (the first [`EPISODES_KEPT`])
    /// and how many there were, times taken from `started`, when firing
    /// began.
    fn episodes(&self, started: Instant) -> Result<(Vec<Episode>, u64)> {
        let stats: Array<_, u64> =
            Array::try_from(self.ebpf.map("seq_stats").context("no seq_stats map")?)?;
        let count = stats.get(&3, 0)?;
        let log: Array<_, [u64; 5]> =
            Array::try_from(self.ebpf.map("seq_drops").context("no seq_drops map")?)?;
        // bpf_ktime_get_ns() is CLOCK_MONOTONIC, as Instant is on Linux.
        let started_ns = monotonic_ns()?.saturating_sub(started.elapsed().as_nanos() as u64);
        let mut episodes = Vec::new();
        for i in 0..count.min(u64::from(EPISODES_KEPT)) as u32 {
            let [first_seq, dropped, ktime, cons, prod] = log.get(&i, 0)?;
            episodes.push(Episode {
                at: Duration::from_nanos(ktime.saturating_sub(started_ns)),
                first_seq,
                dropped,
                behind_bytes: prod.wrapping_sub(cons),
            });
        }
        Ok((episodes, count))
    }
}

impl Bench {
    fn producer(&self, mode: Mode) -> Result<Producer> {
        let a = &self.args;
        let nr = libc::SYS_getpgid as u64;
        let use_perf = u32::from(mode.perf());
        let mut ebpf = EbpfLoader::new()
            .override_global("target_tid", &self.trigger.tid, true)
            .override_global("trigger_nr", &nr, true)
            .override_global("per_trigger", &a.per_trigger, true)
            .override_global("record_size", &a.event_size, true)
            .override_global("wakeup_bytes", &a.wakeup_bytes, true)
            .override_global("use_perf", &use_perf, true)
            .map_max_entries("seq_ring", a.ring_bytes)
            .load_file(self.artifacts.join("seq_producer.bpf.o"))
            .context("cannot load seq_producer.bpf.o (build it with `cargo xtask build`)")?;
        let prog: &mut RawTracePoint = ebpf
            .program_mut("trigger")
            .context("no program `trigger`")?
            .try_into()?;
        prog.load()?;
        prog.attach("sys_enter")?;
        Ok(Producer { ebpf })
    }

    /// One run of `mode` for `secs` seconds, the producer paced at `rate`
    /// events/s (or as fast as it can).
    fn run(&self, mode: Mode, rate: Option<f64>, secs: f64) -> Result<Outcome> {
        let mut producer = self.producer(mode)?;
        let pin = self.bpffs.join(format!("map-{}", mode.name()));
        let fire = Fire { rate, secs };
        let pages = (self.args.ring_bytes as usize / 4096).max(1);
        let outcome = match mode {
            Mode::Aya => {
                let ring = RingBuf::try_from(producer.ebpf.take_map("seq_ring").context("ring")?)?;
                self.run_thread(&producer, mode, fire, move |stop, ready| {
                    aya_consumer(ring, stop, ready)
                })?
            }
            Mode::AyaPerf => {
                let array =
                    PerfEventArray::try_from(producer.ebpf.take_map("seq_perf").context("perf")?)?;
                self.run_thread(&producer, mode, fire, move |stop, ready| {
                    aya_perf_consumer(array, pages, stop, ready)
                })?
            }
            Mode::Libbpf | Mode::LibbpfPerf => {
                pin_map(&producer, mode, &pin)?;
                let pin2 = pin.clone();
                let r = self.run_thread(&producer, mode, fire, move |stop, ready| {
                    if mode.perf() {
                        libbpf_perf_consumer(&pin2, pages, stop, ready)
                    } else {
                        libbpf_consumer(&pin2, stop, ready)
                    }
                });
                let _ = std::fs::remove_file(&pin);
                r?
            }
            Mode::Conductor | Mode::PerEvent | Mode::ConductorPerf => {
                pin_map(&producer, mode, &pin)?;
                let max_batch = if mode == Mode::PerEvent {
                    1
                } else {
                    self.args.max_batch
                };
                let r = self.run_plugin(&producer, mode, &pin, max_batch, fire);
                let _ = std::fs::remove_file(&pin);
                r?
            }
        };
        ensure!(
            outcome.produced == outcome.consumed + outcome.dropped,
            "{}: produced {} != consumed {} + dropped {}",
            mode.name(),
            outcome.produced,
            outcome.consumed,
            outcome.dropped
        );
        Ok(outcome)
    }

    /// The zero-loss sweep of one consumer (see the module's doc).
    fn sweep(&self, mode: Mode) -> Result<Vec<Trial>> {
        let secs = self.args.sweep_duration;
        let mut trials = Vec::new();
        let mut trial = |target: f64| -> Result<Trial> {
            let outcome = self.run(mode, Some(target), secs)?;
            let t = Trial {
                mode,
                target,
                outcome,
            };
            println!(
                "  {:<16} target {:>6.2} M/s  offered {:>6.2} M/s  dropped {:>10} ({:.3} %)  {:>6.1} ns CPU/event, {:>6.1} without polling",
                mode.name(),
                target / 1e6,
                t.outcome.offered() / 1e6,
                t.outcome.dropped,
                100.0 * t.outcome.drop_ratio(),
                t.outcome.cpu_ns_per_event(),
                t.outcome.work_ns_per_event()
            );
            if let Some(e) = t.outcome.episodes.first() {
                println!(
                    "  {:<16} {} runs of drops; the first at {:.1} ms ({} events, consumer {} KiB behind)",
                    "",
                    t.outcome.episode_count,
                    e.at.as_secs_f64() * 1e3,
                    e.dropped,
                    e.behind_bytes >> 10
                );
            }
            trials.push(t.clone());
            Ok(t)
        };
        let (mut good, mut bad): (Option<f64>, Option<f64>) = (None, None);
        let mut failures = 0;
        for &m in &self.args.rates {
            let target = m * 1e6;
            let t = trial(target)?;
            if t.outcome.dropped == 0 {
                good = Some(target);
                bad = None;
                failures = 0;
            } else {
                bad = bad.or(Some(target));
                failures += 1;
                if failures == 2 {
                    break;
                }
            }
            // The producer is at its limit: higher targets offer no more.
            if t.outcome.offered() < 0.9 * target {
                break;
            }
        }
        // Narrow the gap above the highest rate without drops.
        if let (Some(mut lo), Some(mut hi)) = (good, bad)
            && lo < hi
        {
            for _ in 0..self.args.bisect {
                let mid = (lo + hi) / 2.0;
                if trial(mid)?.outcome.dropped == 0 {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
        }
        Ok(trials)
    }

    /// Run a native consumer on a thread of its own: it calls `ready` once
    /// it is set up, and returns what it consumed once `stop` is set and
    /// its buffers are empty.
    fn run_thread<F>(
        &self,
        producer: &Producer,
        mode: Mode,
        fire: Fire,
        consumer: F,
    ) -> Result<Outcome>
    where
        F: FnOnce(&AtomicBool, &dyn Fn()) -> Result<u64> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread: JoinHandle<Result<(u64, Duration, Instant)>> = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let tid = gettid();
                dedicate(tid, CONSUMER_CPU);
                let cpu0 = Cell::new(Duration::ZERO);
                let ready = || {
                    cpu0.set(thread_cpu(tid).unwrap_or_default());
                    let _ = ready_tx.send(());
                };
                let consumed = consumer(&stop, &ready)?;
                Ok((consumed, thread_cpu(tid)? - cpu0.get(), Instant::now()))
            })
        };
        if ready_rx.recv().is_err() {
            // The consumer failed before it was ready: its error says why.
            return match thread.join() {
                Ok(Err(e)) => Err(e),
                _ => bail!("{}: the consumer thread died", mode.name()),
            };
        }
        let (started, firing, producer_cpu) = self.trigger.run(fire)?;
        stop.store(true, Ordering::Release);
        let (consumed, consumer_cpu, ended) = thread
            .join()
            .map_err(|_| anyhow::anyhow!("consumer thread panicked"))??;
        let (produced, dropped) = producer.stats(mode)?;
        let (episodes, episode_count) = producer.episodes(started)?;
        Ok(Outcome {
            produced,
            consumed,
            dropped,
            elapsed: ended - started,
            firing,
            consumer_cpu,
            producer_cpu,
            batches: None,
            polled: Duration::ZERO,
            episodes,
            episode_count,
        })
    }

    fn spec(
        &self,
        name: &str,
        mode: Mode,
        pin: Option<&Path>,
        max_batch: u32,
    ) -> Result<PluginSpec> {
        let component = self.artifacts.join("testing_seq_sum.wasm");
        let pages = (self.args.ring_bytes / 4096).max(1);
        let maps = match pin {
            Some(pin) if mode.perf() => format!(
                "maps:\n  - name: seq_perf\n    pin: {}\n    events: {{maxBatch: {max_batch}, perfPages: {pages}}}\n",
                pin.display()
            ),
            Some(pin) => format!(
                "maps:\n  - name: seq_ring\n    pin: {}\n    events: {{maxBatch: {max_batch}, maxLatencyMs: 1{}}}\n",
                pin.display(),
                self.args
                    .busy_poll_ms
                    .map_or(String::new(), |ms| format!(", busyPollMs: {ms}"))
            ),
            None => String::new(),
        };
        let text = format!(
            "name: {name}\ncomponent: {}\n{maps}limits: {{callTimeoutMs: 10000}}\n",
            component.display()
        );
        Ok(PluginSpec::from_yaml(&text)?)
    }

    fn run_plugin(
        &self,
        producer: &Producer,
        mode: Mode,
        pin: &Path,
        max_batch: u32,
        fire: Fire,
    ) -> Result<Outcome> {
        let name = match mode {
            Mode::PerEvent => "bench-e",
            Mode::ConductorPerf => "bench-p",
            _ => "bench-b",
        };
        let metrics = Arc::new(Metrics::new());
        let spec = self.spec(name, mode, Some(pin), max_batch)?;
        let plugin = Plugin::start(&self.runtime, &metrics, &spec, Path::new("/"))?;
        let source = SourceLabels {
            plugin: name.into(),
            source: mode.map().into(),
        };
        let received = metrics.host.events_received.get_or_create_owned(&source);
        let batches = metrics.host.batches.get_or_create_owned(&source);
        let polled = metrics.host.poll_seconds.get_or_create_owned(&source);
        let lost_host = metrics.host.events_lost.get_or_create_owned(&LostLabels {
            plugin: name.into(),
            source: mode.map().into(),
            reason: "host",
        });
        // Instantiated and initialised (and its thread named) before the
        // clock starts.
        wait_until(Duration::from_secs(30), || {
            plugin.status().phase == conductor_api::Phase::Running
        })
        .context("the plugin did not start")?;
        let tid = find_thread(&format!("plugin-{name}"))?;
        dedicate(tid, CONSUMER_CPU);
        let cpu0 = thread_cpu(tid)?;
        let batches0 = batches.get();
        let polled0 = polled.get();
        let (started, firing, producer_cpu) = self.trigger.run(fire)?;
        let (produced, kernel_lost) = producer.stats(mode)?;
        let (episodes, episode_count) = producer.episodes(started)?;
        wait_until(Duration::from_secs(60), || {
            received.get() + kernel_lost >= produced
        })
        .context("the host did not drain the ring")?;
        let ended = Instant::now();
        let consumer_cpu = thread_cpu(tid)? - cpu0;
        let _ = plugin
            .request_collect()
            .recv_timeout(Duration::from_secs(10));
        let text = metrics.encode()?;
        let consumed = metric_value(&text, &format!("{}__events_total", name.replace('-', "_")))?;
        let batches = batches.get() - batches0;
        let polled = Duration::from_secs_f64((polled.get() - polled0).max(0.0));
        plugin.stop();
        Ok(Outcome {
            produced,
            consumed,
            dropped: kernel_lost + lost_host.get(),
            elapsed: ended - started,
            firing,
            consumer_cpu,
            producer_cpu,
            batches: Some(batches),
            polled,
            episodes,
            episode_count,
        })
    }

    /// Spec handed to the host until the plugin has handled its first event,
    /// with the component already in the compile cache.
    fn cold_start(&self) -> Result<Duration> {
        let metrics = Arc::new(Metrics::new());
        // Fill the compile cache.
        Plugin::start(
            &self.runtime,
            &metrics,
            &self.spec("warm", Mode::Conductor, None, 1)?,
            Path::new("/"),
        )?
        .stop();
        let producer = self.producer(Mode::Conductor)?;
        let pin = self.bpffs.join("ring-cold");
        pin_map(&producer, Mode::Conductor, &pin)?;
        self.trigger.fire_once()?;
        let spec = self.spec("cold", Mode::Conductor, Some(&pin), self.args.max_batch)?;
        let batches = metrics.host.batches.get_or_create_owned(&SourceLabels {
            plugin: "cold".into(),
            source: "seq_ring".into(),
        });
        let t0 = Instant::now();
        let plugin = Plugin::start(&self.runtime, &metrics, &spec, Path::new("/"))?;
        wait_until(Duration::from_secs(30), || batches.get() > 0)
            .context("the plugin handled no event")?;
        let elapsed = t0.elapsed();
        plugin.stop();
        let _ = std::fs::remove_file(&pin);
        Ok(elapsed)
    }

    /// Resident memory added per idle plugin (started, initialised, no events).
    fn idle_rss(&self) -> Result<u64> {
        let n = self.args.idle_plugins.max(1);
        let metrics = Arc::new(Metrics::new());
        // One plugin first, so shared code pages are not counted per plugin.
        let first = Plugin::start(
            &self.runtime,
            &metrics,
            &self.spec("idle", Mode::Conductor, None, 1)?,
            Path::new("/"),
        )?;
        std::thread::sleep(Duration::from_millis(200));
        let before = rss_bytes()?;
        let mut plugins = Vec::new();
        for i in 0..n {
            let p = Plugin::start(
                &self.runtime,
                &metrics,
                &self.spec(&format!("idle-{i}"), Mode::Conductor, None, 1)?,
                Path::new("/"),
            )?;
            plugins.push(p);
        }
        wait_until(Duration::from_secs(30), || {
            plugins
                .iter()
                .all(|p| p.status().phase == conductor_api::Phase::Running)
        })?;
        std::thread::sleep(Duration::from_millis(200));
        let after = rss_bytes()?;
        drop(plugins);
        first.stop();
        Ok(after.saturating_sub(before) / n as u64)
    }
}

fn aya_consumer(
    mut ring: RingBuf<aya::maps::MapData>,
    stop: &AtomicBool,
    ready: &dyn Fn(),
) -> Result<u64> {
    let fd = ring.as_raw_fd();
    let mut count = 0u64;
    ready();
    loop {
        let stopping = stop.load(Ordering::Acquire);
        while let Some(item) = ring.next() {
            std::hint::black_box(&*item);
            count += 1;
        }
        if stopping {
            return Ok(count);
        }
        wait_readable(fd);
    }
}

/// aya's perf buffer on the producer's CPU (the only one it writes).
fn aya_perf_consumer(
    mut array: PerfEventArray<aya::maps::MapData>,
    pages: usize,
    stop: &AtomicBool,
    ready: &dyn Fn(),
) -> Result<u64> {
    let mut buffer = array.open(PRODUCER_CPU as u32, Some(pages))?;
    let fd = buffer.as_raw_fd();
    let mut count = 0u64;
    ready();
    loop {
        let stopping = stop.load(Ordering::Acquire);
        buffer.for_each(|event| {
            if let PerfEvent::Sample { head, tail } = event {
                std::hint::black_box((head, tail));
                count += 1;
            }
        });
        if stopping {
            return Ok(count);
        }
        wait_readable(fd);
    }
}

fn libbpf_consumer(pin: &Path, stop: &AtomicBool, ready: &dyn Fn()) -> Result<u64> {
    let map = libbpf_rs::MapHandle::from_pinned_path(pin)?;
    let count = Arc::new(AtomicU64::new(0));
    let mut builder = libbpf_rs::RingBufferBuilder::new();
    let c = count.clone();
    builder.add(&map, move |data: &[u8]| {
        std::hint::black_box(data);
        c.fetch_add(1, Ordering::Relaxed);
        0
    })?;
    let ring = builder.build()?;
    ready();
    loop {
        let stopping = stop.load(Ordering::Acquire);
        ring.poll(POLL)?;
        if stopping {
            ring.consume()?;
            return Ok(count.load(Ordering::Relaxed));
        }
    }
}

fn libbpf_perf_consumer(
    pin: &Path,
    pages: usize,
    stop: &AtomicBool,
    ready: &dyn Fn(),
) -> Result<u64> {
    let map = libbpf_rs::MapHandle::from_pinned_path(pin)?;
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let buffer = libbpf_rs::PerfBufferBuilder::new(&map)
        .sample_cb(move |_cpu: i32, data: &[u8]| {
            std::hint::black_box(data);
            c.fetch_add(1, Ordering::Relaxed);
        })
        .pages(pages)
        .build()?;
    ready();
    loop {
        let stopping = stop.load(Ordering::Acquire);
        buffer.poll(POLL)?;
        if stopping {
            buffer.consume()?;
            return Ok(count.load(Ordering::Relaxed));
        }
    }
}

fn wait_readable(fd: i32) {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, POLL.as_millis() as i32) };
}

fn pin_map(producer: &Producer, mode: Mode, path: &Path) -> Result<()> {
    producer
        .ebpf
        .map(mode.map())
        .with_context(|| format!("no {}", mode.map()))?
        .pin(path)
        .with_context(|| format!("cannot pin {} at {}", mode.map(), path.display()))
}

/// How long the producer fires, and how fast.
#[derive(Debug, Clone, Copy)]
struct Fire {
    /// Events per second; `None`: as fast as it can.
    rate: Option<f64>,
    secs: f64,
}

/// The thread whose getpgid() calls fire the producer, pinned to CPU 0.
struct Trigger {
    tid: u32,
    state: Arc<AtomicU8>,
    /// Set by the thread when it has left the firing loop.
    idle: Arc<AtomicBool>,
    /// Nanoseconds between triggers while firing (0: back to back).
    interval_ns: Arc<AtomicU64>,
    per_trigger: u32,
}

const IDLE: u8 = 0;
const FIRE: u8 = 1;
const ONCE: u8 = 2;
const EXIT: u8 = 3;

impl Trigger {
    fn spawn(per_trigger: u32) -> Result<Self> {
        let state = Arc::new(AtomicU8::new(IDLE));
        let idle = Arc::new(AtomicBool::new(true));
        let interval_ns = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        {
            let (state, idle, interval_ns) = (state.clone(), idle.clone(), interval_ns.clone());
            std::thread::Builder::new()
                .name("bench-trigger".into())
                .spawn(move || {
                    let tid = gettid();
                    dedicate(tid, PRODUCER_CPU);
                    let _ = tx.send(tid);
                    loop {
                        match state.load(Ordering::Acquire) {
                            FIRE => {
                                idle.store(false, Ordering::Release);
                                let interval = interval_ns.load(Ordering::Acquire);
                                let t0 = Instant::now();
                                let mut fired = 0u64;
                                while state.load(Ordering::Relaxed) == FIRE {
                                    if interval > 0 {
                                        // Paced: trigger k is due at t0 + k × interval
                                        // (behind schedule, it fires at once).
                                        let due = t0 + Duration::from_nanos(fired * interval);
                                        while Instant::now() < due
                                            && state.load(Ordering::Relaxed) == FIRE
                                        {
                                            std::hint::spin_loop();
                                        }
                                        fired += 1;
                                    }
                                    // SAFETY: no memory arguments.
                                    unsafe { libc::getpgid(0) };
                                }
                            }
                            ONCE => {
                                // SAFETY: as above.
                                unsafe { libc::getpgid(0) };
                                let _ = state.compare_exchange(
                                    ONCE,
                                    IDLE,
                                    Ordering::AcqRel,
                                    Ordering::Relaxed,
                                );
                            }
                            EXIT => return,
                            _ => {
                                idle.store(true, Ordering::Release);
                                std::thread::sleep(Duration::from_micros(200));
                            }
                        }
                    }
                })?;
        }
        let tid = rx.recv().context("trigger thread died")?;
        Ok(Self {
            tid,
            state,
            idle,
            interval_ns,
            per_trigger,
        })
    }

    /// Fire as `fire` says; returns when firing started, how long it fired
    /// and the CPU it cost.
    fn run(&self, fire: Fire) -> Result<(Instant, Duration, Duration)> {
        let interval = fire.rate.map_or(0, |rate| {
            (f64::from(self.per_trigger) / rate * 1e9).max(1.0) as u64
        });
        self.interval_ns.store(interval, Ordering::Release);
        let cpu0 = thread_cpu(self.tid)?;
        let started = Instant::now();
        self.state.store(FIRE, Ordering::Release);
        std::thread::sleep(Duration::from_secs_f64(fire.secs));
        self.state.store(IDLE, Ordering::Release);
        // The last syscall returned, so every record it emitted is committed.
        wait_until(Duration::from_secs(10), || {
            self.idle.load(Ordering::Acquire)
        })?;
        let firing = started.elapsed();
        Ok((started, firing, thread_cpu(self.tid)? - cpu0))
    }

    fn fire_once(&self) -> Result<()> {
        self.state.store(ONCE, Ordering::Release);
        wait_until(Duration::from_secs(10), || {
            self.state.load(Ordering::Acquire) == IDLE
        })
    }

    fn exit(&self) {
        self.state.store(EXIT, Ordering::Release);
    }
}

/// Pin thread `tid` to `cpu` and raise its priority to nice -20, so that
/// other work on a shared machine takes little from the measured threads.
fn dedicate(tid: u32, cpu: usize) {
    // SAFETY: setpriority on one of our threads; failure only costs accuracy.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, -20) };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    if cpus < 2 {
        return;
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` < CPU_SETSIZE.
    unsafe {
        libc::CPU_SET(cpu % cpus, &mut set);
        libc::sched_setaffinity(tid as i32, size_of::<libc::cpu_set_t>(), &set);
    }
}

fn rss_bytes() -> Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .context("unexpected /proc/self/statm")?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    Ok(pages * page)
}

/// The value of an unlabelled-but-for-`plugin` sample in OpenMetrics text.
fn metric_value(text: &str, name: &str) -> Result<u64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .with_context(|| format!("metric {name} not found"))
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of bpf_ktime_get_ns().
fn monotonic_ns() -> Result<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn artifacts() -> Result<PathBuf> {
    let dir = std::env::var_os("CONDUCTOR_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    for f in ["seq_producer.bpf.o", "testing_seq_sum.wasm"] {
        ensure!(
            dir.join(f).exists(),
            "{} is missing: run `cargo xtask build` first",
            dir.join(f).display()
        );
    }
    Ok(dir)
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The highest offered rate at which `mode` dropped nothing in the sweep.
fn zero_loss_rate(sweep: &[Trial], mode: Mode) -> Option<f64> {
    sweep
        .iter()
        .filter(|t| t.mode == mode && t.outcome.dropped == 0)
        .map(|t| t.outcome.offered())
        .reduce(f64::max)
}

fn report(
    args: &Args,
    results: &[(Mode, Outcome)],
    sweep: &[Trial],
    cold_start: Duration,
    idle_rss: u64,
) -> Result<()> {
    let find = |m: Mode| results.iter().find(|(mode, _)| *mode == m).map(|(_, r)| r);
    let rate = |m: Mode| find(m).map_or(f64::NAN, Outcome::events_per_sec);
    let cost = |m: Mode| find(m).map_or(f64::NAN, Outcome::cpu_ns_per_event);
    let (c, a, b, d) = (Mode::Conductor, Mode::Aya, Mode::Libbpf, Mode::PerEvent);
    // Events/s, as the issue asks; meaningful only where the consumer, not
    // the producer, is the bound (see the utilisation columns).
    let ratios = [
        ("wasm_vs_aya", rate(c) / rate(a)),
        ("wasm_vs_libbpf", rate(c) / rate(b)),
        ("batched_vs_per_event", rate(c) / rate(d)),
    ];
    // The same comparisons per CPU second: how many events each consumer
    // handles for the same CPU time (inverse ratio of ns/event).
    let per_cpu = [
        ("wasm_vs_aya", cost(a) / cost(c)),
        ("wasm_vs_libbpf", cost(b) / cost(c)),
        ("batched_vs_per_event", cost(d) / cost(c)),
    ];
    let window = args.duration;

    println!();
    println!(
        "| consumer | produced | consumed | dropped | events/s | consumer CPU | of it polling | consumer ns/event | without polling | producer CPU | producer ns/event |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (mode, r) in results {
        println!(
            "| {} | {} | {} | {} | {:.2} M | {:.0} % | {:.0} % | {:.1} | {:.1} | {:.0} % | {:.1} |",
            mode.name(),
            r.produced,
            r.consumed,
            r.dropped,
            r.events_per_sec() / 1e6,
            100.0 * r.consumer_cpu.as_secs_f64() / r.elapsed.as_secs_f64(),
            100.0 * r.polled.as_secs_f64() / r.elapsed.as_secs_f64(),
            r.cpu_ns_per_event(),
            r.work_ns_per_event(),
            100.0 * r.producer_cpu.as_secs_f64() / window,
            r.producer_cpu.as_nanos() as f64 / r.produced.max(1) as f64,
        );
    }
    println!();
    for ((name, v), (_, w)) in ratios.iter().zip(&per_cpu) {
        println!("{name} = {v:.2} (events/s), {w:.2} (events per CPU second)");
    }
    if !sweep.is_empty() {
        println!();
        println!(
            "| consumer | target | offered | produced | dropped | drop % | consumer CPU | of it polling | consumer ns/event | without polling |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        let mut sorted: Vec<&Trial> = sweep.iter().collect();
        sorted.sort_by(|a, b| {
            (a.mode as u8, a.target)
                .partial_cmp(&(b.mode as u8, b.target))
                .unwrap_or(std::cmp::Ordering::Equal)
        });
        for t in sorted {
            let r = &t.outcome;
            println!(
                "| {} | {:.2} M/s | {:.2} M/s | {} | {} | {:.3} % | {:.0} % | {:.0} % | {:.1} | {:.1} |",
                t.mode.name(),
                t.target / 1e6,
                r.offered() / 1e6,
                r.produced,
                r.dropped,
                100.0 * r.drop_ratio(),
                100.0 * r.consumer_cpu.as_secs_f64() / r.elapsed.as_secs_f64(),
                100.0 * r.polled.as_secs_f64() / r.elapsed.as_secs_f64(),
                r.cpu_ns_per_event(),
                r.work_ns_per_event(),
            );
        }
        println!();
        for mode in Mode::SWEPT {
            match zero_loss_rate(sweep, mode) {
                Some(r) => println!(
                    "zero-loss rate {:<16} = {:.2} M events/s",
                    mode.name(),
                    r / 1e6
                ),
                None => println!(
                    "zero-loss rate {:<16} = none (dropped at every rate tried)",
                    mode.name()
                ),
            }
        }
        for (name, v) in zero_loss_ratios(sweep) {
            println!("zero_loss {name} = {v:.2}");
        }
    }
    println!(
        "plugin cold start (warm cache) = {:.2} ms",
        cold_start.as_secs_f64() * 1e3
    );
    println!(
        "idle plugin resident memory = {:.2} MiB",
        idle_rss as f64 / (1 << 20) as f64
    );

    let mut consumers = serde_json::Map::new();
    for (mode, r) in results {
        consumers.insert(
            mode.name().into(),
            json!({
                "produced": r.produced,
                "consumed": r.consumed,
                "dropped": r.dropped,
                "events_per_sec": r.events_per_sec(),
                "cpu": {
                    "consumer_seconds": r.consumer_cpu.as_secs_f64(),
                    "consumer_utilisation": r.consumer_cpu.as_secs_f64() / r.elapsed.as_secs_f64(),
                    "consumer_ns_per_event": r.cpu_ns_per_event(),
                    "consumer_poll_seconds": r.polled.as_secs_f64(),
                    "consumer_ns_per_event_without_polling": r.work_ns_per_event(),
                    "producer_seconds": r.producer_cpu.as_secs_f64(),
                    "producer_utilisation": r.producer_cpu.as_secs_f64() / window,
                },
                "elapsed_seconds": r.elapsed.as_secs_f64(),
                "guest_calls": r.batches,
                "zero_loss_rate": zero_loss_rate(sweep, *mode),
            }),
        );
    }
    let trials: Vec<_> = sweep
        .iter()
        .map(|t| {
            let r = &t.outcome;
            json!({
                "consumer": t.mode.name(),
                "target_rate": t.target,
                "offered_rate": r.offered(),
                "produced": r.produced,
                "consumed": r.consumed,
                "dropped": r.dropped,
                "consumer_utilisation": r.consumer_cpu.as_secs_f64() / r.elapsed.as_secs_f64(),
                "consumer_ns_per_event": r.cpu_ns_per_event(),
                "consumer_poll_seconds": r.polled.as_secs_f64(),
                "consumer_ns_per_event_without_polling": r.work_ns_per_event(),
                "producer_ns_per_event": r.producer_cpu.as_nanos() as f64 / r.produced.max(1) as f64,
                "drop_episodes": r.episode_count,
                "drop_episodes_logged": r.episodes.iter().map(Episode::json).collect::<Vec<_>>(),
            })
        })
        .collect();
    let zero_loss: BTreeMap<_, _> = Mode::SWEPT
        .iter()
        .map(|m| (m.name(), zero_loss_rate(sweep, *m)))
        .collect();
    let zero_loss_ratios: BTreeMap<_, _> = zero_loss_ratios(sweep).into_iter().collect();
    let perf_arrays: BTreeMap<_, _> = results
        .iter()
        .filter(|(m, _)| m.perf())
        .map(|(m, r)| {
            (
                m.name(),
                json!({
                    "produced": r.produced,
                    "consumed": r.consumed,
                    "dropped": r.dropped,
                    "events_per_sec": r.events_per_sec(),
                    "consumer_ns_per_event": r.cpu_ns_per_event(),
                    "zero_loss_rate": zero_loss_rate(sweep, *m),
                }),
            )
        })
        .collect();
    let ratios: BTreeMap<_, _> = ratios.iter().map(|(k, v)| (*k, *v)).collect();
    let per_cpu: BTreeMap<_, _> = per_cpu.iter().map(|(k, v)| (*k, *v)).collect();
    let doc = json!({
        "config": {
            "duration_seconds": args.duration,
            "event_size": args.event_size,
            "per_trigger": args.per_trigger,
            "ring_bytes": args.ring_bytes,
            "wakeup_bytes": args.wakeup_bytes,
            "max_batch": args.max_batch,
            "busy_poll_ms": args.busy_poll_ms,
            "sweep_duration_seconds": args.sweep_duration,
            "sweep_rates": args.rates,
            "bisect": args.bisect,
            "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        "consumers": consumers,
        "ratios": ratios,
        "ratios_per_cpu_second": per_cpu,
        "sweep": trials,
        "zero_loss_rate": zero_loss,
        "zero_loss_ratios": zero_loss_ratios,
        "perf_arrays": perf_arrays,
        "cold_start_ms": cold_start.as_secs_f64() * 1e3,
        "idle_plugin_rss_bytes": idle_rss,
    });
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    let path = args
        .plot
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ringbuf.png"));
    plot(&path, results)?;
    println!("wrote {}", path.display());
    if !sweep.is_empty() {
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("ringbuf");
        let sweep_path = path.with_file_name(format!("{stem}-sweep.png"));
        plot_sweep(&sweep_path, sweep)?;
        println!("wrote {}", sweep_path.display());
    }
    Ok(())
}

/// Zero-loss rate of the conductor consumer over each native one, ring
/// buffers and perf event arrays apart.
fn zero_loss_ratios(sweep: &[Trial]) -> Vec<(&'static str, f64)> {
    let ratio = |a: Mode, b: Mode| {
        zero_loss_rate(sweep, a)
            .zip(zero_loss_rate(sweep, b))
            .map(|(a, b)| a / b)
    };
    [
        ("conductor_vs_aya", Mode::Conductor, Mode::Aya),
        ("conductor_vs_libbpf", Mode::Conductor, Mode::Libbpf),
        (
            "conductor_perf_vs_aya_perf",
            Mode::ConductorPerf,
            Mode::AyaPerf,
        ),
        (
            "conductor_perf_vs_libbpf_perf",
            Mode::ConductorPerf,
            Mode::LibbpfPerf,
        ),
        (
            "conductor_ring_vs_perf",
            Mode::Conductor,
            Mode::ConductorPerf,
        ),
    ]
    .into_iter()
    .filter_map(|(name, a, b)| ratio(a, b).map(|r| (name, r)))
    .collect()
}

fn register_font() -> Result<()> {
    use plotters::prelude::*;
    const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
    let font = std::fs::read(FONT)
        .with_context(|| format!("cannot read {FONT} (apt-get install fonts-dejavu-core)"))?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow::anyhow!("{FONT} is not a usable font"))
}

/// A bar chart of events/s per consumer at full speed, the events dropped
/// (per second) drawn in red after each bar.
fn plot(path: &Path, results: &[(Mode, Outcome)]) -> Result<()> {
    use plotters::prelude::*;
    register_font()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let dropped_per_sec = |r: &Outcome| r.dropped as f64 / r.elapsed.as_secs_f64();
    let max = results
        .iter()
        .map(|(_, r)| (r.events_per_sec() + dropped_per_sec(r)) / 1e6)
        .fold(0.0, f64::max)
        * 1.15;
    let n = results.len() as i32;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "consumers at full speed (M events/s; red: dropped)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(170)
        .build_cartesian_2d(0.0..max.max(0.1), (0..n - 1).into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => results
                .get(*i as usize)
                .map_or(String::new(), |(m, _)| m.name().to_owned()),
            _ => String::new(),
        })
        .x_desc("M events/s")
        .label_style(("sans-serif", 16))
        .draw()?;
    chart.draw_series(results.iter().enumerate().map(|(i, (_, r))| {
        let i = i as i32;
        let v = r.events_per_sec() / 1e6;
        let mut bar = Rectangle::new(
            [
                (0.0, SegmentValue::Exact(i)),
                (v, SegmentValue::Exact(i + 1)),
            ],
            BLUE.mix(0.6).filled(),
        );
        bar.set_margin(6, 6, 0, 0);
        bar
    }))?;
    chart.draw_series(results.iter().enumerate().map(|(i, (_, r))| {
        let i = i as i32;
        let v = r.events_per_sec() / 1e6;
        let mut bar = Rectangle::new(
            [
                (v, SegmentValue::Exact(i)),
                (v + dropped_per_sec(r) / 1e6, SegmentValue::Exact(i + 1)),
            ],
            RED.mix(0.6).filled(),
        );
        bar.set_margin(6, 6, 0, 0);
        bar
    }))?;
    chart.draw_series(results.iter().enumerate().map(|(i, (_, r))| {
        let v = r.events_per_sec() / 1e6;
        Text::new(
            format!(
                "{v:.2} M/s, {:.2} % dropped, {:.0} ns CPU/event",
                100.0 * r.drop_ratio(),
                r.cpu_ns_per_event()
            ),
            (v * 0.02, SegmentValue::CenterOf(i as i32)),
            ("sans-serif", 15),
        )
    }))?;
    root.present()?;
    Ok(())
}

/// The sweep: share of events dropped against the offered rate, one line
/// per consumer (a logarithmic share, zero drawn at the bottom).
fn plot_sweep(path: &Path, sweep: &[Trial]) -> Result<()> {
    use plotters::prelude::*;
    const FLOOR: f64 = 1e-6;
    let root = BitMapBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_rate = sweep
        .iter()
        .map(|t| t.outcome.offered() / 1e6)
        .fold(0.0, f64::max)
        * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "zero-loss sweep: events dropped against offered rate",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_rate.max(0.1), (FLOOR..1.0).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("offered M events/s")
        .y_desc("dropped (share; bottom: none)")
        .label_style(("sans-serif", 15))
        .draw()?;
    let colours = [BLUE, GREEN, RED, CYAN, MAGENTA, BLACK];
    for (k, mode) in Mode::SWEPT.iter().enumerate() {
        let mut points: Vec<(f64, f64)> = sweep
            .iter()
            .filter(|t| t.mode == *mode)
            .map(|t| (t.outcome.offered() / 1e6, t.outcome.drop_ratio().max(FLOOR)))
            .collect();
        points.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
        let colour = colours[k % colours.len()];
        chart
            .draw_series(std::iter::once(PathElement::new(
                points.clone(),
                colour.stroke_width(2),
            )))?
            .label(mode.name())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, colour.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font(("sans-serif", 15))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
