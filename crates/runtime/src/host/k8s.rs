//! `conductor:plugin/k8s`: which pod and container a cgroup, pid,
//! container id or IP belongs to, and a pod's labels, annotations and
//! network. The node's workload cache answers (a read lock and a hash
//! lookup per call); this module only converts between it and the WIT.

use std::net::IpAddr;

use super::WResult;
use crate::StoreData;
use crate::bindings::conductor::plugin::k8s;

pub use k8s::{Container, Identity, Network, Pod, Workload};

/// What a plugin's `k8s` lookups answer from, in the WIT's own terms.
pub trait WorkloadsBackend: Send + Sync {
    fn by_cgroup_id(&self, id: u64) -> Identity;
    fn by_pid(&self, pid: u32) -> Identity;
    fn by_container_id(&self, id: &str) -> Identity;
    fn by_ip(&self, ip: IpAddr) -> Identity;
    /// The labels of the pod with this uid (empty if unknown).
    fn pod_labels(&self, uid: &str) -> Vec<(String, String)>;
    fn pod_label(&self, uid: &str, key: &str) -> Option<String>;
    fn pod_annotations(&self, uid: &str) -> Vec<(String, String)>;
    fn pod_network(&self, uid: &str) -> Option<(Vec<IpAddr>, bool)>;
    fn cgroup_container_id(&self, id: u64) -> Option<String>;
}

/// No workload cache: every lookup answers `unknown`.
pub struct NoWorkloads;

impl WorkloadsBackend for NoWorkloads {
    fn by_cgroup_id(&self, _: u64) -> Identity {
        Identity::Unknown
    }
    fn by_pid(&self, _: u32) -> Identity {
        Identity::Unknown
    }
    fn by_container_id(&self, _: &str) -> Identity {
        Identity::Unknown
    }
    fn by_ip(&self, _: IpAddr) -> Identity {
        Identity::Unknown
    }
    fn pod_labels(&self, _: &str) -> Vec<(String, String)> {
        Vec::new()
    }
    fn pod_label(&self, _: &str, _: &str) -> Option<String> {
        None
    }
    fn pod_annotations(&self, _: &str) -> Vec<(String, String)> {
        Vec::new()
    }
    fn pod_network(&self, _: &str) -> Option<(Vec<IpAddr>, bool)> {
        None
    }
    fn cgroup_container_id(&self, _: u64) -> Option<String> {
        None
    }
}

fn wit_ip(ip: IpAddr) -> k8s::IpAddress {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            k8s::IpAddress::Ipv4((a, b, c, d))
        }
        IpAddr::V6(v6) => {
            let [a, b, c, d, e, f, g, h] = v6.segments();
            k8s::IpAddress::Ipv6((a, b, c, d, e, f, g, h))
        }
    }
}

fn from_wit_ip(ip: k8s::IpAddress) -> IpAddr {
    match ip {
        k8s::IpAddress::Ipv4((a, b, c, d)) => std::net::Ipv4Addr::new(a, b, c, d).into(),
        k8s::IpAddress::Ipv6((a, b, c, d, e, f, g, h)) => {
            std::net::Ipv6Addr::new(a, b, c, d, e, f, g, h).into()
        }
    }
}

impl k8s::Host for StoreData {
    fn by_cgroup_id(&mut self, id: u64) -> WResult<Identity> {
        Ok(self.host.workloads.by_cgroup_id(id))
    }
    fn by_pid(&mut self, pid: u32) -> WResult<Identity> {
        Ok(self.host.workloads.by_pid(pid))
    }
    fn by_container_id(&mut self, id: String) -> WResult<Identity> {
        Ok(self.host.workloads.by_container_id(&id))
    }
    fn by_ip(&mut self, ip: k8s::IpAddress) -> WResult<Identity> {
        Ok(self.host.workloads.by_ip(from_wit_ip(ip)))
    }
    fn pod_labels(&mut self, uid: String) -> WResult<Vec<(String, String)>> {
        Ok(self.host.workloads.pod_labels(&uid))
    }
    fn pod_label(&mut self, uid: String, key: String) -> WResult<Option<String>> {
        Ok(self.host.workloads.pod_label(&uid, &key))
    }
    fn pod_annotations(&mut self, uid: String) -> WResult<Vec<(String, String)>> {
        Ok(self.host.workloads.pod_annotations(&uid))
    }
    fn pod_network(&mut self, uid: String) -> WResult<Option<Network>> {
        Ok(self
            .host
            .workloads
            .pod_network(&uid)
            .map(|(ips, host_network)| Network {
                ips: ips.into_iter().map(wit_ip).collect(),
                host_network,
            }))
    }
    fn cgroup_container_id(&mut self, id: u64) -> WResult<Option<String>> {
        Ok(self.host.workloads.cgroup_container_id(id))
    }
}
