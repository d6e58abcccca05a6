//! Counts OOM kills by pod, container and command.
//!
//! The BPF program (`bpf/oomkill.bpf.c`) submits one `struct oom_event` per
//! victim the OOM killer marks (`tp_btf/mark_victim`) into the ring buffer
//! `events`. Exported metrics (docs/src/catalog/oomkill.md):
//!
//! - `kills{namespace, pod, container, comm}`: processes killed, by the
//!   victim's workload (from the host's Kubernetes cache by its cgroup:
//!   empty for the node's own processes, `container` alone for a container
//!   the cache has no pod for) and command name;
//! - `events_lost`: OOM events dropped before they were counted.
//!
//! Each kill is also logged, with the victim's pid and uid.

use conductor_sdk::events::c_str;
use conductor_sdk::metrics::MetricError;
use conductor_sdk::prelude::*;

/// `struct oom_event` of the BPF program.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
#[bytemuck(crate = "conductor_sdk::bytemuck")]
struct OomEvent {
    cgroup_id: u64,
    pid: u32,
    uid: u32,
    comm: [u8; 16],
    _reserved: u64,
}

const _: () = assert!(size_of::<OomEvent>() == 40, "struct oom_event is 40 bytes");

struct OomKill {
    kills: Counter,
    lost: Counter,
    /// Whether the cardinality limit of `kills` was already reported.
    saturated: bool,
}

/// namespace, pod and container label values for a cgroup.
fn workload_labels(cgroup_id: u64) -> [String; 3] {
    // Resolved through the SDK's per-call cache: one host call per cgroup
    // per call into the plugin.
    Workload::of_cgroup(cgroup_id).labels().map(String::from)
}

impl Plugin for OomKill {
    fn init() -> Result<Self> {
        let plugin = OomKill {
            kills: Counter::declare(
                "kills",
                "Processes killed by the OOM killer, by workload (namespace, pod, container; empty for the node's own processes) and command name.",
                &["namespace", "pod", "container", "comm"],
            )?,
            lost: Counter::declare(
                "events_lost",
                "OOM kill events dropped before counting.",
                &[],
            )?,
            saturated: false,
        };
        // Export the unlabelled series from the start: "no kills" is news.
        plugin.lost.add(&[], 0)?;
        info!("counting OOM kills");
        Ok(plugin)
    }

    fn on_events(&mut self, batch: &EventBatch) -> Result<()> {
        if batch.lost() > 0 {
            self.lost.add(&[], batch.lost())?;
        }
        for event in batch.decode::<OomEvent>() {
            let event = event?;
            let comm = c_str(&event.comm);
            let [namespace, pod, container] = workload_labels(event.cgroup_id);
            info!(
                "OOM kill: pid {} ({comm}, uid {}) in {}",
                event.pid,
                event.uid,
                if pod.is_empty() {
                    if container.is_empty() {
                        "the node".to_owned()
                    } else {
                        format!("container {container}")
                    }
                } else {
                    format!("{namespace}/{pod} container {container:?}")
                }
            );
            match self
                .kills
                .inc(&[namespace.as_str(), pod.as_str(), container.as_str(), &comm])
            {
                Err(e) if matches!(e.metric_error(), Some(MetricError::CardinalityLimit(_))) => {
                    if !self.saturated {
                        self.saturated = true;
                        warn!("{e}; OOM kills of new workloads or commands are no longer counted");
                    }
                }
                result => result?,
            }
        }
        Ok(())
    }
}

conductor_sdk::export_plugin!(OomKill);
