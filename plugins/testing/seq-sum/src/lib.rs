//! Benchmark component (`benches/ringbuf.rs`): decodes every record of
//! `seq_producer.bpf.c` (word 0 is a sequence number) and adds it into a
//! sum. Counts live in the instance and reach the metrics only in
//! `collect`, so delivering one event costs one guest call and nothing else:
//!
//! - `events`: records decoded,
//! - `summed_seq`: the sum of their sequence numbers (wrapping),
//! - `lost`: events the host reported lost.

use conductor_sdk::prelude::*;

struct SeqSum {
    events: Counter,
    seq_sum: Counter,
    lost: Counter,
    /// Totals, and what `collect` already published.
    count: u64,
    sum: u64,
    dropped: u64,
    published: (u64, u64, u64),
}

impl Plugin for SeqSum {
    fn init() -> Result<Self> {
        Ok(SeqSum {
            events: Counter::declare("events", "Records decoded.", &[])?,
            seq_sum: Counter::declare("summed_seq", "Sum of the records' sequence numbers.", &[])?,
            lost: Counter::declare("lost", "Events reported lost.", &[])?,
            count: 0,
            sum: 0,
            dropped: 0,
            published: (0, 0, 0),
        })
    }

    fn on_events(&mut self, batch: &EventBatch) -> Result<()> {
        for record in batch.iter() {
            let seq = record
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_ne_bytes)
                .ok_or("record shorter than its 8-byte sequence number")?;
            self.sum = self.sum.wrapping_add(seq);
            self.count += 1;
        }
        self.dropped += batch.lost();
        Ok(())
    }

    fn collect(&mut self) -> Result<()> {
        let (count, sum, dropped) = self.published;
        self.events.add(&[], self.count - count)?;
        self.seq_sum.add(&[], self.sum.wrapping_sub(sum))?;
        self.lost.add(&[], self.dropped - dropped)?;
        self.published = (self.count, self.sum, self.dropped);
        Ok(())
    }
}

conductor_sdk::export_plugin!(SeqSum);
