//! {{name}}: counts process executions by command name.
//!
//! The BPF program (`bpf/{{crate}}.bpf.c`) submits one `struct event` per
//! exec into the ring buffer `events`; this component counts them in
//! `{{crate}}__execs_total{comm}`, skipping the command names listed in the
//! config key `ignore` (comma-separated).

use std::collections::HashSet;

use conductor_sdk::prelude::*;

record! {
    /// `struct event` of the BPF program. `conductor build` and the host
    /// check the two layouts against each other (the C one from the
    /// object's BTF): change both together.
    struct Event { cgroup_id: u64, pid: u32, _pad: u32, comm: [u8; 16] }
}

struct Execs {
    execs: Counter,
    ignore: HashSet<String>,
}

impl Plugin for Execs {
    fn init() -> Result<Self> {
        let ignore: HashSet<String> = config::list("ignore").into_iter().collect();
        info!("counting execs, ignoring {} command name(s)", ignore.len());
        Ok(Execs {
            execs: Counter::declare("execs", "Processes executed, by command name.", &["comm"])?,
            ignore,
        })
    }

    // One call per batch of events, never one per event.
    fn on_events(&mut self, batch: &EventBatch) -> Result<()> {
        for event in batch.records::<Event>()? {
            let comm = c_str(&event.comm);
            if !self.ignore.contains(comm.as_ref()) {
                self.execs.inc(&[&comm])?;
            }
        }
        Ok(())
    }
}

conductor_sdk::export_plugin!(Execs);
