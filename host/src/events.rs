//! Event sources: ring buffers and perf event arrays drained into batches.
//!
//! A batch is one flat byte buffer plus record offsets, reused from call to
//! call, so the steady state allocates nothing: each record is copied once
//! out of the kernel's ring into the batch, and once more when the batch is
//! lowered into the plugin's memory by a single guest call.
//!
//! Both kinds of source release kernel buffer space once per batch, not per
//! record: ring buffers through [`RingReader`], perf buffers through aya's
//! `try_fold`, which publishes `data_tail` when the fold ends.
//!
//! Drops are counted, never silent: perf event arrays report lost samples
//! themselves; for ring buffers the BPF side counts failed reservations in a
//! per-CPU `<ring>_lost` map (see `plugins/include/conductor.h`), which the
//! host sums.

use std::io;
use std::ops::ControlFlow;
use std::os::fd::{AsRawFd, RawFd};

use aya::maps::perf::{PerfEvent, PerfEventArrayBuffer};
use aya::maps::{Map, MapData, PerfEventArray};

use crate::maps::KernelMap;
use crate::ringbuf::{Drained, RingReader};
use crate::runtime::EventBatch;

/// Upper bound on the bytes of one batch, whatever `maxBatch` says, so one
/// call cannot ask the plugin for unbounded memory.
pub const MAX_BATCH_BYTES: usize = 4 << 20;

enum Kind {
    Ring(RingReader),
    Perf {
        buffers: Vec<PerfEventArrayBuffer<MapData>>,
        /// Buffer to start the next drain at, so no CPU starves the others.
        next: usize,
    },
}

pub struct EventSource {
    name: String,
    kind: Kind,
    max_batch: usize,
    lost_map: Option<KernelMap>,
    /// Last value read from `lost_map` (it only grows).
    lost_seen: u64,
    /// Kernel drops observed by the last drain (perf) not yet collected.
    lost_pending: u64,
}

impl EventSource {
    /// A ring buffer; `lost_map` is its `<name>_lost` companion, if the BPF
    /// program declares one.
    pub fn ring(
        name: &str,
        map: Map,
        lost_map: Option<KernelMap>,
        max_batch: u32,
    ) -> io::Result<Self> {
        let ring = RingReader::new(crate::bpf::into_map_data(map))?;
        let lost_seen = match &lost_map {
            Some(m) => m.sum_u64_at_zero().map_err(io::Error::other)?,
            None => 0,
        };
        Ok(Self {
            name: name.to_owned(),
            kind: Kind::Ring(ring),
            max_batch: max_batch as usize,
            lost_map,
            lost_seen,
            lost_pending: 0,
        })
    }

    /// A perf event array with a buffer of `pages` pages on every online CPU.
    pub fn perf(name: &str, map: Map, pages: u32, max_batch: u32) -> io::Result<Self> {
        let mut array = PerfEventArray::try_from(map).map_err(io::Error::other)?;
        let cpus = aya::util::online_cpus()
            .map_err(|(what, e)| io::Error::new(e.kind(), format!("{what}: {e}")))?;
        let buffers = cpus
            .into_iter()
            .map(|cpu| array.open(cpu, Some(pages as usize)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io::Error::other)?;
        Ok(Self {
            name: name.to_owned(),
            kind: Kind::Perf { buffers, next: 0 },
            max_batch: max_batch as usize,
            lost_map: None,
            lost_seen: 0,
            lost_pending: 0,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether drops in the kernel can be counted for this source.
    pub fn counts_kernel_drops(&self) -> bool {
        matches!(self.kind, Kind::Perf { .. }) || self.lost_map.is_some()
    }

    /// Descriptors that become readable when events arrive.
    pub fn fds(&self) -> Vec<RawFd> {
        match &self.kind {
            Kind::Ring(r) => vec![r.raw_fd()],
            Kind::Perf { buffers, .. } => buffers.iter().map(AsRawFd::as_raw_fd).collect(),
        }
    }

    /// Replace `batch`'s records with up to `max_batch` new events. Returns
    /// how many, and whether more may be ready (the batch filled up).
    pub fn fill(&mut self, batch: &mut EventBatch) -> (usize, bool) {
        batch.data.clear();
        batch.offsets.clear();
        batch.lost = 0;
        let max = self.max_batch;
        let push = |batch: &mut EventBatch, head: &[u8], tail: &[u8]| {
            batch.offsets.push(batch.data.len() as u32);
            batch.data.extend_from_slice(head);
            batch.data.extend_from_slice(tail);
            batch.offsets.len() >= max || batch.data.len() >= MAX_BATCH_BYTES
        };
        let more = match &mut self.kind {
            Kind::Ring(ring) => ring.drain(|record| !push(batch, record, &[])) == Drained::Stopped,
            Kind::Perf { buffers, next } => {
                let n = buffers.len();
                let mut lost = 0;
                let mut more = false;
                for i in 0..n {
                    let idx = (*next + i) % n;
                    let full = buffers[idx].try_fold((), |(), ev| match ev {
                        PerfEvent::Sample { head, tail } => {
                            if push(batch, head, tail) {
                                ControlFlow::Break(())
                            } else {
                                ControlFlow::Continue(())
                            }
                        }
                        PerfEvent::Lost { count } => {
                            lost += count;
                            ControlFlow::Continue(())
                        }
                    });
                    if full.is_break() {
                        *next = idx;
                        more = true;
                        break;
                    }
                }
                self.lost_pending += lost;
                more
            }
        };
        (batch.offsets.len(), more)
    }

    /// Events the kernel dropped since the previous call.
    pub fn take_kernel_lost(&mut self) -> u64 {
        let mut lost = std::mem::take(&mut self.lost_pending);
        if let Some(m) = &self.lost_map {
            match m.sum_u64_at_zero() {
                Ok(total) => {
                    lost += total.saturating_sub(self.lost_seen);
                    self.lost_seen = total;
                }
                Err(e) => tracing::warn!(source = %self.name, "cannot read {}: {e}", m.name()),
            }
        }
        lost
    }
}
