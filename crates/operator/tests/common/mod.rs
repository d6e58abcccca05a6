//! Harness of the operator's tests: the fake API server, real `conductor
//! serve` daemons on real sockets, and real `conductor-operator` processes.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conductor_api::v1::{self, PluginStatus};
use conductor_operator::crd::{EbpfPlugin, EbpfPluginSpec};
use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

/// Where `cargo xtask build` puts the BPF objects and wasm components.
pub fn artifacts() -> PathBuf {
    let dir = std::env::var_os("CONDUCTOR_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/plugins"));
    assert!(
        dir.join("exec_counter.wasm").exists(),
        "test artifacts are missing in {}: build them with `cargo xtask build` (or run the suite with `cargo xtask test`)",
        dir.display()
    );
    dir.canonicalize().unwrap()
}

/// The `conductor` binary (another package's, so not `CARGO_BIN_EXE_*`):
/// `CONDUCTOR_BIN` as `cargo xtask test` sets it, else the one beside this
/// test's own target directory.
pub fn conductor_bin() -> PathBuf {
    let path = std::env::var_os("CONDUCTOR_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            // target/debug/deps/<test> -> target/debug/conductor
            let exe = std::env::current_exe().unwrap();
            exe.parent().unwrap().parent().unwrap().join("conductor")
        });
    assert!(
        path.is_file(),
        "the conductor binary is missing at {}: build it with `cargo build -p conductor-cli` (`cargo xtask test` does, and sets CONDUCTOR_BIN)",
        path.display()
    );
    path
}

/// Tests that load BPF need root. Under CI a missing privilege is a failure,
/// never a silent skip; on a developer machine the test says why it skips.
pub fn require_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("this test loads BPF programs and must run as root (CI=true forbids skipping)");
    }
    eprintln!("SKIPPED: not root; BPF tests need root (they fail instead under CI=true)");
    false
}

pub type Log = Arc<Mutex<Vec<String>>>;

pub fn spawn_logged(cmd: &mut Command) -> (Child, Log) {
    let mut child = cmd
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let log: Log = Arc::default();
    let stderr = child.stderr.take().unwrap();
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(strip_ansi(&line));
        }
    });
    (child, log)
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn log_text(log: &Log) -> String {
    log.lock().unwrap().join("\n")
}

/// Poll `f` until it gives a value, panicking after `timeout` with `what`
/// and `context()` (logs).
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    context: impl Fn() -> String,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let until = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > until {
            panic!("timed out waiting for {what}\n{}", context());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A real `conductor serve` in a temporary directory (socket, state, cache).
pub struct Daemon {
    child: Option<Child>,
    log: Log,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    rt: tokio::runtime::Runtime,
}

impl Daemon {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Self {
            child: None,
            log: Arc::default(),
            socket: dir.path().join("conductor.sock"),
            state_dir: dir.path().join("state"),
            dir,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        };
        d.spawn();
        d
    }

    /// Start (again) on the same socket, state and cache.
    pub fn spawn(&mut self) {
        let (child, log) = spawn_logged(
            Command::new(conductor_bin())
                .arg("serve")
                .arg("--socket")
                .arg(&self.socket)
                .arg("--state-dir")
                .arg(&self.state_dir)
                .arg("--cache-dir")
                .arg(self.dir.path().join("cache"))
                .args(["--metrics-addr", "127.0.0.1:0"])
                .env("CONDUCTOR_LOG", "info"),
        );
        self.child = Some(child);
        self.log = log;
        wait_for(
            Duration::from_secs(60),
            "the daemon to serve",
            || self.log_text(),
            || {
                self.log
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|l| l.contains("serving the node API"))
                    .then_some(())
            },
        );
    }

    pub fn log_text(&self) -> String {
        format!("daemon log:\n{}", log_text(&self.log))
    }

    /// The plugins the daemon runs.
    pub fn list(&self) -> Vec<PluginStatus> {
        self.rt.block_on(async {
            let mut c = v1::connect(&self.socket)
                .await
                .unwrap_or_else(|e| panic!("{e}\n{}", self.log_text()));
            c.list(v1::ListRequest {})
                .await
                .unwrap()
                .into_inner()
                .plugins
        })
    }

    pub fn get(&self, name: &str) -> Option<PluginStatus> {
        self.list().into_iter().find(|p| p.name == name)
    }

    /// Load a plugin by hand, as `conductor load` would (no annotations).
    pub fn load_by_hand(&self, yaml: &str) {
        let spec = conductor_api::PluginSpec::from_yaml(yaml).unwrap();
        self.rt.block_on(async {
            let mut c = v1::connect(&self.socket).await.unwrap();
            c.load(v1::LoadRequest {
                spec: Some((&spec).into()),
                annotations: Default::default(),
            })
            .await
            .unwrap_or_else(|e| panic!("load by hand: {e}\n{}", self.log_text()));
        });
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM first, so that it detaches what it attached.
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let until = Instant::now() + Duration::from_secs(20);
            while c.try_wait().ok().flatten().is_none() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `conductor-operator` process (node agent or cluster controller).
pub struct Operator {
    child: Option<Child>,
    log: Log,
    args: Vec<String>,
    kubeconfig: PathBuf,
}

impl Operator {
    fn spawn(kubeconfig: &Path, args: Vec<String>) -> Self {
        let mut o = Self {
            child: None,
            log: Arc::default(),
            args,
            kubeconfig: kubeconfig.to_owned(),
        };
        o.restart();
        o
    }

    /// The node agent for `node`, driving the daemon on `socket`.
    pub fn node(kubeconfig: &Path, node: &str, socket: &Path) -> Self {
        Self::spawn(
            kubeconfig,
            vec![
                "node".into(),
                "--node-name".into(),
                node.into(),
                "--socket".into(),
                socket.display().to_string(),
                "--sweep-interval-secs".into(),
                "1".into(),
            ],
        )
    }

    pub fn cluster(kubeconfig: &Path) -> Self {
        Self::spawn(kubeconfig, vec!["cluster".into()])
    }

    /// Start again (after [`Self::kill9`]), with a fresh log.
    pub fn restart(&mut self) {
        let (child, log) = spawn_logged(
            Command::new(env!("CARGO_BIN_EXE_conductor-operator"))
                .args(&self.args)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .env("CONDUCTOR_OPERATOR_LOG", "info,conductor_operator=debug"),
        );
        self.child = Some(child);
        self.log = log;
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn log_text(&self) -> String {
        format!(
            "conductor-operator {} log:\n{}",
            self.args[0],
            log_text(&self.log)
        )
    }

    pub fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    pub fn count_in_log(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The fake API server with a kubeconfig file for child processes.
pub struct Cluster {
    pub api: FakeApiServer,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Cluster {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let api = FakeApiServer::start();
        let kubeconfig = dir.path().join("kubeconfig");
        api.write_kubeconfig(&kubeconfig);
        Self {
            api,
            kubeconfig,
            _dir: dir,
        }
    }

    pub fn add_node(&self, name: &str, labels: &[(&str, &str)]) {
        self.api.create(&node(name, labels));
    }

    /// Replace a node's labels, as `kubectl label` would.
    pub fn label_node(&self, name: &str, labels: &[(&str, &str)]) {
        let mut n: Node = self.api.get(None, name).unwrap();
        n.metadata.labels = Some(to_map(labels));
        self.api.replace(&n);
    }

    pub fn plugin(&self, name: &str) -> Option<EbpfPlugin> {
        self.api.get(None, name)
    }

    pub fn state(
        &self,
        plugin: &str,
        node: &str,
    ) -> Option<conductor_operator::crd::EbpfPluginNodeState> {
        self.api
            .get(None, &conductor_operator::crd::state_name(plugin, node))
    }
}

pub fn to_map(labels: &[(&str, &str)]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub fn node(name: &str, labels: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(to_map(labels)),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn selector(labels: &[(&str, &str)]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(to_map(labels)),
        match_expressions: None,
    }
}

/// An EbpfPlugin running the real exec-counter plugin from the build's
/// artifacts (absolute paths on "the node", which is this machine).
pub fn exec_counter(name: &str, selector: LabelSelector) -> EbpfPlugin {
    exec_counter_with(name, selector, &artifacts().join("exec_counter.wasm"))
}

pub fn exec_counter_with(name: &str, selector: LabelSelector, component: &Path) -> EbpfPlugin {
    let a = artifacts();
    let yaml = format!(
        "name: {name}\ncomponent: {}\nbytecode:\n  path: {}\n  programs: [{{name: handle_exec, tracepoint: sched/sched_process_exec}}]\nmaps: [{{name: events, events: {{maxBatch: 1024}}}}]\n",
        component.display(),
        a.join("exec_counter.bpf.o").display()
    );
    let plugin = conductor_api::PluginSpec::from_yaml(&yaml).unwrap();
    let mut p = EbpfPlugin::new(
        name,
        EbpfPluginSpec {
            node_selector: selector,
            plugin,
        },
    );
    p.metadata.uid = None;
    p
}

/// Whether the ClusterRole `role` of deploy/rbac.yaml allows every request
/// in `requests` (the Kubernetes API calls a process made): the panic names
/// the first one it does not.
pub fn assert_rbac_allows(role: &str, requests: &[fake_apiserver::Request]) {
    use serde::Deserialize;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/rbac.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let roles: Vec<k8s_openapi::api::rbac::v1::ClusterRole> =
        serde_yaml_ng::Deserializer::from_str(&text)
            .filter_map(|d| {
                let v = serde_yaml_ng::Value::deserialize(d).ok()?;
                (v.get("kind")?.as_str()? == "ClusterRole")
                    .then(|| serde_yaml_ng::from_value(v).unwrap())
            })
            .collect();
    let role = roles
        .iter()
        .find(|r| r.metadata.name.as_deref() == Some(role))
        .unwrap_or_else(|| panic!("no ClusterRole {role} in deploy/rbac.yaml"));
    let rules = role.rules.as_deref().unwrap_or_default();
    assert!(!requests.is_empty());
    for r in requests {
        let segs: Vec<&str> = r.path.trim_matches('/').split('/').collect();
        let (group, rest) = match segs.as_slice() {
            ["api", _v, rest @ ..] => ("", rest),
            ["apis", g, _v, rest @ ..] => (*g, rest),
            _ => panic!("unexpected request path {}", r.path),
        };
        let (resource, name, sub) = match rest {
            [res] => (res.to_string(), None, None),
            [res, name] => (res.to_string(), Some(*name), None),
            [res, name, sub] => (res.to_string(), Some(*name), Some(*sub)),
            _ => panic!("unexpected request path {}", r.path),
        };
        let resource = match sub {
            Some(s) => format!("{resource}/{s}"),
            None => resource,
        };
        let verb = match (r.method.as_str(), name) {
            ("GET", Some(_)) => "get",
            ("GET", None) if r.is_watch() => "watch",
            ("GET", None) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", _) => "delete",
            (m, _) => panic!("unexpected method {m}"),
        };
        let allowed = rules.iter().any(|rule| {
            rule.api_groups
                .as_ref()
                .is_some_and(|g| g.iter().any(|g| g == group || g == "*"))
                && rule
                    .resources
                    .as_ref()
                    .is_some_and(|rs| rs.iter().any(|x| *x == resource || x == "*"))
                && rule.verbs.iter().any(|v| v == verb || v == "*")
        });
        assert!(
            allowed,
            "ClusterRole {} in deploy/rbac.yaml does not allow {verb} on {resource} (group {group:?}), which the operator did: {} {}?{}",
            role.metadata.name.as_deref().unwrap_or(""),
            r.method,
            r.path,
            r.query
        );
    }
}
