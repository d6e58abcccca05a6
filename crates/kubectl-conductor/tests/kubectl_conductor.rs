//! `kubectl conductor` end to end: the real `kubectl` finds the plugin on
//! PATH (its plugin discovery) and runs it against the fake API server. With
//! root, the plugins run for real: a `conductor serve` daemon on a real
//! socket, the real `conductor-operator` node agent and cluster controller,
//! the real exec-counter plugin on the kernel.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::Duration;

use conductor_operator::crd::{EbpfPlugin, EbpfPluginSpec, PLUGIN_FINALIZER};
use conductor_test_support::daemon::Daemon;
use conductor_test_support::{artifacts, kubectl_present, require_root, spawn_logged, wait_for};
use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

const T: Duration = Duration::from_secs(90);

struct Kubectl {
    dir: tempfile::TempDir,
}

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Kubectl {
    fn new(api: &FakeApiServer) -> Self {
        let dir = tempfile::tempdir().unwrap();
        api.write_kubeconfig(&dir.path().join("kubeconfig"));
        Self { dir }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    /// `kubectl conductor <args>`: kubectl looks the plugin up on PATH, where
    /// only the directory of the binary under test is added.
    fn conductor(&self, args: &[&str]) -> Ran {
        let out: Output = self.conductor_command(args).output().unwrap();
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// The `kubectl conductor <args>` command, to run or spawn.
    fn conductor_command(&self, args: &[&str]) -> Command {
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-conductor"))
            .parent()
            .unwrap()
            .to_owned();
        let path = std::env::join_paths(std::iter::once(bin_dir).chain(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        )))
        .unwrap();
        let mut c = Command::new("kubectl");
        c.env("KUBECONFIG", self.kubeconfig())
            .env("HOME", self.dir.path())
            .env("PATH", path)
            .arg("conductor")
            .args(args);
        c
    }
}

impl std::fmt::Debug for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

fn node(name: &str) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([(
                "kubernetes.io/hostname".to_string(),
                name.to_string(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// A `conductor-operator` process; killed when dropped.
struct Operator {
    child: Child,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Operator {
    fn spawn(kubeconfig: &Path, args: &[&str]) -> Self {
        // Beside this package's binary in the target directory (built by
        // `cargo build -p conductor-operator` or any workspace build), or
        // where CONDUCTOR_OPERATOR_BIN says.
        let bin = std::env::var_os("CONDUCTOR_OPERATOR_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                Path::new(env!("CARGO_BIN_EXE_kubectl-conductor"))
                    .with_file_name("conductor-operator")
            });
        assert!(
            bin.exists(),
            "{} is missing: run `cargo build -p conductor-operator` (or set CONDUCTOR_OPERATOR_BIN)",
            bin.display()
        );
        let (child, log) = spawn_logged(
            Command::new(bin)
                .args(args)
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .env("CONDUCTOR_OPERATOR_LOG", "info,conductor_operator=debug"),
        );
        Self { child, log }
    }

    fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real exec-counter plugin as a spec file (absolute paths on "the
/// node", which is this machine).
fn exec_counter_spec(dir: &Path, name: &str, component: &Path) -> PathBuf {
    let a = artifacts();
    let yaml = format!(
        "name: {name}\ncomponent: {}\nbytecode:\n  path: {}\n  programs: [{{name: handle_exec, tracepoint: sched/sched_process_exec}}]\nmaps: [{{name: events, events: {{maxBatch: 1024}}}}]\n",
        component.display(),
        a.join("exec_counter.bpf.o").display()
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

/// run → running on a real host, list (table, json), a failing update and
/// a failing create rolled back, delete: all through `kubectl conductor`.
#[test]
fn run_list_delete_on_a_real_host() {
    if !kubectl_present() || !require_root() {
        return;
    }
    let api = FakeApiServer::start();
    let k = Kubectl::new(&api);
    api.create(&node("node-a"));
    api.create(&node("node-b"));
    let d = Daemon::start();
    let ctl = Operator::spawn(&k.kubeconfig(), &["cluster"]);
    let agent = Operator::spawn(
        &k.kubeconfig(),
        &[
            "node",
            "--node-name",
            "node-a",
            "--socket",
            d.socket.to_str().unwrap(),
            "--sweep-interval-secs",
            "1",
        ],
    );
    let ctx = || format!("{}\n{}\n{}", ctl.log_text(), agent.log_text(), d.log_text());
    let component = artifacts().join("exec_counter.wasm");
    let spec = exec_counter_spec(k.dir.path(), "exec-counter", &component);

    let ran = k.conductor(&[
        "run",
        spec.to_str().unwrap(),
        "--node",
        "node-a",
        "--set",
        "greeting=hello",
        "--timeout",
        "90s",
    ]);
    assert_eq!(ran.code, Some(0), "{ran:?}\n{}", ctx());
    assert!(
        ran.stdout
            .contains("exec-counter is running on 1 node(s): node-a"),
        "{ran:?}"
    );
    assert!(
        ran.stderr
            .contains("ebpfplugin.ebpfconductor.io/exec-counter created"),
        "{ran:?}"
    );
    // Really running on the host, with the --set config, and only on node-a.
    let host = d.get("exec-counter").expect("loaded on the host");
    assert_eq!(host.phase, conductor_api::v1::Phase::Running as i32);
    let host_spec = host.spec.expect("the host reports the spec");
    assert_eq!(
        host_spec.config.get("greeting").map(String::as_str),
        Some("hello")
    );
    let p: EbpfPlugin = api.get(None, "exec-counter").unwrap();
    assert_eq!(
        p.spec.node_selector.match_labels,
        Some(BTreeMap::from([(
            "kubernetes.io/hostname".to_string(),
            "node-a".to_string()
        )]))
    );

    // list: a table for people ...
    let ran = k.conductor(&["list"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let mut lines = ran.stdout.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "COMPONENT",
            "NODE",
            "PHASE",
            "RESTARTS",
            "LAST",
            "ERROR"
        ],
        "{ran:?}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        row,
        [
            "exec-counter",
            component.to_str().unwrap(),
            "node-a",
            "Running",
            "0"
        ],
        "{ran:?}"
    );
    // ... and json for scripts.
    let ran = k.conductor(&["list", "-o", "json"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let json: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(json[0]["name"], "exec-counter", "{ran:?}");
    assert_eq!(json[0]["nodes"][0]["node"], "node-a", "{ran:?}");
    assert_eq!(json[0]["nodes"][0]["phase"], "Running", "{ran:?}");
    assert_eq!(json[0]["nodes"][0]["restarts"], 0, "{ran:?}");
    let ran = k.conductor(&["list", "-o", "yaml"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(ran.stdout.contains("phase: Running"), "{ran:?}");

    // An update whose component does not exist on the node: the host
    // refuses it, the previous spec is restored and keeps running.
    let missing = k.dir.path().join("missing.wasm");
    let bad = exec_counter_spec(k.dir.path(), "exec-counter", &missing);
    let ran = k.conductor(&["run", bad.to_str().unwrap(), "--node", "node-a"]);
    assert_eq!(ran.code, Some(3), "{ran:?}\n{}", ctx());
    assert!(
        ran.stderr.contains("exec-counter failed on 1 node(s)"),
        "{ran:?}"
    );
    assert!(ran.stderr.contains("node-a: "), "{ran:?}");
    assert!(ran.stderr.contains("missing.wasm"), "{ran:?}");
    assert!(
        ran.stderr
            .contains("rolled back: restored the previous spec of EbpfPlugin exec-counter"),
        "{ran:?}"
    );
    let p: EbpfPlugin = api.get(None, "exec-counter").unwrap();
    assert_eq!(p.spec.plugin.component, component.to_str().unwrap());
    wait_for(T, "the previous spec running again", ctx, || {
        d.get("exec-counter").filter(|h| {
            h.phase == conductor_api::v1::Phase::Running as i32
                && h.spec
                    .as_ref()
                    .is_some_and(|s| s.component == component.to_str().unwrap())
        })
    });

    // A new plugin that cannot load: deleted again, with the reason.
    let broken = exec_counter_spec(k.dir.path(), "broken", &missing);
    let ran = k.conductor(&["run", broken.to_str().unwrap(), "--node", "node-a"]);
    assert_eq!(ran.code, Some(3), "{ran:?}\n{}", ctx());
    assert!(ran.stderr.contains("broken failed on 1 node(s)"), "{ran:?}");
    assert!(ran.stderr.contains("missing.wasm"), "{ran:?}");
    assert!(
        ran.stderr
            .contains("rolled back: deleted EbpfPlugin broken (it did not exist before)"),
        "{ran:?}"
    );
    wait_for(T, "broken gone", ctx, || {
        api.get::<EbpfPlugin>(None, "broken")
            .is_none()
            .then_some(())
    });

    // delete waits until the node has unloaded it and the resource is gone.
    let ran = k.conductor(&["delete", "exec-counter"]);
    assert_eq!(ran.code, Some(0), "{ran:?}\n{}", ctx());
    assert!(
        ran.stdout
            .contains("ebpfplugin.ebpfconductor.io/exec-counter deleted"),
        "{ran:?}"
    );
    assert!(api.get::<EbpfPlugin>(None, "exec-counter").is_none());
    assert!(d.get("exec-counter").is_none(), "still on the host");
    let ran = k.conductor(&["delete", "exec-counter"]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr
            .contains("error: EbpfPlugin exec-counter not found"),
        "{ran:?}"
    );
    let ran = k.conductor(&["list"]);
    assert_eq!(ran.stdout.lines().count(), 1, "only the header: {ran:?}");
}

/// No node agent answers: the run times out and is rolled back; a selector
/// no node matches fails at once; a contradictory command line is refused.
/// (No node daemon needed: nothing ever runs.)
#[test]
fn run_that_cannot_become_ready_is_rolled_back() {
    if !kubectl_present() {
        return;
    }
    let api = FakeApiServer::start();
    let k = Kubectl::new(&api);
    api.create(&node("node-z"));

    let ran = k.conductor(&[
        "run",
        "oci://registry.example/x/probe:1.0",
        "--all",
        "--timeout",
        "1s",
    ]);
    assert_eq!(ran.code, Some(4), "{ran:?}");
    assert!(
        ran.stderr
            .contains("probe is not running on every chosen node after 1s"),
        "{ran:?}"
    );
    assert!(ran.stderr.contains("node-z: no state yet"), "{ran:?}");
    assert!(
        ran.stderr
            .contains("rolled back: deleted EbpfPlugin probe (it did not exist before)"),
        "{ran:?}"
    );
    assert!(api.get::<EbpfPlugin>(None, "probe").is_none());

    let ran = k.conductor(&[
        "run",
        "oci://registry.example/x/probe:1.0",
        "-l",
        "role=none",
    ]);
    assert_eq!(ran.code, Some(3), "{ran:?}");
    assert!(
        ran.stderr
            .contains("no node matches the selector `role=none`"),
        "{ran:?}"
    );
    assert!(api.get::<EbpfPlugin>(None, "probe").is_none());

    // An invalid spec is refused before anything is written.
    let ran = k.conductor(&[
        "run",
        "oci://registry.example/x/probe:1.0",
        "--name",
        "Bad_Name",
    ]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("invalid plugin spec"), "{ran:?}");
    assert!(api.list::<EbpfPlugin>().is_empty());

    let ran = k.conductor(&["run", "oci://r/x/p:1", "--node", "a", "--all"]);
    assert_eq!(ran.code, Some(2), "{ran:?}");
}

/// `delete --wait=false` returns while a finalizer holds the resource;
/// waiting for it then times out with exit code 4 and names the finalizer.
#[test]
fn delete_without_waiting_and_timing_out() {
    if !kubectl_present() {
        return;
    }
    let api = FakeApiServer::start();
    let k = Kubectl::new(&api);
    let plugin = serde_json::from_value(serde_json::json!({
        "name": "held",
        "component": "oci://registry.example/x/held:1.0"
    }))
    .unwrap();
    let mut p = EbpfPlugin::new(
        "held",
        EbpfPluginSpec {
            node_selector: Default::default(),
            plugin,
        },
    );
    p.metadata.finalizers = Some(vec![PLUGIN_FINALIZER.into()]);
    api.create(&p);

    let ran = k.conductor(&["delete", "held", "--wait=false"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(
        ran.stdout
            .contains("ebpfplugin.ebpfconductor.io/held deletion requested"),
        "{ran:?}"
    );
    let held: EbpfPlugin = api.get(None, "held").unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());

    let ran = k.conductor(&["delete", "held", "--timeout", "1s"]);
    assert_eq!(ran.code, Some(4), "{ran:?}");
    assert!(
        ran.stderr
            .contains("EbpfPlugin held is still there after 1s"),
        "{ran:?}"
    );
    assert!(ran.stderr.contains(PLUGIN_FINALIZER), "{ran:?}");
}

/// The krew manifest installs this binary, at this crate's version, under
/// the name kubectl's plugin discovery looks for.
#[test]
fn krew_manifest_matches_the_binary() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/krew/conductor.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let m: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(m["kind"].as_str(), Some("Plugin"));
    assert_eq!(m["metadata"]["name"].as_str(), Some("conductor"));
    assert_eq!(
        m["spec"]["version"].as_str(),
        Some(format!("v{}", env!("CARGO_PKG_VERSION")).as_str())
    );
    let platforms = m["spec"]["platforms"].as_sequence().unwrap();
    assert!(!platforms.is_empty());
    let bin_name = Path::new(env!("CARGO_BIN_EXE_kubectl-conductor"))
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    for p in platforms {
        assert_eq!(p["bin"].as_str(), Some(bin_name), "{p:?}");
        let sha = p["sha256"].as_str().unwrap();
        assert!(
            sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()),
            "{sha}"
        );
        assert!(
            p["uri"]
                .as_str()
                .unwrap()
                .contains(&format!("/v{}/", env!("CARGO_PKG_VERSION"))),
            "{p:?}"
        );
    }
}

/// An update while the node still reports a failure of the spec being
/// replaced: that failure is no verdict on the new spec, so `run` waits
/// (here until its timeout: no node agent runs) and then restores the
/// previous spec. The node state is written by the test, as a node agent
/// would have written it for generation 1.
#[test]
fn a_failure_of_the_replaced_spec_is_no_verdict_on_the_new_one() {
    use conductor_operator::crd::{
        EbpfPluginNodeState, EbpfPluginNodeStateSpec, EbpfPluginNodeStateStatus, NodePhase,
        PLUGIN_LABEL, state_name,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    if !kubectl_present() {
        return;
    }
    let api = FakeApiServer::start();
    let k = Kubectl::new(&api);
    api.create(&node("node-z"));
    let plugin = serde_json::from_value(serde_json::json!({
        "name": "probe",
        "component": "oci://registry.example/x/probe:1.0"
    }))
    .unwrap();
    let p = api.create(&EbpfPlugin::new(
        "probe",
        EbpfPluginSpec {
            node_selector: Default::default(),
            plugin,
        },
    ));
    assert_eq!(p.metadata.generation, Some(1));
    let mut st = EbpfPluginNodeState::new(
        &state_name("probe", "node-z"),
        EbpfPluginNodeStateSpec {
            plugin_name: "probe".into(),
            node_name: "node-z".into(),
        },
    );
    st.metadata.labels = Some(BTreeMap::from([(PLUGIN_LABEL.into(), "probe".into())]));
    st.status = Some(EbpfPluginNodeStateStatus {
        phase: NodePhase::Failed,
        last_error: Some("old failure".into()),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "LoadFailed".into(),
            message: "old failure".into(),
            observed_generation: Some(1),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::now()),
        }],
        ..Default::default()
    });
    api.replace(&st);

    let ran = k.conductor(&[
        "run",
        "oci://registry.example/x/probe:2.0",
        "--timeout",
        "2s",
    ]);
    assert_eq!(ran.code, Some(4), "{ran:?}");
    assert!(ran.stderr.contains("node-z: Failed"), "{ran:?}");
    assert!(!ran.stderr.contains("old failure"), "{ran:?}");
    assert!(
        ran.stderr
            .contains("rolled back: restored the previous spec of EbpfPlugin probe"),
        "{ran:?}"
    );
    let p: EbpfPlugin = api.get(None, "probe").unwrap();
    assert_eq!(
        p.spec.plugin.component,
        "oci://registry.example/x/probe:1.0"
    );
    assert_eq!(p.metadata.generation, Some(3), "updated, then restored");
}

/// The conductor DaemonSet's pod on `node`, as the kubelet reports it: the
/// host container's `metrics` port is the daemon's real port (on this
/// machine, the pod IP is 127.0.0.1).
fn host_pod(name: &str, node: &str, metrics_port: i32) -> k8s_openapi::api::core::v1::Pod {
    use k8s_openapi::api::core::v1::{Container, ContainerPort, Pod, PodSpec, PodStatus};
    let container = |n: &str, ports| Container {
        name: n.into(),
        ports,
        ..Default::default()
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some("ebpfconductor-system".into()),
            labels: Some(BTreeMap::from([
                (
                    "app.kubernetes.io/name".to_string(),
                    "conductor".to_string(),
                ),
                (
                    "app.kubernetes.io/component".to_string(),
                    "node".to_string(),
                ),
            ])),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![
                container(
                    "host",
                    Some(vec![ContainerPort {
                        name: Some("metrics".into()),
                        container_port: metrics_port,
                        ..Default::default()
                    }]),
                ),
                container("operator", None),
            ],
            ..Default::default()
        }),
        status: Some(PodStatus {
            pod_ip: Some("127.0.0.1".into()),
            ..Default::default()
        }),
    }
}

/// logs (table, json, --since-time, -f), top --once, packages and show,
/// through kubectl's plugin discovery, against a real host whose stderr is
/// the host pod's container log (JSON lines, as the DaemonSet sets it) and
/// whose /metrics is reached through the API server's pod proxy.
#[test]
fn logs_top_packages_and_show_on_a_real_host() {
    use std::io::BufRead;
    use std::sync::mpsc;
    if !kubectl_present() || !require_root() {
        return;
    }
    let api = FakeApiServer::start();
    let k = Kubectl::new(&api);
    api.create(&node("node-a"));
    let container_log = k.dir.path().join("host.log");
    let d = Daemon::start_in_container(&[], &[("CONDUCTOR_LOG_FORMAT", "json")], &container_log);
    let port: i32 = d
        .metrics_url
        .trim_start_matches("http://")
        .split(['/', ':'])
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {}", d.metrics_url));
    api.create(&host_pod("conductor-x7k2p", "node-a", port));
    api.set_container_log(
        "ebpfconductor-system",
        "conductor-x7k2p",
        "host",
        &container_log,
    );
    let ctl = Operator::spawn(&k.kubeconfig(), &["cluster"]);
    let agent = Operator::spawn(
        &k.kubeconfig(),
        &[
            "node",
            "--node-name",
            "node-a",
            "--socket",
            d.socket.to_str().unwrap(),
            "--sweep-interval-secs",
            "1",
        ],
    );
    let ctx = || format!("{}\n{}\n{}", ctl.log_text(), agent.log_text(), d.log_text());

    // Two plugins: steady (logs its greeting) and exec-counter (counts execs).
    let steady = artifacts().join("testing_steady.wasm");
    let ran = k.conductor(&[
        "run",
        steady.to_str().unwrap(),
        "--name",
        "steady",
        "--set",
        "greeting=hello-from-kubectl",
    ]);
    assert_eq!(ran.code, Some(0), "{ran:?}\n{}", ctx());
    let counter_wasm = artifacts().join("exec_counter.wasm");
    let spec = exec_counter_spec(k.dir.path(), "exec-counter", &counter_wasm);
    let ran = k.conductor(&["run", spec.to_str().unwrap(), "--node", "node-a"]);
    assert_eq!(ran.code, Some(0), "{ran:?}\n{}", ctx());

    // logs: the plugin's lines only, from node-a's host, for people ...
    let greeting = "steady started: hello-from-kubectl";
    let ran = wait_for(T, "the greeting in `logs steady`", ctx, || {
        let ran = k.conductor(&["logs", "steady"]);
        ran.stdout.contains(greeting).then_some(ran)
    });
    assert_eq!(ran.code, Some(0), "{ran:?}");
    for line in ran.stdout.lines() {
        assert!(line.starts_with("node-a 20"), "{line}\n{ran:?}");
        assert!(!line.contains("exec-counter"), "{line}\n{ran:?}");
    }
    // ... and for scripts.
    let ran = k.conductor(&["logs", "steady", "--node", "node-a", "-o", "json"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let lines: Vec<serde_json::Value> = ran
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let hello = lines
        .iter()
        .find(|l| l["message"] == greeting)
        .unwrap_or_else(|| panic!("{ran:?}"));
    assert_eq!(hello["node"], "node-a");
    assert_eq!(hello["pod"], "conductor-x7k2p");
    assert_eq!(hello["level"], "INFO");
    // Lines before --since-time are not read.
    let ran = k.conductor(&["logs", "steady", "--since-time", "2999-01-01T00:00:00Z"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(ran.stdout, "", "{ran:?}");
    let ran = k.conductor(&["logs", "nope"]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("EbpfPlugin nope not found"), "{ran:?}");
    let ran = k.conductor(&["logs", "steady", "--node", "node-z"]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("no conductor host pod"), "{ran:?}");

    // logs -f: a line logged later arrives on the open stream.
    let mut follow = k
        .conductor_command(&["logs", "steady", "-f"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let out = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let until = |want: &str| loop {
        match rx.recv_timeout(T) {
            Ok(line) if line.contains(want) => return,
            Ok(_) => {}
            Err(e) => panic!("`logs -f` never printed {want:?}: {e}\n{}", ctx()),
        }
    };
    until(greeting);
    let ran = k.conductor(&[
        "run",
        steady.to_str().unwrap(),
        "--name",
        "steady",
        "--set",
        "greeting=second-greeting",
    ]);
    assert_eq!(ran.code, Some(0), "{ran:?}\n{}", ctx());
    until("steady started: second-greeting");
    let _ = follow.kill();
    let _ = follow.wait();

    // top: exec-counter's execs by command, read through the pod proxy.
    let bin = conductor_test_support::UniqueBinary::new("kctop");
    bin.run(3);
    wait_for(T, "the execs counted on the host", ctx, || {
        d.scrape()
            .contains(&format!("comm=\"{}\"", bin.comm))
            .then_some(())
    });
    let ran = wait_for(T, "3 execs in `top`", ctx, || {
        let ran = k.conductor(&[
            "top",
            "exec-counter",
            "--metric",
            "execs",
            "--by",
            "comm",
            "--once",
            "--limit",
            "1000",
        ]);
        ran.stdout
            .lines()
            .any(|l| {
                l.split_whitespace().collect::<Vec<_>>() == [bin.comm.as_str(), "node-a", "3", "-"]
            })
            .then_some(ran)
    });
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let header: Vec<&str> = ran
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["COMM", "NODE", "VALUE", "RATE/S"], "{ran:?}");
    let ran = k.conductor(&[
        "top",
        "exec-counter",
        "--metric",
        "execs",
        "--by",
        "comm",
        "-o",
        "json",
        "--limit",
        "1000",
    ]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let view: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(view["metric"], "execs");
    let row = view["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["labels"]["comm"] == bin.comm.as_str())
        .unwrap_or_else(|| panic!("{ran:?}"));
    assert_eq!(row["value"], 3.0);
    assert_eq!(row["nodes"][0], "node-a");
    // Rows are busiest first.
    let values: Vec<f64> = view["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["value"].as_f64().unwrap())
        .collect();
    assert!(values.windows(2).all(|w| w[0] >= w[1]), "{values:?}");
    let ran = k.conductor(&["top", "exec-counter", "--metric", "nope", "--once"]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr.contains("has no metric nope; it has: "),
        "{ran:?}"
    );
    assert!(ran.stderr.contains("execs"), "{ran:?}");

    // packages: each component, the digest the node runs, one node each.
    let ran = k.conductor(&["packages", "-o", "json"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let packages: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    let steady_pkg = packages
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["reference"] == steady.to_str().unwrap())
        .unwrap_or_else(|| panic!("{ran:?}"));
    assert_eq!(steady_pkg["plugins"][0], "steady");
    assert_eq!(steady_pkg["runningNodes"], 1);
    let digest = steady_pkg["digests"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{ran:?}"));
    assert!(digest.starts_with("sha256:"), "{ran:?}");
    let ran = k.conductor(&["packages"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let header: Vec<&str> = ran
        .stdout
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["PACKAGE", "DIGEST", "SIGNER", "PLUGINS", "NODES"],
        "{ran:?}"
    );
    assert_eq!(ran.stdout.lines().count(), 3, "{ran:?}");

    // show: a plugin by name, a package by its reference's last segment.
    let ran = k.conductor(&["show", "steady"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(ran.stdout.contains("Plugin:      steady"), "{ran:?}");
    assert!(ran.stdout.contains("greeting: second-greeting"), "{ran:?}");
    let node_line: Vec<&str> = ran
        .stdout
        .lines()
        .find(|l| l.starts_with("node-a"))
        .unwrap_or_else(|| panic!("{ran:?}"))
        .split_whitespace()
        .collect();
    assert_eq!(node_line[..3], ["node-a", "Running", "yes"], "{ran:?}");
    let ran = k.conductor(&["show", "testing_steady", "-o", "yaml"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&ran.stdout).unwrap();
    assert_eq!(v["kind"].as_str(), Some("Package"), "{ran:?}");
    assert_eq!(v["digests"][0].as_str(), Some(digest), "{ran:?}");
    let ran = k.conductor(&["show", "nope"]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(ran.stderr.contains("no plugin or package nope"), "{ran:?}");
}

/// One host log line as `conductor serve` writes it with
/// `CONDUCTOR_LOG_FORMAT=json` (tracing-subscriber's JSON), in a CRI log
/// record as the container runtime stores it (`<time> stderr F <line>`).
fn cri_record(time: &str, plugin: &str, message: &str) -> String {
    let line = serde_json::json!({
        "timestamp": time,
        "level": "INFO",
        "fields": {"message": message, "plugin": plugin, "stream": "log"},
        "target": "plugin",
    });
    format!("{time} stderr F {line}\n")
}

/// `logs --tail`, `--previous` and `-o yaml` against the fake API server's
/// `pods/log` (the kubelet's parameters: `tailLines`, `previous`,
/// `sinceTime`, `follow`). The test plays the container runtime: it writes
/// the host container's CRI log files (the current and the previous
/// instance's) with host log lines of two plugins.
#[test]
fn logs_tail_previous_and_yaml() {
    use std::io::{BufRead, Write};
    if !kubectl_present() {
        return;
    }
    let api = FakeApiServer::start();
    let k = Kubectl::new(&api);
    let plugin = serde_json::from_value(serde_json::json!({
        "name": "steady", "component": "oci://registry.example/x/steady:1.0"
    }))
    .unwrap();
    api.create(&EbpfPlugin::new(
        "steady",
        EbpfPluginSpec {
            node_selector: Default::default(),
            plugin,
        },
    ));
    api.create(&host_pod("conductor-x7k2p", "node-a", 9464));
    let current = k.dir.path().join("host.log");
    let mut log = String::new();
    for i in 1..=5 {
        log.push_str(&cri_record(
            &format!("2026-11-30T08:00:0{i}.000000001Z"),
            "steady",
            &format!("steady line {i}"),
        ));
        log.push_str(&cri_record(
            &format!("2026-11-30T08:00:0{i}.500000000Z"),
            "other",
            &format!("other line {i}"),
        ));
    }
    std::fs::write(&current, &log).unwrap();
    api.set_container_log("ebpfconductor-system", "conductor-x7k2p", "host", &current);
    let messages = |ran: &Ran| -> Vec<String> {
        ran.stdout
            .lines()
            .map(|l| {
                let v: serde_json::Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{ran:?}"));
                v["message"].as_str().unwrap().to_owned()
            })
            .collect()
    };

    // --tail counts the plugin's lines, not the host's.
    let ran = k.conductor(&["logs", "steady", "--tail", "2", "-o", "json"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(
        messages(&ran),
        ["steady line 4", "steady line 5"],
        "{ran:?}"
    );
    let ran = k.conductor(&["logs", "steady", "--tail", "0", "-o", "json"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(ran.stdout, "", "{ran:?}");

    // -o yaml: one document per line.
    let ran = k.conductor(&["logs", "steady", "--tail", "1", "-o", "yaml"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let docs: Vec<serde_yaml_ng::Value> = ran
        .stdout
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml_ng::from_str(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 1, "{ran:?}");
    assert_eq!(docs[0]["message"].as_str(), Some("steady line 5"));
    assert_eq!(docs[0]["node"].as_str(), Some("node-a"));
    assert_eq!(
        docs[0]["time"].as_str(),
        Some("2026-11-30T08:00:05.000000001Z")
    );

    // --previous: no previous instance yet (the real API server's answer) ...
    let ran = k.conductor(&["logs", "steady", "--previous"]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr.contains("previous terminated container") && ran.stderr.contains("not found"),
        "{ran:?}"
    );
    // ... then the host container restarted: its earlier instance's lines.
    let previous = k.dir.path().join("host.previous.log");
    std::fs::write(
        &previous,
        cri_record("2026-11-30T07:00:00Z", "steady", "before the restart")
            + &cri_record("2026-11-30T07:00:01Z", "other", "not this one"),
    )
    .unwrap();
    api.set_previous_container_log("ebpfconductor-system", "conductor-x7k2p", "host", &previous);
    let ran = k.conductor(&["logs", "steady", "-p", "-o", "json"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(messages(&ran), ["before the restart"], "{ran:?}");
    assert!(
        api.requests()
            .iter()
            .any(|r| r.path.ends_with("/pods/conductor-x7k2p/log")
                && r.query.contains("previous=true")),
        "the previous instance's log was asked for"
    );
    let ran = k.conductor(&["logs", "steady", "--previous", "-f"]);
    assert_eq!(ran.code, Some(2), "{ran:?}");

    // --tail with -f: the last line, then only new ones (nothing repeated).
    let mut follow = k
        .conductor_command(&["logs", "steady", "--tail", "1", "-f", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let next = || {
        let line = rx
            .recv_timeout(T)
            .unwrap_or_else(|e| panic!("`logs -f` printed nothing: {e}"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        v["message"].as_str().unwrap().to_owned()
    };
    assert_eq!(next(), "steady line 5");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&current)
        .unwrap();
    file.write_all(cri_record("2026-11-30T08:00:06Z", "other", "other line 6").as_bytes())
        .unwrap();
    file.write_all(cri_record("2026-11-30T08:00:07Z", "steady", "steady line 7").as_bytes())
        .unwrap();
    file.flush().unwrap();
    assert_eq!(next(), "steady line 7");
    let _ = follow.kill();
    let _ = follow.wait();
}

/// `clear` (the design documents' command): the plugins of some packages,
/// of a label selector, or all of them; refused without `--yes` when it
/// cannot ask; `-o json|yaml`; exit 4 while a finalizer holds one. `delete
/// -o json` and `run -o json` (a rolled-back run) for scripts too.
#[test]
fn clear_and_output_for_scripts() {
    if !kubectl_present() {
        return;
    }
    let api = FakeApiServer::start();
    let k = Kubectl::new(&api);
    let plugin = |name: &str, component: &str, team: &str, held: bool| {
        let spec = serde_json::from_value(serde_json::json!({
            "name": name, "component": component
        }))
        .unwrap();
        let mut p = EbpfPlugin::new(
            name,
            EbpfPluginSpec {
                node_selector: Default::default(),
                plugin: spec,
            },
        );
        p.metadata.labels = Some(BTreeMap::from([("team".to_string(), team.to_string())]));
        if held {
            p.metadata.finalizers = Some(vec![PLUGIN_FINALIZER.into()]);
        }
        api.create(&p);
    };
    plugin("a", "oci://registry.example/x/alpha:1.0", "red", false);
    plugin("b", "oci://registry.example/x/alpha:1.0", "blue", false);
    plugin("c", "oci://registry.example/x/beta:1.0", "blue", false);
    plugin("d", "oci://registry.example/x/gamma:1.0", "green", true);
    plugin("e", "oci://registry.example/x/delta:1.0", "green", false);
    let names = || {
        let mut n: Vec<String> = api
            .list::<EbpfPlugin>()
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        n.sort();
        n
    };

    // Nothing named: the command line is wrong.
    let ran = k.conductor(&["clear"]);
    assert_eq!(ran.code, Some(2), "{ran:?}");
    // Not confirmed, and stdin is no terminal to ask: nothing is deleted.
    let ran = k.conductor(&["clear", "alpha"]);
    assert_eq!(ran.code, Some(1), "{ran:?}");
    assert!(
        ran.stderr
            .contains("would delete 2 EbpfPlugin(s): a, b; confirm with --yes"),
        "{ran:?}"
    );
    assert_eq!(names(), ["a", "b", "c", "d", "e"]);

    // A package by its short name, confirmed, for scripts.
    let ran = k.conductor(&["clear", "alpha", "--yes", "-o", "json"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let json: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(
        json,
        serde_json::json!([
            {"name": "a", "status": "Deleted", "component": "oci://registry.example/x/alpha:1.0"},
            {"name": "b", "status": "Deleted", "component": "oci://registry.example/x/alpha:1.0"},
        ]),
        "{ran:?}"
    );
    assert_eq!(names(), ["c", "d", "e"]);

    // By label, for people; a full reference works too.
    let ran = k.conductor(&[
        "clear",
        "oci://registry.example/x/beta:1.0",
        "-l",
        "team=blue",
        "-y",
    ]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert_eq!(
        ran.stdout, "ebpfplugin.ebpfconductor.io/c deleted\n",
        "{ran:?}"
    );
    assert_eq!(names(), ["d", "e"]);
    let ran = k.conductor(&["clear", "-l", "team=nobody", "--yes"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    assert!(ran.stderr.contains("no EbpfPlugin matches"), "{ran:?}");

    // --all: e goes, d is held by the node agents' finalizer: exit 4.
    let ran = k.conductor(&["clear", "--all", "--yes", "--timeout", "1s", "-o", "yaml"]);
    assert_eq!(ran.code, Some(4), "{ran:?}");
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&ran.stdout).unwrap();
    assert_eq!(v[0]["name"].as_str(), Some("d"), "{ran:?}");
    assert_eq!(v[0]["status"].as_str(), Some("Pending"), "{ran:?}");
    assert_eq!(v[1]["name"].as_str(), Some("e"), "{ran:?}");
    assert_eq!(v[1]["status"].as_str(), Some("Deleted"), "{ran:?}");
    assert!(
        ran.stderr.contains("EbpfPlugin d is still there after 1s"),
        "{ran:?}"
    );
    assert_eq!(names(), ["d"]);

    // delete -o json: what happened to it.
    let ran = k.conductor(&["delete", "d", "--wait=false", "-o", "json"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let json: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(json[0]["name"], "d", "{ran:?}");
    assert_eq!(json[0]["status"], "DeletionRequested", "{ran:?}");
    let ran = k.conductor(&["delete", "nope", "-o", "json"]);
    assert_eq!(ran.code, Some(1), "{ran:?}");

    // run -o json: a run that cannot become ready reports its result on
    // stdout, and the reason and the rollback, with exit 4.
    api.create(&node("node-z"));
    let ran = k.conductor(&[
        "run",
        "oci://registry.example/x/probe:1.0",
        "--timeout",
        "1s",
        "-o",
        "json",
    ]);
    assert_eq!(ran.code, Some(4), "{ran:?}");
    let json: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(json["name"], "probe", "{ran:?}");
    assert_eq!(json["action"], "created", "{ran:?}");
    assert_eq!(json["status"], "Timeout", "{ran:?}");
    assert!(
        json["reason"]
            .as_str()
            .unwrap()
            .contains("node-z: no state yet"),
        "{ran:?}"
    );
    assert!(
        json["rollback"]
            .as_str()
            .unwrap()
            .contains("rolled back: deleted EbpfPlugin probe"),
        "{ran:?}"
    );
    assert!(
        json["specHash"].as_str().unwrap().starts_with("sha256:"),
        "{ran:?}"
    );
}

const PACKAGE_YAML: &str = r#"
description: Counts exec() calls by command and workload.
source: https://github.com/ebpfconductor/ebpfconductor
license: Apache-2.0
version: 1.0.0
configKeys:
  - name: ignore
    description: Commands (comm) not counted, comma-separated.
    default: ""
spec:
  name: exec-counter
  component: exec_counter.wasm
  bytecode:
    path: exec_counter.bpf.o
    programs:
      - name: handle_exec
        tracepoint: sched/sched_process_exec
  maps:
    - name: events
      events: {maxBatch: 64}
"#;

/// `show` of a plugin that runs a signed OCI package: the package's
/// content (programs, maps, config keys with docs, WIT version, source,
/// files) read from the registry as `conductor show` reads it, and the
/// signer the node reports (the host verified the signature when it
/// pulled). Real registry (docker-registry on loopback), real signing
/// keys, a real host that requires signatures, the real node agent.
#[test]
fn show_reads_the_package_and_the_signer_the_node_reports() {
    use conductor_test_support::registry::{self, Registry, conductor, stderr};
    if !kubectl_present() || !require_root() {
        return;
    }
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    for f in ["exec_counter.wasm", "exec_counter.bpf.o"] {
        std::fs::copy(artifacts().join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join("package.yaml"), PACKAGE_YAML).unwrap();
    let (reference, _) = registry::push_package(&reg, dir.path(), "pkgs/exec-counter:1.0");
    let prefix = dir.path().join("alice");
    let password = [("COSIGN_PASSWORD", "test-password")];
    let out = conductor(
        &[
            "generate-key-pair",
            "--output-key-prefix",
            prefix.to_str().unwrap(),
        ],
        &password,
    );
    assert!(out.status.success(), "keys: {}", stderr(&out));
    let key = prefix.with_extension("key");
    let public = prefix.with_extension("pub");
    let out = conductor(
        &["sign", &reference, "--key", key.to_str().unwrap()],
        &password,
    );
    assert!(out.status.success(), "sign: {}", stderr(&out));

    let api = FakeApiServer::start();
    let k = Kubectl::new(&api);
    api.create(&node("node-a"));
    let d = Daemon::start_with(&[
        "--signature-policy",
        "required",
        "--trusted-key",
        public.to_str().unwrap(),
    ]);
    let ctl = Operator::spawn(&k.kubeconfig(), &["cluster"]);
    let agent = Operator::spawn(
        &k.kubeconfig(),
        &[
            "node",
            "--node-name",
            "node-a",
            "--socket",
            d.socket.to_str().unwrap(),
            "--sweep-interval-secs",
            "1",
        ],
    );
    let ctx = || format!("{}\n{}\n{}", ctl.log_text(), agent.log_text(), d.log_text());
    let ran = k.conductor(&["run", &reference, "--node", "node-a", "-o", "yaml"]);
    assert_eq!(ran.code, Some(0), "{ran:?}\n{}", ctx());
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&ran.stdout).unwrap();
    assert_eq!(v["name"].as_str(), Some("exec-counter"), "{ran:?}");
    assert_eq!(v["status"].as_str(), Some("Running"), "{ran:?}");
    assert_eq!(v["nodes"][0].as_str(), Some("node-a"), "{ran:?}");

    // packages: the signer the node reports.
    let ran = k.conductor(&["packages", "-o", "json"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let packages: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    let signer = packages[0]["signer"]
        .as_str()
        .unwrap_or_else(|| panic!("{ran:?}"));
    assert!(
        signer.starts_with("verified: alice.pub (sha256:"),
        "{ran:?}"
    );

    // show the plugin: its node state, the signer and the package content.
    let ran = k.conductor(&["show", "exec-counter"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    for want in [
        "Plugin:      exec-counter",
        &format!("Signer:      {signer}"),
        "Package content:",
        "  Source:      https://github.com/ebpfconductor/ebpfconductor",
        &format!("  WIT version: {}", conductor_api::wit::CURRENT),
        "    handle_exec\ttracepoint=sched/sched_process_exec",
        "    events\tRead\tevents",
        "    ignore\t(default \"\")\tCommands (comm) not counted, comma-separated.",
        "    exec_counter.bpf.o\tapplication/vnd.ebpfconductor.bpf.object.v1",
    ] {
        assert!(ran.stdout.contains(want), "show lacks {want:?}: {ran:?}");
    }
    // The package by reference, for scripts: the same content as
    // `conductor show -o json`, beside what the cluster knows.
    let ran = k.conductor(&["show", &reference, "-o", "json"]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let v: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(v["kind"], "Package", "{ran:?}");
    assert_eq!(v["signer"], signer, "{ran:?}");
    assert_eq!(v["runningNodes"], 1, "{ran:?}");
    assert_eq!(v["content"]["package"]["spec"]["maps"][0]["name"], "events");
    assert_eq!(v["content"]["package"]["configKeys"][0]["name"], "ignore");
    assert_eq!(v["content"]["package"]["version"], "1.0.0");
    // The content read is the artifact the node runs: the digest the node
    // reports is the package's (its manifest's or its component layer's).
    let running = v["digests"][0]
        .as_str()
        .unwrap_or_else(|| panic!("{ran:?}"));
    let mut digests = vec![v["content"]["digest"].as_str().unwrap().to_owned()];
    digests.extend(
        v["content"]["layers"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|l| l["digest"].as_str().map(str::to_owned)),
    );
    assert!(
        digests.iter().any(|d| d == running),
        "{running} not in {digests:?}: {ran:?}"
    );
    // Offline with an empty cache: the cluster's view, and why no content.
    let empty = tempfile::tempdir().unwrap();
    let ran = k.conductor(&[
        "show",
        &reference,
        "--offline",
        "--cache-dir",
        empty.path().to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert_eq!(ran.code, Some(0), "{ran:?}");
    let v: serde_json::Value = serde_json::from_str(&ran.stdout).unwrap();
    assert!(v["content"].is_null(), "{ran:?}");
    assert!(
        v["contentUnavailable"]
            .as_str()
            .unwrap()
            .contains("not in the local cache"),
        "{ran:?}"
    );
}
