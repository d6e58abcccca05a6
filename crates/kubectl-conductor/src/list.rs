//! `kubectl conductor list` and `delete`.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use conductor_operator::crd::{EbpfPlugin, EbpfPluginNodeState};
use kube::api::{Api, DeleteParams, ListParams};
use serde::Serialize;

use crate::{Exit, Failure, parse_duration};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Output {
    Table,
    Json,
    Yaml,
}

/// List every plugin with its phase, restarts and last error on each node.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Output format: a table for people, json or yaml for scripts.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Output,
}

/// Delete a plugin (it is unloaded from every node) and wait until it is gone.
#[derive(Args, Debug)]
pub struct DeleteArgs {
    pub plugin: String,
    /// Wait until every node has unloaded it and the resource is gone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub wait: bool,
    /// How long to wait.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,
}

/// One plugin, as `-o json|yaml` prints it.
#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct PluginRow {
    name: String,
    component: String,
    /// `3/4 nodes running`, from the operator's status.
    summary: String,
    /// The `Ready` condition's status: `True`, `False` or `Unknown`.
    ready: String,
    nodes: Vec<NodeRow>,
}

#[derive(Serialize, Debug)]
#[serde(rename_all = "camelCase")]
struct NodeRow {
    node: String,
    phase: String,
    restarts: u64,
    last_error: Option<String>,
}

pub async fn list(client: kube::Client, args: ListArgs) -> anyhow::Result<()> {
    let plugins = Api::<EbpfPlugin>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("cannot list EbpfPlugins")?
        .items;
    let states = Api::<EbpfPluginNodeState>::all(client)
        .list(&ListParams::default())
        .await
        .context("cannot list EbpfPluginNodeStates")?
        .items;
    let rows: Vec<PluginRow> = plugins
        .iter()
        .map(|p| {
            let name = p.metadata.name.clone().unwrap_or_default();
            let status = p.status.clone().unwrap_or_default();
            let mut nodes: Vec<NodeRow> = states
                .iter()
                .filter(|s| s.spec.plugin_name == name)
                .map(|s| {
                    let st = s.status.clone().unwrap_or_default();
                    NodeRow {
                        node: s.spec.node_name.clone(),
                        phase: st.phase.as_str().to_string(),
                        restarts: st.restarts,
                        last_error: st.last_error,
                    }
                })
                .collect();
            nodes.sort_by(|a, b| a.node.cmp(&b.node));
            PluginRow {
                name,
                component: p.spec.plugin.component.clone(),
                summary: status.summary.clone(),
                ready: status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Ready")
                    .map_or("Unknown".into(), |c| c.status.clone()),
                nodes,
            }
        })
        .collect();
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&rows)?),
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(&rows)?),
        Output::Table => print!("{}", table(&rows)),
    }
    Ok(())
}

/// One line per plugin and node (a plugin no node reports yet gets one line
/// with `-`), columns aligned like kubectl's.
fn table(rows: &[PluginRow]) -> String {
    let mut lines = vec![
        [
            "NAME",
            "COMPONENT",
            "NODE",
            "PHASE",
            "RESTARTS",
            "LAST ERROR",
        ]
        .map(String::from),
    ];
    for p in rows {
        if p.nodes.is_empty() {
            lines.push([
                p.name.clone(),
                p.component.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                String::new(),
            ]);
        }
        for n in &p.nodes {
            lines.push([
                p.name.clone(),
                p.component.clone(),
                n.node.clone(),
                n.phase.clone(),
                n.restarts.to_string(),
                n.last_error.clone().unwrap_or_default().replace('\n', " "),
            ]);
        }
    }
    let lines: Vec<Vec<String>> = lines.into_iter().map(Vec::from).collect();
    align(&lines)
}

/// Columns aligned like kubectl's: three spaces apart, the last one ragged.
pub fn align(lines: &[Vec<String>]) -> String {
    let columns = lines.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            lines
                .iter()
                .map(|l| l.get(i).map_or(0, |c| c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in lines {
        let mut line = String::new();
        for (i, cell) in l.iter().enumerate() {
            if i + 1 == l.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

pub async fn delete(client: kube::Client, args: DeleteArgs) -> anyhow::Result<()> {
    let plugins: Api<EbpfPlugin> = Api::all(client);
    let name = &args.plugin;
    match plugins.delete(name, &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {
            return Err(Failure::new(
                Exit::Error,
                format!("EbpfPlugin {name} not found (see `kubectl conductor list`)"),
            )
            .into());
        }
        Err(e) => return Err(e).with_context(|| format!("cannot delete EbpfPlugin {name}")),
    }
    if !args.wait {
        println!("ebpfplugin.ebpfconductor.io/{name} deletion requested");
        return Ok(());
    }
    // The operator holds a finalizer until every node has unloaded it.
    let deadline = Instant::now() + args.timeout;
    loop {
        let current = plugins
            .get_opt(name)
            .await
            .with_context(|| format!("cannot read EbpfPlugin {name}"))?;
        let Some(p) = current else {
            println!("ebpfplugin.ebpfconductor.io/{name} deleted");
            return Ok(());
        };
        if Instant::now() >= deadline {
            let finalizers = p.metadata.finalizers.unwrap_or_default().join(", ");
            return Err(Failure::new(
                Exit::Timeout,
                format!(
                    "EbpfPlugin {name} is still there after {}s (finalizers: {finalizers}); \
                     the nodes have not all unloaded it: see `kubectl get ebpfpluginnodestates -l ebpfconductor.io/plugin={name}`",
                    args.timeout.as_secs()
                ),
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
