//! [`Workload`] and [`WorkloadLabels`]: the namespace, pod and container of
//! a cgroup as label values, looked up once per call into the plugin.

use std::cell::RefCell;
use std::collections::HashMap;

use crate::bindings::conductor::plugin::k8s;

/// The workload of a cgroup as three label values, `namespace`, `pod` and
/// `container`: a small `Copy` handle, cheap to hash, to put in a series
/// key (a [`CounterFamily`](crate::metrics::CounterFamily) or
/// [`SeriesCache`](crate::metrics::SeriesCache) key) and to turn into label
/// values when the series is bound.
///
/// [`of_cgroup`](Self::of_cgroup) asks the host once per distinct cgroup
/// per call into the plugin (pods come and go, so answers are not kept
/// across calls); the same label values are the same `Workload` for the life
/// of the instance. The values are:
///
/// - a process in a pod: its namespace, pod and container names (the
///   container empty while the kubelet has not reported it);
/// - a process of the node itself: all three empty;
/// - a container the host knows only from its cgroup (no cluster metadata,
///   or a pod not listed yet): namespace and pod empty, the container the
///   first 12 digits of its id.
///
/// Memory grows with the distinct workloads seen, not with events.
///
/// ```no_run
/// use conductor_sdk::k8s::Workload;
///
/// # let cgroup_id = 1;
/// let workload = Workload::of_cgroup(cgroup_id);
/// let [namespace, pod, container] = workload.labels();
/// conductor_sdk::info!("exec in {namespace}/{pod}/{container}");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload(u32);

thread_local! {
    /// Every instance's workloads (a component is single-threaded).
    static WORKLOADS: RefCell<WorkloadLabels> = RefCell::new(WorkloadLabels::new());
}

impl Workload {
    /// The workload `cgroup_id` (what `bpf_get_current_cgroup_id()`
    /// records) belongs to.
    pub fn of_cgroup(cgroup_id: u64) -> Workload {
        WORKLOADS.with_borrow_mut(|w| Workload(w.id(cgroup_id)))
    }

    /// The node's own processes: all three labels empty.
    pub fn host() -> Workload {
        WORKLOADS.with_borrow_mut(|w| Workload(w.intern([""; 3].map(String::from))))
    }

    /// `[namespace, pod, container]`.
    pub fn labels(self) -> [&'static str; 3] {
        WORKLOADS.with_borrow(|w| w.interned(self.0))
    }

    /// The namespace label value.
    pub fn namespace(self) -> &'static str {
        self.labels()[0]
    }

    /// The pod label value.
    pub fn pod(self) -> &'static str {
        self.labels()[1]
    }

    /// The container label value.
    pub fn container(self) -> &'static str {
        self.labels()[2]
    }
}

/// Workload label values by cgroup id (what `bpf_get_current_cgroup_id()`
/// records), with a cache of its own. [`Workload`] is the same with one
/// cache for the whole instance, and is simpler to use.
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
    /// By the three values joined with NULs (never in a name).
    ids: HashMap<String, u32>,
    /// Interned for the life of the instance, so that [`Workload::labels`]
    /// can lend them out: bounded by the distinct workloads seen.
    labels: Vec<[&'static str; 3]>,
}

impl WorkloadLabels {
    /// An empty cache.
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
        let id = self.intern(resolve(cgroup_id));
        self.by_cgroup.insert(cgroup_id, id);
        id
    }

    fn intern(&mut self, values: [String; 3]) -> u32 {
        let key = values.join("\0");
        if let Some(&id) = self.ids.get(&key) {
            return id;
        }
        let id = self.labels.len() as u32;
        self.labels
            .push(values.map(|v| &*Box::leak(v.into_boxed_str())));
        self.ids.insert(key, id);
        id
    }

    fn interned(&self, id: u32) -> [&'static str; 3] {
        self.labels.get(id as usize).copied().unwrap_or([""; 3])
    }

    /// The namespace, pod and container label values [`id`](Self::id)
    /// returned `id` for (all empty for a number it never returned).
    pub fn labels(&self, id: u32) -> [&str; 3] {
        self.interned(id)
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
