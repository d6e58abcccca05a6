//! The built-in ebpf_exporter as one of the manager's plugins: a spec with
//! `exporter` (and no component) loads its `bytecode` object, attaches the
//! programs from their section names and has its maps read at each scrape,
//! as cloudflare/ebpf_exporter's configuration says (`conductor-exporter`).
//!
//! Every configuration on the node, whichever entry point loaded it (a
//! spec, `conductor run --exporter-config`), is scraped through one
//! [`ExporterSet`] registered once, so ebpf_exporter's own families
//! (`ebpf_exporter_enabled_configs`, `..._decoder_errors_total`) appear once.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use conductor_api::{Phase, PluginSpec};
use conductor_exporter::{
    Exporter, ExporterSet, Kallsyms, PodLookup, SystemHost, Workload, WorkloadLookup,
};
use sha2::{Digest, Sha256};

use crate::k8s::{Identity, Workloads};
use crate::metrics::Metrics;
use crate::plugin::{LoadError, Status};

/// The built-in's name in the node's registry.
pub const BUILTIN: &str = "ebpf_exporter";

/// The node's ebpf_exporter configurations and what decoders need.
pub struct Builtin {
    set: Arc<ExporterSet>,
    /// `/proc/kallsyms`, opened before the host dropped its capabilities.
    kallsyms_file: Mutex<Option<File>>,
    /// Read from it when the first configuration loads.
    kallsyms: OnceLock<Arc<Kallsyms>>,
}

impl Builtin {
    /// The set, registered in `metrics` (read at every scrape and export).
    pub fn new(metrics: &Metrics) -> Self {
        let set = Arc::new(ExporterSet::default());
        let encoder = set.clone();
        metrics.add_builtin(BUILTIN, Arc::new(move |e| encoder.encode_into(e)));
        Self {
            set,
            kallsyms_file: Mutex::new(None),
            kallsyms: OnceLock::new(),
        }
    }

    /// The configurations scraped (add and remove through it).
    pub fn set(&self) -> &Arc<ExporterSet> {
        &self.set
    }

    /// `/proc/kallsyms`, opened while the host still had `CAP_SYSLOG`.
    pub fn set_kallsyms_file(&self, file: File) {
        *self.kallsyms_file.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
    }

    /// Kernel symbols, read once (unknown addresses if that fails: `ksym`
    /// and `kstack` labels then read `unknown_addr:...` and `kaddrs` fail).
    pub fn kallsyms(&self) -> Arc<Kallsyms> {
        self.kallsyms
            .get_or_init(|| {
                let file = self
                    .kallsyms_file
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                let read = match &file {
                    Some(f) => Kallsyms::read_from(f),
                    None => Kallsyms::read(),
                };
                Arc::new(read.unwrap_or_else(|e| {
                    tracing::warn!(
                        "cannot read /proc/kallsyms ({e}): ksym and kstack labels will read unknown"
                    );
                    Kallsyms::default()
                }))
            })
            .clone()
    }

    /// Load `spec`'s configuration over its object (paths relative to
    /// `base_dir`) and scrape it from now on; all or nothing.
    pub fn start(
        self: &Arc<Self>,
        spec: &PluginSpec,
        base_dir: &Path,
        workloads: Arc<Workloads>,
    ) -> Result<ExporterPlugin, LoadError> {
        spec.validate()?;
        let start_error = |cause: String| LoadError::Start {
            plugin: spec.name.clone(),
            cause,
        };
        let exporter_spec = spec
            .exporter
            .as_ref()
            .ok_or_else(|| start_error("the spec has no exporter".into()))?;
        let config = exporter_spec
            .parse(&spec.name)
            .map_err(|e| start_error(e.to_string()))?;
        let mut resolved = spec.clone();
        resolved.resolve_paths(base_dir);
        let (object, global_data) = match &resolved.bytecode {
            Some(b) => (b.path.clone(), b.global_data.clone()),
            None => (String::new(), BTreeMap::new()),
        };
        let kallsyms = self.kallsyms();
        let host = Arc::new(SystemHost::new(
            kallsyms.clone(),
            Some(workload_lookup(workloads)),
        ));
        let exporter = Exporter::load_with_globals(
            &config,
            Path::new(&object),
            host,
            |s| kallsyms.address(s),
            &global_data,
        )
        .map_err(|e| start_error(e.to_string()))?;
        let exporter = Arc::new(exporter);
        self.set.add(exporter.clone());
        let digest = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(exporter_spec.config.as_bytes()))
        );
        Ok(ExporterPlugin {
            name: spec.name.clone(),
            builtin: self.clone(),
            exporter: Mutex::new(Some(exporter)),
            status: Mutex::new(Status {
                phase: Phase::Running,
                since: SystemTime::now(),
                restarts: 0,
                last_error: None,
                digest,
                next_retry: None,
            }),
        })
    }
}

/// The pod of a cgroup id or a pod IP from the node's workload cache, for
/// the `k8s_*` decoders.
pub fn workload_lookup(workloads: Arc<Workloads>) -> WorkloadLookup {
    Arc::new(CachedPods(workloads))
}

struct CachedPods(Arc<Workloads>);

impl PodLookup for CachedPods {
    fn by_cgroup_id(&self, id: u64) -> Option<Workload> {
        workload(self.0.by_cgroup_id(id))
    }

    fn by_ip(&self, ip: IpAddr) -> Option<Workload> {
        workload(self.0.by_ip(ip))
    }
}

fn workload(identity: Identity) -> Option<Workload> {
    match identity {
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
    }
}

/// One running configuration, as the manager sees it. It has no thread:
/// scrapes read its maps. Stopping (or dropping) it detaches its programs.
pub struct ExporterPlugin {
    name: String,
    builtin: Arc<Builtin>,
    exporter: Mutex<Option<Arc<Exporter>>>,
    status: Mutex<Status>,
}

impl ExporterPlugin {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stop scraping and detach; stopping again does nothing.
    pub fn stop(&self) {
        let taken = self
            .exporter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(exporter) = taken {
            self.builtin.set().remove(&exporter);
            let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
            status.phase = Phase::Stopped;
            status.since = SystemTime::now();
            // A scrape holding the last other reference drops it, and the
            // programs detach, when it ends.
        }
    }
}

impl Drop for ExporterPlugin {
    fn drop(&mut self) {
        self.stop();
    }
}
