//! What a hostile or careless client of the host can do (issue 19's
//! defects), against the real daemon and `conductor run` on the real
//! kernel: each test fails on the host before the fix.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use conductor_api::v1;
use conductor_test_support::daemon::*;
use conductor_test_support::*;
use tonic::Code;

const LONG: Duration = Duration::from_secs(60);

/// Peak resident memory of a process (`VmHWM`), in bytes.
fn peak_rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM in /proc/<pid>/status")
        * 1024
}

/// A sparse file of `len` bytes starting with `header`.
fn sparse(dir: &Path, name: &str, header: &[u8], len: u64) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, header).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len)
        .unwrap();
    path
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// `steady` with its component at `component`.
fn with_component(name: &str, component: &Path) -> v1::PluginSpec {
    let mut s = wire_spec(&steady_spec(name, "x"));
    s.component = path_str(component);
    s
}

/// exec-counter with its BPF object at `object`.
fn with_bytecode(name: &str, object: &Path) -> v1::PluginSpec {
    let yaml = exec_counter_spec(name).replace(
        &path_str(&artifact("exec_counter.bpf.o")),
        &path_str(object),
    );
    wire_spec(&yaml)
}

async fn list(
    c: &mut v1::conductor_client::ConductorClient<tonic::transport::Channel>,
) -> Vec<v1::PluginStatus> {
    c.list(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .plugins
}

async fn load(
    c: &mut v1::conductor_client::ConductorClient<tonic::transport::Channel>,
    spec: v1::PluginSpec,
) -> Result<v1::LoadResponse, tonic::Status> {
    c.load(v1::LoadRequest {
        spec: Some(spec),
        annotations: HashMap::new(),
    })
    .await
    .map(|r| r.into_inner())
}

/// Defect 2: `/dev/zero` or a 2 GiB sparse file as component or bytecode
/// took the daemon to gigabytes before any check. Now: refused, naming
/// why, without reading them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_and_oversized_files_are_refused_unread() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    let mut c = daemon.client().await;
    let dir = tempfile::tempdir().unwrap();
    let big_wasm = sparse(dir.path(), "big.wasm", b"\0asm\x0d\0\x01\0", 2 << 30);
    let big_elf = sparse(dir.path(), "big.bpf.o", b"\x7fELF", 2 << 30);
    let no_header = sparse(dir.path(), "zeros.wasm", b"", 16 << 20);
    let zero = Path::new("/dev/zero");

    let cases = [
        (with_component("zero-c", zero), "character device"),
        (with_bytecode("zero-b", zero), "character device"),
        (with_component("big-c", &big_wasm), "--max-component-bytes"),
        (with_bytecode("big-b", &big_elf), "--max-bytecode-bytes"),
        (with_component("zeros-c", &no_header), "no wasm header"),
    ];
    for (spec, needle) in cases {
        let name = spec.name.clone();
        let err = load(&mut c, spec).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{name}: {err:?}");
        assert!(err.message().contains(needle), "{name}: {err:?}");
    }
    // Nothing was read whole: far below the 2 GiB of a sparse file.
    let peak = peak_rss(daemon.pid());
    assert!(peak < 512 << 20, "the daemon peaked at {peak} bytes");
    // The caps are configurable, and a good plugin still loads.
    load(&mut c, wire_spec(&steady_spec("good", "hi")))
        .await
        .unwrap();
    let names: Vec<_> = list(&mut c).await.into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["good"]);

    let small = Daemon::start_with(&["--max-component-bytes", "1000"]);
    let err = load(
        &mut small.client().await,
        wire_spec(&steady_spec("capped", "x")),
    )
    .await
    .unwrap_err();
    assert!(
        err.message().contains("more than the limit of 1000 bytes"),
        "{err:?}"
    );
}

/// Defect 2 through `conductor run`.
#[test]
fn run_refuses_special_and_oversized_files() {
    if !require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let big_wasm = sparse(dir.path(), "big.wasm", b"\0asm\x0d\0\x01\0", 2 << 30);
    for (component, needle) in [
        (PathBuf::from("/dev/zero"), "character device"),
        (big_wasm, "--max-component-bytes"),
    ] {
        let spec = format!("name: p\ncomponent: {}\n", path_str(&component));
        let (status, log) = run_to_exit(&spec);
        assert!(!status.success(), "{log}");
        assert!(log.contains(needle), "{needle}: {log}");
    }
    let spec =
        exec_counter_spec("p").replace(&path_str(&artifact("exec_counter.bpf.o")), "/dev/zero");
    let (status, log) = run_to_exit(&spec);
    assert!(
        !status.success() && log.contains("character device"),
        "{log}"
    );
    // Defect 8: the spec file itself is capped (50 MB was read whole).
    let huge = format!("name: p\ncomponent: /p.wasm\n# {}\n", "x".repeat(5 << 20));
    let (status, log) = run_to_exit(&huge);
    assert!(
        !status.success() && log.contains("more than the limit"),
        "{log}"
    );
}

/// Defect 3: two loads of a FIFO stayed `Loading` for good, every later
/// load `Pending`, and unload answered busy. Now: refused at once, and the
/// load slots stay free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifo_is_refused_and_later_loads_proceed() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start_with(&["--max-parallel-loads", "2"]);
    let mut c = daemon.client().await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("plugin.wasm");
    mkfifo(&fifo);
    let object = dir.path().join("plugin.bpf.o");
    mkfifo(&object);

    let loads = [
        with_component("fifo-1", &fifo),
        with_component("fifo-2", &fifo),
        with_bytecode("fifo-3", &object),
    ];
    let mut tasks = Vec::new();
    for spec in loads {
        let mut c = c.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::timeout(LONG, load(&mut c, spec)).await
        }));
    }
    for t in tasks {
        let err = t
            .await
            .unwrap()
            .expect("a FIFO load must not hang")
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("FIFO"), "{err:?}");
    }
    let left = list(&mut c).await;
    assert!(left.is_empty(), "{left:?}");
    // Both slots are free: two loads at once go through.
    let (mut c1, mut c2) = (c.clone(), c.clone());
    let (a, b) = tokio::join!(
        load(&mut c1, wire_spec(&steady_spec("after-1", "x"))),
        load(&mut c2, wire_spec(&steady_spec("after-2", "x"))),
    );
    a.unwrap();
    b.unwrap();
    c.unload(v1::UnloadRequest {
        name: "after-1".into(),
    })
    .await
    .unwrap();
}

/// Defect 4: six loads with ~1 MB of config each were all accepted, then
/// every `List` failed (`decoded message length too large`, exit code 7,
/// "invalid spec"). Now the plugins' specs are bounded together, `List`
/// always fits a client's default 4 MiB, and the refusal has its own exit
/// code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_configs_cannot_make_list_fail() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    // tonic's default: a 4 MiB limit on what it decodes, as stock clients.
    let mut c = daemon.client().await;
    let big = |name: &str| {
        let mut s = wire_spec(&steady_spec(name, "x"));
        s.config.insert("blob".into(), "x".repeat(1_000_000));
        s
    };
    let mut accepted = 0;
    let mut refused = 0;
    for i in 0..6 {
        match load(&mut c, big(&format!("big-{i}"))).await {
            Ok(_) => accepted += 1,
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
                assert!(e.message().contains("make configs smaller"), "{e:?}");
                refused += 1;
            }
        }
    }
    assert!(accepted >= 2 && refused >= 1, "{accepted} accepted");
    let listed = list(&mut c).await;
    assert_eq!(listed.len(), accepted);
    let out = daemon.cli(&["list", "-o", "json"]);
    assert!(out.status.success(), "{out:?}");

    // The CLI's exit code for it is documented as "a size limit".
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.yaml");
    let yaml = format!(
        "{}  blob: {}\n",
        steady_spec("big-cli", "x").replace("config: {greeting: \"x\"}", "config:\n  greeting: x"),
        "x".repeat(1_000_000)
    );
    std::fs::write(&file, yaml).unwrap();
    let out = daemon.cli(&["load", &path_str(&file)]);
    assert_eq!(out.status.code(), Some(10), "{out:?}");

    // An update that shrinks a plugin makes room.
    let small = wire_spec(&steady_spec("big-0", "x"));
    c.update(v1::UpdateRequest {
        spec: Some(small),
        annotations: HashMap::new(),
    })
    .await
    .unwrap();
    load(&mut c, big("big-again")).await.unwrap();
    let listed = list(&mut c).await;
    assert_eq!(listed.len(), accepted + 1);
}

/// `chattr +i` on a directory: nothing can be created or renamed in it,
/// not even by root (a read-only state directory, as root sees one).
struct Immutable(PathBuf);

impl Immutable {
    fn set(dir: &Path) -> Self {
        let st = std::process::Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .status()
            .expect("chattr (e2fsprogs)");
        assert!(st.success(), "chattr +i {}", dir.display());
        Self(dir.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

/// Programs named `handle_exec` the daemon holds.
fn held_exec(daemon: &Daemon) -> Vec<u32> {
    let mut ids = held_program_ids(daemon.pid());
    ids.retain(|id| program_ids("handle_exec").contains(id));
    ids
}

/// Defect 5: with the state directory unwritable, `unload` said it failed
/// but detached the plugin, and a restart brought it back. Now the
/// answer, the kernel and the state on disk agree in every outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unload_with_an_unwritable_state_dir_changes_nothing() {
    if !require_root() {
        return;
    }
    let mut daemon = Daemon::start();
    let mut c = daemon.client().await;
    load(&mut c, wire_spec(&exec_counter_spec("execs")))
        .await
        .unwrap();
    assert!(!held_exec(&daemon).is_empty());

    let frozen = Immutable::set(&daemon.state_dir);
    let err = c
        .unload(v1::UnloadRequest {
            name: "execs".into(),
        })
        .await
        .unwrap_err();
    assert!(err.message().contains("stays loaded"), "{err:?}");
    // Still running, still attached, still on disk: a retry and a restart
    // see the same.
    let got = wait_for_phase(&mut c, "execs", v1::Phase::Running, LONG).await;
    assert_eq!(got.name, "execs");
    assert!(!held_exec(&daemon).is_empty(), "detached anyway");
    let out = daemon.cli(&["unload", "execs"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    tokio::task::block_in_place(|| {
        assert!(daemon.stop().success());
        daemon.spawn();
    });
    let mut c = daemon.client().await;
    wait_for_phase(&mut c, "execs", v1::Phase::Running, LONG).await;

    // Writable again: the unload takes effect and survives a restart.
    drop(frozen);
    c.unload(v1::UnloadRequest {
        name: "execs".into(),
    })
    .await
    .unwrap();
    assert!(held_exec(&daemon).is_empty());
    tokio::task::block_in_place(|| {
        assert!(daemon.stop().success());
        daemon.spawn();
    });
    // Restoring is done once the daemon is ready.
    let ready = daemon.metrics_url.replace("/metrics", "/readyz");
    tokio::task::block_in_place(|| {
        wait_for(
            LONG,
            "readiness",
            || daemon.log_text(),
            || scrape_url(&ready).ok(),
        )
    });
    let mut c = daemon.client().await;
    let left = list(&mut c).await;
    assert!(left.is_empty(), "{left:?}");
}

/// Defect 6: a plugin logging thousands of lines per tick grew the
/// daemon's stderr by 68 MB/s. Now its lines past its budget are dropped,
/// counted in `conductor_plugin_log_lines_suppressed_total` and noted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_logging_in_a_loop_stays_within_its_budget() {
    use conductor_runtime::host::log::{LOG_LINE_BURST, LOG_LINES_PER_SEC};
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    let mut c = daemon.client().await;
    let started = std::time::Instant::now();
    let spec = format!(
        "name: chatty\ncomponent: {}\ntickIntervalMs: 10\n",
        path_str(&artifact("testing_chatty.wasm"))
    );
    load(&mut c, wire_spec(&spec)).await.unwrap();
    let series = r#"conductor_plugin_log_lines_suppressed_total{plugin="chatty"}"#;
    let suppressed =
        tokio::task::block_in_place(|| daemon.wait_for_metric(series, LONG, |v| v >= 100_000.0));
    c.unload(v1::UnloadRequest {
        name: "chatty".into(),
    })
    .await
    .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    let log = daemon.log_text();
    // The plugin's own lines (the host's lines about it are not budgeted).
    let logged = log
        .lines()
        .filter(|l| l.contains("chatty tick") || l.contains("chatty stdout tick"))
        .count();
    let notes = log
        .lines()
        .filter(|l| l.contains("log lines of this plugin were suppressed"))
        .count();
    println!(
        "chatty: {logged} lines logged, {suppressed} suppressed, {notes} notes in {elapsed:.1} s"
    );
    assert!(notes >= 1, "no note about suppressed lines");
    // The burst, plus the rate over the plugin's whole life, plus the notes.
    let allowed = LOG_LINE_BURST + LOG_LINES_PER_SEC * elapsed + notes as f64;
    assert!(
        (logged as f64) <= allowed,
        "{logged} lines logged, at most {allowed} allowed"
    );
}

/// Defect 7: a memory limit below the component's initial memory was
/// accepted, then the plugin restarted for ever while `/readyz` said
/// ready. Now the load is refused naming both numbers, and readiness
/// names plugins that cannot run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_limit_too_small_to_start_is_refused_and_readiness_tells() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    let mut c = daemon.client().await;
    let mut tiny = wire_spec(&steady_spec("tiny", "x"));
    tiny.limits.as_mut().unwrap().memory_mib = 1;
    let err = load(&mut c, tiny).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("bytes of linear memory to start")
            && err
                .message()
                .contains("limits.memoryMib of 1 MiB (1048576 bytes)"),
        "{err:?}"
    );
    let (status, log) = run_to_exit(&format!(
        "{}limits: {{memoryMib: 1}}\n",
        steady_spec("tiny", "x")
    ));
    assert!(!status.success(), "{log}");
    assert!(log.contains("bytes of linear memory to start"), "{log}");

    // A plugin that starts but then keeps hitting its limit.
    let ready = daemon.metrics_url.replace("/metrics", "/readyz");
    assert_eq!(http_get(&ready).unwrap(), (200, "ready\n".to_owned()));
    let hog = format!(
        "name: hog\ncomponent: {}\nlimits: {{memoryMib: 16}}\ntickIntervalMs: 10\n",
        path_str(&artifact("testing_memhog.wasm"))
    );
    load(&mut c, wire_spec(&hog)).await.unwrap();
    let body = tokio::task::block_in_place(|| {
        wait_for(
            LONG,
            "readiness to name the plugin",
            || daemon.log_text(),
            || match http_get(&ready) {
                Ok((503, body)) => Some(body),
                _ => None,
            },
        )
    });
    assert!(body.contains("plugin hog is Restarting"), "{body}");
    assert!(body.contains("memory limit"), "{body}");
    c.unload(v1::UnloadRequest { name: "hog".into() })
        .await
        .unwrap();
    assert_eq!(http_get(&ready).unwrap(), (200, "ready\n".to_owned()));
}

/// Defect 8: out of file descriptors, the daemon spun a core in its accept
/// loop and logged nothing. Now it says so, backs off, and serves again
/// once descriptors come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_the_daemon_says_so_and_recovers() {
    if !require_root() {
        return;
    }
    // Enough to start and serve, not enough for 96 more connections.
    let mut daemon = Daemon::start_with_nofile(&[], 64);
    let mut held = Vec::new();
    for _ in 0..96 {
        if let Ok(s) = std::os::unix::net::UnixStream::connect(&daemon.socket) {
            held.push(s);
        }
    }
    let line =
        tokio::task::block_in_place(|| daemon.wait_for_log("cannot accept API connections", LONG));
    assert!(line.is_some(), "{}", daemon.log_text());
    drop(held);
    let mut c = daemon.client().await;
    assert!(list(&mut c).await.is_empty());
    // Said once, not once per attempt.
    let said = daemon
        .log_text()
        .matches("cannot accept API connections")
        .count();
    assert!(said <= 2, "logged {said} times");
}
