//! `bytecode.loader: bpfman` on the real kernel with a real bpfman 0.6 (in
//! a private mount namespace, see `conductor_test_support::bpfman`): bpfman
//! loads and attaches the exec-counter's program, the host opens the maps
//! bpfman pinned, counts every exec exactly, and nothing is left in bpfman
//! after the host stops, after a failed load, or (once the next host
//! starts) after `kill -9`.

use std::time::Duration;

use conductor_test_support::bpfman::Bpfman;
use conductor_test_support::*;

/// The exec-counter spec with `loader: bpfman`.
fn bpfman_spec(name: &str) -> String {
    let spec = exec_counter_spec(name);
    assert!(spec.contains("bytecode:\n"));
    spec.replacen("bytecode:\n", "bytecode:\n  loader: bpfman\n", 1)
}

/// The plugin's exec counter (its metrics are prefixed with its name).
fn execs(name: &str, comm: &str) -> String {
    let prefix = name.replace('-', "_");
    format!(
        r#"{prefix}__execs_total{{plugin="{name}",comm="{comm}",namespace="",pod="",container=""}}"#
    )
}

/// Run `bin` `n` times and wait until the host counted exactly `want`.
fn count_exactly(host: &Host, name: &str, bin: &UniqueBinary, n: usize, want: usize) {
    bin.run(n);
    let series = execs(name, &bin.comm);
    let got = host.wait_for_metric(&series, Duration::from_secs(15), |v| v >= want as f64);
    assert_eq!(got, want as f64, "each exec is counted exactly once");
}

#[test]
fn bpfman_loads_the_plugins_programs_and_unloads_them_when_the_host_stops() {
    if !require_root() {
        return;
    }
    let bpfman = Bpfman::start();
    let name = "bpfman-exec";
    let host = Host::start_wrapped(&bpfman_spec(name), None, &[], &[], &|c| {
        keep_all(&bpfman, c)
    });

    // bpfman owns the program: tagged with the plugin, listed under its
    // name as application, its maps pinned under its id.
    let ids = bpfman.plugin_programs(name);
    assert_eq!(ids.len(), 1, "{}", bpfman.cli(&["list", "programs"]));
    let listed = bpfman.cli(&["list", "programs", "--application", name]);
    assert!(
        listed.contains(&ids[0].to_string()) && listed.contains("handle_exec"),
        "{listed}"
    );
    let maps = format!("/run/bpfman/fs/maps/{}", ids[0]);
    assert!(bpfman.path(&format!("{maps}/events")).exists());
    assert!(bpfman.path(&format!("{maps}/events_lost")).exists());
    let log = host.log_text();
    assert!(log.contains("bpfman loaded and attached"), "{log}");
    // The ring's kernel-drop counter is bpfman's pin `events_lost`.
    assert!(!log.contains("has no `events_lost` map"), "{log}");

    let bin = UniqueBinary::new("cndtbpfm");
    count_exactly(&host, name, &bin, 30, 30);
    let text = host.scrape();
    assert_eq!(
        value(
            &text,
            &format!(
                r#"conductor_events_lost_total{{plugin="{name}",source="events",reason="kernel"}}"#
            )
        ),
        Some(0.0),
        "{text}"
    );

    let status = host.stop();
    assert!(status.success(), "{status:?}");
    assert!(bpfman.plugin_programs(name).is_empty());
    assert!(
        bpfman.program_ids(&[]).is_empty(),
        "{}",
        bpfman.cli(&["list", "programs"])
    );
    assert!(!bpfman.path(&maps).exists(), "{maps} is left behind");
}

#[test]
fn programs_of_a_killed_host_are_unloaded_by_the_next_one() {
    if !require_root() {
        return;
    }
    let bpfman = Bpfman::start();
    let name = "bpfman-kill";
    let spec = bpfman_spec(name);
    let host = Host::start_wrapped(&spec, None, &[], &[], &|c| keep_all(&bpfman, c));
    let first = bpfman.plugin_programs(name);
    assert_eq!(first.len(), 1);
    // Dropping the harness kills the host with SIGKILL: it cannot unload,
    // bpfman keeps the program.
    drop(host);
    assert_eq!(bpfman.plugin_programs(name), first);

    let mut host = Host::start_wrapped(&spec, None, &[], &[], &|c| keep_all(&bpfman, c));
    assert!(
        host.wait_for_log("previous host left behind", Duration::from_secs(5))
            .is_some(),
        "{}",
        host.log_text()
    );
    let second = bpfman.plugin_programs(name);
    assert_eq!(second.len(), 1, "{}", bpfman.cli(&["list", "programs"]));
    assert_ne!(second, first);
    // Only the new program is attached: each exec is counted once.
    let bin = UniqueBinary::new("cndtbpfk");
    count_exactly(&host, name, &bin, 20, 20);

    assert!(host.stop().success());
    assert!(
        bpfman.program_ids(&[]).is_empty(),
        "{}",
        bpfman.cli(&["list", "programs"])
    );
}

#[test]
fn a_failed_attach_leaves_nothing_in_bpfman() {
    if !require_root() {
        return;
    }
    let bpfman = Bpfman::start();
    let spec = bpfman_spec("bpfman-bad").replace(
        "tracepoint: sched/sched_process_exec",
        "tracepoint: sched/conductor_no_such_tracepoint",
    );
    let (status, log) = run_to_exit_wrapped(&spec, &|c| keep_all(&bpfman, c));
    assert!(!status.success(), "{log}");
    assert!(
        log.contains("bpfman failed") && log.contains("conductor_no_such_tracepoint"),
        "{log}"
    );
    assert!(
        bpfman.program_ids(&[]).is_empty(),
        "{}",
        bpfman.cli(&["list", "programs"])
    );
}

/// bpfman runs as the host's child with the host's capabilities, so the
/// host keeps all of them (see docs/src/bpfman.md).
fn keep_all(bpfman: &Bpfman, c: &mut std::process::Command) {
    bpfman.enter(c);
    c.env("CONDUCTOR_KEEP_CAPABILITIES", "all");
}

/// Load the exec-counter's object through bpfman as someone else would,
/// under application `app`, attached to exec; its program id.
fn load_elsewhere(bpfman: &Bpfman, app: &str) -> u32 {
    let obj = path_str(&artifact("exec_counter.bpf.o"));
    bpfman.cli(&[
        "load",
        "file",
        "--path",
        &obj,
        "--programs",
        "tracepoint:handle_exec",
        "--application",
        app,
    ]);
    let ids = bpfman.program_ids(&["--application", app]);
    assert_eq!(ids.len(), 1, "{}", bpfman.cli(&["list", "programs"]));
    let id = ids[0].to_string();
    bpfman.cli(&[
        "attach",
        &id,
        "tracepoint",
        "--tracepoint",
        "sched/sched_process_exec",
    ]);
    ids[0]
}

#[test]
fn maps_of_a_bpfman_program_named_by_application_follow_it_across_reloads() {
    if !require_root() {
        return;
    }
    let bpfman = Bpfman::start();
    let app = "exec-app";
    let first = load_elsewhere(&bpfman, app);
    let name = "bpfman-byname";
    let spec = format!(
        r#"
name: {name}
component: {}
bpfmanProgram: {{application: {app}, program: handle_exec}}
maps:
  - name: events
    events: {{maxBatch: 64}}
"#,
        path_str(&artifact("exec_counter.wasm")),
    );
    // The host loads nothing; to find the program it runs `bpfman list` and
    // `bpfman get`, which walk the kernel's programs by id: that needs
    // CAP_SYS_ADMIN besides the default capabilities (docs/src/bpfman.md).
    let mut host = Host::start_wrapped(&spec, None, &[], &[], &|c| {
        bpfman.enter(c);
        c.env(
            "CONDUCTOR_KEEP_CAPABILITIES",
            "bpf,perfmon,net_admin,sys_admin",
        );
    });
    let up = format!(r#"conductor_plugin_maps_source_up{{plugin="{name}"}}"#);
    let readyz = format!("http://{}/readyz", host.target());
    assert_eq!(value(&host.scrape(), &up), Some(1.0));
    let log = host.log_text();
    assert!(
        log.contains(&format!("/run/bpfman/fs/maps/{first}")),
        "{log}"
    );
    assert!(!log.contains("has no `events_lost` map"), "{log}");

    let bin = UniqueBinary::new("cndtbpfn");
    count_exactly(&host, name, &bin, 30, 30);

    // The owner unloads it: the plugin says so and is not ready.
    bpfman.cli(&["unload", &first.to_string()]);
    let got = host.wait_for_metric(&up, Duration::from_secs(15), |v| v == 0.0);
    assert_eq!(got, 0.0);
    assert!(
        host.wait_for_log("went away", Duration::from_secs(5))
            .is_some(),
        "{}",
        host.log_text()
    );
    let (code, body) = http_get(&readyz).unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(name) && body.contains("went away"), "{body}");

    // Loaded again (a new id): the same instance counts on, its count kept.
    let second = load_elsewhere(&bpfman, app);
    assert_ne!(second, first);
    let got = host.wait_for_metric(&up, Duration::from_secs(15), |v| v == 1.0);
    assert_eq!(got, 1.0);
    assert!(
        host.wait_for_log("is back", Duration::from_secs(5))
            .is_some(),
        "{}",
        host.log_text()
    );
    count_exactly(&host, name, &bin, 20, 50);
    let (code, body) = http_get(&readyz).unwrap();
    assert_eq!(code, 200, "{body}");
    let text = host.scrape();
    assert_eq!(
        value(
            &text,
            &format!(r#"conductor_plugin_restarts_total{{plugin="{name}"}}"#)
        ),
        Some(0.0),
        "{text}"
    );
    let log = host.log_text();
    assert_eq!(
        log.matches("plugin running").count(),
        1,
        "the instance is not re-created: {log}"
    );

    assert!(host.stop().success());
    // The host unloads nothing it did not load.
    assert_eq!(bpfman.program_ids(&["--application", app]), [second]);
}
