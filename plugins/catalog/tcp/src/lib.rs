//! TCP connections, retransmits and round-trip time per pod and peer pod.
//!
//! The BPF programs (`bpf/tcp.bpf.c`) submit one `struct tcp_event` per
//! connection opened, accepted, failed or closed and per retransmitted
//! segment into the ring buffer `events`. Exported metrics
//! (docs/src/catalog/tcp.md):
//!
//! - `connections{event, namespace, pod, container, peer_namespace, peer_pod}`:
//!   `event` is `opened` (outgoing, established), `accepted` (incoming,
//!   established), `failed` (ended before it was established: refused,
//!   timed out, reset) or `closed` (an established connection ended);
//! - `retransmits{namespace, pod, container, peer_namespace, peer_pod}`:
//!   segments sent again, SYNs included;
//! - `rtt_seconds{...}`: a histogram of each connection's smoothed
//!   round-trip time when it closes;
//! - `events_lost`: records dropped before they were counted.
//!
//! Workload labels come from the host's Kubernetes cache by the socket's
//! cgroup; the peer is a pod of this node the cache knows by IP,
//! `localhost` for loopback, or `outside`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use conductor_sdk::k8s;
use conductor_sdk::metrics::MetricError;
use conductor_sdk::prelude::*;

/// `struct tcp_event` of the BPF program.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
#[bytemuck(crate = "conductor_sdk::bytemuck")]
struct TcpEvent {
    cgroup_id: u64,
    peer: [u8; 16],
    srtt_us: u32,
    kind: u8,
    _pad: [u8; 3],
}

const _: () = assert!(size_of::<TcpEvent>() == 32, "struct tcp_event is 32 bytes");

const LABELS: [&str; 5] = [
    "namespace",
    "pod",
    "container",
    "peer_namespace",
    "peer_pod",
];

/// Round-trip time buckets, in seconds: 10 µs (a veth between two
/// namespaces) to 2.6 s, doubling.
fn rtt_buckets() -> Vec<f64> {
    (0..19).map(|i| 10e-6 * f64::from(1u32 << i)).collect()
}

struct Tcp {
    connections: Counter,
    retransmits: Counter,
    rtt: Histogram,
    lost: Counter,
    saturated: bool,
    /// Labels by (cgroup, peer), for the current batch only (pods come and go).
    labels: HashMap<(u64, [u8; 16]), [String; 5]>,
}

/// namespace, pod and container label values for a cgroup.
fn workload_labels(cgroup_id: u64) -> [String; 3] {
    // Resolved through the SDK's per-call cache: one host call per cgroup
    // per call into the plugin.
    Workload::of_cgroup(cgroup_id).labels().map(String::from)
}

/// peer_namespace and peer_pod label values for a peer address.
fn peer_labels(peer: [u8; 16]) -> [String; 2] {
    let v6 = Ipv6Addr::from(peer);
    let ip = match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    };
    if ip.is_loopback() {
        return [String::new(), "localhost".into()];
    }
    let address = match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            k8s::IpAddress::Ipv4((a, b, c, d))
        }
        IpAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.segments();
            k8s::IpAddress::Ipv6((a, b, c, d, e, f, g, h))
        }
    };
    match k8s::by_ip(address) {
        k8s::Identity::Workload(w) => [w.pod.namespace, w.pod.name],
        _ => [String::new(), "outside".into()],
    }
}

impl Tcp {
    /// Record a sample; a full label set drops it with one warning.
    fn record(&mut self, result: Result<()>) -> Result<()> {
        match result {
            Err(e) if matches!(e.metric_error(), Some(MetricError::CardinalityLimit(_))) => {
                if !self.saturated {
                    self.saturated = true;
                    warn!("{e}; connections of new pods or peers are no longer counted");
                }
                Ok(())
            }
            result => result,
        }
    }
}

impl Plugin for Tcp {
    fn init() -> Result<Self> {
        let mut conn_labels = vec!["event"];
        conn_labels.extend(LABELS);
        let plugin = Tcp {
            connections: Counter::declare(
                "connections",
                "TCP connections by event (opened, accepted, failed, closed), workload and peer pod (outside: not a pod of this node).",
                &conn_labels,
            )?,
            retransmits: Counter::declare(
                "retransmits",
                "TCP segments retransmitted (SYNs included), by workload and peer pod.",
                &LABELS,
            )?,
            rtt: Histogram::declare(
                "rtt_seconds",
                "Smoothed round-trip time of TCP connections when they close, by workload and peer pod.",
                &LABELS,
                &rtt_buckets(),
            )?,
            lost: Counter::declare("events_lost", "TCP events dropped before counting.", &[])?,
            saturated: false,
            labels: HashMap::new(),
        };
        plugin.lost.add(&[], 0)?;
        info!("counting TCP connections");
        Ok(plugin)
    }

    fn on_events(&mut self, batch: &EventBatch) -> Result<()> {
        if batch.lost() > 0 {
            self.lost.add(&[], batch.lost())?;
        }
        self.labels.clear();
        for event in batch.decode::<TcpEvent>() {
            let event = event?;
            let [ns, pod, container, peer_ns, peer_pod] = self
                .labels
                .entry((event.cgroup_id, event.peer))
                .or_insert_with(|| {
                    let [ns, pod, container] = workload_labels(event.cgroup_id);
                    let [peer_ns, peer_pod] = peer_labels(event.peer);
                    [ns, pod, container, peer_ns, peer_pod]
                })
                .clone();
            let labels = [
                ns.as_str(),
                pod.as_str(),
                container.as_str(),
                peer_ns.as_str(),
                peer_pod.as_str(),
            ];
            let what = match event.kind {
                1 => "opened",
                2 => "accepted",
                3 => "failed",
                4 => "closed",
                5 => {
                    let r = self.retransmits.inc(&labels);
                    self.record(r)?;
                    continue;
                }
                other => {
                    warn!("unknown TCP event kind {other}: is the BPF object of another version?");
                    continue;
                }
            };
            let mut with_event = vec![what];
            with_event.extend(labels);
            let r = self.connections.inc(&with_event);
            self.record(r)?;
            if event.kind == 4 {
                let r = self.rtt.observe(&labels, f64::from(event.srtt_us) * 1e-6);
                self.record(r)?;
            }
        }
        Ok(())
    }
}

conductor_sdk::export_plugin!(Tcp);
