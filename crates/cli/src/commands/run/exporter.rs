//! `conductor run --exporter-config DIR --names a,b`: ebpf_exporter
//! configurations as a built-in of the node.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use conductor_exporter::{Config, Exporter, ExporterSet, Kallsyms, SystemHost};
use conductor_node::manager::Manager;

/// Configs read and checked, kernel symbols read: what can be done before
/// the node drops its capabilities.
pub struct Prepared {
    dir: PathBuf,
    configs: Vec<Config>,
    kallsyms: Kallsyms,
}

impl Prepared {
    pub fn new(dir: &Path, names: &[String]) -> anyhow::Result<Self> {
        let configs = conductor_exporter::read_configs(dir, names)?;
        let kallsyms = match Kallsyms::read() {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(
                    "cannot read /proc/kallsyms ({e}): ksym and kstack labels will read unknown"
                );
                Kallsyms::default()
            }
        };
        Ok(Self {
            dir: dir.to_owned(),
            configs,
            kallsyms,
        })
    }

    /// Load every config (all or none) and scrape them with the node's
    /// other ebpf_exporter configurations.
    pub fn start(self, manager: &Manager) -> anyhow::Result<Running> {
        let lookup = conductor_node::exporter::workload_lookup(manager.workloads());
        let host = Arc::new(SystemHost::new(self.kallsyms, Some(lookup)));
        let mut loaded = Vec::new();
        for config in &self.configs {
            let object = conductor_exporter::object_path(&self.dir, &config.name);
            let host = host.clone();
            let exporter = Exporter::load(config, &object, host.clone(), |s| {
                host.kallsyms().address(s)
            })
            .with_context(|| format!("cannot run ebpf_exporter config {:?}", config.name))?;
            loaded.push(Arc::new(exporter));
        }
        let set = manager.exporters().set().clone();
        for e in &loaded {
            set.add(e.clone());
        }
        tracing::info!(configs = ?self.configs.iter().map(|c| &c.name).collect::<Vec<_>>(), "ebpf_exporter configs running");
        Ok(Running { set, loaded })
    }
}

/// The running configs; [`Running::stop`] detaches them.
pub struct Running {
    set: Arc<ExporterSet>,
    loaded: Vec<Arc<Exporter>>,
}

impl Running {
    pub fn stop(self, _manager: &Manager) {
        // The set's references go first, then ours: the programs detach.
        for e in &self.loaded {
            self.set.remove(e);
        }
    }
}
