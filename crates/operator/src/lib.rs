//! eBPFConductor's Kubernetes operator: `EbpfPlugin` resources in, plugins
//! running on the selected nodes out. See crates/operator/README.md.
//!
//! - [`crd`]: the custom resources (and `conductor-operator crd`).
//! - [`node`]: the per-node agent, beside each node's host.
//! - [`cluster`]: the cluster controller: finalizers, departed nodes, status.
//! - [`status`]: how node states and the aggregate are computed.
//! - [`host`]: the host daemon's gRPC API over its Unix socket.
//! - [`bpfman`]: bpfman-operator's per-node ClusterBpfApplicationState, read for `clusterBpfApplication`.

pub mod bpfman;
pub mod cluster;
pub mod crd;
pub mod host;
pub mod node;
pub mod status;
