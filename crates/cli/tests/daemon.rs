//! The node daemon (`conductor serve`) on a real Unix socket, driven
//! through the generated gRPC client and the CLI, with real plugins on the
//! real kernel: lifecycle, Update without event loss, restart after
//! `kill -9`, peer credentials, concurrency, bad input and faults.

use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use conductor_api::v1::{self, watch_event};
use conductor_test_support::daemon::*;
use conductor_test_support::*;
use tonic::Code;

const LONG: Duration = Duration::from_secs(60);

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Ids of the programs named `name` that the daemon holds open (other tests
/// run their own daemons at the same time).
fn held(daemon: &Daemon, name: &str) -> Vec<u32> {
    let mut held = held_program_ids(daemon.pid());
    held.retain(|id| program_ids(name).contains(id));
    held
}

/// Wait until none of `ids` is loaded in the kernel any more.
fn wait_unloaded(ids: &[u32]) {
    let until = Instant::now() + LONG;
    while ids.iter().any(|id| program_ids("handle_exec").contains(id)) {
        assert!(Instant::now() < until, "programs {ids:?} stay loaded");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Load `spec` without annotations, expecting a refusal.
async fn load_err(
    c: &mut v1::conductor_client::ConductorClient<tonic::transport::Channel>,
    spec: v1::PluginSpec,
) -> tonic::Status {
    c.load(v1::LoadRequest {
        spec: Some(spec),
        annotations: HashMap::new(),
    })
    .await
    .unwrap_err()
}

/// Every log line the daemon keeps for `name` (no follow).
async fn recent_logs(
    c: &mut v1::conductor_client::ConductorClient<tonic::transport::Channel>,
    name: &str,
) -> Vec<v1::LogLine> {
    let mut logs = c
        .logs(v1::LogsRequest {
            name: name.into(),
            follow: false,
            tail: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut lines = Vec::new();
    while let Some(l) = logs.message().await.unwrap() {
        lines.push(l);
    }
    lines
}

fn execs(plugin: &str, comm: &str) -> String {
    format!(
        r#"{}__execs_total{{plugin="{plugin}",comm="{comm}",namespace="",pod="",container=""}}"#,
        plugin.replace('-', "_")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_with_exec_counter_on_the_real_kernel() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    let mut c = daemon.client().await;
    let mut watch = c
        .clone()
        .watch(v1::WatchRequest {
            name: "ec-life".into(),
        })
        .await
        .unwrap()
        .into_inner();

    let mut request = load_request(&exec_counter_spec("ec-life"));
    request.annotations = HashMap::from([("owner".into(), "daemon-test".into())]);
    let status = c
        .load(request.clone())
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(phase(&status), v1::Phase::Running, "{status:?}");
    assert_eq!(status.generation, 1);
    assert!(status.component_digest.starts_with("sha256:"), "{status:?}");
    assert_eq!(status.annotations["owner"], "daemon-test");
    let ours = held(&daemon, "handle_exec");
    assert_eq!(ours.len(), 1, "one handle_exec attached for the plugin");

    // Counts exactly.
    let bin = UniqueBinary::new("cndtrdmn");
    const N: usize = 20;
    blocking(|| bin.run(N));
    let count =
        blocking(|| daemon.wait_for_metric(&execs("ec-life", &bin.comm), LONG, |v| v >= N as f64));
    assert_eq!(count, N as f64, "each exec counted exactly once");

    // A second load of the name is refused and changes nothing.
    let err = c.load(request).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    let me = format!("uid 0 pid {}", std::process::id());
    assert!(
        daemon
            .log_text()
            .lines()
            .any(|l| l.contains("loaded") && l.contains(&me)),
        "the load is logged with who asked: {}",
        daemon.log_text()
    );
    assert_eq!(held(&daemon, "handle_exec"), ours);

    let list = c
        .list(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .plugins;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].name, "ec-life");

    // The plugin's own log line, through Logs.
    let lines = recent_logs(&mut c, "ec-life").await;
    assert!(
        lines
            .iter()
            .any(|l| l.message.contains("counting execs") && l.fields["source"] == "plugin"),
        "{lines:?}"
    );

    // An update that changes the kernel side is a full replace: new
    // programs, the old ones detached, counting from zero.
    let replaced = exec_counter_spec("ec-life").replace("maxBatch: 64", "maxBatch: 32");
    let status = c
        .update(v1::UpdateRequest {
            spec: Some(wire_spec(&replaced)),
            annotations: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.generation, 2);
    assert_eq!(phase(&status), v1::Phase::Running);
    assert_eq!(
        status.annotations["owner"], "daemon-test",
        "empty annotations keep the old ones"
    );
    let after_replace = held(&daemon, "handle_exec");
    assert_eq!(after_replace.len(), 1, "{after_replace:?}");
    assert_ne!(after_replace, ours, "the kernel side was replaced");
    let bin2 = UniqueBinary::new("cndtrdm2");
    blocking(|| bin2.run(5));
    let count =
        blocking(|| daemon.wait_for_metric(&execs("ec-life", &bin2.comm), LONG, |v| v >= 5.0));
    assert_eq!(count, 5.0);

    c.unload(v1::UnloadRequest {
        name: "ec-life".into(),
    })
    .await
    .unwrap();
    assert!(
        held(&daemon, "handle_exec").is_empty(),
        "programs still attached after unload"
    );
    // Detached, and gone from the kernel.
    let all = program_ids("handle_exec");
    assert!(
        !ours.iter().chain(&after_replace).any(|id| all.contains(id)),
        "{all:?}"
    );
    let err = c
        .get(v1::GetRequest {
            name: "ec-life".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("ec-life"), "{err:?}");
    let err = c
        .unload(v1::UnloadRequest {
            name: "ec-life".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(
        !daemon.scrape().contains("ec_life__"),
        "the plugin's metrics are gone"
    );

    // The watch saw it come, run, update and go.
    let mut seen = Vec::new();
    loop {
        let e = tokio::time::timeout(LONG, watch.message())
            .await
            .expect("watch stalled")
            .unwrap()
            .expect("watch ended");
        let kind = watch_event::Kind::try_from(e.kind).unwrap();
        let s = e.status.unwrap();
        seen.push((kind, phase(&s), s.generation));
        if kind == watch_event::Kind::Removed {
            break;
        }
    }
    let phases: Vec<_> = seen.iter().map(|(_, p, _)| *p).collect();
    for want in [v1::Phase::Pending, v1::Phase::Loading, v1::Phase::Running] {
        assert!(phases.contains(&want), "{seen:?}");
    }
    assert!(seen.iter().any(|(_, _, g)| *g == 2), "{seen:?}");
    assert_eq!(seen.last().unwrap().1, v1::Phase::Stopped, "{seen:?}");
}

/// The sequence producer of `ringbuf.rs`, fired by the calling thread.
fn load_producer(pin: &str) -> aya::Ebpf {
    use aya::programs::RawTracePoint;
    let tid = nix::unistd::gettid().as_raw() as u32;
    let nr = libc::SYS_getpgid as u64;
    let (per_trigger, record_size, zero32, zero64) = (10u32, 64u32, 0u32, 0u64);
    let mut ebpf = aya::EbpfLoader::new()
        .override_global("target_tid", &tid, true)
        .override_global("trigger_nr", &nr, true)
        .override_global("per_trigger", &per_trigger, true)
        .override_global("record_size", &record_size, true)
        .override_global("discard_every", &zero32, true)
        .override_global("wakeup_bytes", &zero64, true)
        // Room for seconds of events: a drop here would be the kernel's,
        // not the update's (and is checked separately).
        .map_max_entries("seq_ring", 8 << 20)
        .load_file(artifact("seq_producer.bpf.o"))
        .unwrap();
    let prog: &mut RawTracePoint = ebpf.program_mut("trigger").unwrap().try_into().unwrap();
    prog.load().unwrap();
    prog.attach("sys_enter").unwrap();
    ebpf.map("seq_ring").unwrap().pin(pin).unwrap();
    ebpf
}

fn produced(ebpf: &aya::Ebpf) -> u64 {
    let stats: aya::maps::Array<_, u64> =
        aya::maps::Array::try_from(ebpf.map("seq_stats").unwrap()).unwrap();
    stats.get(&0, 0).unwrap()
}

/// A bpffs directory for this test's pins, removed even if the test fails.
struct PinDir(String);

impl PinDir {
    fn new(test: &str) -> Self {
        let dir = format!("/sys/fs/bpf/conductor-test-{}-{test}", std::process::id());
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_under_load_loses_no_event() {
    if !require_root() {
        return;
    }
    let pins = PinDir::new("update");
    let pin = format!("{}/ring", pins.0);
    let spec = |component: &str, config: &str| {
        format!(
            "name: seq-update\ncomponent: {}\nmaps:\n  - name: seq_ring\n    pin: {pin}\n    events: {{maxBatch: 64}}\nconfig: {config}\n",
            path_str(&artifact(component)),
        )
    };

    // The producer runs on a thread of its own, triggering until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let producer = {
        let stop = stop.clone();
        let pin = pin.clone();
        std::thread::spawn(move || {
            let ebpf = load_producer(&pin);
            ready_tx.send(()).unwrap();
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: getpgid has no memory arguments.
                unsafe { libc::getpgid(0) };
                std::thread::sleep(Duration::from_micros(500));
            }
            produced(&ebpf)
        })
    };
    ready_rx.recv().unwrap();

    let mut daemon = Daemon::start();
    let mut c = daemon.client().await;
    c.load(load_request(&spec(
        "testing_seq_sum.wasm",
        "{version: '1'}",
    )))
    .await
    .unwrap();
    let update = |yaml: String| v1::UpdateRequest {
        spec: Some(wire_spec(&yaml)),
        annotations: HashMap::new(),
    };
    let pause = || tokio::time::sleep(Duration::from_millis(300));

    pause().await;
    let status = c
        .update(update(spec("testing_seq_sum.wasm", "{version: '2'}")))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.generation, 2);
    assert_eq!(phase(&status), v1::Phase::Running);
    assert!(
        blocking(|| daemon.wait_for_log("kind=Swapped", LONG)).is_some(),
        "the kernel side stayed: {}",
        daemon.log_text()
    );

    // A new version whose init fails: refused, the old one keeps running.
    pause().await;
    let err = c
        .update(update(spec(
            "testing_collector.wasm",
            "{series: 'not-a-number'}",
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("init failed"), "{err:?}");
    assert!(err.message().contains("running version stays"), "{err:?}");
    let text = blocking(|| daemon.scrape());
    assert!(
        !text.contains("seq_update__collected"),
        "what the refused version declared is gone: {text}"
    );

    // A component of another world: refused before anything changes.
    pause().await;
    let err = c
        .update(update(spec("testing_wrong_world.wasm", "{}")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let status = c
        .get(v1::GetRequest {
            name: "seq-update".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.generation, 2, "failed updates change nothing");
    assert_eq!(phase(&status), v1::Phase::Running);

    pause().await;
    let status = c
        .update(update(spec("testing_seq_sum.wasm", "{version: '3'}")))
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(status.generation, 3);
    pause().await;

    stop.store(true, Ordering::Relaxed);
    let produced = producer.join().unwrap();
    assert!(produced > 1000, "the producer ran: {produced} records");
    let events = blocking(|| {
        daemon.wait_for_metric(
            r#"seq_update__events_total{plugin="seq-update"}"#,
            LONG,
            |v| v >= produced as f64,
        )
    }) as u64;
    let text = daemon.scrape();
    let metric = |s: &str| value(&text, s).unwrap_or_else(|| panic!("no {s} in\n{text}"));
    let kernel_lost = metric(
        r#"conductor_events_lost_total{plugin="seq-update",source="seq_ring",reason="kernel"}"#,
    );
    let host_lost = metric(
        r#"conductor_events_lost_total{plugin="seq-update",source="seq_ring",reason="host"}"#,
    );
    let seen_lost = metric(r#"seq_update__lost_total{plugin="seq-update"}"#);
    let sum = metric(r#"seq_update__summed_seq_total{plugin="seq-update"}"#);
    println!(
        "update under load: {produced} events produced, {events} consumed across 2 updates and 2 refused updates; events lost across Update: {}",
        produced - events
    );
    assert_eq!(
        kernel_lost, 0.0,
        "the ring overflowed (not the update's doing)"
    );
    assert_eq!(host_lost, 0.0);
    assert_eq!(seen_lost, 0.0);
    assert_eq!(events, produced, "every event consumed exactly once");
    assert_eq!(
        sum,
        (produced * (produced - 1) / 2) as f64,
        "each sequence number exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_restores_the_plugins() {
    if !require_root() {
        return;
    }
    let mut daemon = Daemon::start();
    let mut c = daemon.client().await;
    for name in ["ec-crash-a", "ec-crash-b"] {
        let mut req = load_request(&exec_counter_spec(name));
        req.annotations = HashMap::from([("owner".into(), name.into())]);
        c.load(req).await.unwrap();
    }
    c.load(load_request(&steady_spec("steady-crash", "hi")))
        .await
        .unwrap();
    // Generation 2 of one of them must come back as generation 2.
    c.update(v1::UpdateRequest {
        spec: Some(wire_spec(&steady_spec("steady-crash", "again"))),
        annotations: HashMap::new(),
    })
    .await
    .unwrap();
    let old = held(&daemon, "handle_exec");
    assert_eq!(old.len(), 2);

    daemon.kill9();
    drop(c);
    // The kernel detaches everything of a dead process: nothing half-loaded stays.
    wait_unloaded(&old);
    assert!(
        daemon.socket.exists(),
        "kill -9 leaves the socket file behind"
    );

    let started = Instant::now();
    blocking(|| daemon.spawn());
    let mut c = daemon.client().await;
    for name in ["ec-crash-a", "ec-crash-b", "steady-crash"] {
        wait_for_phase(&mut c, name, v1::Phase::Running, LONG).await;
    }
    let recovery = started.elapsed();
    println!(
        "restart recovery time: {} ms from starting the daemon to 3 plugins running (2 with BPF programs, compile cache warm)",
        recovery.as_millis()
    );
    assert!(daemon.log_text().contains("removing the stale socket"));

    let now = held(&daemon, "handle_exec");
    assert_eq!(now.len(), 2, "each plugin attached once: {now:?}");
    assert!(now.iter().all(|id| !old.contains(id)));
    let a = c
        .get(v1::GetRequest {
            name: "ec-crash-a".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(a.annotations["owner"], "ec-crash-a");
    assert_eq!(a.generation, 1);
    let s = c
        .get(v1::GetRequest {
            name: "steady-crash".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(s.generation, 2);
    let spec = conductor_api::PluginSpec::try_from(s.spec.unwrap()).unwrap();
    assert_eq!(
        spec.config["greeting"], "again",
        "the updated spec came back"
    );
    assert_eq!(
        daemon
            .wait_for_log("steady started: again", LONG)
            .map(|_| ()),
        Some(())
    );

    let bin = UniqueBinary::new("cndtrrst");
    blocking(|| bin.run(7));
    let n =
        blocking(|| daemon.wait_for_metric(&execs("ec-crash-a", &bin.comm), LONG, |v| v >= 7.0));
    assert_eq!(n, 7.0);

    // One daemon per socket and per state directory.
    let (mut second, log) = daemon.spawn_raw();
    let status = second.wait().unwrap();
    assert!(!status.success());
    std::thread::sleep(Duration::from_millis(100));
    let text = log.lock().unwrap().join("\n");
    assert!(
        text.contains("another conductor daemon")
            && text.contains(&format!("pid {}", daemon.pid())),
        "{text}"
    );
    let out = cli_output(
        Command::new(env!("CARGO_BIN_EXE_conductor"))
            .arg("serve")
            .arg("--socket")
            .arg(daemon.dir.path().join("other.sock"))
            .arg("--state-dir")
            .arg(&daemon.state_dir)
            .args(["--metrics-addr", "127.0.0.1:0"]),
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already using the state directory"),
        "{out:?}"
    );

    // A clean stop detaches everything and keeps the desired state.
    assert!(daemon.stop().success());
    wait_unloaded(&now);
    assert!(!daemon.socket.exists(), "a clean stop removes the socket");
    let state = std::fs::read_to_string(daemon.state_dir.join("plugins.json")).unwrap();
    assert!(state.contains("ec-crash-b"), "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_off_the_allow_list_is_denied() {
    if !require_root() {
        return;
    }
    // nobody (65534) may open the socket (its group is nogroup, 65534)
    // but is not on the allow-list: SO_PEERCRED decides.
    let denied = Daemon::start_with(&["--socket-group", "65534", "--allow-gid", "0"]);
    std::fs::set_permissions(denied.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let meta = std::fs::metadata(&denied.socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid(), 65534);
    let as_nobody = |d: &Daemon| {
        cli_output(
            Command::new(env!("CARGO_BIN_EXE_conductor"))
                .args(["list", "--socket"])
                .arg(&d.socket)
                .uid(65534)
                // std drops root's supplementary groups with the uid.
                .gid(65534),
        )
    };
    let out = as_nobody(&denied);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("uid 65534") && err.contains("may not use"),
        "{err}"
    );
    // Root still may.
    let mut c = denied.client().await;
    c.list(v1::ListRequest {}).await.unwrap();

    // By default the socket's group is allowed.
    let allowed = Daemon::start_with(&["--socket-group", "nogroup"]);
    std::fs::set_permissions(allowed.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = as_nobody(&allowed);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("NAME"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dozens_of_concurrent_clients_load_and_list() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    const CLIENTS: usize = 40;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let mut c = daemon.client().await;
        tasks.push(tokio::spawn(async move {
            let name = format!("steady-{i}");
            let status = c
                .load(load_request(&steady_spec(&name, &format!("client {i}"))))
                .await?
                .into_inner()
                .status
                .unwrap();
            let listed = c.list(v1::ListRequest {}).await?.into_inner().plugins;
            assert!(listed.iter().any(|p| p.name == name));
            // Racing loads of one name: exactly one wins.
            let dup = c
                .load(load_request(&steady_spec("steady-contended", "x")))
                .await;
            Ok::<_, tonic::Status>((status, dup.map(|_| ()).map_err(|e| e.code())))
        }));
    }
    let mut contended_ok = 0;
    for t in tasks {
        let (status, dup) = t.await.unwrap().unwrap();
        assert_eq!(phase(&status), v1::Phase::Running);
        match dup {
            Ok(()) => contended_ok += 1,
            Err(code) => assert!(matches!(code, Code::AlreadyExists), "unexpected {code:?}"),
        }
    }
    assert_eq!(contended_ok, 1, "one load of a contended name wins");
    println!(
        "{CLIENTS} concurrent clients loaded {CLIENTS} plugins in {} ms",
        started.elapsed().as_millis()
    );
    let mut c = daemon.client().await;
    let list = c
        .list(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .plugins;
    assert_eq!(list.len(), CLIENTS + 1);
    assert!(
        list.iter().all(|p| phase(p) == v1::Phase::Running),
        "{list:?}"
    );

    let mut tasks = Vec::new();
    for p in list {
        let mut c = daemon.client().await;
        tasks.push(tokio::spawn(async move {
            c.unload(v1::UnloadRequest { name: p.name }).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let list = c
        .list(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .plugins;
    assert!(list.is_empty(), "{list:?}");
    let state = std::fs::read_to_string(daemon.state_dir.join("plugins.json")).unwrap();
    assert!(!state.contains("steady-"), "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_pull_blocks_nobody_else() {
    if !require_root() {
        return;
    }
    use conductor_test_support::registry::{Fault, Proxy, Registry, conductor};
    let reg = Registry::start();
    let wasm = artifact("testing_steady.wasm");
    let reference = format!("{}/plugins/steady:1.0", reg.addr);
    let out = conductor(&["push", wasm.to_str().unwrap(), &reference], &[]);
    assert!(out.status.success(), "{out:?}");
    let stalled = Proxy::start(&reg.addr, 2048, Fault::Stall);

    let daemon = Daemon::start_with(&["--registry-timeout", "8"]);
    let mut c = daemon.client().await;
    let slow = {
        let mut c = c.clone();
        let yaml = format!(
            "name: slow-pull\ncomponent: oci://{}/plugins/steady:1.0\n",
            stalled.addr
        );
        tokio::spawn(async move { c.load(load_request(&yaml)).await })
    };
    wait_for_phase(&mut c, "slow-pull", v1::Phase::Pulling, LONG).await;
    // Meanwhile the daemon answers and loads other plugins.
    let started = Instant::now();
    c.load(load_request(&steady_spec("fast-load", "hi")))
        .await
        .unwrap();
    let list = c
        .list(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .plugins;
    assert_eq!(list.len(), 2);
    assert!(!slow.is_finished(), "the pull should still be stalled");
    println!(
        "loaded another plugin in {} ms while a pull was stalled",
        started.elapsed().as_millis()
    );

    let err = slow.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("timed out"), "{err:?}");
    let err = c
        .get(v1::GetRequest {
            name: "slow-pull".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "a failed load leaves nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_and_faults_get_clear_errors_and_change_nothing() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    let mut c = daemon.client().await;
    c.load(load_request(&steady_spec("bystander", "hi")))
        .await
        .unwrap();

    let err = c
        .load(v1::LoadRequest {
            spec: None,
            annotations: HashMap::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    let mut relative = wire_spec(&steady_spec("relative", "x"));
    relative.component = "plugins/steady.wasm".into();
    let err = load_err(&mut c, relative).await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("absolute"), "{err:?}");

    let mut bad = wire_spec(&steady_spec("x", "x"));
    bad.name = "Not A DNS Label".into();
    let err = load_err(&mut c, bad).await;
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("name"), "{err:?}");

    // Oversized: refused before it is decoded.
    let mut huge = wire_spec(&steady_spec("huge", "x"));
    huge.config.insert("blob".into(), "x".repeat(2 << 20));
    let err = load_err(&mut c, huge).await;
    assert!(
        matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted),
        "{err:?}"
    );

    for code in [
        c.get(v1::GetRequest {
            name: "ghost".into(),
        })
        .await
        .unwrap_err()
        .code(),
        c.unload(v1::UnloadRequest {
            name: "ghost".into(),
        })
        .await
        .unwrap_err()
        .code(),
        c.update(v1::UpdateRequest {
            spec: Some(wire_spec(&steady_spec("ghost", "x"))),
            annotations: HashMap::new(),
        })
        .await
        .unwrap_err()
        .code(),
        c.logs(v1::LogsRequest {
            name: "ghost".into(),
            follow: true,
            tail: 0,
        })
        .await
        .err()
        .unwrap()
        .code(),
    ] {
        assert_eq!(code, Code::NotFound);
    }

    // Load is atomic on the kernel: a missing second program rolls back the first.
    let two = exec_counter_spec("half-loaded").replace(
        "      tracepoint: sched/sched_process_exec\n",
        "      tracepoint: sched/sched_process_exec\n    - name: no_such_program\n      tracepoint: sched/sched_process_exit\n",
    );
    let err = c.load(load_request(&two)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("no_such_program"), "{err:?}");
    assert!(held(&daemon, "handle_exec").is_empty());
    // And on the user side: an init that fails rolls everything back.
    let failing = format!(
        "name: bad-init\ncomponent: {}\nconfig: {{series: many}}\n",
        path_str(&artifact("testing_collector.wasm"))
    );
    let err = c.load(load_request(&failing)).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("init"), "{err:?}");
    let names: Vec<_> = c
        .list(v1::ListRequest {})
        .await
        .unwrap()
        .into_inner()
        .plugins
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["bystander"]);

    // A crash-looping plugin restarts with a backoff; the bystander is unaffected.
    let trap = format!(
        "name: crash-loop\ncomponent: {}\ntickIntervalMs: 20\n",
        path_str(&artifact("testing_trap.wasm"))
    );
    c.load(load_request(&trap)).await.unwrap();
    let until = Instant::now() + LONG;
    let status = loop {
        let s = c
            .get(v1::GetRequest {
                name: "crash-loop".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        if s.restarts >= 2 {
            break s;
        }
        assert!(Instant::now() < until, "no restarts: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        status.last_error.contains("tick failed: trap"),
        "{status:?}"
    );
    // The guest's panic message went to its stderr, which Logs keeps.
    let lines = recent_logs(&mut c, "crash-loop").await;
    assert!(
        lines
            .iter()
            .any(|l| l.message.contains("trapping on purpose")
                && l.fields.get("stream").map(String::as_str) == Some("stderr")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.level == "error" && l.fields["source"] == "host"),
        "the host's fault reports are among the plugin's lines: {lines:?}"
    );
    let bystander = c
        .get(v1::GetRequest {
            name: "bystander".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(phase(&bystander), v1::Phase::Running);
    assert_eq!(bystander.restarts, 0);

    // Clients that hang up mid-stream leave nothing behind.
    let fds = |pid: i32| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let baseline = fds(daemon.pid());
    let mut streams = Vec::new();
    for _ in 0..30 {
        let mut c = daemon.client().await;
        let mut w = c
            .watch(v1::WatchRequest::default())
            .await
            .unwrap()
            .into_inner();
        w.message().await.unwrap().unwrap();
        let mut l = c
            .logs(v1::LogsRequest {
                name: "bystander".into(),
                follow: true,
                tail: 1,
            })
            .await
            .unwrap()
            .into_inner();
        l.message().await.unwrap().unwrap();
        streams.push((c, w, l));
    }
    assert!(fds(daemon.pid()) >= baseline + 30);
    drop(streams);
    // Changes still flow (to nobody) and requests are served.
    c.update(v1::UpdateRequest {
        spec: Some(wire_spec(&steady_spec("bystander", "again"))),
        annotations: HashMap::new(),
    })
    .await
    .unwrap();
    let until = Instant::now() + LONG;
    while fds(daemon.pid()) > baseline {
        assert!(
            Instant::now() < until,
            "connections of gone clients stay open: {} fds, {baseline} before",
            fds(daemon.pid())
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.unload(v1::UnloadRequest {
        name: "crash-loop".into(),
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_readiness_endpoints() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    let base = daemon.metrics_url.trim_end_matches("/metrics").to_owned();
    for path in ["/healthz", "/readyz"] {
        let resp = ureq::get(&format!("{base}{path}")).call().unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    // The standard gRPC health service, over the same socket.
    let channel = tonic::transport::Endpoint::from_static("http://conductor.sock")
        .connect_with_connector(tower_unix(daemon.socket.clone()))
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let resp = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "conductor.v1.Conductor".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // Server reflection names the services, so grpcurl & co. need no .proto.
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let channel = tonic::transport::Endpoint::from_static("http://conductor.sock")
        .connect_with_connector(tower_unix(daemon.socket.clone()))
        .await
        .unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter(vec![ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        responses.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    for want in ["conductor.v1.Conductor", "grpc.health.v1.Health"] {
        assert!(names.iter().any(|n| n == want), "{names:?}");
    }
}

/// `conductor status` (the daemon's probe) and `conductor features` (a
/// local probe) report the same capabilities, and they match what this
/// kernel shows of itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_features_report_what_the_kernel_supports() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    let json = |out: std::process::Output| -> serde_json::Value {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let status = json(blocking(|| daemon.cli(&["status", "-o", "json"])));
    let local = json(blocking(|| {
        Command::new(conductor_bin())
            .args(["features", "-o", "json"])
            .output()
            .unwrap()
    }));

    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(status["kernel"], release.trim());
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["startedAt"].is_string(), "{status}");
    let caps = |v: &serde_json::Value| -> Vec<(String, String, String)> {
        v["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let s = |k: &str| c[k].as_str().unwrap().to_owned();
                (s("kind"), s("name"), s("supported"))
            })
            .collect()
    };
    assert_eq!(caps(&status), caps(&local));
    let support = |kind: &str, name: &str| -> String {
        caps(&status)
            .into_iter()
            .find(|(k, n, _)| k == kind && n == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {status}"))
            .2
    };
    // What the kernel says of itself, read independently of the probes.
    let has = |path: &str| {
        if std::path::Path::new(path).exists() {
            "yes"
        } else {
            "no"
        }
    };
    assert_eq!(
        support("feature", "kprobes"),
        has("/sys/bus/event_source/devices/kprobe")
    );
    assert_eq!(
        support("feature", "uprobes"),
        has("/sys/bus/event_source/devices/uprobe")
    );
    assert_eq!(support("feature", "btf"), has("/sys/kernel/btf/vmlinux"));
    // The host's own tests load tracepoint programs with ring buffers here.
    assert_eq!(support("program-type", "tracepoint"), "yes");
    assert_eq!(support("map-type", "ringbuf"), "yes");
    assert_eq!(support("helper", "ringbuf_output (tracepoint)"), "yes");
    // A missing feature says why.
    for c in status["capabilities"].as_array().unwrap() {
        if c["supported"] != "yes" {
            assert!(c["detail"].as_str().is_some_and(|d| !d.is_empty()), "{c}");
        }
    }

    let table = blocking(|| daemon.cli(&["status"]));
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(
        table.contains("KIND") && table.contains("kprobes"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_follow_new_lines_until_the_plugin_goes() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    let mut c = daemon.client().await;
    c.load(load_request(&steady_spec("followed", "first")))
        .await
        .unwrap();
    let mut follow = c
        .logs(v1::LogsRequest {
            name: "followed".into(),
            follow: true,
            tail: 1,
        })
        .await
        .unwrap()
        .into_inner();
    let first = follow.message().await.unwrap().unwrap();
    assert!(!first.message.is_empty());
    c.update(v1::UpdateRequest {
        spec: Some(wire_spec(&steady_spec("followed", "second"))),
        annotations: HashMap::new(),
    })
    .await
    .unwrap();
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(LONG, follow.message())
            .await
            .expect("no new line arrived")
            .unwrap()
            .expect("stream ended early");
        let done = line.message.contains("steady started: second");
        seen.push(line);
        if done {
            break;
        }
    }
    assert!(
        seen.iter().all(|l| l.time.is_some() && !l.level.is_empty()),
        "{seen:?}"
    );
    c.unload(v1::UnloadRequest {
        name: "followed".into(),
    })
    .await
    .unwrap();
    // Unloading ends the stream (after any lines still queued).
    loop {
        match tokio::time::timeout(LONG, follow.message())
            .await
            .expect("the stream did not end")
        {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_cannot_come_back_is_failed_with_the_reason() {
    if !require_root() {
        return;
    }
    let mut daemon = Daemon::start();
    let mut c = daemon.client().await;
    // Two plugins whose component files will be missing at the next start.
    let doomed = daemon.dir.path().join("doomed.wasm");
    let lost = daemon.dir.path().join("lost.wasm");
    for (name, file) in [("doomed", &doomed), ("lost", &lost)] {
        std::fs::copy(artifact("testing_steady.wasm"), file).unwrap();
        let yaml = format!("name: {name}\ncomponent: {}\n", file.display());
        c.load(load_request(&yaml)).await.unwrap();
    }
    c.load(load_request(&steady_spec("survivor", "x")))
        .await
        .unwrap();
    assert!(daemon.stop().success());
    std::fs::remove_file(&doomed).unwrap();
    std::fs::remove_file(&lost).unwrap();

    blocking(|| daemon.spawn());
    // Every persisted plugin had its first attempt, and readiness names
    // the two that cannot run.
    let ready = daemon.metrics_url.replace("/metrics", "/readyz");
    let until = Instant::now() + LONG;
    let (code, body) = loop {
        match http_get(&ready) {
            Ok((503, body)) if body.starts_with("loading") => {}
            Ok(answer) => break answer,
            Err(_) => {}
        }
        assert!(Instant::now() < until, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("plugin doomed is Failed") && body.contains("plugin lost is Failed"),
        "{body}"
    );
    let mut c = daemon.client().await;
    for name in ["doomed", "lost"] {
        let status = c
            .get(v1::GetRequest { name: name.into() })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        assert_eq!(phase(&status), v1::Phase::Failed, "{status:?}");
        assert!(
            status.last_error.contains(&format!("{name}.wasm")),
            "{status:?}"
        );
    }
    wait_for_phase(&mut c, "survivor", v1::Phase::Running, LONG).await;

    // The file comes back: a retry brings the plugin back by itself.
    std::fs::copy(artifact("testing_steady.wasm"), &doomed).unwrap();
    let status = wait_for_phase(&mut c, "doomed", v1::Phase::Running, LONG).await;
    assert_eq!(status.generation, 1);
    assert!(status.last_error.is_empty(), "{status:?}");
    assert!(
        blocking(|| daemon.wait_for_log("restored on a retry", LONG)).is_some(),
        "{}",
        daemon.log_text()
    );

    // Still desired: the name is taken, and an update with a fixed spec revives it.
    let err = c
        .load(load_request(&steady_spec("lost", "x")))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    let status = c
        .update(v1::UpdateRequest {
            spec: Some(wire_spec(&steady_spec("lost", "back"))),
            annotations: HashMap::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .status
        .unwrap();
    assert_eq!(phase(&status), v1::Phase::Running);
    assert_eq!(status.generation, 2);
    let out = blocking(|| daemon.cli(&["list"]));
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(table.matches("Running").count(), 3, "{table}");
    assert_eq!(http_get(&ready).unwrap(), (200, "ready\n".to_owned()));
}

fn tower_unix(
    path: std::path::PathBuf,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |_| {
        let path = path.clone();
        async move {
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                tokio::net::UnixStream::connect(path).await?,
            ))
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_formats_and_exit_codes() {
    if !require_root() {
        return;
    }
    let daemon = Daemon::start();
    let specs = tempfile::tempdir().unwrap();
    std::fs::copy(
        artifact("testing_steady.wasm"),
        specs.path().join("steady.wasm"),
    )
    .unwrap();
    let file = specs.path().join("steady.yaml");
    std::fs::write(
        &file,
        "name: cli-steady\ncomponent: ./steady.wasm\nconfig: {greeting: hello}\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let run = |args: &[&str]| blocking(|| daemon.cli(args));
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };

    let out = run(&["load", file, "-a", "owner=cli"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("loaded cli-steady"));
    let out = run(&["load", file]);
    assert_eq!(out.status.code(), Some(4), "already exists: {}", text(&out));

    let out = run(&["list", "-o", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &list[0];
    assert_eq!(p["name"], "cli-steady");
    assert_eq!(p["phase"], "Running");
    assert_eq!(p["annotations"]["owner"], "cli");
    assert_eq!(
        p["spec"]["component"],
        specs.path().join("steady.wasm").to_str().unwrap(),
        "relative paths are sent absolute"
    );
    let out = run(&["get", "cli-steady", "-o", "yaml"]);
    let got: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&out.stdout).unwrap();
    assert_eq!(got["generation"].as_u64(), Some(1));
    let out = run(&["list"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains("cli-steady") && table.contains("Running"),
        "{table}"
    );

    let out = run(&["get", "nope"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert_eq!(run(&["unload", "nope"]).status.code(), Some(3));
    let bad = specs.path().join("bad.yaml");
    std::fs::write(&bad, "name: Bad Name\ncomponent: ./steady.wasm\n").unwrap();
    assert_eq!(run(&["load", bad.to_str().unwrap()]).status.code(), Some(7));
    assert_eq!(run(&["load", "/nonexistent.yaml"]).status.code(), Some(7));
    let failing = specs.path().join("failing.yaml");
    std::fs::copy(
        artifact("testing_collector.wasm"),
        specs.path().join("collector.wasm"),
    )
    .unwrap();
    std::fs::write(
        &failing,
        "name: cli-failing\ncomponent: collector.wasm\nconfig: {series: many}\n",
    )
    .unwrap();
    assert_eq!(
        run(&["load", failing.to_str().unwrap()]).status.code(),
        Some(8)
    );

    std::fs::write(
        specs.path().join("steady.yaml"),
        "name: cli-steady\ncomponent: ./steady.wasm\nconfig: {greeting: again}\n",
    )
    .unwrap();
    let out = run(&["update", file]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("generation 2"), "{}", text(&out));
    let out = run(&["logs", "cli-steady"]);
    let logs = String::from_utf8_lossy(&out.stdout);
    assert!(logs.contains("steady started: hello"), "{logs}");
    assert!(logs.contains("steady started: again"), "{logs}");
    assert!(logs.contains("steady stdout: again"), "{logs}");
    let out = run(&["logs", "cli-steady", "-o", "json", "--tail", "2"]);
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);

    // watch streams until interrupted: the first event is the current state.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_conductor"))
        .args(["watch", "-o", "json", "--socket"])
        .arg(&daemon.socket)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    blocking(|| {
        use std::io::BufRead;
        std::io::BufReader::new(watch.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap()
    });
    let event: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(event["kind"], "INITIAL");
    assert_eq!(event["status"]["name"], "cli-steady");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(watch.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert!(blocking(|| watch.wait()).unwrap().success());

    let out = run(&["unload", "cli-steady"]);
    assert_eq!(out.status.code(), Some(0));
    let out = cli_output(Command::new(env!("CARGO_BIN_EXE_conductor")).args([
        "list",
        "--socket",
        "/nonexistent/conductor.sock",
    ]));
    assert_eq!(out.status.code(), Some(6), "unreachable: {out:?}");
}
