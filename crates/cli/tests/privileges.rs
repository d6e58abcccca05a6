//! Least privilege on the real kernel: the host drops every capability
//! plugins do not need once it has started (checked in
//! `/proc/<pid>/status` of every thread), and a host given only those
//! capabilities (util-linux `setpriv`) loads and runs a real BPF plugin.

use std::time::Duration;

use conductor_test_support::daemon::*;
use conductor_test_support::*;

const LONG: Duration = Duration::from_secs(60);

const CAP_CHOWN: u32 = 0;
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The mask of CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, the host's default.
fn needed() -> u64 {
    [CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN]
        .iter()
        .fold(0, |m, c| m | 1 << c)
}

/// The capability sets (`CapEff`, `CapPrm`, ...) of every thread of `pid`.
fn thread_caps(pid: i32) -> Vec<(String, [u64; 5])> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let Ok(status) = std::fs::read_to_string(dir.join("status")) else {
            continue; // the thread exited meanwhile
        };
        let set = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or_else(|| panic!("no {key} in {}", dir.display()))
        };
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        threads.push((
            name.trim_end().to_owned(),
            [
                set("CapEff:"),
                set("CapPrm:"),
                set("CapBnd:"),
                set("CapInh:"),
                set("CapAmb:"),
            ],
        ));
    }
    threads
}

/// exec-counter loaded into `d` counts execs of a binary of its own.
fn runs_exec_counter(d: &Daemon, name: &str) {
    d.load_by_hand(&exec_counter_spec(name));
    let bin = UniqueBinary::new("cndtrcap");
    bin.run(5);
    let series = format!(
        r#"{}__execs_total{{plugin="{name}",comm="{}",namespace="",pod="",container=""}}"#,
        name.replace('-', "_"),
        bin.comm
    );
    let count = d.wait_for_metric(&series, LONG, |v| v >= 5.0);
    assert_eq!(count, 5.0, "each exec counted once");
}

#[test]
fn after_start_up_the_host_keeps_only_the_capabilities_plugins_need() {
    if !require_root() {
        return;
    }
    let d = Daemon::start();
    // Plugin threads are started after the drop too: load one first.
    runs_exec_counter(&d, "caps-dropped");
    let threads = thread_caps(d.pid());
    assert!(threads.len() > 1, "{threads:?}");
    for (thread, [eff, prm, bnd, inh, amb]) in &threads {
        assert_eq!(*eff, needed(), "{thread}: CapEff {eff:x}");
        assert_eq!(*prm, needed(), "{thread}: CapPrm {prm:x}");
        assert_eq!(*bnd, needed(), "{thread}: CapBnd {bnd:x}");
        assert_eq!((*inh, *amb), (0, 0), "{thread}");
        // Spelled out: what a compromised host would want most is gone.
        for cap in [CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_CHOWN] {
            assert_eq!(bnd & 1 << cap, 0, "{thread} still bounds capability {cap}");
        }
    }
    assert!(
        d.log_text()
            .contains("dropped the capabilities plugins do not need"),
        "{}",
        d.log_text()
    );
}

#[test]
fn keeping_all_capabilities_is_an_explicit_choice() {
    if !require_root() {
        return;
    }
    // The test runs with CAP_SYS_ADMIN, so the test above sees a real drop.
    let d = Daemon::start_with(&["--keep-capabilities", "all"]);
    let threads = thread_caps(d.pid());
    for (thread, [eff, ..]) in &threads {
        assert_ne!(eff & 1 << CAP_SYS_ADMIN, 0, "{thread}: CapEff {eff:x}");
    }
}

#[test]
fn a_host_given_only_bpf_perfmon_and_net_admin_runs_a_real_plugin() {
    if !require_root() {
        return;
    }
    let d = Daemon::start_wrapped(
        &[
            "setpriv",
            "--bounding-set=-all,+bpf,+perfmon,+net_admin",
            "--inh-caps=-all",
        ],
        &[],
    );
    for (thread, [eff, _, bnd, ..]) in thread_caps(d.pid()) {
        assert_eq!((eff, bnd), (needed(), needed()), "{thread}");
    }
    runs_exec_counter(&d, "caps-minimal");
}

#[test]
fn an_unknown_capability_name_is_refused_with_what_to_write() {
    let out = std::process::Command::new(conductor_bin())
        .args([
            "run",
            "--keep-capabilities",
            "bpf,cap_flying",
            "/nonexistent.yaml",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cap_flying"), "{err}");
    assert!(err.contains("CAP_BPF"), "{err}");
}
