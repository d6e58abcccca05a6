//! DNS queries, responses by return code, and latency by pod and query type.
//!
//! The BPF programs (`bpf/dns.bpf.c`) pass every UDP DNS message a pod's
//! socket sends to port 53 (a query) or receives from port 53 (a response),
//! whole up to 512 bytes, through the ring buffer `events`; the parsing
//! happens here, in the sandbox. Exported metrics
//! (docs/src/catalog/dns.md):
//!
//! - `queries{namespace, pod, container, qtype}`: queries sent;
//! - `responses{namespace, pod, container, qtype, rcode}`: responses
//!   received, by return code (`NOERROR`, `NXDOMAIN`, `SERVFAIL`, ...);
//! - `latency_seconds{namespace, pod, container, qtype}`: a histogram of the
//!   time from a query to its response (matched by socket, port and
//!   message id);
//! - `malformed`: messages too short or inconsistent to read;
//! - `events_lost`: messages dropped before they were counted.
//!
//! Config: `pendingTimeoutMs` (default 5000): a query unanswered for this
//! long is forgotten (still counted in `queries`, never in `latency`).

mod message;

use std::collections::HashMap;

use conductor_sdk::metrics::MetricError;
use conductor_sdk::prelude::*;

use message::Message;

/// `struct dns_event` of the BPF program.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
#[bytemuck(crate = "conductor_sdk::bytemuck")]
struct DnsEvent {
    cgroup_id: u64,
    ts_ns: u64,
    local_port: u16,
    len: u16,
    direction: u8,
    _pad: [u8; 3],
    message: [u8; 512],
}

const _: () = assert!(
    size_of::<DnsEvent>() == 536,
    "struct dns_event is 536 bytes"
);

const DIR_RX: u8 = 0;
const DIR_TX: u8 = 1;

/// Queries awaiting their response at most; beyond, new ones are not timed.
const MAX_PENDING: usize = 65_536;

/// Latency buckets, in seconds: 50 µs (a resolver on the node) to about
/// 3.3 s, doubling.
fn buckets() -> Vec<f64> {
    (0..17).map(|i| 50e-6 * f64::from(1u32 << i)).collect()
}

/// namespace, pod and container label values for a cgroup (through the
/// SDK's per-call cache).
fn workload_labels(cgroup_id: u64) -> [String; 3] {
    Workload::of_cgroup(cgroup_id).labels().map(String::from)
}

/// A query in flight: (cgroup, client port, message id).
type QueryKey = (u64, u16, u16);

struct Dns {
    queries: Counter,
    responses: Counter,
    latency: Histogram,
    malformed: Counter,
    lost: Counter,
    /// When each query in flight was sent (kernel monotonic ns).
    pending: HashMap<QueryKey, u64>,
    pending_timeout_ns: u64,
    saturated: bool,
    /// Workload labels by cgroup id, for the current batch only.
    workloads: HashMap<u64, [String; 3]>,
}

impl Dns {
    /// Record a sample; a full label set drops it with one warning.
    fn record(&mut self, result: Result<()>) -> Result<()> {
        match result {
            Err(e) if matches!(e.metric_error(), Some(MetricError::CardinalityLimit(_))) => {
                if !self.saturated {
                    self.saturated = true;
                    warn!("{e}; DNS of new pods or query types is no longer counted");
                }
                Ok(())
            }
            result => result,
        }
    }

    fn handle(&mut self, event: &DnsEvent) -> Result<()> {
        let len = usize::from(event.len).min(event.message.len());
        let Some(msg) = Message::parse(&event.message[..len]) else {
            return self.malformed.inc(&[]);
        };
        // A query must go out, a response come in; anything else is not
        // the client side of DNS (e.g. a server on an unusual port).
        if msg.response != (event.direction == DIR_RX) {
            return self.malformed.inc(&[]);
        }
        let [ns, pod, container] = self
            .workloads
            .entry(event.cgroup_id)
            .or_insert_with(|| workload_labels(event.cgroup_id))
            .clone();
        let qtype = message::qtype_name(msg.qtype);
        let labels = [ns.as_str(), pod.as_str(), container.as_str(), &qtype];
        let key = (event.cgroup_id, event.local_port, msg.id);
        if event.direction == DIR_TX {
            if self.pending.len() < MAX_PENDING {
                self.pending.insert(key, event.ts_ns);
            }
            let r = self.queries.inc(&labels);
            return self.record(r);
        }
        let rcode = message::rcode_name(msg.rcode);
        let r = self.responses.inc(&[
            ns.as_str(),
            pod.as_str(),
            container.as_str(),
            &qtype,
            &rcode,
        ]);
        self.record(r)?;
        if let Some(sent) = self.pending.remove(&key) {
            let seconds = event.ts_ns.saturating_sub(sent) as f64 * 1e-9;
            let r = self.latency.observe(&labels, seconds);
            self.record(r)?;
        }
        Ok(())
    }
}

impl Plugin for Dns {
    fn init() -> Result<Self> {
        let timeout_ms: u64 = config::parse("pendingTimeoutMs")?.unwrap_or(5000);
        let plugin = Dns {
            queries: Counter::declare(
                "queries",
                "DNS queries sent over UDP, by workload and query type.",
                &["namespace", "pod", "container", "qtype"],
            )?,
            responses: Counter::declare(
                "responses",
                "DNS responses received over UDP, by workload, query type and return code.",
                &["namespace", "pod", "container", "qtype", "rcode"],
            )?,
            latency: Histogram::declare(
                "latency_seconds",
                "Time from a DNS query to its response, by workload and query type.",
                &["namespace", "pod", "container", "qtype"],
                &buckets(),
            )?,
            malformed: Counter::declare(
                "malformed",
                "DNS messages too short or inconsistent to read.",
                &[],
            )?,
            lost: Counter::declare("events_lost", "DNS messages dropped before counting.", &[])?,
            pending: HashMap::new(),
            pending_timeout_ns: timeout_ms.saturating_mul(1_000_000),
            saturated: false,
            workloads: HashMap::new(),
        };
        plugin.lost.add(&[], 0)?;
        plugin.malformed.add(&[], 0)?;
        info!("counting DNS over UDP");
        Ok(plugin)
    }

    fn on_events(&mut self, batch: &EventBatch) -> Result<()> {
        if batch.lost() > 0 {
            self.lost.add(&[], batch.lost())?;
        }
        self.workloads.clear();
        let mut newest = 0;
        for event in batch.decode::<DnsEvent>() {
            let event = event?;
            newest = newest.max(event.ts_ns);
            self.handle(&event)?;
        }
        // Forget the queries that will not be answered any more.
        let timeout = self.pending_timeout_ns;
        self.pending
            .retain(|_, sent| newest.saturating_sub(*sent) < timeout);
        Ok(())
    }
}

conductor_sdk::export_plugin!(Dns);
