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
    /// Ask for a `collect` call; the receiver fires when it is done.
    fn request_collect(&self) -> Receiver<()>;
    /// Stop and detach; returns once done, stopping again does nothing.
    fn stop(&self);
}

/// The real launcher.
pub struct PluginLauncher {
    runtime: Arc<Runtime>,
    metrics: Arc<Metrics>,
    /// What the plugins' `k8s` lookups answer from (`unknown` for
    /// everything until set).
    workloads: RwLock<Arc<Workloads>>,
    file_caps: RwLock<FileCaps>,
}

impl PluginLauncher {
    pub fn new(runtime: Arc<Runtime>, metrics: Arc<Metrics>) -> Self {
        Self {
            runtime,
            metrics,
            workloads: RwLock::new(Workloads::disabled()),
            file_caps: RwLock::new(FileCaps::default()),
        }
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
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

impl Launcher for PluginLauncher {
    type Plugin = Plugin;
    type Prepared = Prepared;
    type PrepareError = RuntimeError;

    fn file_caps(&self) -> FileCaps {
        *self.file_caps.read().unwrap_or_else(|e| e.into_inner())
    }

    fn prepare(&self, spec: &PluginSpec) -> Result<Prepared, RuntimeError> {
        // The memory limit is checked before the compile.
        self.runtime.prepare_limited(
            Path::new(&spec.component),
            self.file_caps().component_bytes,
            Some(spec.limits.memory_mib),
        )
    }

    fn start(
        &self,
        spec: &PluginSpec,
        base_dir: &Path,
        mut options: StartOptions,
    ) -> Result<Plugin, LoadError> {
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
    }
}

impl RunningPlugin for Plugin {
    type Prepared = Prepared;

    fn name(&self) -> &str {
        Plugin::name(self)
    }
    fn status(&self) -> Status {
        Plugin::status(self)
    }
    fn swap(&self, spec: &PluginSpec, prepared: Prepared) -> Result<(), String> {
        Plugin::swap(self, spec, prepared)
    }
    fn request_collect(&self) -> Receiver<()> {
        Plugin::request_collect(self)
    }
    fn stop(&self) {
        Plugin::stop(self)
    }
}
