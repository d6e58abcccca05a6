//! [`WorkloadLabels`]: the namespace, pod and container of a cgroup as
//! label values, looked up once per call into the plugin.

use std::collections::HashMap;

use crate::bindings::conductor::plugin::k8s;

/// Workload label values by cgroup id (what `bpf_get_current_cgroup_id()`
/// records), with a cache of its own.
///
/// [`id`](Self::id) asks the host once per distinct cgroup per call into the
/// plugin (pods come and go, so answers are not kept across calls) and
/// returns a small number standing for the workload's label values, the same
/// number for the same values for the life of the instance: a key for a
/// [`SeriesCache`](crate::metrics::SeriesCache) that costs no string hashing.
/// [`labels`](Self::labels) gives the values back:
///
/// - a process in a pod: its namespace, pod and container names (the
///   container empty while the kubelet has not reported it);
/// - a process of the node itself: all three empty;
/// - a container the host knows only from its cgroup (no cluster metadata,
///   or a pod not listed yet): namespace and pod empty, the container the
///   first 12 digits of its id.
///
/// Memory grows with the distinct workloads seen, not with events.
#[derive(Debug, Default)]
pub struct WorkloadLabels {
    /// The call into the plugin `by_cgroup` belongs to.
    call: u64,
    by_cgroup: HashMap<u64, u32>,
    ids: HashMap<[String; 3], u32>,
    labels: Vec<[String; 3]>,
}

impl WorkloadLabels {
    pub fn new() -> Self {
        Self::default()
    }

    /// The number standing for the workload labels of `cgroup_id`.
    pub fn id(&mut self, cgroup_id: u64) -> u32 {
        let call = crate::plugin::call_number();
        if call != self.call {
            self.call = call;
            self.by_cgroup.clear();
        }
        if let Some(&id) = self.by_cgroup.get(&cgroup_id) {
            return id;
        }
        let values = resolve(cgroup_id);
        let id = match self.ids.get(&values) {
            Some(&id) => id,
            None => {
                let id = self.labels.len() as u32;
                self.labels.push(values.clone());
                self.ids.insert(values, id);
                id
            }
        };
        self.by_cgroup.insert(cgroup_id, id);
        id
    }

    /// The namespace, pod and container label values [`id`](Self::id)
    /// returned `id` for (all empty for a number it never returned).
    pub fn labels(&self, id: u32) -> [&str; 3] {
        match self.labels.get(id as usize) {
            Some([ns, pod, container]) => [ns, pod, container],
            None => ["", "", ""],
        }
    }

    /// [`id`](Self::id) and [`labels`](Self::labels) in one.
    pub fn of(&mut self, cgroup_id: u64) -> [&str; 3] {
        let id = self.id(cgroup_id);
        self.labels(id)
    }
}

fn resolve(cgroup_id: u64) -> [String; 3] {
    match k8s::by_cgroup_id(cgroup_id) {
        k8s::Identity::Workload(w) => [
            w.pod.namespace,
            w.pod.name,
            w.container.map(|c| c.name).unwrap_or_default(),
        ],
        k8s::Identity::Host => Default::default(),
        k8s::Identity::Unknown => {
            let short = k8s::cgroup_container_id(cgroup_id)
                .map(|id| id.chars().take(12).collect())
                .unwrap_or_default();
            [String::new(), String::new(), short]
        }
    }
}
