//! A real plugin against native Rust code doing the same job, in one run
//! (issue 20, goal 4; root needed):
//!
//!   cargo bench --bench plugin_vs_native -- [--secs S] [--rate M] [--rounds N] [--json PATH]
//!
//! The job is exec-counter's: every event (a 40-byte `struct exec_event`
//! from `exec_producer.bpf.c`, paced at `--rate` million events/s by
//! getpgid() calls of a thread pinned to CPU 0) is decoded, its cgroup
//! looked up in the node's Kubernetes workload cache (`Workloads`: a cgroup
//! tree in a temporary directory in the kubelet's layout, `--cgroups` pods
//! with one container each, every one known to the cache) and
//! `execs{comm, namespace, pod, container}` incremented. Consumers, each
//! pinned to CPU 1 with a fresh producer, all in the same run:
//!
//! - `conductor`: the real `exec-counter` component in the host's plugin
//!   thread (batches of up to `--max-batch` events, the SDK's bound series
//!   and per-batch workload lookups), over the same cache;
//! - `native`: aya's `RingBuf::next()` on a thread, `Workloads::by_cgroup_id`
//!   and a prometheus-client `Family` with a typed label set per event, as
//!   one would write it in Rust without thinking about cost;
//! - `native-cached`: the same with the plugin's two caches (workload by
//!   cgroup per drained batch, counter by command and workload), the
//!   fairest native counterpart of the plugin.
//!
//! CPU per event is the consumer thread's CPU time (schedstat) divided by
//! the events it handled; the offered rate is below every consumer's limit,
//! so nothing should be dropped, and every run checks produced == consumed +
//! dropped and that the counter's series add up to the events consumed.
//!
//! Then the labelled increment alone (goal: a plugin's ≤ 2× the host's):
//! `testing_counter_bench` adds 1 to `hits{comm}` (16 label values in turn)
//! `--increments` times per tick, through `Counter::inc` with label values
//! (`labels`), through a `SeriesCache` (`cache`) and through a bound series
//! handed to the host at once (`host-call`); the host's own is
//! `PluginMetrics` (label values as a `Vec<String>`) and a prometheus-client
//! `Family` with a `&'static str` label set. Thread CPU time, median of
//! `--rounds` ticks (at least 5).

#[path = "common/threads.rs"]
mod threads;
use threads::{find_thread, gettid, thread_cpu, wait_until};

use std::collections::{BTreeMap, HashMap};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use aya::maps::{Array, PerCpuArray, RingBuf};
use aya::programs::RawTracePoint;
use aya::{Ebpf, EbpfLoader};
use clap::Parser;
use conductor_api::PluginSpec;
use conductor_node::k8s::{ContainerInfo, Identity, K8sConfig, PodInfo, Workloads};
use conductor_node::metrics::{K8sMetrics, LostLabels, Metrics, SourceLabels};
use conductor_node::plugin::{Plugin, StartOptions};
use conductor_runtime::{Call, PluginHost, Runtime};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::json;

#[derive(Parser, Debug, Clone)]
#[command(about = "exec-counter's job: the real plugin against native Rust code, in one run")]
struct Args {
    /// Seconds each consumer runs per round.
    #[arg(long, default_value_t = 3.0)]
    secs: f64,
    /// Offered rate, in millions of events per second.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// Rounds of every consumer (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Pods (one container, one cgroup each) the events come from.
    #[arg(long, default_value_t = 16)]
    cgroups: u32,
    /// Events emitted per trigger (one syscall).
    #[arg(long, default_value_t = 256)]
    per_trigger: u32,
    /// Ring buffer size in bytes (a power of two, at least a page).
    #[arg(long, default_value_t = 1 << 20)]
    ring_bytes: u32,
    /// Events per guest call.
    #[arg(long, default_value_t = 4096)]
    max_batch: u32,
    /// Increments per tick in the labelled-increment part.
    #[arg(long, default_value_t = 100_000)]
    increments: usize,
    /// Write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const PRODUCER_CPU: usize = 0;
const CONSUMER_CPU: usize = 1;
const POLL: Duration = Duration::from_millis(1);
/// The producer wakes consumers when this much is pending (as the ringbuf bench).
const WAKEUP_BYTES: u64 = 128 << 10;
const MAX_CGROUPS: u32 = 63;
const COMMS: [&str; 16] = [
    "bash", "ls", "git", "cat", "grep", "sed", "awk", "curl", "ssh", "make", "cc", "ld", "rustc",
    "cargo", "python3", "node",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Conductor,
    Native,
    NativeCached,
}

impl Mode {
    const ALL: [Mode; 3] = [Mode::Conductor, Mode::Native, Mode::NativeCached];
    fn name(self) -> &'static str {
        match self {
            Mode::Conductor => "conductor",
            Mode::Native => "native",
            Mode::NativeCached => "native-cached",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Outcome {
    produced: u64,
    consumed: u64,
    dropped: u64,
    cpu: Duration,
}

impl Outcome {
    fn ns_per_event(&self) -> f64 {
        self.cpu.as_nanos() as f64 / self.consumed.max(1) as f64
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    ensure!(root, "this benchmark loads BPF programs: run it as root");
    ensure!(
        (1..=MAX_CGROUPS).contains(&args.cgroups),
        "--cgroups must be in 1..={MAX_CGROUPS}"
    );
    conductor_kernel::object::prepare_host();
    if std::fs::write("/proc/self/autogroup", "-20").is_err() {
        println!(
            "note: could not raise this session's autogroup priority; other sessions' load counts against the consumers"
        );
    }
    let artifacts = artifacts()?;
    let tokio = tokio::runtime::Runtime::new()?;
    let cgroup_root = tempfile::tempdir()?;
    let (workloads, cgroup_ids) =
        tokio.block_on(workload_cache(cgroup_root.path(), args.cgroups))?;
    let bpffs = PathBuf::from(format!("/sys/fs/bpf/conductor-pvn-{}", std::process::id()));
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
        workloads,
        cgroup_ids,
    };

    println!(
        "plugin vs native: exec-counter's job at {:.2} M events/s offered, {} pods, {} s × {} rounds",
        args.rate, args.cgroups, args.secs, args.rounds
    );
    let mut results: BTreeMap<&str, Vec<Outcome>> = BTreeMap::new();
    for round in 0..args.rounds {
        for mode in Mode::ALL {
            let o = bench.run(mode, round)?;
            println!(
                "  round {round} {:<14} produced {:>9}  consumed {:>9}  dropped {:>7}  {:>7.1} ns CPU/event",
                mode.name(),
                o.produced,
                o.consumed,
                o.dropped,
                o.ns_per_event()
            );
            results.entry(mode.name()).or_default().push(o);
        }
    }
    bench.trigger.exit();
    let median = |mode: Mode| -> f64 {
        let mut v: Vec<f64> = results[mode.name()]
            .iter()
            .map(Outcome::ns_per_event)
            .collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (c, n, nc) = (
        median(Mode::Conductor),
        median(Mode::Native),
        median(Mode::NativeCached),
    );
    println!("median CPU per event:");
    println!("  conductor (exec-counter plugin) {c:8.1} ns");
    println!(
        "  native                          {n:8.1} ns   conductor/native        {:5.2}× (goal ≤ 1.5×)",
        c / n
    );
    println!(
        "  native-cached                   {nc:8.1} ns   conductor/native-cached {:5.2}×",
        c / nc
    );

    let inc = bench.labelled_increment()?;
    println!(
        "labelled increment (1 label, 16 series), median of {} ticks of {} (thread CPU):",
        args.rounds.max(5),
        args.increments
    );
    for (name, ns) in &inc {
        println!("  {name:<34} {ns:8.1} ns/increment");
    }
    let get = |k: &str| {
        inc.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| *v)
            .unwrap_or(f64::NAN)
    };
    let host = get("host: PluginMetrics (Vec<String>)");
    println!(
        "  plugin/host: labels {:.2}×, cache {:.2}×, host-call {:.2}× (goal ≤ 2×)",
        get("plugin: labels") / host,
        get("plugin: cache") / host,
        get("plugin: host-call") / host
    );

    if let Some(path) = &args.json {
        let runs = |mode: Mode| -> serde_json::Value {
            results[mode.name()]
                .iter()
                .map(|o| {
                    json!({
                        "produced": o.produced,
                        "consumed": o.consumed,
                        "dropped": o.dropped,
                        "consumer_cpu_ns": o.cpu.as_nanos() as u64,
                        "cpu_ns_per_event": o.ns_per_event(),
                    })
                })
                .collect()
        };
        let doc = json!({
            "plugin_vs_native": {
                "offered_rate": args.rate * 1e6,
                "pods": args.cgroups,
                "secs": args.secs,
                "max_batch": args.max_batch,
                "conductor_cpu_ns_per_event": c,
                "native_cpu_ns_per_event": n,
                "native_cached_cpu_ns_per_event": nc,
                "ratio_conductor_native": c / n,
                "ratio_conductor_native_cached": c / nc,
                "runs": {
                    "conductor": runs(Mode::Conductor),
                    "native": runs(Mode::Native),
                    "native-cached": runs(Mode::NativeCached),
                },
            },
            "labelled_increment": {
                "ns": inc.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                "ratio_plugin_cache_host": get("plugin: cache") / host,
                "ratio_plugin_labels_host": get("plugin: labels") / host,
                "ratio_plugin_host_call_host": get("plugin: host-call") / host,
            },
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// A workload cache over a cgroup tree in the kubelet's systemd layout
/// under `root`, with `n` pods of one container each; the cgroup ids (the
/// container directories' inodes) in pod order.
async fn workload_cache(root: &Path, n: u32) -> Result<(Arc<Workloads>, Vec<u64>)> {
    use std::os::unix::fs::MetadataExt;
    let mut ids = Vec::new();
    let mut pods = Vec::new();
    for i in 0..n {
        let uid = format!("{i:08x}-0000-4000-8000-000000000000");
        let container = format!("{:064x}", 0xc0de_0000_u64 + u64::from(i));
        let dir = root.join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{container}.scope",
            uid.replace('-', "_")
        ));
        std::fs::create_dir_all(&dir)?;
        ids.push(std::fs::metadata(&dir)?.ino());
        pods.push(PodInfo {
            namespace: "bench".into(),
            name: format!("web-{i}"),
            uid,
            node: "bench-node".into(),
            owner: Some(("Deployment".into(), "web".into())),
            labels: vec![("app".into(), "web".into())],
            annotations: vec![],
            ips: vec![],
            host_network: false,
            containers: vec![ContainerInfo {
                name: "app".into(),
                id: container,
                image: "registry.example/web:1".into(),
            }],
        });
    }
    let config = K8sConfig {
        cgroup_root: Some(root.to_owned()),
        min_rescan: Duration::from_secs(1),
        ..K8sConfig::default()
    };
    let workloads = Workloads::start_with_client(None, config, K8sMetrics::default()).await;
    workloads.pods().replace_all(pods);
    for (i, id) in ids.iter().enumerate() {
        match workloads.by_cgroup_id(*id) {
            Identity::Workload {
                pod,
                container: Some(_),
            } if pod.name == format!("web-{i}") => {}
            other => bail!("the workload cache does not know cgroup {id}: {other:?}"),
        }
    }
    Ok((workloads, ids))
}

struct Bench {
    args: Args,
    artifacts: PathBuf,
    bpffs: PathBuf,
    runtime: Arc<Runtime>,
    trigger: Trigger,
    workloads: Arc<Workloads>,
    cgroup_ids: Vec<u64>,
}

struct Producer {
    ebpf: Ebpf,
}

impl Producer {
    /// (records attempted, records dropped by the kernel)
    fn stats(&self) -> Result<(u64, u64)> {
        let stats: Array<_, u64> =
            Array::try_from(self.ebpf.map("exec_stats").context("no exec_stats map")?)?;
        let lost: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map("events_lost").context("no events_lost map")?)?;
        Ok((stats.get(&0, 0)?, lost.get(&0, 0)?.iter().sum()))
    }
}

impl Bench {
    fn producer(&self) -> Result<Producer> {
        let nr = libc::SYS_getpgid as u64;
        let n = self.cgroup_ids.len() as u32;
        let mut ebpf = EbpfLoader::new()
            .override_global("target_tid", &self.trigger.tid, true)
            .override_global("trigger_nr", &nr, true)
            .override_global("per_trigger", &self.args.per_trigger, true)
            .override_global("n_cgroups", &n, true)
            .override_global("wakeup_bytes", &WAKEUP_BYTES, true)
            .map_max_entries("events", self.args.ring_bytes)
            .load_file(self.artifacts.join("exec_producer.bpf.o"))
            .context("cannot load exec_producer.bpf.o (build it with `cargo xtask build`)")?;
        {
            let mut cgroups: Array<_, u64> =
                Array::try_from(ebpf.map_mut("cgroups").context("no cgroups map")?)?;
            for (i, id) in self.cgroup_ids.iter().enumerate() {
                cgroups.set(i as u32, id, 0)?;
            }
        }
        let prog: &mut RawTracePoint = ebpf
            .program_mut("trigger")
            .context("no program `trigger`")?
            .try_into()?;
        prog.load()?;
        prog.attach("sys_enter")?;
        Ok(Producer { ebpf })
    }

    fn run(&self, mode: Mode, round: usize) -> Result<Outcome> {
        let mut producer = self.producer()?;
        let outcome = match mode {
            Mode::Conductor => self.run_plugin(&producer, round)?,
            Mode::Native | Mode::NativeCached => {
                let ring = RingBuf::try_from(producer.ebpf.take_map("events").context("ring")?)?;
                self.run_native(&producer, ring, mode == Mode::NativeCached)?
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

    fn run_native(
        &self,
        producer: &Producer,
        ring: RingBuf<aya::maps::MapData>,
        cached: bool,
    ) -> Result<Outcome> {
        let family = Family::<ExecLabels, Counter>::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = {
            let (stop, family, workloads) = (stop.clone(), family.clone(), self.workloads.clone());
            std::thread::spawn(move || -> Result<(u64, Duration)> {
                let tid = gettid();
                dedicate(tid, CONSUMER_CPU);
                let cpu0 = thread_cpu(tid)?;
                let _ = ready_tx.send(());
                let n = native_consumer(ring, &workloads, &family, cached, &stop)?;
                Ok((n, thread_cpu(tid)? - cpu0))
            })
        };
        ready_rx.recv().context("the native consumer died")?;
        self.trigger
            .run(self.args.rate * 1e6, self.args.per_trigger, self.args.secs)?;
        stop.store(true, Ordering::Release);
        let (consumed, cpu) = thread
            .join()
            .map_err(|_| anyhow::anyhow!("consumer thread panicked"))??;
        let (produced, dropped) = producer.stats()?;
        let mut registry = Registry::default();
        registry.register("execs", "Processes executed", family);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        check_counted(&text, "execs_total", consumed)?;
        Ok(Outcome {
            produced,
            consumed,
            dropped,
            cpu,
        })
    }

    fn run_plugin(&self, producer: &Producer, round: usize) -> Result<Outcome> {
        let name = format!("execs-{round}");
        let pin = self.bpffs.join(&name);
        producer
            .ebpf
            .map("events")
            .context("no events map")?
            .pin(&pin)
            .with_context(|| format!("cannot pin the ring at {}", pin.display()))?;
        let text = format!(
            "name: {name}\ncomponent: {}\nmaps:\n  - name: events\n    pin: {}\n    events: {{maxBatch: {}, maxLatencyMs: 1}}\nlimits: {{callTimeoutMs: 10000}}\n",
            self.artifacts.join("exec_counter.wasm").display(),
            pin.display(),
            self.args.max_batch,
        );
        let spec = PluginSpec::from_yaml(&text)?;
        let metrics = Arc::new(Metrics::new());
        let plugin = Plugin::start_with(
            &self.runtime,
            &metrics,
            &spec,
            Path::new("/"),
            StartOptions {
                workloads: Some(self.workloads.clone()),
                wait_for_init: true,
                ..StartOptions::default()
            },
        )?;
        let _ = std::fs::remove_file(&pin);
        let source = SourceLabels {
            plugin: name.clone(),
            source: "events".into(),
        };
        let received = metrics.host.events_received.get_or_create_owned(&source);
        let lost_host = metrics.host.events_lost.get_or_create_owned(&LostLabels {
            plugin: name.clone(),
            source: "events".into(),
            reason: "host",
        });
        wait_until(Duration::from_secs(30), || {
            plugin.status().phase == conductor_api::Phase::Running
        })
        .context("the plugin did not start")?;
        let tid = find_thread(&format!("plugin-{name}"))?;
        dedicate(tid, CONSUMER_CPU);
        let cpu0 = thread_cpu(tid)?;
        self.trigger
            .run(self.args.rate * 1e6, self.args.per_trigger, self.args.secs)?;
        let (produced, kernel_lost) = producer.stats()?;
        wait_until(Duration::from_secs(60), || {
            received.get() + kernel_lost + lost_host.get() >= produced
        })
        .context("the host did not drain the ring")?;
        // The last batch's call has returned once its events are counted.
        let series = format!("{}__execs_total", name.replace('-', "_"));
        let consumed = received.get();
        wait_until(Duration::from_secs(10), || {
            metrics
                .encode()
                .is_ok_and(|t| check_counted(&t, &series, consumed).is_ok())
        })
        .with_context(|| {
            format!("the plugin's {series} does not add up to the {consumed} events delivered")
        })?;
        let cpu = thread_cpu(tid)? - cpu0;
        plugin.stop();
        Ok(Outcome {
            produced,
            consumed,
            dropped: kernel_lost + lost_host.get(),
            cpu,
        })
    }

    /// ns per labelled increment, by way of recording it.
    fn labelled_increment(&self) -> Result<Vec<(&'static str, f64)>> {
        let metrics = Metrics::new();
        let component = self.artifacts.join("testing_counter_bench.wasm");
        let prepared = self.runtime.prepare(&component)?;
        let n = self.args.increments;
        let rounds = self.args.rounds.max(5);
        let mut out = Vec::new();
        for api in ["labels", "cache", "host-call"] {
            let tick = |increments: usize| -> Result<Duration> {
                let name = format!("inc-{api}-{increments}");
                let config = BTreeMap::from([
                    ("increments".to_owned(), increments.to_string()),
                    ("api".to_owned(), api.to_owned()),
                ]);
                let host = Arc::new(PluginHost::new(
                    &name,
                    config,
                    HashMap::new(),
                    metrics.add_plugin(&name, 10_000),
                ));
                let timeout = Duration::from_secs(60);
                let mut instance = self
                    .runtime
                    .instantiate(&prepared, host, 64 << 20, timeout)
                    .map_err(|e| anyhow::anyhow!("instantiate: {e}"))?;
                instance
                    .call(Call::Init, timeout)
                    .map_err(|e| anyhow::anyhow!("init: {e}"))?;
                for _ in 0..3 {
                    instance
                        .call(Call::Tick, timeout)
                        .map_err(|e| anyhow::anyhow!("tick: {e}"))?;
                }
                let mut times = Vec::new();
                for _ in 0..rounds {
                    let c0 = own_cpu();
                    instance
                        .call(Call::Tick, timeout)
                        .map_err(|e| anyhow::anyhow!("tick: {e}"))?;
                    times.push(own_cpu() - c0);
                }
                times.sort();
                Ok(times[rounds / 2])
            };
            let empty = tick(0)?;
            let full = tick(n)?;
            out.push((
                match api {
                    "labels" => "plugin: labels",
                    "cache" => "plugin: cache",
                    _ => "plugin: host-call",
                },
                full.saturating_sub(empty).as_nanos() as f64 / n as f64,
            ));
        }

        let host_side = metrics.add_plugin("direct", 10_000);
        let hits = host_side.counter("hits", "Increments recorded.", vec!["comm".into()])?;
        let family = Family::<CommLabel, Counter>::default();
        let mut registry_ns = Vec::new();
        let mut family_ns = Vec::new();
        for _ in 0..rounds {
            let c0 = own_cpu();
            for i in 0..n {
                hits.add(vec![COMMS[i % COMMS.len()].to_owned()], 1)?;
            }
            registry_ns.push((own_cpu() - c0).as_nanos() as f64 / n as f64);
            let c0 = own_cpu();
            for i in 0..n {
                family
                    .get_or_create(&CommLabel {
                        comm: COMMS[i % COMMS.len()],
                    })
                    .inc();
            }
            family_ns.push((own_cpu() - c0).as_nanos() as f64 / n as f64);
        }
        let med = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        out.push(("host: PluginMetrics (Vec<String>)", med(registry_ns)));
        out.push(("host: prometheus-client &str label", med(family_ns)));
        Ok(out)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExecLabels {
    comm: String,
    namespace: String,
    pod: String,
    container: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CommLabel {
    comm: &'static str,
}

/// `struct exec_event`: (cgroup id, comm).
fn decode(record: &[u8]) -> Result<(u64, [u8; 16])> {
    ensure!(
        record.len() == 40,
        "a record of {} bytes, not 40",
        record.len()
    );
    let cgroup = u64::from_ne_bytes(record[..8].try_into()?);
    let comm: [u8; 16] = record[24..40].try_into()?;
    Ok((cgroup, comm))
}

fn comm_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(16);
    String::from_utf8_lossy(&comm[..end]).into_owned()
}

/// namespace, pod and container label values of a cgroup (exec-counter's rule).
fn workload_labels(workloads: &Workloads, cgroup: u64) -> [String; 3] {
    match workloads.by_cgroup_id(cgroup) {
        ref id @ Identity::Workload { ref pod, .. } => [
            pod.namespace.clone(),
            pod.name.clone(),
            id.container().map(|c| c.name.clone()).unwrap_or_default(),
        ],
        Identity::Host => Default::default(),
        Identity::Unknown => [
            String::new(),
            String::new(),
            workloads
                .container_id_of_cgroup(cgroup)
                .map(|id| id.chars().take(12).collect())
                .unwrap_or_default(),
        ],
    }
}

fn native_consumer(
    mut ring: RingBuf<aya::maps::MapData>,
    workloads: &Workloads,
    family: &Family<ExecLabels, Counter>,
    cached: bool,
    stop: &AtomicBool,
) -> Result<u64> {
    let fd = ring.as_raw_fd();
    let mut count = 0u64;
    // native-cached: the plugin's caches.
    let mut by_cgroup: HashMap<u64, u32> = HashMap::new();
    let mut ids: HashMap<[String; 3], u32> = HashMap::new();
    let mut labels: Vec<[String; 3]> = Vec::new();
    let mut series: HashMap<([u8; 16], u32), Counter> = HashMap::new();
    loop {
        let stopping = stop.load(Ordering::Acquire);
        by_cgroup.clear();
        while let Some(item) = ring.next() {
            let (cgroup, comm) = decode(&item)?;
            count += 1;
            if !cached {
                let [namespace, pod, container] = workload_labels(workloads, cgroup);
                family
                    .get_or_create(&ExecLabels {
                        comm: comm_str(&comm),
                        namespace,
                        pod,
                        container,
                    })
                    .inc();
                continue;
            }
            let wid = *by_cgroup.entry(cgroup).or_insert_with(|| {
                let values = workload_labels(workloads, cgroup);
                *ids.entry(values.clone()).or_insert_with(|| {
                    labels.push(values);
                    labels.len() as u32 - 1
                })
            });
            series
                .entry((comm, wid))
                .or_insert_with(|| {
                    let [namespace, pod, container] = labels[wid as usize].clone();
                    family
                        .get_or_create(&ExecLabels {
                            comm: comm_str(&comm),
                            namespace,
                            pod,
                            container,
                        })
                        .clone()
                })
                .inc();
        }
        if stopping {
            return Ok(count);
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut pfd, 1, POLL.as_millis() as i32) };
    }
}

/// The samples of `name` in `text` add up to `want`, and come from pods.
fn check_counted(text: &str, name: &str, want: u64) -> Result<()> {
    let mut sum = 0.0;
    for line in text.lines().filter(|l| l.starts_with(&format!("{name}{{"))) {
        ensure!(
            line.contains("namespace=\"bench\"") && line.contains("container=\"app\""),
            "an event was not labelled with its workload: {line}"
        );
        sum += line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("unexpected sample {line}"))?;
    }
    ensure!(
        sum as u64 == want,
        "{name} adds up to {sum}, {want} events were consumed"
    );
    Ok(())
}

/// The thread whose getpgid() calls fire the producer, pinned to CPU 0.
struct Trigger {
    tid: u32,
    state: Arc<AtomicU8>,
    idle: Arc<AtomicBool>,
    interval_ns: Arc<AtomicU64>,
}

const IDLE: u8 = 0;
const FIRE: u8 = 1;
const EXIT: u8 = 2;

impl Trigger {
    fn spawn() -> Result<Self> {
        let state = Arc::new(AtomicU8::new(IDLE));
        let idle = Arc::new(AtomicBool::new(true));
        let interval_ns = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel();
        {
            let (state, idle, interval_ns) = (state.clone(), idle.clone(), interval_ns.clone());
            std::thread::Builder::new()
                .name("pvn-trigger".into())
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
                                    // Trigger k is due at t0 + k × interval.
                                    let due = t0 + Duration::from_nanos(fired * interval);
                                    while Instant::now() < due
                                        && state.load(Ordering::Relaxed) == FIRE
                                    {
                                        std::hint::spin_loop();
                                    }
                                    fired += 1;
                                    // SAFETY: no memory arguments.
                                    unsafe { libc::getpgid(0) };
                                }
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
        })
    }

    /// Fire at `rate` events/s for `secs`.
    fn run(&self, rate: f64, per_trigger: u32, secs: f64) -> Result<()> {
        let interval = (f64::from(per_trigger) / rate * 1e9).max(1.0) as u64;
        self.interval_ns.store(interval, Ordering::Release);
        self.state.store(FIRE, Ordering::Release);
        std::thread::sleep(Duration::from_secs_f64(secs));
        self.state.store(IDLE, Ordering::Release);
        // The last syscall returned, so every record it emitted is committed.
        wait_until(Duration::from_secs(10), || {
            self.idle.load(Ordering::Acquire)
        })
    }

    fn exit(&self) {
        self.state.store(EXIT, Ordering::Release);
    }
}

/// CPU time of the calling thread, exact (schedstat of a running thread
/// advances only at scheduler ticks).
fn own_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: one valid timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Pin thread `tid` to `cpu` at nice -20.
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

fn artifacts() -> Result<PathBuf> {
    let dir = std::env::var_os("CONDUCTOR_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    for f in [
        "exec_producer.bpf.o",
        "exec_counter.wasm",
        "testing_counter_bench.wasm",
    ] {
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
