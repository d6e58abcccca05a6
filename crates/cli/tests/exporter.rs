//! The built-in ebpf_exporter on the real kernel: `conductor run
//! --exporter-config DIR --names ...` with programs and YAML configs written
//! in ebpf_exporter's style (`plugins/exporter-examples/`), counting exactly
//! what a child process placed in its own cgroup does: syscalls by name
//! (tp_btf), errors by errno, libc calls (uprobe) and write sizes
//! (tracepoint, exp2 histogram with the sum convention); getppid() calls
//! counted from a perf event array, and that counter's flushes; the same
//! object with a `k8s_pod` decoder labelling a process in a pod (by cgroup
//! id, and by pid through `pid_cgroup_id`); connects labelled
//! with the pod that has the destination address; a `cgroup_id_map` the host
//! fills for the program to filter by; and malformed
//! configurations refused with the field named.

mod catalog;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use catalog::*;
use conductor_test_support::daemon::{Daemon, phase};
use conductor_test_support::*;
use fake_apiserver::FakeApiServer;

/// A config directory in ebpf_exporter's layout: `<name>.yaml` and
/// `<name>.bpf.o` for each `(config name, example name)`.
fn config_dir(configs: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins/exporter-examples");
    for (config, object) in configs {
        std::fs::copy(
            examples.join(format!("{config}.yaml")),
            dir.path().join(format!("{config}.yaml")),
        )
        .unwrap_or_else(|e| panic!("{config}.yaml: {e}"));
        std::fs::copy(
            artifact(&format!("{object}.bpf.o")),
            dir.path().join(format!("{config}.bpf.o")),
        )
        .unwrap_or_else(|e| panic!("{object}.bpf.o: {e}"));
    }
    dir
}

/// What the child does: `getppid()` `calls` times (libc, so the uprobe sees
/// it too), `close(9999)` `bad_closes` times (EBADF), and writes of 1, 3 and
/// 100 bytes to /dev/null. The interpreter's own start-up makes none of
/// these (checked with strace: no getppid, no EBADF, no write).
fn activity(calls: u32, bad_closes: u32) -> String {
    format!(
        "import os\n\
         for _ in range({calls}): os.getppid()\n\
         for _ in range({bad_closes}):\n    try: os.close(9999)\n    except OSError: pass\n\
         fd = os.open('/dev/null', os.O_WRONLY)\n\
         for n in (1, 3, 100): os.write(fd, b'x' * n)\n"
    )
}

fn run_in(cgroup: &Path, script: &str) {
    let procs = cgroup.join("cgroup.procs");
    let mut cmd = Command::new(python());
    cmd.args(["-c", script]);
    use std::os::unix::process::CommandExt;
    // SAFETY: only a write(2) of a constant between fork and exec.
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, b"0"));
    }
    let status = cmd.status().unwrap();
    assert!(status.success(), "the child failed: {status}");
}

#[test]
fn syscalls_errors_a_uprobe_and_a_histogram_count_exactly_what_a_process_did() {
    if !require_root() {
        return;
    }
    let dir = config_dir(&[
        ("exporter_syscalls", "exporter_syscalls"),
        ("exporter_write_sizes", "exporter_write_sizes"),
        ("exporter_uprobe", "exporter_uprobe"),
    ]);
    let host = Host::start_args(&[
        "--exporter-config",
        dir.path().to_str().unwrap(),
        "--names",
        "exporter_syscalls,exporter_write_sizes,exporter_uprobe",
        // System-wide uprobes need CAP_SYS_ADMIN on this kernel
        // (perf_event_open answers EACCES with CAP_PERFMON alone).
        "--keep-capabilities",
        "bpf,perfmon,net_admin,sys_admin",
    ]);
    let cgroups = TestCgroups::new("exporter");
    let cgroup = cgroups.mkdir("work");
    run_in(&cgroup, &activity(37, 5));
    let path = cgroup.display().to_string();

    let calls =
        format!(r#"ebpf_exporter_exporter_syscalls_total{{cgroup="{path}",syscall="getppid"}}"#);
    host.wait_for_metric(&calls, Duration::from_secs(10), |v| v >= 37.0);
    let text = host.scrape();
    assert_eq!(value(&text, &calls), Some(37.0), "{calls}\n{text}");
    let errors =
        format!(r#"ebpf_exporter_exporter_syscall_errors_total{{cgroup="{path}",errno="EBADF"}}"#);
    assert_eq!(value(&text, &errors), Some(5.0), "{errors}\n{text}");
    let uprobe = format!(r#"ebpf_exporter_exporter_libc_getppid_calls_total{{cgroup="{path}"}}"#);
    assert_eq!(value(&text, &uprobe), Some(37.0), "{uprobe}\n{text}");

    // Writes of 1, 3 and 100 bytes: exp2 buckets le=1, 4 and 128, every
    // bucket 0..=16 present, the sum from key 17.
    let h = "ebpf_exporter_exporter_write_size_bytes";
    let bucket = |le: &str| {
        // The registry's encoder writes `le` first; label order carries no meaning.
        value(
            &text,
            &format!(r#"{h}_bucket{{le="{le}",cgroup="{path}"}}"#),
        )
        .unwrap_or_else(|| panic!("no {h} bucket le={le}:\n{text}"))
    };
    assert_eq!(
        ["1.0", "2.0", "4.0", "64.0", "128.0", "65536.0", "+Inf"].map(bucket),
        [1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 3.0]
    );
    let buckets = text
        .lines()
        .filter(|l| l.starts_with(&format!("{h}_bucket{{")) && l.contains(&path))
        .count();
    assert_eq!(buckets, 18, "17 buckets (0..=16) and +Inf:\n{text}");
    assert_eq!(
        value(&text, &format!(r#"{h}_count{{cgroup="{path}"}}"#)),
        Some(3.0)
    );
    assert_eq!(
        value(&text, &format!(r#"{h}_sum{{cgroup="{path}"}}"#)),
        Some(104.0)
    );

    for config in [
        "exporter_syscalls",
        "exporter_write_sizes",
        "exporter_uprobe",
    ] {
        let enabled = format!(r#"ebpf_exporter_enabled_configs{{name="{config}"}}"#);
        assert_eq!(value(&text, &enabled), Some(1.0), "{enabled}\n{text}");
        let errors = format!(r#"ebpf_exporter_decoder_errors_total{{config="{config}"}}"#);
        assert_eq!(value(&text, &errors), Some(0.0), "{errors}\n{text}");
    }

    // The classic text format has ebpf_exporter's family names, and
    // promtool accepts it.
    let (_, classic) = host.scrape_classic();
    assert!(
        classic.contains("# TYPE ebpf_exporter_exporter_syscalls_total counter\n"),
        "{classic}"
    );
    assert!(
        classic.contains(&format!("# TYPE {h} histogram\n")),
        "{classic}"
    );
    let (ok, out) = promtool_check_metrics(&classic);
    assert!(ok, "promtool: {out}");
    drop(host);
    drop(cgroups);
}

#[test]
fn a_k8s_pod_decoder_labels_the_syscalls_of_a_process_in_a_pod() {
    if !require_root() {
        return;
    }
    let cgroups = TestCgroups::new("exporter-pod");
    let pod = TestPod::new(&cgroups, 16, "shop", "web-1", &[]);
    let api = FakeApiServer::start();
    api.create(&pod.pod);
    let kube = tempfile::tempdir().unwrap();
    let kubeconfig = kube.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    // The same object as exporter_syscalls, with k8s decoders in its YAML.
    let dir = config_dir(&[("exporter_syscalls_pods", "exporter_syscalls")]);
    let host = Host::start_args(&[
        "--exporter-config",
        dir.path().to_str().unwrap(),
        "--names",
        "exporter_syscalls_pods",
        "--node-name",
        NODE,
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--cgroup-root",
        cgroups.root.to_str().unwrap(),
    ]);
    host.wait_for_metric("conductor_k8s_pods", Duration::from_secs(30), |v| v >= 1.0);
    run_in(&pod.cgroup, &activity(23, 4));

    let calls = r#"ebpf_exporter_exporter_syscalls_total{pod="web-1",syscall="getppid"}"#;
    host.wait_for_metric(calls, Duration::from_secs(10), |v| v >= 23.0);
    let text = host.scrape();
    assert_eq!(value(&text, calls), Some(23.0), "{text}");
    let errors = r#"ebpf_exporter_exporter_syscall_errors_total{namespace="shop",errno="EBADF"}"#;
    assert_eq!(value(&text, errors), Some(4.0), "{text}");
    drop(host);
    drop(cgroups);
}

/// `pid_cgroup_id` on the kernel: a program keyed by process id, labelled
/// with the pod of a process that still runs when the host scrapes.
#[test]
fn a_pid_decodes_to_the_pod_of_a_running_process() {
    if !require_root() {
        return;
    }
    let cgroups = TestCgroups::new("exporter-pid");
    let pod = TestPod::new(&cgroups, 18, "shop", "web-2", &[]);
    let api = FakeApiServer::start();
    api.create(&pod.pod);
    let kube = tempfile::tempdir().unwrap();
    let kubeconfig = kube.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let dir = config_dir(&[("exporter_pid_syscalls", "exporter_pid_syscalls")]);
    let host = Host::start_args(&[
        "--exporter-config",
        dir.path().to_str().unwrap(),
        "--names",
        "exporter_pid_syscalls",
        "--node-name",
        NODE,
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--cgroup-root",
        cgroups.root.to_str().unwrap(),
    ]);
    host.wait_for_metric("conductor_k8s_pods", Duration::from_secs(30), |v| v >= 1.0);

    // getppid() 19 times in the pod's cgroup, then wait for stdin to close.
    use std::io::{BufRead, Write};
    use std::os::unix::process::CommandExt;
    let procs = pod.cgroup.join("cgroup.procs");
    let mut cmd = Command::new(python());
    cmd.args([
        "-c",
        "import os, sys\n\
         for _ in range(19): os.getppid()\n\
         sys.stdout.write('ready\\n'); sys.stdout.flush()\n\
         sys.stdin.read()\n",
    ])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped());
    // SAFETY: only a write(2) of a constant between fork and exec.
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, b"0"));
    }
    let mut child = cmd.spawn().unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready, "ready\n");

    let calls = r#"ebpf_exporter_exporter_pid_syscalls_total{pod="web-2",syscall="getppid"}"#;
    host.wait_for_metric(calls, Duration::from_secs(10), |v| v >= 19.0);
    let text = host.scrape();
    assert_eq!(value(&text, calls), Some(19.0), "{text}");
    let errors = r#"ebpf_exporter_decoder_errors_total{config="exporter_pid_syscalls"}"#;
    assert_eq!(value(&text, errors), Some(0.0), "{text}");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"bye").unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
    drop(host);
    drop(cgroups);
}

/// `connect()` on UDP sockets: `(address, times)`. The syscall is entered
/// (and counted) whether or not a route exists, and sends nothing.
fn connects(to: &[(&str, u32)]) -> String {
    let mut script = String::from(
        "import socket\n\
         def connect(ip, n):\n\
         \x20   family = socket.AF_INET6 if ':' in ip else socket.AF_INET\n\
         \x20   for _ in range(n):\n\
         \x20       with socket.socket(family, socket.SOCK_DGRAM) as s:\n\
         \x20           try: s.connect((ip, 9))\n\
         \x20           except OSError: pass\n",
    );
    for (ip, n) in to {
        script.push_str(&format!("connect({ip:?}, {n})\n"));
    }
    script
}

#[test]
fn a_k8s_pod_decoder_labels_connects_by_the_pod_that_has_the_address() {
    if !require_root() {
        return;
    }
    let cgroups = TestCgroups::new("exporter-pod-ip");
    // A pod with an IPv4 and an IPv6 address (status.podIPs), as a dual-stack
    // cluster gives; 10.251.7.6 is no pod's.
    let pod = TestPod::new(&cgroups, 17, "shop", "db-1", &["10.251.7.5", "fd00:251::5"]);
    let api = FakeApiServer::start();
    api.create(&pod.pod);
    let kube = tempfile::tempdir().unwrap();
    let kubeconfig = kube.path().join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    let dir = config_dir(&[("exporter_connect_ips", "exporter_connect_ips")]);
    let host = Host::start_args(&[
        "--exporter-config",
        dir.path().to_str().unwrap(),
        "--names",
        "exporter_connect_ips",
        "--node-name",
        NODE,
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--cgroup-root",
        cgroups.root.to_str().unwrap(),
    ]);
    host.wait_for_metric("conductor_k8s_pods", Duration::from_secs(30), |v| v >= 1.0);
    // The connecting process is in no pod: the label is the destination's.
    let work = cgroups.mkdir("client");
    run_in(
        &work,
        &connects(&[("10.251.7.5", 3), ("fd00:251::5", 2), ("10.251.7.6", 4)]),
    );

    let m = "ebpf_exporter_exporter_connects_total";
    let v4 = format!(r#"{m}{{pod="db-1",ip="10.251.7.5"}}"#);
    host.wait_for_metric(&v4, Duration::from_secs(10), |v| v >= 3.0);
    let text = host.scrape();
    assert_eq!(value(&text, &v4), Some(3.0), "{v4}\n{text}");
    let v6 = format!(r#"{m}{{pod="db-1",ip="fd00:251::5"}}"#);
    assert_eq!(value(&text, &v6), Some(2.0), "{v6}\n{text}");
    let no_pod = format!(r#"{m}{{pod="",ip="10.251.7.6"}}"#);
    assert_eq!(value(&text, &no_pod), Some(4.0), "{no_pod}\n{text}");
    let errors = r#"ebpf_exporter_decoder_errors_total{config="exporter_connect_ips"}"#;
    assert_eq!(value(&text, errors), Some(0.0), "{text}");

    // The pod goes: its address is no one's at the next scrape (IP lookups
    // are never cached, since the address passes to later pods).
    assert!(api.delete::<k8s_openapi::api::core::v1::Pod>(Some(&pod.namespace), &pod.name));
    host.wait_for_metric("conductor_k8s_pods", Duration::from_secs(30), |v| v == 0.0);
    let text = host.scrape();
    let gone = format!(r#"{m}{{pod="",ip="10.251.7.5"}}"#);
    assert_eq!(value(&text, &gone), Some(3.0), "{gone}\n{text}");
    assert_eq!(value(&text, &v4), None, "{text}");
    drop(host);
    drop(cgroups);
}

/// ebpf_exporter's `cgroup_id_map`: the host fills the object's map with
/// the ids of the cgroups whose paths the YAML's regexps match, and the
/// program counts their syscalls apart from the others'.
#[test]
fn a_cgroup_id_map_holds_the_cgroups_its_regexps_match() {
    // The YAML's regexp: `/conductor-exporter-idmap-<pid>/match-*`.
    cgroup_id_map_filters("exporter_cgroup_id_map", "exporter-idmap", "exporter");
}

/// The same with `type: cgrp_storage`: the host writes through each
/// matching cgroup's directory descriptor.
#[test]
fn a_cgrp_storage_cgroup_id_map_holds_the_cgroups_its_regexps_match() {
    cgroup_id_map_filters(
        "exporter_cgroup_storage_map",
        "exporter-storagemap",
        "exporter_storage",
    );
}

/// Run example `config` (its regexp matching `/conductor-<tag>-<pid>/match-*`)
/// and check its `<prefix>_{matched,unmatched}_syscalls_total` counters.
fn cgroup_id_map_filters(config: &str, tag: &str, prefix: &str) {
    if !require_root() {
        return;
    }
    let cgroups = TestCgroups::new(tag);
    let early = cgroups.mkdir("match-early");
    let other = cgroups.mkdir("other");
    let dir = config_dir(&[(config, config)]);
    let host = Host::start_args(&[
        "--exporter-config",
        dir.path().to_str().unwrap(),
        "--names",
        config,
    ]);
    run_in(&early, &activity(7, 0));
    run_in(&other, &activity(5, 0));

    let series = |metric: &str, cgroup: &Path| {
        format!(
            r#"ebpf_exporter_{prefix}_{metric}_syscalls_total{{cgroup="{}",syscall="getppid"}}"#,
            cgroup.display()
        )
    };
    host.wait_for_metric(&series("unmatched", &other), Duration::from_secs(10), |v| {
        v >= 5.0
    });
    let text = host.scrape();
    // Filled when the config loaded: every call of the early cgroup matched.
    assert_eq!(
        value(&text, &series("matched", &early)),
        Some(7.0),
        "{text}"
    );
    assert_eq!(value(&text, &series("unmatched", &early)), None, "{text}");
    assert_eq!(
        value(&text, &series("unmatched", &other)),
        Some(5.0),
        "{text}"
    );
    assert_eq!(value(&text, &series("matched", &other)), None, "{text}");

    // A cgroup made after the load joins the map at a later rescan: call
    // until its calls count as matched; every call is counted once.
    let late = cgroups.mkdir("match-late");
    let mut calls = 0.0;
    let text = loop {
        run_in(&late, &activity(1, 0));
        calls += 1.0;
        let text = host.scrape();
        if value(&text, &series("matched", &late)).is_some() || calls >= 100.0 {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let matched = value(&text, &series("matched", &late));
    assert!(
        matched.is_some(),
        "never in the map after {calls} calls:\n{text}"
    );
    let unmatched = value(&text, &series("unmatched", &late)).unwrap_or(0.0);
    assert_eq!(matched.unwrap_or(0.0) + unmatched, calls, "{text}");
    let errors = format!(r#"ebpf_exporter_decoder_errors_total{{config="{config}"}}"#);
    assert_eq!(value(&text, &errors), Some(0.0), "{text}");
    drop(host);
    drop(cgroups);
}

/// A python child in `cgroup` calling getppid() until its stdin closes
/// (the returned handle's `stdin` dropped), a call every millisecond.
fn caller_in(cgroup: &Path) -> std::process::Child {
    let procs = cgroup.join("cgroup.procs");
    let mut cmd = Command::new(python());
    cmd.args([
        "-c",
        "import os, select, sys\n\
         while not select.select([sys.stdin], [], [], 0.001)[0]: os.getppid()\n",
    ])
    .stdin(std::process::Stdio::piped());
    use std::os::unix::process::CommandExt;
    // SAFETY: only a write(2) of a constant between fork and exec.
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, b"0"));
    }
    cmd.spawn().unwrap()
}

#[test]
fn a_perf_event_array_counter_counts_each_event_by_its_decoded_bytes() {
    if !require_root() {
        return;
    }
    // No flush_interval: ebpf_exporter's hour, longer than this test.
    let dir = config_dir(&[("exporter_perf_getppid", "exporter_perf_getppid")]);
    let host = Host::start_args(&[
        "--exporter-config",
        dir.path().to_str().unwrap(),
        "--names",
        "exporter_perf_getppid",
        // Perf buffers of 1024 pages per CPU need CAP_IPC_LOCK (as
        // ebpf_exporter documents) beyond RLIMIT_MEMLOCK.
        "--keep-capabilities",
        "bpf,perfmon,net_admin,ipc_lock",
    ]);
    let cgroups = TestCgroups::new("exporter-perf");
    let cgroup = cgroups.mkdir("work");
    let path = cgroup.display().to_string();
    let calls = format!(r#"ebpf_exporter_exporter_getppid_events_total{{cgroup="{path}"}}"#);

    // Events are decoded as they come, and the host finds a new cgroup's
    // path by rescanning the tree at most once a second (before that it is
    // `unknown_cgroup_id:<id>`, as in ebpf_exporter): call until the
    // cgroup's series appears, then count from there.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    let base = loop {
        run_in(&cgroup, &activity(1, 0));
        std::thread::sleep(Duration::from_millis(200));
        if let Some(v) = value(&host.scrape(), &calls) {
            break v;
        }
        assert!(
            std::time::Instant::now() < until,
            "{calls} never appeared:\n{}",
            host.scrape()
        );
    };
    // One event per call, its 8-byte cgroup id decoded (the kernel pads
    // each 8-byte sample to 12 bytes: the rest is ignored).
    run_in(&cgroup, &activity(37, 0));
    host.wait_for_metric(&calls, Duration::from_secs(10), |v| v >= base + 37.0);
    run_in(&cgroup, &activity(5, 0));
    host.wait_for_metric(&calls, Duration::from_secs(10), |v| v >= base + 42.0);
    let text = host.scrape();
    assert_eq!(value(&text, &calls), Some(base + 42.0), "{calls}\n{text}");
    let dropped = "dropped_perf_event_map_events_exporter_getppid_events_total";
    assert_eq!(value(&text, dropped), Some(0.0), "{text}");
    let errors = r#"ebpf_exporter_decoder_errors_total{config="exporter_perf_getppid"}"#;
    assert_eq!(value(&text, errors), Some(0.0), "{text}");
    let (_, classic) = host.scrape_classic();
    assert!(
        classic.contains("# TYPE ebpf_exporter_exporter_getppid_events_total counter\n"),
        "{classic}"
    );
    let (ok, out) = promtool_check_metrics(&classic);
    assert!(ok, "promtool: {out}");
    drop(host);
    drop(cgroups);
}

#[test]
fn a_perf_event_array_counter_forgets_its_series_at_each_flush() {
    if !require_root() {
        return;
    }
    // flush_interval: 1s. While a process keeps calling, its series grows
    // and then falls back (flushed, counted again from zero); once it
    // stops, its series disappears at the next flush.
    let dir = config_dir(&[("exporter_perf_getppid_flush", "exporter_perf_getppid")]);
    let host = Host::start_args(&[
        "--exporter-config",
        dir.path().to_str().unwrap(),
        "--names",
        "exporter_perf_getppid_flush",
        // Perf buffers of 1024 pages per CPU need CAP_IPC_LOCK (as
        // ebpf_exporter documents) beyond RLIMIT_MEMLOCK.
        "--keep-capabilities",
        "bpf,perfmon,net_admin,ipc_lock",
    ]);
    let cgroups = TestCgroups::new("exporter-flush");
    let cgroup = cgroups.mkdir("work");
    let path = cgroup.display().to_string();
    let calls = format!(r#"ebpf_exporter_exporter_getppid_events_total{{cgroup="{path}"}}"#);
    let mut caller = caller_in(&cgroup);

    let mut highest = host.wait_for_metric(&calls, Duration::from_secs(10), |v| v >= 1.0);
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            std::time::Instant::now() < until,
            "{calls} never fell back in 30 s of 1 s flushes:\n{}",
            host.scrape()
        );
        std::thread::sleep(Duration::from_millis(50));
        match value(&host.scrape(), &calls) {
            Some(v) if v < highest => break,
            Some(v) => highest = v,
            None => {} // just flushed, nothing counted yet
        }
    }
    drop(caller.stdin.take());
    assert!(caller.wait().unwrap().success());
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while value(&host.scrape(), &calls).is_some() {
        assert!(
            std::time::Instant::now() < until,
            "{calls} still there 30 s after its process stopped (1 s flushes):\n{}",
            host.scrape()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The family stays, empty, and the drop counter with it.
    let text = host.scrape();
    assert!(
        text.contains("# TYPE ebpf_exporter_exporter_getppid_events counter\n"),
        "{text}"
    );
    drop(host);
    drop(cgroups);
}

/// ebpf_exporter's own section kind `xdp/<interface>`: the program attaches
/// to the interface its section names, with no spec. The interface
/// (`cndtrxdp0`, no address) is in this namespace so the test can scrape;
/// its peer, in a namespace of the test's own, sends the packets.
#[test]
fn an_xdp_section_naming_its_interface_attaches_there() {
    if !require_root() {
        return;
    }
    let (host_if, peer_if) = ("cndtrxdp0", "cndtrxdp1");
    let ns = format!("cdt-xdp-{}", std::process::id());
    let cleanup = |ns: &str| {
        for args in [vec!["link", "del", host_if], vec!["netns", "del", ns]] {
            let _ = Command::new("ip")
                .args(&args)
                .stderr(std::process::Stdio::null())
                .status();
        }
    };
    cleanup(&ns);
    ip(&["netns", "add", &ns]);
    ip(&[
        "link",
        "add",
        host_if,
        "address",
        "02:cd:00:00:0a:01",
        "type",
        "veth",
        "peer",
        "name",
        peer_if,
        "netns",
        &ns,
    ]);
    ip(&["link", "set", host_if, "up"]);
    ip(&["-n", &ns, "addr", "add", "10.252.1.1/30", "dev", peer_if]);
    ip(&["-n", &ns, "link", "set", peer_if, "up"]);
    ip(&[
        "-n",
        &ns,
        "neigh",
        "replace",
        "10.252.1.2",
        "lladdr",
        "02:cd:00:00:0a:01",
        "dev",
        peer_if,
        "nud",
        "permanent",
    ]);

    let dir = config_dir(&[("exporter_xdp", "exporter_xdp")]);
    let host = Host::start_args(&[
        "--exporter-config",
        dir.path().to_str().unwrap(),
        "--names",
        "exporter_xdp",
    ]);
    let send = |n: u32, port: u16| {
        let script = format!(
            "import socket\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             for _ in range({n}): s.sendto(b'x' * 32, ('10.252.1.2', {port}))\n"
        );
        let out = Command::new("ip")
            .args(["netns", "exec", &ns, &python(), "-c", &script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    send(23, 4242);
    send(7, 4343);
    let series = |port: u16| {
        format!(r#"ebpf_exporter_xdp_packets_total{{ip="ipv4",protocol="udp",dst_port="{port}"}}"#)
    };
    host.wait_for_metric(&series(4242), Duration::from_secs(10), |v| v >= 23.0);
    host.wait_for_metric(&series(4343), Duration::from_secs(10), |v| v >= 7.0);
    let text = host.scrape();
    assert_eq!(value(&text, &series(4242)), Some(23.0), "{text}");
    assert_eq!(value(&text, &series(4343)), Some(7.0), "{text}");
    drop(host);
    cleanup(&ns);
}

/// `conductor run --exporter-config` of a config that must be refused:
/// the run fails and its error names `field`.
fn refused(yaml: &str, object: Option<&str>, field: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("bad.yaml"), yaml).unwrap();
    if let Some(object) = object {
        std::fs::copy(
            artifact(&format!("{object}.bpf.o")),
            dir.path().join("bad.bpf.o"),
        )
        .unwrap();
    }
    let out = Command::new(conductor_bin())
        .args(["run", "--metrics-addr", "127.0.0.1:0", "--exporter-config"])
        .arg(dir.path())
        .args(["--names", "bad", "--cache-dir"])
        .arg(dir.path().join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad config ran:\n{stderr}");
    assert!(
        stderr.contains(field),
        "the error does not name {field}:\n{stderr}"
    );
}

fn example(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins/exporter-examples")
        .join(format!("{name}.yaml"));
    std::fs::read_to_string(path).unwrap()
}

#[test]
fn malformed_configs_are_refused_with_the_field_named() {
    let syscalls = example("exporter_syscalls");
    // Caught before anything loads.
    refused(
        &syscalls.replace("- name: errno\n", "- name: errnum\n"),
        None,
        "metrics.counters[1].labels[1].decoders[1].name: unknown decoder \"errnum\"",
    );
    refused(
        &example("exporter_write_sizes").replace("bucket_max: 16", "bucket_max: 0"),
        None,
        "metrics.histograms[0].bucket_max",
    );
    refused(
        &example("exporter_write_sizes").replace("bucket_type: exp2", "bucket_type: log10"),
        None,
        "metrics.histograms[0].bucket_type",
    );
    if !require_root() {
        return;
    }
    // Caught against the map once the object is loaded: the syscall label
    // reads 4 of the key's 8 bytes.
    let short = syscalls.replacen(
        "        - name: syscall\n          size: 8",
        "        - name: syscall\n          size: 4",
        1,
    );
    assert_ne!(short, syscalls);
    refused(
        &short,
        Some("exporter_syscalls"),
        "metrics.counters[0].labels: map \"exporter_syscalls_total\": the labels cover 12 bytes (sizes + paddings), but the map's key is 16 bytes",
    );
    // A cgroup_id_map naming a map of the wrong layout, or none.
    let id_map = example("exporter_cgroup_id_map");
    // The unmatched counter's map (16-byte keys) named as the cgroup_id_map.
    let (head, rest) = id_map
        .split_once("    - name: exporter_unmatched_syscalls_total")
        .unwrap();
    let tail = &rest[rest.find("\ncgroup_id_map:").unwrap()..];
    refused(
        &format!("{head}{tail}").replace(
            "name: exporter_cgroup_ids",
            "name: exporter_unmatched_syscalls_total",
        ),
        Some("exporter_cgroup_id_map"),
        "cgroup_id_map.name: map \"exporter_unmatched_syscalls_total\": a hash cgroup_id_map has u64 keys (cgroup ids) and u64 values, but this map (Hash) has 16-byte keys and 8-byte values",
    );
    refused(
        &id_map.replace("name: exporter_cgroup_ids", "name: no_such_map"),
        Some("exporter_cgroup_id_map"),
        "cgroup_id_map.name: map \"no_such_map\"",
    );
    // A libbpf usdt section: refused by name, not as an unparsable object.
    refused(
        &syscalls,
        Some("usdt_section"),
        "section `usdt/python3:python:function__entry`: USDT probes are not supported yet",
    );
    // A hash map is not a perf event array, and the other way round.
    refused(
        &syscalls.replacen(
            "      labels:",
            "      perf_event_array: true\n      labels:",
            1,
        ),
        Some("exporter_syscalls"),
        "metrics.counters[0].perf_event_array: map \"exporter_syscalls_total\": the map is a Hash",
    );
    refused(
        &example("exporter_perf_getppid").replace("      perf_event_array: true\n", ""),
        Some("exporter_perf_getppid"),
        "metrics.counters[0].name: map \"exporter_getppid_events_total\": is a perf event array: set perf_event_array: true",
    );
}

/// A spec running ebpf_exporter config `config` (YAML text) over `object`
/// as the built-in exporter (JSON, which is YAML).
fn exporter_spec(name: &str, config_name: &str, config: &str, object: &Path) -> String {
    serde_json::json!({
        "name": name,
        "exporter": {"config": config, "configName": config_name},
        "bytecode": {"path": object},
    })
    .to_string()
}

#[test]
fn the_daemon_runs_an_exporter_spec_loaded_through_the_api() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("syscalls.yaml");
    let spec = exporter_spec(
        "syscalls",
        "exporter_syscalls",
        &example("exporter_syscalls"),
        &artifact("exporter_syscalls.bpf.o"),
    );
    std::fs::write(&file, spec).unwrap();
    let out = daemon.cli(&["load", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "load failed: {}\nlog:\n{}",
        String::from_utf8_lossy(&out.stderr),
        daemon.log_text()
    );
    let status = daemon.get("syscalls").expect("listed");
    assert_eq!(phase(&status), conductor_api::v1::Phase::Running);
    assert!(
        status
            .spec
            .as_ref()
            .and_then(|s| s.exporter.as_ref())
            .is_some(),
        "the listed spec carries its exporter: {status:?}"
    );

    let cgroups = TestCgroups::new("exporter-daemon");
    let cgroup = cgroups.mkdir("work");
    run_in(&cgroup, &activity(29, 3));
    let path = cgroup.display().to_string();
    let calls =
        format!(r#"ebpf_exporter_exporter_syscalls_total{{cgroup="{path}",syscall="getppid"}}"#);
    daemon.wait_for_metric(&calls, Duration::from_secs(10), |v| v >= 29.0);
    let text = daemon.scrape();
    assert_eq!(value(&text, &calls), Some(29.0), "{calls}\n{text}");
    let errors =
        format!(r#"ebpf_exporter_exporter_syscall_errors_total{{cgroup="{path}",errno="EBADF"}}"#);
    assert_eq!(value(&text, &errors), Some(3.0), "{errors}\n{text}");
    let enabled = r#"ebpf_exporter_enabled_configs{name="exporter_syscalls"}"#;
    assert_eq!(value(&text, enabled), Some(1.0), "{text}");

    // Unloaded: no longer scraped, and its programs are detached.
    let out = daemon.cli(&["unload", "syscalls"]);
    assert!(
        out.status.success(),
        "unload failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = daemon.scrape();
    assert_eq!(value(&text, enabled), None, "{text}");
    assert!(
        !text.contains("ebpf_exporter_exporter_syscalls_total"),
        "{text}"
    );
    drop(daemon);
    drop(cgroups);
}

#[test]
fn a_bad_exporter_spec_is_refused_at_submit_with_the_field_named() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    let object = artifact("exporter_syscalls.bpf.o");
    let bad = example("exporter_syscalls").replace("- name: errno\n", "- name: errnum\n");
    let field = "exporter.config.metrics.counters[1].labels[1].decoders[1].name";

    // Straight to the API (no client-side check): the daemon refuses it.
    let wire = conductor_api::v1::PluginSpec {
        name: "bad".into(),
        bytecode: Some(conductor_api::v1::Bytecode {
            path: path_str(&object),
            ..Default::default()
        }),
        exporter: Some(conductor_api::v1::Exporter {
            config: bad.clone(),
            config_name: None,
        }),
        ..Default::default()
    };
    let status = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            daemon
                .client()
                .await
                .load(conductor_api::v1::LoadRequest {
                    spec: Some(wire),
                    annotations: Default::default(),
                })
                .await
        })
        .expect_err("a bad config was accepted");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains(field) && status.message().contains("unknown decoder \"errnum\""),
        "{}",
        status.message()
    );
    assert!(daemon.get("bad").is_none(), "a refused spec is listed");

    // Through the CLI: the same message.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, exporter_spec("bad", "bad", &bad, &object)).unwrap();
    let out = daemon.cli(&["load", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a bad config loaded");
    assert!(stderr.contains(field), "{stderr}");
    // A component and an exporter together: refused, both named.
    let both = exporter_spec("both", "x", &example("exporter_syscalls"), &object).replacen(
        '{',
        "{\"component\":\"/x.wasm\",",
        1,
    );
    std::fs::write(&file, both).unwrap();
    let out = daemon.cli(&["load", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a spec with both loaded");
    assert!(
        stderr.contains("component: set either component"),
        "{stderr}"
    );
}

#[test]
fn an_exporter_package_runs_by_reference_from_a_registry() {
    if !require_root() {
        return;
    }
    use conductor_test_support::registry::Registry;
    let reg = Registry::start();
    // A package directory: the object beside a package.yaml whose spec
    // carries the config.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        artifact("exporter_syscalls.bpf.o"),
        dir.path().join("exporter_syscalls.bpf.o"),
    )
    .unwrap();
    let package = serde_json::json!({
        "description": "Syscalls by cgroup, as ebpf_exporter counts them.",
        "version": "1.0.0",
        "spec": {
            "name": "syscalls",
            "exporter": {"config": example("exporter_syscalls"), "configName": "exporter_syscalls"},
            "bytecode": {"path": "exporter_syscalls.bpf.o"},
        },
    });
    std::fs::write(dir.path().join("package.yaml"), package.to_string()).unwrap();
    let (reference, _) = registry::push_package(&reg, dir.path(), "exporters/syscalls:1.0");

    let mut host = Host::start_package(&reference, None, &[]);
    host.wait_for_log("package resolved", Duration::from_secs(10))
        .unwrap_or_else(|| panic!("not resolved:\n{}", host.log_text()));
    let cgroups = TestCgroups::new("exporter-package");
    let cgroup = cgroups.mkdir("work");
    run_in(&cgroup, &activity(19, 2));
    let path = cgroup.display().to_string();
    let calls =
        format!(r#"ebpf_exporter_exporter_syscalls_total{{cgroup="{path}",syscall="getppid"}}"#);
    host.wait_for_metric(&calls, Duration::from_secs(10), |v| v >= 19.0);
    let text = host.scrape();
    assert_eq!(value(&text, &calls), Some(19.0), "{calls}\n{text}");
    let errors =
        format!(r#"ebpf_exporter_exporter_syscall_errors_total{{cgroup="{path}",errno="EBADF"}}"#);
    assert_eq!(value(&text, &errors), Some(2.0), "{errors}\n{text}");
    let enabled = r#"ebpf_exporter_enabled_configs{name="exporter_syscalls"}"#;
    assert_eq!(value(&text, enabled), Some(1.0), "{text}");
    assert!(host.stop().success());
    drop(cgroups);
}
