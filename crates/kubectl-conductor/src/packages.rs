//! `kubectl conductor packages` and `show`: what the cluster knows about
//! the packages its plugins run and about each plugin, from the
//! `EbpfPlugin` specs and the `EbpfPluginNodeState`s the node agents write.
//!
//! A package is a plugin's component reference (`oci://…` or a path on the
//! nodes). Its digest is what the nodes report running
//! (`status.componentDigest`); a node state has no signer field yet, so the
//! signer column says `-` until the nodes report one ([`Package::signer`] is
//! where it goes). What is *inside* a package (its manifest, layers,
//! signature) is read by `conductor show` on a node, not from the cluster;
//! [`show`] is structured so that a package's content can be added as one
//! more section when the cluster can serve it.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use clap::Args;
use conductor_operator::crd::{EbpfPlugin, EbpfPluginNodeState, NodePhase, spec_hash};
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::list::{Output, align};
use crate::{Exit, Failure};

/// List the packages the cluster's plugins reference.
#[derive(Args, Debug)]
pub struct PackagesArgs {
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Output,
}

/// Show what the cluster knows about a plugin (by name) or a package (by
/// reference, or the last part of one).
#[derive(Args, Debug)]
pub struct ShowArgs {
    pub name: String,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Output,
}

/// One package as `-o json|yaml` prints it.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    pub reference: String,
    /// Digests the nodes run (several during a rollout of a moving tag).
    pub digests: Vec<String>,
    /// Who signed it, as the nodes report it (none report it yet).
    pub signer: Option<String>,
    pub plugins: Vec<String>,
    /// Nodes where a plugin of this package is running.
    pub running_nodes: usize,
}

/// One node's view of a plugin.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
struct NodeView {
    node: String,
    phase: String,
    /// Whether the node runs the plugin's current spec.
    current: bool,
    digest: Option<String>,
    restarts: u64,
    last_error: Option<String>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct PluginView {
    kind: &'static str,
    name: String,
    package: String,
    generation: Option<i64>,
    spec_hash: String,
    summary: String,
    spec: conductor_api::PluginSpec,
    node_selector: serde_json::Value,
    nodes: Vec<NodeView>,
}

#[derive(Serialize, Debug)]
struct PackageView {
    kind: &'static str,
    #[serde(flatten)]
    package: Package,
    nodes: BTreeMap<String, Vec<NodeView>>,
}

struct Cluster {
    plugins: Vec<EbpfPlugin>,
    states: Vec<EbpfPluginNodeState>,
}

async fn read(client: &kube::Client) -> anyhow::Result<Cluster> {
    Ok(Cluster {
        plugins: Api::<EbpfPlugin>::all(client.clone())
            .list(&ListParams::default())
            .await
            .context("cannot list EbpfPlugins")?
            .items,
        states: Api::<EbpfPluginNodeState>::all(client.clone())
            .list(&ListParams::default())
            .await
            .context("cannot list EbpfPluginNodeStates")?
            .items,
    })
}

fn name_of(p: &EbpfPlugin) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

impl Cluster {
    fn nodes_of(&self, plugin: &EbpfPlugin) -> Vec<NodeView> {
        let name = name_of(plugin);
        let hash = spec_hash(&plugin.spec.plugin);
        let mut v: Vec<NodeView> = self
            .states
            .iter()
            .filter(|s| s.spec.plugin_name == name)
            .map(|s| {
                let st = s.status.clone().unwrap_or_default();
                NodeView {
                    node: s.spec.node_name.clone(),
                    phase: st.phase.as_str().to_owned(),
                    current: st.spec_hash.as_deref() == Some(hash.as_str()),
                    digest: st.component_digest,
                    restarts: st.restarts,
                    last_error: st.last_error,
                }
            })
            .collect();
        v.sort_by(|a, b| a.node.cmp(&b.node));
        v
    }

    fn packages(&self) -> Vec<Package> {
        // reference → (plugins, digests, running nodes)
        type Sets = (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>);
        let mut by_ref: BTreeMap<String, Sets> = BTreeMap::new();
        for p in &self.plugins {
            let e = by_ref.entry(p.spec.plugin.component.clone()).or_default();
            e.0.insert(name_of(p));
            for n in self.nodes_of(p) {
                if n.current {
                    e.1.extend(n.digest.clone());
                }
                if n.phase == NodePhase::Running.as_str() {
                    e.2.insert(n.node);
                }
            }
        }
        by_ref
            .into_iter()
            .map(|(reference, (plugins, digests, nodes))| Package {
                reference,
                digests: digests.into_iter().collect(),
                signer: None,
                plugins: plugins.into_iter().collect(),
                running_nodes: nodes.len(),
            })
            .collect()
    }
}

fn emit<T: Serialize>(
    output: Output,
    value: &T,
    table: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(value)?),
        Output::Table => print!("{}", table()),
    }
    Ok(())
}

fn short(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!("sha256:{}", &hex[..hex.len().min(12)])
}

pub async fn packages(client: kube::Client, args: PackagesArgs) -> anyhow::Result<()> {
    let packages = read(&client).await?.packages();
    emit(args.output, &packages, || {
        let mut lines = vec![
            ["PACKAGE", "DIGEST", "SIGNER", "PLUGINS", "NODES"]
                .map(String::from)
                .to_vec(),
        ];
        for p in &packages {
            lines.push(vec![
                p.reference.clone(),
                if p.digests.is_empty() {
                    "-".into()
                } else {
                    p.digests
                        .iter()
                        .map(|d| short(d))
                        .collect::<Vec<_>>()
                        .join(",")
                },
                p.signer.clone().unwrap_or_else(|| "-".into()),
                p.plugins.join(","),
                p.running_nodes.to_string(),
            ]);
        }
        align(&lines)
    })
}

fn node_table(nodes: &[NodeView]) -> String {
    let mut lines = vec![
        [
            "NODE",
            "PHASE",
            "CURRENT",
            "DIGEST",
            "RESTARTS",
            "LAST ERROR",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for n in nodes {
        lines.push(vec![
            n.node.clone(),
            n.phase.clone(),
            if n.current { "yes" } else { "no" }.into(),
            n.digest.as_deref().map_or("-".into(), short),
            n.restarts.to_string(),
            n.last_error.clone().unwrap_or_default().replace('\n', " "),
        ]);
    }
    align(&lines)
}

pub async fn show(client: kube::Client, args: ShowArgs) -> anyhow::Result<()> {
    let cluster = read(&client).await?;
    // A plugin by name first: its spec and where it runs.
    if let Some(p) = cluster.plugins.iter().find(|p| name_of(p) == args.name) {
        let view = PluginView {
            kind: "Plugin",
            name: name_of(p),
            package: p.spec.plugin.component.clone(),
            generation: p.metadata.generation,
            spec_hash: spec_hash(&p.spec.plugin),
            summary: p
                .status
                .as_ref()
                .map(|s| s.summary.clone())
                .unwrap_or_default(),
            spec: p.spec.plugin.clone(),
            node_selector: serde_json::to_value(&p.spec.node_selector)?,
            nodes: cluster.nodes_of(p),
        };
        return emit(args.output, &view, || {
            let spec = serde_yaml_ng::to_string(&view.spec).unwrap_or_default();
            format!(
                "Plugin:      {}\nPackage:     {}\nGeneration:  {}\nSpec hash:   {}\nStatus:      {}\nNodes:       {}\nSpec:\n{}\n{}",
                view.name,
                view.package,
                view.generation.map_or("-".into(), |g| g.to_string()),
                view.spec_hash,
                if view.summary.is_empty() {
                    "-"
                } else {
                    &view.summary
                },
                match &p.spec.node_selector.match_labels {
                    Some(l) if !l.is_empty() => l
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                    _ => "all".into(),
                },
                spec.lines().map(|l| format!("  {l}\n")).collect::<String>(),
                node_table(&view.nodes)
            )
        });
    }
    // Else a package: by its reference, or its last path segment.
    let wanted = |reference: &str| {
        reference == args.name
            || crate::run::name_from_reference(reference).as_deref() == Some(args.name.as_str())
    };
    let Some(package) = cluster
        .packages()
        .into_iter()
        .find(|p| wanted(&p.reference))
    else {
        return Err(Failure::new(
            Exit::Error,
            format!(
                "no plugin or package {} in the cluster (see `kubectl conductor list` and `kubectl conductor packages`)",
                args.name
            ),
        )
        .into());
    };
    let nodes: BTreeMap<String, Vec<NodeView>> = cluster
        .plugins
        .iter()
        .filter(|p| p.spec.plugin.component == package.reference)
        .map(|p| (name_of(p), cluster.nodes_of(p)))
        .collect();
    let view = PackageView {
        kind: "Package",
        package,
        nodes,
    };
    emit(args.output, &view, || {
        let p = &view.package;
        let mut out = format!(
            "Package:     {}\nDigests:     {}\nSigner:      {}\nPlugins:     {}\nRunning on:  {} node(s)\n",
            p.reference,
            if p.digests.is_empty() {
                "-".into()
            } else {
                p.digests.join(", ")
            },
            p.signer
                .as_deref()
                .unwrap_or("- (not reported by the nodes)"),
            p.plugins.join(", "),
            p.running_nodes
        );
        for (plugin, nodes) in &view.nodes {
            out.push_str(&format!("\nPlugin {plugin}:\n{}", node_table(nodes)));
        }
        out
    })
}
