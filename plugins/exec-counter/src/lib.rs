//! Counts process executions by command name.
//!
//! The BPF program (`bpf/exec_counter.bpf.c`) submits one `struct exec_event`
//! per `sched_process_exec` into the ring buffer `events`. Exported metrics:
//!
//! - `execs{comm}`: executions per command name,
//! - `distinct_commands`: how many different command names were counted,
//! - `events_lost`: events the kernel or host dropped before they got here.
//!
//! Config: `ignore`, a comma-separated list of command names not to count.

use std::collections::HashSet;

use conductor_sdk::events::c_str;
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
}

impl Plugin for ExecCounter {
    fn init() -> Result<Self> {
        let ignore: HashSet<String> = config::list("ignore").into_iter().collect();
        let plugin = ExecCounter {
            execs: Counter::declare("execs", "Processes executed, by command name.", &["comm"])?,
            distinct: Gauge::declare("distinct_commands", "Distinct command names executed.", &[])?,
            lost: Counter::declare("events_lost", "Exec events dropped before counting.", &[])?,
            ignore,
            seen: HashSet::new(),
            saturated: false,
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
            let comm = c_str(&event.comm);
            if self.ignore.contains(comm.as_ref()) {
                continue;
            }
            self.count(&comm)?;
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

impl ExecCounter {
    fn count(&mut self, comm: &str) -> Result<()> {
        match self.execs.inc(&[comm]) {
            // The host dropped the sample; keep counting the known commands.
            Err(e) if matches!(e.metric_error(), Some(MetricError::CardinalityLimit(_))) => {
                if !self.saturated {
                    self.saturated = true;
                    warn!("{e}; executions of new command names are no longer counted");
                }
                Ok(())
            }
            result => result,
        }
    }
}

conductor_sdk::export_plugin!(ExecCounter);
