//! Per-syscall latency histograms by pod.
//!
//! The BPF programs (`bpf/syscall_latency.bpf.c`) time every system call
//! whose number the plugin marked in the map `allowed` and submit one
//! `struct syscall_event` per call into the ring buffer `events`. Exported
//! metrics (docs/src/catalog/syscall-latency.md):
//!
//! - `latency_seconds{namespace, pod, container, syscall}`: a histogram of
//!   the time from entry to exit of each allowed system call (its `_count`
//!   is the number of calls);
//! - `events_lost`: calls dropped before they were counted.
//!
//! Config: `syscalls`, a comma-separated allow-list of system call names
//! (x86_64 names, as in `man 2 syscalls`); an unknown name stops the plugin
//! at start with an error naming it.

mod table;

use std::collections::HashMap;

use conductor_sdk::metrics::MetricError;
use conductor_sdk::prelude::*;

/// `struct syscall_event` of the BPF program.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
#[bytemuck(crate = "conductor_sdk::bytemuck")]
struct SyscallEvent {
    cgroup_id: u64,
    duration_ns: u64,
    nr: u32,
    _pad: u32,
}

const _: () = assert!(
    size_of::<SyscallEvent>() == 24,
    "struct syscall_event is 24 bytes"
);

/// Entries of the BPF map `allowed`: numbers at or above are never timed.
const MAX_SYSCALLS: u32 = 1024;

/// Latency buckets, in seconds: 1 µs to about 1 s, doubling.
fn buckets() -> Vec<f64> {
    (0..21).map(|i| 1e-6 * f64::from(1u32 << i)).collect()
}

/// namespace, pod and container label values for a cgroup (through the
/// SDK's per-call cache).
fn workload_labels(cgroup_id: u64) -> [String; 3] {
    Workload::of_cgroup(cgroup_id).labels().map(String::from)
}

/// The numbers of the allow-list's names, or an error naming the unknown.
fn resolve(names: &[String]) -> Result<Vec<(String, u32)>> {
    let mut unknown = Vec::new();
    let mut found = Vec::new();
    for name in names {
        match table::X86_64.iter().find(|(n, _)| n == name) {
            Some(&(n, nr)) if nr < MAX_SYSCALLS => found.push((n.to_owned(), nr)),
            _ => unknown.push(name.as_str()),
        }
    }
    if !unknown.is_empty() {
        return Err(Error::msg(format!(
            "config key \"syscalls\": unknown system call name(s) {}: use x86_64 names as in `man 2 syscalls` (e.g. read, openat, connect)",
            unknown.join(", ")
        )));
    }
    Ok(found)
}

struct SyscallLatency {
    latency: Histogram,
    lost: Counter,
    /// Name by number, for the allowed calls.
    names: HashMap<u32, String>,
    saturated: bool,
    /// Workload labels by cgroup id, for the current batch only.
    workloads: HashMap<u64, [String; 3]>,
}

impl Plugin for SyscallLatency {
    fn init() -> Result<Self> {
        let wanted = config::list("syscalls");
        if wanted.is_empty() {
            return Err(Error::msg(
                "config key \"syscalls\" is empty: list the system calls to time, e.g. \"read,write,openat,connect\"",
            ));
        }
        let calls = resolve(&wanted)?;
        // Every entry is written: a restart with another allow-list (the
        // BPF object and its maps outlive the instance) clears the old one.
        let allowed: TypedMap<u32, u32> = TypedMap::open("allowed")?;
        for nr in 0..MAX_SYSCALLS {
            let on = calls.iter().any(|&(_, n)| n == nr);
            allowed.insert(&nr, &u32::from(on))?;
        }
        let plugin = SyscallLatency {
            latency: Histogram::declare(
                "latency_seconds",
                "Time from entry to exit of the allowed system calls, by workload and system call.",
                &["namespace", "pod", "container", "syscall"],
                &buckets(),
            )?,
            lost: Counter::declare("events_lost", "System calls dropped before timing.", &[])?,
            names: calls.iter().map(|(n, nr)| (*nr, n.clone())).collect(),
            saturated: false,
            workloads: HashMap::new(),
        };
        plugin.lost.add(&[], 0)?;
        info!("timing {}", wanted.join(", "));
        Ok(plugin)
    }

    fn on_events(&mut self, batch: &EventBatch) -> Result<()> {
        if batch.lost() > 0 {
            self.lost.add(&[], batch.lost())?;
        }
        self.workloads.clear();
        for event in batch.decode::<SyscallEvent>() {
            let event = event?;
            let Some(name) = self.names.get(&event.nr) else {
                // Recorded before this instance rewrote `allowed`.
                continue;
            };
            let [ns, pod, container] = self
                .workloads
                .entry(event.cgroup_id)
                .or_insert_with(|| workload_labels(event.cgroup_id));
            let seconds = event.duration_ns as f64 * 1e-9;
            match self.latency.observe(
                &[ns.as_str(), pod.as_str(), container.as_str(), name],
                seconds,
            ) {
                Err(e) if matches!(e.metric_error(), Some(MetricError::CardinalityLimit(_))) => {
                    if !self.saturated {
                        self.saturated = true;
                        warn!("{e}; system calls of new workloads are no longer timed");
                    }
                }
                result => result?,
            }
        }
        Ok(())
    }
}

conductor_sdk::export_plugin!(SyscallLatency);
