//! The manifests in deploy/ and examples/: generated CRDs up to date, every
//! YAML parses (Kubernetes objects into their typed form), the CRD schema
//! accepts the examples and rejects bad resources (OpenAPI schema with a
//! JSON-schema validator, x-kubernetes-validations CEL rules with kube-cel),
//! and the DaemonSet has what the host and the agent need.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use conductor_operator::crd::{self, EbpfPlugin};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Container, Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize;
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
    out.sort();
}

/// Every YAML document of a file, as JSON values (empty documents skipped).
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            let v = serde_yaml_ng::Value::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", path.display()));
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn typed<T: serde::de::DeserializeOwned>(path: &Path, v: &Value) -> T {
    serde_path_to_error::deserialize(v.clone()).unwrap_or_else(|e| {
        panic!(
            "{}: {} {}: {e}",
            path.display(),
            v["kind"],
            v["metadata"]["name"]
        )
    })
}

#[test]
fn deploy_crds_yaml_is_generated_from_the_rust_types() {
    let path = root().join("deploy/crds.yaml");
    let on_disk = std::fs::read_to_string(&path).unwrap();
    assert!(
        on_disk == crd::crds_yaml(),
        "deploy/crds.yaml is out of date with crates/operator/src/crd.rs (or the PluginSpec): regenerate it with\n  cargo run -p conductor-operator -- crd > deploy/crds.yaml"
    );
}

#[test]
fn every_yaml_parses_and_kubernetes_objects_have_their_types() {
    let mut files = Vec::new();
    yaml_files(&root().join("deploy"), &mut files);
    yaml_files(&root().join("examples"), &mut files);
    assert!(files.len() >= 8, "{files:?}");
    let mut kinds = BTreeSet::new();
    for f in &files {
        let docs = documents(f);
        assert!(!docs.is_empty(), "{}: no document", f.display());
        if f.file_name().unwrap() == "kustomization.yaml" {
            continue;
        }
        if docs[0].get("apiVersion").is_none() {
            // A `conductor run` spec file.
            conductor_api::load_file(f)
                .unwrap_or_else(|e| panic!("{}: not a valid spec file: {e}", f.display()));
            continue;
        }
        for d in &docs {
            let kind = d["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: no kind", f.display()));
            assert!(
                d["metadata"]["name"].is_string(),
                "{}: a {kind} without a name",
                f.display()
            );
            kinds.insert(kind.to_string());
            match kind {
                "Namespace" => drop(typed::<Namespace>(f, d)),
                "ServiceAccount" => drop(typed::<ServiceAccount>(f, d)),
                "ClusterRole" => drop(typed::<ClusterRole>(f, d)),
                "ClusterRoleBinding" => drop(typed::<ClusterRoleBinding>(f, d)),
                "DaemonSet" => drop(typed::<DaemonSet>(f, d)),
                "Deployment" => drop(typed::<Deployment>(f, d)),
                "CustomResourceDefinition" => drop(typed::<CustomResourceDefinition>(f, d)),
                "EbpfPlugin" => {
                    let p: EbpfPlugin = typed(f, d);
                    conductor_operator::node::check_resource(&p)
                        .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
                }
                // deploy/krew/: `kubectl conductor`'s krew manifest, checked
                // by crates/kubectl-conductor's tests.
                "Plugin"
                    if d["apiVersion"].as_str().is_some_and(|v| {
                        v.starts_with("krew.googlecontainertools.github.com/")
                    }) => {}
                other => panic!("{}: unexpected kind {other}", f.display()),
            }
        }
    }
    for k in [
        "Namespace",
        "DaemonSet",
        "Deployment",
        "ClusterRole",
        "CustomResourceDefinition",
        "EbpfPlugin",
    ] {
        assert!(
            kinds.contains(k),
            "no {k} in deploy/ or examples/: {kinds:?}"
        );
    }
}

#[test]
fn kustomization_lists_every_manifest() {
    let k = &documents(&root().join("deploy/kustomization.yaml"))[0];
    let listed: BTreeSet<&str> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    for r in &listed {
        assert!(
            root().join("deploy").join(r).is_file(),
            "kustomization lists missing {r}"
        );
    }
    for e in std::fs::read_dir(root().join("deploy")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            assert!(
                listed.contains(name.as_str()),
                "deploy/{name} is not in kustomization.yaml"
            );
        }
    }
}

/// The EbpfPlugin CRD's openAPIV3Schema as JSON Schema: OpenAPI's
/// `nullable: true` becomes a `null` type.
fn plugin_schema() -> Value {
    let crd = EbpfPlugin::crd_for_test();
    let mut schema = serde_json::to_value(
        &crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema,
    )
    .unwrap();
    fn nullable(v: &mut Value) {
        match v {
            Value::Object(m) => {
                if m.get("nullable") == Some(&Value::Bool(true))
                    && let Some(Value::String(t)) = m.get("type").cloned()
                {
                    m.insert("type".into(), json!([t, "null"]));
                }
                m.values_mut().for_each(nullable);
            }
            Value::Array(a) => a.iter_mut().for_each(nullable),
            _ => {}
        }
    }
    nullable(&mut schema);
    schema
}

trait CrdForTest {
    fn crd_for_test() -> CustomResourceDefinition;
}
impl CrdForTest for EbpfPlugin {
    fn crd_for_test() -> CustomResourceDefinition {
        <EbpfPlugin as kube::CustomResourceExt>::crd()
    }
}

/// Every problem the API server would report: schema and CEL rules.
fn api_server_errors(obj: &Value) -> Vec<String> {
    let schema = plugin_schema();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let mut errors: Vec<String> = validator
        .iter_errors(obj)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if let Err(cel) = kube::core::cel::Validator::new().validate(&schema, obj, None) {
        errors.extend(
            cel.as_slice()
                .iter()
                .map(|e| format!("{}: {}", e.field_path, e.message)),
        );
    }
    errors
}

fn examples() -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    yaml_files(&root().join("examples"), &mut files);
    files
        .into_iter()
        .flat_map(|f| documents(&f).into_iter().map(move |d| (f.clone(), d)))
        .filter(|(_, d)| d["kind"] == "EbpfPlugin")
        .collect()
}

#[test]
fn the_crd_schema_accepts_the_examples() {
    let ex = examples();
    assert!(ex.len() >= 2, "{ex:?}");
    for (f, d) in ex {
        let errors = api_server_errors(&d);
        assert!(errors.is_empty(), "{}: {errors:#?}", f.display());
    }
}

#[test]
fn the_crd_schema_accepts_an_exporter_instead_of_a_component() {
    let (_, mut v) = examples().into_iter().next().unwrap();
    let plugin = v["spec"]["plugin"].as_object_mut().unwrap();
    plugin.remove("component");
    plugin.remove("maps");
    plugin.insert(
        "exporter".into(),
        json!({"config": "metrics:\n  counters: []\n", "configName": "x"}),
    );
    plugin.insert("bytecode".into(), json!({"path": "/o/x.bpf.o"}));
    let errors = api_server_errors(&v);
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn the_crd_schema_rejects_bad_resources() {
    let (_, good) = examples().into_iter().next().unwrap();
    type Change = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(&str, Change, &str)> = vec![
        (
            "name not a DNS label",
            Box::new(|v| {
                v["metadata"]["name"] = json!("Exec_Counter");
                v["spec"]["plugin"]["name"] = json!("Exec_Counter");
            }),
            "/spec/plugin/name",
        ),
        (
            "name differs from metadata.name",
            Box::new(|v| v["spec"]["plugin"]["name"] = json!("other")),
            "must equal metadata.name",
        ),
        (
            "component missing",
            Box::new(|v| {
                drop(
                    v["spec"]["plugin"]
                        .as_object_mut()
                        .unwrap()
                        .remove("component"),
                )
            }),
            "component",
        ),
        (
            "component and exporter",
            Box::new(|v| {
                v["spec"]["plugin"]["exporter"] = json!({"config": "metrics: {}"});
            }),
            "exactly one of component (a wasm component) and exporter",
        ),
        (
            "memory out of range",
            Box::new(|v| v["spec"]["plugin"]["limits"] = json!({"memoryMib": 0})),
            "/spec/plugin/limits/memoryMib",
        ),
        (
            "unknown access",
            Box::new(|v| v["spec"]["plugin"]["maps"][0]["access"] = json!("write")),
            "/spec/plugin/maps/0/access",
        ),
        (
            "maxBatch out of range",
            Box::new(|v| v["spec"]["plugin"]["maps"][0]["events"]["maxBatch"] = json!(100000)),
            "maxBatch",
        ),
        (
            "bytecode path and image",
            Box::new(|v| {
                v["spec"]["plugin"]["bytecode"]["image"] = json!("oci://r.io/b:1");
                v["spec"]["plugin"]["bytecode"]["path"] = json!("/b.o");
            }),
            "exactly one of path",
        ),
        (
            "no attach point",
            Box::new(|v| {
                drop(
                    v["spec"]["plugin"]["bytecode"]["programs"][0]
                        .as_object_mut()
                        .unwrap()
                        .remove("tracepoint"),
                )
            }),
            "exactly one attach point",
        ),
        (
            "two attach points",
            Box::new(|v| {
                v["spec"]["plugin"]["bytecode"]["programs"][0]["rawTracepoint"] =
                    json!("sched_switch")
            }),
            "exactly one attach point",
        ),
        (
            "bad tracepoint",
            Box::new(|v| {
                v["spec"]["plugin"]["bytecode"]["programs"][0]["tracepoint"] = json!("no-category")
            }),
            "tracepoint",
        ),
        (
            "bytecode neither path nor image",
            Box::new(|v| {
                let b = v["spec"]["plugin"]["bytecode"].as_object_mut().unwrap();
                b.remove("image");
                b.remove("path");
            }),
            "exactly one of path",
        ),
        (
            "xdp with an unknown mode",
            Box::new(|v| {
                v["spec"]["plugin"]["bytecode"]["programs"][0] =
                    json!({"name": "p", "xdp": {"interface": "eth0", "mode": "turbo"}})
            }),
            "/spec/plugin/bytecode/programs/0/xdp/mode",
        ),
        (
            "tc priority out of range",
            Box::new(|v| {
                v["spec"]["plugin"]["bytecode"]["programs"][0] = json!({"name": "p",
                    "tc": {"interface": "eth0", "direction": "egress", "priority": 70000}})
            }),
            "/spec/plugin/bytecode/programs/0/tc/priority",
        ),
        (
            "uprobe without symbol or offset",
            Box::new(|v| {
                v["spec"]["plugin"]["bytecode"]["programs"][0] =
                    json!({"name": "p", "uprobe": {"target": "libc.so.6"}})
            }),
            "set symbol, offset, or both",
        ),
        (
            "perf event with frequency and period",
            Box::new(|v| {
                v["spec"]["plugin"]["bytecode"]["programs"][0] = json!({"name": "p",
                    "perfEvent": {"software": "cpuClock", "frequency": 1, "period": 1}})
            }),
            "exactly one of frequency",
        ),
        (
            "tpBtf and lsm together",
            Box::new(|v| {
                v["spec"]["plugin"]["bytecode"]["programs"][0] =
                    json!({"name": "p", "tpBtf": "sched_switch", "lsm": "file_open"})
            }),
            "exactly one attach point",
        ),
        (
            "tick too fast",
            Box::new(|v| v["spec"]["plugin"]["tickIntervalMs"] = json!(1)),
            "tickIntervalMs",
        ),
        (
            "bad selector operator type",
            Box::new(|v| v["spec"]["nodeSelector"] = json!({"matchLabels": "linux"})),
            "matchLabels",
        ),
    ];
    assert!(api_server_errors(&good).is_empty());
    let mut every_kind = good.clone();
    every_kind["spec"]["plugin"]["bytecode"]["programs"] = json!([
        {"name": "a", "tpBtf": "sched_switch"},
        {"name": "b", "uretprobe": {"target": "/usr/lib/libc.so.6", "symbol": "malloc", "pid": 1}},
        {"name": "c", "kprobe": {"function": "do_unlinkat", "offset": 8}},
        {"name": "d", "fentry": "do_unlinkat"},
        {"name": "e", "lsm": "file_open"},
        {"name": "f", "xdp": {"interface": "eth0", "mode": "skb"}},
        {"name": "g", "tcx": {"interface": "eth0", "direction": "egress"}},
        {"name": "h", "cgroupSkb": {"direction": "ingress"}},
        {"name": "i", "cgroupSockAddr": {"cgroupPath": "/sys/fs/cgroup/x"}},
        {"name": "j", "perfEvent": {"hardware": "cpuCycles", "frequency": 99}},
    ]);
    let errors = api_server_errors(&every_kind);
    assert!(errors.is_empty(), "{errors:#?}");
    for (what, change, expect) in cases {
        let mut bad = good.clone();
        change(&mut bad);
        let errors = api_server_errors(&bad);
        assert!(
            errors.iter().any(|e| e.contains(expect)),
            "{what}: expected an error mentioning {expect:?}, got {errors:#?}"
        );
    }
}

#[test]
fn printer_columns_name_fields_of_the_schema() {
    for crd in crd::crds() {
        let v = &crd.spec.versions[0];
        let schema = serde_json::to_value(&v.schema.as_ref().unwrap().open_api_v3_schema).unwrap();
        for col in v.additional_printer_columns.as_ref().unwrap() {
            let path = col.json_path.trim_start_matches('.');
            let path = path.split('[').next().unwrap();
            let mut node = &schema;
            for part in path.split('.') {
                if part == "metadata" {
                    break;
                }
                node = &node["properties"][part];
                assert!(
                    !node.is_null(),
                    "{}: column {} names {} which the schema lacks",
                    crd.spec.names.kind,
                    col.name,
                    col.json_path
                );
            }
        }
    }
}

fn container<'a>(ds: &'a DaemonSet, name: &str) -> &'a Container {
    ds.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .find(|c| c.name == name)
        .unwrap()
}

#[test]
fn the_daemonset_gives_the_host_bpf_and_the_agent_only_the_socket() {
    let path = root().join("deploy/daemonset.yaml");
    let ds: DaemonSet = typed(&path, &documents(&path)[0]);
    let pod = ds.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    let host = container(&ds, "host");
    let sc = host.security_context.as_ref().unwrap();
    // Explicit capabilities, not privileged (issue 19: least privilege).
    assert_ne!(sc.privileged, Some(true));
    let caps = sc.capabilities.as_ref().expect("explicit capabilities");
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
    let added: BTreeSet<&str> = caps
        .add
        .as_ref()
        .unwrap()
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(
        added,
        BTreeSet::from(["BPF", "PERFMON", "NET_ADMIN", "CHOWN"])
    );
    let mounts: BTreeSet<&str> = host
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    for m in [
        "/sys/fs/bpf",
        "/sys/kernel/tracing",
        "/sys/kernel/debug",
        "/sys/fs/cgroup",
        "/run/conductor",
        "/var/lib/conductor",
    ] {
        assert!(mounts.contains(m), "host container lacks {m}: {mounts:?}");
    }
    assert_eq!(pod.host_pid, Some(true), "the host needs the node's /proc");
    let args = host.args.as_ref().unwrap();
    assert_eq!(args[0], "serve");
    let socket_arg = args.iter().find(|a| a.starts_with("--socket=")).unwrap();
    let group: i64 = args
        .iter()
        .find_map(|a| a.strip_prefix("--socket-group="))
        .unwrap()
        .parse()
        .unwrap();

    let op = container(&ds, "operator");
    let sc = op.security_context.as_ref().unwrap();
    assert_ne!(sc.privileged, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.run_as_group,
        Some(group),
        "the agent must be in the socket's group"
    );
    let op_args = op.args.as_ref().unwrap();
    assert_eq!(op_args[0], "node");
    assert!(
        op_args.contains(socket_arg),
        "agent and host must use the same socket: {op_args:?}"
    );
    let op_mounts: Vec<&str> = op
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(
        op_mounts,
        ["socket"],
        "the agent needs nothing but the socket"
    );
    let env: Vec<&str> = op
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert!(env.contains(&"NODE_NAME"));
}
