//! The real `kubectl` against the fake: discovery, OpenAPI v3 (so `apply`
//! leaves field validation to the server), the project's CRDs applied from
//! `deploy/crds.yaml`, and `kubectl get` printing their printer columns from
//! the server's `Table` responses.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use conductor_test_support::kubectl_present;
use fake_apiserver::FakeApiServer;

struct Kubectl {
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(api: &FakeApiServer) -> Self {
        let dir = tempfile::tempdir().unwrap();
        api.write_kubeconfig(&dir.path().join("kubeconfig"));
        Self { dir }
    }

    /// Run kubectl with its own kubeconfig and a fresh discovery cache per
    /// call (so each call discovers what the server serves now).
    fn run(&self, args: &[&str]) -> Output {
        let cache = tempfile::tempdir_in(self.dir.path()).unwrap();
        Command::new("kubectl")
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("HOME", self.dir.path())
            .arg("--cache-dir")
            .arg(cache.path())
            .args(args)
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed ({}):\n{stderr}",
            out.status
        );
        // Discovery or OpenAPI the fake does not serve shows up as
        // warnings on stderr even when the command succeeds.
        assert!(
            !stderr.contains("couldn't get") && !stderr.contains("the server could not find"),
            "kubectl {args:?} warned:\n{stderr}"
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

#[test]
fn kubectl_applies_the_crds_and_prints_their_columns() {
    if !kubectl_present() {
        return;
    }
    let api = FakeApiServer::start();
    let k = Kubectl::new(&api);
    let crds = repo_file("deploy/crds.yaml");

    let applied = k.ok(&["apply", "-f", crds.to_str().unwrap()]);
    assert!(
        applied.contains(
            "customresourcedefinition.apiextensions.k8s.io/ebpfplugins.ebpfconductor.io created"
        ),
        "{applied}"
    );
    // kubectl asked the server to validate (it found `fieldValidation` in
    // the OpenAPI v3 document) and sent each CRD once.
    let posts: Vec<_> = api
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST")
        .collect();
    assert!(!posts.is_empty());
    assert!(
        posts
            .iter()
            .all(|r| r.query.contains("fieldValidation=Strict")),
        "{posts:?}"
    );
    // Applying again changes nothing.
    let again = k.ok(&["apply", "-f", crds.to_str().unwrap()]);
    assert!(again.contains("unchanged"), "{again}");

    // The new resource is discovered, with its short name and category.
    let before = api.requests().len();
    let resources = k.ok(&["api-resources", "--api-group", "ebpfconductor.io"]);
    assert!(resources.contains("ebpfplugins"), "{resources}");
    assert!(resources.contains("ebpfp"), "{resources}");
    // ... through aggregated discovery, as from a real 1.32 server: kubectl
    // asks `/api` and `/apis` for the v2 `APIGroupDiscoveryList` first, gets
    // it, and needs no request per group version.
    let discovery: Vec<_> = api.requests()[before..]
        .iter()
        .filter(|r| r.path.starts_with("/api"))
        .cloned()
        .collect();
    let apis = discovery
        .iter()
        .find(|r| r.path == "/apis")
        .unwrap_or_else(|| panic!("no GET /apis: {discovery:?}"));
    assert!(
        apis.accept
            .contains("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"),
        "{apis:?}"
    );
    assert!(
        discovery
            .iter()
            .all(|r| r.path == "/api" || r.path == "/apis"),
        "legacy per-group-version discovery was needed: {discovery:?}"
    );
    let wide = k.ok(&[
        "api-resources",
        "--api-group",
        "ebpfconductor.io",
        "-o",
        "wide",
    ]);
    let row: Vec<&str> = wide
        .lines()
        .find(|l| l.starts_with("ebpfplugins "))
        .unwrap_or_else(|| panic!("{wide}"))
        .split_whitespace()
        .collect();
    // NAME SHORTNAMES APIVERSION NAMESPACED KIND VERBS CATEGORIES
    assert_eq!(
        row[..5],
        [
            "ebpfplugins",
            "ebpfp",
            "ebpfconductor.io/v1alpha1",
            "false",
            "EbpfPlugin"
        ],
        "{wide}"
    );

    // A plugin through kubectl, then `get` prints the CRD's columns.
    let plugin = k.dir.path().join("plugin.yaml");
    std::fs::write(
        &plugin,
        "apiVersion: ebpfconductor.io/v1alpha1\nkind: EbpfPlugin\nmetadata:\n  name: exec-counter\n\
         spec:\n  plugin:\n    component: oci://registry.example/exec-counter:1.0\n",
    )
    .unwrap();
    let created = k.ok(&["apply", "-f", plugin.to_str().unwrap()]);
    assert!(
        created.contains("ebpfplugin.ebpfconductor.io/exec-counter created"),
        "{created}"
    );
    let table = k.ok(&["get", "ebpfplugins"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "COMPONENT", "NODES", "READY", "AGE"],
        "{table}"
    );
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row[0], "exec-counter", "{table}");
    assert_eq!(row[1], "oci://registry.example/exec-counter:1.0", "{table}");
    assert!(row.last().unwrap().ends_with('s'), "age column: {table}");
    // The short name works too, and the table came from the server.
    let short = k.ok(&["get", "ebpfp", "exec-counter"]);
    assert!(
        short.contains("oci://registry.example/exec-counter:1.0"),
        "{short}"
    );
    assert!(
        api.requests()
            .iter()
            .any(|r| r.method == "GET" && r.path == "/apis/ebpfconductor.io/v1alpha1/ebpfplugins"),
    );
}

#[test]
fn kubectl_apply_gets_the_servers_strict_field_validation() {
    if !kubectl_present() {
        return;
    }
    let api = FakeApiServer::start();
    let k = Kubectl::new(&api);
    k.ok(&[
        "apply",
        "-f",
        repo_file("deploy/crds.yaml").to_str().unwrap(),
    ]);
    let plugin = k.dir.path().join("typo.yaml");
    std::fs::write(
        &plugin,
        "apiVersion: ebpfconductor.io/v1alpha1\nkind: EbpfPlugin\nmetadata:\n  name: typo\n\
         spec:\n  plugin:\n    componnet: oci://registry.example/x:1\n",
    )
    .unwrap();
    let out = k.run(&["apply", "-f", plugin.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a misspelt field was accepted");
    assert!(
        stderr.contains(r#"unknown field "spec.plugin.componnet""#),
        "{stderr}"
    );
}

/// The whole install, as a cluster user applies it: `kubectl apply -k
/// deploy/` creates every object of the kustomization.
#[test]
fn kubectl_applies_the_kustomization() {
    if !kubectl_present() {
        return;
    }
    let api = FakeApiServer::start();
    let k = Kubectl::new(&api);
    let deploy = repo_file("deploy");
    let applied = k.ok(&["apply", "-k", deploy.to_str().unwrap()]);
    for object in [
        "customresourcedefinition.apiextensions.k8s.io/ebpfplugins.ebpfconductor.io created",
        "daemonset.apps/",
        "clusterrole.rbac.authorization.k8s.io/",
        "namespace/",
    ] {
        assert!(applied.contains(object), "{object} missing in:\n{applied}");
    }
    assert!(!applied.contains("unchanged"), "{applied}");
    let again = k.ok(&["apply", "-k", deploy.to_str().unwrap()]);
    assert!(
        again.lines().all(|l| l.ends_with("unchanged")),
        "a second apply changed something:\n{again}"
    );
}

/// `kubectl auth can-i --as` each component's service account: the RBAC of
/// `deploy/rbac.yaml` gives each what it uses and nothing more.
#[test]
fn kubectl_auth_can_i_checks_the_deployed_rbac() {
    if !kubectl_present() {
        return;
    }
    let api = FakeApiServer::start();
    let k = Kubectl::new(&api);
    k.ok(&["apply", "-k", repo_file("deploy").to_str().unwrap()]);
    let can_i = |account: &str, args: &[&str]| -> bool {
        let who = format!("system:serviceaccount:ebpfconductor-system:{account}");
        let mut all = vec!["auth", "can-i", "--as", who.as_str()];
        all.extend_from_slice(args);
        let out = k.run(&all);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        match (out.status.success(), answer.as_str()) {
            (true, "yes") => true,
            (false, "no") => false,
            _ => panic!(
                "kubectl auth can-i {args:?}: {answer:?} ({}), {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    };
    // The node agent: reads plugins and nodes, writes node states.
    assert!(can_i(
        "conductor-node",
        &["watch", "ebpfplugins.ebpfconductor.io"]
    ));
    assert!(can_i(
        "conductor-node",
        &["create", "ebpfpluginnodestates.ebpfconductor.io"]
    ));
    assert!(can_i(
        "conductor-node",
        &[
            "patch",
            "ebpfpluginnodestates.ebpfconductor.io",
            "--subresource",
            "status"
        ]
    ));
    assert!(can_i("conductor-node", &["get", "nodes"]));
    assert!(!can_i(
        "conductor-node",
        &["patch", "ebpfplugins.ebpfconductor.io"]
    ));
    assert!(!can_i("conductor-node", &["delete", "nodes"]));
    assert!(!can_i("conductor-node", &["list", "secrets", "-A"]));
    // The cluster controller: patches plugins and their status, no creates.
    assert!(can_i(
        "conductor-cluster",
        &["patch", "ebpfplugins.ebpfconductor.io"]
    ));
    assert!(can_i(
        "conductor-cluster",
        &[
            "patch",
            "ebpfplugins.ebpfconductor.io",
            "--subresource",
            "status"
        ]
    ));
    assert!(!can_i(
        "conductor-cluster",
        &["create", "ebpfpluginnodestates.ebpfconductor.io"]
    ));
    // Another account of the namespace is bound to nothing.
    assert!(!can_i("default", &["get", "nodes"]));
}

/// `to` relative to the directory `from` (kustomize refuses absolute paths).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from = from.canonicalize().unwrap();
    let to = to.canonicalize().unwrap();
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut out = PathBuf::new();
    for _ in from.components().skip(common) {
        out.push("..");
    }
    out.extend(to.components().skip(common));
    out
}

/// The install components (deploy/components): a user's kustomization of
/// the base plus both, rendered by `kubectl kustomize` (the OTLP variables
/// merged into the host container's env, the node selector set, the base
/// untouched otherwise) and applied with `kubectl apply -k`.
#[test]
fn kubectl_renders_and_applies_the_install_components() {
    if !kubectl_present() {
        return;
    }
    let api = FakeApiServer::start();
    let k = Kubectl::new(&api);
    let mine = tempfile::tempdir().unwrap();
    let deploy = relative(mine.path(), &repo_file("deploy"));
    let component = |c: &str| deploy.join("components").join(c).display().to_string();
    std::fs::write(
        mine.path().join("kustomization.yaml"),
        format!(
            "resources: [{}]\ncomponents: [{}, {}]\n",
            deploy.display(),
            component("otlp"),
            component("node-selection")
        ),
    )
    .unwrap();
    let rendered = k.ok(&["kustomize", mine.path().to_str().unwrap()]);
    let ds: serde_json::Value = rendered
        .split("\n---\n")
        .map(|doc| serde_yaml_ng::from_str::<serde_json::Value>(doc).unwrap())
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["nodeSelector"]["ebpfconductor.io/node"], "true");
    let host = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "host")
        .unwrap();
    let env: Vec<&str> = host["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for name in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "NODE_NAME",
        "CONDUCTOR_LOG_FORMAT",
    ] {
        assert!(env.contains(&name), "{name} missing in {env:?}");
    }
    let operator = pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "operator")
        .unwrap();
    assert!(
        !operator["env"].to_string().contains("OTEL_"),
        "only the host exports"
    );

    let applied = k.ok(&["apply", "-k", mine.path().to_str().unwrap()]);
    assert!(
        applied.contains("daemonset.apps/conductor created"),
        "{applied}"
    );
    let stored: k8s_openapi::api::apps::v1::DaemonSet =
        api.get(Some("ebpfconductor-system"), "conductor").unwrap();
    let selector = stored
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .node_selector
        .unwrap();
    assert_eq!(selector["ebpfconductor.io/node"], "true");
}

/// The bpfman component (deploy/components/bpfman) rendered over the base
/// by `kubectl kustomize`, together with the other components: the host
/// container keeps every capability (bpfman runs as its child), is
/// privileged for bpfman's bpffs under /run/bpfman (shared with the node
/// both ways), and finds bpfman's binary; its other settings and the
/// unprivileged node agent are untouched. Then applied with `apply -k`.
#[test]
fn kubectl_renders_the_bpfman_component() {
    if !kubectl_present() {
        return;
    }
    let api = FakeApiServer::start();
    let k = Kubectl::new(&api);
    let mine = tempfile::tempdir().unwrap();
    let deploy = relative(mine.path(), &repo_file("deploy"));
    let component = |c: &str| deploy.join("components").join(c).display().to_string();
    std::fs::write(
        mine.path().join("kustomization.yaml"),
        format!(
            "resources: [{}]\ncomponents: [{}, {}]\n",
            deploy.display(),
            component("bpfman"),
            component("otlp"),
        ),
    )
    .unwrap();
    let rendered = k.ok(&["kustomize", mine.path().to_str().unwrap()]);
    let ds: serde_json::Value = rendered
        .split("\n---\n")
        .map(|doc| serde_yaml_ng::from_str::<serde_json::Value>(doc).unwrap())
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let container = |name: &str| {
        pod["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    let host = container("host");
    let env = |name: &str| {
        host["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(env("CONDUCTOR_KEEP_CAPABILITIES"), Some("all".into()));
    assert_eq!(
        env("CONDUCTOR_BPFMAN"),
        Some("/usr/local/bin/bpfman".into())
    );
    // Merged, not replaced: the base's and the other component's entries stay.
    assert!(env("NODE_NAME").is_some() && env("CONDUCTOR_LOG_FORMAT").is_some());
    assert!(env("OTEL_EXPORTER_OTLP_ENDPOINT").is_some());
    let security = &host["securityContext"];
    assert_eq!(security["privileged"], true);
    let caps: Vec<&str> = security["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    for cap in ["BPF", "PERFMON", "NET_ADMIN", "SYS_ADMIN", "SYS_RESOURCE"] {
        assert!(caps.contains(&cap), "{cap} missing in {caps:?}");
    }
    let mount = host["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "bpfman")
        .expect("/run/bpfman mounted");
    assert_eq!(mount["mountPath"], "/run/bpfman");
    assert_eq!(mount["mountPropagation"], "Bidirectional");
    // The base's mounts are still there.
    assert!(
        host["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["mountPath"] == "/sys/fs/bpf")
    );
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "bpfman")
        .expect("the bpfman volume");
    assert_eq!(volume["hostPath"]["path"], "/run/bpfman");
    // The node agent stays unprivileged and unchanged.
    let operator = container("operator");
    assert_eq!(operator["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        operator["securityContext"]["capabilities"]["drop"][0],
        "ALL"
    );
    assert!(!operator.to_string().contains("bpfman"));

    let applied = k.ok(&["apply", "-k", mine.path().to_str().unwrap()]);
    assert!(
        applied.contains("daemonset.apps/conductor created"),
        "{applied}"
    );
    let stored: k8s_openapi::api::apps::v1::DaemonSet =
        api.get(Some("ebpfconductor-system"), "conductor").unwrap();
    let stored = serde_json::to_value(stored).unwrap();
    assert_eq!(
        stored["spec"]["template"]["spec"]["containers"][0]["securityContext"]["privileged"],
        true
    );
}

/// The unprivileged bpfman component (deploy/components/bpfman-unprivileged)
/// rendered over the base by `kubectl kustomize`: the host container stays
/// unprivileged, gets the capabilities `bpfmanProgram` lookups need and the
/// node's /run/bpfman with HostToContainer propagation (allowed without
/// privilege), and keeps the base's settings. Then applied with `apply -k`.
#[test]
fn kubectl_renders_the_unprivileged_bpfman_component() {
    if !kubectl_present() {
        return;
    }
    let api = FakeApiServer::start();
    let k = Kubectl::new(&api);
    let mine = tempfile::tempdir().unwrap();
    let deploy = relative(mine.path(), &repo_file("deploy"));
    std::fs::write(
        mine.path().join("kustomization.yaml"),
        format!(
            "resources: [{}]\ncomponents: [{}]\n",
            deploy.display(),
            deploy.join("components/bpfman-unprivileged").display()
        ),
    )
    .unwrap();
    let rendered = k.ok(&["kustomize", mine.path().to_str().unwrap()]);
    let ds: serde_json::Value = rendered
        .split("\n---\n")
        .map(|doc| serde_yaml_ng::from_str::<serde_json::Value>(doc).unwrap())
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    let host = containers.iter().find(|c| c["name"] == "host").unwrap();
    let security = &host["securityContext"];
    assert_eq!(security["privileged"], false, "{security}");
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    let caps: Vec<&str> = security["capabilities"]["add"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    for cap in [
        "BPF",
        "PERFMON",
        "NET_ADMIN",
        "CHOWN",
        "SYS_ADMIN",
        "SYS_RESOURCE",
    ] {
        assert!(caps.contains(&cap), "{cap} missing in {caps:?}");
    }
    let env = |name: &str| {
        host["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
    };
    assert_eq!(
        env("CONDUCTOR_KEEP_CAPABILITIES"),
        Some("bpf,perfmon,net_admin,sys_admin,sys_resource".into())
    );
    assert!(env("NODE_NAME").is_some() && env("CONDUCTOR_LOG_FORMAT").is_some());
    let mounts = host["volumeMounts"].as_array().unwrap();
    let mount = mounts
        .iter()
        .find(|m| m["name"] == "bpfman")
        .expect("/run/bpfman mounted");
    assert_eq!(mount["mountPath"], "/run/bpfman");
    assert_eq!(mount["mountPropagation"], "HostToContainer");
    assert!(mount["readOnly"].is_null(), "pins are opened read-write");
    assert!(mounts.iter().any(|m| m["mountPath"] == "/sys/fs/bpf"));
    // Nothing in the pod is privileged.
    assert!(!rendered.contains("privileged: true"), "{rendered}");
    assert!(!rendered.contains("Bidirectional"), "{rendered}");

    let applied = k.ok(&["apply", "-k", mine.path().to_str().unwrap()]);
    assert!(
        applied.contains("daemonset.apps/conductor created"),
        "{applied}"
    );
}
