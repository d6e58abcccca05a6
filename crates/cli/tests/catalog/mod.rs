//! Shared by the catalog plugin tests (`catalog_*.rs`): pods laid out as
//! the kubelet lays them out (cgroup v2 directories under a unique test
//! directory of the real hierarchy, pods served by the fake API server),
//! network namespaces joined by a veth pair, and the plugins' own default
//! specs from `plugins/catalog/<name>/<name>.yaml`.
#![allow(dead_code)] // each test file uses its own part

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use conductor_node::k8s::cgroup::cgroup2_mount;
use conductor_test_support::*;
use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::Pod;

pub const NODE: &str = "catalog-node";

/// The default spec of catalog plugin `name`, pointing at the built
/// artifacts (`CONDUCTOR_ARTIFACTS`) instead of `target/plugins`.
pub fn default_spec(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/catalog")
        .join(name)
        .join(format!("{name}.yaml"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let dir = format!("{}/", artifacts().display());
    assert!(
        text.contains("../../../target/plugins/"),
        "{} names its artifacts under ../../../target/plugins/",
        path.display()
    );
    text.replace("../../../target/plugins/", &dir)
}

/// A unique directory of the real cgroup2 hierarchy, removed (deepest
/// first) when dropped.
pub struct TestCgroups {
    pub root: PathBuf,
}

impl TestCgroups {
    pub fn new(tag: &str) -> Self {
        let mount = cgroup2_mount().expect("cgroup2 is mounted");
        let root = mount.join(format!("conductor-{tag}-{}", std::process::id()));
        if root.exists() {
            remove_tree(&root);
        }
        std::fs::create_dir(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        Self { root }
    }

    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.root.join(rel);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        remove_tree(&self.root);
    }
}

pub fn remove_tree(root: &Path) {
    let mut dirs = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(d) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&d) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
        dirs.push(d);
    }
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        // A process that just exited may take a moment to leave.
        for _ in 0..100 {
            if std::fs::remove_dir(&d).is_ok() || !d.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if d.exists() {
            eprintln!("warning: could not remove test cgroup {}", d.display());
        }
    }
}

/// One container of a pod: its cgroup (containerd with the systemd driver,
/// as the kubelet lays it out) and the pod the fake API server serves.
pub struct TestPod {
    pub namespace: String,
    pub name: String,
    pub container: String,
    pub cgroup: PathBuf,
    pub pod: Pod,
}

impl TestPod {
    /// `seed` makes the container id and pod uid unique in the run.
    pub fn new(
        cgroups: &TestCgroups,
        seed: u64,
        namespace: &str,
        name: &str,
        ips: &[&str],
    ) -> Self {
        let pid = std::process::id();
        let id = format!(
            "{:016x}{:016x}{:032x}",
            seed,
            pid,
            seed.wrapping_mul(0x9e37_79b9)
        );
        let uid = format!("{pid:08x}-{seed:04x}-4{seed:03x}-8{seed:03x}-{seed:012x}");
        let slice_uid = uid.replace('-', "_");
        let cgroup = cgroups.mkdir(&format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{slice_uid}.slice/cri-containerd-{id}.scope"
        ));
        let container = "app".to_owned();
        let pod_ips: Vec<_> = ips.iter().map(|ip| serde_json::json!({"ip": ip})).collect();
        let pod = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "uid": uid},
            "spec": {"nodeName": NODE, "containers": [{"name": container, "image": "busybox"}]},
            "status": {
                "podIP": ips.first(), "podIPs": pod_ips,
                "containerStatuses": [{"name": container, "containerID": format!("containerd://{id}"),
                    "image": "busybox", "imageID": "", "ready": true, "restartCount": 0}]}
        }))
        .unwrap();
        TestPod {
            namespace: namespace.into(),
            name: name.into(),
            container,
            cgroup,
            pod,
        }
    }

    /// A command that runs in this container's cgroup (moved there before
    /// it executes) and, if `netns` is set, in that network namespace.
    pub fn command(&self, netns: Option<&str>, program: &str, args: &[&str]) -> Command {
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        };
        cmd.args(args);
        let procs = self.cgroup.join("cgroup.procs");
        // SAFETY: only a write(2) of a constant between fork and exec.
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, b"0"));
        }
        cmd
    }

    /// `namespace="..",pod="..",container=".."`, as the plugins label.
    pub fn labels(&self) -> String {
        format!(
            r#"namespace="{}",pod="{}",container="{}""#,
            self.namespace, self.name, self.container
        )
    }
}

/// The fake API server with `pods` and a `conductor run` of `spec` that
/// knows them (node name, kubeconfig, cgroup root), started once its cache
/// holds every pod.
pub struct Cluster {
    pub api: FakeApiServer,
    pub host: Host,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start(spec: &str, cgroups: &TestCgroups, pods: &[&TestPod]) -> Self {
        let api = FakeApiServer::start();
        for p in pods {
            api.create(&p.pod);
        }
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig);
        let host = Host::start_with(
            spec,
            None,
            &[
                "--node-name",
                NODE,
                "--kubeconfig",
                kubeconfig.to_str().unwrap(),
                "--cgroup-root",
                cgroups.root.to_str().unwrap(),
            ],
            &[],
        );
        // Labels are resolved when samples are recorded: the cache must
        // know the pods before the traffic is counted.
        host.wait_for_metric("conductor_k8s_pods", Duration::from_secs(30), |v| {
            v >= pods.len() as f64
        });
        Cluster {
            api,
            host,
            _dir: dir,
        }
    }
}

pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two network namespaces joined by a veth pair, IPv4 only, with static
/// neighbour entries (no ARP exchange to wait for or to count).
pub struct NetnsPair {
    pub a: String,
    pub b: String,
    pub a_if: String,
    pub b_if: String,
    pub a_addr: String,
    pub b_addr: String,
    /// A second address of `b` that no pod has.
    pub b_extra: String,
}

impl NetnsPair {
    pub fn new(tag: &str, subnet: u8) -> Self {
        let id = std::process::id() % 100_000;
        let n = id % 250;
        let p = NetnsPair {
            a: format!("cdt-{tag}a-{id}"),
            b: format!("cdt-{tag}b-{id}"),
            a_if: format!("{tag}a{id}"),
            b_if: format!("{tag}b{id}"),
            a_addr: format!("10.{subnet}.{n}.1"),
            b_addr: format!("10.{subnet}.{n}.2"),
            b_extra: format!("10.{subnet}.{n}.3"),
        };
        for ns in [&p.a, &p.b] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
            ip(&["netns", "add", ns]);
            ip(&[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
            ]);
            ip(&[
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
        }
        let (mac_a, mac_b) = ("02:cd:00:00:00:0a", "02:cd:00:00:00:0b");
        ip(&[
            "link", "add", &p.a_if, "address", mac_a, "netns", &p.a, "type", "veth", "peer",
            "name", &p.b_if, "address", mac_b, "netns", &p.b,
        ]);
        for (ns, dev, addr) in [(&p.a, &p.a_if, &p.a_addr), (&p.b, &p.b_if, &p.b_addr)] {
            ip(&["-n", ns, "addr", "add", &format!("{addr}/29"), "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&[
            "-n",
            &p.b,
            "addr",
            "add",
            &format!("{}/29", p.b_extra),
            "dev",
            &p.b_if,
        ]);
        for (ns, dev, addr, mac) in [
            (&p.a, &p.a_if, &p.b_addr, mac_b),
            (&p.a, &p.a_if, &p.b_extra, mac_b),
            (&p.b, &p.b_if, &p.a_addr, mac_a),
        ] {
            ip(&[
                "-n",
                ns,
                "neigh",
                "replace",
                addr,
                "lladdr",
                mac,
                "dev",
                dev,
                "nud",
                "permanent",
            ]);
        }
        p
    }
}

impl Drop for NetnsPair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The interpreter's full path (`ip netns exec` needs no PATH lookup then).
pub fn python() -> String {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}
