//! File opens and their failures by pod and path prefix.
//!
//! The BPF programs (`bpf/opensnoop.bpf.c`) submit one `struct open_event`
//! per `openat()` (path as passed, result) into the ring buffer `events`.
//! Exported metrics (docs/src/catalog/opensnoop.md):
//!
//! - `opens{namespace, pod, container, prefix, result}`: opens whose path
//!   starts with one of the configured prefixes (the longest that matches
//!   is the `prefix` label), or every open with `prefix=""` when none is
//!   configured; `result` is `ok` or the error's name (`ENOENT`, `EACCES`,
//!   ...);
//! - `events_lost`: opens dropped before they were counted.
//!
//! Config: `prefixes`, a comma-separated list of path prefixes (absolute
//! paths as the program passed them; relative paths match none).

use std::collections::HashMap;

use conductor_sdk::events::c_str;
use conductor_sdk::metrics::MetricError;
use conductor_sdk::prelude::*;

/// `struct open_event` of the BPF program.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
#[bytemuck(crate = "conductor_sdk::bytemuck")]
struct OpenEvent {
    cgroup_id: u64,
    ret: i32,
    pid: u32,
    path: [u8; 256],
}

const _: () = assert!(
    size_of::<OpenEvent>() == 272,
    "struct open_event is 272 bytes"
);

/// The usual errno names of open(2) on Linux; others as `E<number>`.
fn result_label(ret: i32) -> String {
    if ret >= 0 {
        return "ok".into();
    }
    let name = match -ret {
        1 => "EPERM",
        2 => "ENOENT",
        4 => "EINTR",
        6 => "ENXIO",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        19 => "ENODEV",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        23 => "ENFILE",
        24 => "EMFILE",
        26 => "ETXTBSY",
        27 => "EFBIG",
        28 => "ENOSPC",
        30 => "EROFS",
        36 => "ENAMETOOLONG",
        40 => "ELOOP",
        75 => "EOVERFLOW",
        95 => "EOPNOTSUPP",
        110 => "ETIMEDOUT",
        122 => "EDQUOT",
        n => return format!("E{n}"),
    };
    name.into()
}

/// namespace, pod and container label values for a cgroup.
fn workload_labels(cgroup_id: u64) -> [String; 3] {
    // Resolved through the SDK's per-call cache: one host call per cgroup
    // per call into the plugin.
    Workload::of_cgroup(cgroup_id).labels().map(String::from)
}

struct OpenSnoop {
    opens: Counter,
    lost: Counter,
    /// Longest first, so the first match is the longest.
    prefixes: Vec<String>,
    saturated: bool,
    /// Workload labels by cgroup id, for the current batch only.
    workloads: HashMap<u64, [String; 3]>,
}

impl Plugin for OpenSnoop {
    fn init() -> Result<Self> {
        let mut prefixes = config::list("prefixes");
        prefixes.retain(|p| !p.is_empty());
        prefixes.sort_by_key(|p| std::cmp::Reverse(p.len()));
        let plugin = OpenSnoop {
            opens: Counter::declare(
                "opens",
                "Files opened (openat), by workload, configured path prefix and result (ok or the errno name).",
                &["namespace", "pod", "container", "prefix", "result"],
            )?,
            lost: Counter::declare("events_lost", "Open events dropped before counting.", &[])?,
            prefixes,
            saturated: false,
            workloads: HashMap::new(),
        };
        plugin.lost.add(&[], 0)?;
        if plugin.prefixes.is_empty() {
            info!("counting every open (no prefixes configured)");
        } else {
            info!("counting opens under {}", plugin.prefixes.join(", "));
        }
        Ok(plugin)
    }

    fn on_events(&mut self, batch: &EventBatch) -> Result<()> {
        if batch.lost() > 0 {
            self.lost.add(&[], batch.lost())?;
        }
        self.workloads.clear();
        for event in batch.decode::<OpenEvent>() {
            let event = event?;
            let path = c_str(&event.path);
            let prefix = if self.prefixes.is_empty() {
                ""
            } else {
                match self.prefixes.iter().find(|p| path.starts_with(p.as_str())) {
                    Some(p) => p.as_str(),
                    None => continue,
                }
            };
            let [ns, pod, container] = self
                .workloads
                .entry(event.cgroup_id)
                .or_insert_with(|| workload_labels(event.cgroup_id));
            let result = result_label(event.ret);
            match self.opens.inc(&[
                ns.as_str(),
                pod.as_str(),
                container.as_str(),
                prefix,
                &result,
            ]) {
                Err(e) if matches!(e.metric_error(), Some(MetricError::CardinalityLimit(_))) => {
                    if !self.saturated {
                        self.saturated = true;
                        warn!("{e}; opens of new workloads are no longer counted");
                    }
                }
                result => result?,
            }
        }
        Ok(())
    }
}

conductor_sdk::export_plugin!(OpenSnoop);
