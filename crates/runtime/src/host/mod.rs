//! The host side of the WIT interfaces, one module each: [`log`],
//! [`config`], [`maps`], [`events`], [`metrics`], [`k8s`].
//!
//! Everything a plugin may touch hangs off its [`PluginHost`], built from
//! its spec: only granted maps are reachable, writes need a read-write
//! grant, and every refusal is a typed WIT error, never a trap. Each
//! interface reaches the node through a small backend trait (a kernel map,
//! the metrics registry, the workload cache, the log), so each module is
//! tested here with fake backends and no kernel.

pub mod config;
pub mod events;
pub(crate) mod http;
pub mod k8s;
pub mod log;
pub mod maps;
pub mod metrics;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

pub use maps::GrantedMap;

/// What one plugin is granted, and the backends its imports reach.
pub struct PluginHost {
    name: String,
    config: BTreeMap<String, String>,
    maps: HashMap<String, GrantedMap>,
    metrics: Arc<dyn metrics::MetricsBackend>,
    workloads: Arc<dyn k8s::WorkloadsBackend>,
    log: Arc<dyn log::LogBackend>,
    log_budget: Arc<log::LogBudget>,
    read_only_dirs: Vec<ReadOnlyDir>,
}

/// A node directory the plugin may read, preopened in its WASI context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOnlyDir {
    /// The directory on the node.
    pub host: std::path::PathBuf,
    /// Where the plugin sees it.
    pub guest: String,
}

impl PluginHost {
    /// A plugin named `name` with its `config`, granted `maps`, recording
    /// into `metrics`. Its `k8s` lookups answer `unknown` and its log goes
    /// to `tracing` unless set with [`Self::with_workloads`] and
    /// [`Self::with_log`].
    pub fn new(
        name: &str,
        config: BTreeMap<String, String>,
        maps: HashMap<String, GrantedMap>,
        metrics: Arc<dyn metrics::MetricsBackend>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            config,
            maps,
            metrics,
            workloads: Arc::new(k8s::NoWorkloads),
            log: Arc::new(log::TracingLog),
            log_budget: Arc::default(),
            read_only_dirs: Vec::new(),
        }
    }

    /// Let the plugin read `dirs` (and nothing else of the filesystem).
    pub fn with_read_only_dirs(mut self, dirs: Vec<ReadOnlyDir>) -> Self {
        self.read_only_dirs = dirs;
        self
    }

    /// The directories the plugin may read.
    pub fn read_only_dirs(&self) -> &[ReadOnlyDir] {
        &self.read_only_dirs
    }

    /// Answer the plugin's `k8s` lookups from `workloads`.
    pub fn with_workloads(mut self, workloads: Arc<dyn k8s::WorkloadsBackend>) -> Self {
        self.workloads = workloads;
        self
    }

    /// Send the plugin's log records to `log`.
    pub fn with_log(mut self, log: Arc<dyn log::LogBackend>) -> Self {
        self.log = log;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's log budget (its log interface and stdio share it).
    pub fn log_budget(&self) -> &Arc<log::LogBudget> {
        &self.log_budget
    }

    /// The same grants and backends with another `config`: what a new
    /// version of the plugin runs with when only its component or config
    /// changed.
    pub fn with_config(&self, config: BTreeMap<String, String>) -> Self {
        Self {
            name: self.name.clone(),
            config,
            maps: self.maps.clone(),
            metrics: self.metrics.clone(),
            workloads: self.workloads.clone(),
            log: self.log.clone(),
            log_budget: self.log_budget.clone(),
            read_only_dirs: self.read_only_dirs.clone(),
        }
    }
}

type WResult<T> = wasmtime::Result<T>;

/// A [`StoreData`](crate::StoreData) for the host modules' unit tests:
/// the WIT host traits are implemented on it, so the tests call them as a
/// plugin would, without an engine.
#[cfg(test)]
pub(crate) fn test_store(host: PluginHost) -> crate::StoreData {
    crate::StoreData {
        wasi: wasmtime_wasi::WasiCtx::builder().build(),
        table: wasmtime::component::ResourceTable::new(),
        http: wasmtime_wasi_http::WasiHttpCtx::new(),
        http_hooks: http::DenyOutgoing,
        limiter: crate::instance::MemoryLimiter::new(1 << 20),
        host: Arc::new(host),
    }
}

/// A [`PluginHost`] with no grants and fake backends, for unit tests.
#[cfg(test)]
pub(crate) fn test_host(name: &str) -> PluginHost {
    PluginHost::new(
        name,
        BTreeMap::new(),
        HashMap::new(),
        Arc::new(metrics::fake::FakeMetrics::default()),
    )
}
