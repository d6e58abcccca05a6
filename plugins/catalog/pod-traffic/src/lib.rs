//! Bytes, packets and drops per pod, and per peer pod.
//!
//! The BPF programs (`bpf/pod_traffic.bpf.c`) count every IP packet a socket
//! receives or sends in the per-CPU map `traffic`, keyed by the socket's
//! cgroup, the peer address and the direction, and every dropped packet in
//! `drops`, keyed by the socket's cgroup and a drop category. This component
//! reads both maps when metrics are collected and adds what changed since
//! the last read to its counters. Exported metrics (docs/src/catalog/pod-traffic.md):
//!
//! - `bytes{direction, namespace, pod, container, peer_namespace, peer_pod}`:
//!   IP bytes (headers included) received (`rx`) and sent (`tx`);
//! - `packets{...}`: the same in packets;
//! - `drops{namespace, pod, container, reason}`: packets the kernel dropped;
//! - `flows`: (cgroup, peer, direction) entries the kernel map holds.
//!
//! The workload labels come from the host's Kubernetes cache by cgroup id
//! (empty for the node's own sockets; `container` alone, 12 hex digits, for a
//! container the cache has no pod for yet). The peer is a pod of this node
//! when the cache knows its IP, `localhost` for loopback addresses and
//! `outside` otherwise (with `peer_namespace` empty).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use conductor_sdk::k8s;
use conductor_sdk::metrics::MetricError;
use conductor_sdk::prelude::*;

/// `struct traffic_key` of the BPF program.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Pod, Zeroable)]
#[bytemuck(crate = "conductor_sdk::bytemuck")]
struct TrafficKey {
    cgroup_id: u64,
    peer: [u8; 16],
    direction: u8,
    _pad: [u8; 7],
}

/// `struct traffic_value` of the BPF program.
#[repr(C)]
#[derive(Clone, Copy, Default, Pod, Zeroable)]
#[bytemuck(crate = "conductor_sdk::bytemuck")]
struct TrafficValue {
    bytes: u64,
    packets: u64,
}

/// `struct drop_key` of the BPF program.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash, Pod, Zeroable)]
#[bytemuck(crate = "conductor_sdk::bytemuck")]
struct DropKey {
    cgroup_id: u64,
    kind: u32,
    _pad: u32,
}

const _: () = assert!(size_of::<TrafficKey>() == 32 && size_of::<TrafficValue>() == 16);
const _: () = assert!(size_of::<DropKey>() == 16);

/// `enum drop_kind` of the BPF program, as the `reason` label.
fn drop_reason(kind: u32) -> &'static str {
    match kind {
        1 => "not_specified",
        2 => "no_socket",
        3 => "socket_filter",
        4 => "netfilter",
        5 => "socket_rcvbuff",
        6 => "proto_mem",
        7 => "cpu_backlog",
        8 => "qdisc",
        _ => "other",
    }
}

const TRAFFIC_LABELS: [&str; 6] = [
    "direction",
    "namespace",
    "pod",
    "container",
    "peer_namespace",
    "peer_pod",
];
const DROP_LABELS: [&str; 4] = ["namespace", "pod", "container", "reason"];

struct PodTraffic {
    traffic: TypedMap<TrafficKey, TrafficValue>,
    drops_map: TypedMap<DropKey, u64>,
    bytes: Counter,
    packets: Counter,
    drops: Counter,
    flows: Gauge,
    /// Totals of each map entry at the last read: what is added is the
    /// difference. An entry the LRU evicted and the kernel re-created
    /// starts again from zero, which shows as a total below the last one.
    last_traffic: HashMap<TrafficKey, TrafficValue>,
    last_drops: HashMap<DropKey, u64>,
    /// Whether a cardinality limit was already reported.
    saturated: bool,
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

impl PodTraffic {
    /// The current totals of every entry of both maps, summed over CPUs.
    fn read(&self) -> Result<(HashMap<TrafficKey, TrafficValue>, HashMap<DropKey, u64>)> {
        let mut traffic = HashMap::new();
        for entry in self.traffic.iter_per_cpu() {
            let (key, per_cpu) = entry?;
            let mut total = TrafficValue::default();
            for v in per_cpu {
                total.bytes = total.bytes.wrapping_add(v.bytes);
                total.packets = total.packets.wrapping_add(v.packets);
            }
            traffic.insert(key, total);
        }
        let mut drops = HashMap::new();
        for entry in self.drops_map.iter_per_cpu() {
            let (key, per_cpu) = entry?;
            drops.insert(key, per_cpu.iter().fold(0u64, |a, n| a.wrapping_add(*n)));
        }
        Ok((traffic, drops))
    }

    /// Record a sample; a full label set drops it with one warning.
    fn record(&mut self, result: Result<()>) -> Result<()> {
        match result {
            Err(e) if matches!(e.metric_error(), Some(MetricError::CardinalityLimit(_))) => {
                if !self.saturated {
                    self.saturated = true;
                    warn!("{e}; traffic of new pods or peers is no longer counted");
                }
                Ok(())
            }
            result => result,
        }
    }
}

impl Plugin for PodTraffic {
    fn init() -> Result<Self> {
        let mut plugin = PodTraffic {
            traffic: TypedMap::open("traffic")?,
            drops_map: TypedMap::open("drops")?,
            bytes: Counter::declare(
                "bytes",
                "IP bytes (headers included) received (rx) and sent (tx) by sockets of a workload, by peer pod (outside: not a pod of this node).",
                &TRAFFIC_LABELS,
            )?,
            packets: Counter::declare(
                "packets",
                "IP packets received (rx) and sent (tx) by sockets of a workload, by peer pod (outside: not a pod of this node).",
                &TRAFFIC_LABELS,
            )?,
            drops: Counter::declare(
                "drops",
                "Packets the kernel dropped, by the workload whose socket sent them or was to receive them (empty: none or the node's) and reason.",
                &DROP_LABELS,
            )?,
            flows: Gauge::declare(
                "flows",
                "Entries (workload, peer, direction) in the kernel's traffic map.",
                &[],
            )?,
            last_traffic: HashMap::new(),
            last_drops: HashMap::new(),
            saturated: false,
        };
        // After a restart the maps still hold everything counted before,
        // which the host's counters already have: start from there.
        let (traffic, drops) = plugin.read()?;
        plugin.flows.set(&[], traffic.len() as f64)?;
        info!(
            "counting pod traffic; {} flow(s) already in the kernel map",
            traffic.len()
        );
        plugin.last_traffic = traffic;
        plugin.last_drops = drops;
        Ok(plugin)
    }

    fn collect(&mut self) -> Result<()> {
        let (traffic, drops) = self.read()?;
        // One cache lookup per distinct cgroup and peer per collect: pods
        // come and go, so nothing is kept between collects.
        let mut workloads: HashMap<u64, [String; 3]> = HashMap::new();
        let mut peers: HashMap<[u8; 16], [String; 2]> = HashMap::new();
        for (key, now) in &traffic {
            let before = self.last_traffic.get(key).copied().unwrap_or_default();
            let (bytes, packets) = if now.packets >= before.packets {
                (
                    now.bytes.wrapping_sub(before.bytes),
                    now.packets - before.packets,
                )
            } else {
                (now.bytes, now.packets) // evicted and re-created
            };
            if packets == 0 {
                continue;
            }
            let [ns, pod, container] = workloads
                .entry(key.cgroup_id)
                .or_insert_with(|| workload_labels(key.cgroup_id))
                .clone();
            let [peer_ns, peer_pod] = peers
                .entry(key.peer)
                .or_insert_with(|| peer_labels(key.peer))
                .clone();
            let direction = if key.direction == 0 { "rx" } else { "tx" };
            let labels = [
                direction,
                ns.as_str(),
                pod.as_str(),
                container.as_str(),
                peer_ns.as_str(),
                peer_pod.as_str(),
            ];
            let r = self.bytes.add(&labels, bytes);
            self.record(r)?;
            let r = self.packets.add(&labels, packets);
            self.record(r)?;
        }
        for (key, &now) in &drops {
            let before = self.last_drops.get(key).copied().unwrap_or_default();
            let delta = if now >= before { now - before } else { now };
            if delta == 0 {
                continue;
            }
            let [ns, pod, container] = workloads
                .entry(key.cgroup_id)
                .or_insert_with(|| workload_labels(key.cgroup_id))
                .clone();
            let labels = [
                ns.as_str(),
                pod.as_str(),
                container.as_str(),
                drop_reason(key.kind),
            ];
            let r = self.drops.add(&labels, delta);
            self.record(r)?;
        }
        self.flows.set(&[], traffic.len() as f64)?;
        self.last_traffic = traffic;
        self.last_drops = drops;
        Ok(())
    }
}

conductor_sdk::export_plugin!(PodTraffic);
