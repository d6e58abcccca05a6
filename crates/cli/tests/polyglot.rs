//! JavaScript and Python plugins beside Rust ones: the exec-counter examples
//! of plugins/js and plugins/python, built by `cargo xtask build` with each
//! toolchain's defaults (componentize-js, componentize-py) against the
//! current WIT, counting the execs this test causes on the real kernel,
//! exactly, through `conductor run` and the daemon. And a memory limit
//! below what such a component needs to start is refused, naming both
//! numbers, instead of a plugin that restarts for ever.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use conductor_api::v1;
use conductor_test_support::daemon::*;
use conductor_test_support::*;
use tonic::Code;

/// A first compile of a 12–18 MB component takes seconds (more on a busy
/// machine); the waits allow for it.
const LONG: Duration = Duration::from_secs(120);

/// The exec-counter spec of `plugins/exec-counter` with another component.
fn spec(name: &str, component: &str) -> String {
    exec_counter_spec(name).replace(
        &path_str(&artifact("exec_counter.wasm")),
        &path_str(&artifact(component)),
    )
}

fn execs(plugin: &str, comm: &str) -> String {
    format!(
        r#"{}__execs_total{{plugin="{plugin}",comm="{comm}",namespace="",pod="",container=""}}"#,
        plugin.replace('-', "_")
    )
}

/// One compile cache for this file's tests, filled before any host starts:
/// the first compile of a 12–18 MB component takes seconds (tens on a busy
/// machine), longer than the harness waits for a host to start. Compiled
/// here with the host's own runtime (same engine configuration, so the
/// host loads these files), once per test binary.
fn shared_cache() -> PathBuf {
    static WARM: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    WARM.get_or_init(|| {
        let dir = artifacts().join("polyglot-test-cache");
        std::fs::create_dir_all(&dir).unwrap();
        let runtime = conductor_runtime::Runtime::new(Some(dir.clone())).unwrap();
        for component in [
            "exec_counter.wasm",
            "exec_counter_js.wasm",
            "exec_counter_py.wasm",
        ] {
            runtime
                .prepare(&artifact(component))
                .unwrap_or_else(|e| panic!("{component}: {e}"));
        }
        dir
    })
    .clone()
}

/// Copy the shared cache into `dir` (a daemon's own cache directory).
fn seed_cache(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let from = shared_cache();
    for entry in std::fs::read_dir(&from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
}

/// `conductor run` of `component`'s exec-counter: N execs of a binary of
/// our own are counted exactly N times, beside the host's own view.
fn counts_exactly_through_run(name: &str, component: &str, prefix: &str) {
    let host = Host::start_with_cache(&spec(name, component), Some(&shared_cache()));
    let bin = UniqueBinary::new(prefix);
    const N: usize = 25;
    bin.run(N);
    let count = host.wait_for_metric(&execs(name, &bin.comm), LONG, |v| v >= N as f64);
    assert_eq!(count, N as f64, "each exec is counted exactly once");
    let text = host.scrape();
    let plugin = name.replace('-', "_");
    assert!(
        value(
            &text,
            &format!(r#"{plugin}__distinct_commands{{plugin="{name}"}}"#)
        )
        .is_some_and(|v| v >= 1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            &format!(r#"{plugin}__events_lost_total{{plugin="{name}"}}"#)
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &format!(r#"conductor_plugin_up{{plugin="{name}"}}"#)),
        Some(1.0)
    );
    // The plugin's own log line, through the log interface.
    assert!(
        host.log_text()
            .contains("counting execs, ignoring 0 command name(s)"),
        "{}",
        host.log_text()
    );
    let status = host.stop();
    assert!(status.success(), "{status:?}");
}

#[test]
fn javascript_exec_counter_counts_exactly_through_conductor_run() {
    if !require_root() {
        return;
    }
    counts_exactly_through_run("exec-counter-js", "exec_counter_js.wasm", "cndtrjs");
}

#[test]
fn python_exec_counter_counts_exactly_through_conductor_run() {
    if !require_root() {
        return;
    }
    counts_exactly_through_run("exec-counter-py", "exec_counter_py.wasm", "cndtrpy");
}

/// Both languages and the Rust plugin in one daemon, each counting the
/// same execs exactly; the `ignore` config reaches the Python plugin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_languages_count_the_same_execs_through_the_daemon() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    tokio::task::block_in_place(|| seed_cache(&daemon.dir.path().join("cache")));
    let mut c = daemon.client().await;
    let ignored = UniqueBinary::new("cndtrig");
    let plugins = [
        ("ec-rust", "exec_counter.wasm"),
        ("ec-js", "exec_counter_js.wasm"),
        ("ec-py", "exec_counter_py.wasm"),
    ];
    for (name, component) in plugins {
        let mut yaml = spec(name, component);
        if name == "ec-py" {
            yaml.push_str(&format!("config: {{ignore: \"sh, {}\"}}\n", ignored.comm));
        }
        let status = c
            .load(v1::LoadRequest {
                spec: Some(wire_spec(&yaml)),
                annotations: HashMap::new(),
            })
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}\n{}", daemon.log_text()))
            .into_inner()
            .status
            .unwrap();
        assert_eq!(phase(&status), v1::Phase::Running, "{name}: {status:?}");
    }
    let bin = UniqueBinary::new("cndtr3l");
    const N: usize = 20;
    tokio::task::block_in_place(|| {
        bin.run(N);
        ignored.run(3);
    });
    for (name, _) in plugins {
        let count = tokio::task::block_in_place(|| {
            daemon.wait_for_metric(&execs(name, &bin.comm), LONG, |v| v >= N as f64)
        });
        assert_eq!(count, N as f64, "{name}: each exec counted exactly once");
    }
    // The Rust and JavaScript plugins counted the ignored binary; by the
    // time they have, the Python one has seen its events too.
    for name in ["ec-rust", "ec-js"] {
        let count = tokio::task::block_in_place(|| {
            daemon.wait_for_metric(&execs(name, &ignored.comm), LONG, |v| v >= 3.0)
        });
        assert_eq!(count, 3.0, "{name}");
    }
    let text = daemon.scrape();
    assert_eq!(value(&text, &execs("ec-py", &ignored.comm)), None, "{text}");
    assert!(
        daemon
            .log_text()
            .contains("counting execs, ignoring 2 command name(s)"),
        "{}",
        daemon.log_text()
    );
}

/// A limit below the component's initial memory (CPython's and
/// StarlingMonkey's heaps are several MiB before the first call) is
/// refused at load naming both numbers, by `conductor run` and by the
/// daemon, whose readiness stays honest: nothing restarting for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_limit_below_what_the_component_needs_is_refused_naming_both() {
    if !require_root() {
        return;
    }
    for component in ["exec_counter_js.wasm", "exec_counter_py.wasm"] {
        let yaml = format!("{}limits: {{memoryMib: 4}}\n", spec("tight", component));
        let (status, log) = tokio::task::block_in_place(|| run_to_exit(&yaml));
        assert!(!status.success(), "{component}: {log}");
        assert!(
            log.contains("bytes of linear memory to start")
                && log.contains("limits.memoryMib of 4 MiB (4194304 bytes)")
                && log.contains("raise limits.memoryMib to at least"),
            "{component}: {log}"
        );
    }

    let daemon = Daemon::start();
    tokio::task::block_in_place(|| seed_cache(&daemon.dir.path().join("cache")));
    let mut c = daemon.client().await;
    let mut tight = wire_spec(&spec("tight-py", "exec_counter_py.wasm"));
    tight.limits.as_mut().unwrap().memory_mib = 4;
    let err = c
        .load(v1::LoadRequest {
            spec: Some(tight),
            annotations: HashMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let message = err.message();
    let need: u64 = message
        .split(" needs ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no byte count in {message}"));
    assert!(need > 4 << 20, "{message}");
    assert!(
        message.contains(&format!("at least {}", need.div_ceil(1 << 20))),
        "{message}"
    );
    // Refused, not restarting: absent from the list, and the node ready.
    let ready = daemon.metrics_url.replace("/metrics", "/readyz");
    tokio::task::block_in_place(|| {
        assert!(daemon.get("tight-py").is_none());
        assert_eq!(http_get(&ready).unwrap(), (200, "ready\n".to_owned()));
    });

    // With the limit the error named, the same component runs.
    let mut enough = wire_spec(&spec("tight-py", "exec_counter_py.wasm"));
    enough.limits.as_mut().unwrap().memory_mib =
        u32::try_from(need.div_ceil(1 << 20)).unwrap() + 16;
    let status = c
        .load(v1::LoadRequest {
            spec: Some(enough),
            annotations: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(phase(&status), v1::Phase::Running, "{status:?}");
}
