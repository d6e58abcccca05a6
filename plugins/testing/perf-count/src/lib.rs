//! Benchmark component (`benches/exporter.rs`): the work of the built-in
//! ebpf_exporter's `perf_event_array` counter, as a plugin. Each event of
//! `exporter_perf_getppid.bpf.c` starts with a cgroup id (8 bytes, the
//! kernel pads the sample to 12); every event adds one to
//! `events{cgroup}`, the id in decimal as the `uint` decoder writes it.
//! Events are counted per batch by id and reach the metrics in `collect`,
//! as the exporter decodes a key once per batch and is read at scrape time.
//! `lost` counts events the host reported lost.

use std::collections::HashMap;

use conductor_sdk::prelude::*;

struct PerfCount {
    events: Counter,
    lost: Counter,
    /// Events per cgroup id not yet published, and lost ones.
    pending: HashMap<u64, u64>,
    dropped: u64,
}

impl Plugin for PerfCount {
    fn init() -> Result<Self> {
        Ok(PerfCount {
            events: Counter::declare("events", "Perf events, by cgroup id.", &["cgroup"])?,
            lost: Counter::declare("lost", "Events reported lost.", &[])?,
            pending: HashMap::new(),
            dropped: 0,
        })
    }

    fn on_events(&mut self, batch: &EventBatch) -> Result<()> {
        for record in batch.iter() {
            let id = record
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_ne_bytes)
                .ok_or("event shorter than its 8-byte cgroup id")?;
            *self.pending.entry(id).or_default() += 1;
        }
        self.dropped += batch.lost();
        Ok(())
    }

    fn collect(&mut self) -> Result<()> {
        for (id, n) in self.pending.drain() {
            self.events.add(&[&id.to_string()], n)?;
        }
        self.lost.add(&[], std::mem::take(&mut self.dropped))?;
        Ok(())
    }
}

conductor_sdk::export_plugin!(PerfCount);
