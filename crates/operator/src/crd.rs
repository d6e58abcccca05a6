//! The custom resources: `EbpfPlugin` (what to run, and where) and
//! `EbpfPluginNodeState` (how it runs on one node), group `ebpfconductor.io`.
//!
//! Both are cluster-scoped: a plugin runs on nodes, which belong to no
//! namespace, and its name is its name on every node's host, so it must be
//! unique in the whole cluster.

// kube's `printcolumn(...)` repeats `type_ = ...` by design.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use conductor_api::PluginSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::core::Resource;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group, under a domain the project owns.
pub const GROUP: &str = "ebpfconductor.io";
pub const VERSION: &str = "v1alpha1";

/// Held on every `EbpfPlugin` by the cluster controller until no node state
/// of it is left, i.e. until every node has unloaded it (or left the cluster).
pub const PLUGIN_FINALIZER: &str = "ebpfconductor.io/unload-from-nodes";
/// Held on every `EbpfPluginNodeState` by its node's agent until the plugin is
/// unloaded from that node's host.
pub const NODE_FINALIZER: &str = "ebpfconductor.io/unload-from-host";
/// Label on node states: the plugin they belong to.
pub const PLUGIN_LABEL: &str = "ebpfconductor.io/plugin";
/// Label on node states: their node, when the name fits in a label value.
pub const NODE_LABEL: &str = "ebpfconductor.io/node";

/// Annotations the operator stores with each plugin it loads on a host
/// (`PluginStatus.annotations` of the node API). A plugin without
/// [`MANAGED_BY`] was loaded by someone else (e.g. `conductor load`) and is
/// never touched.
pub mod host_annotations {
    pub const MANAGED_BY: &str = "ebpfconductor.io/managed-by";
    pub const MANAGER: &str = "conductor-operator";
    pub const UID: &str = "ebpfconductor.io/uid";
    pub const GENERATION: &str = "ebpfconductor.io/generation";
    pub const SPEC_HASH: &str = "ebpfconductor.io/spec-hash";
    /// With `clusterBpfApplication`: bpfman's id of the program whose pins
    /// the host was handed.
    pub const BPFMAN_PROGRAM_ID: &str = "ebpfconductor.io/bpfman-program-id";
}

/// A plugin to run on every node its selector matches.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "ebpfconductor.io",
    version = "v1alpha1",
    kind = "EbpfPlugin",
    plural = "ebpfplugins",
    shortname = "ebpfp",
    category = "ebpfconductor",
    status = "EbpfPluginStatus",
    doc = "An eBPFConductor plugin (a sandboxed wasm component and its BPF programs) to run on every node that `nodeSelector` matches.",
    printcolumn(name = "Component", type_ = "string", json_path = ".spec.plugin.component"),
    printcolumn(name = "Nodes", type_ = "string", json_path = ".status.summary", description = "nodes running the current spec / nodes selected"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.spec.plugin.name == self.metadata.name").message("spec.plugin.name must equal metadata.name: the plugin's name on every node is the resource's name")
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EbpfPluginSpec {
    /// The nodes to run on, by their labels. Empty or omitted: every node.
    #[serde(default, skip_serializing_if = "is_empty_selector")]
    pub node_selector: LabelSelector,
    /// The plugin, exactly as in a `conductor run` spec file. `name` must
    /// equal `metadata.name`; `component`, `bytecode.path` and `pin` are
    /// `oci://` references or absolute paths on the node.
    pub plugin: PluginSpec,
}

fn is_empty_selector(s: &LabelSelector) -> bool {
    s.match_labels.as_ref().is_none_or(BTreeMap::is_empty)
        && s.match_expressions.as_ref().is_none_or(Vec::is_empty)
}

/// Aggregated over the plugin's node states by the cluster controller.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EbpfPluginStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// For people: e.g. `3/4 nodes running`.
    #[serde(default)]
    pub summary: String,
    /// Nodes the selector matches.
    #[serde(default)]
    pub nodes_selected: u32,
    /// Nodes running the current spec.
    #[serde(default)]
    pub nodes_running: u32,
    /// Nodes where it failed (load error, update error, name conflict, host unreachable).
    #[serde(default)]
    pub nodes_failed: u32,
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The first few nodes that report an error, with it.
    #[serde(default)]
    pub failures: Vec<NodeFailure>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeFailure {
    pub node: String,
    pub message: String,
}

/// How one plugin runs on one node; written by that node's agent.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ebpfconductor.io",
    version = "v1alpha1",
    kind = "EbpfPluginNodeState",
    plural = "ebpfpluginnodestates",
    shortname = "ebpfpns",
    category = "ebpfconductor",
    status = "EbpfPluginNodeStateStatus",
    doc = "The state of one EbpfPlugin on one node, written by that node's conductor-operator. Owned by the EbpfPlugin.",
    selectable = ".spec.nodeName",
    selectable = ".spec.pluginName",
    printcolumn(name = "Plugin", type_ = "string", json_path = ".spec.pluginName"),
    printcolumn(name = "Node", type_ = "string", json_path = ".spec.nodeName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Restarts", type_ = "integer", json_path = ".status.restarts"),
    printcolumn(
        name = "Error",
        type_ = "string",
        json_path = ".status.lastError",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EbpfPluginNodeStateSpec {
    pub plugin_name: String,
    pub node_name: String,
}

/// The phase of a plugin on one node: the host's phases, plus `Unknown` when
/// the host cannot be reached.
pub use conductor_api::Phase as NodePhase;

/// Option fields serialize as `null` (not skipped) so that a merge patch of
/// the whole status clears what no longer applies.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EbpfPluginNodeStateStatus {
    pub phase: NodePhase,
    /// The EbpfPlugin `metadata.generation` running on the host.
    pub plugin_generation: Option<i64>,
    /// Hash of the plugin spec running on the host (`sha256:<hex>` of its JSON).
    pub spec_hash: Option<String>,
    /// Digest of the running component (`sha256:<hex>`).
    pub component_digest: Option<String>,
    /// Who signed the OCI artifact the host runs, as the host recorded it
    /// when it pulled it (`verified: <signer>`, `unverified`, `not
    /// checked`); absent for a component that is a file on the node.
    pub signer: Option<String>,
    /// The host's update count of this plugin (1 after the first load).
    pub host_generation: Option<u64>,
    /// Restarts after faults since the host loaded it.
    #[serde(default)]
    pub restarts: u64,
    /// The most recent load, update or fault error.
    pub last_error: Option<String>,
    /// While `Restarting` or `CrashLoopBackOff`: when the host starts the
    /// plugin's next instance.
    pub next_retry: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    /// `Ready`: running the current spec.
    #[serde(default)]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The CustomResourceDefinitions, in the order to apply them.
pub fn crds()
-> Vec<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition>
{
    vec![EbpfPlugin::crd(), EbpfPluginNodeState::crd()]
}

/// The CRDs as one YAML stream, as `conductor-operator crd` prints it and
/// `deploy/crds.yaml` holds it.
pub fn crds_yaml() -> String {
    let mut out = String::from(
        "# Generated by `conductor-operator crd` from crates/operator/src/crd.rs: do not edit.\n",
    );
    for crd in crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml_ng::to_string(&crd).expect("a CRD serializes to YAML"));
    }
    out
}

/// The name of the state object of `plugin` on `node`: `<plugin>.<node>`
/// (a valid DNS subdomain, as object names must be), or, when that is longer
/// than the 253 characters a name may have, `<plugin>.<hash of node>`.
pub fn state_name(plugin: &str, node: &str) -> String {
    let name = format!("{plugin}.{node}");
    if name.len() <= 253 {
        name
    } else {
        format!("{plugin}.n-{}", &short_hash(node.as_bytes())[..32])
    }
}

/// `sha256` of `bytes`, hex.
pub fn short_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// The hash that identifies a plugin spec on a host: changes exactly when the
/// spec does (the node selector is not part of it).
pub fn spec_hash(spec: &PluginSpec) -> String {
    let json = serde_json::to_vec(spec).expect("a PluginSpec serializes to JSON");
    format!("sha256:{}", short_hash(&json))
}

/// Whether `obj` carries `finalizer`.
pub fn has_finalizer<K: Resource>(obj: &K, finalizer: &str) -> bool {
    obj.meta()
        .finalizers
        .as_ref()
        .is_some_and(|f| f.iter().any(|x| x == finalizer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_are_valid_object_names() {
        assert_eq!(state_name("exec-counter", "node-1"), "exec-counter.node-1");
        let long_node = "n".repeat(250);
        let name = state_name("exec-counter", &long_node);
        assert!(name.len() <= 253, "{name}");
        assert!(name.starts_with("exec-counter.n-"));
        // Stable and distinct per node.
        assert_eq!(name, state_name("exec-counter", &long_node));
        assert_ne!(name, state_name("exec-counter", &"m".repeat(250)));
    }

    #[test]
    fn spec_hash_follows_the_plugin_spec_only() {
        let spec = PluginSpec::from_yaml("name: p\ncomponent: /x.wasm\n").unwrap();
        let mut other = spec.clone();
        assert_eq!(spec_hash(&spec), spec_hash(&other));
        other.component = "/y.wasm".into();
        assert_ne!(spec_hash(&spec), spec_hash(&other));
        assert!(spec_hash(&spec).starts_with("sha256:"));
    }
}
