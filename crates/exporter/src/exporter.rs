//! A loaded configuration: its BPF object attached (programs from their
//! section names), its maps open, and a [`prometheus_client`] collector that
//! reads the maps at each scrape and writes ebpf_exporter's series.

use conductor_api::GlobalValue;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use conductor_kernel::maps::{KernelMap, MapKind};
use conductor_kernel::object::{self, LoadedObject};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::cgroup_id_map::{CgroupIdMapSync, Filler};
use crate::collect::{self, KeyLayout, Row};
use crate::config::{Config, ConfigError};
use crate::decoder::Host;
use crate::histogram::Buckets;
use crate::perf::{self, PerfCounter};

/// ebpf_exporter's namespace: every metric is `ebpf_exporter_<name>`.
pub const NAMESPACE: &str = "ebpf_exporter";

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    // Not a `source`: the message already ends with it, and error
    // chains (`{:#}`) would print it twice.
    #[error("ebpf_exporter config {config:?}: {error}")]
    Kernel {
        config: String,
        error: conductor_kernel::object::BpfError,
    },
    #[error(
        "ebpf_exporter config {config:?}: kaddrs[{index}]: symbol {symbol:?} is not in /proc/kallsyms (or its addresses were not readable: the host needs CAP_SYSLOG when it starts)"
    )]
    Kaddr {
        config: String,
        index: usize,
        symbol: String,
    },
    #[error("ebpf_exporter config {config:?}: {field}: map {map:?}: {problem}")]
    Map {
        config: String,
        field: String,
        map: String,
        problem: String,
    },
    /// A decoder needs something the node does not have (the PCI ID database).
    #[error("ebpf_exporter config {config:?}: {field}: {problem}")]
    Decoder {
        config: String,
        field: String,
        problem: String,
    },
}

impl LoadError {
    /// The YAML path of the offending field, when one is to blame.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Config(e) => e.field(),
            Self::Map { field, .. } | Self::Decoder { field, .. } => Some(field),
            Self::Kaddr { .. } => Some("kaddrs"),
            Self::Kernel { .. } => None,
        }
    }
}

enum Kind {
    Counter,
    Histogram(crate::config::Histogram),
}

struct Metric {
    /// The config's name for it (also the map's name).
    name: String,
    help: String,
    kind: Kind,
    layout: KeyLayout,
    map: KernelMap,
}

/// A `perf_event_array` counter: counted from events, not read from a map.
struct PerfMetric {
    name: String,
    help: String,
    label_names: Vec<String>,
    counter: PerfCounter,
}

/// One running configuration. Dropping it detaches its programs.
pub struct Exporter {
    config: String,
    metrics: Vec<Metric>,
    /// Stopped (their readers joined) before the object goes.
    perf: Vec<PerfMetric>,
    host: Arc<dyn Host>,
    decoder_errors: Arc<AtomicU64>,
    /// Keeps the `cgroup_id_map` filled (its thread stops when dropped).
    _cgroup_id_map: Option<CgroupIdMapSync>,
    // Last: the maps above are dropped before the object they came from.
    _object: LoadedObject,
}

impl fmt::Debug for Exporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Exporter")
            .field("config", &self.config)
            .field("metrics", &self.metrics.len())
            .finish_non_exhaustive()
    }
}

/// What the config's decoders need from the node, asked before anything
/// loads: today the PCI ID database of the `pci_*` decoders.
fn check_host_decoders(config: &Config, host: &dyn Host) -> Result<(), LoadError> {
    let counters = config.metrics.counters.iter().map(|c| &c.labels);
    let histograms = config.metrics.histograms.iter().map(|h| &h.labels);
    let fields = counters
        .map(|l| ("counters", l))
        .enumerate()
        .chain(histograms.map(|l| ("histograms", l)).enumerate());
    for (i, (kind, labels)) in fields {
        for (l, label) in labels.iter().enumerate() {
            for (d, decoder) in label.decoders.iter().enumerate() {
                let needs_pci = crate::decoder::DecoderKind::parse(&decoder.name)
                    .is_some_and(|k| k.needs_pci_ids());
                if needs_pci && let Err(problem) = host.pci_ids() {
                    return Err(LoadError::Decoder {
                        config: config.name.clone(),
                        field: format!("metrics.{kind}[{i}].labels[{l}].decoders[{d}].name"),
                        problem: format!("decoder {:?}: {problem}", decoder.name),
                    });
                }
            }
        }
    }
    Ok(())
}

impl Exporter {
    /// Load `object` for `config`: `kaddr_<symbol>` globals set from
    /// `kallsyms`, programs attached from their section names, each
    /// metric's map opened and its key layout checked.
    pub fn load(
        config: &Config,
        object: &Path,
        host: Arc<dyn Host>,
        kaddr: impl Fn(&str) -> Option<u64>,
    ) -> Result<Self, LoadError> {
        Self::load_with_globals(config, object, host, kaddr, &BTreeMap::new())
    }

    /// [`Exporter::load`], with values for more of the object's globals
    /// (a spec's `bytecode.globalData`); `kaddrs` take precedence.
    pub fn load_with_globals(
        config: &Config,
        object: &Path,
        host: Arc<dyn Host>,
        kaddr: impl Fn(&str) -> Option<u64>,
        global_data: &BTreeMap<String, GlobalValue>,
    ) -> Result<Self, LoadError> {
        if config.tracing.is_some() {
            tracing::warn!(config = %config.name, "tracing spans are not supported: ignored");
        }
        check_host_decoders(config, &*host)?;
        let mut globals = global_data.clone();
        for (index, symbol) in config.kaddrs.iter().enumerate() {
            let addr = kaddr(symbol).ok_or_else(|| LoadError::Kaddr {
                config: config.name.clone(),
                index,
                symbol: symbol.clone(),
            })?;
            globals.insert(format!("kaddr_{symbol}"), GlobalValue::Unsigned(addr));
        }
        let max_bytes = conductor_api::files::DEFAULT_MAX_BYTECODE_BYTES;
        let mut loaded =
            object::load_capped(object, &[], &globals, max_bytes).map_err(|error| {
                LoadError::Kernel {
                    config: config.name.clone(),
                    error,
                }
            })?;
        let mut metrics = Vec::new();
        let mut perf = Vec::new();
        let decoder_errors = Arc::new(AtomicU64::new(0));
        for (i, c) in config.metrics.counters.iter().enumerate() {
            if !c.perf_event_array {
                continue;
            }
            let at = format!("metrics.counters[{i}]");
            let bad = |field: String, problem: String| LoadError::Map {
                config: config.name.clone(),
                field,
                map: c.name.clone(),
                problem,
            };
            let map = loaded
                .open_map(&c.name)
                .map_err(|e| bad(format!("{at}.name"), e.to_string()))?;
            if map.meta().kind != MapKind::PerfEventArray {
                return Err(bad(
                    format!("{at}.perf_event_array"),
                    format!(
                        "the map is a {:?}, not a perf event array: remove perf_event_array to read it at scrape time",
                        map.meta().kind
                    ),
                ));
            }
            let layout =
                KeyLayout::new(&c.labels, false).map_err(|p| bad(format!("{at}.labels"), p))?;
            let label_names = layout.label_names();
            let counter = PerfCounter::start(
                &map,
                perf::Reader {
                    config: config.name.clone(),
                    metric: c.name.clone(),
                    layout: Arc::new(layout),
                    host: host.clone(),
                    decoder_errors: decoder_errors.clone(),
                    flush_every: c.flush_every(),
                },
            )
            .map_err(|e| {
                bad(
                    format!("{at}.name"),
                    format!("cannot open its perf buffers ({} pages per CPU): {e}; the host needs CAP_PERFMON, and CAP_IPC_LOCK unless RLIMIT_MEMLOCK covers them: keep it, e.g. `--keep-capabilities bpf,perfmon,net_admin,ipc_lock`", perf::PAGES),
                )
            })?;
            perf.push(PerfMetric {
                name: c.name.clone(),
                help: c.help.clone(),
                label_names,
                counter,
            });
        }
        let counters = config
            .metrics
            .counters
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.perf_event_array)
            .map(|(i, c)| {
                (
                    format!("metrics.counters[{i}]"),
                    c.name.clone(),
                    c.help.clone(),
                    &c.labels,
                    Kind::Counter,
                )
            });
        let histograms = config.metrics.histograms.iter().enumerate().map(|(i, h)| {
            (
                format!("metrics.histograms[{i}]"),
                h.name.clone(),
                h.help.clone(),
                &h.labels,
                Kind::Histogram(h.clone()),
            )
        });
        for (at, name, help, labels, kind) in counters.chain(histograms) {
            let bad = |field: String, problem: String| LoadError::Map {
                config: config.name.clone(),
                field,
                map: name.clone(),
                problem,
            };
            let map = loaded
                .open_map(&name)
                .map_err(|e| bad(format!("{at}.name"), e.to_string()))?;
            let meta = map.meta().clone();
            if meta.kind == MapKind::PerfEventArray {
                return Err(bad(
                    format!("{at}.name"),
                    "is a perf event array: set perf_event_array: true on this counter to count its events"
                        .into(),
                ));
            }
            if meta.value_size != 8 {
                return Err(bad(
                    format!("{at}.name"),
                    format!(
                        "values are {} bytes; ebpf_exporter metrics read u64 (8-byte) values",
                        meta.value_size
                    ),
                ));
            }
            let layout = KeyLayout::new(labels, meta.kind.is_per_cpu())
                .map_err(|p| bad(format!("{at}.labels"), p))?;
            layout
                .check_key_size(meta.key_size)
                .map_err(|p| bad(format!("{at}.labels"), p))?;
            metrics.push(Metric {
                name,
                help,
                kind,
                layout,
                map,
            });
        }
        let cgroup_id_map = match &config.cgroup_id_map {
            None => None,
            Some(conf) => {
                let bad = |problem: String| LoadError::Map {
                    config: config.name.clone(),
                    field: "cgroup_id_map.name".into(),
                    map: conf.name.clone(),
                    problem,
                };
                let map = loaded
                    .open_map(&conf.name)
                    .map_err(|e| bad(e.to_string()))?;
                let filler = Filler::new(&config.name, conf, map, host.clone()).map_err(bad)?;
                Some(
                    CgroupIdMapSync::start(filler)
                        .map_err(|e| bad(format!("cannot start the thread that fills it: {e}")))?,
                )
            }
        };
        tracing::info!(config = %config.name, metrics = metrics.len() + perf.len(), "ebpf_exporter config loaded");
        Ok(Self {
            config: config.name.clone(),
            metrics,
            perf,
            host,
            decoder_errors,
            _cgroup_id_map: cgroup_id_map,
            _object: loaded,
        })
    }

    pub fn name(&self) -> &str {
        &self.config
    }

    /// The map behind metric `name` (benchmarks fill it from user space).
    pub fn map(&self, name: &str) -> Option<&KernelMap> {
        self.metrics.iter().find(|m| m.name == name).map(|m| &m.map)
    }

    /// Events read so far by `perf_event_array` counter `name`, and the
    /// samples the kernel dropped (benchmarks report both).
    pub fn perf_events(&self, name: &str) -> Option<(u64, u64)> {
        self.perf
            .iter()
            .find(|p| p.name == name)
            .map(|p| (p.counter.events(), p.counter.dropped()))
    }

    /// Errors met while reading or decoding maps (`ebpf_exporter_decoder_errors_total`).
    pub fn decoder_errors(&self) -> u64 {
        self.decoder_errors.load(Ordering::Relaxed)
    }

    fn fail(&self, metric: &str, e: impl fmt::Display) {
        self.decoder_errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(config = %self.config, metric, "cannot read the map: {e}");
    }

    /// Every row of `map`: per-CPU values summed, or one row per CPU with
    /// the CPU number appended to the key when split by CPU.
    fn rows(map: &KernelMap, by_cpu: bool) -> Result<Vec<Row>, String> {
        let meta = map.meta();
        let stride = meta.value_stride as usize;
        let mut rows = Vec::new();
        let mut cursor: Option<Vec<u8>> = None;
        // A key deleted under the cursor makes the kernel restart from the
        // first key: bound the walk by the map's size.
        let mut budget = meta.max_entries as usize + 1;
        while let Some(key) = map.next_key(cursor.as_deref()).map_err(|e| e.to_string())? {
            if budget == 0 {
                break;
            }
            budget -= 1;
            // Deleted between next_key and lookup: gone, not an error.
            if let Some(value) = map.lookup(&key).map_err(|e| e.to_string())? {
                let per_cpu = value
                    .chunks(stride.max(1))
                    .filter_map(|c| c.get(..8)?.try_into().ok())
                    .map(u64::from_ne_bytes);
                if by_cpu {
                    for (cpu, v) in per_cpu.enumerate() {
                        let mut k = key.clone();
                        k.extend_from_slice(&(cpu as u16).to_ne_bytes());
                        rows.push((k, v));
                    }
                } else {
                    rows.push((key.clone(), per_cpu.fold(0u64, u64::wrapping_add)));
                }
            }
            cursor = Some(key);
        }
        Ok(rows)
    }

    /// Read every metric's map now, as a scrape does.
    pub fn collect(&self) -> Vec<Family> {
        let mut out = Vec::with_capacity(self.metrics.len() + 2 * self.perf.len());
        // perf_event_array counters first, as ebpf_exporter collects them.
        for p in &self.perf {
            out.push(Family {
                name: format!("{NAMESPACE}_{}", p.name),
                help: p.help.clone(),
                histogram: false,
                label_names: p.label_names.clone(),
                series: p
                    .counter
                    .series()
                    .into_iter()
                    .map(|(l, v)| (l, Value::Counter(v)))
                    .collect(),
            });
            // ebpf_exporter makes this counter but never registers it; here
            // it is exposed, under the name it was given there.
            out.push(Family {
                name: format!("dropped_perf_event_map_events_{}", p.name),
                help: "Dropped perf map events".into(),
                histogram: false,
                label_names: Vec::new(),
                series: vec![(Vec::new(), Value::Counter(p.counter.dropped()))],
            });
        }
        for m in &self.metrics {
            let rows = match Self::rows(&m.map, m.layout.by_cpu) {
                Ok(r) => r,
                Err(e) => {
                    self.fail(&m.name, e);
                    continue;
                }
            };
            let series = match &m.kind {
                Kind::Counter => collect::counter_series(&m.layout, &rows, &*self.host)
                    .map(|s| s.into_iter().map(|(l, v)| (l, Value::Counter(v))).collect()),
                Kind::Histogram(h) => collect::histogram_series(h, &m.layout, &rows, &*self.host)
                    .map(|s| {
                        s.into_iter()
                            .map(|(l, b)| (l, Value::Histogram(b)))
                            .collect()
                    }),
            };
            match series {
                Ok(series) => {
                    let mut names = m.layout.label_names();
                    if matches!(m.kind, Kind::Histogram(_)) {
                        names.pop();
                    }
                    out.push(Family {
                        name: format!("{NAMESPACE}_{}", m.name),
                        help: m.help.clone(),
                        histogram: matches!(m.kind, Kind::Histogram(_)),
                        label_names: names,
                        series,
                    })
                }
                Err(e) => self.fail(&m.name, e),
            }
        }
        out
    }
}

/// One metric family as read at a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    /// The exposed name, `ebpf_exporter_<name>`.
    pub name: String,
    pub help: String,
    pub histogram: bool,
    pub label_names: Vec<String>,
    pub series: Vec<(Vec<String>, Value)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Counter(u64),
    Histogram(Buckets),
}

/// All loaded configurations, as one collector for the node's registry
/// (one, so `ebpf_exporter_enabled_configs` and the decoder errors are one
/// family each, whichever entry point added the configs).
#[derive(Debug, Default)]
pub struct ExporterSet {
    exporters: RwLock<Vec<Arc<Exporter>>>,
}

impl Collector for ExporterSet {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        self.encode_into(&mut encoder)
    }
}

impl ExporterSet {
    pub fn new(exporters: Vec<Arc<Exporter>>) -> Self {
        Self {
            exporters: RwLock::new(exporters),
        }
    }

    /// Scrape `exporter` from now on.
    pub fn add(&self, exporter: Arc<Exporter>) {
        self.write().push(exporter);
    }

    /// Stop scraping `exporter` (the same one [`ExporterSet::add`] took);
    /// true if it was there.
    pub fn remove(&self, exporter: &Arc<Exporter>) -> bool {
        let mut all = self.write();
        let before = all.len();
        all.retain(|e| !Arc::ptr_eq(e, exporter));
        all.len() != before
    }

    /// The configurations scraped now.
    pub fn exporters(&self) -> Vec<Arc<Exporter>> {
        self.exporters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Arc<Exporter>>> {
        self.exporters.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Write every family: the configs' metrics, read from their maps now,
    /// and ebpf_exporter's `enabled_configs` and `decoder_errors_total`.
    pub fn encode_into(&self, encoder: &mut DescriptorEncoder) -> Result<(), fmt::Error> {
        let exporters = self.exporters();
        if exporters.is_empty() {
            return Ok(());
        }
        // ebpf_exporter's own series about its configs.
        {
            let mut m = encoder.encode_descriptor(
                "ebpf_exporter_enabled_configs",
                "The set of enabled configs",
                None,
                MetricType::Gauge,
            )?;
            for e in &exporters {
                let labels = [("name", e.name())];
                m.encode_family(&labels)?.encode_gauge(&1i64)?;
            }
        }
        let mut families: Vec<Family> = Vec::new();
        for e in &exporters {
            families.extend(e.collect());
        }
        {
            let mut m = encoder.encode_descriptor(
                "ebpf_exporter_decoder_errors",
                "How many times has decoders encountered errors",
                None,
                MetricType::Counter,
            )?;
            for e in &exporters {
                let labels = [("config", e.name())];
                m.encode_family(&labels)?
                    .encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
                        &e.decoder_errors(),
                        None,
                    )?;
            }
        }
        for f in &families {
            encode_family(encoder, f)?;
        }
        Ok(())
    }
}

/// One family in the registry's encoding. A counter named `..._total` is a
/// counter whose OpenMetrics family name drops the suffix (the samples keep
/// it); any other counter name is exposed as a gauge, since an OpenMetrics
/// counter's samples always end in `_total` and the name must not change.
fn encode_family(encoder: &mut DescriptorEncoder, f: &Family) -> Result<(), fmt::Error> {
    let (name, ty, counter) = if f.histogram {
        (f.name.as_str(), MetricType::Histogram, false)
    } else if let Some(base) = f.name.strip_suffix("_total") {
        (base, MetricType::Counter, true)
    } else {
        (f.name.as_str(), MetricType::Gauge, false)
    };
    let mut m = encoder.encode_descriptor(name, &f.help, None, ty)?;
    for (values, value) in &f.series {
        let labels: Vec<(&str, &str)> = f
            .label_names
            .iter()
            .map(String::as_str)
            .zip(values.iter().map(String::as_str))
            .collect();
        // A series without labels is written `name value`, not `name{} value`.
        if labels.is_empty() {
            encode_value(&mut m, value, counter)?;
        } else {
            encode_value(&mut m.encode_family(&labels)?, value, counter)?;
        }
    }
    Ok(())
}

fn encode_value(
    s: &mut prometheus_client::encoding::MetricEncoder<'_>,
    value: &Value,
    counter: bool,
) -> Result<(), fmt::Error> {
    match value {
        Value::Counter(v) if counter => {
            s.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(v, None)
        }
        Value::Counter(v) => s.encode_gauge(v),
        Value::Histogram(b) => s.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            b.sum, b.count, &b.buckets, None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{Kallsyms, SystemHost};

    /// A `pci_*` decoder on a node without the database: refused before the
    /// object is opened (the object here does not exist), the field named.
    #[test]
    fn a_pci_decoder_without_the_database_fails_the_load_with_the_field_named() {
        let yaml = "
metrics:
  counters:
    - name: ok_total
      help: no pci
      labels:
        - {name: x, size: 4, decoders: [{name: uint}]}
  histograms:
    - name: by_vendor
      help: by vendor
      bucket_type: exp2
      bucket_min: 0
      bucket_max: 4
      labels:
        - {name: vendor, size: 4, decoders: [{name: uint}, {name: pci_vendor}]}
        - {name: bucket, size: 8, decoders: [{name: uint}]}
";
        let config = Config::parse("pcis", yaml).unwrap();
        let err = Exporter::load(
            &config,
            Path::new("/nonexistent/pcis.bpf.o"),
            Arc::new(
                SystemHost::new(Kallsyms::default(), None)
                    .with_pci_ids_path("/nonexistent/pci.ids"),
            ),
            |_| None,
        )
        .unwrap_err();
        assert_eq!(
            err.field(),
            Some("metrics.histograms[0].labels[0].decoders[1].name"),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains(r#"decoder "pci_vendor": the PCI ID database is not on this node (looked for /nonexistent/pci.ids): install it (Debian/Ubuntu: apt install pci.ids"#),
            "{text}"
        );
    }
}
