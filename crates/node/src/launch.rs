//! How the [`Manager`](crate::manager::Manager) starts plugins and reaches
//! running ones. [`PluginLauncher`] is the real one (kernel side through
//! `conductor-kernel`, wasm through `conductor-runtime`); the manager's
//! state machine is unit-tested with a fake that needs neither.

use std::path::Path;
use std::sync::{Arc, RwLock};

use conductor_api::PluginSpec;
use conductor_api::files::FileCaps;
use conductor_runtime::{Prepared, Runtime, RuntimeError};
use crossbeam_channel::Receiver;

use crate::exporter::{Builtin, ExporterPlugin};
use crate::k8s::Workloads;
use crate::metrics::Metrics;
use crate::plugin::{LoadError, Plugin, StartOptions, Status};

/// Starts plugins.
pub trait Launcher: Send + Sync + 'static {
    type Plugin: RunningPlugin<Prepared = Self::Prepared>;
    /// A new version's user side, checked and ready to take over.
    type Prepared;
    type PrepareError: std::fmt::Display;

    /// The caps on the files a spec names.
    fn file_caps(&self) -> FileCaps {
        FileCaps::default()
    }

    /// Compile and check `spec`'s component (before anything changes).
    fn prepare(&self, spec: &PluginSpec) -> Result<Self::Prepared, Self::PrepareError>;

    /// Load and start `spec` (paths relative to `base_dir`): all or nothing.
    fn start(
        &self,
        spec: &PluginSpec,
        base_dir: &Path,
        options: StartOptions,
    ) -> Result<Self::Plugin, LoadError>;
}

/// A started plugin, as the manager sees it.
pub trait RunningPlugin: Send + Sync + 'static {
    type Prepared;
    fn name(&self) -> &str;
    fn status(&self) -> Status;
    /// Replace the user side by `prepared` (see [`Plugin::swap`]).
    fn swap(&self, spec: &PluginSpec, prepared: Self::Prepared) -> Result<(), String>;
    /// Re-open the maps at `spec`'s new pins under the running instance
    /// (see [`Plugin::repoint`]).
    fn repoint(&self, _spec: &PluginSpec) -> Result<(), String> {
        Err("this plugin cannot re-point its maps".into())
    }
    /// Ask for a `collect` call; the receiver fires when it is done.
    fn request_collect(&self) -> Receiver<()>;
    /// Stop and detach; returns once done, stopping again does nothing.
    fn stop(&self);
}

/// The real launcher.
pub struct PluginLauncher {
    runtime: Arc<Runtime>,
    metrics: Arc<Metrics>,
    /// Specs with `exporter` run here instead of in a wasm worker.
    exporters: Arc<Builtin>,
    /// What the plugins' `k8s` lookups answer from (`unknown` for
    /// everything until set).
    workloads: RwLock<Arc<Workloads>>,
    file_caps: RwLock<FileCaps>,
}

impl PluginLauncher {
    pub fn new(runtime: Arc<Runtime>, metrics: Arc<Metrics>) -> Self {
        Self {
            runtime,
            exporters: Arc::new(Builtin::new(&metrics)),
            metrics,
            workloads: RwLock::new(Workloads::disabled()),
            file_caps: RwLock::new(FileCaps::default()),
        }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The node's built-in ebpf_exporter configurations.
    pub fn exporters(&self) -> &Arc<Builtin> {
        &self.exporters
    }

    /// The caps on component and bytecode files from now on.
    pub fn set_file_caps(&self, caps: FileCaps) {
        *self.file_caps.write().unwrap_or_else(|e| e.into_inner()) = caps;
    }

    /// The workload cache plugins started from now on look up.
    pub fn set_workloads(&self, workloads: Arc<Workloads>) {
        *self.workloads.write().unwrap_or_else(|e| e.into_inner()) = workloads;
    }

    /// The workload cache set last (for the host's built-ins).
    pub fn workloads(&self) -> Arc<Workloads> {
        self.workloads
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A plugin of the real launcher: a wasm component on its worker thread, or
/// a configuration of the built-in ebpf_exporter (a spec with `exporter`).
pub enum NodePlugin {
    Wasm(Plugin),
    Exporter(ExporterPlugin),
}

impl Launcher for PluginLauncher {
    type Plugin = NodePlugin;
    /// `None` for an exporter spec (nothing to compile).
    type Prepared = Option<Prepared>;
    type PrepareError = RuntimeError;

    fn file_caps(&self) -> FileCaps {
        *self.file_caps.read().unwrap_or_else(|e| e.into_inner())
    }

    fn prepare(&self, spec: &PluginSpec) -> Result<Option<Prepared>, RuntimeError> {
        if spec.exporter.is_some() {
            return Ok(None);
        }
        // The memory limit is checked before the compile.
        self.runtime
            .prepare_limited(
                Path::new(&spec.component),
                self.file_caps().component_bytes,
                Some(spec.limits.memory_mib),
            )
            .map(Some)
    }

    fn start(
        &self,
        spec: &PluginSpec,
        base_dir: &Path,
        mut options: StartOptions,
    ) -> Result<NodePlugin, LoadError> {
        if spec.exporter.is_some() {
            return self
                .exporters
                .start(spec, base_dir, self.workloads())
                .map(NodePlugin::Exporter);
        }
        if options.workloads.is_none() {
            options.workloads = Some(
                self.workloads
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone(),
            );
        }
        options.file_caps = self.file_caps();
        Plugin::start_with(&self.runtime, &self.metrics, spec, base_dir, options)
            .map(NodePlugin::Wasm)
    }
}

impl RunningPlugin for NodePlugin {
    type Prepared = Option<Prepared>;

    fn name(&self) -> &str {
        match self {
            Self::Wasm(p) => p.name(),
            Self::Exporter(e) => e.name(),
        }
    }
    fn status(&self) -> Status {
        match self {
            Self::Wasm(p) => p.status(),
            Self::Exporter(e) => e.status(),
        }
    }
    /// An exporter's configuration is part of its kernel side (the manager
    /// replaces it when `exporter` changes): nothing to swap.
    fn swap(&self, spec: &PluginSpec, prepared: Option<Prepared>) -> Result<(), String> {
        match (self, prepared) {
            (Self::Wasm(p), Some(prepared)) => p.swap(spec, prepared),
            (Self::Exporter(_), None) => Ok(()),
            _ => Err("cannot turn a wasm plugin into an exporter or back in place".into()),
        }
    }
    fn repoint(&self, spec: &PluginSpec) -> Result<(), String> {
        match self {
            Self::Wasm(p) => p.repoint(spec),
            Self::Exporter(_) => Err("an exporter cannot re-point its maps".into()),
        }
    }
    fn request_collect(&self) -> Receiver<()> {
        match self {
            Self::Wasm(p) => p.request_collect(),
            // Its maps are read by the scrape itself.
            Self::Exporter(_) => {
                let (tx, rx) = crossbeam_channel::bounded(1);
                let _ = tx.send(());
                rx
            }
        }
    }
    fn stop(&self) {
        match self {
            Self::Wasm(p) => p.stop(),
            Self::Exporter(e) => e.stop(),
        }
    }
}
