//! A BPF ring buffer consumer that drains in batches.
//!
//! aya's `RingBuf::next()` (like libbpf's `ring_buffer__consume`) publishes
//! the consumer position after every record: one release store to a cache
//! line the producers read, per event, and a consumer that keeps catching up
//! with the producer, so the kernel wakes it (irq_work) again and again.
//! This reader walks the mmapped ring itself, hands a whole batch to the
//! plugin in place (the only copy of a record is the one into the plugin's
//! memory) and publishes the position once per batch, none of which aya's
//! API can express.
//!
//! Layout and ordering follow `kernel/bpf/ringbuf.c` and libbpf's
//! `ringbuf.c`: page 0 holds the consumer position (read-write), page 1 the
//! producer position (read-only), then the data pages, mapped twice in a row
//! so a record that wraps around the end is contiguous in our address space.
//! Every record starts with an 8-byte header: `u32 len` whose bit 31
//! (`BUSY`) is set while the producer writes it and bit 30 (`DISCARD`) when
//! it was discarded, then `u32 pg_off` (kernel use). A record occupies
//! `round_up(len + 8, 8)` bytes. Loads of the producer position and of a
//! header are acquire loads (the kernel commits with a fully ordered xchg);
//! the consumer position is published with a release store.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use aya::maps::MapData;

use crate::events::Spans;

const BUSY_BIT: u32 = 1 << 31;
const DISCARD_BIT: u32 = 1 << 30;
const HEADER_LEN: u64 = 8;

/// One mmapped region, unmapped on drop.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(fd: i32, len: usize, prot: libc::c_int, offset: usize) -> io::Result<Self> {
        let offset = libc::off_t::try_from(offset).map_err(io::Error::other)?;
        // SAFETY: a fresh shared mapping of `fd`; we keep it until drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd,
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        NonNull::new(ptr.cast())
            .map(|ptr| Self { ptr, len })
            .ok_or_else(|| io::Error::other("mmap returned NULL"))
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` came from a successful mmap and nothing
        // borrowed from the mapping outlives `self` (see `RingReader`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

// SAFETY: the mapping is plain shared memory; all access goes through atomics
// or through `RingReader`, which needs `&mut self`.
unsafe impl Send for Mapping {}

/// Whether [`RingReader::batch`] left records behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Nothing left (or the next record is still being written; its
    /// producer will wake us): wait for the next wakeup.
    Empty,
    /// The batch filled up, or a batch's worth arrived while it was being
    /// delivered: take the next batch now.
    More,
    /// Less than a batch's worth arrived while the batch was being
    /// delivered. No wakeup will come for it (it was committed while the
    /// consumer position still pointed before it), so the caller must come
    /// back by itself: after this delay, when a batch's worth is expected
    /// at the rate the records just arrived, and long before the ring can
    /// fill (see [`RingReader::batch`]).
    Gather(Duration),
}

/// The longest [`Drained::Gather`] delay: records that arrived during a
/// call are taken within this, however slowly more follow.
pub const MAX_GATHER: Duration = Duration::from_millis(1);

/// A gather delay shorter than this is not worth a sleep and a wakeup (a
/// few microseconds of syscalls and context switches): take the next batch
/// at once instead.
const MIN_GATHER: Duration = Duration::from_micros(20);

/// `pause` instructions a polling reader spins between two looks at the
/// producer position and the clock, so that it does not keep pulling the
/// cache line the producer writes for every record.
const SPINS_PER_CLOCK: u32 = 512;

/// Consumer of one BPF ring buffer map.
pub struct RingReader {
    /// Keeps the map's descriptor open for the mappings' lifetime.
    _map: MapData,
    consumer: Mapping,
    /// Producer page followed by the doubly mapped data.
    producer: Mapping,
    page: u64,
    mask: u64,
    /// A corrupt header was reported (once per reader).
    corrupt_seen: bool,
    /// Poll instead of sleeping while the ring would fill within this at
    /// the rate records arrive (zero: always sleep). See [`RingReader::batch`].
    busy_poll: Duration,
    /// When the previous batch began and the producer position then: the
    /// arrival rate is measured from one batch to the next.
    mark: Option<(Instant, u64)>,
    /// Bytes per nanosecond between the last two batches.
    rate: f64,
    /// Time spent polling, not yet collected by [`RingReader::take_polled`].
    polled: Duration,
}

impl RingReader {
    pub fn new(map: MapData) -> io::Result<Self> {
        let size = u64::from(map.info().map_err(io::Error::other)?.max_entries());
        if !size.is_power_of_two() {
            return Err(io::Error::other(format!(
                "ring buffer size {size} is not a power of two"
            )));
        }
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let page = usize::try_from(page).map_err(io::Error::other)?;
        let fd = map.fd().as_fd().as_raw_fd();
        let consumer = Mapping::new(fd, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let data_len = usize::try_from(size).map_err(io::Error::other)?;
        let producer = Mapping::new(fd, page + 2 * data_len, libc::PROT_READ, page)?;
        Ok(Self {
            _map: map,
            consumer,
            producer,
            page: page as u64,
            mask: size - 1,
            corrupt_seen: false,
            busy_poll: Duration::ZERO,
            mark: None,
            rate: 0.0,
            polled: Duration::ZERO,
        })
    }

    /// Poll the ring between batches, instead of sleeping, while at the
    /// rate records arrive it would fill within `within` (zero: never).
    ///
    /// A sleeping consumer relies on being woken (by the producer's wakeup
    /// or its own timer), and on virtual machines waking a thread whose CPU
    /// went idle can take milliseconds: long enough for a fast producer to
    /// fill the ring. Polling keeps the consumer's CPU busy instead; it
    /// costs that CPU's idle time, and only while records arrive that fast.
    pub fn set_busy_poll(&mut self, within: Duration) {
        self.busy_poll = within;
    }

    /// Time spent polling since the last call.
    pub fn take_polled(&mut self) -> Duration {
        std::mem::take(&mut self.polled)
    }

    /// The map's descriptor: readable (epoll) when the kernel wakes consumers.
    pub fn raw_fd(&self) -> RawFd {
        self._map.fd().as_fd().as_raw_fd()
    }

    fn consumer_pos(&self) -> &AtomicU64 {
        // SAFETY: page-aligned, so aligned for u64; the kernel places the
        // consumer position at the start of page 0 and it lives as long as self.
        unsafe { self.consumer.ptr.cast::<AtomicU64>().as_ref() }
    }

    fn producer_pos(&self) -> &AtomicU64 {
        // SAFETY: as above, for the producer page.
        unsafe { self.producer.ptr.cast::<AtomicU64>().as_ref() }
    }

    /// The header of the record at ring position `pos`.
    fn header(&self, pos: u64) -> &AtomicU32 {
        let off = (self.page + (pos & self.mask)) as usize;
        // SAFETY: `off < page + size` is inside the mapping; records are
        // 8-byte aligned, so the u32 is aligned.
        unsafe { self.producer.ptr.add(off).cast::<AtomicU32>().as_ref() }
    }

    /// The `len` bytes of the ring from position `pos` on.
    fn stretch(&self, pos: u64, len: u64) -> &[u8] {
        let off = (self.page + (pos & self.mask)) as usize;
        // SAFETY: `len` is at most the ring's size (the producer is never
        // more than that ahead of the consumer) and the data is mapped twice,
        // so `off + len <= page + 2 * size`. The caller read every header in
        // the stretch with acquire loads after the producer committed it, and
        // the producer cannot reuse the space before we publish a consumer
        // position past it, which `batch` does only after the slice is gone.
        unsafe { std::slice::from_raw_parts(self.producer.ptr.as_ptr().add(off), len as usize) }
    }

    /// Take the committed records from the consumer position on, at most
    /// `max_records` of them and (unless the first is bigger) `max_bytes` of
    /// ring, and hand them to `deliver` in place: the stretch of the ring
    /// they lie in (the kernel's headers and discarded records included)
    /// and where each record is in it. Then publish the consumer position
    /// once. Returns `deliver`'s result, or `None` if there was no record,
    /// and whether to come back at once, after a delay, or at the next
    /// wakeup.
    ///
    /// Records that arrive while `deliver` runs get no wakeup, so the
    /// consumer decides by itself when to take them: at once (back to back)
    /// once a batch's worth is pending, i.e. `max_records` records of this
    /// batch's mean size, capped at `max_bytes` and at a quarter of the
    /// ring; otherwise when that much is expected at the rate they just
    /// arrived, at most [`MAX_GATHER`] later. Going back at once for a few
    /// records instead would make batches of a dozen records whose per-call
    /// cost dominates; waiting a fixed delay instead lost events whenever
    /// the producer could fill the ring within it. Gathering to a quarter of
    /// the ring at the measured rate leaves three quarters for the rate to
    /// rise before anything is dropped.
    pub fn batch<R>(
        &mut self,
        max_records: usize,
        max_bytes: usize,
        spans: &mut Spans,
        deliver: impl FnOnce(&[u8], &Spans) -> R,
    ) -> (Option<R>, Drained) {
        spans.clear();
        let began = Instant::now();
        let start = self.consumer_pos().load(Ordering::Relaxed);
        let prod_then = self.producer_pos().load(Ordering::Acquire);
        if let Some((t, p)) = self.mark.replace((began, prod_then)) {
            let ns = began.duration_since(t).as_nanos().max(1) as f64;
            self.rate = prod_then.wrapping_sub(p) as f64 / ns;
        }
        let mut cons = start;
        let full = loop {
            let prod = self.producer_pos().load(Ordering::Acquire);
            let walked = walk(
                |pos| self.header(pos).load(Ordering::Acquire),
                start,
                cons,
                prod,
                max_records,
                max_bytes,
                spans,
            );
            cons = walked.cons;
            let (busy, full) = (walked.stop == Stop::Busy, walked.stop == Stop::Full);
            if walked.stop == Stop::Corrupt {
                // Never from a sound kernel: deliver what came before, never
                // read past the producer, and say so once.
                if !self.corrupt_seen {
                    self.corrupt_seen = true;
                    tracing::error!(
                        position = cons,
                        producer = prod,
                        "a ring buffer record claims to extend past the producer position; \
                         its records are not read"
                    );
                }
                if spans.is_empty() {
                    return (None, Drained::Empty);
                }
            }
            if full || !spans.is_empty() {
                break full;
            }
            // Nothing to deliver: about to report `Empty`, after which the
            // caller sleeps until a wakeup. The kernel wakes us when it
            // commits a record at the published consumer position, so
            // publish first (past any discarded records), then (full fence)
            // look again: either we see a record committed meanwhile or its
            // producer sees our position and wakes us.
            self.consumer_pos().store(cons, Ordering::Release);
            fence(Ordering::SeqCst);
            let again = if busy {
                self.header(cons).load(Ordering::Acquire) & BUSY_BIT == 0
            } else {
                self.producer_pos().load(Ordering::Acquire) != cons
            };
            if !again {
                return (None, Drained::Empty);
            }
        };
        let result = deliver(self.stretch(start, cons.wrapping_sub(start)), spans);
        self.consumer_pos().store(cons, Ordering::Release);
        if full {
            return (Some(result), Drained::More);
        }
        // As above: publish, fence, look again before letting the caller
        // sleep. A record still being written counts as arrived; the next
        // call then waits for it properly.
        fence(Ordering::SeqCst);
        let arrived = self
            .producer_pos()
            .load(Ordering::Acquire)
            .wrapping_sub(cons);
        let taken = cons.wrapping_sub(start);
        let worth = (taken / spans.len().max(1) as u64)
            .saturating_mul(max_records as u64)
            .min(max_bytes as u64)
            .min((self.mask + 1) / 4);
        if self.polls(arrived) {
            return (Some(result), self.poll(cons, worth));
        }
        let drained = if arrived == 0 {
            Drained::Empty
        } else {
            if arrived >= worth {
                Drained::More
            } else {
                // Bytes per nanosecond since the producer position was first read.
                let took = began.elapsed().as_nanos().max(1) as f64;
                let wait = (worth - arrived) as f64 * took / arrived as f64;
                let wait = Duration::from_nanos(wait as u64).min(MAX_GATHER);
                if wait < MIN_GATHER {
                    Drained::More
                } else {
                    Drained::Gather(wait)
                }
            }
        };
        (Some(result), drained)
    }

    /// Whether to poll rather than sleep for what comes next: the free
    /// space (`arrived` bytes are already pending) fills within
    /// `busy_poll` at the rate measured between the last two batches.
    fn polls(&self, arrived: u64) -> bool {
        let free = (self.mask + 1).saturating_sub(arrived);
        fills_within(free, self.rate, self.busy_poll)
    }

    /// Spin until a batch's worth (`worth` bytes from `cons`) is pending or
    /// [`MAX_GATHER`] has passed, then say to come back at once (or, if
    /// nothing at all arrived meanwhile, to sleep until a wakeup: the
    /// consumer position is published, so the producer will send one).
    fn poll(&mut self, cons: u64, worth: u64) -> Drained {
        let began = Instant::now();
        let drained = loop {
            for _ in 0..SPINS_PER_CLOCK {
                std::hint::spin_loop();
            }
            let arrived = self
                .producer_pos()
                .load(Ordering::Acquire)
                .wrapping_sub(cons);
            if arrived >= worth {
                break Drained::More;
            }
            if began.elapsed() >= MAX_GATHER {
                break if arrived > 0 {
                    Drained::More
                } else {
                    Drained::Empty
                };
            }
        };
        self.polled += began.elapsed();
        drained
    }
}

/// Whether `free` bytes fill within `within` at `rate` bytes per
/// nanosecond (never, with no rate or a zero `within`).
fn fills_within(free: u64, rate: f64, within: Duration) -> bool {
    rate > 0.0 && !within.is_zero() && (free as f64) < rate * within.as_nanos() as f64
}

/// Why [`walk`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// It reached the producer position.
    Caught,
    /// The next record is still being written.
    Busy,
    /// `max_records` or `max_bytes` reached.
    Full,
    /// The next record's length would take it past the producer position:
    /// a header no sound kernel writes. Nothing from there is read.
    Corrupt,
}

#[derive(Debug)]
struct Walked {
    /// The position after the last record taken.
    cons: u64,
    stop: Stop,
}

/// Walk the record headers from `cons` towards `prod` (`header(pos)` reads
/// the header at a ring position), pushing the records that were not
/// discarded into `spans` at their offset from `start`; at most
/// `max_records` records and (unless the first is bigger) `max_bytes` bytes
/// from `start`. Pure over `header`, so the hostile cases (lengths past the
/// producer, busy and discard bits, wrapping positions) are tested on plain
/// memory.
fn walk(
    header: impl Fn(u64) -> u32,
    start: u64,
    mut cons: u64,
    prod: u64,
    max_records: usize,
    max_bytes: usize,
    spans: &mut Spans,
) -> Walked {
    while cons != prod {
        let len = header(cons);
        if len & BUSY_BIT != 0 {
            return Walked {
                cons,
                stop: Stop::Busy,
            };
        }
        let data_len = len & !(BUSY_BIT | DISCARD_BIT);
        let step = (u64::from(data_len) + HEADER_LEN).next_multiple_of(8);
        if step > prod.wrapping_sub(cons) {
            return Walked {
                cons,
                stop: Stop::Corrupt,
            };
        }
        let next = cons.wrapping_add(step);
        if !spans.is_empty() && next.wrapping_sub(start) > max_bytes as u64 {
            return Walked {
                cons,
                stop: Stop::Full,
            };
        }
        if len & DISCARD_BIT == 0 {
            // At most the ring's size: fits (ring sizes are u32).
            spans.push((cons.wrapping_sub(start) + HEADER_LEN) as u32, data_len);
        }
        cons = next;
        if spans.len() >= max_records {
            return Walked {
                cons,
                stop: Stop::Full,
            };
        }
    }
    Walked {
        cons,
        stop: Stop::Caught,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A ring of `size` bytes whose headers are whatever the test wrote,
    /// read at `pos & (size - 1)` as the mapped ring is.
    fn reader(ring: &[u32]) -> impl Fn(u64) -> u32 + '_ {
        let words = ring.len() as u64; // u32 words; headers are 8-aligned
        move |pos| ring[((pos / 4) % words) as usize]
    }

    proptest! {
        /// Arbitrary header words (any length, busy and discard bits), any
        /// start position (wrapping u64 included) and any producer lead up
        /// to the ring's size: the walk ends, never passes the producer,
        /// and every span lies inside the stretch it returns.
        #[test]
        fn hostile_headers_never_lead_past_the_producer(
            ring in proptest::collection::vec(any::<u32>(), 2..512),
            start in any::<u64>(),
            lead in any::<u64>(),
            max_records in 1usize..64,
            max_bytes in 0usize..8192,
        ) {
            let size = (ring.len() as u64 * 4).next_power_of_two();
            let start = start & !7;
            let prod = start.wrapping_add((lead % (size + 1)) & !7);
            let mut spans = Spans::default();
            let w = walk(reader(&ring), start, start, prod, max_records, max_bytes, &mut spans);
            let taken = w.cons.wrapping_sub(start);
            prop_assert!(taken <= prod.wrapping_sub(start), "{w:?} past producer {prod}");
            prop_assert_eq!(taken % 8, 0);
            prop_assert!(spans.len() <= max_records);
            if w.stop == Stop::Caught {
                prop_assert_eq!(w.cons, prod);
            }
            let mut end_of_last = 0;
            for (off, len) in spans.iter() {
                prop_assert!(off >= end_of_last + HEADER_LEN as usize, "overlap at {off}");
                prop_assert!((off + len) as u64 <= taken, "span {off}+{len} beyond {taken}");
                end_of_last = off + len;
            }
            if spans.len() > 1 {
                prop_assert!(taken <= max_bytes as u64, "{taken} > {max_bytes}");
            }
        }

        /// Well-formed rings (records of random sizes, some discarded,
        /// starting anywhere, wrapping the u64 position) are read back
        /// exactly: every committed record, in order, none of the
        /// discarded ones.
        #[test]
        fn well_formed_records_are_read_back_exactly(
            lens in proptest::collection::vec((0u32..200, any::<bool>()), 0..40),
            start in any::<u64>(),
        ) {
            let start = start & !7;
            let mut ring = Vec::new(); // (position, header)
            let mut pos = start;
            let mut want = Vec::new();
            for &(len, discard) in &lens {
                ring.push((pos, if discard { len | DISCARD_BIT } else { len }));
                if !discard {
                    want.push(((pos.wrapping_sub(start) + HEADER_LEN) as usize, len as usize));
                }
                pos = pos.wrapping_add((u64::from(len) + HEADER_LEN).next_multiple_of(8));
            }
            let header = |p: u64| ring.iter().find(|(q, _)| *q == p).map(|(_, h)| *h).unwrap_or(BUSY_BIT);
            let mut spans = Spans::default();
            let w = walk(header, start, start, pos, usize::MAX, usize::MAX, &mut spans);
            prop_assert_eq!(w.stop, Stop::Caught);
            prop_assert_eq!(w.cons, pos);
            prop_assert_eq!(spans.iter().collect::<Vec<_>>(), want);
        }
    }

    #[test]
    fn polls_only_when_the_free_space_fills_within_the_limit() {
        let ms = Duration::from_millis(1);
        // 1 MiB at 1 byte/ns fills in ~1.05 ms.
        assert!(!fills_within(1 << 20, 1.0, ms));
        assert!(fills_within(1 << 20, 1.0, 2 * ms));
        assert!(fills_within(0, 1e-9, ms), "a full ring fills at any rate");
        assert!(!fills_within(1 << 20, 0.0, 10 * ms), "nothing arriving");
        assert!(!fills_within(0, 1.0, Duration::ZERO), "polling turned off");
    }

    /// A record whose length runs past the producer is not read.
    #[test]
    fn a_length_past_the_producer_is_corrupt() {
        let mut spans = Spans::default();
        let w = walk(|_| 4096, 0, 0, 64, 16, 1 << 20, &mut spans);
        assert_eq!(w.stop, Stop::Corrupt);
        assert_eq!(w.cons, 0);
        assert!(spans.is_empty());
    }
}
