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
//!
//! Counting an event is two hash lookups in the plugin's memory: the series
//! of (command, workload) are bound once ([`SeriesCache`]) and workloads
//! are looked up once per cgroup per batch ([`k8s::WorkloadLabels`]).

use std::collections::HashSet;

use conductor_sdk::events::c_str;
use conductor_sdk::k8s::WorkloadLabels;
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
    /// By command name (its bytes up to the NUL) and workload number.
    execs: SeriesCache<([u8; 16], u32)>,
    workloads: WorkloadLabels,
    distinct: Gauge,
    lost: Counter,
    ignore: HashSet<String>,
    seen: HashSet<[u8; 16]>,
}

const EXECS_LABELS: [&str; 4] = ["comm", "namespace", "pod", "container"];
const EXECS_HELP: &str = "Processes executed, by command name and workload (namespace, pod, container; empty for the node's own processes).";

/// `comm` with every byte after the first NUL cleared, so that one command
/// name is one key.
fn command(mut comm: [u8; 16]) -> [u8; 16] {
    if let Some(end) = comm.iter().position(|&b| b == 0) {
        comm[end..].fill(0);
    }
    comm
}

impl Plugin for ExecCounter {
    fn init() -> Result<Self> {
        let ignore: HashSet<String> = config::list("ignore").into_iter().collect();
        let plugin = ExecCounter {
            execs: SeriesCache::new(Counter::declare("execs", EXECS_HELP, &EXECS_LABELS)?),
            workloads: WorkloadLabels::new(),
            distinct: Gauge::declare("distinct_commands", "Distinct command names executed.", &[])?,
            lost: Counter::declare("events_lost", "Exec events dropped before counting.", &[])?,
            ignore,
            seen: HashSet::new(),
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
        for event in batch.decode::<ExecEvent>() {
            let event = event?;
            let comm = command(event.comm);
            if !self.ignore.is_empty() && self.ignore.contains(c_str(&comm).as_ref()) {
                continue;
            }
            let workload = self.workloads.id(event.cgroup_id);
            let workloads = &self.workloads;
            self.execs.inc((comm, workload), || {
                let [namespace, pod, container] = workloads.labels(workload);
                [c_str(&comm), namespace.into(), pod.into(), container.into()]
            })?;
            self.seen.insert(comm);
        }
        if self.seen.len() != distinct {
            self.distinct.set(&[], self.seen.len() as f64)?;
        }
        Ok(())
    }
}

conductor_sdk::export_plugin!(ExecCounter);
