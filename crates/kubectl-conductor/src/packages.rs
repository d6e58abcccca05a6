//! `kubectl conductor packages` and `show`: what the cluster knows about
//! the packages its plugins run and about each plugin, from the
//! `EbpfPlugin` specs and the `EbpfPluginNodeState`s the node agents write.
//!
//! A package is a plugin's component reference (`oci://…` or a path on the
//! nodes). Its digest and signer are what the nodes report for the spec
//! they run (`status.componentDigest`, `status.signer`: the host's
//! signature verification when it pulled the artifact). What is *inside*
//! an `oci://` package (programs and attach points, maps, config keys with
//! their docs, WIT version, source, files) is read by `show` from the
//! registry into the local cache, exactly as `conductor show` reads it
//! (`conductor_oci::package::show_text` / `show_json`), so the user needs
//! pull access to the registry, not to a node.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use clap::Args;
use conductor_operator::crd::{EbpfPlugin, EbpfPluginNodeState, NodePhase, spec_hash};
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::list::{Output, align, emit};
use crate::{Exit, Failure};

/// List the packages the cluster's plugins reference.
#[derive(Args, Debug)]
pub struct PackagesArgs {
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Output,
}

/// Show what the cluster knows about a plugin (by name) or a package (by
/// reference, or the last part of one), and what an OCI package holds.
#[derive(Args, Debug)]
pub struct ShowArgs {
    pub name: String,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Output,
    /// Where packages read from the registry are cached (the format of
    /// `conductor`'s cache) [default: $XDG_CACHE_HOME/conductor or ~/.cache/conductor].
    #[arg(long, value_name = "DIR", env = "CONDUCTOR_CACHE_DIR")]
    pub cache_dir: Option<std::path::PathBuf>,
    /// A registry (`host:port`) that may be reached over plain HTTP;
    /// repeatable. Loopback registries always may.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST:PORT",
        env = "CONDUCTOR_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure: Vec<String>,
    /// Do not ask the registry: show a package's content only if it is cached.
    #[arg(long)]
    pub offline: bool,
}

/// One package as `-o json|yaml` prints it.
#[derive(Serialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Package {
    pub reference: String,
    /// Digests the nodes run (several during a rollout of a moving tag).
    pub digests: Vec<String>,
    /// Who signed it, as the nodes running it report it (several during a
    /// rollout, comma-separated); none for a file on the nodes.
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
    signer: Option<String>,
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
    #[serde(flatten)]
    content: Content,
}

#[derive(Serialize, Debug)]
struct PackageView {
    kind: &'static str,
    #[serde(flatten)]
    package: Package,
    nodes: BTreeMap<String, Vec<NodeView>>,
    #[serde(flatten)]
    content: Content,
}

/// What an OCI package holds, as `conductor show -o json` prints it.
#[derive(Serialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct Content {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<serde_json::Value>,
    /// Why there is no content (a file on the nodes, a plain component
    /// artifact, the registry unreachable, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    content_unavailable: Option<String>,
    #[serde(skip)]
    text: Option<String>,
}

/// Read an `oci://` reference's package from the cache, or the registry.
async fn content(args: &ShowArgs, component: &str) -> Content {
    let Some(reference) = conductor_api::oci_reference(component) else {
        return Content {
            content_unavailable: Some(
                "a file on the nodes: its content is not readable from the cluster".into(),
            ),
            ..Default::default()
        };
    };
    let cache = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let store = conductor_oci::Store::new(&cache);
    let opts = conductor_oci::RegistryOptions {
        insecure: args.insecure.clone(),
        ..Default::default()
    };
    let record = match store.record(reference) {
        Some(r) if r.kind == conductor_oci::Kind::Package => Ok(r),
        _ => {
            let policy = if args.offline {
                conductor_api::PullPolicy::Never
            } else {
                conductor_api::PullPolicy::IfNotPresent
            };
            conductor_oci::pull(
                &store,
                reference,
                conductor_oci::Kind::Component,
                policy,
                &opts,
            )
            .await
            .map(|p| p.record)
        }
    };
    match record {
        Ok(r) => match (
            conductor_oci::package::show_json(&r),
            conductor_oci::package::show_text(&r),
        ) {
            (Some(json), Some(text)) => Content {
                content: Some(json),
                content_unavailable: None,
                text: Some(text),
            },
            _ => Content {
                content_unavailable: Some(
                    "a plain component artifact, not a plugin package: no programs, maps or config keys to show".into(),
                ),
                ..Default::default()
            },
        },
        Err(e) => Content {
            content_unavailable: Some(format!("cannot read the package: {e}")),
            ..Default::default()
        },
    }
}

/// `$XDG_CACHE_HOME/conductor`, else `~/.cache/conductor` (as `conductor`'s).
fn default_cache_dir() -> std::path::PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| std::path::PathBuf::from("/var/cache"))
        .join("conductor")
}

impl Content {
    /// The table's section: the package's content, or why there is none.
    fn section(&self) -> String {
        match (&self.text, &self.content_unavailable) {
            (Some(t), _) => format!("\nPackage content:\n{}", indent(t)),
            (None, Some(why)) => format!("\nPackage content: - ({why})\n"),
            (None, None) => String::new(),
        }
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
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
                    signer: st.signer,
                    restarts: st.restarts,
                    last_error: st.last_error,
                }
            })
            .collect();
        v.sort_by(|a, b| a.node.cmp(&b.node));
        v
    }

    fn packages(&self) -> Vec<Package> {
        // reference → (plugins, digests, running nodes, signers)
        type Sets = (
            BTreeSet<String>,
            BTreeSet<String>,
            BTreeSet<String>,
            BTreeSet<String>,
        );
        let mut by_ref: BTreeMap<String, Sets> = BTreeMap::new();
        for p in &self.plugins {
            let e = by_ref.entry(p.spec.plugin.component.clone()).or_default();
            e.0.insert(name_of(p));
            for n in self.nodes_of(p) {
                if n.current {
                    e.1.extend(n.digest.clone());
                    e.3.extend(n.signer.clone());
                }
                if n.phase == NodePhase::Running.as_str() {
                    e.2.insert(n.node);
                }
            }
        }
        by_ref
            .into_iter()
            .map(|(reference, (plugins, digests, nodes, signers))| Package {
                reference,
                digests: digests.into_iter().collect(),
                signer: Some(signers.into_iter().collect::<Vec<_>>().join(", "))
                    .filter(|s| !s.is_empty()),
                plugins: plugins.into_iter().collect(),
                running_nodes: nodes.len(),
            })
            .collect()
    }
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
            content: content(&args, &p.spec.plugin.component).await,
        };
        return emit(args.output, &view, || {
            let spec = serde_yaml_ng::to_string(&view.spec).unwrap_or_default();
            format!(
                "Plugin:      {}\nPackage:     {}\nSigner:      {}\nGeneration:  {}\nSpec hash:   {}\nStatus:      {}\nNodes:       {}\nSpec:\n{}\n{}",
                view.name,
                view.package,
                {
                    let signers: BTreeSet<&str> = view
                        .nodes
                        .iter()
                        .filter(|n| n.current)
                        .filter_map(|n| n.signer.as_deref())
                        .collect();
                    if signers.is_empty() {
                        "-".to_owned()
                    } else {
                        signers.into_iter().collect::<Vec<_>>().join(", ")
                    }
                },
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
            ) + &view.content.section()
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
    let content = content(&args, &package.reference).await;
    let view = PackageView {
        kind: "Package",
        package,
        nodes,
        content,
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
                .unwrap_or("- (none reported by the nodes)"),
            p.plugins.join(", "),
            p.running_nodes
        );
        for (plugin, nodes) in &view.nodes {
            out.push_str(&format!("\nPlugin {plugin}:\n{}", node_table(nodes)));
        }
        out.push_str(&view.content.section());
        out
    })
}
