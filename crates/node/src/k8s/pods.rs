//! The node's pods, indexed for the plugins' lookups.
//!
//! Each pod is kept as one immutable [`PodInfo`] behind an `Arc`; the
//! indexes (uid, container id, pod IP) point at it, so a lookup is a read
//! lock and a hash probe, and an update replaces the pod's entries under
//! the write lock without disturbing readers for long.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// One container of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerInfo {
    pub name: String,
    /// The runtime's id without its scheme (`containerd://` etc.); empty
    /// until the kubelet reports the container started.
    pub id: String,
    /// The image as the pod spec names it (else as the runtime reports it).
    pub image: String,
}

/// What the cache keeps of a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    /// (kind, name) of the owning workload, e.g. ("Deployment", "web").
    pub owner: Option<(String, String)>,
    /// Sorted by key.
    pub labels: Vec<(String, String)>,
    /// Only the annotations the allow-list lets through, sorted by key.
    pub annotations: Vec<(String, String)>,
    pub ips: Vec<IpAddr>,
    pub host_network: bool,
    /// Regular, init and ephemeral containers, in that order.
    pub containers: Vec<ContainerInfo>,
}

/// Which annotations are kept: exact keys, or prefixes written `prefix*`.
#[derive(Clone, Debug, Default)]
pub struct AnnotationFilter {
    exact: Vec<String>,
    prefixes: Vec<String>,
}

impl AnnotationFilter {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        let mut f = Self::default();
        for p in patterns {
            let p = p.as_ref().trim();
            if p.is_empty() {
                continue;
            }
            match p.strip_suffix('*') {
                Some(prefix) => f.prefixes.push(prefix.to_owned()),
                None => f.exact.push(p.to_owned()),
            }
        }
        f
    }

    pub fn allows(&self, key: &str) -> bool {
        self.exact.iter().any(|k| k == key) || self.prefixes.iter().any(|p| key.starts_with(p))
    }
}

/// The id in a `containerID` of a container status: `containerd://<id>` → `<id>`.
pub fn strip_runtime_scheme(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, rest)| rest)
}

/// The owner worth showing: the controller owner reference, with a
/// ReplicaSet named `<deployment>-<pod-template-hash>` taken to be the
/// Deployment's (the name the Deployment controller gives it), without
/// asking the API server.
pub fn resolve_owner(pod: &Pod) -> Option<(String, String)> {
    let refs = pod.metadata.owner_references.as_deref()?;
    let owner = refs
        .iter()
        .find(|r| r.controller == Some(true))
        .or(refs.first())?;
    if owner.kind == "ReplicaSet"
        && let Some(hash) = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("pod-template-hash"))
        && let Some(deployment) = owner.name.strip_suffix(&format!("-{hash}"))
        && !deployment.is_empty()
    {
        return Some(("Deployment".to_owned(), deployment.to_owned()));
    }
    Some((owner.kind.clone(), owner.name.clone()))
}

impl PodInfo {
    /// `None` for an object without a uid (never served by a real API server).
    pub fn from_pod(pod: &Pod, annotations: &AnnotationFilter) -> Option<Self> {
        let meta = &pod.metadata;
        let uid = meta.uid.clone()?;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();
        let mut labels: Vec<(String, String)> = meta
            .labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        let mut kept: Vec<(String, String)> = meta
            .annotations
            .iter()
            .flatten()
            .filter(|(k, _)| annotations.allows(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        kept.sort();

        let mut ips: Vec<IpAddr> = Vec::new();
        if let Some(s) = status {
            for ip in s.pod_ips.iter().flatten().map(|i| i.ip.as_str()) {
                if let Ok(ip) = ip.parse()
                    && !ips.contains(&ip)
                {
                    ips.push(ip);
                }
            }
            if let Some(ip) = s.pod_ip.as_deref().and_then(|i| i.parse().ok())
                && !ips.contains(&ip)
            {
                ips.push(ip);
            }
        }

        // Spec images by container name; statuses carry the ids.
        let spec_image = |name: &str| -> Option<String> {
            let spec = spec?;
            spec.containers
                .iter()
                .map(|c| (&c.name, &c.image))
                .chain(
                    spec.init_containers
                        .iter()
                        .flatten()
                        .map(|c| (&c.name, &c.image)),
                )
                .chain(
                    spec.ephemeral_containers
                        .iter()
                        .flatten()
                        .map(|c| (&c.name, &c.image)),
                )
                .find(|(n, _)| n.as_str() == name)
                .and_then(|(_, i)| i.clone())
        };
        let mut containers: Vec<ContainerInfo> = Vec::new();
        let none: &[ContainerStatus] = &[];
        let all = status.into_iter().flat_map(|s| {
            s.container_statuses
                .as_deref()
                .unwrap_or(none)
                .iter()
                .chain(s.init_container_statuses.as_deref().unwrap_or(none))
                .chain(s.ephemeral_container_statuses.as_deref().unwrap_or(none))
        });
        for cs in all {
            containers.push(ContainerInfo {
                name: cs.name.clone(),
                id: cs
                    .container_id
                    .as_deref()
                    .map(strip_runtime_scheme)
                    .unwrap_or_default()
                    .to_owned(),
                image: spec_image(&cs.name).unwrap_or_else(|| cs.image.clone()),
            });
        }
        // Containers without a status yet are still named, without an id.
        if let Some(spec) = spec {
            for c in &spec.containers {
                if !containers.iter().any(|k| k.name == c.name) {
                    containers.push(ContainerInfo {
                        name: c.name.clone(),
                        id: String::new(),
                        image: c.image.clone().unwrap_or_default(),
                    });
                }
            }
        }

        Some(PodInfo {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid,
            node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            owner: resolve_owner(pod),
            labels,
            annotations: kept,
            ips,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            containers,
        })
    }

    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.labels[i].1.as_str())
    }
}

#[derive(Default)]
struct State {
    pods: HashMap<String, Arc<PodInfo>>,
    /// Container id → (pod, index into its containers).
    containers: HashMap<String, (Arc<PodInfo>, usize)>,
    /// Pod IP → pod (host-network pods share the node's IPs and are left out).
    ips: HashMap<IpAddr, Arc<PodInfo>>,
}

impl State {
    fn insert(&mut self, pod: Arc<PodInfo>) {
        self.remove(&pod.uid);
        for (i, c) in pod.containers.iter().enumerate() {
            if !c.id.is_empty() {
                self.containers.insert(c.id.clone(), (pod.clone(), i));
            }
        }
        if !pod.host_network {
            for ip in &pod.ips {
                self.ips.insert(*ip, pod.clone());
            }
        }
        self.pods.insert(pod.uid.clone(), pod);
    }

    fn remove(&mut self, uid: &str) -> Option<Arc<PodInfo>> {
        let old = self.pods.remove(uid)?;
        for c in &old.containers {
            if self
                .containers
                .get(&c.id)
                .is_some_and(|(p, _)| p.uid == uid)
            {
                self.containers.remove(&c.id);
            }
        }
        for ip in &old.ips {
            if self.ips.get(ip).is_some_and(|p| p.uid == uid) {
                self.ips.remove(ip);
            }
        }
        Some(old)
    }
}

/// The pod cache.
#[derive(Default)]
pub struct PodStore {
    state: RwLock<State>,
}

/// Counts after a change, for the metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    pub pods: usize,
    pub containers: usize,
}

impl PodStore {
    /// Replace everything with a complete list (after a LIST): pods that
    /// are not in it are gone.
    pub fn replace_all(&self, pods: Vec<PodInfo>) -> Counts {
        let mut fresh = State::default();
        for p in pods {
            fresh.insert(Arc::new(p));
        }
        let mut state = self.write();
        *state = fresh;
        counts(&state)
    }

    pub fn apply(&self, pod: PodInfo) -> Counts {
        let mut state = self.write();
        state.insert(Arc::new(pod));
        counts(&state)
    }

    pub fn delete(&self, uid: &str) -> Counts {
        let mut state = self.write();
        state.remove(uid);
        counts(&state)
    }

    pub fn by_uid(&self, uid: &str) -> Option<Arc<PodInfo>> {
        self.read().pods.get(uid).cloned()
    }

    /// The pod and the index of the container with this id (scheme optional).
    pub fn by_container_id(&self, id: &str) -> Option<(Arc<PodInfo>, usize)> {
        self.read()
            .containers
            .get(strip_runtime_scheme(id))
            .cloned()
    }

    pub fn by_ip(&self, ip: &IpAddr) -> Option<Arc<PodInfo>> {
        self.read().ips.get(ip).cloned()
    }

    /// Every pod, sorted by namespace and name (for tests and diagnostics).
    pub fn pods(&self) -> Vec<Arc<PodInfo>> {
        let mut v: Vec<_> = self.read().pods.values().cloned().collect();
        v.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        v
    }

    pub fn counts(&self) -> Counts {
        counts(&self.read())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }
}

fn counts(s: &State) -> Counts {
    Counts {
        pods: s.pods.len(),
        containers: s.containers.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> Pod {
        serde_json::from_value(json).unwrap()
    }

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn web() -> Pod {
        pod(serde_json::json!({
            "metadata": {
                "name": "web-7d9c6b8f5-x2k4p", "namespace": "shop", "uid": "u1",
                "labels": {"app": "web", "pod-template-hash": "7d9c6b8f5"},
                "annotations": {"team": "a", "example.com/owner": "b", "kubectl.kubernetes.io/last-applied-configuration": "{}"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9c6b8f5", "uid": "r1", "controller": true}]
            },
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "nginx:1.27"}, {"name": "sidecar", "image": "envoy"}]},
            "status": {
                "podIP": "10.0.0.7", "podIPs": [{"ip": "10.0.0.7"}, {"ip": "fd00::7"}],
                "containerStatuses": [{"name": "app", "containerID": format!("containerd://{ID}"), "image": "docker.io/library/nginx:1.27",
                    "imageID": "", "ready": true, "restartCount": 0}]
            }
        }))
    }

    #[test]
    fn pod_info_from_a_pod() {
        let info =
            PodInfo::from_pod(&web(), &AnnotationFilter::new(&["team", "example.com/*"])).unwrap();
        assert_eq!(info.owner, Some(("Deployment".into(), "web".into())));
        assert_eq!(info.label("app"), Some("web"));
        assert_eq!(info.label("nope"), None);
        assert_eq!(
            info.annotations,
            vec![
                ("example.com/owner".into(), "b".into()),
                ("team".into(), "a".into())
            ]
        );
        assert_eq!(
            info.ips,
            vec![
                "10.0.0.7".parse::<IpAddr>().unwrap(),
                "fd00::7".parse().unwrap()
            ]
        );
        assert_eq!(
            info.containers[0],
            ContainerInfo {
                name: "app".into(),
                id: ID.into(),
                image: "nginx:1.27".into()
            }
        );
        assert_eq!(info.containers[1].id, "");
        assert_eq!(info.node, "n1");
    }

    #[test]
    fn owners() {
        let mut p = web();
        // A ReplicaSet not named after the template hash stays a ReplicaSet.
        p.metadata.owner_references.as_mut().unwrap()[0].name = "standalone".into();
        assert_eq!(
            resolve_owner(&p),
            Some(("ReplicaSet".into(), "standalone".into()))
        );
        p.metadata.owner_references.as_mut().unwrap()[0].kind = "DaemonSet".into();
        assert_eq!(
            resolve_owner(&p),
            Some(("DaemonSet".into(), "standalone".into()))
        );
        p.metadata.owner_references = None;
        assert_eq!(resolve_owner(&p), None);
    }

    #[test]
    fn indexes_follow_updates_and_deletes() {
        let store = PodStore::default();
        let info = PodInfo::from_pod(&web(), &AnnotationFilter::default()).unwrap();
        assert_eq!(
            store.apply(info.clone()),
            Counts {
                pods: 1,
                containers: 1
            }
        );
        assert_eq!(
            store
                .by_container_id(&format!("containerd://{ID}"))
                .unwrap()
                .0
                .uid,
            "u1"
        );
        assert!(store.by_ip(&"fd00::7".parse().unwrap()).is_some());
        // The container restarts with a new id: the old one is forgotten.
        let mut next = info.clone();
        next.containers[0].id = "f".repeat(64);
        store.apply(next);
        assert!(store.by_container_id(ID).is_none());
        assert!(store.by_container_id(&"f".repeat(64)).is_some());
        assert_eq!(
            store.delete("u1"),
            Counts {
                pods: 0,
                containers: 0
            }
        );
        assert!(store.by_ip(&"10.0.0.7".parse().unwrap()).is_none());
        // Host-network pods do not claim the node's IPs.
        let mut host = info;
        host.host_network = true;
        store.apply(host);
        assert!(store.by_ip(&"10.0.0.7".parse().unwrap()).is_none());
        assert_eq!(
            store.replace_all(Vec::new()),
            Counts {
                pods: 0,
                containers: 0
            }
        );
    }
}
