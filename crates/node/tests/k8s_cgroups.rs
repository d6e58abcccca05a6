//! Cgroup → container → pod on the real kernel: cgroup v2 directories laid
//! out as containerd and CRI-O do (systemd and cgroupfs drivers) under a
//! unique directory of the real cgroup2 mount, real processes moved into
//! them, pods served by the fake API server, and the real exec-counter
//! plugin labelling its metric from live `sched_process_exec` events.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conductor_node::k8s::cgroup::cgroup2_mount;
use conductor_node::k8s::{Identity, K8sConfig, Workloads};
use conductor_node::metrics::Metrics;
use conductor_test_support::*;
use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::Pod;

/// A unique directory of the real cgroup2 hierarchy, removed (deepest
/// first) when dropped.
struct TestCgroups {
    root: PathBuf,
}

impl TestCgroups {
    fn new() -> Self {
        let mount = cgroup2_mount().expect("cgroup2 is mounted");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let root = mount.join(format!("conductor-test-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        Self { root }
    }

    fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.root.join(rel);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }

    /// Run `bin` once inside the cgroup `dir`: the shell moves itself there,
    /// then execs it, so the exec event comes from inside.
    fn exec_in(&self, dir: &Path, bin: &Path) {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > '{}/cgroup.procs' && exec '{}'",
                dir.display(),
                bin.display()
            ))
            .status()
            .unwrap();
        assert!(
            status.success(),
            "running {} in {}",
            bin.display(),
            dir.display()
        );
    }

    /// A `sleep` living in `dir` until killed.
    fn sleeper_in(&self, dir: &Path) -> Sleeper {
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > '{}/cgroup.procs' && exec sleep 600",
                dir.display()
            ))
            .spawn()
            .unwrap();
        // Wait until it has moved.
        let until = Instant::now() + Duration::from_secs(10);
        let want = format!(
            "0::/{}",
            dir.strip_prefix(cgroup2_mount().unwrap())
                .unwrap()
                .display()
        );
        loop {
            let now =
                std::fs::read_to_string(format!("/proc/{}/cgroup", child.id())).unwrap_or_default();
            if now.lines().any(|l| l == want) {
                break;
            }
            assert!(
                Instant::now() < until,
                "process never moved to {want}: {now}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Sleeper(child)
    }
}

struct Sleeper(Child);

impl Sleeper {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        let mut dirs = Vec::new();
        let mut stack = vec![self.root.clone()];
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
}

const NODE: &str = "cgroup-node";

fn hex(seed: u64) -> String {
    // 64 lowercase hex digits, unique per test run.
    format!(
        "{:016x}{:016x}{:032x}",
        seed,
        std::process::id(),
        seed.wrapping_mul(0x9e37_79b9)
    )
}

fn uid(seed: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        std::process::id(),
        seed,
        seed,
        seed,
        seed
    )
}

/// A pod of this node with one container whose status carries `container_id`.
fn pod(ns: &str, name: &str, uid: &str, container: &str, container_id: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "uid": uid},
        "spec": {"nodeName": NODE, "containers": [{"name": container, "image": "busybox"}]},
        "status": {"containerStatuses": [{"name": container, "containerID": container_id,
            "image": "busybox", "imageID": "", "ready": true, "restartCount": 0}]}
    }))
    .unwrap()
}

/// One layout: where the container's cgroup goes and how the kubelet reports its id.
struct Layout {
    name: &'static str,
    dir: String,
    container_id: String,
    pod_uid: String,
}

fn layouts() -> Vec<Layout> {
    let mut v = Vec::new();
    for (i, name) in [
        "containerd-systemd",
        "containerd-cgroupfs",
        "crio-systemd",
        "crio-cgroupfs",
    ]
    .into_iter()
    .enumerate()
    {
        let id = hex(i as u64 + 1);
        let u = uid(i as u64 + 1);
        let su = u.replace('-', "_");
        let (dir, scheme) = match name {
            "containerd-systemd" => (
                format!(
                    "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{su}.slice/cri-containerd-{id}.scope"
                ),
                "containerd",
            ),
            "containerd-cgroupfs" => (format!("kubepods/besteffort/pod{u}/{id}"), "containerd"),
            "crio-systemd" => (
                format!("kubepods.slice/kubepods-pod{su}.slice/crio-{id}.scope"),
                "cri-o",
            ),
            _ => (format!("kubepods/burstable/pod{u}/crio-{id}"), "cri-o"),
        };
        v.push(Layout {
            name,
            dir,
            container_id: format!("{scheme}://{id}"),
            pod_uid: u,
        });
    }
    v
}

#[test]
fn exec_counter_labels_execs_with_their_pod_in_every_runtime_layout() {
    if !require_root() {
        return;
    }
    let cgroups = TestCgroups::new();
    let api = FakeApiServer::start();
    let layouts = layouts();
    for (i, l) in layouts.iter().enumerate() {
        api.create(&pod(
            &format!("ns-{i}"),
            &format!("pod-{}", l.name),
            &l.pod_uid,
            "app",
            &l.container_id,
        ));
    }
    // Half the cgroups exist before the host starts (found by the scan),
    // half appear while it runs (found through inotify).
    let (before, after) = layouts.split_at(2);
    for l in before {
        cgroups.mkdir(&l.dir);
    }
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let host = Host::start_with(
        &exec_counter_spec("k8s-execs"),
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
    for l in after {
        cgroups.mkdir(&l.dir);
    }

    let bin = UniqueBinary::new("cndtrk8s");
    // Every exec of `bin`, whatever its labels: tells when an exec was handled.
    let handled = |text: &str| -> f64 {
        let needle = format!(r#"comm="{}""#, bin.comm);
        text.lines()
            .filter(|l| l.starts_with("k8s_execs__execs_total{") && l.contains(&needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    for (i, l) in layouts.iter().enumerate() {
        let series = format!(
            r#"k8s_execs__execs_total{{plugin="k8s-execs",comm="{}",namespace="ns-{i}",pod="pod-{}",container="app"}}"#,
            bin.comm, l.name
        );
        let until = Instant::now() + Duration::from_secs(30);
        let mut tries = 0;
        loop {
            let before_exec = handled(&host.scrape());
            cgroups.exec_in(&cgroups.root.join(&l.dir), &bin.path);
            tries += 1;
            while handled(&host.scrape()) <= before_exec {
                assert!(
                    Instant::now() < until,
                    "exec never counted\n{}",
                    host.log_text()
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            if value(&host.scrape(), &series).is_some() {
                break;
            }
            // Only a cgroup made a moment ago may reach the cache after the
            // exec (the sample then has the container id only): try again.
            assert!(
                after.iter().any(|a| a.name == l.name),
                "{}: a cgroup that existed at start was not attributed on the first exec\nmetrics:\n{}",
                l.name,
                host.scrape()
            );
            assert!(
                Instant::now() < until,
                "{}: no sample {series}\nmetrics:\n{}\nlog:\n{}",
                l.name,
                host.scrape(),
                host.log_text()
            );
        }
        println!("{}: attributed after {tries} exec(s)", l.name);
        assert_eq!(value(&host.scrape(), &series), Some(1.0), "{series}");
    }
    // The node's own processes: empty workload labels.
    bin.run(2);
    host.wait_for_metric(
        &format!(
            r#"k8s_execs__execs_total{{plugin="k8s-execs",comm="{}",namespace="",pod="",container=""}}"#,
            bin.comm
        ),
        Duration::from_secs(15),
        |v| v >= 2.0,
    );
    let text = host.scrape();
    assert_eq!(
        value(&text, "conductor_k8s_cache_stale"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(value(&text, "conductor_k8s_pods"), Some(4.0), "{text}");
    assert!(host.stop().success());
}

struct Cache {
    workloads: Arc<Workloads>,
    metrics: Metrics,
}

async fn start_cache(api: &FakeApiServer, root: &Path, min_rescan: Duration) -> Cache {
    let client = kube::Client::try_from(api.kube_config()).unwrap();
    let metrics = Metrics::new();
    let config = K8sConfig {
        node_name: Some(NODE.into()),
        cgroup_root: Some(root.to_owned()),
        min_rescan,
        sync_timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let workloads = Workloads::start_with_client(
        Some((client, NODE.into())),
        config,
        metrics.host.k8s.clone(),
    )
    .await;
    Cache { workloads, metrics }
}

fn ino(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().ino()
}

fn pod_name(id: &Identity) -> Option<(&str, Option<&str>)> {
    match id {
        Identity::Workload { pod, .. } => {
            Some((pod.name.as_str(), id.container().map(|c| c.name.as_str())))
        }
        _ => None,
    }
}

async fn eventually(what: &str, ok: impl Fn() -> bool) {
    let until = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < until, "{what}: never happened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid_cgroup_and_host_lookups_on_the_real_kernel() {
    if !require_root() {
        return;
    }
    let cgroups = TestCgroups::new();
    let api = FakeApiServer::start();
    let l = &layouts()[0];
    api.create(&pod("shop", "web", &l.pod_uid, "nginx", &l.container_id));
    let container_dir = cgroups.mkdir(&l.dir);
    let service_dir = cgroups.mkdir("system.slice/node-agent.service");
    // A container the API server does not know (yet).
    let stranger_id = hex(99);
    let stranger_dir = cgroups.mkdir(&format!("kubepods/burstable/pod{}/{stranger_id}", uid(99)));

    let cache = start_cache(&api, &cgroups.root, Duration::from_millis(200)).await;
    let w = &cache.workloads;

    // By cgroup id (the directory inode, as bpf_get_current_cgroup_id() returns).
    assert_eq!(
        pod_name(&w.by_cgroup_id(ino(&container_dir))),
        Some(("web", Some("nginx")))
    );
    assert!(matches!(w.by_cgroup_id(ino(&service_dir)), Identity::Host));
    assert!(matches!(w.by_cgroup_id(ino(&cgroups.root)), Identity::Host));
    assert!(matches!(
        w.by_cgroup_id(ino(&stranger_dir)),
        Identity::Unknown
    ));
    assert_eq!(
        w.container_id_of_cgroup(ino(&stranger_dir)).as_deref(),
        Some(stranger_id.as_str())
    );

    // By pid: real processes moved into the cgroups.
    let in_pod = cgroups.sleeper_in(&container_dir);
    let on_node = cgroups.sleeper_in(&service_dir);
    assert_eq!(
        pod_name(&w.by_pid(in_pod.pid())),
        Some(("web", Some("nginx")))
    );
    assert!(matches!(w.by_pid(on_node.pid()), Identity::Host));
    assert!(
        matches!(w.by_pid(std::process::id()), Identity::Host),
        "the test itself runs on the node"
    );
    assert!(
        matches!(w.by_pid(u32::MAX), Identity::Unknown),
        "no such process"
    );

    // The pod appears later: the same cgroup now resolves.
    api.create(&pod(
        "shop",
        "late",
        &uid(99),
        "worker",
        &format!("cri-o://{stranger_id}"),
    ));
    eventually("the late pod's container resolves", || {
        pod_name(&w.by_cgroup_id(ino(&stranger_dir))) == Some(("late", Some("worker")))
    })
    .await;

    // A new container cgroup is seen through inotify.
    let fresh = cgroups.mkdir(&format!("kubepods/burstable/pod{}/{}", l.pod_uid, hex(7)));
    eventually("a new cgroup directory is indexed", || {
        w.container_id_of_cgroup(ino(&fresh)).as_deref() == Some(hex(7).as_str())
    })
    .await;
    // A cgroup inside a container is not watched: a miss finds it by a rescan.
    let nested = cgroups.mkdir(&format!("{}/inner", l.dir));
    eventually("a nested cgroup resolves after a rescan", || {
        pod_name(&w.by_cgroup_id(ino(&nested))) == Some(("web", Some("nginx")))
    })
    .await;

    // What a lookup costs (printed, not asserted: this build is unoptimised
    // and the machine shared).
    let id = ino(&container_dir);
    let started = Instant::now();
    const LOOKUPS: u32 = 100_000;
    for _ in 0..LOOKUPS {
        std::hint::black_box(w.by_cgroup_id(std::hint::black_box(id)));
    }
    println!(
        "by_cgroup_id hit: {:?} per lookup (host side, without the WIT copy)",
        started.elapsed() / LOOKUPS
    );

    // A storm of misses does not become a storm of scans: at most one scan
    // per rescan interval (200 ms) over the storm, however many misses.
    let scans_before = cache.metrics.host.k8s.cgroup_scans.get();
    let started = Instant::now();
    let mut misses = 0u64;
    while started.elapsed() < Duration::from_secs(1) {
        for _ in 0..1000 {
            misses += 1;
            let _ = w.by_cgroup_id(u64::MAX - misses);
        }
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let elapsed = started.elapsed();
    let scans = cache.metrics.host.k8s.cgroup_scans.get() - scans_before;
    let bound = elapsed.as_millis() as u64 / 200 + 1;
    println!("{misses} misses in {elapsed:?} caused {scans} rescans (bound {bound})");
    assert!(scans >= 1, "misses must lead to a rescan");
    assert!(
        scans <= bound,
        "{scans} rescans for {misses} misses in {elapsed:?}"
    );

    // Removed directories disappear from the index.
    let gone = ino(&fresh);
    std::fs::remove_dir(&fresh).unwrap();
    eventually("a removed cgroup is forgotten", || {
        w.cgroups().unwrap().peek(gone).is_none()
    })
    .await;
    drop(in_pod);
    drop(on_node);
}
