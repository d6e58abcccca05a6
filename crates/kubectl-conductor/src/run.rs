//! `kubectl conductor run`: create or update an `EbpfPlugin`, then wait
//! until every chosen node's agent reports it running the new spec, or roll
//! back (delete what was created, restore the spec that was replaced).
//!
//! Readiness is read from the `EbpfPluginNodeState` objects the node agents
//! write (phase and the spec hash they run), not from the aggregate status:
//! the node states say exactly which spec runs where, so an older spec
//! still running on a node is never mistaken for the new one.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use conductor_api::PluginSpec;
use conductor_operator::crd::{
    EbpfPlugin, EbpfPluginNodeState, EbpfPluginSpec, NodePhase, PLUGIN_LABEL, spec_hash,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde::Serialize;

use crate::list::{Output, emit};
use crate::{Exit, Failure, parse_duration};

/// The node label `--node` selects on (set by the kubelet on every node).
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Ready-condition reasons of a node state that mean the plugin will not
/// run there without a change (as the operator's status aggregate counts them).
const FAILED_REASONS: &[&str] = &[
    "LoadFailed",
    "UpdateFailed",
    "InvalidSpec",
    "NameConflict",
    "HostUnavailable",
];

/// Run a plugin on nodes of the cluster, and wait until it runs there.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// A plugin spec file (as for `conductor run`; paths in it must be
    /// absolute on the nodes or `oci://` references), or a component
    /// reference (`oci://registry/repo:tag` or an absolute path on the nodes).
    pub plugin: String,
    /// Run only on this node (by its `kubernetes.io/hostname` label).
    #[arg(long, conflicts_with_all = ["all", "selector"])]
    pub node: Option<String>,
    /// Run on every node (the default).
    #[arg(long, conflicts_with = "selector")]
    pub all: bool,
    /// Run on the nodes with these labels: `key=value[,key=value...]`.
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// A config setting handed to the plugin (repeatable); overrides the spec file's.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// The plugin's name (the resource's name); default: the spec's name, or
    /// the component reference's last path segment without tag or `.wasm`.
    #[arg(long)]
    pub name: Option<String>,
    /// How long to wait for every chosen node to run it before rolling back.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Output format: a line for people, json or yaml for scripts (printed
    /// on failure too, with the reason and what was rolled back).
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Output,
}

/// What `run` did, as `-o json|yaml` prints it.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct RunResult {
    name: String,
    /// `created` or `configured`.
    action: &'static str,
    /// `Running`, `Failed` (exit 3) or `Timeout` (exit 4).
    status: &'static str,
    spec_hash: String,
    /// The nodes running it (on success).
    nodes: Vec<String>,
    /// Why not (on failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
    /// What the rollback did (on failure).
    #[serde(skip_serializing_if = "Option::is_none")]
    rollback: Option<String>,
}

pub async fn run(client: kube::Client, args: RunArgs) -> anyhow::Result<()> {
    let plugin = plugin_spec(&args)?;
    let node_selector = node_selector(&args)?;
    let name = plugin.name.clone();
    let desired = EbpfPluginSpec {
        node_selector,
        plugin,
    };
    let hash = spec_hash(&desired.plugin);

    let plugins: Api<EbpfPlugin> = Api::all(client.clone());
    let previous = plugins
        .get_opt(&name)
        .await
        .with_context(|| format!("cannot read EbpfPlugin {name}"))?;
    if let Some(p) = &previous
        && p.metadata.deletion_timestamp.is_some()
    {
        return Err(Failure::new(
            Exit::Error,
            format!(
                "EbpfPlugin {name} is being deleted; wait for `kubectl conductor delete {name}` to finish, then run again"
            ),
        )
        .into());
    }
    let written = match &previous {
        Some(p) => {
            let mut next = p.clone();
            next.spec = desired.clone();
            plugins
                .replace(&name, &PostParams::default(), &next)
                .await
                .with_context(|| format!("cannot update EbpfPlugin {name}"))?
        }
        None => plugins
            .create(
                &PostParams::default(),
                &EbpfPlugin::new(&name, desired.clone()),
            )
            .await
            .with_context(|| format!("cannot create EbpfPlugin {name}"))?,
    };
    let verb = if previous.is_some() {
        "configured"
    } else {
        "created"
    };
    eprintln!("ebpfplugin.ebpfconductor.io/{name} {verb}");

    let generation = written.metadata.generation;
    let outcome = wait_running(
        &client,
        &name,
        &desired.node_selector,
        &hash,
        generation,
        args.timeout,
    )
    .await;
    let mut result = RunResult {
        name: name.clone(),
        action: verb,
        status: "Running",
        spec_hash: hash.clone(),
        nodes: Vec::new(),
        reason: None,
        rollback: None,
    };
    let (code, reason) = match outcome {
        Ok(nodes) => {
            let line = format!(
                "{name} is running on {} node(s): {}\n",
                nodes.len(),
                nodes.join(", ")
            );
            result.nodes = nodes;
            return emit(args.output, &result, || line);
        }
        Err(f) => (f.code, f.message),
    };
    let rolled_back = roll_back(&plugins, &name, previous.as_ref(), &written).await;
    result.status = if code == Exit::Timeout {
        "Timeout"
    } else {
        "Failed"
    };
    result.reason = Some(reason.clone());
    result.rollback = Some(rolled_back.clone());
    // For scripts, the result on stdout; for people, the error on stderr only.
    if !matches!(args.output, Output::Table) {
        emit(args.output, &result, String::new)?;
    }
    Err(Failure::new(code, format!("{reason}\n{rolled_back}")).into())
}

/// The plugin spec from a file or a component reference, with `--name` and
/// `--set` applied and validated.
fn plugin_spec(args: &RunArgs) -> anyhow::Result<PluginSpec> {
    let path = Path::new(&args.plugin);
    // A `.wasm` path is a component on the nodes, even if it exists here.
    let spec_file =
        !args.plugin.starts_with("oci://") && !args.plugin.ends_with(".wasm") && path.is_file();
    let mut spec = if spec_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read spec file {}", path.display()))?;
        PluginSpec::from_yaml(&text)
            .with_context(|| format!("invalid spec file {}", path.display()))?
    } else {
        let name = match &args.name {
            Some(n) => n.clone(),
            None => name_from_reference(&args.plugin).ok_or_else(|| {
                Failure::new(
                    Exit::Error,
                    format!(
                        "cannot derive a plugin name from `{}`; give one with --name",
                        args.plugin
                    ),
                )
            })?,
        };
        serde_json::from_value(serde_json::json!({"name": name, "component": args.plugin}))
            .context("cannot build a plugin spec from the component reference")?
    };
    if let Some(n) = &args.name {
        spec.name = n.clone();
    }
    for kv in &args.set {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            Failure::new(Exit::Error, format!("--set `{kv}`: expected KEY=VALUE"))
        })?;
        spec.config.insert(k.to_string(), v.to_string());
    }
    spec.validate()
        .map_err(|e| Failure::new(Exit::Error, format!("invalid plugin spec: {e}")))?;
    Ok(spec)
}

/// `oci://r/x/exec-counter:1.0` → `exec-counter`; `/opt/p/foo.wasm` → `foo`.
pub(crate) fn name_from_reference(reference: &str) -> Option<String> {
    let r = reference.strip_prefix("oci://").unwrap_or(reference);
    let r = r.split('@').next()?;
    let last = r.rsplit('/').next()?;
    let last = last.split(':').next()?;
    let last = last.strip_suffix(".wasm").unwrap_or(last);
    Some(last.to_string()).filter(|n| !n.is_empty())
}

fn node_selector(args: &RunArgs) -> anyhow::Result<LabelSelector> {
    let mut labels = BTreeMap::new();
    if let Some(n) = &args.node {
        labels.insert(HOSTNAME_LABEL.to_string(), n.clone());
    }
    if let Some(sel) = &args.selector {
        for term in sel.split(',').filter(|t| !t.trim().is_empty()) {
            let (k, v) = term
                .split_once('=')
                .filter(|(k, _)| !k.ends_with('!'))
                .ok_or_else(|| {
                    Failure::new(
                        Exit::Error,
                        format!(
                            "-l `{sel}`: only `key=value` terms are supported (the plugin's nodeSelector.matchLabels)"
                        ),
                    )
                })?;
            let v = v.strip_prefix('=').unwrap_or(v);
            labels.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    Ok(LabelSelector {
        match_labels: Some(labels).filter(|l| !l.is_empty()),
        match_expressions: None,
    })
}

/// Poll the chosen nodes' states until all run `hash`; a node that failed
/// ends the wait at once. Returns the nodes, or why not.
async fn wait_running(
    client: &kube::Client,
    name: &str,
    selector: &LabelSelector,
    hash: &str,
    generation: Option<i64>,
    timeout: Duration,
) -> Result<Vec<String>, Failure> {
    let nodes_api: Api<Node> = Api::all(client.clone());
    let states_api: Api<EbpfPluginNodeState> = Api::all(client.clone());
    let api_err =
        |what: &str, e: kube::Error| Failure::new(Exit::Error, format!("cannot list {what}: {e}"));
    let label_selector = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let deadline = Instant::now() + timeout;
    let mut last_progress = String::new();
    loop {
        let nodes: Vec<String> = nodes_api
            .list(&ListParams::default().labels(&label_selector))
            .await
            .map_err(|e| api_err("nodes", e))?
            .items
            .into_iter()
            .filter_map(|n| n.metadata.name)
            .collect();
        if nodes.is_empty() {
            return Err(Failure::new(
                Exit::Failed,
                format!(
                    "no node matches the selector `{}`",
                    if label_selector.is_empty() {
                        "(all nodes)"
                    } else {
                        &label_selector
                    }
                ),
            ));
        }
        let states = states_api
            .list(&ListParams::default().labels(&format!("{PLUGIN_LABEL}={name}")))
            .await
            .map_err(|e| api_err("EbpfPluginNodeStates", e))?
            .items;
        let mut running = Vec::new();
        let mut failed = Vec::new();
        let mut waiting = Vec::new();
        for node in &nodes {
            let status = states
                .iter()
                .find(|s| &s.spec.node_name == node)
                .and_then(|s| s.status.as_ref());
            let Some(s) = status else {
                waiting.push(format!("{node}: no state yet"));
                continue;
            };
            let ready = s.conditions.iter().find(|c| c.type_ == "Ready");
            let current = s.spec_hash.as_deref() == Some(hash);
            // An error counts only once the agent has seen this generation:
            // a failure of the spec being replaced is no verdict on the new one.
            let seen = current
                || ready
                    .is_some_and(|c| generation.is_some() && c.observed_generation >= generation);
            if current && s.phase == NodePhase::Running {
                running.push(node.clone());
            } else if seen
                && (s.phase == NodePhase::Failed
                    || ready.is_some_and(|c| FAILED_REASONS.contains(&c.reason.as_str())))
            {
                let message = ready
                    .map(|c| c.message.clone())
                    .filter(|m| !m.is_empty())
                    .or_else(|| s.last_error.clone())
                    .unwrap_or_else(|| s.phase.as_str().to_string());
                failed.push(format!("{node}: {message}"));
            } else {
                waiting.push(format!("{node}: {}", s.phase.as_str()));
            }
        }
        if !failed.is_empty() {
            return Err(Failure::new(
                Exit::Failed,
                format!(
                    "{name} failed on {} node(s):\n  {}",
                    failed.len(),
                    failed.join("\n  ")
                ),
            ));
        }
        if waiting.is_empty() {
            return Ok(running);
        }
        let progress = format!("{}/{} nodes running", running.len(), nodes.len());
        if progress != last_progress {
            eprintln!("waiting: {progress}");
            last_progress = progress;
        }
        if Instant::now() >= deadline {
            return Err(Failure::new(
                Exit::Timeout,
                format!(
                    "{name} is not running on every chosen node after {}s:\n  {}",
                    timeout.as_secs(),
                    waiting.join("\n  ")
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Undo what `run` wrote; returns what was done, for the user.
async fn roll_back(
    plugins: &Api<EbpfPlugin>,
    name: &str,
    previous: Option<&EbpfPlugin>,
    written: &EbpfPlugin,
) -> String {
    match previous {
        None => match plugins.delete(name, &DeleteParams::default()).await {
            Ok(_) => format!("rolled back: deleted EbpfPlugin {name} (it did not exist before)"),
            Err(e) => format!(
                "rollback FAILED: cannot delete EbpfPlugin {name} ({e}); delete it with `kubectl conductor delete {name}`"
            ),
        },
        Some(prev) => {
            // Re-read so the restore is based on the current resourceVersion.
            let current = match plugins.get(name).await {
                Ok(c) => c,
                Err(_) => written.clone(),
            };
            let mut restored = current;
            restored.spec = prev.spec.clone();
            match plugins
                .replace(name, &PostParams::default(), &restored)
                .await
            {
                Ok(_) => format!("rolled back: restored the previous spec of EbpfPlugin {name}"),
                Err(e) => format!(
                    "rollback FAILED: cannot restore the previous spec of EbpfPlugin {name} ({e})"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_references() {
        let n = |r| name_from_reference(r);
        assert_eq!(
            n("oci://ghcr.io/x/exec-counter:1.0").as_deref(),
            Some("exec-counter")
        );
        assert_eq!(
            n("oci://ghcr.io/x/exec-counter@sha256:ab").as_deref(),
            Some("exec-counter")
        );
        assert_eq!(n("/opt/plugins/foo.wasm").as_deref(), Some("foo"));
        assert_eq!(n("oci://ghcr.io/x/"), None);
    }
}
