//! The set of plugins on this host and the lifecycle of each.
//!
//! A plugin enters the set when a load is accepted ([`Manager::reserve`],
//! phase `Pending`), goes through `Pulling` and `Loading` (the caller
//! reports those), and is `Running` once its first instance initialised;
//! faults make it `Restarting` (with a backoff) until a new instance runs.
//! A plugin that could not be (re)loaded stays as `Failed` with the reason
//! when it came from the persisted desired state; a rejected `Load` leaves
//! nothing behind. Every change is broadcast to [`Manager::subscribe`]rs.
//!
//! Slow work (pulls, compiles, verifying, attaching, stopping) never holds
//! the set's lock, so listing and loading other plugins is never blocked by
//! one plugin's load.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use conductor_api::PluginSpec;
use conductor_api::files::{self, FileCaps};
use tokio::sync::{broadcast, watch};

use crate::launch::{Launcher, PluginLauncher, RunningPlugin};
use crate::metrics::Metrics;
use crate::plugin::{LoadError, StartOptions, Status};
use conductor_runtime::Runtime;

use crate::k8s::Workloads;

/// How many changes a slow watcher may fall behind before it is told to resync.
const CHANGE_BACKLOG: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(
        "a plugin named {0:?} is already loaded; unload it first, update it, or choose another name"
    )]
    Duplicate(String),
    #[error("no plugin named {0:?} is loaded")]
    NotFound(String),
    #[error("plugin {0:?} is busy with another load, update or unload; retry when it is done")]
    Busy(String),
    #[error("plugin {0:?} was unloaded before its load finished")]
    Cancelled(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("update of plugin {name:?} failed, the running version stays: {cause}")]
    UpdateRefused { name: String, cause: String },
    #[error(
        "update of plugin {name:?} failed: {cause}; the previous version was loaded again \
         (events between its stop and its restart were not observed)"
    )]
    UpdateRolledBack { name: String, cause: String },
    #[error(
        "update of plugin {name:?} failed: {cause}; restoring the previous version failed too: \
         {restore}; the plugin is now Failed (update it again or unload it)"
    )]
    UpdateLost {
        name: String,
        cause: String,
        restore: String,
    },
}

pub use conductor_api::Phase;

/// A plugin's status as the API reports it.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub name: String,
    pub phase: Phase,
    pub phase_since: SystemTime,
    /// When this generation started running.
    pub loaded_at: Option<SystemTime>,
    pub restarts: u64,
    pub last_error: Option<String>,
    /// While `Restarting` or `CrashLoopBackOff`: when the next instance starts.
    pub next_retry: Option<SystemTime>,
    /// `sha256:<hex>` of the running component; empty before it runs.
    pub digest: String,
    /// The spec as given (OCI references unresolved).
    pub spec: PluginSpec,
    pub generation: u64,
    pub annotations: BTreeMap<String, String>,
}

/// A change of the set, as watchers see it.
#[derive(Debug, Clone)]
pub enum Change {
    Changed(PluginInfo),
    Removed(PluginInfo),
}

/// What an update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    /// The kernel side stayed; the new component took over between batches.
    Swapped,
    /// The kernel side changed: the plugin was stopped and started again.
    Replaced,
    /// Only map pins changed (a `clusterBpfApplication`'s program was
    /// reloaded by bpfman): the maps and event sources were re-opened at
    /// the new pins under the running instance.
    Repointed,
}

/// The desired state of one plugin: what is persisted.
#[derive(Debug, Clone)]
pub struct Desired {
    pub spec: PluginSpec,
    pub annotations: BTreeMap<String, String>,
    pub generation: u64,
}

/// The claim of one load on a plugin name (see [`Manager::reserve`]): a
/// later plugin of the same name is another claim, and an unload before the
/// load reaches `Loading` cancels it.
#[derive(Clone)]
pub struct Ticket {
    pub name: String,
    id: u64,
    cancelled: watch::Receiver<bool>,
}

impl Ticket {
    pub fn is_cancelled(&self) -> bool {
        *self.cancelled.borrow()
    }

    /// Resolves when the plugin is unloaded (or otherwise forgotten).
    pub async fn cancelled(&mut self) {
        let _ = self.cancelled.wait_for(|c| *c).await;
    }
}

struct Entry<P> {
    /// Which load created the entry.
    id: u64,
    /// Tells that load it was unloaded.
    cancel: watch::Sender<bool>,
    /// The spec as given.
    spec: PluginSpec,
    /// The spec the running plugin was loaded from (OCI references resolved).
    resolved: Option<PluginSpec>,
    /// sha256 of the bytecode file the running plugin was loaded from.
    bytecode_digest: Option<String>,
    annotations: BTreeMap<String, String>,
    generation: u64,
    loaded_at: Option<SystemTime>,
    /// The phase while there is no running plugin.
    phase: Phase,
    since: SystemTime,
    last_error: Option<String>,
    plugin: Option<Arc<P>>,
    /// A load, update or unload is under way.
    busy: bool,
    /// Part of the desired state (loaded once, or restored from it).
    desired: bool,
}

impl<P: RunningPlugin> Entry<P> {
    fn info(&self) -> PluginInfo {
        let mut info = PluginInfo {
            name: self.spec.name.clone(),
            phase: self.phase,
            phase_since: self.since,
            loaded_at: self.loaded_at,
            restarts: 0,
            last_error: self.last_error.clone(),
            next_retry: None,
            digest: String::new(),
            spec: self.spec.clone(),
            generation: self.generation,
            annotations: self.annotations.clone(),
        };
        if let Some(p) = &self.plugin
            && self.phase == Phase::Running
        {
            let Status {
                phase,
                since,
                restarts,
                last_error,
                digest,
                next_retry,
            } = p.status();
            info.next_retry = next_retry;
            info.phase = phase;
            info.phase_since = since;
            info.restarts = restarts;
            info.last_error = last_error.or(info.last_error);
            info.digest = digest;
        }
        info
    }
}

struct Shared<P> {
    plugins: Mutex<BTreeMap<String, Entry<P>>>,
    changes: broadcast::Sender<Change>,
}

impl<P: RunningPlugin> Shared<P> {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Entry<P>>> {
        self.plugins.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tell watchers about `name`'s current state (called with the lock held,
    /// so a subscriber's snapshot and its stream of changes agree).
    fn announce(&self, plugins: &BTreeMap<String, Entry<P>>, name: &str) {
        if let Some(e) = plugins.get(name) {
            let _ = self.changes.send(Change::Changed(e.info()));
        }
    }
}

/// The plugins of this host. `L` starts them: [`PluginLauncher`] loads
/// their kernel side and instantiates their components; the manager's
/// unit tests use a fake.
pub struct Manager<L: Launcher = PluginLauncher> {
    launcher: L,
    metrics: Arc<Metrics>,
    shared: Arc<Shared<L::Plugin>>,
    next_id: AtomicU64,
}

impl Manager<PluginLauncher> {
    pub fn new(runtime: Arc<Runtime>, metrics: Arc<Metrics>) -> Self {
        Self::with_launcher(PluginLauncher::new(runtime, metrics.clone()), metrics)
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        self.launcher.runtime()
    }

    /// The workload cache plugins started from now on look up.
    pub fn set_workloads(&self, workloads: Arc<Workloads>) {
        self.launcher.set_workloads(workloads);
    }

    /// The node's workload cache (set by [`crate::Node::run`] before any
    /// spec loads), for the host's built-ins such as the ebpf_exporter.
    pub fn workloads(&self) -> Arc<Workloads> {
        self.launcher.workloads()
    }

    /// The node's built-in ebpf_exporter configurations (one set scraped).
    pub fn exporters(&self) -> &Arc<crate::exporter::Builtin> {
        self.launcher.exporters()
    }

    /// The caps on component and bytecode files of loads from now on.
    pub fn set_file_caps(&self, caps: FileCaps) {
        self.launcher.set_file_caps(caps);
    }
}

impl<L: Launcher> Manager<L> {
    pub fn with_launcher(launcher: L, metrics: Arc<Metrics>) -> Self {
        Self {
            launcher,
            metrics,
            shared: Arc::new(Shared {
                plugins: Mutex::default(),
                changes: broadcast::channel(CHANGE_BACKLOG).0,
            }),
            next_id: AtomicU64::new(1),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Load and start a plugin (as `conductor run` does); relative paths in
    /// `spec` resolve against `base_dir`. A failing first `init` is a fault
    /// like any other (the plugin restarts after a backoff).
    pub fn load(&self, spec: &PluginSpec, base_dir: &Path) -> Result<(), ManagerError> {
        let ticket = self.reserve(spec, BTreeMap::new(), 1, false)?;
        match self.activate(&ticket, spec, base_dir, false) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.discard(&ticket);
                Err(e)
            }
        }
    }

    /// Take the name for a plugin about to be loaded: it is listed as
    /// `Pending` from now on. `desired`: part of the desired state already
    /// (restored from disk) rather than only once it runs.
    pub fn reserve(
        &self,
        spec: &PluginSpec,
        annotations: BTreeMap<String, String>,
        generation: u64,
        desired: bool,
    ) -> Result<Ticket, ManagerError> {
        let mut plugins = self.shared.lock();
        if plugins.contains_key(&spec.name) {
            return Err(ManagerError::Duplicate(spec.name.clone()));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (cancel, cancelled) = watch::channel(false);
        plugins.insert(
            spec.name.clone(),
            Entry {
                id,
                cancel,
                spec: spec.clone(),
                resolved: None,
                bytecode_digest: None,
                annotations,
                generation,
                loaded_at: None,
                phase: Phase::Pending,
                since: SystemTime::now(),
                last_error: None,
                plugin: None,
                busy: true,
                desired,
            },
        );
        crate::logs::hub().register(&spec.name);
        self.shared.announce(&plugins, &spec.name);
        Ok(Ticket {
            name: spec.name.clone(),
            id,
            cancelled,
        })
    }

    /// Report the phase of a reserved plugin that is not running yet.
    /// False if that load was cancelled.
    pub fn set_phase(&self, ticket: &Ticket, phase: Phase, error: Option<String>) -> bool {
        let mut plugins = self.shared.lock();
        let name = ticket.name.as_str();
        match plugins.get_mut(name) {
            Some(e) if e.id == ticket.id => {
                e.phase = phase;
                e.since = SystemTime::now();
                if error.is_some() {
                    e.last_error = error;
                }
                self.shared.announce(&plugins, name);
                true
            }
            _ => false,
        }
    }

    /// A load from the persisted state failed: the plugin stays listed as
    /// `Failed` with `reason`, to be retried, updated or unloaded.
    pub fn fail(&self, ticket: &Ticket, reason: String) {
        let mut plugins = self.shared.lock();
        if let Some(e) = plugins.get_mut(&ticket.name)
            && e.id == ticket.id
            && e.plugin.is_none()
        {
            e.phase = Phase::Failed;
            e.since = SystemTime::now();
            e.last_error = Some(reason);
            e.busy = false;
            self.shared.announce(&plugins, &ticket.name);
        }
    }

    /// Start another attempt at loading a `Failed` plugin restored from
    /// the persisted state: true (and the plugin is `Pending`) unless it
    /// was unloaded, updated or is busy meanwhile.
    pub fn retry(&self, ticket: &Ticket) -> bool {
        let mut plugins = self.shared.lock();
        match plugins.get_mut(&ticket.name) {
            Some(e)
                if e.id == ticket.id
                    && e.phase == Phase::Failed
                    && e.plugin.is_none()
                    && !e.busy =>
            {
                e.busy = true;
                e.phase = Phase::Pending;
                e.since = SystemTime::now();
                self.shared.announce(&plugins, &ticket.name);
                true
            }
            _ => false,
        }
    }

    /// Load and start the reserved plugin `name` from `resolved` (its spec
    /// with OCI references replaced by local files). `wait_for_init`: all or
    /// nothing, including the first instance's `init`. On failure the entry
    /// is left `Failed` with the reason: [`Manager::discard`] it to roll the
    /// load back completely.
    pub fn activate(
        &self,
        ticket: &Ticket,
        resolved: &PluginSpec,
        base_dir: &Path,
        wait_for_init: bool,
    ) -> Result<PluginInfo, ManagerError> {
        let name = ticket.name.as_str();
        // From `Loading` on, an unload waits for the load instead of cancelling it.
        if !self.set_phase(ticket, Phase::Loading, None) {
            return Err(ManagerError::Cancelled(name.to_owned()));
        }
        let started = self.start_plugin(resolved, base_dir, wait_for_init);
        let mut plugins = self.shared.lock();
        let Some(entry) = plugins.get_mut(name).filter(|e| e.id == ticket.id) else {
            // Not reachable: a `Loading` entry is only removed by its load.
            if let Ok((p, _)) = started {
                drop(plugins);
                p.stop();
            }
            return Err(ManagerError::Cancelled(name.to_owned()));
        };
        entry.busy = false;
        entry.since = SystemTime::now();
        match started {
            Ok((plugin, bytecode_digest)) => {
                entry.plugin = Some(Arc::new(plugin));
                entry.resolved = Some(resolved.clone());
                entry.bytecode_digest = bytecode_digest;
                entry.loaded_at = Some(SystemTime::now());
                entry.phase = Phase::Running;
                entry.last_error = None;
                entry.desired = true;
                let info = entry.info();
                self.shared.announce(&plugins, name);
                Ok(info)
            }
            Err(e) => {
                entry.phase = Phase::Failed;
                entry.last_error = Some(e.to_string());
                self.shared.announce(&plugins, name);
                Err(e)
            }
        }
    }

    fn start_plugin(
        &self,
        spec: &PluginSpec,
        base_dir: &Path,
        wait_for_init: bool,
    ) -> Result<(L::Plugin, Option<String>), ManagerError> {
        let bytecode_digest = spec
            .bytecode
            .as_ref()
            .and_then(|b| file_digest(&base_dir.join(&b.path), self.launcher.file_caps()));
        let weak: Weak<Shared<L::Plugin>> = Arc::downgrade(&self.shared);
        let name = spec.name.clone();
        let notify: crate::plugin::Notify = Arc::new(move || {
            if let Some(shared) = weak.upgrade() {
                let plugins = shared.lock();
                shared.announce(&plugins, &name);
            }
        });
        let plugin = self.launcher.start(
            spec,
            base_dir,
            StartOptions {
                notify: Some(notify),
                workloads: None,
                wait_for_init,
                file_caps: self.launcher.file_caps(),
            },
        )?;
        Ok((plugin, bytecode_digest))
    }

    /// Forget a plugin that is not running (a load that failed).
    pub fn discard(&self, ticket: &Ticket) {
        let name = ticket.name.as_str();
        let mut plugins = self.shared.lock();
        if plugins
            .get(name)
            .is_some_and(|e| e.id == ticket.id && e.plugin.is_none())
            && let Some(e) = plugins.remove(name)
        {
            crate::logs::hub().unregister(name);
            let _ = self.shared.changes.send(Change::Removed(e.info()));
        }
    }

    /// Stop a plugin, detach its programs and forget it. A plugin still
    /// `Pending` or `Pulling` is forgotten at once and its load cancelled.
    pub fn unload(&self, name: &str) -> Result<PluginInfo, ManagerError> {
        let plugin = {
            let mut plugins = self.shared.lock();
            let entry = plugins
                .get(name)
                .ok_or_else(|| ManagerError::NotFound(name.to_owned()))?;
            if entry.busy
                && entry.plugin.is_none()
                && matches!(entry.phase, Phase::Pending | Phase::Pulling)
                && let Some(mut entry) = plugins.remove(name)
            {
                let _ = entry.cancel.send(true);
                entry.busy = false;
                entry.phase = Phase::Stopped;
                entry.since = SystemTime::now();
                let info = entry.info();
                crate::logs::hub().unregister(name);
                let _ = self.shared.changes.send(Change::Removed(info.clone()));
                return Ok(info);
            }
            let entry = plugins
                .get_mut(name)
                .ok_or_else(|| ManagerError::NotFound(name.to_owned()))?;
            if entry.busy {
                return Err(ManagerError::Busy(name.to_owned()));
            }
            // Keep the name taken until the plugin is gone, so that a new
            // plugin of that name cannot overlap with it (metrics, programs).
            entry.busy = true;
            entry.plugin.clone()
        };
        if let Some(p) = &plugin {
            p.stop();
        }
        let mut plugins = self.shared.lock();
        let mut entry = plugins
            .remove(name)
            .ok_or_else(|| ManagerError::NotFound(name.to_owned()))?;
        entry.plugin = None;
        entry.phase = Phase::Stopped;
        entry.since = SystemTime::now();
        let info = entry.info();
        crate::logs::hub().unregister(name);
        let _ = self.shared.changes.send(Change::Removed(info.clone()));
        drop(entry);
        drop(plugins);
        crate::memory::release_freed();
        Ok(info)
    }

    /// Replace plugin `spec.name` by a new version: `resolved` is `spec`
    /// with OCI references resolved; `annotations` replace the old ones
    /// unless empty. If the kernel side (bytecode, its file's content, maps,
    /// bpfmanProgram)
    /// and `limits.maxSeriesPerMetric` are unchanged, the kernel side stays
    /// attached and the new component takes over between two batches
    /// ([`RunningPlugin::swap`]): no event is lost and a failing new version
    /// leaves the old one running. Otherwise the plugin is stopped and
    /// started again from the new spec; if that fails the old spec is
    /// loaded again.
    pub fn update(
        &self,
        spec: &PluginSpec,
        resolved: &PluginSpec,
        annotations: BTreeMap<String, String>,
    ) -> Result<(PluginInfo, UpdateKind), ManagerError> {
        let name = spec.name.as_str();
        let (plugin, old_resolved, old_digest) = {
            let mut plugins = self.shared.lock();
            let entry = plugins
                .get_mut(name)
                .ok_or_else(|| ManagerError::NotFound(name.to_owned()))?;
            if entry.busy {
                return Err(ManagerError::Busy(name.to_owned()));
            }
            entry.busy = true;
            (
                entry.plugin.clone(),
                entry.resolved.clone(),
                entry.bytecode_digest.clone(),
            )
        };
        let result = self.update_busy(resolved, plugin, old_resolved, old_digest);
        let mut plugins = self.shared.lock();
        let Some(entry) = plugins.get_mut(name) else {
            return Err(ManagerError::NotFound(name.to_owned()));
        };
        entry.busy = false;
        let outcome = match result {
            Ok((kind, new_plugin, bytecode_digest)) => {
                if let Some(p) = new_plugin {
                    entry.plugin = Some(p);
                    entry.loaded_at = Some(SystemTime::now());
                } else if entry.plugin.is_some() {
                    entry.loaded_at = Some(SystemTime::now());
                }
                entry.spec = spec.clone();
                entry.resolved = Some(resolved.clone());
                entry.bytecode_digest = bytecode_digest;
                entry.generation += 1;
                if !annotations.is_empty() {
                    entry.annotations = annotations;
                }
                entry.phase = Phase::Running;
                entry.since = SystemTime::now();
                entry.last_error = None;
                Ok((entry.info(), kind))
            }
            Err((e, restored)) => {
                match restored {
                    Restored::Unchanged => {}
                    Restored::Again(p) => {
                        entry.plugin = Some(p);
                        entry.loaded_at = Some(SystemTime::now());
                    }
                    Restored::Lost => {
                        entry.plugin = None;
                        entry.phase = Phase::Failed;
                        entry.since = SystemTime::now();
                        entry.last_error = Some(e.to_string());
                    }
                }
                Err(e)
            }
        };
        self.shared.announce(&plugins, name);
        outcome
    }

    #[allow(clippy::type_complexity)]
    fn update_busy(
        &self,
        resolved: &PluginSpec,
        plugin: Option<Arc<L::Plugin>>,
        old_resolved: Option<PluginSpec>,
        old_digest: Option<String>,
    ) -> Result<
        (UpdateKind, Option<Arc<L::Plugin>>, Option<String>),
        (ManagerError, Restored<L::Plugin>),
    > {
        let name = resolved.name.clone();
        let refused = |cause: String| {
            (
                ManagerError::UpdateRefused {
                    name: name.clone(),
                    cause,
                },
                Restored::Unchanged,
            )
        };
        resolved
            .validate()
            .map_err(|e| (ManagerError::Load(e.into()), Restored::Unchanged))?;
        // New pins of a ClusterBpfApplication's program (bpfman reloaded
        // it): re-pointed in place, the instance and its state kept.
        if let (Some(old), Some(p)) = (&old_resolved, &plugin)
            && resolved.cluster_bpf_application.is_some()
            && old.differs_only_in_pins(resolved)
        {
            p.repoint(resolved).map_err(refused)?;
            return Ok((UpdateKind::Repointed, None, old_digest));
        }
        let new_digest = resolved
            .bytecode
            .as_ref()
            .and_then(|b| file_digest(Path::new(&b.path), self.launcher.file_caps()));
        // The new component compiles before anything changes.
        let prepared = self
            .launcher
            .prepare(resolved)
            .map_err(|e| refused(e.to_string()))?;
        let same_kernel_side = old_resolved.as_ref().is_some_and(|old| {
            old.bytecode == resolved.bytecode
                && old.exporter == resolved.exporter
                && old.maps == resolved.maps
                && old.bpfman_program == resolved.bpfman_program
                && old.limits.max_series_per_metric == resolved.limits.max_series_per_metric
                && old_digest == new_digest
        });
        if let (true, Some(p)) = (same_kernel_side, &plugin) {
            p.swap(resolved, prepared).map_err(refused)?;
            return Ok((UpdateKind::Swapped, None, new_digest));
        }
        // A full replace: the old plugin goes first (its name, metrics and
        // maps cannot be shared), then the new one starts.
        if let Some(p) = &plugin {
            p.stop();
        }
        match self.start_plugin(resolved, Path::new("/"), true) {
            Ok((p, digest)) => Ok((UpdateKind::Replaced, Some(Arc::new(p)), digest)),
            Err(e) => {
                let cause = e.to_string();
                let Some(old) = old_resolved else {
                    return Err((
                        ManagerError::UpdateLost {
                            name,
                            cause,
                            restore: "it was not running".into(),
                        },
                        Restored::Lost,
                    ));
                };
                match self.start_plugin(&old, Path::new("/"), false) {
                    Ok((p, _)) => Err((
                        ManagerError::UpdateRolledBack { name, cause },
                        Restored::Again(Arc::new(p)),
                    )),
                    Err(restore) => Err((
                        ManagerError::UpdateLost {
                            name,
                            cause,
                            restore: restore.to_string(),
                        },
                        Restored::Lost,
                    )),
                }
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<PluginInfo> {
        self.shared.lock().get(name).map(Entry::info)
    }

    pub fn list(&self) -> Vec<PluginInfo> {
        self.shared.lock().values().map(Entry::info).collect()
    }

    /// The current state of every plugin and the changes from then on.
    pub fn subscribe(&self) -> (Vec<PluginInfo>, broadcast::Receiver<Change>) {
        let plugins = self.shared.lock();
        let rx = self.shared.changes.subscribe();
        (plugins.values().map(Entry::info).collect(), rx)
    }

    /// The plugins that should run on this host (what is persisted): those
    /// loaded or restored, not those whose first load is still under way.
    pub fn desired(&self) -> Vec<Desired> {
        self.shared
            .lock()
            .values()
            .filter(|e| e.desired)
            .map(|e| Desired {
                spec: e.spec.clone(),
                annotations: e.annotations.clone(),
                generation: e.generation,
            })
            .collect()
    }

    /// Plugin status as the plugin threads report it (for `conductor run`).
    pub fn status(&self) -> BTreeMap<String, Status> {
        self.shared
            .lock()
            .iter()
            .filter_map(|(n, e)| e.plugin.as_ref().map(|p| (n.clone(), p.status())))
            .collect()
    }

    /// Run every plugin's `collect` export, waiting at most `deadline` in
    /// total: a slow plugin leaves its previous values in place.
    pub fn collect(&self, deadline: Duration) {
        let waits: Vec<_> = self
            .shared
            .lock()
            .values()
            .filter_map(|e| e.plugin.as_ref())
            .map(|p| (p.name().to_owned(), p.request_collect()))
            .collect();
        let until = Instant::now() + deadline;
        for (name, rx) in waits {
            let left = until.saturating_duration_since(Instant::now());
            if rx.recv_timeout(left).is_err() {
                tracing::debug!(plugin = %name, "collect did not finish before the scrape deadline");
            }
        }
    }

    /// Stop every plugin, detaching all programs.
    pub fn shutdown(&self) {
        let plugins: Vec<Arc<L::Plugin>> = self
            .shared
            .lock()
            .values_mut()
            .filter_map(|e| e.plugin.take())
            .collect();
        for p in plugins {
            p.stop();
        }
    }
}

enum Restored<P> {
    /// The old version never stopped.
    Unchanged,
    /// The old version was started again.
    Again(Arc<P>),
    /// Nothing runs any more.
    Lost,
}

/// `sha256:<hex>` of a bytecode file, streamed, if it can be read (a
/// missing, special or too large file fails the load itself with a better
/// message).
fn file_digest(path: &Path, caps: FileCaps) -> Option<String> {
    files::sha256_hex(path, caps.bytecode_bytes, "--max-bytecode-bytes")
        .ok()
        .map(|h| format!("sha256:{h}"))
}

#[cfg(test)]
mod tests;
