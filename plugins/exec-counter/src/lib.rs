//! Counts process executions by command name.
//!
//! The BPF program (`bpf/exec_counter.bpf.c`) submits one `struct exec_event`
//! per `sched_process_exec` into the ring buffer `events`. Exported metrics:
//!
//! - `execs{comm, namespace, pod, container}`: executions per command name
//!   and workload. The workload comes from the host's Kubernetes cache, by
//!   the cgroup the BPF program records: a process in a pod has its
//!   namespace, pod and container names; a process of the node itself has
//!   all three empty; a container the host knows only from its cgroup (no
//!   cluster metadata: local mode, or a pod not listed yet) has empty
//!   namespace and pod and `container` set to the first 12 digits of its id.
//! - `distinct_commands`: how many different command names were counted,
//! - `events_lost`: events the kernel or host dropped before they got here.
//!
//! Config: `ignore`, a comma-separated list of command names not to count.

use std::collections::{HashMap, HashSet};

use conductor_sdk::events::c_str;
use conductor_sdk::k8s;
use conductor_sdk::metrics::MetricError;
use conductor_sdk::prelude::*;

/// `struct exec_event` of the BPF program.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
#[bytemuck(crate = "conductor_sdk::bytemuck")]
struct ExecEvent {
    cgroup_id: u64,
    pid: u32,
    ppid: u32,
    uid: u32,
    _pad: u32,
    comm: [u8; 16],
}

const _: () = assert!(
    size_of::<ExecEvent>() == 40,
    "struct exec_event is 40 bytes"
);

struct ExecCounter {
    execs: Counter,
    distinct: Gauge,
    lost: Counter,
    ignore: HashSet<String>,
    seen: HashSet<String>,
    /// Whether the cardinality limit of `execs` was already reported.
    saturated: bool,
    /// Workload labels by cgroup id, for the current batch only (pods come
    /// and go): one host lookup per distinct cgroup per batch.
    workloads: HashMap<u64, [String; 3]>,
}

const EXECS_LABELS: [&str; 4] = ["comm", "namespace", "pod", "container"];
const EXECS_HELP: &str = "Processes executed, by command name and workload (namespace, pod, container; empty for the node's own processes).";

/// namespace, pod and container label values for a cgroup.
fn workload_labels(cgroup_id: u64) -> [String; 3] {
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

impl Plugin for ExecCounter {
    fn init() -> Result<Self> {
        let ignore: HashSet<String> = config::list("ignore").into_iter().collect();
        let plugin = ExecCounter {
            execs: Counter::declare("execs", EXECS_HELP, &EXECS_LABELS)?,
            distinct: Gauge::declare("distinct_commands", "Distinct command names executed.", &[])?,
            lost: Counter::declare("events_lost", "Exec events dropped before counting.", &[])?,
            ignore,
            seen: HashSet::new(),
            saturated: false,
            workloads: HashMap::new(),
        };
        // Export the unlabelled series from the start rather than on first change.
        plugin.distinct.set(&[], 0.0)?;
        plugin.lost.add(&[], 0)?;
        info!(
            "counting execs, ignoring {} command name(s)",
            plugin.ignore.len()
        );
        Ok(plugin)
    }

    fn on_events(&mut self, batch: &EventBatch) -> Result<()> {
        if batch.lost() > 0 {
            self.lost.add(&[], batch.lost())?;
        }
        let distinct = self.seen.len();
        self.workloads.clear();
        for event in batch.decode::<ExecEvent>() {
            let event = event?;
            let comm = c_str(&event.comm);
            if self.ignore.contains(comm.as_ref()) {
                continue;
            }
            let [namespace, pod, container] = self
                .workloads
                .entry(event.cgroup_id)
                .or_insert_with(|| workload_labels(event.cgroup_id));
            match self
                .execs
                .inc(&[&comm, namespace.as_str(), pod.as_str(), container.as_str()])
            {
                // The host dropped the sample; keep counting the known series.
                Err(e) if matches!(e.metric_error(), Some(MetricError::CardinalityLimit(_))) => {
                    if !self.saturated {
                        self.saturated = true;
                        warn!(
                            "{e}; executions of new command names or workloads are no longer counted"
                        );
                    }
                }
                result => result?,
            }
            if !self.seen.contains(comm.as_ref()) {
                self.seen.insert(comm.into_owned());
            }
        }
        if self.seen.len() != distinct {
            self.distinct.set(&[], self.seen.len() as f64)?;
        }
        Ok(())
    }
}

conductor_sdk::export_plugin!(ExecCounter);
