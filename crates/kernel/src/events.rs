//! Event sources: ring buffers and perf event arrays drained into batches.
//!
//! A batch is a stretch of bytes plus the span of each record in it, handed
//! to the plugin in one guest call. For ring buffers the stretch is the
//! kernel's ring itself (see [`RingReader::batch`]), so a record is copied
//! exactly once: into the plugin's memory. Perf buffers are not mapped
//! twice, so a record may wrap around their end; their records are first
//! gathered into a buffer of the source's. Buffers are reused from batch to
//! batch: the steady state allocates nothing.
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

use crate::maps::{KernelMap, MapKind};
use crate::ringbuf::{Drained, RingReader};

/// Upper bound on the bytes of one batch, whatever `maxBatch` says, so one
/// call cannot ask the plugin for unbounded memory.
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// How long a perf event array's samples gather after a drain that found
/// some: the kernel wakes the reader for every sample, so reading at each
/// wakeup would make a guest call per event (as ebpf_exporter's reader,
/// the host's built-in one gathers for the same time).
pub const PERF_GATHER: std::time::Duration = std::time::Duration::from_millis(1);

/// Where each record of a batch lies in its data, as the WIT `event-batch`
/// carries it.
#[derive(Debug, Default)]
pub struct Spans {
    pub offsets: Vec<u32>,
    pub lengths: Vec<u32>,
}

impl Spans {
    pub fn push(&mut self, offset: u32, len: u32) {
        self.offsets.push(offset);
        self.lengths.push(len);
    }
    pub fn clear(&mut self) {
        self.offsets.clear();
        self.lengths.clear();
    }
    pub fn len(&self) -> usize {
        self.offsets.len()
    }
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }
    /// Record `i`'s place in the data: (offset, length).
    pub fn iter(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        self.offsets
            .iter()
            .zip(&self.lengths)
            .map(|(&o, &l)| (o as usize, l as usize))
    }
}

/// One batch of records, borrowed for the length of a delivery.
pub struct Batch<'a> {
    /// The bytes the records lie in (and, for ring buffers, the kernel's
    /// record headers between them).
    pub data: &'a [u8],
    pub spans: &'a Spans,
    /// Events the kernel dropped since the previous batch (or
    /// [`EventSource::take_kernel_lost`]).
    pub kernel_lost: u64,
}

/// What [`EventSource::deliver`] did.
pub struct Delivered<R> {
    pub events: usize,
    /// More events are ready: deliver again now.
    pub more: bool,
    /// Deliver again after this delay. Ring buffers: fewer than a batch's
    /// worth of events arrived during the delivery, and no wakeup will
    /// announce them (see [`RingReader::batch`]). Perf event arrays: events
    /// were delivered, so more are likely; let them gather for
    /// [`PERF_GATHER`] and ignore the wakeups meanwhile (see
    /// [`EventSource::wakes_per_event`]).
    pub gather: Option<std::time::Duration>,
    /// What the delivery returned; `None` if there were no events.
    pub result: Option<R>,
}

enum Kind {
    Ring(Box<RingReader>),
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
    /// Reused for every batch: record spans, and perf records' bytes.
    spans: Spans,
    data: Vec<u8>,
    lost_map: Option<KernelMap>,
    /// Last value read from `lost_map` (it only grows).
    lost_seen: u64,
    /// Kernel drops observed by the last drain (perf) not yet collected.
    lost_pending: u64,
}

impl EventSource {
    /// The event source reading `map`, a ring buffer (with `lost`, its
    /// `<name>_lost` companion, if the program declares one) or a perf
    /// event array (`perf_pages` pages per CPU). Any other map is refused.
    pub fn open(
        map: &KernelMap,
        lost: Option<KernelMap>,
        perf_pages: u32,
        max_batch: u32,
    ) -> io::Result<Self> {
        let stream = || -> io::Result<Map> {
            Map::from_map_data(map.try_clone_data()?).map_err(io::Error::other)
        };
        match map.meta().kind {
            MapKind::Ringbuf => Self::ring(map.name(), stream()?, lost, max_batch),
            MapKind::PerfEventArray => Self::perf(map.name(), stream()?, perf_pages, max_batch),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "is a {other:?} map; only ring buffers and perf event arrays can be event sources (remove `events`)"
                ),
            )),
        }
    }

    /// A ring buffer; `lost_map` is its `<name>_lost` companion, if the BPF
    /// program declares one.
    pub fn ring(
        name: &str,
        map: Map,
        lost_map: Option<KernelMap>,
        max_batch: u32,
    ) -> io::Result<Self> {
        let ring = RingReader::new(crate::object::into_map_data(map))?;
        let lost_seen = match &lost_map {
            Some(m) => m.sum_u64_at_zero().map_err(io::Error::other)?,
            None => 0,
        };
        Ok(Self {
            name: name.to_owned(),
            kind: Kind::Ring(Box::new(ring)),
            max_batch: max_batch as usize,
            spans: Spans::default(),
            data: Vec::new(),
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
            spans: Spans::default(),
            data: Vec::new(),
            lost_map: None,
            lost_seen: 0,
            lost_pending: 0,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Ring buffers: poll between batches instead of sleeping while the
    /// ring would fill within `within` at the rate events arrive (see
    /// [`RingReader::set_busy_poll`]). Perf event arrays never poll: they
    /// gather for [`PERF_GATHER`] instead.
    pub fn set_busy_poll(&mut self, within: std::time::Duration) {
        if let Kind::Ring(r) = &mut self.kind {
            r.set_busy_poll(within);
        }
    }

    /// Time spent polling (see [`EventSource::set_busy_poll`]) since the
    /// last call.
    pub fn take_polled(&mut self) -> std::time::Duration {
        match &mut self.kind {
            Kind::Ring(r) => r.take_polled(),
            Kind::Perf { .. } => std::time::Duration::ZERO,
        }
    }

    /// Whether the kernel wakes the reader for every event (perf event
    /// arrays), so a reader that is gathering should ignore the wakeups.
    pub fn wakes_per_event(&self) -> bool {
        matches!(self.kind, Kind::Perf { .. })
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

    /// Take up to `max_batch` new events and hand them to `deliver` as one
    /// batch (not called if there are none). Returns how many events,
    /// whether more may be ready (the batch filled up) and `deliver`'s
    /// result. Kernel buffer space is released after `deliver` returns.
    pub fn deliver<R>(&mut self, deliver: impl FnOnce(Batch<'_>) -> R) -> Delivered<R> {
        let max = self.max_batch;
        let Self {
            name,
            kind,
            spans,
            data,
            lost_map,
            lost_seen,
            lost_pending,
            ..
        } = self;
        // Read the drop counter only for a batch that has events: an idle
        // source costs no syscall (housekeeping reads it then).
        match kind {
            Kind::Ring(ring) => {
                let (result, drained) = ring.batch(max, MAX_BATCH_BYTES, spans, |data, spans| {
                    let kernel_lost = kernel_lost(name, lost_map.as_ref(), lost_seen, lost_pending);
                    deliver(Batch {
                        data,
                        spans,
                        kernel_lost,
                    })
                });
                Delivered {
                    events: if result.is_some() { spans.len() } else { 0 },
                    more: drained == Drained::More,
                    gather: match drained {
                        Drained::Gather(wait) => Some(wait),
                        _ => None,
                    },
                    result,
                }
            }
            Kind::Perf { buffers, next } => {
                data.clear();
                spans.clear();
                let n = buffers.len();
                let mut lost = 0;
                let mut more = false;
                for i in 0..n {
                    let idx = (*next + i) % n;
                    let full = buffers[idx].try_fold((), |(), ev| match ev {
                        PerfEvent::Sample { head, tail } => {
                            spans.push(data.len() as u32, (head.len() + tail.len()) as u32);
                            data.extend_from_slice(head);
                            data.extend_from_slice(tail);
                            if spans.len() >= max || data.len() >= MAX_BATCH_BYTES {
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
                *lost_pending += lost;
                let result = (!spans.is_empty()).then(|| {
                    let kernel_lost = kernel_lost(name, lost_map.as_ref(), lost_seen, lost_pending);
                    deliver(Batch {
                        data,
                        spans,
                        kernel_lost,
                    })
                });
                Delivered {
                    events: spans.len(),
                    more,
                    gather: (!more && !spans.is_empty()).then_some(PERF_GATHER),
                    result,
                }
            }
        }
    }

    /// Events the kernel dropped since the previous call (or batch).
    pub fn take_kernel_lost(&mut self) -> u64 {
        kernel_lost(
            &self.name,
            self.lost_map.as_ref(),
            &mut self.lost_seen,
            &mut self.lost_pending,
        )
    }
}

/// Drops since the last look: those perf buffers reported, plus the growth
/// of the ring's `<ring>_lost` counter.
fn kernel_lost(name: &str, map: Option<&KernelMap>, seen: &mut u64, pending: &mut u64) -> u64 {
    let mut lost = std::mem::take(pending);
    if let Some(m) = map {
        match m.sum_u64_at_zero() {
            Ok(total) => {
                lost += total.saturating_sub(*seen);
                *seen = total;
            }
            Err(e) => tracing::warn!(source = %name, "cannot read {}: {e}", m.name()),
        }
    }
    lost
}
