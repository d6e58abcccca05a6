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
use conductor_test_support::registry::{Registry, stderr, stdout};
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

/// From an empty compile cache, an 18 MB Python component starts on
/// wasmtime's baseline compiler's code, counts exactly, moves to the
/// optimising compiler's code (compiled in the background into the cache)
/// without a restart or a lost event, and the next start begins there.
#[test]
fn python_component_starts_on_baseline_code_and_moves_to_optimised_code() {
    if !require_root() {
        return;
    }
    let cache = tempfile::tempdir().unwrap();
    let spec = spec("py-tiers", "exec_counter_py.wasm");
    let mut host = Host::start_with_cache(&spec, Some(cache.path()));
    let running = host
        .wait_for_log("plugin running", LONG)
        .unwrap_or_else(|| panic!("{}", host.log_text()));
    assert!(running.contains("code=baseline"), "{running}");
    let log = host.log_text();
    assert!(log.contains("compiled by the baseline compiler"), "{log}");
    let bin = UniqueBinary::new("cndtrtier");
    const N: usize = 12;
    bin.run(N);
    let series = execs("py-tiers", &bin.comm);
    let count = host.wait_for_metric(&series, LONG, |v| v >= N as f64);
    assert_eq!(count, N as f64, "{}", host.scrape());

    // Cranelift takes tens of seconds for this component on a busy machine.
    host.wait_for_log("plugin moved to optimised code", Duration::from_secs(600))
        .unwrap_or_else(|| panic!("never moved to optimised code:\n{}", host.log_text()));
    bin.run(N);
    let count = host.wait_for_metric(&series, LONG, |v| v >= 2.0 * N as f64);
    assert_eq!(count, 2.0 * N as f64, "{}", host.scrape());
    let text = host.scrape();
    assert_eq!(
        value(
            &text,
            r#"conductor_plugin_restarts_total{plugin="py-tiers"}"#
        ),
        Some(0.0),
        "{text}"
    );
    assert!(host.stop().success());
    assert!(
        std::fs::read_dir(cache.path())
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(".cwasm")),
        "the optimised code is not in the cache"
    );

    // The next start loads the optimised code from the cache.
    let mut host = Host::start_with_cache(&spec, Some(cache.path()));
    let running = host
        .wait_for_log("plugin running", LONG)
        .unwrap_or_else(|| panic!("{}", host.log_text()));
    assert!(running.contains("code=optimised"), "{running}");
    let log = host.log_text();
    assert!(!log.contains("baseline compiler"), "{log}");
    bin.run(3);
    let count = host.wait_for_metric(&series, LONG, |v| v >= 3.0);
    assert_eq!(count, 3.0, "{}", host.scrape());
    assert!(host.stop().success());
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

/// An author's workflow in JavaScript or Python: `conductor new --lang`
/// outside the repository, `conductor build` with the toolchain `cargo
/// xtask deps` pinned (the BPF object with clang, the component with
/// componentize-js / componentize-py against the project's own `wit/`),
/// then `conductor run` of the package it wrote, counting the execs this
/// test causes exactly.
fn new_build_and_run_counts_real_execs(lang: &str, env: (&str, &str), prefix: &str) {
    let parent = tempfile::tempdir().unwrap();
    let name = format!("my-{lang}-probe");
    let krate = name.replace('-', "_");
    let tool = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/tools")
        .join(env.1);
    assert!(
        tool.is_file(),
        "{} is missing: run `cargo xtask deps`",
        tool.display()
    );
    let conductor = |dir: &Path, args: &[&str], with_tool: bool| {
        let mut cmd = std::process::Command::new(conductor_bin());
        cmd.current_dir(dir)
            .args(args)
            .stdin(std::process::Stdio::null());
        if with_tool {
            cmd.env(env.0, &tool);
        } else {
            cmd.env_remove(env.0);
        }
        cmd.output().unwrap()
    };
    let out = conductor(parent.path(), &["new", "--lang", lang, &name], false);
    assert!(out.status.success(), "new failed: {}", stderr(&out));
    let project = parent.path().join(&name);

    // Without the toolchain: refused, saying how to install it.
    let out = conductor(&project, &["build"], false);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("is not installed") && err.contains("cargo xtask deps"),
        "{err}"
    );

    let out = conductor(&project, &["build"], true);
    assert!(out.status.success(), "build failed:\n{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "WIT: conductor:plugin@{}",
            conductor_api::wit::CURRENT
        )),
        "{text}"
    );
    let package = project.join("target/conductor");
    for f in [
        "package.yaml",
        &format!("{krate}.wasm"),
        &format!("{krate}.bpf.o"),
    ] {
        assert!(
            package.join(f).is_file(),
            "{f} is not in the package: {text}"
        );
    }

    // The fresh component's first compile (seconds) is done before the
    // host starts, with the host's own runtime, so the host's start wait
    // covers loading rather than compiling.
    let cache = parent.path().join("cache");
    conductor_runtime::Runtime::new(Some(cache.clone()))
        .unwrap()
        .prepare(&package.join(format!("{krate}.wasm")))
        .unwrap();
    let host = Host::start_package(&path_str(&package), Some(&cache), &[]);
    let bin = UniqueBinary::new(prefix);
    const N: usize = 9;
    bin.run(N);
    let series = format!(
        r#"{krate}__execs_total{{plugin="{name}",comm="{}"}}"#,
        bin.comm
    );
    let count = host.wait_for_metric(&series, LONG, |v| v >= N as f64);
    assert_eq!(count, N as f64, "{}", host.scrape());
    assert!(
        host.log_text()
            .contains("counting execs, ignoring 0 command name(s)"),
        "{}",
        host.log_text()
    );
    assert!(host.stop().success());
}

#[test]
fn javascript_new_build_and_run_counts_real_execs() {
    if !require_root() {
        return;
    }
    new_build_and_run_counts_real_execs(
        "js",
        (
            "CONDUCTOR_COMPONENTIZE_JS",
            "node/node_modules/.bin/componentize-js",
        ),
        "cndtrnj",
    );
}

#[test]
fn python_new_build_and_run_counts_real_execs() {
    if !require_root() {
        return;
    }
    new_build_and_run_counts_real_execs(
        "python",
        ("CONDUCTOR_COMPONENTIZE_PY", "python/bin/componentize-py"),
        "cndtrnp",
    );
}

/// The JavaScript or Python exec-counter as a package
/// (`plugins/<lang>/exec-counter/package.yaml`), pushed with `conductor
/// push --package` to a real registry on loopback and run by reference
/// with its default spec: it counts the execs this test causes exactly.
fn package_runs_by_reference(lang: &str, name: &str, prefix: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let text = std::fs::read_to_string(
        root.join("plugins")
            .join(lang)
            .join("exec-counter/package.yaml"),
    )
    .unwrap();
    let text = text.replace(
        "../../../target/plugins/",
        &format!("{}/", artifacts().display()),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("package.yaml"), text).unwrap();
    let reg = Registry::start();
    let (reference, digest) =
        registry::push_package(&reg, dir.path(), &format!("catalog/{name}:0.1.0"));
    assert!(digest.starts_with("sha256:"), "{digest}");

    let host = Host::start_package(&reference, Some(&shared_cache()), &[]);
    let bin = UniqueBinary::new(prefix);
    const N: usize = 11;
    bin.run(N);
    let count = host.wait_for_metric(&execs(name, &bin.comm), LONG, |v| v >= N as f64);
    assert_eq!(count, N as f64, "{}", host.scrape());
    assert!(host.stop().success());
}

#[test]
fn javascript_exec_counter_package_runs_by_reference() {
    if !require_root() {
        return;
    }
    package_runs_by_reference("js", "exec-counter-js", "cndtrpj");
}

#[test]
fn python_exec_counter_package_runs_by_reference() {
    if !require_root() {
        return;
    }
    package_runs_by_reference("python", "exec-counter-py", "cndtrpp");
}

/// A JavaScript exec counter written against `conductor:plugin@0.2.0` (the
/// previous WIT: no series handles), on the BPF object of `conductor new`.
const JS_V0_2_0: &str = r#"
import { Counter } from 'conductor:plugin/metrics@0.2.0';
import { log } from 'conductor:plugin/log@0.2.0';
let execs;
export function init() {
  execs = Counter.declare({ name: 'execs', help: 'Execs by command (0.2.0).', labels: ['comm'] });
  log('info', 'counting execs, ignoring 0 command name(s)', []);
}
export function onEvents(batch) {
  for (let i = 0; i < batch.offsets.length; i++) {
    const at = batch.offsets[i] + 16;
    const raw = batch.data.subarray(at, at + 16);
    const end = raw.indexOf(0);
    const comm = String.fromCharCode(...raw.subarray(0, end < 0 ? 16 : end));
    execs.add([comm], 1n);
  }
}
export function tick() {}
export function collect() {}
"#;

/// The same in Python.
const PYTHON_V0_2_0: &str = r#"
import wit_world
from wit_world.imports import log, metrics

execs = None

class WitWorld(wit_world.WitWorld):
    def init(self) -> None:
        global execs
        execs = metrics.Counter.declare(metrics.MetricDesc("execs", "Execs by command (0.2.0).", ["comm"]))
        log.log(log.Level.INFO, "counting execs, ignoring 0 command name(s)", [])

    def on_events(self, batch) -> None:
        for offset in batch.offsets:
            comm = bytes(batch.data[offset + 16 : offset + 32]).split(b"\0", 1)[0].decode()
            execs.add([comm], 1)

    def tick(self) -> None:
        pass

    def collect(self) -> None:
        pass
"#;

/// A JavaScript or Python plugin built against the previous WIT
/// (`crates/sdk/wit/v0.2.0`) by `conductor build` still loads in this host
/// and counts exactly: the compatibility rule holds for every language.
fn previous_wit_counts_exactly(lang: &str, env: (&str, &str), source: (&str, &str), prefix: &str) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let parent = tempfile::tempdir().unwrap();
    let name = format!("old-{lang}");
    let krate = name.replace('-', "_");
    let out = conductor_in(parent.path(), &["new", "--lang", lang, &name], &[]);
    assert!(out.status.success(), "new failed: {}", stderr(&out));
    let project = parent.path().join(&name);
    // The previous WIT instead of the current one, and a source using it.
    std::fs::remove_dir_all(project.join("wit")).unwrap();
    std::fs::create_dir(project.join("wit")).unwrap();
    for entry in std::fs::read_dir(root.join("crates/sdk/wit/v0.2.0")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), project.join("wit").join(entry.file_name())).unwrap();
    }
    std::fs::write(project.join(source.0), source.1).unwrap();
    let tool = root.join("target/tools").join(env.1);
    let out = conductor_in(&project, &["build"], &[(env.0, tool.to_str().unwrap())]);
    assert!(out.status.success(), "build failed:\n{}", stderr(&out));
    assert!(
        stdout(&out).contains("WIT: conductor:plugin@0.2.0"),
        "{}",
        stdout(&out)
    );
    let package = project.join("target/conductor");
    let cache = parent.path().join("cache");
    conductor_runtime::Runtime::new(Some(cache.clone()))
        .unwrap()
        .prepare(&package.join(format!("{krate}.wasm")))
        .unwrap();
    let host = Host::start_package(&path_str(&package), Some(&cache), &[]);
    let bin = UniqueBinary::new(prefix);
    const N: usize = 6;
    bin.run(N);
    let series = format!(
        r#"{krate}__execs_total{{plugin="{name}",comm="{}"}}"#,
        bin.comm
    );
    let count = host.wait_for_metric(&series, LONG, |v| v >= N as f64);
    assert_eq!(count, N as f64, "{}", host.scrape());
    assert!(host.stop().success());
}

fn conductor_in(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = std::process::Command::new(conductor_bin());
    cmd.current_dir(dir)
        .args(args)
        .stdin(std::process::Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn javascript_plugin_built_against_the_previous_wit_counts_exactly() {
    if !require_root() {
        return;
    }
    previous_wit_counts_exactly(
        "js",
        (
            "CONDUCTOR_COMPONENTIZE_JS",
            "node/node_modules/.bin/componentize-js",
        ),
        ("src/plugin.js", JS_V0_2_0),
        "cndtroj",
    );
}

#[test]
fn python_plugin_built_against_the_previous_wit_counts_exactly() {
    if !require_root() {
        return;
    }
    previous_wit_counts_exactly(
        "python",
        ("CONDUCTOR_COMPONENTIZE_PY", "python/bin/componentize-py"),
        ("src/app.py", PYTHON_V0_2_0),
        "cndtrop",
    );
}
