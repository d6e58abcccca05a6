//! The syscall-latency catalog plugin on the real kernel, with its default
//! spec and an allow-list of the test's own: a process of a pod's container
//! makes a known number of two allowed system calls and of one that is not
//! allowed, and each allowed call is counted once in the histogram of its
//! name and pod.

mod catalog;

use std::time::Duration;

use catalog::*;
use conductor_test_support::*;

/// Neither is made by the interpreter's own start-up or exit.
const GETPPID: u64 = 40;
const SCHED_YIELD: u64 = 25;

#[test]
fn syscall_latency_counts_allowed_calls_by_name_and_pod() {
    if !require_root() {
        return;
    }
    let spec = default_spec("syscall-latency");
    let line = spec
        .lines()
        .find(|l| l.trim_start().starts_with("syscalls:"))
        .expect("the default spec configures syscalls")
        .to_owned();
    let spec = spec.replace(&line, "  syscalls: \"getppid, sched_yield\"");

    let cgroups = TestCgroups::new("syscalls");
    let pod = TestPod::new(&cgroups, 31, "batch", "caller", &[]);
    let cluster = Cluster::start(&spec, &cgroups, &[&pod]);
    let host = &cluster.host;

    // getpid is not on the allow-list: never timed.
    let script = format!(
        r#"
import os
for _ in range(15):
    os.getpid()
for _ in range({GETPPID}):
    os.getppid()
for _ in range({SCHED_YIELD}):
    os.sched_yield()
"#
    );
    let status = pod
        .command(None, &python(), &["-c", &script])
        .status()
        .unwrap();
    assert!(status.success());

    let series = |syscall: &str| {
        format!(
            r#"syscall_latency__latency_seconds_count{{plugin="syscall-latency",{},syscall="{syscall}"}}"#,
            pod.labels()
        )
    };
    host.wait_for_metric(&series("sched_yield"), Duration::from_secs(15), |v| {
        v >= SCHED_YIELD as f64
    });
    let text = host.scrape();
    for (syscall, want) in [("getppid", GETPPID), ("sched_yield", SCHED_YIELD)] {
        assert_eq!(
            value(&text, &series(syscall)),
            Some(want as f64),
            "{}\n{text}",
            series(syscall)
        );
        // Every call took some time.
        let sum = format!(
            r#"syscall_latency__latency_seconds_sum{{plugin="syscall-latency",{},syscall="{syscall}"}}"#,
            pod.labels()
        );
        assert!(value(&text, &sum).is_some_and(|s| s > 0.0), "{sum}\n{text}");
    }
    let pod_series: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("syscall_latency__latency_seconds_count{")
                && l.contains(r#"pod="caller""#)
        })
        .collect();
    assert_eq!(
        pod_series.len(),
        2,
        "only the allowed calls: {pod_series:#?}"
    );
    assert_eq!(
        value(
            &text,
            r#"syscall_latency__events_lost_total{plugin="syscall-latency"}"#
        ),
        Some(0.0)
    );
    drop(cluster);
}

/// A name that is no system call fails the plugin's start, and the error
/// names it.
#[test]
fn syscall_latency_rejects_an_unknown_syscall_name() {
    if !require_root() {
        return;
    }
    let spec = default_spec("syscall-latency");
    let line = spec
        .lines()
        .find(|l| l.trim_start().starts_with("syscalls:"))
        .expect("the default spec configures syscalls")
        .to_owned();
    let spec = spec.replace(&line, "  syscalls: \"read, no_such_call\"");
    let mut host = Host::start(&spec);
    let line = host.wait_for_log("init failed", Duration::from_secs(30));
    let line = line.unwrap_or_else(|| panic!("no init failure; log:\n{}", host.log_text()));
    assert!(
        line.contains("unknown system call name(s) no_such_call"),
        "{line}"
    );
    // Not one call was timed.
    let text = host.scrape();
    assert!(
        !text.contains("syscall_latency__latency_seconds_count{"),
        "{text}"
    );
}
