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

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Arc;

    use super::*;
    use crate::host::{test_host, test_store};
    use k8s::Host;

    /// One pod, `web-1` in `shop`, with one container, cgroup 42, pid 7
    /// and IPs 10.1.0.5 and fd00::5.
    struct OnePod;

    fn workload() -> Identity {
        Identity::Workload(Workload {
            pod: Pod {
                namespace: "shop".into(),
                name: "web-1".into(),
                uid: "uid-1".into(),
                node: "n1".into(),
                owner: Some(("ReplicaSet".into(), "web".into())),
            },
            container: Some(Container {
                name: "app".into(),
                id: "c0ffee".into(),
                image: "web:1".into(),
            }),
        })
    }

    impl WorkloadsBackend for OnePod {
        fn by_cgroup_id(&self, id: u64) -> Identity {
            if id == 42 { workload() } else { Identity::Host }
        }
        fn by_pid(&self, pid: u32) -> Identity {
            if pid == 7 {
                workload()
            } else {
                Identity::Unknown
            }
        }
        fn by_container_id(&self, id: &str) -> Identity {
            if id == "c0ffee" {
                workload()
            } else {
                Identity::Unknown
            }
        }
        fn by_ip(&self, ip: IpAddr) -> Identity {
            if ip == "10.1.0.5".parse::<IpAddr>().unwrap()
                || ip == "fd00::5".parse::<IpAddr>().unwrap()
            {
                workload()
            } else {
                Identity::Unknown
            }
        }
        fn pod_labels(&self, uid: &str) -> Vec<(String, String)> {
            if uid == "uid-1" {
                vec![("app".into(), "web".into())]
            } else {
                vec![]
            }
        }
        fn pod_label(&self, uid: &str, key: &str) -> Option<String> {
            (uid == "uid-1" && key == "app").then(|| "web".into())
        }
        fn pod_annotations(&self, _: &str) -> Vec<(String, String)> {
            vec![]
        }
        fn pod_network(&self, uid: &str) -> Option<(Vec<IpAddr>, bool)> {
            (uid == "uid-1").then(|| {
                (
                    vec!["10.1.0.5".parse().unwrap(), "fd00::5".parse().unwrap()],
                    false,
                )
            })
        }
        fn cgroup_container_id(&self, id: u64) -> Option<String> {
            (id == 42).then(|| "c0ffee".into())
        }
    }

    fn is_web(id: &Identity) -> bool {
        matches!(id, Identity::Workload(w) if w.pod.name == "web-1" && w.container.as_ref().is_some_and(|c| c.name == "app"))
    }

    #[test]
    fn lookups_answer_from_the_backend_with_addresses_converted_both_ways() {
        let host = crate::PluginHost::new(
            "p",
            BTreeMap::new(),
            HashMap::new(),
            test_host("p").metrics.clone(),
        )
        .with_workloads(Arc::new(OnePod));
        let mut s = test_store(host);
        assert!(is_web(&s.by_cgroup_id(42).unwrap()));
        assert!(matches!(s.by_cgroup_id(1).unwrap(), Identity::Host));
        assert!(is_web(&s.by_pid(7).unwrap()));
        assert!(is_web(&s.by_container_id("c0ffee".into()).unwrap()));
        assert!(is_web(
            &s.by_ip(k8s::IpAddress::Ipv4((10, 1, 0, 5))).unwrap()
        ));
        assert!(is_web(
            &s.by_ip(k8s::IpAddress::Ipv6((0xfd00, 0, 0, 0, 0, 0, 0, 5)))
                .unwrap()
        ));
        assert!(matches!(
            s.by_ip(k8s::IpAddress::Ipv4((10, 1, 0, 6))).unwrap(),
            Identity::Unknown
        ));
        assert_eq!(
            s.pod_label("uid-1".into(), "app".into())
                .unwrap()
                .as_deref(),
            Some("web")
        );
        let net = s.pod_network("uid-1".into()).unwrap().unwrap();
        assert!(!net.host_network);
        assert!(matches!(net.ips[0], k8s::IpAddress::Ipv4((10, 1, 0, 5))));
        assert!(matches!(
            net.ips[1],
            k8s::IpAddress::Ipv6((0xfd00, 0, 0, 0, 0, 0, 0, 5))
        ));
        assert_eq!(
            s.cgroup_container_id(42).unwrap().as_deref(),
            Some("c0ffee")
        );
    }

    #[test]
    fn without_a_cache_everything_is_unknown() {
        let mut s = test_store(test_host("p"));
        assert!(matches!(s.by_cgroup_id(42).unwrap(), Identity::Unknown));
        assert!(matches!(s.by_pid(1).unwrap(), Identity::Unknown));
        assert!(s.pod_labels("uid-1".into()).unwrap().is_empty());
        assert!(s.pod_network("uid-1".into()).unwrap().is_none());
    }
}
