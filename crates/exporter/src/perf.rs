//! `perf_event_array` counters, as ebpf_exporter counts them: every event
//! the program sends to the perf event array named by the counter adds one
//! to the series its first bytes decode to (the labels' sizes and
//! paddings; the kernel pads samples to 8 bytes, so the rest is ignored).
//! Every `flush_interval` (an hour if unset) all series are dropped, so a
//! scrape shows the events since the last flush. Samples the kernel could
//! not write (buffer full) are counted in
//! `dropped_perf_event_map_events_<name>`.
//!
//! A thread per counter waits on the per-CPU buffers (1024 pages each, as
//! ebpf_exporter asks libbpf for) and counts each drained batch: equal keys
//! are summed first, so a key is decoded once per batch, then the series
//! are updated under one lock.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use conductor_kernel::events::EventSource;
use conductor_kernel::maps::KernelMap;

use crate::collect::KeyLayout;
use crate::decoder::Host;

/// Pages of each CPU's buffer (libbpfgo's `InitPerfBuf(..., 1024)` in ebpf_exporter).
pub const PAGES: u32 = 1024;
/// Events per drained batch.
const MAX_BATCH: u32 = 4096;
/// ebpf_exporter polls with a 300 ms timeout; here it bounds how late a
/// stop or a flush is noticed.
const POLL: Duration = Duration::from_millis(300);

#[derive(Debug, Default)]
struct Counts {
    series: BTreeMap<Vec<String>, u64>,
    dropped: u64,
}

/// One `perf_event_array` counter: its reader thread and what it counted.
pub struct PerfCounter {
    counts: Arc<Mutex<Counts>>,
    events: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for PerfCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerfCounter")
            .field("events", &self.events.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What the reader needs besides the buffers.
pub struct Reader {
    pub config: String,
    pub metric: String,
    pub layout: Arc<KeyLayout>,
    pub host: Arc<dyn Host>,
    pub decoder_errors: Arc<AtomicU64>,
    pub flush_every: Duration,
}

impl PerfCounter {
    /// Open `map`'s buffers on every online CPU and start counting.
    pub fn start(map: &KernelMap, reader: Reader) -> std::io::Result<Self> {
        let source = EventSource::open(map, None, PAGES, MAX_BATCH)?;
        let counts = Arc::new(Mutex::new(Counts::default()));
        let events = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (counts, events, stop) = (counts.clone(), events.clone(), stop.clone());
            // Linux keeps 15 bytes of a thread's name (metric names are ASCII).
            let mut name = format!("perf-{}", reader.metric);
            name.truncate(15);
            std::thread::Builder::new()
                .name(name)
                .spawn(move || run(source, reader, &counts, &events, &stop))?
        };
        Ok(Self {
            counts,
            events,
            stop,
            thread: Some(thread),
        })
    }

    /// The series counted since the last flush.
    pub fn series(&self) -> BTreeMap<Vec<String>, u64> {
        self.lock().series.clone()
    }

    /// Samples the kernel dropped (buffer full) since the start.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Events read since the start (flushes do not reset it).
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for PerfCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    mut source: EventSource,
    r: Reader,
    counts: &Mutex<Counts>,
    events: &AtomicU64,
    stop: &AtomicBool,
) {
    let mut fds: Vec<libc::pollfd> = source
        .fds()
        .into_iter()
        .map(|fd: RawFd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let covered = r.layout.covered() as usize;
    // Flushes tick at fixed times from the start, as Go's time.Ticker does.
    let mut next_flush = Instant::now() + r.flush_every;
    let mut by_key: HashMap<Vec<u8>, u64> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= next_flush {
            lock(counts).series.clear();
            next_flush += r.flush_every;
            if next_flush <= now {
                next_flush = now + r.flush_every;
            }
        }
        let wait = POLL.min(next_flush.saturating_duration_since(now));
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let ready = unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                wait.as_millis().max(1) as libc::c_int,
            )
        };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!(config = %r.config, metric = %r.metric, "cannot wait for perf events: {e}; this counter stops counting");
                return;
            }
            continue;
        }
        loop {
            let delivered = source.deliver(|batch| {
                by_key.clear();
                for (off, len) in batch.spans.iter() {
                    let record = &batch.data[off..off + len];
                    let key = &record[..covered.min(record.len())];
                    match by_key.get_mut(key) {
                        Some(n) => *n += 1,
                        None => {
                            by_key.insert(key.to_vec(), 1);
                        }
                    }
                }
                batch.kernel_lost
            });
            let lost = delivered.result.unwrap_or(0) + source.take_kernel_lost();
            if delivered.events > 0 || lost > 0 {
                events.fetch_add(delivered.events as u64, Ordering::Relaxed);
                count(&r, counts, &by_key, lost);
            }
            by_key.clear();
            if !delivered.more {
                // Events arrived: let more gather before the next wait, so
                // a busy source is read in batches rather than one wakeup
                // per event (the counts are read at scrape time anyway).
                if let Some(wait) = delivered.gather {
                    std::thread::sleep(wait);
                }
                break;
            }
        }
    }
}

fn lock(counts: &Mutex<Counts>) -> std::sync::MutexGuard<'_, Counts> {
    counts.lock().unwrap_or_else(|e| e.into_inner())
}

/// Add one batch's events (counted by key bytes) to the series.
fn count(r: &Reader, counts: &Mutex<Counts>, by_key: &HashMap<Vec<u8>, u64>, lost: u64) {
    let mut decoded = Vec::with_capacity(by_key.len());
    for (key, n) in by_key {
        let labels = if r.layout.labels.is_empty() {
            Ok(Some(Vec::new()))
        } else {
            r.layout.decode(key, &*r.host)
        };
        match labels {
            Ok(Some(labels)) => decoded.push((labels, *n)),
            Ok(None) => {} // left out by a regexp decoder
            Err(e) => {
                // ebpf_exporter counts the error (and its Go client then
                // panics on the label count); the events are not counted.
                r.decoder_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(config = %r.config, metric = %r.metric, events = n, "cannot decode a perf event: {e}");
            }
        }
    }
    let mut c = lock(counts);
    c.dropped += lost;
    for (labels, n) in decoded {
        *c.series.entry(labels).or_default() += n;
    }
}
