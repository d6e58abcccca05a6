//! Test component run against `exec_counter.bpf.o`: its `ExecEvent`
//! declares `uid` as 8 bytes where the C `struct exec_event` has a 4-byte
//! `uid` then a 4-byte `_pad`, so the host must refuse to load it, naming
//! both layouts. `NotInBtf` has no C struct anywhere: the host warns that
//! it is not checked (run against an object without BTF for either record,
//! the plugin loads with two such warnings).

use conductor_sdk::prelude::*;

record! {
    struct NotInBtf { value: u64 }
}

record! {
    struct ExecEvent { cgroup_id: u64, pid: u32, ppid: u32, uid: u64, comm: [u8; 16] }
}

struct BadRecord;

impl Plugin for BadRecord {
    fn init() -> Result<Self> {
        info!("bad-record running");
        Ok(BadRecord)
    }

    fn on_events(&mut self, batch: &EventBatch) -> Result<()> {
        let events = batch.records::<ExecEvent>()?;
        debug!("{} exec events", events.len());
        Ok(())
    }
}

conductor_sdk::export_plugin!(BadRecord);
