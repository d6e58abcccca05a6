//! Test component: counts events per source. Each record starts with a
//! `char comm[16]`; whatever follows is ignored.
//!
//! - `events{source, comm}`: records received,
//! - `lost{source}`: events reported lost,
//! - `max_batch`: the largest number of records seen in one batch.

use conductor_sdk::events::c_str;
use conductor_sdk::prelude::*;

const COMM_LEN: usize = 16;

struct EventEcho {
    events: Counter,
    lost: Counter,
    max_batch: Gauge,
    largest: usize,
}

impl Plugin for EventEcho {
    fn init() -> Result<Self> {
        Ok(EventEcho {
            events: Counter::declare("events", "Event records received.", &["source", "comm"])?,
            lost: Counter::declare("lost", "Events reported lost.", &["source"])?,
            max_batch: Gauge::declare("max_batch", "Largest batch received, in records.", &[])?,
            largest: 0,
        })
    }

    fn on_events(&mut self, batch: &EventBatch) -> Result<()> {
        for record in batch.iter() {
            // A short record is all comm.
            let comm = c_str(record.get(..COMM_LEN).unwrap_or(record));
            self.events.inc(&[batch.source(), &comm])?;
        }
        if batch.lost() > 0 {
            self.lost.add(&[batch.source()], batch.lost())?;
        }
        if batch.len() > self.largest {
            self.largest = batch.len();
            self.max_batch.set(&[], self.largest as f64)?;
        }
        Ok(())
    }
}

conductor_sdk::export_plugin!(EventEcho);
