//! The pod-pressure catalog plugin on the real kernel: busy processes in a
//! pod's container, under a CPU quota, stall for CPU and are throttled; the
//! plugin, granted only the test's cgroup directories (read-only), reports
//! the kernel's own totals for the pod and the container with their labels.

mod catalog;

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use catalog::*;
use conductor_test_support::*;

/// The pod's cgroup in the v1 cpu hierarchy (hybrid systems, where
/// cgroup v2 has no cpu controller), at the same path relative to a test
/// root as in cgroup v2, removed on drop.
struct CpuV1 {
    root: PathBuf,
    container: PathBuf,
}

impl CpuV1 {
    fn new(cgroups: &TestCgroups, pod: &TestPod) -> Self {
        let rel = pod.cgroup.strip_prefix(&cgroups.root).unwrap();
        let root = PathBuf::from(format!(
            "/sys/fs/cgroup/cpu/conductor-pod-pressure-{}",
            std::process::id()
        ));
        let container = root.join(rel);
        std::fs::create_dir_all(&container)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", container.display()));
        // 10 ms of CPU per 100 ms period.
        std::fs::write(container.join("cpu.cfs_quota_us"), "10000").unwrap();
        CpuV1 { root, container }
    }
}

impl Drop for CpuV1 {
    fn drop(&mut self) {
        remove_tree(&self.root);
    }
}

fn psi_total(dir: &Path, file: &str, kind: &str) -> f64 {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    text.lines()
        .find(|l| l.starts_with(kind))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("total=")))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no {kind} total in {file}: {text}"))
}

fn stat(dir: &Path, field: &str) -> f64 {
    let text = std::fs::read_to_string(dir.join("cpu.stat")).unwrap();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no {field} in cpu.stat: {text}"))
}

#[test]
fn pod_pressure_reports_the_kernels_totals_for_a_pod_and_its_container() {
    if !require_root() {
        return;
    }
    let cgroups = TestCgroups::new("podpressure");
    let pod = TestPod::new(&cgroups, 11, "shop", "checkout", &[]);
    let pod_dir = pod.cgroup.parent().unwrap().to_owned();
    let v1 = CpuV1::new(&cgroups, &pod);

    // The default spec, granted the test's own cgroup roots instead of the
    // node's, and ticking fast.
    let spec = default_spec("pod-pressure")
        .replace(
            "  - path: /sys/fs/cgroup\n",
            &format!(
                "  - path: {}\n    guestPath: /cgroup\n  - path: {}\n    guestPath: /cpu\nconfig:\n  cgroupRoot: /cgroup\n  cpuV1Root: /cpu\n",
                cgroups.root.display(),
                v1.root.display()
            ),
        )
        .replace("tickIntervalMs: 10000", "tickIntervalMs: 200");
    assert!(spec.contains("guestPath: /cpu"), "{spec}");
    let cluster = Cluster::start(&spec, &cgroups, &[&pod]);
    let host = &cluster.host;

    // Three busy loops (more than this machine's two CPUs) in the
    // container, in both hierarchies, for a second and a half.
    let v1_procs = v1.container.join("cgroup.procs");
    let busy: Vec<Child> = (0..3)
        .map(|_| {
            pod.command(
                None,
                "sh",
                &[
                    "-c",
                    &format!(
                        "echo $$ > {} && exec timeout 1.5 sh -c 'while :; do :; done'",
                        v1_procs.display()
                    ),
                ],
            )
            .spawn()
            .unwrap()
        })
        .collect();
    for mut child in busy {
        child.wait().unwrap();
    }
    let throttled = stat(&v1.container, "nr_throttled");
    assert!(throttled > 0.0, "the quota never throttled the busy loops");
    let cpu_some = psi_total(&pod.cgroup, "cpu.pressure", "some");
    assert!(cpu_some > 0.0, "the busy loops never stalled for CPU");

    // Once the loops are gone the totals stop moving: each series equals
    // the kernel's own figure.
    let labels = |container: &str| {
        format!(r#"plugin="pod-pressure",namespace="shop",pod="checkout",container="{container}""#)
    };
    let container = pod.cgroup.clone();
    let v1_dir = v1.container.clone();
    type Kernel = Box<dyn Fn() -> f64>;
    let psi = |dir: &Path, file: &'static str, kind: &'static str| -> Kernel {
        let dir = dir.to_owned();
        Box::new(move || psi_total(&dir, file, kind))
    };
    let cpu_stat = |field: &'static str, scale: f64| -> Kernel {
        let dir = v1_dir.clone();
        Box::new(move || (stat(&dir, field) / scale).floor())
    };
    let stalled = |container: &str, resource: &str, kind: &str| {
        format!(
            r#"pod_pressure__stalled_microseconds_total{{{},resource="{resource}",kind="{kind}"}}"#,
            labels(container)
        )
    };
    let checks: Vec<(String, Kernel)> = vec![
        (
            stalled("app", "cpu", "some"),
            psi(&container, "cpu.pressure", "some"),
        ),
        (
            stalled("", "cpu", "some"),
            psi(&pod_dir, "cpu.pressure", "some"),
        ),
        (
            stalled("app", "memory", "full"),
            psi(&container, "memory.pressure", "full"),
        ),
        (
            stalled("app", "io", "some"),
            psi(&container, "io.pressure", "some"),
        ),
        (
            format!(
                "pod_pressure__cpu_throttled_periods_total{{{}}}",
                labels("app")
            ),
            cpu_stat("nr_throttled", 1.0),
        ),
        (
            format!("pod_pressure__cpu_periods_total{{{}}}", labels("app")),
            cpu_stat("nr_periods", 1.0),
        ),
        (
            format!(
                "pod_pressure__cpu_throttled_microseconds_total{{{}}}",
                labels("app")
            ),
            cpu_stat("throttled_time", 1000.0),
        ),
    ];
    // The kernel may still account the last period just after the loops
    // exit: each series must catch up with the kernel's current figure.
    for (series, kernel) in &checks {
        host.wait_for_metric(series, Duration::from_secs(20), |v| v == kernel());
    }
    let text = host.scrape();
    for (series, kernel) in &checks {
        assert_eq!(value(&text, series), Some(kernel()), "{series}\n{text}");
    }
    // Nothing but the test's pod: the node's own cgroups are not granted.
    for line in text.lines().filter(|l| l.starts_with("pod_pressure__")) {
        assert!(line.contains(r#"pod="checkout""#), "{line}");
    }
}
