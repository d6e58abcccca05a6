//! Counts process executions by command name.
//!
//! The BPF program (`bpf/exec_counter.bpf.c`) submits one `struct exec_event`
//! per `sched_process_exec` into the ring buffer `events`. Exported metrics:
//!
//! - `execs{comm, namespace, pod, container}`: executions per command name
//!   and workload ([`Workload`]: empty labels for the node's own processes).
//!   Past the spec's series limit, new label sets are dropped (the host
//!   counts them) and known ones go on counting.
//! - `distinct_commands`: how many different command names were counted.
//!
//! Events dropped before they got here are the host's
//! `conductor_events_lost_total{plugin="exec-counter"}`.
//!
//! Config: `ignore`, a comma-separated list of command names not to count.
//!
//! `ExecEvent` mirrors `struct exec_event`; the host checks the two layouts
//! against each other (the C one from the object's BTF) when it loads the
//! plugin.

use std::collections::HashSet;

use conductor_sdk::prelude::*;

record! {
    struct ExecEvent { cgroup_id: u64, pid: u32, ppid: u32, uid: u32, _pad: u32, comm: [u8; 16] }
}

#[derive(serde::Deserialize)]
struct Config {
    #[serde(default)]
    ignore: HashSet<String>,
}

struct ExecCounter {
    ignore: HashSet<String>,
    execs: CounterFamily<([u8; 16], Workload), 4>,
    distinct: Gauge,
    seen: HashSet<[u8; 16]>,
}

impl Plugin for ExecCounter {
    fn init() -> Result<Self> {
        let Config { ignore } = config::load()?;
        info!("counting execs, ignoring {} command name(s)", ignore.len());
        let labels = ["comm", "namespace", "pod", "container"];
        let help = "Processes executed, by command name and workload.";
        Ok(ExecCounter {
            ignore,
            execs: CounterFamily::declare("execs", help, labels)?,
            distinct: Gauge::declare("distinct_commands", "Distinct command names executed.", &[])?,
            seen: HashSet::new(),
        })
    }

    fn on_events(&mut self, batch: &EventBatch) -> Result<()> {
        for e in batch.records::<ExecEvent>()? {
            if !self.ignore.contains(c_str(&e.comm).as_ref()) {
                self.execs.inc((e.comm, Workload::of_cgroup(e.cgroup_id)))?;
                self.seen.insert(e.comm);
            }
        }
        self.distinct.set(&[], self.seen.len() as f64)
    }
}

conductor_sdk::export_plugin!(ExecCounter);
