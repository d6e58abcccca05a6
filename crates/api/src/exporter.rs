//! ebpf_exporter's configuration format (v2), read unchanged.
//!
//! Here in `conductor-api` (not in the built-in `conductor-exporter`) so a
//! spec's `exporter.config` is checked the same way wherever specs are
//! validated: run files, the daemon API, the operator.
//!
//! One YAML file per BPF object (`<name>.yaml` beside `<name>.bpf.o`):
//! `metrics.counters` and `metrics.histograms`, each naming the map it is
//! read from and how the map's key bytes become labels. Fields this host
//! does not know are ignored, as ebpf_exporter's YAML reader ignores them,
//! and `tracing` is ignored with a warning
//! (metrics still work without it).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// One configuration: the metrics of one BPF object.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Config {
    /// The config's name (its file name without `.yaml`); not in the YAML.
    #[serde(skip)]
    pub name: String,
    #[serde(default)]
    pub metrics: Metrics,
    /// Kernel symbols whose addresses are written into the object's
    /// `const volatile u64 kaddr_<symbol>` globals before it is loaded.
    #[serde(default)]
    pub kaddrs: Vec<String>,
    /// Spans from ring buffers: not supported here (ignored with a warning).
    #[serde(default)]
    pub tracing: Option<serde_yaml_ng::Value>,
    /// A map the host keeps filled with the ids of the cgroups whose paths
    /// match, so programs can filter by cgroup.
    #[serde(default)]
    pub cgroup_id_map: Option<CgroupIdMap>,
}

/// `cgroup_id_map`: the object's map `name` holds key `cgroup id` → `1`
/// for every cgroup whose full path (as the `cgroup` decoder writes it)
/// one of `regexps` matches, kept current as cgroups come and go.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CgroupIdMap {
    #[serde(default)]
    pub name: String,
    /// `hash` (the default: a hash map keyed by the `u64` id) or
    /// `cgrp_storage` (a `BPF_MAP_TYPE_CGRP_STORAGE` map, written through
    /// the cgroup's directory descriptor).
    #[serde(default, rename = "type")]
    pub map_type: Option<String>,
    #[serde(default)]
    pub regexps: Vec<String>,
}

/// The kinds of map a `cgroup_id_map` can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupIdMapType {
    Hash,
    CgrpStorage,
}

impl CgroupIdMap {
    /// `None` for a type this host does not know.
    pub fn kind(&self) -> Option<CgroupIdMapType> {
        match self.map_type.as_deref() {
            None | Some("") | Some("hash") => Some(CgroupIdMapType::Hash),
            Some("cgrp_storage") => Some(CgroupIdMapType::CgrpStorage),
            Some(_) => None,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Metrics {
    #[serde(default)]
    pub counters: Vec<Counter>,
    #[serde(default)]
    pub histograms: Vec<Histogram>,
}

/// A counter read from the map of the same name (`u64` values).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Counter {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub help: String,
    /// Counted from the events of the `BPF_MAP_TYPE_PERF_EVENT_ARRAY` of
    /// the same name (one per event, labels from the event's first bytes),
    /// not read from a hash map.
    #[serde(default)]
    pub perf_event_array: bool,
    /// How often a `perf_event_array` counter forgets its series: a Go
    /// duration (`"30s"`, `"1h30m"`) or nanoseconds; see [`Counter::flush_every`].
    #[serde(default)]
    pub flush_interval: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    pub labels: Vec<Label>,
}

/// A histogram read from the map of the same name: the last label is the
/// bucket, the others label the histogram.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Histogram {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub help: String,
    #[serde(default)]
    pub bucket_type: Option<String>,
    /// 0 means 1, as in ebpf_exporter.
    #[serde(default)]
    pub bucket_multiplier: f64,
    #[serde(default)]
    pub bucket_min: i64,
    #[serde(default)]
    pub bucket_max: i64,
    #[serde(default)]
    pub bucket_keys: Vec<f64>,
    #[serde(default)]
    pub labels: Vec<Label>,
}

/// One field of the map's key: `size` bytes, then `padding` bytes skipped,
/// turned into a label value by the decoder chain.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Label {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub size: u32,
    #[serde(default)]
    pub padding: u32,
    #[serde(default)]
    pub decoders: Vec<DecoderConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DecoderConfig {
    #[serde(default)]
    pub name: String,
    /// `static_map`: input → output. YAML keys and values may be numbers
    /// (`0: read`); they are compared as their text, as ebpf_exporter does.
    #[serde(default, deserialize_with = "scalar_map")]
    pub static_map: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub regexps: Option<Vec<String>>,
    #[serde(default)]
    pub allow_unknown: bool,
}

/// Histogram bucket layouts (`bucket_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketType {
    /// Bucket key `k` holds values up to `2^k`.
    Exp2,
    /// Key 0 holds zero, key `k > 0` values up to `2^(k-1)`.
    Exp2Zero,
    /// Key `k` holds values up to `k`.
    Linear,
    /// The keys are `bucket_keys`, each the upper bound of its bucket.
    Fixed,
}

impl BucketType {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "exp2" => Some(Self::Exp2),
            "exp2zero" => Some(Self::Exp2Zero),
            "linear" => Some(Self::Linear),
            "fixed" => Some(Self::Fixed),
            _ => None,
        }
    }
}

impl Counter {
    /// How often a `perf_event_array` counter drops every series, as
    /// ebpf_exporter does: `flush_interval` if above zero, else one hour.
    /// (Valid once [`Config::validate`] passed; an unreadable value counts
    /// as unset.)
    pub fn flush_every(&self) -> Duration {
        self.flush_interval
            .as_ref()
            .and_then(|v| go_duration(v).ok())
            .filter(|d| *d > 0)
            .map_or(DEFAULT_FLUSH, |ns| Duration::from_nanos(ns as u64))
    }
}

/// ebpf_exporter's flush interval when `flush_interval` is unset or not
/// above zero.
pub const DEFAULT_FLUSH: Duration = Duration::from_secs(3600);

/// A YAML value as Go's yaml.v2 reads a `time.Duration`: an integer of
/// nanoseconds or a string for `time.ParseDuration`, in signed nanoseconds.
fn go_duration(v: &serde_yaml_ng::Value) -> Result<i64, String> {
    match v {
        serde_yaml_ng::Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("{n} is not a whole number of nanoseconds")),
        serde_yaml_ng::Value::String(s) => parse_go_duration(s),
        other => Err(format!(
            "{other:?} is not a duration: write one as Go does, e.g. \"30s\" or \"1m30s\""
        )),
    }
}

/// Go's `time.ParseDuration`: an optional sign, then one or more decimal
/// numbers each with a unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`); a bare
/// `0` is zero.
fn parse_go_duration(text: &str) -> Result<i64, String> {
    let bad = || {
        format!(
            "{text:?} is not a Go duration: numbers with units ns, us, ms, s, m, h, e.g. \"30s\" or \"1m30s\""
        )
    };
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let number: f64 = match &rest[..digits] {
            "" | "." => return Err(bad()),
            n => n.parse().map_err(|_| bad())?,
        };
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += number * unit;
    }
    if total > i64::MAX as f64 {
        return Err(format!(
            "{text:?} is longer than Go's longest duration (about 292 years)"
        ));
    }
    Ok(if negative {
        -(total as i64)
    } else {
        total as i64
    })
}

impl Histogram {
    /// The bucket type (present and known once [`Config::validate`] passed).
    pub fn bucket_type(&self) -> Option<BucketType> {
        self.bucket_type.as_deref().and_then(BucketType::parse)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read ebpf_exporter config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ebpf_exporter config {config:?}: {field}: {problem}")]
    Parse {
        config: String,
        field: String,
        problem: String,
    },
    #[error("ebpf_exporter config {config:?}: {field}: {problem}")]
    Invalid {
        config: String,
        /// Where in the YAML, e.g. `metrics.counters[0].labels[1].decoders[0].name`.
        field: String,
        problem: String,
    },
}

impl ConfigError {
    /// The YAML path of the offending field (for parse and validation errors).
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Parse { field, .. } | Self::Invalid { field, .. } => Some(field),
            Self::Read { .. } => None,
        }
    }
}

/// Read `<dir>/<name>.yaml` for each name, as `ebpf_exporter
/// --config.dir=<dir> --config.names=<names>` does; each config's object is
/// `<dir>/<name>.bpf.o` ([`object_path`]).
pub fn read_configs(dir: &Path, names: &[String]) -> Result<Vec<Config>, ConfigError> {
    names
        .iter()
        .map(|name| {
            let path = dir.join(format!("{name}.yaml"));
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            Config::parse(name, &text)
        })
        .collect()
}

/// The BPF object of config `name` in `dir`.
pub fn object_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.bpf.o"))
}

impl Config {
    /// Parse and validate one config named `name`.
    pub fn parse(name: &str, yaml: &str) -> Result<Self, ConfigError> {
        let de = serde_yaml_ng::Deserializer::from_str(yaml);
        let mut config: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            ConfigError::Parse {
                config: name.to_owned(),
                field: if field == "." { "(top)".into() } else { field },
                problem: e.into_inner().to_string(),
            }
        })?;
        config.name = name.to_owned();
        config.validate()?;
        Ok(config)
    }

    /// Check what can be checked without the object: names, help, label
    /// layouts, decoders and buckets. Key sizes are checked against the
    /// maps when the object is loaded.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: String, problem: String| ConfigError::Invalid {
            config: self.name.clone(),
            field,
            problem,
        };
        if let Some(m) = &self.cgroup_id_map {
            check_cgroup_id_map(m).map_err(|(f, p)| bad(f, p))?;
        }
        if self.metrics.counters.is_empty() && self.metrics.histograms.is_empty() {
            return Err(bad(
                "metrics".into(),
                "neither metrics.counters nor metrics.histograms are defined".into(),
            ));
        }
        let mut seen = BTreeMap::new();
        for (i, c) in self.metrics.counters.iter().enumerate() {
            let at = format!("metrics.counters[{i}]");
            check_metric(&at, &c.name, &c.help, &mut seen).map_err(|(f, p)| bad(f, p))?;
            if let Some(v) = &c.flush_interval {
                go_duration(v).map_err(|p| bad(format!("{at}.flush_interval"), p))?;
            }
            check_labels(&at, &c.labels).map_err(|(f, p)| bad(f, p))?;
        }
        for (i, h) in self.metrics.histograms.iter().enumerate() {
            let at = format!("metrics.histograms[{i}]");
            check_metric(&at, &h.name, &h.help, &mut seen).map_err(|(f, p)| bad(f, p))?;
            check_labels(&at, &h.labels).map_err(|(f, p)| bad(f, p))?;
            if h.labels.is_empty() {
                return Err(bad(
                    format!("{at}.labels"),
                    "a histogram needs at least one label: the last one is the bucket".into(),
                ));
            }
            check_buckets(&at, h).map_err(|(f, p)| bad(f, p))?;
        }
        for (i, k) in self.kaddrs.iter().enumerate() {
            if k.is_empty() {
                return Err(bad(format!("kaddrs[{i}]"), "empty symbol name".into()));
            }
        }
        Ok(())
    }
}

type Problem = (String, String);

fn check_metric(
    at: &str,
    name: &str,
    help: &str,
    seen: &mut BTreeMap<String, String>,
) -> Result<(), Problem> {
    if name.is_empty() {
        return Err((
            format!("{at}.name"),
            "missing: the name of the map to read".into(),
        ));
    }
    if !is_metric_name(name) {
        return Err((
            format!("{at}.name"),
            format!("{name:?} is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)"),
        ));
    }
    if help.is_empty() {
        return Err((format!("{at}.help"), format!("metric {name:?} lacks help")));
    }
    if let Some(other) = seen.insert(name.to_owned(), at.to_owned()) {
        return Err((
            format!("{at}.name"),
            format!("{name:?} is already defined at {other}"),
        ));
    }
    Ok(())
}

fn check_labels(at: &str, labels: &[Label]) -> Result<(), Problem> {
    for (j, l) in labels.iter().enumerate() {
        let at = format!("{at}.labels[{j}]");
        if !is_label_name(&l.name) {
            return Err((
                format!("{at}.name"),
                format!(
                    "{:?} is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)",
                    l.name
                ),
            ));
        }
        if l.size == 0 {
            return Err((
                format!("{at}.size"),
                format!("label {:?}: size is zero or not set", l.name),
            ));
        }
        if l.decoders.is_empty() {
            return Err((
                format!("{at}.decoders"),
                format!("label {:?}: no decoders set", l.name),
            ));
        }
        for (k, d) in l.decoders.iter().enumerate() {
            let at = format!("{at}.decoders[{k}]");
            let Some(kind) = DecoderKind::parse(&d.name) else {
                return Err((
                    format!("{at}.name"),
                    format!(
                        "unknown decoder {:?}; known: {}",
                        d.name,
                        DecoderKind::NAMES.join(", ")
                    ),
                ));
            };
            if kind == DecoderKind::Regexp {
                let Some(exprs) = d.regexps.as_ref().filter(|r| !r.is_empty()) else {
                    return Err((
                        format!("{at}.regexps"),
                        "the regexp decoder needs regexps".into(),
                    ));
                };
                for (n, e) in exprs.iter().enumerate() {
                    if let Err(err) = regex::bytes::Regex::new(e) {
                        return Err((format!("{at}.regexps[{n}]"), err.to_string()));
                    }
                }
            }
        }
    }
    Ok(())
}

fn check_cgroup_id_map(m: &CgroupIdMap) -> Result<(), Problem> {
    if m.name.is_empty() {
        return Err((
            "cgroup_id_map.name".into(),
            "missing: the name of the object's map to fill with cgroup ids".into(),
        ));
    }
    if m.kind().is_none() {
        return Err((
            "cgroup_id_map.type".into(),
            format!(
                "unknown type {:?}: use hash or cgrp_storage",
                m.map_type.as_deref().unwrap_or_default()
            ),
        ));
    }
    if m.regexps.is_empty() {
        return Err((
            "cgroup_id_map.regexps".into(),
            "no regexps: no cgroup would ever be in the map".into(),
        ));
    }
    for (n, e) in m.regexps.iter().enumerate() {
        if let Err(err) = regex::Regex::new(e) {
            return Err((format!("cgroup_id_map.regexps[{n}]"), err.to_string()));
        }
    }
    Ok(())
}

fn check_buckets(at: &str, h: &Histogram) -> Result<(), Problem> {
    let Some(ty) = h.bucket_type.as_deref() else {
        return Err((
            format!("{at}.bucket_type"),
            "missing: one of exp2, exp2zero, linear, fixed".into(),
        ));
    };
    let Some(ty) = BucketType::parse(ty) else {
        return Err((
            format!("{at}.bucket_type"),
            format!("unknown bucket type {ty:?}: use exp2, exp2zero, linear or fixed"),
        ));
    };
    if !h.bucket_multiplier.is_finite() || h.bucket_multiplier < 0.0 {
        return Err((
            format!("{at}.bucket_multiplier"),
            format!("{} is not a non-negative number", h.bucket_multiplier),
        ));
    }
    if ty == BucketType::Fixed {
        if h.bucket_keys.is_empty() {
            return Err((
                format!("{at}.bucket_keys"),
                "a fixed histogram needs bucket_keys".into(),
            ));
        }
        if h.bucket_keys.windows(2).any(|w| w[0] >= w[1]) {
            return Err((
                format!("{at}.bucket_keys"),
                "bucket keys must be strictly increasing".into(),
            ));
        }
        if h.bucket_keys.iter().any(|k| *k < 0.0 || k.fract() != 0.0) {
            return Err((
                format!("{at}.bucket_keys"),
                "bucket keys are map keys: non-negative integers".into(),
            ));
        }
    } else {
        if h.bucket_min < 0 {
            return Err((
                format!("{at}.bucket_min"),
                format!("{} is negative: bucket keys are unsigned", h.bucket_min),
            ));
        }
        if h.bucket_max <= h.bucket_min {
            return Err((
                format!("{at}.bucket_max"),
                format!(
                    "histogram buckets have zero size: [bucket_min .. bucket_max] = [{} .. {}]",
                    h.bucket_min, h.bucket_max
                ),
            ));
        }
        // 2^1023 is the largest power of two an f64 holds.
        if matches!(ty, BucketType::Exp2 | BucketType::Exp2Zero) && h.bucket_max > 1023 {
            return Err((
                format!("{at}.bucket_max"),
                format!(
                    "{} is too large for exp2 buckets (at most 1023)",
                    h.bucket_max
                ),
            ));
        }
        if h.bucket_max - h.bucket_min > 100_000 {
            return Err((
                format!("{at}.bucket_max"),
                "more than 100000 buckets".into(),
            ));
        }
    }
    Ok(())
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A YAML mapping of scalars (strings, numbers, booleans) as text.
fn scalar_map<'de, D>(de: D) -> Result<Option<BTreeMap<String, String>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error;
    let Some(map) = Option::<serde_yaml_ng::Mapping>::deserialize(de)? else {
        return Ok(None);
    };
    map.into_iter()
        .map(|(k, v)| {
            Ok((
                scalar_text(&k).map_err(D::Error::custom)?,
                scalar_text(&v).map_err(D::Error::custom)?,
            ))
        })
        .collect::<Result<_, _>>()
        .map(Some)
}

fn scalar_text(v: &serde_yaml_ng::Value) -> Result<String, String> {
    use serde_yaml_ng::Value;
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Null => Ok(String::new()),
        other => Err(format!(
            "static_map keys and values must be scalars, not {other:?}"
        )),
    }
}

impl fmt::Display for BucketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Exp2 => "exp2",
            Self::Exp2Zero => "exp2zero",
            Self::Linear => "linear",
            Self::Fixed => "fixed",
        })
    }
}

/// The decoders this host knows (`decoders[].name`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecoderKind {
    Cgroup,
    Dname,
    Errno,
    Hex,
    Ifname,
    InetIp,
    Kstack,
    Ksym,
    Majorminor,
    Regexp,
    StaticMap,
    String,
    Syscall,
    Uint,
    K8sNamespace,
    K8sPod,
    K8sContainer,
    K8sWorkload,
    /// New: a pid (after `uint`) → the id of its cgroup (v2), for the
    /// `k8s_*` and `cgroup` decoders after it.
    PidCgroupId,
    /// Names from the PCI ID database (`pci.ids`), read when the config loads.
    PciVendor,
    PciDevice,
    PciClass,
    PciSubclass,
}

impl DecoderKind {
    /// Decoders that need the PCI ID database on the node.
    pub fn needs_pci_ids(self) -> bool {
        matches!(
            self,
            Self::PciVendor | Self::PciDevice | Self::PciClass | Self::PciSubclass
        )
    }

    pub const NAMES: &[&str] = &[
        "cgroup",
        "dname",
        "errno",
        "hex",
        "ifname",
        "inet_ip",
        "k8s_container",
        "k8s_namespace",
        "k8s_pod",
        "k8s_workload",
        "kstack",
        "ksym",
        "majorminor",
        "pci_class",
        "pci_device",
        "pci_subclass",
        "pci_vendor",
        "pid_cgroup_id",
        "regexp",
        "static_map",
        "string",
        "syscall",
        "uint",
    ];

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "cgroup" => Self::Cgroup,
            "dname" => Self::Dname,
            "errno" => Self::Errno,
            "hex" => Self::Hex,
            "ifname" => Self::Ifname,
            "inet_ip" => Self::InetIp,
            "kstack" => Self::Kstack,
            "ksym" => Self::Ksym,
            "majorminor" => Self::Majorminor,
            "regexp" => Self::Regexp,
            "static_map" => Self::StaticMap,
            "string" => Self::String,
            "syscall" => Self::Syscall,
            "uint" => Self::Uint,
            "k8s_namespace" => Self::K8sNamespace,
            "k8s_pod" => Self::K8sPod,
            "k8s_container" => Self::K8sContainer,
            "k8s_workload" => Self::K8sWorkload,
            "pid_cgroup_id" => Self::PidCgroupId,
            "pci_vendor" => Self::PciVendor,
            "pci_device" => Self::PciDevice,
            "pci_class" => Self::PciClass,
            "pci_subclass" => Self::PciSubclass,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSCALLS: &str = "
metrics:
  counters:
    - name: syscalls_total
      help: Total number of executed syscalls by name
      labels:
        - name: syscall
          size: 8
          decoders:
            - name: uint
            - name: syscall
";

    const BIOLATENCY: &str = "
metrics:
  histograms:
    - name: bio_latency_seconds
      help: Block IO latency histogram
      bucket_type: exp2
      bucket_min: 0
      bucket_max: 27
      bucket_multiplier: 0.000001 # microseconds to seconds
      labels:
        - name: device
          size: 4
          decoders:
            - name: majorminor
        - name: operation
          size: 4
          decoders:
            - name: uint
            - name: static_map
              static_map:
                0: read
                1: write
        - name: bucket
          size: 8
          decoders:
            - name: uint
";

    fn field_of(yaml: &str) -> String {
        Config::parse("t", yaml)
            .expect_err("the config should be refused")
            .field()
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn ebpf_exporter_configs_parse_unchanged() {
        let c = Config::parse("syscalls", SYSCALLS).unwrap();
        assert_eq!(c.name, "syscalls");
        assert_eq!(c.metrics.counters[0].labels[0].size, 8);
        let h = Config::parse("biolatency", BIOLATENCY).unwrap();
        let h = &h.metrics.histograms[0];
        assert_eq!(h.bucket_type(), Some(BucketType::Exp2));
        assert_eq!((h.bucket_min, h.bucket_max), (0, 27));
        assert_eq!(h.bucket_multiplier, 0.000001);
        let map = h.labels[1].decoders[1].static_map.as_ref().unwrap();
        assert_eq!(map.get("0").map(String::as_str), Some("read"));
        assert_eq!(map.get("1").map(String::as_str), Some("write"));
    }

    #[test]
    fn unknown_fields_are_ignored_like_ebpf_exporter() {
        let yaml = format!("{SYSCALLS}\nsomething_new: 1\n");
        assert!(Config::parse("t", &yaml).is_ok());
    }

    #[test]
    fn an_unknown_decoder_is_named_with_its_field() {
        let yaml = SYSCALLS.replace("name: syscall\n", "name: sycsall\n");
        assert_eq!(
            field_of(&yaml),
            "metrics.counters[0].labels[0].decoders[1].name"
        );
        let err = Config::parse("t", &yaml).unwrap_err().to_string();
        assert!(err.contains("unknown decoder \"sycsall\""), "{err}");
    }

    #[test]
    fn bad_buckets_are_named() {
        let yaml = BIOLATENCY.replace("bucket_max: 27", "bucket_max: 0");
        assert_eq!(field_of(&yaml), "metrics.histograms[0].bucket_max");
        let yaml = BIOLATENCY.replace("bucket_type: exp2", "bucket_type: exp3");
        assert_eq!(field_of(&yaml), "metrics.histograms[0].bucket_type");
        let yaml = BIOLATENCY.replace("bucket_type: exp2", "bucket_type: fixed");
        assert_eq!(field_of(&yaml), "metrics.histograms[0].bucket_keys");
        let yaml = BIOLATENCY.replace(
            "bucket_type: exp2",
            "bucket_type: fixed\n      bucket_keys: [4, 2]",
        );
        assert_eq!(field_of(&yaml), "metrics.histograms[0].bucket_keys");
        let yaml = BIOLATENCY.replace("bucket_min: 0", "bucket_min: -1");
        assert_eq!(field_of(&yaml), "metrics.histograms[0].bucket_min");
    }

    #[test]
    fn label_problems_are_named() {
        assert_eq!(
            field_of(&SYSCALLS.replace("size: 8", "size: 0")),
            "metrics.counters[0].labels[0].size"
        );
        assert_eq!(
            field_of(&SYSCALLS.replace("size: 8", "size: eight")),
            "metrics.counters[0].labels[0].size"
        );
        assert_eq!(
            field_of(&SYSCALLS.replace(
                "- name: syscall\n          size",
                "- name: sys-call\n          size"
            )),
            "metrics.counters[0].labels[0].name"
        );
        let regexp = SYSCALLS.replace(
            "            - name: syscall\n",
            "            - name: regexp\n              regexps: ['(']\n",
        );
        assert_eq!(
            field_of(&regexp),
            "metrics.counters[0].labels[0].decoders[1].regexps[0]"
        );
    }

    #[test]
    fn metric_problems_are_named() {
        assert_eq!(
            field_of(&SYSCALLS.replace(
                "      help: Total number of executed syscalls by name\n",
                ""
            )),
            "metrics.counters[0].help"
        );
        assert_eq!(field_of("metrics: {}\n"), "metrics");
        let perf = SYSCALLS.replace(
            "      labels:",
            "      perf_event_array: true\n      flush_interval: 5 minutes\n      labels:",
        );
        assert_eq!(field_of(&perf), "metrics.counters[0].flush_interval");
        let twice =
            format!("{SYSCALLS}    - name: syscalls_total\n      help: again\n      labels: []\n");
        assert_eq!(field_of(&twice), "metrics.counters[1].name");
    }

    #[test]
    fn cgroup_id_map_is_read_and_its_problems_are_named() {
        let with = |m: &str| format!("{SYSCALLS}cgroup_id_map:\n{m}");
        let ok = Config::parse(
            "x",
            &with("  name: ids\n  type: hash\n  regexps: ['^.*(system.slice/.*)$']\n"),
        )
        .unwrap();
        let m = ok.cgroup_id_map.unwrap();
        assert_eq!((m.name.as_str(), m.regexps.len()), ("ids", 1));
        // The type defaults to hash, as in ebpf_exporter.
        assert!(Config::parse("x", &with("  name: ids\n  regexps: [a]\n")).is_ok());
        assert_eq!(field_of(&with("  regexps: [a]\n")), "cgroup_id_map.name");
        let storage = Config::parse(
            "x",
            &with("  name: ids\n  type: cgrp_storage\n  regexps: [a]\n"),
        )
        .unwrap();
        assert_eq!(
            storage.cgroup_id_map.and_then(|m| m.kind()),
            Some(CgroupIdMapType::CgrpStorage)
        );
        assert_eq!(
            field_of(&with("  name: ids\n  type: btree\n  regexps: [a]\n")),
            "cgroup_id_map.type"
        );
        assert_eq!(
            field_of(&with("  name: ids\n  regexps: []\n")),
            "cgroup_id_map.regexps"
        );
        assert_eq!(
            field_of(&with("  name: ids\n  regexps: [a, '(']\n")),
            "cgroup_id_map.regexps[1]"
        );
    }

    #[test]
    fn flush_intervals_read_as_go_durations() {
        let flush = |v: &str| {
            let yaml = SYSCALLS.replace(
                "      labels:",
                &format!("      perf_event_array: true\n      flush_interval: {v}\n      labels:"),
            );
            Config::parse("t", &yaml).unwrap().metrics.counters[0].flush_every()
        };
        assert_eq!(flush("30s"), Duration::from_secs(30));
        assert_eq!(flush("1m30s"), Duration::from_secs(90));
        assert_eq!(flush("1.5h"), Duration::from_secs(5400));
        assert_eq!(flush("250ms"), Duration::from_millis(250));
        assert_eq!(flush("2us"), Duration::from_micros(2));
        // yaml.v2 reads an integer as nanoseconds.
        assert_eq!(flush("1000000000"), Duration::from_secs(1));
        // Zero, negative or unset: ebpf_exporter's hour.
        assert_eq!(flush("0"), DEFAULT_FLUSH);
        assert_eq!(flush("-5s"), DEFAULT_FLUSH);
        assert_eq!(
            Config::parse("t", SYSCALLS).unwrap().metrics.counters[0].flush_every(),
            DEFAULT_FLUSH
        );
        for bad in ["5x", "s", "1d", "1.2.3s", "\"\""] {
            let yaml = SYSCALLS.replace(
                "      labels:",
                &format!("      flush_interval: {bad}\n      labels:"),
            );
            assert_eq!(
                field_of(&yaml),
                "metrics.counters[0].flush_interval",
                "{bad}"
            );
        }
    }
}
