//! Ring buffer → consumer throughput, native consumers against
//! eBPFConductor, all in one run (root needed):
//!
//!   cargo bench --bench ringbuf -- [--duration SECS] [--json PATH] [--event-size BYTES]
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
//!   event (the design of Inspektor Gadget and wasm-bpf).
//!
//! Every mode must satisfy produced == consumed + dropped exactly (drops are
//! counted by the BPF side when the ring is full, and by the host). Consumer
//! CPU is read from the consumer thread's schedstat. Also measured: plugin
//! cold start (spec to first event handled, warm compile cache) and the
//! resident memory of idle plugins.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use aya::maps::{Array, PerCpuArray, RingBuf};
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
    /// Seconds each consumer runs.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
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
    /// Write the bar chart here [default: target/ringbuf.png in the workspace].
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Idle plugins started to measure resident memory per plugin.
    #[arg(long, default_value_t = 16)]
    idle_plugins: usize,
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
    conductor_kernel::object::prepare_host();
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
    let trigger = Trigger::spawn()?;

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
    for mode in [Mode::Aya, Mode::Libbpf, Mode::Conductor, Mode::PerEvent] {
        let r = bench.run(mode)?;
        println!(
            "  {:<20} {:>12.0} events/s  (produced {}, consumed {}, dropped {})",
            mode.name(),
            r.events_per_sec(),
            r.produced,
            r.consumed,
            r.dropped
        );
        results.push((mode, r));
    }
    let cold_start = bench.cold_start()?;
    let idle_rss = bench.idle_rss()?;
    bench.trigger.exit();

    report(&args, &results, cold_start, idle_rss)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Aya,
    Libbpf,
    Conductor,
    PerEvent,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Aya => "aya",
            Mode::Libbpf => "libbpf",
            Mode::Conductor => "conductor",
            Mode::PerEvent => "conductor-per-event",
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Outcome {
    produced: u64,
    consumed: u64,
    /// Kernel (ring full) plus host drops.
    dropped: u64,
    /// From the first trigger to the last event consumed.
    elapsed: Duration,
    consumer_cpu: Duration,
    producer_cpu: Duration,
    /// Guest calls (conductor modes).
    batches: Option<u64>,
}

impl Outcome {
    fn events_per_sec(&self) -> f64 {
        self.consumed as f64 / self.elapsed.as_secs_f64()
    }
    fn cpu_ns_per_event(&self) -> f64 {
        self.consumer_cpu.as_nanos() as f64 / self.consumed.max(1) as f64
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
    fn stats(&self) -> Result<(u64, u64)> {
        let stats: Array<_, u64> =
            Array::try_from(self.ebpf.map("seq_stats").context("no seq_stats map")?)?;
        let lost: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("seq_ring_lost").context("no lost map")?)?;
        let lost = lost.get(&0, 0)?.iter().sum();
        Ok((stats.get(&0, 0)?, lost))
    }
}

impl Bench {
    fn producer(&self) -> Result<Producer> {
        let a = &self.args;
        let nr = libc::SYS_getpgid as u64;
        let mut ebpf = EbpfLoader::new()
            .override_global("target_tid", &self.trigger.tid, true)
            .override_global("trigger_nr", &nr, true)
            .override_global("per_trigger", &a.per_trigger, true)
            .override_global("record_size", &a.event_size, true)
            .override_global("wakeup_bytes", &a.wakeup_bytes, true)
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

    fn run(&self, mode: Mode) -> Result<Outcome> {
        let mut producer = self.producer()?;
        let pin = self.bpffs.join(format!("ring-{}", mode.name()));
        let outcome = match mode {
            Mode::Aya => {
                let ring = RingBuf::try_from(producer.ebpf.take_map("seq_ring").context("ring")?)?;
                self.run_thread(&producer, move |stop| aya_consumer(ring, stop))?
            }
            Mode::Libbpf => {
                pin_ring(&producer, &pin)?;
                let pin2 = pin.clone();
                let r = self.run_thread(&producer, move |stop| libbpf_consumer(&pin2, stop));
                let _ = std::fs::remove_file(&pin);
                r?
            }
            Mode::Conductor | Mode::PerEvent => {
                pin_ring(&producer, &pin)?;
                let max_batch = if mode == Mode::PerEvent {
                    1
                } else {
                    self.args.max_batch
                };
                let r = self.run_plugin(&producer, &pin, max_batch);
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

    /// Run a native consumer on a thread of its own: it returns what it
    /// consumed once `stop` is set and the ring is empty.
    fn run_thread<F>(&self, producer: &Producer, consumer: F) -> Result<Outcome>
    where
        F: FnOnce(&AtomicBool) -> Result<u64> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let (tid_tx, tid_rx) = mpsc::channel();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let thread: JoinHandle<Result<(u64, Duration, Instant)>> = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let tid = gettid();
                dedicate(tid, CONSUMER_CPU);
                let _ = tid_tx.send(tid);
                let _ = go_rx.recv();
                let cpu0 = thread_cpu(tid)?;
                let consumed = consumer(&stop)?;
                Ok((consumed, thread_cpu(tid)? - cpu0, Instant::now()))
            })
        };
        tid_rx.recv().context("consumer thread died")?;
        let _ = go_tx.send(());
        let (started, producer_cpu) = self.trigger.run_for(self.args.duration)?;
        stop.store(true, Ordering::Release);
        let (consumed, consumer_cpu, ended) = thread
            .join()
            .map_err(|_| anyhow::anyhow!("consumer thread panicked"))??;
        let (produced, dropped) = producer.stats()?;
        Ok(Outcome {
            produced,
            consumed,
            dropped,
            elapsed: ended - started,
            consumer_cpu,
            producer_cpu,
            batches: None,
        })
    }

    fn spec(&self, name: &str, pin: Option<&Path>, max_batch: u32) -> Result<PluginSpec> {
        let component = self.artifacts.join("testing_seq_sum.wasm");
        let maps = match pin {
            Some(pin) => format!(
                "maps:\n  - name: seq_ring\n    pin: {}\n    events: {{maxBatch: {max_batch}, maxLatencyMs: 1}}\n",
                pin.display()
            ),
            None => String::new(),
        };
        let text = format!(
            "name: {name}\ncomponent: {}\n{maps}limits: {{callTimeoutMs: 10000}}\n",
            component.display()
        );
        Ok(PluginSpec::from_yaml(&text)?)
    }

    fn run_plugin(&self, producer: &Producer, pin: &Path, max_batch: u32) -> Result<Outcome> {
        let name = if max_batch == 1 { "bench-e" } else { "bench-b" };
        let metrics = Arc::new(Metrics::new());
        let spec = self.spec(name, Some(pin), max_batch)?;
        let plugin = Plugin::start(&self.runtime, &metrics, &spec, Path::new("/"))?;
        let source = SourceLabels {
            plugin: name.into(),
            source: "seq_ring".into(),
        };
        let received = metrics.host.events_received.get_or_create_owned(&source);
        let batches = metrics.host.batches.get_or_create_owned(&source);
        let lost_host = metrics.host.events_lost.get_or_create_owned(&LostLabels {
            plugin: name.into(),
            source: "seq_ring".into(),
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
        let (started, producer_cpu) = self.trigger.run_for(self.args.duration)?;
        let (produced, kernel_lost) = producer.stats()?;
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
        plugin.stop();
        Ok(Outcome {
            produced,
            consumed,
            dropped: kernel_lost + lost_host.get(),
            elapsed: ended - started,
            consumer_cpu,
            producer_cpu,
            batches: Some(batches),
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
            &self.spec("warm", None, 1)?,
            Path::new("/"),
        )?
        .stop();
        let producer = self.producer()?;
        let pin = self.bpffs.join("ring-cold");
        pin_ring(&producer, &pin)?;
        self.trigger.fire_once()?;
        let spec = self.spec("cold", Some(&pin), self.args.max_batch)?;
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
            &self.spec("idle", None, 1)?,
            Path::new("/"),
        )?;
        std::thread::sleep(Duration::from_millis(200));
        let before = rss_bytes()?;
        let mut plugins = Vec::new();
        for i in 0..n {
            let p = Plugin::start(
                &self.runtime,
                &metrics,
                &self.spec(&format!("idle-{i}"), None, 1)?,
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

fn aya_consumer(mut ring: RingBuf<aya::maps::MapData>, stop: &AtomicBool) -> Result<u64> {
    let fd = ring.as_raw_fd();
    let mut count = 0u64;
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

fn libbpf_consumer(pin: &Path, stop: &AtomicBool) -> Result<u64> {
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
    loop {
        let stopping = stop.load(Ordering::Acquire);
        ring.poll(POLL)?;
        if stopping {
            ring.consume()?;
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

fn pin_ring(producer: &Producer, path: &Path) -> Result<()> {
    producer
        .ebpf
        .map("seq_ring")
        .context("no seq_ring")?
        .pin(path)
        .with_context(|| format!("cannot pin the ring at {}", path.display()))
}

/// The thread whose getpgid() calls fire the producer, pinned to CPU 0.
struct Trigger {
    tid: u32,
    state: Arc<AtomicU8>,
    /// Set by the thread when it has left the firing loop.
    idle: Arc<AtomicBool>,
}

const IDLE: u8 = 0;
const FIRE: u8 = 1;
const ONCE: u8 = 2;
const EXIT: u8 = 3;

impl Trigger {
    fn spawn() -> Result<Self> {
        let state = Arc::new(AtomicU8::new(IDLE));
        let idle = Arc::new(AtomicBool::new(true));
        let (tx, rx) = mpsc::channel();
        {
            let (state, idle) = (state.clone(), idle.clone());
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
                                while state.load(Ordering::Relaxed) == FIRE {
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
        Ok(Self { tid, state, idle })
    }

    /// Fire for `secs`; returns when firing started and the CPU it cost.
    fn run_for(&self, secs: f64) -> Result<(Instant, Duration)> {
        let cpu0 = thread_cpu(self.tid)?;
        let started = Instant::now();
        self.state.store(FIRE, Ordering::Release);
        std::thread::sleep(Duration::from_secs_f64(secs));
        self.state.store(IDLE, Ordering::Release);
        // The last syscall returned, so every record it emitted is committed.
        wait_until(Duration::from_secs(10), || {
            self.idle.load(Ordering::Acquire)
        })?;
        Ok((started, thread_cpu(self.tid)? - cpu0))
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

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> Result<()> {
    let t0 = Instant::now();
    while !done() {
        if t0.elapsed() > limit {
            bail!("gave up after {limit:?}");
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    Ok(())
}

fn gettid() -> u32 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::gettid() as u32 }
}

/// Time the thread `tid` of this process has spent on a CPU (schedstat).
fn thread_cpu(tid: u32) -> Result<Duration> {
    let path = format!("/proc/self/task/{tid}/schedstat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("unexpected {path}: {text:?}"))?;
    Ok(Duration::from_nanos(ns))
}

/// The thread of this process named `name`.
fn find_thread(name: &str) -> Result<u32> {
    for entry in std::fs::read_dir("/proc/self/task")? {
        let entry = entry?;
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name
            && let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok())
        {
            return Ok(tid);
        }
    }
    bail!("no thread named {name}")
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

fn report(
    args: &Args,
    results: &[(Mode, Outcome)],
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
        "| consumer | produced | consumed | dropped | events/s | consumer CPU | consumer ns/event | producer CPU | producer ns/event |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (mode, r) in results {
        println!(
            "| {} | {} | {} | {} | {:.2} M | {:.0} % | {:.1} | {:.0} % | {:.1} |",
            mode.name(),
            r.produced,
            r.consumed,
            r.dropped,
            r.events_per_sec() / 1e6,
            100.0 * r.consumer_cpu.as_secs_f64() / r.elapsed.as_secs_f64(),
            r.cpu_ns_per_event(),
            100.0 * r.producer_cpu.as_secs_f64() / window,
            r.producer_cpu.as_nanos() as f64 / r.produced.max(1) as f64,
        );
    }
    println!();
    for ((name, v), (_, w)) in ratios.iter().zip(&per_cpu) {
        println!("{name} = {v:.2} (events/s), {w:.2} (events per CPU second)");
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
                    "producer_seconds": r.producer_cpu.as_secs_f64(),
                    "producer_utilisation": r.producer_cpu.as_secs_f64() / window,
                },
                "elapsed_seconds": r.elapsed.as_secs_f64(),
                "guest_calls": r.batches,
            }),
        );
    }
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
            "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        },
        "consumers": consumers,
        "ratios": ratios,
        "ratios_per_cpu_second": per_cpu,
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
    Ok(())
}

/// A bar chart of events/s per consumer.
fn plot(path: &Path, results: &[(Mode, Outcome)]) -> Result<()> {
    use plotters::prelude::*;
    const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
    let font = std::fs::read(FONT)
        .with_context(|| format!("cannot read {FONT} (apt-get install fonts-dejavu-core)"))?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow::anyhow!("{FONT} is not a usable font"))?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let root = BitMapBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = results
        .iter()
        .map(|(_, r)| r.events_per_sec() / 1e6)
        .fold(0.0, f64::max)
        * 1.15;
    let n = results.len() as i32;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "ring buffer consumers, same producer (M events/s)",
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
        let v = r.events_per_sec() / 1e6;
        Text::new(
            format!("{v:.2} M/s, {:.0} ns CPU/event", r.cpu_ns_per_event()),
            (v * 0.02, SegmentValue::CenterOf(i as i32)),
            ("sans-serif", 15),
        )
    }))?;
    root.present()?;
    Ok(())
}
