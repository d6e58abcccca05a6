//! Harness of the operator's tests: the fake API server, real `conductor
//! serve` daemons on real sockets (`conductor-test-support`'s, shared with
//! the host's tests), and real `conductor-operator` processes.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};

use conductor_operator::crd::{EbpfPlugin, EbpfPluginSpec};
use fake_apiserver::FakeApiServer;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

pub use conductor_test_support::daemon::Daemon;
pub use conductor_test_support::{artifacts, require_root, spawn_logged, wait_for};

pub type Log = Arc<Mutex<Vec<String>>>;

fn log_text(log: &Log) -> String {
    log.lock().unwrap().join("\n")
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
