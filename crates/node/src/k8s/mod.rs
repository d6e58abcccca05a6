//! Kubernetes identity of the workloads on this node, for the `k8s` WIT interface.
//!
//! Two halves, both answering from memory:
//! - [`cgroup`]: cgroup v2 directories by inode (what
//!   `bpf_get_current_cgroup_id()` returns) → container id and pod uid,
//!   from the kubelet's directory layout; `/proc/<pid>/cgroup` for pids.
//! - [`pods`]: this node's pods from the API server ([`watch`]), indexed by
//!   uid, container id and pod IP.
//!
//! [`Workloads`] joins them. Outside a cluster (no node name, or no API
//! server configuration) only the cgroup half runs: processes are told
//! apart as host or container, but no pod is known (`local mode`).

pub mod cgroup;
pub mod pods;
pub mod watch;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use cgroup::{CgroupClass, CgroupIndex};
pub use pods::{AnnotationFilter, ContainerInfo, PodInfo, PodStore};

use crate::metrics::K8sMetrics;

/// How the workload cache is set up (`conductor run` flags).
#[derive(Clone, Debug, Default)]
pub struct K8sConfig {
    /// This node's name (downward API `spec.nodeName`); none: local mode.
    pub node_name: Option<String>,
    /// A kubeconfig file; else in-cluster config, `$KUBECONFIG` or `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Annotation keys (or `prefix*`) kept on pods.
    pub annotations: Vec<String>,
    /// The cgroup2 directory to scan; none: where cgroup2 is mounted.
    pub cgroup_root: Option<PathBuf>,
    /// Least time between two rescans of the cgroup tree after misses.
    pub min_rescan: Duration,
    /// How long to wait for the first pod list before plugins start.
    pub sync_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum K8sError {
    #[error("cannot read kubeconfig {path}: {cause}")]
    Kubeconfig { path: PathBuf, cause: String },
    #[error("cannot create a Kubernetes client: {0}")]
    Client(String),
}

/// A lookup's answer; pods are shared, not copied.
#[derive(Clone, Debug)]
pub enum Identity {
    Host,
    Workload {
        pod: Arc<PodInfo>,
        /// Index into `pod.containers`, when the container is known.
        container: Option<usize>,
    },
    Unknown,
}

impl Identity {
    pub fn container(&self) -> Option<&ContainerInfo> {
        match self {
            Identity::Workload {
                pod,
                container: Some(i),
            } => pod.containers.get(*i),
            _ => None,
        }
    }
}

/// The node's workload cache.
pub struct Workloads {
    cgroups: Option<Arc<CgroupIndex>>,
    pods: Arc<PodStore>,
    /// True when pods come from an API server.
    cluster: bool,
    watch_task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Workloads {
    fn drop(&mut self) {
        if let Some(c) = &self.cgroups {
            c.stop();
        }
        if let Some(t) = &self.watch_task {
            t.abort();
        }
    }
}

impl Workloads {
    /// No cache at all: every lookup answers `unknown` (tests, benchmarks).
    pub fn disabled() -> Arc<Self> {
        Arc::new(Self {
            cgroups: None,
            pods: Arc::default(),
            cluster: false,
            watch_task: None,
        })
    }

    /// Start the cache: scan and watch the cgroup tree; with a node name
    /// and an API server configuration, watch this node's pods too (on the
    /// current tokio runtime) and wait up to `sync_timeout` for the first list.
    pub async fn start(config: K8sConfig, metrics: K8sMetrics) -> Result<Arc<Self>, K8sError> {
        let client = match &config.node_name {
            None => {
                tracing::info!(
                    "no node name (--node-name or NODE_NAME): Kubernetes metadata runs in local mode, containers are told apart from host processes by their cgroups but no pod is known"
                );
                None
            }
            Some(node) => match client(&config).await {
                Ok(c) => Some((c, node.clone())),
                Err(e) if config.kubeconfig.is_some() => return Err(e),
                Err(e) => {
                    tracing::info!(
                        "no Kubernetes API server configuration ({e}): Kubernetes metadata runs in local mode, containers are told apart from host processes by their cgroups but no pod is known"
                    );
                    None
                }
            },
        };
        Ok(Self::start_with_client(client, config, metrics).await)
    }

    /// [`start`](Self::start) with a given client (and node name), or local mode with none.
    pub async fn start_with_client(
        client: Option<(kube::Client, String)>,
        config: K8sConfig,
        metrics: K8sMetrics,
    ) -> Arc<Self> {
        let root = config.cgroup_root.clone().or_else(cgroup::cgroup2_mount);
        let cgroups = match root {
            Some(root) => {
                let m = metrics.clone();
                let min = config.min_rescan;
                tokio::task::spawn_blocking(move || CgroupIndex::start(root, min, m))
                    .await
                    .ok()
            }
            None => {
                tracing::warn!(
                    "cgroup2 is not mounted: cgroup and pid lookups will answer `unknown`"
                );
                None
            }
        };
        let pods = Arc::new(PodStore::default());
        let cluster = client.is_some();
        let watch_task = match client {
            None => None,
            Some((client, node)) => {
                let (synced, mut rx) = tokio::sync::watch::channel(false);
                let w = watch::PodWatch {
                    store: pods.clone(),
                    metrics,
                    annotations: AnnotationFilter::new(&config.annotations),
                    synced,
                };
                tracing::info!(%node, "watching this node's pods");
                let task = tokio::spawn(w.run(client, node));
                let wait = tokio::time::timeout(config.sync_timeout, rx.wait_for(|s| *s)).await;
                if wait.is_err() {
                    tracing::warn!(
                        "no pod list from the API server within {:?}; starting anyway, pods appear once it answers",
                        config.sync_timeout
                    );
                }
                Some(task)
            }
        };
        Arc::new(Self {
            cgroups,
            pods,
            cluster,
            watch_task,
        })
    }

    pub fn pods(&self) -> &PodStore {
        &self.pods
    }

    pub fn cgroups(&self) -> Option<&CgroupIndex> {
        self.cgroups.as_deref()
    }

    /// True when pods come from an API server (not local mode).
    pub fn in_cluster(&self) -> bool {
        self.cluster
    }

    fn resolve(&self, class: CgroupClass) -> Identity {
        match class {
            CgroupClass::Host => Identity::Host,
            CgroupClass::Kubepods => Identity::Unknown,
            CgroupClass::Pod { uid } => match self.pods.by_uid(&uid) {
                Some(pod) => Identity::Workload {
                    pod,
                    container: None,
                },
                None => Identity::Unknown,
            },
            CgroupClass::Container { id, pod_uid } => {
                if let Some((pod, i)) = self.pods.by_container_id(&id) {
                    return Identity::Workload {
                        pod,
                        container: Some(i),
                    };
                }
                // The kubelet has not reported the container yet: its pod, if known.
                match pod_uid.and_then(|uid| self.pods.by_uid(&uid)) {
                    Some(pod) => Identity::Workload {
                        pod,
                        container: None,
                    },
                    None => Identity::Unknown,
                }
            }
        }
    }

    /// By cgroup v2 id (directory inode). A miss schedules a rate-limited rescan.
    pub fn by_cgroup_id(&self, id: u64) -> Identity {
        match self.cgroups.as_ref().and_then(|c| c.get(id)) {
            Some(class) => self.resolve(class),
            None => Identity::Unknown,
        }
    }

    /// The container id of a cgroup from its directory name alone (no pod needed).
    pub fn container_id_of_cgroup(&self, id: u64) -> Option<Arc<str>> {
        match self.cgroups.as_ref()?.get(id)? {
            CgroupClass::Container { id, .. } => Some(id),
            _ => None,
        }
    }

    /// By pid, through `/proc/<pid>/cgroup`.
    pub fn by_pid(&self, pid: u32) -> Identity {
        if self.cgroups.is_none() {
            return Identity::Unknown;
        }
        match cgroup::cgroup_path_of_pid(pid) {
            Some(path) => self.resolve(cgroup::classify(path.split('/'))),
            None => Identity::Unknown,
        }
    }

    pub fn by_container_id(&self, id: &str) -> Identity {
        match self.pods.by_container_id(id) {
            Some((pod, i)) => Identity::Workload {
                pod,
                container: Some(i),
            },
            None => Identity::Unknown,
        }
    }

    pub fn by_ip(&self, ip: IpAddr) -> Identity {
        match self.pods.by_ip(&ip) {
            Some(pod) => Identity::Workload {
                pod,
                container: None,
            },
            None => Identity::Unknown,
        }
    }
}

async fn client(config: &K8sConfig) -> Result<kube::Client, K8sError> {
    let kc = match &config.kubeconfig {
        Some(path) => {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(path).map_err(|e| K8sError::Kubeconfig {
                    path: path.clone(),
                    cause: e.to_string(),
                })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
                .await
                .map_err(|e| K8sError::Kubeconfig {
                    path: path.clone(),
                    cause: e.to_string(),
                })?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| K8sError::Client(e.to_string()))?,
    };
    kube::Client::try_from(kc).map_err(|e| K8sError::Client(e.to_string()))
}

/// The plugins' `k8s` interface, answered from this cache in the WIT's
/// terms: a read lock and a hash lookup per call; label sets are copied
/// only when asked for.
mod backend {
    use std::net::IpAddr;

    use conductor_runtime::host::k8s::{self as wit, WorkloadsBackend};

    use super::{Identity, PodInfo, Workloads};

    fn wit_pod(p: &PodInfo) -> wit::Pod {
        wit::Pod {
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            uid: p.uid.clone(),
            node: p.node.clone(),
            owner: p.owner.clone(),
        }
    }

    fn wit_identity(id: Identity) -> wit::Identity {
        match id {
            Identity::Host => wit::Identity::Host,
            Identity::Unknown => wit::Identity::Unknown,
            Identity::Workload { ref pod, .. } => wit::Identity::Workload(wit::Workload {
                pod: wit_pod(pod),
                container: id.container().map(|c| wit::Container {
                    name: c.name.clone(),
                    id: c.id.clone(),
                    image: c.image.clone(),
                }),
            }),
        }
    }

    impl WorkloadsBackend for Workloads {
        fn by_cgroup_id(&self, id: u64) -> wit::Identity {
            wit_identity(Workloads::by_cgroup_id(self, id))
        }
        fn by_pid(&self, pid: u32) -> wit::Identity {
            wit_identity(Workloads::by_pid(self, pid))
        }
        fn by_container_id(&self, id: &str) -> wit::Identity {
            wit_identity(Workloads::by_container_id(self, id))
        }
        fn by_ip(&self, ip: IpAddr) -> wit::Identity {
            wit_identity(Workloads::by_ip(self, ip))
        }
        fn pod_labels(&self, uid: &str) -> Vec<(String, String)> {
            self.pods()
                .by_uid(uid)
                .map(|p| p.labels.clone())
                .unwrap_or_default()
        }
        fn pod_label(&self, uid: &str, key: &str) -> Option<String> {
            self.pods()
                .by_uid(uid)
                .and_then(|p| p.label(key).map(str::to_owned))
        }
        fn pod_annotations(&self, uid: &str) -> Vec<(String, String)> {
            self.pods()
                .by_uid(uid)
                .map(|p| p.annotations.clone())
                .unwrap_or_default()
        }
        fn pod_network(&self, uid: &str) -> Option<(Vec<IpAddr>, bool)> {
            self.pods()
                .by_uid(uid)
                .map(|p| (p.ips.clone(), p.host_network))
        }
        fn cgroup_container_id(&self, id: u64) -> Option<String> {
            self.container_id_of_cgroup(id).map(|s| s.to_string())
        }
    }
}
