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
use crate::k8s::Workloads;
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
    workloads: Arc<Workloads>,
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
            workloads: Workloads::disabled(),
        }
    }

    /// Answer the plugin's `k8s` lookups from `workloads`.
    pub fn with_workloads(mut self, workloads: Arc<Workloads>) -> Self {
        self.workloads = workloads;
        self
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
            workloads: self.workloads.clone(),
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

fn wit_pod(p: &crate::k8s::PodInfo) -> k8s::Pod {
    k8s::Pod {
        namespace: p.namespace.clone(),
        name: p.name.clone(),
        uid: p.uid.clone(),
        node: p.node.clone(),
        owner: p.owner.clone(),
    }
}

fn wit_identity(id: crate::k8s::Identity) -> k8s::Identity {
    use crate::k8s::Identity;
    match id {
        Identity::Host => k8s::Identity::Host,
        Identity::Unknown => k8s::Identity::Unknown,
        Identity::Workload { ref pod, .. } => k8s::Identity::Workload(k8s::Workload {
            pod: wit_pod(pod),
            container: id.container().map(|c| k8s::Container {
                name: c.name.clone(),
                id: c.id.clone(),
                image: c.image.clone(),
            }),
        }),
    }
}

fn wit_ip(ip: std::net::IpAddr) -> k8s::IpAddress {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            k8s::IpAddress::Ipv4((a, b, c, d))
        }
        std::net::IpAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.segments();
            k8s::IpAddress::Ipv6((a, b, c, d, e, f, g, h))
        }
    }
}

/// Answers from the node's workload cache ([`crate::k8s`]): a read lock and
/// a hash lookup per call; label sets are copied only when asked for.
impl k8s::Host for StoreData {
    fn by_cgroup_id(&mut self, id: u64) -> WResult<k8s::Identity> {
        Ok(wit_identity(self.host.workloads.by_cgroup_id(id)))
    }
    fn by_pid(&mut self, pid: u32) -> WResult<k8s::Identity> {
        Ok(wit_identity(self.host.workloads.by_pid(pid)))
    }
    fn by_container_id(&mut self, id: String) -> WResult<k8s::Identity> {
        Ok(wit_identity(self.host.workloads.by_container_id(&id)))
    }
    fn by_ip(&mut self, ip: k8s::IpAddress) -> WResult<k8s::Identity> {
        let ip = match ip {
            k8s::IpAddress::Ipv4((a, b, c, d)) => std::net::Ipv4Addr::new(a, b, c, d).into(),
            k8s::IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
                std::net::Ipv6Addr::new(a, b, c, d, e, f, g, h).into()
            }
        };
        Ok(wit_identity(self.host.workloads.by_ip(ip)))
    }
    fn pod_labels(&mut self, uid: String) -> WResult<Vec<(String, String)>> {
        Ok(self
            .host
            .workloads
            .pods()
            .by_uid(&uid)
            .map(|p| p.labels.clone())
            .unwrap_or_default())
    }
    fn pod_label(&mut self, uid: String, key: String) -> WResult<Option<String>> {
        Ok(self
            .host
            .workloads
            .pods()
            .by_uid(&uid)
            .and_then(|p| p.label(&key).map(str::to_owned)))
    }
    fn pod_annotations(&mut self, uid: String) -> WResult<Vec<(String, String)>> {
        Ok(self
            .host
            .workloads
            .pods()
            .by_uid(&uid)
            .map(|p| p.annotations.clone())
            .unwrap_or_default())
    }
    fn pod_network(&mut self, uid: String) -> WResult<Option<k8s::Network>> {
        Ok(self
            .host
            .workloads
            .pods()
            .by_uid(&uid)
            .map(|p| k8s::Network {
                ips: p.ips.iter().copied().map(wit_ip).collect(),
                host_network: p.host_network,
            }))
    }
    fn cgroup_container_id(&mut self, id: u64) -> WResult<Option<String>> {
        Ok(self
            .host
            .workloads
            .container_id_of_cgroup(id)
            .map(|s| s.to_string()))
    }
}
