//! The host's metric registry: its own metrics and every plugin's.
//!
//! Plugins declare metrics at run time, and plugins come and go, so plugin
//! metrics live in a [`PluginMetrics`] per plugin behind one
//! [`prometheus_client`] collector rather than in the static registry.
//!
//! Namespacing: a plugin metric is exported as `<plugin>__<metric>` (plugin
//! name with `-` turned into `_`, then a double underscore) and carries a
//! `plugin` label. Plugin names are DNS-1035 labels (they start with
//! `[a-z]`, so the exported name is valid, and end in `[a-z0-9]`) and
//! metric names may neither start with `_` nor contain `__`, so the last `__`
//! of an exported name always splits it back into plugin and metric: two
//! plugins cannot export the same name, and since no host metric contains
//! `__`, no plugin can shadow one. Names ending in a suffix that OpenMetrics
//! gives a meaning (`_total`, `_bucket`, ...) are refused, so one plugin's
//! metrics cannot collide with each other's samples either.

use std::collections::BTreeMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, EncodeMetric, LabelSetEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(
    Clone, Debug, Default, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet,
)]
pub struct PluginLabel {
    pub plugin: String,
}

#[derive(
    Clone, Debug, Default, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet,
)]
pub struct SourceLabels {
    pub plugin: String,
    pub source: String,
}

#[derive(
    Clone, Debug, Default, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet,
)]
pub struct LostLabels {
    pub plugin: String,
    pub source: String,
    /// `kernel`: the BPF side could not queue the event (buffer full);
    /// `host`: the host drained it while the plugin was not running.
    pub reason: &'static str,
}

#[derive(
    Clone, Debug, Default, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet,
)]
pub struct CallLabels {
    pub plugin: String,
    pub call: &'static str,
}

#[derive(
    Clone, Debug, Default, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet,
)]
pub struct FaultLabels {
    pub plugin: String,
    /// `trap`, `timeout`, `memory` or `error`.
    pub kind: &'static str,
}

/// The host's own metrics, all prefixed `conductor_`.
#[derive(Debug, Clone)]
pub struct HostMetrics {
    pub events_received: Family<SourceLabels, Counter>,
    pub events_lost: Family<LostLabels, Counter>,
    pub batches: Family<SourceLabels, Counter>,
    pub poll_seconds: Family<SourceLabels, Counter<f64, AtomicU64>>,
    pub call_seconds: Family<CallLabels, Histogram, fn() -> Histogram>,
    pub faults: Family<FaultLabels, Counter>,
    pub restarts: Family<PluginLabel, Counter>,
    pub memory_bytes: Family<PluginLabel, Gauge>,
    pub up: Family<PluginLabel, Gauge>,
    /// Plugins whose maps come from a bpfman program named in
    /// `bpfmanProgram`: 1 while it is loaded, 0 while it is gone.
    pub maps_source_up: Family<PluginLabel, Gauge>,
    pub series_dropped: Family<PluginLabel, Counter>,
    pub log_suppressed: Family<PluginLabel, Counter>,
    pub cpu_seconds: Family<PluginLabel, Counter<f64, AtomicU64>>,
    pub cpu_throttled_seconds: Family<PluginLabel, Counter<f64, AtomicU64>>,
    otlp_exports: Family<OutcomeLabel, Counter>,
    pub k8s: K8sMetrics,
}

/// The workload cache's health (see [`crate::k8s`]).
#[derive(Debug, Clone, Default)]
pub struct K8sMetrics {
    /// 1 while the pod cache may be out of date (watch failing), else 0.
    pub stale: Gauge,
    pub pods: Gauge,
    pub containers: Gauge,
    pub watch_errors: Counter,
    pub lists: Counter,
    pub cgroups: Gauge,
    pub cgroup_scans: Counter,
}

#[derive(
    Clone, Debug, Default, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet,
)]
pub struct OutcomeLabel {
    /// `ok` or `error`.
    pub outcome: &'static str,
}

fn call_histogram() -> Histogram {
    // 1 µs .. ~4 s: batch handlers are usually micro- to milliseconds.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        1e-6, 4.0, 12,
    ))
}

impl HostMetrics {
    fn new() -> Self {
        Self {
            events_received: Family::default(),
            events_lost: Family::default(),
            batches: Family::default(),
            poll_seconds: Family::default(),
            call_seconds: Family::new_with_constructor(call_histogram),
            faults: Family::default(),
            restarts: Family::default(),
            memory_bytes: Family::default(),
            up: Family::default(),
            maps_source_up: Family::default(),
            series_dropped: Family::default(),
            log_suppressed: Family::default(),
            cpu_seconds: Family::default(),
            cpu_throttled_seconds: Family::default(),
            otlp_exports: Family::default(),
            k8s: K8sMetrics::default(),
        }
    }

    fn register(&self, r: &mut HostRegistrar<'_>) {
        r.register(
            "conductor_events_received",
            "Events read from a plugin's event source",
            self.events_received.clone(),
        );
        r.register(
            "conductor_events_lost",
            "Events lost per source: reason=kernel (buffer full) or host (plugin not running)",
            self.events_lost.clone(),
        );
        r.register(
            "conductor_batches",
            "Event batches delivered to plugins",
            self.batches.clone(),
        );
        r.register(
            "conductor_events_poll_seconds",
            "Time a plugin's thread polled a fast ring buffer between batches instead of sleeping (events.busyPollMs); included in conductor_plugin_cpu_seconds",
            self.poll_seconds.clone(),
        );
        r.register(
            "conductor_plugin_call_duration_seconds",
            "Wall time of calls into plugins, by export",
            self.call_seconds.clone(),
        );
        r.register(
            "conductor_plugin_faults",
            "Plugin faults: kind=trap, timeout (call exceeded limits.callTimeoutMs), memory (limit hit) or error (returned an error)",
            self.faults.clone(),
        );
        r.register(
            "conductor_plugin_restarts",
            "Plugin restarts after a fault",
            self.restarts.clone(),
        );
        r.register(
            "conductor_plugin_memory_bytes",
            "Linear memory of the plugin's instance",
            self.memory_bytes.clone(),
        );
        r.register(
            "conductor_plugin_up",
            "1 while the plugin's instance is running, 0 while it waits to restart",
            self.up.clone(),
        );
        r.register(
            "conductor_plugin_maps_source_up",
            "1 while the bpfman program a plugin's maps come from (bpfmanProgram) is loaded, 0 while it is gone (the plugin waits for it)",
            self.maps_source_up.clone(),
        );
        r.register(
            "conductor_plugin_series_dropped",
            "Samples dropped because a plugin metric reached limits.maxSeriesPerMetric",
            self.series_dropped.clone(),
        );
        r.register(
            "conductor_plugin_log_lines_suppressed",
            "Log lines of a plugin dropped because it logged over its budget (lines and bytes per second)",
            self.log_suppressed.clone(),
        );
        r.register(
            "conductor_plugin_cpu_seconds",
            "CPU time of the plugin's thread: its calls, the host work they cause and the draining of its sources",
            self.cpu_seconds.clone(),
        );
        r.register(
            "conductor_plugin_cpu_throttled_seconds",
            "Wall time the plugin was not called because it had used its limits.cpu budget",
            self.cpu_throttled_seconds.clone(),
        );
        r.register(
            "conductor_otlp_exports",
            "OTLP metric exports by outcome (ok, error)",
            self.otlp_exports.clone(),
        );
        let k = &self.k8s;
        r.register(
            "conductor_k8s_cache_stale",
            "1 while the pod cache cannot reach the API server and serves its last state, else 0",
            k.stale.clone(),
        );
        r.register(
            "conductor_k8s_pods",
            "Pods of this node in the workload cache",
            k.pods.clone(),
        );
        r.register(
            "conductor_k8s_containers",
            "Containers (with an id) of this node's pods in the workload cache",
            k.containers.clone(),
        );
        r.register(
            "conductor_k8s_watch_errors",
            "Failed list or watch requests of the pod cache (each is retried with backoff)",
            k.watch_errors.clone(),
        );
        r.register(
            "conductor_k8s_lists",
            "Complete pod lists the cache was rebuilt from (start, 410 Gone, recovery)",
            k.lists.clone(),
        );
        r.register(
            "conductor_k8s_cgroups",
            "Cgroup v2 directories indexed by inode (host and containers)",
            k.cgroups.clone(),
        );
        r.register(
            "conductor_k8s_cgroup_scans",
            "Scans of the cgroup hierarchy (start, inotify overflow, rate-limited rescans after misses)",
            k.cgroup_scans.clone(),
        );
    }

    /// The export counter for `outcome` (`ok` or `error`).
    pub fn otlp_exports(&self, outcome: &'static str) -> Counter {
        self.otlp_exports
            .get_or_create_owned(&OutcomeLabel { outcome })
    }

    /// Create the host's series for one plugin with event `sources`. Their
    /// label sets are [`PluginSeries::label_sets`], which
    /// [`Self::remove_plugin`] removes: one list, so nothing is left behind.
    pub fn plugin_series(&self, plugin: &str, sources: &[String]) -> PluginSeries {
        let sets = PluginSeries::label_sets(plugin, sources);
        let call = |call: &'static str| {
            self.call_seconds.get_or_create_owned(&CallLabels {
                plugin: plugin.to_owned(),
                call,
            })
        };
        PluginSeries {
            calls: [
                call(CALLS[0]),
                call(CALLS[1]),
                call(CALLS[2]),
                call(CALLS[3]),
            ],
            sources: sources
                .iter()
                .map(|source| {
                    let src = SourceLabels {
                        plugin: plugin.to_owned(),
                        source: source.clone(),
                    };
                    let lost = |reason| {
                        self.events_lost.get_or_create_owned(&LostLabels {
                            plugin: plugin.to_owned(),
                            source: source.clone(),
                            reason,
                        })
                    };
                    SourceSeries {
                        received: self.events_received.get_or_create_owned(&src),
                        batches: self.batches.get_or_create_owned(&src),
                        polled: self.poll_seconds.get_or_create_owned(&src),
                        lost_kernel: lost(LOST_REASONS[0]),
                        lost_host: lost(LOST_REASONS[1]),
                    }
                })
                .collect(),
            restarts: self.restarts.get_or_create_owned(&sets.plugin),
            memory: self.memory_bytes.get_or_create_owned(&sets.plugin),
            up: self.up.get_or_create_owned(&sets.plugin),
            log_suppressed: self.log_suppressed.get_or_create_owned(&sets.plugin),
            cpu: self.cpu_seconds.get_or_create_owned(&sets.plugin),
            cpu_throttled: self.cpu_throttled_seconds.get_or_create_owned(&sets.plugin),
        }
    }

    /// `conductor_plugin_maps_source_up` of `plugin` (created for plugins
    /// with `bpfmanProgram` only).
    pub fn maps_source_up(&self, plugin: &str) -> Gauge {
        self.maps_source_up.get_or_create_owned(&PluginLabel {
            plugin: plugin.to_owned(),
        })
    }

    /// The fault counter of `plugin` for `kind` (created on first fault).
    pub fn fault(&self, plugin: &str, kind: &'static str) -> Counter {
        self.faults.get_or_create_owned(&FaultLabels {
            plugin: plugin.to_owned(),
            kind,
        })
    }

    /// Forget every host series of `plugin` (it was unloaded, or its load
    /// failed): those [`Self::plugin_series`] created, its faults, and its
    /// dropped-samples counter.
    pub fn remove_plugin(&self, plugin: &str, sources: &[String]) {
        let sets = PluginSeries::label_sets(plugin, sources);
        self.restarts.remove(&sets.plugin);
        self.memory_bytes.remove(&sets.plugin);
        self.up.remove(&sets.plugin);
        self.maps_source_up.remove(&sets.plugin);
        self.series_dropped.remove(&sets.plugin);
        self.log_suppressed.remove(&sets.plugin);
        self.cpu_seconds.remove(&sets.plugin);
        self.cpu_throttled_seconds.remove(&sets.plugin);
        for c in &sets.calls {
            self.call_seconds.remove(c);
        }
        for f in &sets.faults {
            self.faults.remove(f);
        }
        for s in &sets.sources {
            self.events_received.remove(s);
            self.batches.remove(s);
            self.poll_seconds.remove(s);
        }
        for l in &sets.lost {
            self.events_lost.remove(l);
        }
    }
}

/// The exports whose calls are timed (`call` label).
pub const CALLS: [&str; 4] = ["init", "on_events", "tick", "collect"];
/// Why events were lost (`reason` label).
pub const LOST_REASONS: [&str; 2] = ["kernel", "host"];
/// Kinds of plugin faults (`kind` label), as the runtime names them.
pub const FAULT_KINDS: [&str; 4] = ["trap", "timeout", "memory", "error"];

/// The host's series of one plugin, created together by
/// [`HostMetrics::plugin_series`].
pub struct PluginSeries {
    /// Call durations, in the order of [`CALLS`].
    pub calls: [Histogram; 4],
    /// Per event source, in the order given.
    pub sources: Vec<SourceSeries>,
    pub restarts: Counter,
    pub memory: Gauge,
    pub up: Gauge,
    pub log_suppressed: Counter,
    pub cpu: Counter<f64, AtomicU64>,
    pub cpu_throttled: Counter<f64, AtomicU64>,
}

/// The host's series of one event source.
pub struct SourceSeries {
    pub received: Counter,
    pub batches: Counter,
    /// Seconds spent polling the source (ring buffers, `busyPollMs`).
    pub polled: Counter<f64, AtomicU64>,
    pub lost_kernel: Counter,
    pub lost_host: Counter,
}

/// Every label set the host uses for one plugin.
struct LabelSets {
    plugin: PluginLabel,
    calls: Vec<CallLabels>,
    faults: Vec<FaultLabels>,
    sources: Vec<SourceLabels>,
    lost: Vec<LostLabels>,
}

impl PluginSeries {
    fn label_sets(plugin: &str, sources: &[String]) -> LabelSets {
        let p = || plugin.to_owned();
        LabelSets {
            plugin: PluginLabel { plugin: p() },
            calls: CALLS
                .iter()
                .map(|&call| CallLabels { plugin: p(), call })
                .collect(),
            faults: FAULT_KINDS
                .iter()
                .map(|&kind| FaultLabels { plugin: p(), kind })
                .collect(),
            sources: sources
                .iter()
                .map(|source| SourceLabels {
                    plugin: p(),
                    source: source.clone(),
                })
                .collect(),
            lost: sources
                .iter()
                .flat_map(|source| {
                    LOST_REASONS.iter().map(move |&reason| LostLabels {
                        plugin: plugin.to_owned(),
                        source: source.clone(),
                        reason,
                    })
                })
                .collect(),
        }
    }
}

/// The registry behind `/metrics`.
pub struct Metrics {
    registry: Registry,
    pub host: HostMetrics,
    /// The host families as registered (see [`Metrics::host_descriptors`]).
    host_descriptors: Vec<Descriptor>,
    plugins: Arc<PluginSet>,
    builtins: Arc<BuiltinSet>,
}

/// One of the host's metric families, as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// The family name (OpenMetrics: counters without `_total`).
    pub name: &'static str,
    pub help: String,
    /// `counter`, `gauge` or `histogram`.
    pub kind: &'static str,
    /// The label names of every series (a histogram's `le` not included).
    pub labels: Vec<String>,
}

/// Registers the host's families and describes each, since the exposition
/// shows a labelled family only once it has a series.
struct HostRegistrar<'a> {
    registry: &'a mut Registry,
    descriptors: Vec<Descriptor>,
}

impl HostRegistrar<'_> {
    fn register<M: prometheus_client::registry::Metric + LabelNames>(
        &mut self,
        name: &'static str,
        help: &str,
        metric: M,
    ) {
        let kind = match metric.metric_type() {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Info => "info",
            _ => "unknown",
        };
        self.descriptors.push(Descriptor {
            name,
            help: help.to_owned(),
            kind,
            labels: M::label_names(),
        });
        self.registry.register(name, help, metric);
    }
}

/// The label names every series of a metric has.
trait LabelNames {
    fn label_names() -> Vec<String>;
}

impl LabelNames for Counter {
    fn label_names() -> Vec<String> {
        Vec::new()
    }
}

impl LabelNames for Gauge {
    fn label_names() -> Vec<String> {
        Vec::new()
    }
}

impl<S, M, C> LabelNames for Family<S, M, C>
where
    S: EncodeLabelSet + Default + Clone + Hash + Eq + fmt::Debug + Send + Sync + 'static,
{
    /// Encodes one series with the default label values (`name=""`) and
    /// reads the names back: the label set's own encoding is the truth.
    fn label_names() -> Vec<String> {
        let family = Family::<S, Gauge>::default();
        family.get_or_create(&S::default()).set(0);
        let mut registry = Registry::default();
        registry.register("probe", "", family);
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &registry).is_err() {
            return Vec::new();
        }
        text.lines()
            .find_map(|l| l.strip_prefix("probe{"))
            .and_then(|l| l.split_once('}'))
            .map(|(labels, _)| {
                labels
                    .split(',')
                    .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.to_owned()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let host = HostMetrics::new();
        let mut registrar = HostRegistrar {
            registry: &mut registry,
            descriptors: Vec::new(),
        };
        host.register(&mut registrar);
        let host_descriptors = registrar.descriptors;
        let plugins = Arc::new(PluginSet::default());
        registry.register_collector(Box::new(plugins.clone()));
        let builtins = Arc::new(BuiltinSet::default());
        registry.register_collector(Box::new(builtins.clone()));
        Self {
            registry,
            host,
            host_descriptors,
            plugins,
            builtins,
        }
    }

    /// The host's own metric families as registered, in registration
    /// order, whether or not they have samples yet (the exposition leaves
    /// out a labelled family until its first series); for the manual's
    /// metric reference ([`crate::reference`]).
    pub fn host_descriptors(&self) -> &[Descriptor] {
        &self.host_descriptors
    }

    /// A fresh metric set for `plugin` (replacing any previous one).
    pub fn add_plugin(&self, plugin: &str, max_series: u32) -> Arc<PluginMetrics> {
        let m = Arc::new(PluginMetrics::new(
            plugin,
            max_series,
            self.host.series_dropped.get_or_create_owned(&PluginLabel {
                plugin: plugin.to_owned(),
            }),
        ));
        self.plugins
            .plugins
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(plugin.to_owned(), m.clone());
        m
    }

    /// Forget everything of `plugin`: the metrics it declared and the
    /// host's series about it (`sources`: its event sources).
    pub fn remove_plugin(&self, plugin: &str, sources: &[String]) {
        self.plugins
            .plugins
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(plugin);
        self.host.remove_plugin(plugin, sources);
    }

    /// Add (or replace) a built-in's collector, read at every scrape and
    /// OTLP export like the plugins' metrics: the built-in ebpf_exporter
    /// reads its maps there. It names its own families (no `plugin` label).
    pub fn add_builtin(&self, name: &str, collector: Arc<BuiltinCollector>) {
        self.builtins
            .collectors
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), collector);
    }

    /// Forget built-in `name`; true if it was there.
    pub fn remove_builtin(&self, name: &str) -> bool {
        self.builtins
            .collectors
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .is_some()
    }

    /// Everything as data (the Prometheus protobuf model), for the OTLP
    /// exporter: the same registry the text exposition reads.
    pub fn families(
        &self,
    ) -> Result<
        Vec<prometheus_client::encoding::prometheus_protobuf::prometheus_data_model::MetricFamily>,
        fmt::Error,
    > {
        prometheus_client::encoding::prometheus_protobuf::encode(&self.registry)
    }

    /// OpenMetrics text exposition of everything.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The classic Prometheus text format (0.0.4) of an OpenMetrics exposition
/// from [`Metrics::encode`], for clients that do not accept OpenMetrics.
///
/// The two differ, for what we emit, only in the `# EOF` and `# UNIT` lines,
/// in counters' family names (OpenMetrics `foo` with samples `foo_total`,
/// 0.0.4 `foo_total` throughout) and in HELP escaping (0.0.4 knows no `\"`).
pub fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // prometheus-client writes HELP before TYPE: hold it until the type is known.
    let mut help: Option<&str> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').map_or("", |(_, text)| text));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let name = if ty == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            if let Some(text) = help.take() {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {ty}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The host's built-in collectors, by name (see [`Metrics::add_builtin`]).
#[derive(Default)]
struct BuiltinSet {
    collectors: RwLock<BTreeMap<String, Arc<BuiltinCollector>>>,
}

/// A built-in's families, written at each scrape into the shared encoder
/// (a [`Collector`] takes its encoder by value, so several cannot share one).
pub type BuiltinCollector = dyn Fn(&mut DescriptorEncoder) -> Result<(), fmt::Error> + Send + Sync;

impl fmt::Debug for BuiltinSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .collectors
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        f.debug_struct("BuiltinSet")
            .field("collectors", &names)
            .finish()
    }
}

impl Collector for BuiltinSet {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let collectors = self.collectors.read().unwrap_or_else(|e| e.into_inner());
        for c in collectors.values() {
            c(&mut encoder)?;
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct PluginSet {
    plugins: RwLock<BTreeMap<String, Arc<PluginMetrics>>>,
}

impl Collector for PluginSet {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let plugins = self.plugins.read().unwrap_or_else(|e| e.into_inner());
        for plugin in plugins.values() {
            plugin.encode(&mut encoder)?;
        }
        Ok(())
    }
}

pub use conductor_runtime::host::metrics::MetricError;
use conductor_runtime::host::metrics::{
    BoundCounter, CounterSeries, GaugeSeries, HistogramSeries, MetricsBackend,
};

/// The label names of one metric, shared by all its series; the `plugin`
/// label comes first.
#[derive(Debug)]
struct LabelSchema {
    plugin: String,
    names: Vec<String>,
}

/// Label values of one series. Equality and hashing look at the values
/// only: the schema is the same for the whole family.
#[derive(Clone, Debug)]
pub struct LabelValues {
    schema: Arc<LabelSchema>,
    values: Vec<String>,
}

impl PartialEq for LabelValues {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values
    }
}
impl Eq for LabelValues {}
impl Hash for LabelValues {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.values.hash(state);
    }
}

impl EncodeLabelSet for LabelValues {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), fmt::Error> {
        ("plugin", self.schema.plugin.as_str()).encode(encoder.encode_label())?;
        for (name, value) in self.schema.names.iter().zip(&self.values) {
            (name.as_str(), value.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// One declared metric: its description and its series.
#[derive(Debug)]
pub struct MetricFamily<M> {
    name: String,
    help: String,
    labels: Arc<LabelSchema>,
    family: Family<LabelValues, M, Box<dyn Fn() -> M + Send + Sync>>,
    max_series: u32,
    /// Series created so far (the family itself does not expose its size).
    series: AtomicUsize,
    dropped: Counter,
}

impl<M: 'static> MetricFamily<M> {
    /// The series for `values`, created if there is room for it.
    fn with_series<R>(
        &self,
        values: Vec<String>,
        f: impl FnOnce(&M) -> R,
    ) -> Result<R, MetricError> {
        if values.len() != self.labels.names.len() {
            return Err(MetricError::WrongLabelCount {
                expected: self.labels.names.len() as u32,
                actual: values.len() as u32,
            });
        }
        let key = LabelValues {
            schema: self.labels.clone(),
            values,
        };
        if let Some(m) = self.family.get(&key) {
            return Ok(f(&m));
        }
        // One plugin records from one thread, so check-then-create is exact.
        if self.series.load(Ordering::Relaxed) >= self.max_series as usize {
            self.dropped.inc();
            return Err(MetricError::CardinalityLimit(self.max_series));
        }
        self.series.fetch_add(1, Ordering::Relaxed);
        Ok(f(&self.family.get_or_create(&key)))
    }
}

impl MetricFamily<Counter> {
    pub fn add(&self, values: Vec<String>, delta: u64) -> Result<(), MetricError> {
        self.with_series(values, |c| {
            c.inc_by(delta);
        })
    }

    /// The series of `values`, created if there is room for it. The
    /// counter shares its value with the family's series (series are never
    /// removed from a family), so adding to it is one atomic add.
    pub fn bind(&self, values: Vec<String>) -> Result<Counter, MetricError> {
        self.with_series(values, Counter::clone)
    }
}

/// A plugin's `counter-series`: one series of a counter family.
struct BoundSeries(Counter);

impl BoundCounter for BoundSeries {
    fn add(&self, delta: u64) {
        self.0.inc_by(delta);
    }
}

impl MetricFamily<Gauge<f64, AtomicU64>> {
    pub fn set(&self, values: Vec<String>, v: f64) -> Result<(), MetricError> {
        self.with_series(values, |g| {
            g.set(v);
        })
    }
    pub fn add(&self, values: Vec<String>, delta: f64) -> Result<(), MetricError> {
        self.with_series(values, |g| {
            g.inc_by(delta);
        })
    }
}

impl MetricFamily<Histogram> {
    pub fn observe(&self, values: Vec<String>, v: f64) -> Result<(), MetricError> {
        self.with_series(values, |h| h.observe(v))
    }
}

impl CounterSeries for CounterFamily {
    fn add(&self, values: Vec<String>, delta: u64) -> Result<(), MetricError> {
        MetricFamily::<Counter>::add(self, values, delta)
    }
    fn bind(&self, values: Vec<String>) -> Result<Arc<dyn BoundCounter>, MetricError> {
        Ok(Arc::new(BoundSeries(MetricFamily::<Counter>::bind(
            self, values,
        )?)))
    }
}

impl GaugeSeries for GaugeFamily {
    fn set(&self, values: Vec<String>, value: f64) -> Result<(), MetricError> {
        MetricFamily::<Gauge<f64, AtomicU64>>::set(self, values, value)
    }
    fn add(&self, values: Vec<String>, delta: f64) -> Result<(), MetricError> {
        MetricFamily::<Gauge<f64, AtomicU64>>::add(self, values, delta)
    }
}

impl HistogramSeries for HistogramFamily {
    fn observe(&self, values: Vec<String>, value: f64) -> Result<(), MetricError> {
        MetricFamily::<Histogram>::observe(self, values, value)
    }
}

/// The registry as the runtime's `metrics` interface reaches it.
impl MetricsBackend for PluginMetrics {
    fn counter(
        &self,
        name: &str,
        help: &str,
        labels: Vec<String>,
    ) -> Result<Arc<dyn CounterSeries>, MetricError> {
        Ok(PluginMetrics::counter(self, name, help, labels)?)
    }
    fn gauge(
        &self,
        name: &str,
        help: &str,
        labels: Vec<String>,
    ) -> Result<Arc<dyn GaugeSeries>, MetricError> {
        Ok(PluginMetrics::gauge(self, name, help, labels)?)
    }
    fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: Vec<String>,
        buckets: Vec<f64>,
    ) -> Result<Arc<dyn HistogramSeries>, MetricError> {
        Ok(PluginMetrics::histogram(self, name, help, labels, buckets)?)
    }
}

pub type CounterFamily = MetricFamily<Counter>;
pub type GaugeFamily = MetricFamily<Gauge<f64, AtomicU64>>;
pub type HistogramFamily = MetricFamily<Histogram>;

#[derive(Debug, Clone)]
enum Declared {
    Counter(Arc<CounterFamily>),
    Gauge(Arc<GaugeFamily>),
    Histogram(Arc<HistogramFamily>, Vec<f64>),
}

/// The metrics one plugin declared.
#[derive(Debug)]
pub struct PluginMetrics {
    plugin: String,
    prefix: String,
    max_series: u32,
    dropped: Counter,
    declared: RwLock<BTreeMap<String, Declared>>,
}

impl PluginMetrics {
    /// The names of the metrics declared so far.
    pub fn declared_names(&self) -> Vec<String> {
        self.declared
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect()
    }

    /// Forget every metric not in `keep` (what a refused new version of
    /// the plugin declared before it failed).
    pub fn forget_all_but(&self, keep: &[String]) {
        self.declared
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|name, _| keep.contains(name));
    }

    fn new(plugin: &str, max_series: u32, dropped: Counter) -> Self {
        Self {
            plugin: plugin.to_owned(),
            prefix: format!("{}__", plugin.replace('-', "_")),
            max_series,
            dropped,
            declared: RwLock::default(),
        }
    }

    pub fn counter(
        &self,
        name: &str,
        help: &str,
        labels: Vec<String>,
    ) -> Result<Arc<CounterFamily>, MetricError> {
        // OpenMetrics adds `_total` to counters; accept a name that has it already.
        let name = name.strip_suffix("_total").unwrap_or(name);
        let fam = self.declare(
            name,
            help,
            labels,
            None,
            |f| Declared::Counter(Arc::new(f)),
            Counter::default,
        )?;
        match fam {
            Declared::Counter(c) => Ok(c),
            _ => Err(self.conflict(name, "counter")),
        }
    }

    pub fn gauge(
        &self,
        name: &str,
        help: &str,
        labels: Vec<String>,
    ) -> Result<Arc<GaugeFamily>, MetricError> {
        let fam = self.declare(
            name,
            help,
            labels,
            None,
            |f| Declared::Gauge(Arc::new(f)),
            Gauge::default,
        )?;
        match fam {
            Declared::Gauge(g) => Ok(g),
            _ => Err(self.conflict(name, "gauge")),
        }
    }

    pub fn histogram(
        &self,
        name: &str,
        help: &str,
        labels: Vec<String>,
        buckets: Vec<f64>,
    ) -> Result<Arc<HistogramFamily>, MetricError> {
        if buckets.is_empty()
            || buckets.iter().any(|b| !b.is_finite())
            || buckets.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(MetricError::InvalidBuckets(format!(
                "histogram {name:?}: buckets must be finite, strictly increasing and not empty, got {buckets:?}"
            )));
        }
        let b = buckets.clone();
        let fam = self.declare(
            name,
            help,
            labels,
            Some(&buckets),
            |f| Declared::Histogram(Arc::new(f), buckets.clone()),
            move || Histogram::new(b.clone()),
        )?;
        match fam {
            Declared::Histogram(h, _) => Ok(h),
            _ => Err(self.conflict(name, "histogram")),
        }
    }

    fn conflict(&self, name: &str, kind: &str) -> MetricError {
        MetricError::Conflict(format!(
            "metric {name:?} is already declared by plugin {:?} as another type, not a {kind}",
            self.plugin
        ))
    }

    fn declare<M: 'static>(
        &self,
        name: &str,
        help: &str,
        labels: Vec<String>,
        buckets: Option<&[f64]>,
        wrap: impl FnOnce(MetricFamily<M>) -> Declared,
        make: impl Fn() -> M + Send + Sync + 'static,
    ) -> Result<Declared, MetricError> {
        check_name("metric", name)?;
        if name.starts_with('_') || name.contains("__") {
            return Err(MetricError::InvalidName(format!(
                "metric name {name:?} must not start with `_` or contain `__`: the host uses `__` to separate the plugin's name from the metric's"
            )));
        }
        if let Some(suffix) = RESERVED_SUFFIXES.iter().find(|s| name.ends_with(*s)) {
            return Err(MetricError::InvalidName(format!(
                "metric name {name:?} ends in {suffix:?}, which OpenMetrics reserves for the samples of counters and histograms; choose another name"
            )));
        }
        for l in &labels {
            check_name("label", l)?;
            if RESERVED_LABELS.contains(&l.as_str()) || l.starts_with("__") {
                return Err(MetricError::InvalidName(format!(
                    "label name {l:?} is reserved by the host or by Prometheus"
                )));
            }
        }
        if let Some(dup) = labels
            .iter()
            .enumerate()
            .find_map(|(i, l)| labels[..i].contains(l).then_some(l))
        {
            return Err(MetricError::InvalidName(format!(
                "label {dup:?} is declared twice"
            )));
        }
        let mut declared = self.declared.write().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = declared.get(name) {
            // Declaring again is how a restarted plugin gets its handles back;
            // it must describe the same metric.
            let (existing_labels, existing_buckets) = match existing {
                Declared::Counter(f) => (&f.labels, None),
                Declared::Gauge(f) => (&f.labels, None),
                Declared::Histogram(f, b) => (&f.labels, Some(b.as_slice())),
            };
            if existing_labels.names != labels || existing_buckets != buckets {
                return Err(MetricError::Conflict(format!(
                    "metric {name:?} is already declared with labels {:?}{}",
                    existing_labels.names,
                    existing_buckets
                        .map(|b| format!(" and buckets {b:?}"))
                        .unwrap_or_default()
                )));
            }
            return Ok(existing.clone());
        }
        let fam = wrap(MetricFamily {
            name: format!("{}{}", self.prefix, name),
            // prometheus-client writes HELP verbatim: a plugin's newline
            // would end the line and inject samples.
            help: help
                .replace('\\', "\\\\")
                .replace('\n', "\\n")
                .replace('\r', ""),
            labels: Arc::new(LabelSchema {
                plugin: self.plugin.clone(),
                names: labels,
            }),
            family: Family::new_with_constructor(Box::new(make)),
            max_series: self.max_series,
            series: AtomicUsize::new(0),
            dropped: self.dropped.clone(),
        });
        declared.insert(name.to_owned(), fam.clone());
        Ok(fam)
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let declared = self.declared.read().unwrap_or_else(|e| e.into_inner());
        for d in declared.values() {
            match d {
                Declared::Counter(f) => encode_family(encoder, f, MetricType::Counter)?,
                Declared::Gauge(f) => encode_family(encoder, f, MetricType::Gauge)?,
                Declared::Histogram(f, _) => encode_family(encoder, f, MetricType::Histogram)?,
            }
        }
        Ok(())
    }
}

fn encode_family<M>(
    encoder: &mut DescriptorEncoder,
    f: &MetricFamily<M>,
    ty: MetricType,
) -> Result<(), fmt::Error>
where
    Family<LabelValues, M, Box<dyn Fn() -> M + Send + Sync>>: EncodeMetric,
{
    if f.series.load(Ordering::Relaxed) == 0 {
        // A metric with no series yet has nothing to say; skipping it keeps
        // the exposition free of bare descriptors.
        return Ok(());
    }
    let metric = encoder.encode_descriptor(&f.name, &f.help, None, ty)?;
    f.family.encode(metric)
}

/// Sample suffixes OpenMetrics derives from a family name (counters lose a
/// `_total` before this check, see [`PluginMetrics::counter`]).
const RESERVED_SUFFIXES: &[&str] = &[
    "_total", "_created", "_bucket", "_count", "_sum", "_gcount", "_gsum", "_info",
];

/// `plugin` is ours; `le` and `quantile` have a meaning in histograms and summaries.
const RESERVED_LABELS: &[&str] = &["plugin", "le", "quantile"];

fn check_name(what: &str, name: &str) -> Result<(), MetricError> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 200;
    if ok {
        Ok(())
    } else {
        Err(MetricError::InvalidName(format!(
            "{what} name {name:?} is not valid: use [a-zA-Z_][a-zA-Z0-9_]*"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn plugin_metrics_are_prefixed_labelled_and_capped() {
        let metrics = Metrics::new();
        let pm = metrics.add_plugin("exec-counter", 2);
        let execs = pm
            .counter("execs_total", "Execs by command", s(&["comm"]))
            .unwrap();
        execs.add(s(&["bash"]), 3).unwrap();
        execs.add(s(&["ls"]), 1).unwrap();
        assert_eq!(
            execs.add(s(&["cat"]), 1),
            Err(MetricError::CardinalityLimit(2))
        );
        // An existing series still records past the cap.
        execs.add(s(&["bash"]), 1).unwrap();
        assert_eq!(
            execs.add(s(&["a", "b"]), 1),
            Err(MetricError::WrongLabelCount {
                expected: 1,
                actual: 2
            })
        );

        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"exec_counter__execs_total{plugin="exec-counter",comm="bash"} 4"#),
            "{text}"
        );
        assert!(text.contains(r#"exec_counter__execs_total{plugin="exec-counter",comm="ls"} 1"#));
        assert!(!text.contains("cat"));
        assert!(
            text.contains(r#"conductor_plugin_series_dropped_total{plugin="exec-counter"} 1"#),
            "{text}"
        );

        metrics.remove_plugin("exec-counter", &[]);
        assert!(!metrics.encode().unwrap().contains("exec_counter__execs"));
    }

    #[test]
    fn bound_series_share_the_familys_series_and_its_cap() {
        let metrics = Metrics::new();
        let pm = metrics.add_plugin("p", 2);
        let execs = pm.counter("execs", "Execs", s(&["comm"])).unwrap();
        let bash = CounterSeries::bind(&*execs, s(&["bash"])).unwrap();
        // Bound, not yet added to: exported at 0.
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"p__execs_total{plugin="p",comm="bash"} 0"#),
            "{text}"
        );
        bash.add(3);
        execs.add(s(&["bash"]), 1).unwrap();
        CounterSeries::bind(&*execs, s(&["ls"])).unwrap();
        assert!(matches!(
            CounterSeries::bind(&*execs, s(&["cat"])),
            Err(MetricError::CardinalityLimit(2))
        ));
        assert!(matches!(
            CounterSeries::bind(&*execs, s(&[])),
            Err(MetricError::WrongLabelCount { .. })
        ));
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"p__execs_total{plugin="p",comm="bash"} 4"#),
            "{text}"
        );
        assert!(
            text.contains(r#"conductor_plugin_series_dropped_total{plugin="p"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn a_plugins_host_series_are_removed_as_they_were_created() {
        let metrics = Metrics::new();
        let sources = vec!["events".to_owned(), "flows".to_owned()];
        let series = metrics.host.plugin_series("p1", &sources);
        let other = metrics.host.plugin_series("p2", &sources[..1]);
        series.sources[1].lost_kernel.inc();
        series.calls[1].observe(0.001);
        series.up.set(1);
        other.up.set(1);
        for kind in FAULT_KINDS {
            metrics.host.fault("p1", kind).inc();
        }
        metrics
            .host
            .series_dropped
            .get_or_create(&PluginLabel {
                plugin: "p1".into(),
            })
            .inc();
        assert!(metrics.encode().unwrap().contains(r#"plugin="p1""#));
        metrics.remove_plugin("p1", &sources);
        let text = metrics.encode().unwrap();
        assert!(!text.contains(r#"plugin="p1""#), "{text}");
        assert!(
            text.contains(r#"conductor_plugin_up{plugin="p2"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn fault_kinds_are_the_runtimes() {
        use conductor_runtime::FaultKind;
        for kind in [
            FaultKind::Trap,
            FaultKind::Timeout,
            FaultKind::Memory,
            FaultKind::Error,
        ] {
            assert!(FAULT_KINDS.contains(&kind.as_str()), "{kind:?}");
        }
    }

    /// The names a spec accepts, as `PluginSpec::validate` decides.
    fn accepted_name(name: &str) -> bool {
        conductor_api::PluginSpec::from_yaml(&format!("name: {name:?}\ncomponent: /p.wasm\n"))
            .is_ok()
    }

    /// Issue 19, defect 1: a plugin named `1exec` made the whole page
    /// invalid (`invalid metric name in comment`). Property: whatever name
    /// the spec accepts, the page with that plugin's metrics and host
    /// series passes `promtool check metrics`.
    #[test]
    fn no_accepted_plugin_name_makes_the_exposition_invalid() {
        use proptest::prelude::*;
        assert!(!accepted_name("1exec"), "a digit-leading name is refused");
        let accepted = std::sync::Mutex::new(vec!["exec-counter".to_owned(), "a".to_owned()]);
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 512,
            ..ProptestConfig::default()
        });
        // Mostly DNS-label-shaped names (so many are accepted), some of
        // any printable ASCII.
        let names = prop_oneof![
            "[a-z][a-z0-9-]{0,61}[a-z0-9]",
            "[a-z0-9-]{1,63}",
            "[0-9][a-z0-9-]{0,8}",
            "[ -~]{1,20}",
        ];
        runner
            .run(&names, |name| {
                if accepted_name(&name) {
                    accepted.lock().unwrap().push(name);
                }
                Ok(())
            })
            .unwrap();
        let mut accepted = accepted.into_inner().unwrap();
        accepted.sort();
        accepted.dedup();
        assert!(accepted.len() > 100, "too few accepted names: {accepted:?}");

        let metrics = Metrics::new();
        let sources = s(&["events"]);
        let mut keep = Vec::new();
        for name in &accepted {
            let pm = metrics.add_plugin(name, 10);
            pm.counter("execs", "Execs", s(&["comm"]))
                .unwrap()
                .add(s(&["sh"]), 1)
                .unwrap();
            let series = metrics.host.plugin_series(name, &sources);
            series.up.set(1);
            keep.push(series);
        }
        // promtool reads the classic format (as Prometheus's scrape of
        // curl-like clients); random names trip its style lints (e.g.
        // "abbreviated units"), which are not errors: a page Prometheus
        // would reject shows as `error while linting`.
        let classic = openmetrics_to_prometheus_text(&metrics.encode().unwrap());
        let (_, out) = conductor_test_support::promtool_check_metrics(&classic);
        assert!(!out.contains("error"), "promtool rejects the page: {out}");
        for line in out.lines() {
            let name = line.split_whitespace().next().unwrap_or_default();
            assert!(
                name.starts_with(|c: char| c.is_ascii_alphabetic())
                    && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{line}"
            );
        }
    }

    #[test]
    fn declaring_again_returns_the_same_family_or_a_conflict() {
        let metrics = Metrics::new();
        let pm = metrics.add_plugin("p", 100);
        let a = pm.counter("hits", "h", s(&["x"])).unwrap();
        let b = pm.counter("hits", "h", s(&["x"])).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(matches!(
            pm.counter("hits", "h", s(&["y"])),
            Err(MetricError::Conflict(_))
        ));
        assert!(matches!(
            pm.gauge("hits", "h", s(&["x"])),
            Err(MetricError::Conflict(_))
        ));
        assert!(matches!(
            pm.gauge("9bad", "h", vec![]),
            Err(MetricError::InvalidName(_))
        ));
        assert!(matches!(
            pm.gauge("g", "h", s(&["plugin"])),
            Err(MetricError::InvalidName(_))
        ));
        assert!(matches!(
            pm.gauge("g", "h", s(&["a", "a"])),
            Err(MetricError::InvalidName(_))
        ));
        assert!(matches!(
            pm.histogram("lat", "h", vec![], vec![1.0, 0.5]),
            Err(MetricError::InvalidBuckets(_))
        ));
        let h = pm.histogram("lat", "h", vec![], vec![0.1, 1.0]).unwrap();
        h.observe(vec![], 0.5).unwrap();
        let g = pm.gauge("temp", "h", vec![]).unwrap();
        g.set(vec![], 2.5).unwrap();
        g.add(vec![], 1.0).unwrap();
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"p__lat_bucket{le="1.0",plugin="p"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"p__temp{plugin="p"} 3.5"#), "{text}");
    }

    #[test]
    fn plugins_cannot_collide_with_each_other_or_the_host() {
        let metrics = Metrics::new();
        // Under a single `_` both would be `a_b_c`.
        let a = metrics.add_plugin("a", 10);
        let ab = metrics.add_plugin("a-b", 10);
        a.gauge("b_c", "h", vec![])
            .unwrap()
            .set(vec![], 1.0)
            .unwrap();
        ab.gauge("c", "h", vec![])
            .unwrap()
            .set(vec![], 2.0)
            .unwrap();
        // A plugin named like the host cannot shadow a host metric.
        let c = metrics.add_plugin("conductor", 10);
        c.gauge("plugin_up", "h", vec![])
            .unwrap()
            .set(vec![], 3.0)
            .unwrap();
        let text = metrics.encode().unwrap();
        assert!(text.contains(r#"a__b_c{plugin="a"} 1.0"#), "{text}");
        assert!(text.contains(r#"a_b__c{plugin="a-b"} 2.0"#), "{text}");
        assert!(
            text.contains(r#"conductor__plugin_up{plugin="conductor"} 3.0"#),
            "{text}"
        );

        // The names that would break the split, or collide with samples.
        for bad in ["b__c", "_c", "x_count", "x_bucket", "x_sum", "x_created"] {
            assert!(
                matches!(a.gauge(bad, "h", vec![]), Err(MetricError::InvalidName(_))),
                "{bad}"
            );
        }
        // A counter may be declared with its `_total`, not with two.
        a.counter("hits_total", "h", vec![]).unwrap();
        assert!(matches!(
            a.counter("hits_total_total", "h", vec![]),
            Err(MetricError::InvalidName(_))
        ));
        for bad in ["le", "quantile", "plugin", "__x"] {
            assert!(
                matches!(
                    a.gauge("g", "h", s(&[bad])),
                    Err(MetricError::InvalidName(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn classic_text_renames_counter_families_and_drops_openmetrics_lines() {
        let metrics = Metrics::new();
        let pm = metrics.add_plugin("p", 10);
        pm.counter("hits", "Hits \"quoted\"\nfake_sample 1 \\o/", s(&["x"]))
            .unwrap()
            .add(s(&["a"]), 2)
            .unwrap();
        let text = openmetrics_to_prometheus_text(&metrics.encode().unwrap());
        assert!(
            text.contains(
                "# HELP p__hits_total Hits \"quoted\"\\nfake_sample 1 \\\\o/\n# TYPE p__hits_total counter\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"p__hits_total{plugin="p",x="a"} 2"#),
            "{text}"
        );
        assert!(text.contains("# TYPE conductor_plugin_series_dropped_total counter\n"));
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }

    /// What a guest can ask of the `metrics` interface, with names, help,
    /// labels, values and buckets of its choosing.
    #[derive(Debug, Clone)]
    enum Call {
        Counter(String, String, Vec<String>),
        Gauge(String, String, Vec<String>),
        Histogram(String, String, Vec<String>, Vec<f64>),
        Add(usize, Vec<String>, u64),
        Bind(usize, Vec<String>, u64),
        Set(usize, Vec<String>, f64),
        GaugeAdd(usize, Vec<String>, f64),
        Observe(usize, Vec<String>, f64),
    }

    fn guest_calls() -> impl proptest::strategy::Strategy<Value = Vec<Call>> {
        use proptest::prelude::*;
        // Mostly valid names (so that series get made), some of any text.
        let name = || prop_oneof![3 => "[a-z][a-z0-9_]{0,8}(_total)?", 1 => ".{0,12}"];
        let labels = || prop::collection::vec(prop_oneof!["[a-c]", ".{0,6}"], 0..3);
        let values =
            || prop::collection::vec(prop_oneof!["[ab]", ".{0,8}", "[\"\\\\\n{}=,]{0,4}"], 0..3);
        let float = || {
            prop_oneof![
                any::<f64>(),
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY),
                -10.0..10.0f64,
            ]
        };
        let help = || prop_oneof!["[a-z ]{0,10}", ".{0,20}", "[\"\\\\\n#]{0,6}"];
        let call = prop_oneof![
            1 => (name(), help(), labels()).prop_map(|(n, h, l)| Call::Counter(n, h, l)),
            1 => (name(), help(), labels()).prop_map(|(n, h, l)| Call::Gauge(n, h, l)),
            1 => (name(), help(), labels(), prop::collection::vec(float(), 0..8))
                .prop_map(|(n, h, l, b)| Call::Histogram(n, h, l, b)),
            1 => (name(), help(), labels(), prop::collection::vec(0.0..100.0f64, 1..6)).prop_map(
                |(n, h, l, mut b)| {
                    b.sort_by(f64::total_cmp);
                    b.dedup();
                    Call::Histogram(n, h, l, b)
                }
            ),
            4 => (any::<usize>(), values(), any::<u64>()).prop_map(|(i, v, d)| Call::Add(i, v, d)),
            2 => (any::<usize>(), values(), any::<u64>()).prop_map(|(i, v, d)| Call::Bind(i, v, d)),
            2 => (any::<usize>(), values(), float()).prop_map(|(i, v, x)| Call::Set(i, v, x)),
            2 => (any::<usize>(), values(), float()).prop_map(|(i, v, x)| Call::GaugeAdd(i, v, x)),
            3 => (any::<usize>(), values(), float()).prop_map(|(i, v, x)| Call::Observe(i, v, x)),
        ];
        prop::collection::vec(call, 1..40)
    }

    /// Issue 19, fuzzing of every WIT call: whatever names, help, labels,
    /// values, deltas and buckets a guest passes to the `metrics` interface
    /// (through the same backend the runtime calls), each call succeeds or
    /// returns a typed error, no family holds more label sets than the
    /// plugin's limit (and the limit is the only reason a new label set is
    /// refused once the label count is right), and the page stays one that
    /// `promtool check metrics` accepts.
    #[test]
    fn any_guest_metrics_calls_give_typed_errors_and_a_valid_page() {
        use conductor_runtime::host::metrics::{
            CounterSeries, GaugeSeries, HistogramSeries, MetricsBackend,
        };
        use proptest::prelude::*;
        use std::collections::HashSet;
        const LIMIT: u32 = 4;
        enum Handle {
            Counter(Arc<dyn CounterSeries>),
            Gauge(Arc<dyn GaugeSeries>),
            Histogram(Arc<dyn HistogramSeries>),
        }
        // Label sets accepted whose values need escaping on the page: the
        // property is empty if none are.
        let escaped = std::sync::atomic::AtomicUsize::new(0);
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
            cases: 48,
            ..ProptestConfig::default()
        });
        runner
            .run(&guest_calls(), |calls| {
                let metrics = Metrics::new();
                let pm = metrics.add_plugin("fuzzed", LIMIT);
                let backend: &dyn MetricsBackend = &*pm;
                // Handles and, per handle, the label sets it accepted.
                let mut handles: Vec<(Handle, String, HashSet<Vec<String>>)> = Vec::new();
                for call in calls {
                    let (i, values, outcome) = match call {
                        Call::Counter(n, h, l) => {
                            if let Ok(c) = backend.counter(&n, &h, l) {
                                handles.push((Handle::Counter(c), n, HashSet::new()));
                            }
                            continue;
                        }
                        Call::Gauge(n, h, l) => {
                            if let Ok(g) = backend.gauge(&n, &h, l) {
                                handles.push((Handle::Gauge(g), n, HashSet::new()));
                            }
                            continue;
                        }
                        Call::Histogram(n, h, l, b) => {
                            let valid = !b.is_empty()
                                && b.iter().all(|x| x.is_finite())
                                && b.windows(2).all(|w| w[0] < w[1]);
                            match backend.histogram(&n, &h, l, b) {
                                Ok(hist) => {
                                    prop_assert!(valid, "invalid buckets were accepted");
                                    handles.push((Handle::Histogram(hist), n, HashSet::new()));
                                }
                                Err(MetricError::InvalidBuckets(m)) => {
                                    prop_assert!(!valid && m.contains("buckets"), "{m}")
                                }
                                Err(_) => {}
                            }
                            continue;
                        }
                        call if !handles.is_empty() => {
                            let (i, v) = match &call {
                                Call::Add(i, v, _)
                                | Call::Bind(i, v, _)
                                | Call::Set(i, v, _)
                                | Call::GaugeAdd(i, v, _)
                                | Call::Observe(i, v, _) => (i % handles.len(), v.clone()),
                                _ => continue,
                            };
                            let outcome = match (&handles[i].0, call) {
                                (Handle::Counter(c), Call::Bind(_, _, d)) => {
                                    c.bind(v.clone()).map(|b| b.add(d))
                                }
                                (Handle::Counter(c), Call::Add(_, _, d)) => c.add(v.clone(), d),
                                (Handle::Counter(c), _) => c.add(v.clone(), 1),
                                (Handle::Gauge(g), Call::Set(_, _, x)) => g.set(v.clone(), x),
                                (Handle::Gauge(g), Call::GaugeAdd(_, _, x)) => g.add(v.clone(), x),
                                (Handle::Gauge(g), _) => g.add(v.clone(), 1.0),
                                (
                                    Handle::Histogram(h),
                                    Call::Observe(_, _, x) | Call::Set(_, _, x),
                                ) => h.observe(v.clone(), x),
                                (Handle::Histogram(h), _) => h.observe(v.clone(), 1.0),
                            };
                            (i, v, outcome)
                        }
                        _ => continue,
                    };
                    let (_, name, seen) = &mut handles[i];
                    match outcome {
                        Ok(()) => {
                            if values.iter().any(|v| v.contains(['"', '\\', '\n'])) {
                                escaped.fetch_add(1, Ordering::Relaxed);
                            }
                            seen.insert(values);
                        }
                        Err(MetricError::CardinalityLimit(n)) => {
                            prop_assert_eq!(n, LIMIT);
                            prop_assert!(!seen.contains(&values), "a known label set was refused");
                            prop_assert_eq!(
                                seen.len() as u32,
                                LIMIT,
                                "refused below the limit ({})",
                                name
                            );
                        }
                        Err(MetricError::WrongLabelCount { expected, actual }) => {
                            prop_assert_eq!(actual as usize, values.len());
                            prop_assert_ne!(expected, actual);
                        }
                        Err(e) => prop_assert!(false, "unexpected error for {name}: {e}"),
                    }
                    prop_assert!(seen.len() as u32 <= LIMIT);
                }
                let page = metrics
                    .encode()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let classic = openmetrics_to_prometheus_text(&page);
                let (_, out) = conductor_test_support::promtool_check_metrics(&classic);
                prop_assert!(
                    !out.contains("error"),
                    "promtool rejects the page: {out}\n{page}"
                );
                Ok(())
            })
            .unwrap();
    }
}
