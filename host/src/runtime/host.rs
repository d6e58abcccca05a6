//! Host implementations of the WIT imports: log, config, maps, metrics, k8s.
//!
//! Everything a plugin may touch hangs off its [`PluginHost`], built from
//! its spec: only granted maps are reachable, writes need a read-write
//! grant, and every refusal is a typed WIT error, never a trap.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use conductor_api::Access;
use wasmtime::component::Resource;

use super::StoreData;
use super::bindings::conductor::plugin::{config, events, k8s, log, maps, metrics};
use crate::maps::{KernelMap, MapKind, MapOpError};
use crate::metrics::{CounterFamily, GaugeFamily, HistogramFamily, MetricError, PluginMetrics};

/// Keys or entries returned by one `keys`/`entries` call at most; bounds the
/// host work and guest memory of a single call.
const MAX_PAGE: u32 = 4096;

/// What one plugin is granted.
pub struct PluginHost {
    name: String,
    config: BTreeMap<String, String>,
    maps: HashMap<String, GrantedMap>,
    metrics: Arc<PluginMetrics>,
}

#[derive(Clone)]
pub struct GrantedMap {
    pub map: Arc<KernelMap>,
    pub access: Access,
}

impl PluginHost {
    pub fn new(
        name: &str,
        config: BTreeMap<String, String>,
        maps: HashMap<String, GrantedMap>,
        metrics: Arc<PluginMetrics>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            config,
            maps,
            metrics,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn metrics(&self) -> &Arc<PluginMetrics> {
        &self.metrics
    }

    /// The same grants and metrics with another `config`: what a new version
    /// of the plugin runs with when only its component or config changed.
    pub fn with_config(&self, config: BTreeMap<String, String>) -> Self {
        Self {
            name: self.name.clone(),
            config,
            maps: self.maps.clone(),
            metrics: self.metrics.clone(),
        }
    }
}

/// The host side of a `map` resource.
pub struct MapResource {
    map: Arc<KernelMap>,
    access: Access,
}

pub type CounterResource = Arc<CounterFamily>;
pub type GaugeResource = Arc<GaugeFamily>;
pub type HistogramResource = Arc<HistogramFamily>;

type WResult<T> = wasmtime::Result<T>;

impl log::Host for StoreData {
    fn log(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> WResult<()> {
        let plugin = self.host.name.as_str();
        let fields = if fields.is_empty() {
            String::new()
        } else {
            fields
                .iter()
                .map(|(k, v)| format!(" {k}={v:?}"))
                .collect::<String>()
        };
        match level {
            log::Level::Trace => tracing::trace!(target: "plugin", plugin, "{message}{fields}"),
            log::Level::Debug => tracing::debug!(target: "plugin", plugin, "{message}{fields}"),
            log::Level::Info => tracing::info!(target: "plugin", plugin, "{message}{fields}"),
            log::Level::Warn => tracing::warn!(target: "plugin", plugin, "{message}{fields}"),
            log::Level::Error => tracing::error!(target: "plugin", plugin, "{message}{fields}"),
        }
        Ok(())
    }
}

impl config::Host for StoreData {
    fn get(&mut self, key: String) -> WResult<Option<String>> {
        Ok(self.host.config.get(&key).cloned())
    }

    fn entries(&mut self) -> WResult<Vec<(String, String)>> {
        Ok(self
            .host
            .config
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

impl events::Host for StoreData {}

fn map_error(e: MapOpError) -> maps::MapError {
    match e {
        MapOpError::WrongSize {
            what,
            expected,
            actual,
        } => maps::MapError::WrongSize(maps::WrongSize {
            what: what.to_owned(),
            expected,
            actual,
        }),
        MapOpError::Unsupported(m) => maps::MapError::Unsupported(m),
        MapOpError::Kernel(e) => maps::MapError::Kernel(maps::KernelError {
            errno: e.raw_os_error().unwrap_or(0),
            message: e.to_string(),
        }),
    }
}

fn wit_kind(k: MapKind) -> maps::MapKind {
    match k {
        MapKind::Hash => maps::MapKind::Hash,
        MapKind::Array => maps::MapKind::Array,
        MapKind::PercpuHash => maps::MapKind::PercpuHash,
        MapKind::PercpuArray => maps::MapKind::PercpuArray,
        MapKind::LruHash => maps::MapKind::LruHash,
        MapKind::LruPercpuHash => maps::MapKind::LruPercpuHash,
        MapKind::LpmTrie => maps::MapKind::LpmTrie,
        MapKind::Ringbuf => maps::MapKind::Ringbuf,
        MapKind::PerfEventArray => maps::MapKind::PerfEventArray,
        MapKind::StackTrace => maps::MapKind::StackTrace,
        MapKind::Other(n) => maps::MapKind::Other(n),
    }
}

impl maps::Host for StoreData {}

impl StoreData {
    fn map(&self, r: &Resource<MapResource>) -> WResult<&MapResource> {
        Ok(self.table.get(r)?)
    }

    fn writable(&self, r: &Resource<MapResource>) -> WResult<Result<&KernelMap, maps::MapError>> {
        let m = self.map(r)?;
        Ok(match m.access {
            Access::ReadWrite => Ok(&m.map),
            Access::Read => Err(maps::MapError::ReadOnly),
        })
    }
}

impl maps::HostBpfMap for StoreData {
    fn open(&mut self, name: String) -> WResult<Result<Resource<MapResource>, maps::MapError>> {
        let Some(granted) = self.host.maps.get(&name) else {
            tracing::debug!(target: "plugin", plugin = %self.host.name, map = %name, "map not granted");
            return Ok(Err(maps::MapError::NotGranted(format!(
                "plugin {:?} is not granted map {name:?}; grant it under `maps` in the plugin's spec",
                self.host.name
            ))));
        };
        let r = MapResource {
            map: granted.map.clone(),
            access: granted.access,
        };
        Ok(Ok(self.table.push(r)?))
    }

    fn info(&mut self, r: Resource<MapResource>) -> WResult<maps::MapInfo> {
        let m = self.map(&r)?;
        let meta = m.map.meta();
        Ok(maps::MapInfo {
            name: m.map.name().to_owned(),
            kind: wit_kind(meta.kind),
            key_size: meta.key_size,
            value_size: meta.value_size,
            value_stride: meta.value_stride,
            max_entries: meta.max_entries,
            values_per_key: meta.values_per_key,
            access: match m.access {
                Access::Read => maps::Access::Read,
                Access::ReadWrite => maps::Access::ReadWrite,
            },
        })
    }

    fn lookup(
        &mut self,
        r: Resource<MapResource>,
        key: Vec<u8>,
    ) -> WResult<Result<Option<Vec<u8>>, maps::MapError>> {
        Ok(self.map(&r)?.map.lookup(&key).map_err(map_error))
    }

    fn update(
        &mut self,
        r: Resource<MapResource>,
        key: Vec<u8>,
        value: Vec<u8>,
        mode: maps::UpdateMode,
    ) -> WResult<Result<(), maps::MapError>> {
        let flags = match mode {
            maps::UpdateMode::Upsert => 0,  // BPF_ANY
            maps::UpdateMode::Create => 1,  // BPF_NOEXIST
            maps::UpdateMode::Replace => 2, // BPF_EXIST
        };
        Ok(self
            .writable(&r)?
            .and_then(|m| m.update(&key, &value, flags).map_err(map_error)))
    }

    fn delete(
        &mut self,
        r: Resource<MapResource>,
        key: Vec<u8>,
    ) -> WResult<Result<bool, maps::MapError>> {
        Ok(self
            .writable(&r)?
            .and_then(|m| m.delete(&key).map_err(map_error)))
    }

    fn keys(
        &mut self,
        r: Resource<MapResource>,
        after: Option<Vec<u8>>,
        max: u32,
    ) -> WResult<Result<Vec<Vec<u8>>, maps::MapError>> {
        let m = self.map(&r)?;
        Ok(m.map
            .keys(after.as_deref(), max.min(MAX_PAGE) as usize)
            .map_err(map_error))
    }

    fn entries(
        &mut self,
        r: Resource<MapResource>,
        after: Option<Vec<u8>>,
        max: u32,
    ) -> WResult<Result<Vec<maps::Entry>, maps::MapError>> {
        let m = &self.map(&r)?.map;
        let page = || -> Result<Vec<maps::Entry>, MapOpError> {
            let keys = m.keys(after.as_deref(), max.min(MAX_PAGE) as usize)?;
            let mut entries = Vec::with_capacity(keys.len());
            for key in keys {
                // A key deleted between listing and lookup is simply skipped.
                if let Some(value) = m.lookup(&key)? {
                    entries.push(maps::Entry { key, value });
                }
            }
            Ok(entries)
        };
        Ok(page().map_err(map_error))
    }

    fn drop(&mut self, r: Resource<MapResource>) -> WResult<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

fn metric_error(e: MetricError) -> metrics::MetricError {
    match e {
        MetricError::InvalidName(m) => metrics::MetricError::InvalidName(m),
        MetricError::Conflict(m) => metrics::MetricError::Conflict(m),
        MetricError::WrongLabelCount { expected, actual } => {
            metrics::MetricError::WrongLabelCount(metrics::WrongLabelCount { expected, actual })
        }
        MetricError::InvalidBuckets(m) => metrics::MetricError::InvalidBuckets(m),
        MetricError::CardinalityLimit(n) => metrics::MetricError::CardinalityLimit(n),
    }
}

impl metrics::Host for StoreData {}

impl metrics::HostCounter for StoreData {
    fn declare(
        &mut self,
        d: metrics::MetricDesc,
    ) -> WResult<Result<Resource<CounterResource>, metrics::MetricError>> {
        match self.host.metrics.counter(&d.name, &d.help, d.labels) {
            Ok(f) => Ok(Ok(self.table.push(f)?)),
            Err(e) => Ok(Err(metric_error(e))),
        }
    }

    fn add(
        &mut self,
        r: Resource<CounterResource>,
        values: Vec<String>,
        delta: u64,
    ) -> WResult<Result<(), metrics::MetricError>> {
        Ok(self.table.get(&r)?.add(values, delta).map_err(metric_error))
    }

    fn drop(&mut self, r: Resource<CounterResource>) -> WResult<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl metrics::HostGauge for StoreData {
    fn declare(
        &mut self,
        d: metrics::MetricDesc,
    ) -> WResult<Result<Resource<GaugeResource>, metrics::MetricError>> {
        match self.host.metrics.gauge(&d.name, &d.help, d.labels) {
            Ok(f) => Ok(Ok(self.table.push(f)?)),
            Err(e) => Ok(Err(metric_error(e))),
        }
    }

    fn set(
        &mut self,
        r: Resource<GaugeResource>,
        values: Vec<String>,
        value: f64,
    ) -> WResult<Result<(), metrics::MetricError>> {
        Ok(self.table.get(&r)?.set(values, value).map_err(metric_error))
    }

    fn add(
        &mut self,
        r: Resource<GaugeResource>,
        values: Vec<String>,
        delta: f64,
    ) -> WResult<Result<(), metrics::MetricError>> {
        Ok(self.table.get(&r)?.add(values, delta).map_err(metric_error))
    }

    fn drop(&mut self, r: Resource<GaugeResource>) -> WResult<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

impl metrics::HostHistogram for StoreData {
    fn declare(
        &mut self,
        d: metrics::MetricDesc,
        buckets: Vec<f64>,
    ) -> WResult<Result<Resource<HistogramResource>, metrics::MetricError>> {
        match self
            .host
            .metrics
            .histogram(&d.name, &d.help, d.labels, buckets)
        {
            Ok(f) => Ok(Ok(self.table.push(f)?)),
            Err(e) => Ok(Err(metric_error(e))),
        }
    }

    fn observe(
        &mut self,
        r: Resource<HistogramResource>,
        values: Vec<String>,
        value: f64,
    ) -> WResult<Result<(), metrics::MetricError>> {
        Ok(self
            .table
            .get(&r)?
            .observe(values, value)
            .map_err(metric_error))
    }

    fn drop(&mut self, r: Resource<HistogramResource>) -> WResult<()> {
        self.table.delete(r)?;
        Ok(())
    }
}

/// No workload cache yet: every lookup answers `unknown`, which the WIT
/// defines as "the host does not know", rather than guessing.
impl k8s::Host for StoreData {
    fn by_cgroup_id(&mut self, _id: u64) -> WResult<k8s::Identity> {
        Ok(k8s::Identity::Unknown)
    }
    fn by_pid(&mut self, _pid: u32) -> WResult<k8s::Identity> {
        Ok(k8s::Identity::Unknown)
    }
    fn by_container_id(&mut self, _id: String) -> WResult<k8s::Identity> {
        Ok(k8s::Identity::Unknown)
    }
    fn by_ip(&mut self, _ip: k8s::IpAddress) -> WResult<k8s::Identity> {
        Ok(k8s::Identity::Unknown)
    }
    fn pod_labels(&mut self, _uid: String) -> WResult<Vec<(String, String)>> {
        Ok(Vec::new())
    }
}
