//! The oomkill catalog plugin on the real kernel, with its default spec: a
//! process of a pod's container allocates past a memory limit of its own
//! cgroup until the OOM killer kills it, and the kill is counted once, with
//! the pod's labels.

mod catalog;

use std::path::PathBuf;

use catalog::*;
use conductor_node::k8s::cgroup::cgroup2_mount;
use conductor_test_support::*;

/// The memory limit of the test's cgroup.
const LIMIT: &str = "33554432"; // 32 MiB

/// A cgroup with a memory limit: the pod's own cgroup v2 directory where
/// the memory controller is on cgroup v2, else a cgroup of the v1 memory
/// hierarchy (hybrid systems, where cgroup v2 has no memory controller).
struct MemoryLimit {
    dir: PathBuf,
    /// A v1 directory to remove on drop.
    v1: bool,
}

impl MemoryLimit {
    fn new(pod: &TestPod) -> Self {
        let v2 = cgroup2_mount().unwrap();
        let controllers = std::fs::read_to_string(v2.join("cgroup.controllers")).unwrap();
        if controllers.split_whitespace().any(|c| c == "memory") {
            // Enable the controller in every ancestor of the container's
            // directory, from the root down.
            let mut ancestors: Vec<_> = pod
                .cgroup
                .ancestors()
                .skip(1)
                .take_while(|a| a.starts_with(&v2))
                .collect();
            ancestors.reverse();
            for a in ancestors {
                let _ = std::fs::write(a.join("cgroup.subtree_control"), "+memory");
            }
            std::fs::write(pod.cgroup.join("memory.max"), LIMIT).unwrap();
            let _ = std::fs::write(pod.cgroup.join("memory.swap.max"), "0");
            MemoryLimit {
                dir: pod.cgroup.clone(),
                v1: false,
            }
        } else {
            let dir = PathBuf::from(format!(
                "/sys/fs/cgroup/memory/conductor-oomkill-{}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap_or_else(|e| {
                panic!(
                    "no memory controller on cgroup v2 and none at {}: {e}",
                    dir.display()
                )
            });
            std::fs::write(dir.join("memory.limit_in_bytes"), LIMIT).unwrap();
            MemoryLimit { dir, v1: true }
        }
    }

    /// How many times the OOM killer killed in this cgroup.
    fn oom_kills(&self) -> u64 {
        let file = if self.v1 {
            "memory.oom_control"
        } else {
            "memory.events"
        };
        let text = std::fs::read_to_string(self.dir.join(file)).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no oom_kill in {file}: {text}"))
    }
}

impl Drop for MemoryLimit {
    fn drop(&mut self) {
        if self.v1 {
            for _ in 0..100 {
                if std::fs::remove_dir(&self.dir).is_ok() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn oomkill_counts_a_kill_in_a_pod_with_its_labels() {
    if !require_root() {
        return;
    }
    let cgroups = TestCgroups::new("oomkill");
    let pod = TestPod::new(&cgroups, 7, "batch", "hungry", &[]);
    let limit = MemoryLimit::new(&pod);
    let cluster = Cluster::start(&default_spec("oomkill"), &cgroups, &[&pod]);
    let host = &cluster.host;
    let before = limit.oom_kills();

    // The child joins the limited memory cgroup too (on v1 it is another
    // hierarchy), caps its address space at 512 MiB so a limit that did not
    // apply ends in MemoryError rather than the node's OOM killer, and
    // allocates 1 MiB at a time until killed.
    let v1_join = if limit.v1 {
        format!("echo $$ > {}/cgroup.procs && ", limit.dir.display())
    } else {
        String::new()
    };
    let script = format!(
        "{v1_join}ulimit -v 524288 && exec {} -c 'a = []\nwhile True: a.append(bytearray(1 << 20))'",
        python()
    );
    let status = pod.command(None, "sh", &["-c", &script]).status().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "the allocating process was not OOM-killed: {status}"
    );
    assert_eq!(
        limit.oom_kills(),
        before + 1,
        "the kernel counted one OOM kill"
    );

    let series = format!(
        r#"oomkill__kills_total{{plugin="oomkill",{},comm="python3"}}"#,
        pod.labels()
    );
    host.wait_for_metric(&series, std::time::Duration::from_secs(15), |v| v >= 1.0);
    let text = host.scrape();
    assert_eq!(value(&text, &series), Some(1.0), "{series}\n{text}");
    let kills: f64 = text
        .lines()
        .filter(|l| l.starts_with("oomkill__kills_total{") && l.contains(r#"pod="hungry""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(kills, 1.0, "one kill in the pod, counted once:\n{text}");
    assert_eq!(
        value(&text, r#"oomkill__events_lost_total{plugin="oomkill"}"#),
        Some(0.0)
    );
    assert!(
        host.log_text().contains("OOM kill: pid"),
        "the kill is logged:\n{}",
        host.log_text()
    );
    drop(cluster);
}
