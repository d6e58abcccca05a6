//! One running plugin: its kernel object, event sources and wasm instance,
//! driven by a thread of its own.
//!
//! The thread waits (epoll, via mio) on the plugin's ring/perf buffers and a
//! command channel, drains ready sources into batches and calls the plugin
//! once per batch. A fault (trap, timeout, memory limit, returned error)
//! drops the instance; the kernel side stays attached, events arriving in
//! the meantime are drained and counted as lost, and a fresh instance is
//! started after an exponential backoff. Nothing a plugin does can reach
//! another plugin's thread or the host's.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use conductor_api::files::FileCaps;
use conductor_api::{Loader, Phase, PluginSpec, SpecError};
use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use conductor_kernel::events::EventSource;
use conductor_kernel::layout::Checked;
use conductor_kernel::object::{self as bpf, BpfError, LoadedObject};
use conductor_runtime::{
    Call, EventBatch, Fault, Instance, PluginHost, Prepared, ReadOnlyDir, Runtime, RuntimeError,
    Tier,
};

use crate::cpu::CpuAccount;
use crate::k8s::Workloads;
use crate::metrics::{Metrics, PluginMetrics};
use crate::wiring::{self, KernelSide, Wiring};

const WAKER: Token = Token(usize::MAX);
/// A timer for deadlines closer than epoll's millisecond timeouts can express.
const TIMER: Token = Token(usize::MAX - 1);
/// First restart delay after a fault; doubles up to `restart.maxBackoffSeconds`.
const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Faults in a row from which the plugin is `CrashLoopBackOff`, not `Restarting`.
const CRASH_LOOP_AFTER: u32 = 3;
/// A plugin that ran this long without a fault restarts its backoff from the start.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// Batches taken from one source before the loop looks at the others and at
/// commands again; a flooded source cannot starve the rest.
const ROUNDS_PER_WAKE: usize = 8;
/// How often drop counters and memory gauges are refreshed when idle.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Component(#[from] RuntimeError),
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error(transparent)]
    Bpfman(#[from] crate::bpfman::BpfmanError),
    #[error("plugin {plugin:?}: map {map:?}: {cause}")]
    Map {
        plugin: String,
        map: String,
        cause: String,
    },
    #[error("plugin {plugin:?}: readOnlyPaths[{index}]: {cause}")]
    ReadOnlyPath {
        plugin: String,
        index: usize,
        cause: String,
    },
    #[error("plugin {plugin:?}: cannot start: {cause}")]
    Start { plugin: String, cause: String },
}

#[derive(Debug, Clone)]
pub struct Status {
    /// `Loading` until the first instance ran `init`, then `Running`,
    /// `Restarting` after a fault, `CrashLoopBackOff` after faults in a
    /// row, `Failed` once `restart.giveUpAfter` faults in a row gave up,
    /// `Stopped` once stopped.
    pub phase: Phase,
    pub since: SystemTime,
    pub restarts: u64,
    pub last_error: Option<String>,
    /// sha256 of the component.
    pub digest: String,
    /// While `Restarting` or `CrashLoopBackOff`: when the next instance starts.
    pub next_retry: Option<SystemTime>,
}

enum Command {
    Collect(Sender<()>),
    /// Replace the instance by one of another component or config (see [`Plugin::swap`]).
    Swap(Box<Swap>),
    /// Take the event sources of maps re-opened at new pins (see
    /// [`Plugin::repoint`]).
    Repoint(Box<Wiring>, Sender<()>),
    Stop,
}

/// A new version of the plugin's user side, instantiated and initialised on
/// the plugin's thread before it replaces the running instance.
struct Swap {
    prepared: Prepared,
    host: Arc<PluginHost>,
    memory_limit: usize,
    call_timeout: Duration,
    tick: Option<Duration>,
    cpu_limit: Option<u32>,
    restart: conductor_api::Restart,
    reply: Sender<Result<(), String>>,
}

/// Called (on the plugin's thread) after each change of its [`Status`].
pub type Notify = Arc<dyn Fn() + Send + Sync>;

/// How [`Plugin::start_with`] starts a plugin.
#[derive(Default, Clone)]
pub struct StartOptions {
    /// Told about every status change.
    pub notify: Option<Notify>,
    /// What the plugin's `k8s` lookups answer from (default: nothing,
    /// every lookup answers `unknown`).
    pub workloads: Option<Arc<Workloads>>,
    /// Return only once the first instance has been created and its `init`
    /// has returned; if that fails, stop everything and return the error
    /// (an atomic load). Without it a failing first `init` is a fault like
    /// any other: the plugin stays loaded and restarts after a backoff.
    pub wait_for_init: bool,
    /// The caps on the component and bytecode files.
    pub file_caps: FileCaps,
}

/// Handle on a running plugin; dropping it stops the plugin.
pub struct Plugin {
    name: String,
    host: Arc<PluginHost>,
    commands: Sender<Command>,
    waker: Arc<Waker>,
    status: Arc<Mutex<Status>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    metrics: Arc<Metrics>,
    /// The event sources' names (the host's series are labelled by them).
    sources: Vec<String>,
    /// With `clusterBpfApplication`: the pinned maps, re-pointed by
    /// [`Plugin::repoint`] when the node agent sends new pins.
    repin: Option<HashMap<String, Arc<crate::follow::Repointable>>>,
}

impl Plugin {
    /// Load and start the plugin `spec`; relative paths in it are resolved
    /// against `base_dir`. Either everything is set up (component compiled
    /// and checked, programs verified and attached, maps opened, thread
    /// running) or nothing is left behind and the error says why.
    pub fn start(
        runtime: &Arc<Runtime>,
        metrics: &Arc<Metrics>,
        spec: &PluginSpec,
        base_dir: &Path,
    ) -> Result<Self, LoadError> {
        Self::start_with(runtime, metrics, spec, base_dir, StartOptions::default())
    }

    /// [`Plugin::start`] with options.
    pub fn start_with(
        runtime: &Arc<Runtime>,
        metrics: &Arc<Metrics>,
        spec: &PluginSpec,
        base_dir: &Path,
        options: StartOptions,
    ) -> Result<Self, LoadError> {
        spec.validate()?;
        let name = spec.name.clone();

        let mut resolved = spec.clone();
        resolved.resolve_paths(base_dir);
        let spec = &resolved;
        let read_only_dirs = read_only_dirs(spec)?;

        // The component first: a bad component must fail before the kernel
        // is touched.
        // The memory limit is checked before the compile.
        let prepared = runtime.prepare_limited(
            Path::new(&spec.component),
            options.file_caps.component_bytes,
            Some(spec.limits.memory_mib),
        )?;
        // The records the component decodes against the object's C structs
        // (BTF), before the kernel is touched.
        if let Some(b) = spec
            .bytecode
            .as_ref()
            .filter(|b| b.loader != Loader::Bpfman)
        {
            let checked = bpf::check_records(
                Path::new(&b.path),
                &prepared.records,
                options.file_caps.bytecode_bytes,
            )?;
            for record in checked {
                match record {
                    Checked::NoBtf { rust } => tracing::warn!(
                        plugin = %name,
                        "event record {rust} is not checked: the BPF object has no BTF struct of that name; add CONDUCTOR_RECORD(<its C name>) from conductor.h to the BPF C"
                    ),
                    Checked::Matches { rust, c } => {
                        tracing::debug!(plugin = %name, "event record {rust} matches struct {c}")
                    }
                }
            }
        }

        // `loader: bpfman`: bpfman loads and attaches the programs and the
        // maps are opened from its pins.
        let bpfman = match &spec.bytecode {
            Some(b) if b.loader == Loader::Bpfman => {
                Some(crate::bpfman::Bpfman::from_env().load(spec, b)?)
            }
            _ => None,
        };
        let object =
            match &spec.bytecode {
                Some(b) if b.loader == Loader::Bpfman => None,
                Some(b) => {
                    // Uprobe targets inside a pod's container, through one of
                    // its processes (see `crate::container_paths`).
                    let disabled;
                    let workloads = match &options.workloads {
                        Some(w) => w.as_ref(),
                        None => {
                            disabled = Workloads::disabled();
                            disabled.as_ref()
                        }
                    };
                    let programs = crate::container_paths::resolve(&b.programs, workloads)
                        .map_err(|cause| LoadError::Start {
                            plugin: name.clone(),
                            cause,
                        })?;
                    Some(bpf::load_capped(
                        Path::new(&b.path),
                        &programs,
                        &b.global_data,
                        options.file_caps.bytecode_bytes,
                    )?)
                }
                None => None,
            };

        let mut repin = None;
        let Wiring {
            granted,
            mut kernel,
        } = match (&bpfman, &spec.bpfman_program) {
            (Some(loaded), _) => wiring::wire(&loaded.pinned_spec(spec), None)?,
            // Maps of a program someone else loaded through bpfman, by
            // name: the plugin's thread follows it (see `crate::follow`).
            (None, Some(selector)) => {
                let (follow, mut wiring) = crate::follow::Follow::start(spec, selector)?;
                wiring.kernel.follow = Some(follow);
                wiring
            }
            // A ClusterBpfApplication's program: the node agent resolved
            // the pins and sends new ones when bpfman reloads it.
            (None, None) if spec.cluster_bpf_application.is_some() => {
                if let Some(g) = spec
                    .maps
                    .iter()
                    .find(|g| g.pin.is_none() && g.from.is_none())
                {
                    return Err(LoadError::Start {
                        plugin: spec.name.clone(),
                        cause: format!(
                            "map {:?} has no pin: clusterBpfApplication is resolved to pins by the node agent (conductor-operator node) from bpfman-operator's ClusterBpfApplicationState; outside a cluster give each map a pin, or name the program with bpfmanProgram",
                            g.name
                        ),
                    });
                }
                let mut wiring = wiring::wire(spec, None)?;
                let pinned = spec.maps.iter().filter(|g| g.pin.is_some());
                repin = Some(crate::follow::repointable(
                    &mut wiring,
                    pinned.map(|g| g.name.as_str()),
                ));
                wiring
            }
            (None, None) => wiring::wire(spec, object)?,
        };
        kernel.bpfman = bpfman;
        if let Some(follow) = kernel.follow.as_mut() {
            follow.set_gauge(metrics.host.maps_source_up(&name));
        }
        let sources: Vec<String> = kernel.sources.iter().map(|s| s.name().to_owned()).collect();

        let plugin_metrics = metrics.add_plugin(&name, spec.limits.max_series_per_metric);
        let workloads = options
            .workloads
            .clone()
            .unwrap_or_else(Workloads::disabled);
        let host = Arc::new(
            PluginHost::new(&name, spec.config.clone(), granted, plugin_metrics.clone())
                .with_workloads(workloads)
                .with_read_only_dirs(read_only_dirs),
        );

        // From here on a failure must also forget the plugin's metrics.
        let fail = |cause: String| {
            metrics.remove_plugin(&name, &sources);
            LoadError::Start {
                plugin: name.clone(),
                cause,
            }
        };
        let mut worker = Worker::new(
            runtime.clone(),
            metrics,
            spec,
            prepared,
            host.clone(),
            plugin_metrics,
            kernel,
        )
        .map_err(|e| fail(e.to_string()))?;
        worker.notify = options.notify;
        let (started_tx, started_rx) = crossbeam_channel::bounded(1);
        if options.wait_for_init {
            worker.first_start = Some(started_tx);
        }
        let (tx, rx) = crossbeam_channel::unbounded();
        let waker = worker.waker.clone();
        let status = worker.status.clone();
        let thread = std::thread::Builder::new()
            .name(format!("plugin-{name}"))
            .spawn(move || worker.run(rx))
            .map_err(|e| fail(format!("cannot spawn thread: {e}")))?;
        let plugin = Self {
            name,
            host,
            commands: tx,
            waker,
            status,
            thread: Mutex::new(Some(thread)),
            metrics: metrics.clone(),
            sources,
            repin,
        };
        if options.wait_for_init {
            // The thread answers once `init` returned (or the instance could
            // not be created); a thread that died answers by hanging up.
            let outcome = started_rx
                .recv()
                .unwrap_or_else(|_| Err("the plugin's thread exited".to_owned()));
            if let Err(cause) = outcome {
                let name = plugin.name.clone();
                plugin.stop();
                return Err(LoadError::Start {
                    plugin: name,
                    cause,
                });
            }
        }
        Ok(plugin)
    }

    /// Replace the plugin's user side (component and config, memory and
    /// call-time limits, tick interval) by `spec`'s without touching its
    /// kernel side: programs stay attached and maps and event sources stay
    /// open, so no event is lost. The new instance is created and its `init`
    /// run on the plugin's thread between two batches; only if that works
    /// does the old instance run `collect` one last time (so the metrics it
    /// buffered are published) and go away. If it fails the old instance
    /// keeps running and the error is returned.
    ///
    /// The caller checks that the kernel side (`bytecode`, `maps`) and
    /// `limits.maxSeriesPerMetric` are unchanged.
    pub fn swap(&self, spec: &PluginSpec, prepared: Prepared) -> Result<(), String> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let swap = Swap {
            prepared,
            host: Arc::new(self.host.with_config(spec.config.clone())),
            memory_limit: (spec.limits.memory_mib as usize) << 20,
            call_timeout: Duration::from_millis(u64::from(spec.limits.call_timeout_ms)),
            tick: spec.tick_interval_ms.map(Duration::from_millis),
            cpu_limit: spec.limits.cpu,
            restart: spec.restart.clone(),
            reply,
        };
        self.commands
            .send(Command::Swap(Box::new(swap)))
            .map_err(|_| "the plugin's thread has exited".to_owned())?;
        let _ = self.waker.wake();
        answer
            .recv()
            .unwrap_or_else(|_| Err("the plugin's thread exited during the update".to_owned()))
    }

    /// Re-open the maps at the pins of `spec`, which differs from the
    /// running spec only in them (the node agent's update when bpfman
    /// reloaded a `clusterBpfApplication`'s program under a new id): the
    /// granted maps are re-pointed and the event sources replaced under
    /// the running instance, which keeps its state (no new instance, no
    /// `init`). What the old rings still hold is delivered first. If the
    /// new pins cannot be opened nothing changes and the error says why.
    pub fn repoint(&self, spec: &PluginSpec) -> Result<(), String> {
        let Some(maps) = &self.repin else {
            return Err("only a plugin with clusterBpfApplication re-points its maps".into());
        };
        let wiring = wiring::wire(spec, None).map_err(|e| e.to_string())?;
        crate::follow::repoint(maps, &wiring, &self.name);
        let (reply, done) = crossbeam_channel::bounded(1);
        self.commands
            .send(Command::Repoint(Box::new(wiring), reply))
            .map_err(|_| "the plugin's thread has exited".to_owned())?;
        let _ = self.waker.wake();
        done.recv()
            .map_err(|_| "the plugin's thread exited during the update".to_owned())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Ask the plugin to run its `collect` export; the receiver fires when done.
    pub fn request_collect(&self) -> Receiver<()> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.commands.send(Command::Collect(tx)).is_ok() {
            let _ = self.waker.wake();
        }
        rx
    }

    /// Stop the plugin: its instance is dropped and its programs detached.
    /// Returns once that is done; stopping again does nothing.
    pub fn stop(&self) {
        self.shutdown();
    }

    fn shutdown(&self) {
        let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        let _ = self.commands.send(Command::Stop);
        let _ = self.waker.wake();
        if thread.join().is_err() {
            tracing::error!(plugin = %self.name, "plugin thread panicked");
        }
        self.metrics.remove_plugin(&self.name, &self.sources);
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Per-source state of the worker.
struct Source {
    /// The source's map name, as the plugin's batches carry it.
    name: String,
    source: EventSource,
    /// `events.maxLatencyMs`: drain at least this often, wakeup or not.
    max_latency: Option<Duration>,
    /// When the source is drained next if no wakeup comes first.
    drain_by: Option<Instant>,
    /// The last drain stopped because the batch was full: drain again
    /// without waiting for a wakeup.
    pending: bool,
    /// Whether the source's descriptors are in the epoll set. A perf event
    /// array whose samples are gathering (see [`Delivered::gather`]) is
    /// taken out, so the kernel's wakeup per sample wakes nobody; it is
    /// drained by its deadline and put back once a drain finds nothing.
    registered: bool,
    /// Events lost since the plugin last received a batch.
    lost_for_plugin: u64,
    received: Counter,
    batches: Counter,
    polled: Counter<f64, std::sync::atomic::AtomicU64>,
    lost_kernel: Counter,
    lost_host: Counter,
}

struct CallMetrics {
    init: Histogram,
    on_events: Histogram,
    tick: Histogram,
    collect: Histogram,
}

struct Worker {
    name: String,
    runtime: Arc<Runtime>,
    prepared: Prepared,
    /// Moving to optimised code failed once; not tried again.
    tier_up_failed: bool,
    host: Arc<PluginHost>,
    /// The metrics the plugin declared (through `host`).
    plugin_metrics: Arc<PluginMetrics>,
    memory_limit: usize,
    call_timeout: Duration,
    /// `limits.cpu`, in millicores.
    cpu_limit: Option<u32>,
    instance: Option<Instance>,
    running_since: Instant,
    restart_at: Option<Instant>,
    backoff: Duration,
    /// `restart.maxBackoffSeconds` and `restart.giveUpAfter`.
    max_backoff: Duration,
    give_up_after: Option<u32>,
    /// Faults since the plugin last ran for `HEALTHY_AFTER` (or was updated).
    faults_in_a_row: u32,
    tick: Option<(Duration, Instant)>,
    sources: Vec<Source>,
    poll: Poll,
    waker: Arc<Waker>,
    /// Wakes the poll for sub-millisecond deadlines (a source gathering
    /// records that arrived during a call, see [`EventSource::deliver`]).
    timer: TimerFd,
    status: Arc<Mutex<Status>>,
    calls: CallMetrics,
    faults: Arc<Metrics>,
    restarts: Counter,
    memory: Gauge,
    up: Gauge,
    /// `conductor_plugin_log_lines_suppressed_total`, and what of the
    /// budget's count it has been told.
    log_suppressed: Counter,
    log_suppressed_seen: u64,
    /// The thread's CPU time and `limits.cpu` budget (see [`crate::cpu`]).
    cpu: CpuAccount,
    /// Over its CPU budget: no call into the plugin before then.
    paused_until: Option<Instant>,
    cpu_used: Counter<f64, std::sync::atomic::AtomicU64>,
    cpu_throttled: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Told about status changes.
    notify: Option<Notify>,
    /// Told the outcome of the first start, if someone waits for it.
    first_start: Option<Sender<Result<(), String>>>,
    /// Keeps the programs attached for as long as the worker runs; its
    /// interface and cgroup patterns are rescanned on each housekeeping
    /// round.
    object: Option<LoadedObject>,
    /// The same for programs bpfman loaded: unloads them when dropped.
    _bpfman: Option<crate::bpfman::Loaded>,
    /// The bpfman program the maps come from (`bpfmanProgram`), checked
    /// on each housekeeping round.
    follow: Option<crate::follow::Follow>,
}

impl Worker {
    fn new(
        runtime: Arc<Runtime>,
        metrics: &Arc<Metrics>,
        spec: &PluginSpec,
        prepared: Prepared,
        host: Arc<PluginHost>,
        plugin_metrics: Arc<PluginMetrics>,
        kernel: KernelSide,
    ) -> std::io::Result<Self> {
        let KernelSide {
            sources,
            object,
            bpfman,
            follow,
        } = kernel;
        let name = spec.name.clone();
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        poll.registry().register(
            &mut SourceFd(&timer.as_fd().as_raw_fd()),
            TIMER,
            Interest::READABLE,
        )?;
        let source_names: Vec<String> = sources.iter().map(|s| s.name().to_owned()).collect();
        let series = metrics.host.plugin_series(&name, &source_names);
        let mut workers_sources = Vec::with_capacity(sources.len());
        for (i, (source, series)) in sources.into_iter().zip(series.sources).enumerate() {
            for fd in source.fds() {
                poll.registry()
                    .register(&mut SourceFd(&fd), Token(i), Interest::READABLE)?;
            }
            let max_latency = spec
                .map_grant(source.name())
                .and_then(|g| g.events.as_ref())
                .and_then(|e| e.max_latency_ms)
                .map(|ms| Duration::from_millis(u64::from(ms)));
            workers_sources.push(Source {
                name: source.name().to_owned(),
                max_latency,
                drain_by: None,
                // Events may have arrived before registration; edge-triggered
                // polling would never report them.
                pending: true,
                registered: true,
                lost_for_plugin: 0,
                received: series.received,
                batches: series.batches,
                polled: series.polled,
                lost_kernel: series.lost_kernel,
                lost_host: series.lost_host,
                source,
            });
        }
        let status = Arc::new(Mutex::new(Status {
            phase: Phase::Loading,
            since: SystemTime::now(),
            restarts: 0,
            last_error: None,
            digest: prepared.digest.clone(),
            next_retry: None,
        }));
        Ok(Self {
            calls: {
                let [init, on_events, tick, collect] = series.calls;
                CallMetrics {
                    init,
                    on_events,
                    tick,
                    collect,
                }
            },
            restarts: series.restarts,
            log_suppressed: series.log_suppressed,
            log_suppressed_seen: 0,
            // Measured again once the plugin's thread runs.
            cpu: CpuAccount::new(spec.limits.cpu),
            paused_until: None,
            cpu_used: series.cpu,
            cpu_throttled: series.cpu_throttled,
            memory: series.memory,
            up: series.up,
            faults: metrics.clone(),
            name,
            runtime,
            prepared,
            tier_up_failed: false,
            host,
            plugin_metrics,
            memory_limit: (spec.limits.memory_mib as usize) << 20,
            call_timeout: Duration::from_millis(u64::from(spec.limits.call_timeout_ms)),
            cpu_limit: spec.limits.cpu,
            instance: None,
            running_since: Instant::now(),
            restart_at: Some(Instant::now()),
            backoff: INITIAL_BACKOFF,
            max_backoff: Duration::from_secs(u64::from(spec.restart.max_backoff_seconds)),
            give_up_after: spec.restart.give_up_after,
            faults_in_a_row: 0,
            tick: spec.tick_interval_ms.map(|ms| {
                (
                    Duration::from_millis(ms),
                    Instant::now() + Duration::from_millis(ms),
                )
            }),
            sources: workers_sources,
            poll,
            waker,
            timer,
            status,
            notify: None,
            first_start: None,
            object,
            _bpfman: bpfman,
            follow,
        })
    }

    fn run(mut self, commands: Receiver<Command>) {
        let mut events = Events::with_capacity(64);
        let mut first_start = true;
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING;
        // The clock of this thread, not of the one that created the worker.
        self.cpu = CpuAccount::new(self.cpu_limit);
        loop {
            let now = Instant::now();
            // Over its CPU budget the plugin is not called (no restart, no
            // tick, no batch, no collect) until the budget is paid back.
            let paused = self.paused(now);
            if !paused && self.restart_at.is_some_and(|t| t <= now) {
                self.start_instance(first_start);
                if first_start && let Some(tx) = self.first_start.take() {
                    let outcome = if self.instance.is_some() {
                        Ok(())
                    } else {
                        Err(self
                            .status
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .last_error
                            .clone()
                            .unwrap_or_else(|| "the first instance did not start".to_owned()))
                    };
                    let _ = tx.send(outcome);
                }
                first_start = false;
            }
            if let Some((every, next)) = self.tick
                && next <= now
            {
                self.tick = Some((every, now + every));
                if self.instance.is_some() && !paused {
                    self.call(Call::Tick);
                }
            }
            if next_housekeeping <= now {
                next_housekeeping = now + HOUSEKEEPING;
                self.housekeeping();
            }

            let timeout = self.next_timeout(next_housekeeping);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                tracing::error!(plugin = %self.name, "event polling failed, stopping plugin: {e}");
                break;
            }
            for ev in events.iter() {
                if let Some(s) = self.sources.get_mut(ev.token().0) {
                    s.pending = true;
                }
            }
            let now = Instant::now();
            for s in &mut self.sources {
                if s.drain_by.is_some_and(|t| t <= now) {
                    s.pending = true;
                }
            }
            let mut collect_waiters = Vec::new();
            while let Ok(cmd) = commands.try_recv() {
                match cmd {
                    Command::Stop => {
                        // The plugin's handle removes its series once we are gone.
                        self.set_phase(Phase::Stopped, None);
                        return;
                    }
                    Command::Collect(done) => collect_waiters.push(done),
                    Command::Swap(swap) => self.swap(*swap),
                    Command::Repoint(wiring, done) => {
                        // The old rings' last events first, then the new
                        // sources take their places.
                        for i in 0..self.sources.len() {
                            self.drain(i);
                        }
                        for s in &self.sources {
                            for fd in s.source.fds() {
                                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                            }
                        }
                        self.follow_change(crate::follow::Change::Back {
                            wiring,
                            message: "re-opened the maps at the new pins the node agent sent"
                                .into(),
                        });
                        let _ = done.send(());
                    }
                }
            }
            if !collect_waiters.is_empty() {
                // Scrapes and exports that queued up behind a slow collect
                // share one call, so they cannot pile up.
                // Paused: the scrape gets what the plugin published last.
                if self.instance.is_some() && !self.paused(Instant::now()) {
                    self.call(Call::Collect);
                }
                for done in collect_waiters {
                    let _ = done.send(());
                }
            }
            for i in 0..self.sources.len() {
                if self.sources[i].pending && !self.paused(Instant::now()) {
                    self.drain(i);
                }
            }
            self.account();
        }
    }

    /// Charge the thread's CPU time since the last charge (see
    /// [`crate::cpu`]); true while the plugin is paused for its budget.
    fn account(&mut self) -> bool {
        let now = Instant::now();
        let charge = self.cpu.charge(now);
        self.cpu_used.inc_by(charge.used.as_secs_f64());
        if let Some(until) = charge.paused_until {
            let from = self.paused_until.filter(|t| *t > now).unwrap_or(now);
            self.cpu_throttled
                .inc_by(until.saturating_duration_since(from).as_secs_f64());
            if from == now {
                tracing::debug!(plugin = %self.name, pause_ms = until.duration_since(now).as_millis() as u64, "over its CPU budget, paused");
            }
            self.paused_until = Some(until);
        }
        self.paused(now)
    }

    fn paused(&self, now: Instant) -> bool {
        self.paused_until.is_some_and(|t| t > now)
    }

    fn next_timeout(&self, housekeeping: Instant) -> Duration {
        let mut deadline = housekeeping;
        if let Some(until) = self.paused_until.filter(|t| *t > Instant::now()) {
            // Nothing but housekeeping and commands until the pause ends;
            // pending sources wait in their buffers.
            deadline = deadline.min(until);
            return deadline.saturating_duration_since(Instant::now());
        }
        if self.sources.iter().any(|s| s.pending) {
            return Duration::ZERO;
        }
        if let Some(t) = self.restart_at {
            deadline = deadline.min(t);
        }
        if let Some((_, t)) = self.tick {
            deadline = deadline.min(t);
        }
        for t in self.sources.iter().filter_map(|s| s.drain_by) {
            deadline = deadline.min(t);
        }
        let wait = deadline.saturating_duration_since(Instant::now());
        if !wait.is_zero() && wait < Duration::from_millis(1) {
            // epoll rounds its timeout up to a millisecond: let the timer
            // end the wait on time. Should arming fail, the wait is merely
            // that millisecond.
            let _ = self.timer.set(
                Expiration::OneShot(TimeSpec::from_duration(wait)),
                TimerSetTimeFlags::empty(),
            );
        }
        wait
    }

    fn drain(&mut self, i: usize) {
        for _ in 0..ROUNDS_PER_WAKE {
            let s = &mut self.sources[i];
            let instance = &mut self.instance;
            let call_timeout = self.call_timeout;
            let on_events = &self.calls.on_events;
            let lost_for_plugin = &mut s.lost_for_plugin;
            let lost_kernel = &s.lost_kernel;
            let source_name = s.name.as_str();
            let delivered = s.source.deliver(|batch| {
                if batch.kernel_lost > 0 {
                    lost_kernel.inc_by(batch.kernel_lost);
                    *lost_for_plugin += batch.kernel_lost;
                }
                let instance = instance.as_mut()?;
                let started = Instant::now();
                let result = instance.on_events(
                    EventBatch {
                        source: source_name,
                        data: batch.data,
                        offsets: &batch.spans.offsets,
                        lengths: &batch.spans.lengths,
                        lost: *lost_for_plugin,
                    },
                    call_timeout,
                );
                on_events.observe(started.elapsed().as_secs_f64());
                Some(result)
            });
            let n = delivered.events as u64;
            let polled = s.source.take_polled();
            if !polled.is_zero() {
                s.polled.inc_by(polled.as_secs_f64());
            }
            let now = Instant::now();
            s.drain_by = s.max_latency.map(|d| now + d);
            if let Some(wait) = delivered.gather {
                let soon = now + wait;
                s.drain_by = Some(s.drain_by.map_or(soon, |t| t.min(soon)));
            }
            if s.source.wakes_per_event() && s.registered == delivered.gather.is_some() {
                let registry = self.poll.registry();
                let register = !s.registered;
                let mut failed = false;
                for fd in s.source.fds() {
                    let fd = &mut SourceFd(&fd);
                    let done = if register {
                        registry.register(fd, Token(i), Interest::READABLE)
                    } else {
                        registry.deregister(fd)
                    };
                    match done {
                        Ok(()) => {}
                        // Put back on a retry after a partial failure.
                        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                        Err(e) => {
                            failed = true;
                            tracing::warn!(plugin = %self.name, source = %s.name, "cannot change the event source's epoll registration: {e}");
                        }
                    }
                }
                if register && failed {
                    // Not back in the epoll set: drain by deadline, and try
                    // again then, rather than wait for a wakeup that cannot come.
                    let soon = now + conductor_kernel::events::PERF_GATHER;
                    s.drain_by = Some(s.drain_by.map_or(soon, |t| t.min(soon)));
                } else {
                    // A buffer left registered merely wakes per sample.
                    s.registered = register;
                }
            }
            s.pending = delivered.more;
            let limited = self.cpu.limited();
            if n == 0 {
                // Nothing arrived (e.g. the latency timer on an idle source).
                return;
            }
            s.received.inc_by(n);
            match delivered.result.flatten() {
                Some(Ok(())) => {
                    s.lost_for_plugin = 0;
                    s.batches.inc();
                }
                Some(Err(fault)) => {
                    // The plugin may not have processed the batch.
                    s.lost_host.inc_by(n);
                    s.lost_for_plugin += n;
                    self.fault("on-events", fault);
                }
                None => {
                    // No instance (restarting): drained and dropped.
                    s.lost_host.inc_by(n);
                    s.lost_for_plugin += n;
                }
            }
            if !self.sources[i].pending {
                return;
            }
            // A limited plugin is charged per batch, so a flooded source
            // cannot run it far past its budget.
            if limited && self.account() {
                return;
            }
        }
    }

    fn housekeeping(&mut self) {
        if self.prepared.tier == Tier::Baseline
            && !self.tier_up_failed
            && !self.paused(Instant::now())
        {
            self.tier_up();
        }
        // Interfaces and cgroups named by pattern: attach to new matches,
        // release vanished ones (see conductor_kernel::patterns).
        if let Some(object) = self.object.as_mut() {
            for change in object.rescan() {
                change.log(&self.name);
            }
        }
        if let Some(change) = self.follow.as_mut().map(|f| f.check()) {
            self.follow_change(change);
        }
        for s in &mut self.sources {
            let lost = s.source.take_kernel_lost();
            if lost > 0 {
                s.lost_kernel.inc_by(lost);
                s.lost_for_plugin += lost;
            }
        }
        if let Some(i) = &self.instance {
            self.memory.set(i.memory_bytes() as i64);
        }
        let suppressed = self.host.log_budget().suppressed();
        self.log_suppressed
            .inc_by(suppressed.saturating_sub(self.log_suppressed_seen));
        self.log_suppressed_seen = suppressed;
    }

    /// The bpfman program the maps come from went away or came back.
    fn follow_change(&mut self, change: crate::follow::Change) {
        use crate::follow::Change;
        match change {
            Change::Same => {}
            Change::Gone(message) => {
                // Deliver what the orphaned rings still hold, then stop
                // polling them until the program is back.
                for i in 0..self.sources.len() {
                    self.drain(i);
                }
                for s in &self.sources {
                    for fd in s.source.fds() {
                        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                    }
                }
                tracing::warn!(plugin = %self.name, "{message}");
                self.set_phase(Phase::Pending, Some(message));
            }
            Change::Back { wiring, message } => {
                let mut fresh = wiring.kernel.sources;
                for (i, s) in self.sources.iter_mut().enumerate() {
                    let Some(at) = fresh.iter().position(|f| f.name() == s.name) else {
                        continue;
                    };
                    let source = fresh.swap_remove(at);
                    for fd in source.fds() {
                        if let Err(e) = self.poll.registry().register(
                            &mut SourceFd(&fd),
                            Token(i),
                            Interest::READABLE,
                        ) {
                            tracing::error!(plugin = %self.name, source = %s.name, "cannot poll the re-opened event source: {e}");
                        }
                    }
                    // The old ring (and its descriptor) goes here.
                    s.source = source;
                    s.pending = true;
                }
                tracing::info!(plugin = %self.name, "{message}");
                if self.instance.is_some() {
                    self.set_phase(Phase::Running, None);
                }
            }
        }
    }

    fn start_instance(&mut self, first: bool) {
        self.restart_at = None;
        // A restart on baseline code takes the optimised code if it is
        // ready by now (also after a move that failed).
        if !first && let Some(Ok(optimised)) = self.runtime.optimised(&self.prepared) {
            self.prepared = optimised;
        }
        if !first {
            self.restarts.inc();
            self.update_status(|s| s.restarts += 1);
        }
        match self.runtime.instantiate(
            &self.prepared,
            self.host.clone(),
            self.memory_limit,
            self.call_timeout,
        ) {
            Ok(instance) => self.instance = Some(instance),
            Err(fault) => {
                self.fault("instantiate", fault);
                return;
            }
        }
        self.running_since = Instant::now();
        if self.call(Call::Init) {
            tracing::info!(
                plugin = %self.name,
                digest = %self.prepared.digest,
                from_cache = self.prepared.from_cache,
                code = %self.prepared.tier.as_str(),
                "plugin running"
            );
            self.up.set(1);
            // Waiting for its bpfman program: running, but not ready.
            if !self.follow.as_ref().is_some_and(|f| f.is_down()) {
                self.set_phase(Phase::Running, None);
            }
        }
    }

    /// Take a new version over between two batches (see [`Plugin::swap`]).
    fn swap(&mut self, swap: Swap) {
        if let Err(message) = self.take_over(
            swap.prepared,
            swap.host,
            swap.memory_limit,
            swap.call_timeout,
        ) {
            let _ = swap.reply.send(Err(message));
            return;
        }
        self.cpu_limit = swap.cpu_limit;
        self.cpu.set_limit(swap.cpu_limit);
        self.tick = swap.tick.map(|every| (every, Instant::now() + every));
        self.restart_at = None;
        self.backoff = INITIAL_BACKOFF;
        self.max_backoff = Duration::from_secs(u64::from(swap.restart.max_backoff_seconds));
        self.give_up_after = swap.restart.give_up_after;
        self.faults_in_a_row = 0;
        // A new version (possibly on baseline code) gets its own chance
        // to move to optimised code.
        self.tier_up_failed = false;
        self.running_since = Instant::now();
        self.up.set(1);
        let digest = self.prepared.digest.clone();
        self.update_status(|s| s.digest = digest);
        self.set_phase(Phase::Running, None);
        tracing::info!(plugin = %self.name, digest = %self.prepared.digest, "plugin updated");
        let _ = swap.reply.send(Ok(()));
    }

    /// Replace the running instance by a new one of `prepared`, created and
    /// initialised first; if that fails the running one stays and the
    /// error says why.
    fn take_over(
        &mut self,
        prepared: Prepared,
        host: Arc<PluginHost>,
        memory_limit: usize,
        call_timeout: Duration,
    ) -> Result<(), String> {
        // What the running version declared: a refused version's own
        // declarations are undone.
        let declared = self.plugin_metrics.declared_names();
        let refuse = |message: String| {
            self.plugin_metrics.forget_all_but(&declared);
            Err(message)
        };
        let mut fresh =
            match self
                .runtime
                .instantiate(&prepared, host.clone(), memory_limit, call_timeout)
            {
                Ok(i) => i,
                Err(fault) => {
                    return refuse(format!("the new version failed to instantiate: {fault}"));
                }
            };
        let started = Instant::now();
        let result = fresh.call(Call::Init, call_timeout);
        self.calls.init.observe(started.elapsed().as_secs_f64());
        if let Err(fault) = result {
            tracing::warn!(plugin = %self.name, "the new instance's init failed, the running one stays: {fault}");
            drop(fresh);
            return refuse(format!("the new version's init failed: {fault}"));
        }
        // The old instance publishes what it buffered, then goes.
        if self.instance.is_some() && !self.call(Call::Collect) {
            tracing::warn!(plugin = %self.name, "the replaced version's last collect failed; its unpublished metrics are lost");
        }
        self.instance = Some(fresh);
        self.prepared = prepared;
        self.host = host;
        self.memory_limit = memory_limit;
        self.call_timeout = call_timeout;
        Ok(())
    }

    /// Move a plugin started on baseline code to the optimised code once
    /// the background compile has it: a new instance of the same component
    /// and config takes over between two batches, as an update does (its
    /// `init` runs again; state kept in the host, like metrics, stays).
    fn tier_up(&mut self) {
        let Some(optimised) = self.runtime.optimised(&self.prepared) else {
            return;
        };
        let optimised = match optimised {
            Ok(p) => p,
            Err(e) => {
                // Cannot happen for code the baseline compile accepted;
                // should it, the plugin keeps its baseline code.
                tracing::warn!(plugin = %self.name, "cannot link the optimised code, staying on baseline code: {e}");
                self.tier_up_failed = true;
                return;
            }
        };
        if self.instance.is_none() {
            // Restarting: the next instance starts on the optimised code.
            self.prepared = optimised;
            return;
        }
        let (host, memory_limit, call_timeout) =
            (self.host.clone(), self.memory_limit, self.call_timeout);
        match self.take_over(optimised, host, memory_limit, call_timeout) {
            Ok(()) => tracing::info!(
                plugin = %self.name,
                digest = %self.prepared.digest,
                "plugin moved to optimised code"
            ),
            Err(e) => {
                tracing::warn!(plugin = %self.name, "cannot move to optimised code, staying on baseline code: {e}");
                self.tier_up_failed = true;
            }
        }
    }

    /// Call an export; on a fault the instance is dropped. True on success.
    fn call(&mut self, call: Call) -> bool {
        let Some(instance) = self.instance.as_mut() else {
            return false;
        };
        let started = Instant::now();
        let result = instance.call(call, self.call_timeout);
        let hist = match call {
            Call::Init => &self.calls.init,
            Call::Tick => &self.calls.tick,
            Call::Collect => &self.calls.collect,
        };
        hist.observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => true,
            Err(fault) => {
                self.fault(call.as_str(), fault);
                false
            }
        }
    }

    fn fault(&mut self, export: &str, fault: Fault) {
        if let Some(i) = self.instance.take() {
            self.memory.set(i.memory_bytes() as i64);
        }
        self.faults
            .host
            .fault(&self.name, fault.kind.as_str())
            .inc();
        self.up.set(0);
        if self.running_since.elapsed() >= HEALTHY_AFTER {
            self.backoff = INITIAL_BACKOFF;
            self.faults_in_a_row = 0;
        }
        self.faults_in_a_row = self.faults_in_a_row.saturating_add(1);
        let message = format!("{export} failed: {fault}");
        if let Some(limit) = self.give_up_after
            && self.faults_in_a_row >= limit
        {
            // No further instance: the kernel side stays until the plugin
            // is updated (which starts afresh) or unloaded.
            self.restart_at = None;
            let message = format!(
                "gave up after {} faults in a row (restart.giveUpAfter: {limit}); update or unload the plugin; last fault: {message}",
                self.faults_in_a_row
            );
            tracing::error!(plugin = %self.name, fault = fault.kind.as_str(), "{message}");
            self.set_phase(Phase::Failed, Some(message));
            return;
        }
        let delay = self.backoff.min(self.max_backoff);
        self.backoff = (self.backoff * 2).min(self.max_backoff);
        self.restart_at = Some(Instant::now() + delay);
        tracing::error!(
            plugin = %self.name,
            fault = fault.kind.as_str(),
            faults_in_a_row = self.faults_in_a_row,
            restart_in_ms = delay.as_millis() as u64,
            "{message}"
        );
        let phase = if self.faults_in_a_row >= CRASH_LOOP_AFTER {
            Phase::CrashLoopBackOff
        } else {
            Phase::Restarting
        };
        self.set_phase_until(phase, Some(message), Some(SystemTime::now() + delay));
    }

    fn set_phase(&self, phase: Phase, error: Option<String>) {
        self.set_phase_until(phase, error, None);
    }

    /// [`Self::set_phase`] to a phase that ends with a retry at `next_retry`.
    fn set_phase_until(&self, phase: Phase, error: Option<String>, next_retry: Option<SystemTime>) {
        self.update_status(|s| {
            s.phase = phase;
            s.since = SystemTime::now();
            s.next_retry = next_retry;
            if error.is_some() {
                s.last_error = error;
            }
        });
    }

    fn update_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
        // After the lock is released: the listener may read the status.
        if let Some(notify) = &self.notify {
            notify();
        }
    }
}

/// The directories `spec` grants, checked to be directories the host can
/// open now (a later failure, e.g. the directory was removed, faults the
/// instance that needs it and is retried as any fault).
fn read_only_dirs(spec: &PluginSpec) -> Result<Vec<ReadOnlyDir>, LoadError> {
    let mut dirs = Vec::with_capacity(spec.read_only_paths.len());
    for (index, p) in spec.read_only_paths.iter().enumerate() {
        let err = |cause: String| LoadError::ReadOnlyPath {
            plugin: spec.name.clone(),
            index,
            cause,
        };
        match std::fs::metadata(&p.path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(err(format!(
                    "{} is not a directory: grant the directory that holds it",
                    p.path
                )));
            }
            Err(e) => {
                return Err(err(format!(
                    "cannot open {}: {e} (in a container, mount the node's directory into the host's)",
                    p.path
                )));
            }
        }
        dirs.push(ReadOnlyDir {
            host: p.path.clone().into(),
            guest: p.guest_path().to_owned(),
        });
    }
    Ok(dirs)
}
