//! The set of plugins running on this host.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conductor_api::PluginSpec;

use crate::metrics::Metrics;
use crate::plugin::{LoadError, Plugin, Status};
use crate::runtime::Runtime;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("a plugin named {0:?} is already loaded; unload it first or choose another name")]
    Duplicate(String),
    #[error("no plugin named {0:?} is loaded")]
    NotFound(String),
    #[error(transparent)]
    Load(#[from] LoadError),
}

pub struct Manager {
    runtime: Arc<Runtime>,
    metrics: Arc<Metrics>,
    plugins: Mutex<BTreeMap<String, Plugin>>,
}

impl Manager {
    pub fn new(runtime: Arc<Runtime>, metrics: Arc<Metrics>) -> Self {
        Self {
            runtime,
            metrics,
            plugins: Mutex::default(),
        }
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Load and start a plugin; relative paths in `spec` resolve against `base_dir`.
    pub fn load(&self, spec: &PluginSpec, base_dir: &Path) -> Result<(), ManagerError> {
        if self.lock().contains_key(&spec.name) {
            return Err(ManagerError::Duplicate(spec.name.clone()));
        }
        // Loading compiles and verifies, which can take a while: do it
        // without holding the lock so other plugins stay reachable.
        let plugin = Plugin::start(&self.runtime, &self.metrics, spec, base_dir)?;
        let mut plugins = self.lock();
        if plugins.contains_key(&spec.name) {
            drop(plugins);
            plugin.stop();
            return Err(ManagerError::Duplicate(spec.name.clone()));
        }
        plugins.insert(spec.name.clone(), plugin);
        Ok(())
    }

    pub fn unload(&self, name: &str) -> Result<(), ManagerError> {
        let plugin = self
            .lock()
            .remove(name)
            .ok_or_else(|| ManagerError::NotFound(name.to_owned()))?;
        plugin.stop();
        Ok(())
    }

    pub fn status(&self) -> BTreeMap<String, Status> {
        self.lock()
            .iter()
            .map(|(n, p)| (n.clone(), p.status()))
            .collect()
    }

    /// Run every plugin's `collect` export, waiting at most `deadline` in
    /// total: a slow plugin leaves its previous values in place.
    pub fn collect(&self, deadline: Duration) {
        let waits: Vec<_> = self
            .lock()
            .values()
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
        let plugins = std::mem::take(&mut *self.lock());
        for (_, p) in plugins {
            p.stop();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Plugin>> {
        self.plugins.lock().unwrap_or_else(|e| e.into_inner())
    }
}
