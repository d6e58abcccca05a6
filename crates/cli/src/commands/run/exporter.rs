//! `conductor run --exporter-config DIR --names a,b`: ebpf_exporter
//! configurations as a built-in of the node.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use conductor_exporter::{
    Config, Exporter, ExporterSet, Kallsyms, SystemHost, Workload, WorkloadLookup,
};
use conductor_node::k8s::Identity;
use conductor_node::manager::Manager;

/// The built-in's name in the node's registry.
const BUILTIN: &str = "ebpf_exporter";

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

    /// Load every config (all or none) and add them to the node's registry.
    pub fn start(self, manager: &Manager) -> anyhow::Result<Running> {
        let workloads = manager.workloads();
        let lookup: WorkloadLookup = Arc::new(move |id| match workloads.by_cgroup_id(id) {
            Identity::Workload { pod, container } => Some(Workload {
                namespace: pod.namespace.clone(),
                pod: pod.name.clone(),
                container: container
                    .and_then(|i| pod.containers.get(i))
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
                workload: pod
                    .owner
                    .as_ref()
                    .map(|(_, name)| name.clone())
                    .unwrap_or_else(|| pod.name.clone()),
            }),
            Identity::Host | Identity::Unknown => None,
        });
        let host = Arc::new(SystemHost::new(self.kallsyms, Some(lookup)));
        let mut set = ExporterSet::default();
        for config in &self.configs {
            let object = conductor_exporter::object_path(&self.dir, &config.name);
            let host = host.clone();
            let exporter = Exporter::load(config, &object, host.clone(), |s| {
                host.kallsyms().address(s)
            })
            .with_context(|| format!("cannot run ebpf_exporter config {:?}", config.name))?;
            set.exporters.push(exporter);
        }
        let set = Arc::new(set);
        let encoder = set.clone();
        manager
            .metrics()
            .add_builtin(BUILTIN, Arc::new(move |e| encoder.encode_into(e)));
        tracing::info!(configs = ?self.configs.iter().map(|c| &c.name).collect::<Vec<_>>(), "ebpf_exporter configs running");
        Ok(Running { _set: set })
    }
}

/// The running configs; [`Running::stop`] detaches them.
pub struct Running {
    _set: Arc<ExporterSet>,
}

impl Running {
    pub fn stop(self, manager: &Manager) {
        // The registry's reference goes first, then ours: the programs detach.
        manager.metrics().remove_builtin(BUILTIN);
    }
}
