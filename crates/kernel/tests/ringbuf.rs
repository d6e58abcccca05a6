//! Batching correctness of the ring-buffer consumer on the real kernel: a
//! purpose-built producer (`seq_producer.bpf.c`) numbers its records, and
//! the host's event source must deliver each committed record exactly once,
//! in order and intact, across many wrap-arounds of a one-page ring (records
//! spanning its end, discarded records in between), and account for every
//! record the kernel dropped when the ring overflowed. And through a real
//! `conductor`: a producer that suppresses every wakeup is still delivered
//! when the source sets `maxLatencyMs`, and a plugin stuck in a call does not
//! hold up another plugin's source.

use aya::maps::Array;
use aya::programs::RawTracePoint;
use aya::{Ebpf, EbpfLoader};
use conductor_kernel::events::{Batch, EventSource, PERF_GATHER};
use conductor_kernel::maps::KernelMap;
use conductor_kernel::object::into_map_data;
use conductor_kernel::ringbuf::MAX_GATHER;
use conductor_test_support::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

struct Producer {
    ebpf: Ebpf,
    source: EventSource,
    record_size: u32,
}

/// Load and attach the producer, fired by the calling thread's getpgid().
fn load(
    ring_bytes: u32,
    record_size: u32,
    per_trigger: u32,
    discard_every: u32,
    wakeup_bytes: u64,
) -> Ebpf {
    let tid = nix::unistd::gettid().as_raw() as u32;
    load_for(
        tid,
        ring_bytes,
        record_size,
        per_trigger,
        discard_every,
        wakeup_bytes,
    )
}

/// [`load`], fired by the getpgid() of thread `tid`.
fn load_for(
    tid: u32,
    ring_bytes: u32,
    record_size: u32,
    per_trigger: u32,
    discard_every: u32,
    wakeup_bytes: u64,
) -> Ebpf {
    let nr = libc::SYS_getpgid as u64;
    let mut ebpf = EbpfLoader::new()
        .override_global("target_tid", &tid, true)
        .override_global("trigger_nr", &nr, true)
        .override_global("per_trigger", &per_trigger, true)
        .override_global("record_size", &record_size, true)
        .override_global("discard_every", &discard_every, true)
        .override_global("wakeup_bytes", &wakeup_bytes, true)
        .map_max_entries("seq_ring", ring_bytes)
        .load_file(artifact("seq_producer.bpf.o"))
        .unwrap();
    let prog: &mut RawTracePoint = ebpf.program_mut("trigger").unwrap().try_into().unwrap();
    prog.load().unwrap();
    prog.attach("sys_enter").unwrap();
    ebpf
}

fn trigger(times: usize) {
    for _ in 0..times {
        // SAFETY: getpgid has no memory arguments.
        unsafe { libc::getpgid(0) };
    }
}

/// The producer with the host's event source on its ring.
fn producer(
    ring_bytes: u32,
    record_size: u32,
    per_trigger: u32,
    discard_every: u32,
    max_batch: u32,
) -> Producer {
    let mut ebpf = load(ring_bytes, record_size, per_trigger, discard_every, 0);
    let ring = ebpf.take_map("seq_ring").unwrap();
    let lost = KernelMap::new(
        "seq_ring_lost",
        into_map_data(ebpf.take_map("seq_ring_lost").unwrap()),
    )
    .unwrap();
    let source = EventSource::ring("seq_ring", ring, Some(lost), max_batch).unwrap();
    Producer {
        ebpf,
        source,
        record_size,
    }
}

impl Producer {
    fn trigger(&self, times: usize) {
        trigger(times);
    }

    /// (sequence numbers used, records discarded)
    fn stats(&self) -> (u64, u64) {
        let stats: Array<_, u64> = Array::try_from(self.ebpf.map("seq_stats").unwrap()).unwrap();
        (stats.get(&0, 0).unwrap(), stats.get(&1, 0).unwrap())
    }
}

/// Checks every delivered record and remembers what it saw.
#[derive(Default)]
struct Checker {
    received: u64,
    last: Option<u64>,
    lost: u64,
    batches: u64,
}

impl Checker {
    /// Check one batch where it lies (in the ring itself).
    fn check(&mut self, batch: &Batch<'_>, record_size: usize) {
        self.lost += batch.kernel_lost;
        for (at, len) in batch.spans.iter() {
            // Delivered in place: the kernel's record header (the
            // committed length) sits right before each record.
            let header = u32::from_ne_bytes(batch.data[at - 8..at - 4].try_into().unwrap());
            assert_eq!(header as usize, len, "record header before the record");
            let record = &batch.data[at..][..len];
            assert_eq!(record.len(), record_size, "record length");
            let word = |k: usize| u64::from_ne_bytes(record[k * 8..k * 8 + 8].try_into().unwrap());
            let seq = word(0);
            assert_eq!(word(record.len() / 8 - 1), !seq, "torn record {seq}");
            if let Some(last) = self.last {
                assert!(
                    seq > last,
                    "record {seq} after {last}: duplicate or reordered"
                );
            }
            self.last = Some(seq);
            self.received += 1;
        }
        if !batch.spans.is_empty() {
            self.batches += 1;
        }
    }

    /// Drain `p` until its source reports nothing more, checking each batch.
    fn drain(&mut self, p: &mut Producer, max_batch: usize) {
        loop {
            let record_size = p.record_size as usize;
            let delivered = p.source.deliver(|batch| {
                self.check(&batch, record_size);
                batch.spans.len()
            });
            let n = delivered.events;
            assert_eq!(Some(n), delivered.result.or(Some(0)));
            assert!(n <= max_batch, "batch of {n} events, max {max_batch}");
            if !delivered.more {
                self.lost += p.source.take_kernel_lost();
                return;
            }
        }
    }
}

#[test]
fn no_lost_duplicated_or_torn_records_across_wrap_around() {
    if !require_root() {
        return;
    }
    // 64- and 136-byte records (72 and 144 with the header) do not divide the
    // 4096-byte ring, so records straddle its end; every 5th sequence number
    // is a discarded 16-byte record. 7 records per trigger always fit.
    for record_size in [64, 136] {
        let mut p = producer(4096, record_size, 7, 5, 5);
        let mut check = Checker::default();
        for _ in 0..3000 {
            p.trigger(1);
            check.drain(&mut p, 5);
        }
        let (produced, discarded) = p.stats();
        assert_eq!(
            produced,
            3000 * 7,
            "the producer did not fire on every trigger"
        );
        assert_eq!(check.lost, 0, "the ring never fills in this test");
        assert_eq!(
            check.received + discarded,
            produced,
            "every committed record delivered exactly once"
        );
        assert_eq!(discarded, produced.div_ceil(5));
        let bytes = check.received * (u64::from(record_size) + 8) + discarded * 24;
        assert!(
            bytes > 100 * 4096,
            "the ring wrapped {} times",
            bytes / 4096
        );
        // Batches of at most 5 (checked above): 7 records take at least 2.
        assert!(check.batches >= 3000);
    }
}

#[test]
fn overflowing_ring_counts_every_dropped_record() {
    if !require_root() {
        return;
    }
    // 100 records of 72 bytes per trigger into a 4096-byte ring: most are
    // dropped by the kernel; drain only every 10 triggers.
    let mut p = producer(4096, 64, 100, 0, 1024);
    let mut check = Checker::default();
    for round in 0..50 {
        p.trigger(1);
        if round % 10 == 9 {
            check.drain(&mut p, 1024);
        }
    }
    check.drain(&mut p, 1024);
    let (produced, discarded) = p.stats();
    assert_eq!(produced, 5000);
    assert_eq!(discarded, 0);
    assert!(check.lost > 0, "the ring should have overflowed");
    assert!(check.received > 0);
    assert_eq!(
        produced,
        check.received + check.lost,
        "produced == consumed + counted drops"
    );
}

#[test]
fn a_batch_worth_arriving_during_a_delivery_is_taken_at_once() {
    if !require_root() {
        return;
    }
    // Kernel-default wakeups: a record committed while the consumer
    // position is behind it wakes nobody, so only the consumer itself can
    // come back for what arrives while it delivers. A slow consumer: every
    // delivery lasts as long as the producer takes to emit a full batch
    // (256 records of 72 bytes in the ring). Over 1000 deliveries that is
    // 18 MiB through a 1 MiB ring: nothing may be dropped, and after every
    // delivery the source must ask to be drained at once, not later (a
    // fixed wait lost events whenever the producer could fill the ring in it).
    let mut p = producer(1 << 20, 64, 16, 0, 256);
    let mut check = Checker::default();
    p.trigger(8); // 128 records: less than a batch to start with
    for round in 0..1000 {
        let delivered = p.source.deliver(|batch| {
            check.check(&batch, 64);
            trigger(16);
        });
        assert!(delivered.events > 0, "round {round}: nothing delivered");
        assert!(
            delivered.more,
            "round {round}: a batch's worth arrived during the delivery, yet the source asked to wait (gather {:?})",
            delivered.gather
        );
    }
    check.drain(&mut p, 256);
    let (produced, _) = p.stats();
    assert_eq!(produced, 128 + 1000 * 256);
    assert_eq!(check.lost, 0, "dropped while the consumer kept up");
    assert_eq!(check.received, produced, "every record delivered once");
}

#[test]
fn a_few_records_arriving_during_a_delivery_are_gathered_then_taken() {
    if !require_root() {
        return;
    }
    // Less than a batch's worth arrives during a delivery: the source asks
    // to come back within MAX_GATHER (no wakeup will announce those
    // records), and the next delivery takes them. With nothing arriving it
    // asks for neither.
    let mut p = producer(1 << 20, 64, 16, 0, 256);
    let mut check = Checker::default();
    p.trigger(1);
    let first = p.source.deliver(|batch| {
        check.check(&batch, 64);
        trigger(1);
    });
    assert_eq!(first.events, 16);
    assert!(!first.more, "16 records are not a batch's worth (256)");
    let wait = first
        .gather
        .expect("records arrived during the delivery: the source must come back for them");
    assert!(wait <= MAX_GATHER, "gather wait {wait:?}");
    let second = p.source.deliver(|batch| check.check(&batch, 64));
    assert_eq!(
        second.events, 16,
        "the records that arrived during the first delivery"
    );
    assert!(!second.more);
    assert_eq!(
        second.gather, None,
        "nothing arrived during the second delivery"
    );
    assert_eq!(check.received, 32);
    assert_eq!(check.lost + p.source.take_kernel_lost(), 0);
}

/// A thread of its own that fires getpgid() calls 200 µs apart (64
/// records each: about 0.3 M records/s, which even a debug build on a
/// loaded machine keeps up with, so its batches end caught up and the
/// polling decision is reached), from when `go` is sent until `stop` is
/// set; returns its tid at once.
fn firing_thread(
    stop: &Arc<AtomicBool>,
) -> (
    u32,
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
) {
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let stop = stop.clone();
    let thread = std::thread::spawn(move || {
        tid_tx.send(nix::unistd::gettid().as_raw() as u32).unwrap();
        if go_rx.recv().is_err() {
            return;
        }
        while !stop.load(Ordering::Relaxed) {
            trigger(1);
            let t = Instant::now();
            while t.elapsed() < Duration::from_micros(200) {
                std::hint::spin_loop();
            }
        }
    });
    (tid_rx.recv().unwrap(), go_tx, thread)
}

/// A real `conductor` running the `seq-sum` plugin `name` on `ebpf`'s
/// `seq_ring`, pinned for it, with `events` as the source's settings.
fn seq_sum_on_ring(name: &str, ebpf: &Ebpf, events: &str) -> (PinDir, Host) {
    let dir = PinDir::new(name);
    let pin = format!("{}/ring", dir.0);
    ebpf.map("seq_ring").unwrap().pin(&pin).unwrap();
    let spec = format!(
        "name: {name}\ncomponent: {}\nmaps:\n  - name: seq_ring\n    pin: {pin}\n    events: {events}\n",
        path_str(&artifact("testing_seq_sum.wasm")),
    );
    (dir, Host::start(&spec))
}

#[test]
fn a_fast_ring_is_polled_between_batches() {
    if !require_root() {
        return;
    }
    // Another thread fills a 4 MiB ring with 64 records every ~200 µs for
    // 300 ms while this one drains it. With busy polling allowed whenever
    // the ring would fill within a minute (any producer at all), the source
    // polls between batches instead of asking to sleep; without it, it never
    // polls. Either way every record is delivered once, in order, or counted
    // as dropped (none should be, but a loaded test machine may stall this
    // thread for longer than the ring lasts).
    for busy_poll in [Duration::from_secs(60), Duration::ZERO] {
        let stop = Arc::new(AtomicBool::new(false));
        let (tid, go, thread) = firing_thread(&stop);
        let mut ebpf = load_for(tid, 4 << 20, 64, 64, 0, 0);
        let ring = ebpf.take_map("seq_ring").unwrap();
        let lost = KernelMap::new(
            "seq_ring_lost",
            into_map_data(ebpf.take_map("seq_ring_lost").unwrap()),
        )
        .unwrap();
        let mut source = EventSource::ring("seq_ring", ring, Some(lost), 1024).unwrap();
        source.set_busy_poll(busy_poll);
        let mut check = Checker::default();
        let mut polled = Duration::ZERO;
        go.send(()).unwrap();
        let began = Instant::now();
        let mut finished = false;
        loop {
            let delivered = source.deliver(|batch| check.check(&batch, 64));
            polled += source.take_polled();
            if finished && delivered.events == 0 {
                break;
            }
            if began.elapsed() > Duration::from_millis(300) {
                stop.store(true, Ordering::Relaxed);
            }
            finished = thread.is_finished();
            if !delivered.more {
                std::thread::sleep(delivered.gather.unwrap_or(Duration::from_micros(100)));
            }
        }
        thread.join().unwrap();
        check.lost += source.take_kernel_lost();
        let stats: Array<_, u64> = Array::try_from(ebpf.map("seq_stats").unwrap()).unwrap();
        let produced = stats.get(&0, 0).unwrap();
        assert!(produced > 0);
        assert_eq!(
            check.received + check.lost,
            produced,
            "busy poll {busy_poll:?}: every record delivered or counted"
        );
        if busy_poll.is_zero() {
            assert_eq!(polled, Duration::ZERO, "polling is off");
        } else {
            assert!(
                polled > Duration::ZERO,
                "a producer this fast is polled for"
            );
        }
    }
}

#[test]
fn busy_poll_ms_in_the_spec_reaches_the_ring_and_its_metric() {
    if !require_root() {
        return;
    }
    // Through a real `conductor run`: `busyPollMs` long enough for any
    // producer makes the plugin's thread poll while records keep coming
    // (conductor_events_poll_seconds grows), 0 keeps it at zero; either way
    // every record is delivered or counted as dropped.
    for (busy_poll_ms, polls) in [(60000, true), (0, false)] {
        let stop = Arc::new(AtomicBool::new(false));
        let (tid, go, thread) = firing_thread(&stop);
        let ebpf = load_for(tid, 4 << 20, 64, 64, 0, 0);
        let (_dir, host) = seq_sum_on_ring(
            "busypoll",
            &ebpf,
            &format!("{{maxBatch: 1024, maxLatencyMs: 1, busyPollMs: {busy_poll_ms}}}"),
        );
        go.send(()).unwrap();
        let series = r#"conductor_events_poll_seconds_total{plugin="busypoll",source="seq_ring"}"#;
        if polls {
            host.wait_for_metric(series, Duration::from_secs(30), |v| v > 0.0);
        } else {
            std::thread::sleep(Duration::from_millis(500));
        }
        stop.store(true, Ordering::Relaxed);
        thread.join().unwrap();
        let (produced, dropped) = used_and_lost(&ebpf);
        host.wait_for_metric(
            r#"busypoll__events_total{plugin="busypoll"}"#,
            Duration::from_secs(30),
            |v| v + dropped as f64 == produced as f64,
        );
        let polled = value(&host.scrape(), series)
            .expect("conductor_events_poll_seconds_total is exposed for a ring buffer source");
        if !polls {
            assert_eq!(polled, 0.0, "busyPollMs 0: the thread polled");
        }
        host.stop();
    }
}

#[test]
fn a_perf_array_that_delivered_gathers_before_it_is_read_again() {
    if !require_root() {
        return;
    }
    // The kernel wakes a perf buffer's reader for every sample; a source
    // that just delivered samples asks to be read again after PERF_GATHER
    // (and to have those wakeups ignored meanwhile), one that found none
    // does not. Ring buffers wake on their own terms.
    let tid = nix::unistd::gettid().as_raw() as u32;
    let nr = libc::SYS_getpgid as u64;
    let (per_trigger, use_perf) = (8u32, 1u32);
    let mut ebpf = EbpfLoader::new()
        .override_global("target_tid", &tid, true)
        .override_global("trigger_nr", &nr, true)
        .override_global("per_trigger", &per_trigger, true)
        .override_global("use_perf", &use_perf, true)
        .load_file(artifact("seq_producer.bpf.o"))
        .unwrap();
    let prog: &mut RawTracePoint = ebpf.program_mut("trigger").unwrap().try_into().unwrap();
    prog.load().unwrap();
    prog.attach("sys_enter").unwrap();
    let perf = ebpf.take_map("seq_perf").unwrap();
    let mut source = EventSource::perf("seq_perf", perf, 8, 64).unwrap();
    assert!(source.wakes_per_event());
    trigger(1);
    let first = source.deliver(|batch| batch.spans.len());
    assert_eq!(first.events, 8);
    assert!(!first.more);
    assert_eq!(
        first.gather,
        Some(PERF_GATHER),
        "samples delivered: gather more"
    );
    let second = source.deliver(|batch| batch.spans.len());
    assert_eq!(second.events, 0);
    assert_eq!(second.gather, None, "nothing delivered: wait for a wakeup");

    let ring = producer(4096, 64, 1, 0, 8);
    assert!(!ring.source.wakes_per_event());
}

#[test]
fn max_latency_delivers_events_that_never_wake_the_host() {
    if !require_root() {
        return;
    }
    // A threshold the ring can never reach: every record is committed with
    // BPF_RB_NO_WAKEUP, so epoll never reports the ring readable.
    let ebpf = load(64 * 1024, 64, 10, 0, 1 << 40);
    let (_dir, host) = seq_sum_on_ring("latency", &ebpf, "{maxBatch: 64, maxLatencyMs: 5}");
    trigger(20);
    host.wait_for_metric(
        r#"latency__events_total{plugin="latency"}"#,
        std::time::Duration::from_secs(30),
        |v| v == 200.0,
    );
    // Sequence numbers 0..200.
    let sum = value(
        &host.scrape(),
        r#"latency__summed_seq_total{plugin="latency"}"#,
    );
    assert_eq!(sum, Some((0..200).sum::<u32>() as f64));
    host.stop();
}

#[test]
fn a_stuck_plugin_does_not_stall_another_plugins_source() {
    if !require_root() {
        return;
    }
    // Two producers on the same trigger, one ring each. `stuck` spends its
    // life in a `tick` that never returns (within the 10-minute bound), so
    // its thread never drains its ring; `fast` must still get every event.
    let stuck_side = load(64 * 1024, 64, 10, 0, 0);
    let fast_side = load(64 * 1024, 64, 10, 0, 0);
    let dir = PinDir::new("stuck");
    let (pin_stuck, pin_fast) = (format!("{}/stuck", dir.0), format!("{}/fast", dir.0));
    stuck_side.map("seq_ring").unwrap().pin(&pin_stuck).unwrap();
    fast_side.map("seq_ring").unwrap().pin(&pin_fast).unwrap();
    let spec = format!(
        r#"
name: stuck
component: {}
maps:
  - name: seq_ring
    pin: {pin_stuck}
    events: {{maxBatch: 64}}
limits: {{callTimeoutMs: 600000}}
tickIntervalMs: 10
---
name: fast
component: {}
maps:
  - name: seq_ring
    pin: {pin_fast}
    events: {{maxBatch: 64}}
"#,
        path_str(&artifact("testing_spin.wasm")),
        path_str(&artifact("testing_seq_sum.wasm")),
    );
    let host = Host::start(&spec);
    trigger(20);
    host.wait_for_metric(
        r#"fast__events_total{plugin="fast"}"#,
        std::time::Duration::from_secs(30),
        |v| v == 200.0,
    );
    let text = host.scrape();
    let faults = value(
        &text,
        r#"conductor_plugin_faults_total{plugin="stuck",kind="timeout"}"#,
    );
    assert_eq!(
        faults.unwrap_or(0.0),
        0.0,
        "stuck was still in its first tick"
    );
    // Killed on drop: a clean stop would wait for the stuck call.
    drop(host);
}

/// (sequence numbers used, sum of the kernel's `seq_ring_lost` over CPUs)
fn used_and_lost(ebpf: &Ebpf) -> (u64, u64) {
    let stats: Array<_, u64> = Array::try_from(ebpf.map("seq_stats").unwrap()).unwrap();
    let lost: aya::maps::PerCpuArray<_, u64> =
        aya::maps::PerCpuArray::try_from(ebpf.map("seq_ring_lost").unwrap()).unwrap();
    let lost = lost.get(&0, 0).unwrap().iter().sum();
    (stats.get(&0, 0).unwrap(), lost)
}

#[test]
fn kernel_drops_of_rings_pinned_by_another_loader_are_counted_exactly() {
    if !require_root() {
        return;
    }
    // Three producers loaded here, as bpfman would load them, each with a
    // one-page ring that 100 records per trigger overflow at once. Their
    // rings reach the host only by pin, with the drop counter found three
    // ways: granted as `<ring>_lost` (bpfman's layout, the case that used
    // to report 0), a `<pin>_lost` pin beside the ring, and dropCounter.
    let producers: Vec<Ebpf> = (0..3).map(|_| load(4096, 64, 100, 0, 0)).collect();
    let dir = PinDir::new("pinned-drops");
    let pin = |ebpf: &Ebpf, map: &str, name: &str| {
        let path = format!("{}/{name}", dir.0);
        ebpf.map(map).unwrap().pin(&path).unwrap();
        path
    };
    let (granted_ring, granted_lost) = (
        pin(&producers[0], "seq_ring", "events"),
        pin(&producers[0], "seq_ring_lost", "events_lost"),
    );
    let sibling_ring = pin(&producers[1], "seq_ring", "ring");
    pin(&producers[1], "seq_ring_lost", "ring_lost");
    let (explicit_ring, explicit_lost) = (
        pin(&producers[2], "seq_ring", "third"),
        pin(&producers[2], "seq_ring_lost", "third_drops"),
    );
    let component = path_str(&artifact("testing_seq_sum.wasm"));
    let spec = format!(
        r#"
name: granted
component: {component}
maps:
  - name: events
    pin: {granted_ring}
    events: {{maxBatch: 64}}
  - name: events_lost
    pin: {granted_lost}
---
name: sibling
component: {component}
maps:
  - name: ring
    pin: {sibling_ring}
    events: {{maxBatch: 64}}
---
name: explicit
component: {component}
maps:
  - name: third
    pin: {explicit_ring}
    events: {{maxBatch: 64, dropCounter: drops}}
  - name: drops
    pin: {explicit_lost}
"#
    );
    let host = Host::start(&spec);
    trigger(30);
    for (plugin, source, ebpf) in [
        ("granted", "events", &producers[0]),
        ("sibling", "ring", &producers[1]),
        ("explicit", "third", &producers[2]),
    ] {
        let (used, kernel_lost) = used_and_lost(ebpf);
        assert_eq!(used, 3000, "{plugin}: 30 triggers of 100 records");
        assert!(kernel_lost > 0, "{plugin}: a one-page ring must overflow");
        let lost_series = format!(
            r#"conductor_events_lost_total{{plugin="{plugin}",source="{source}",reason="kernel"}}"#
        );
        let events_series = format!(r#"{plugin}__events_total{{plugin="{plugin}"}}"#);
        // Every record is either delivered or counted as a kernel drop.
        wait_for(
            std::time::Duration::from_secs(30),
            &format!("{plugin}: delivered + dropped to reach {used}"),
            || host.log_text(),
            || {
                let text = host.scrape();
                let got = value(&text, &events_series).unwrap_or(0.0)
                    + value(&text, &lost_series).unwrap_or(0.0);
                (got == used as f64).then_some(())
            },
        );
        let text = host.scrape();
        assert_eq!(
            value(&text, &lost_series),
            Some(kernel_lost as f64),
            "{plugin}: the host's drop counter must equal the kernel's"
        );
    }
    assert!(
        !host
            .log_text()
            .contains("drops in the kernel cannot be counted"),
        "{}",
        host.log_text()
    );
    host.stop();
}

/// A bpffs directory for this test's pins, removed even if the test fails.
struct PinDir(String);

impl PinDir {
    fn new(test: &str) -> Self {
        let dir = format!("/sys/fs/bpf/conductor-test-{}-{test}", std::process::id());
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
