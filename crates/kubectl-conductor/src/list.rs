//! `kubectl conductor list`, `delete` and `clear`.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use conductor_operator::crd::{EbpfPlugin, EbpfPluginNodeState};
use kube::api::{Api, DeleteParams, ListParams};
use serde::Serialize;
use std::io::IsTerminal;

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
    /// Output format: a line for people, json or yaml for scripts.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Output,
}

/// Delete the plugins of packages (the design documents' `clear`): every
/// plugin running one of the given packages, every plugin whose labels
/// match `-l`, or with `--all` every plugin; each is unloaded from every
/// node. Asks first on a terminal; scripts confirm with `--yes`.
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).multiple(true).args(["packages", "selector", "all"])))]
pub struct ClearArgs {
    /// Packages (component references, or the last part of one, as
    /// `kubectl conductor packages` lists them) whose plugins to delete.
    pub packages: Vec<String>,
    /// Only the plugins whose labels match this selector (as `kubectl delete -l`).
    #[arg(short = 'l', long = "selector")]
    pub selector: Option<String>,
    /// Every plugin in the cluster.
    #[arg(long, conflicts_with = "packages")]
    pub all: bool,
    /// Do not ask: delete (needed when stdin is not a terminal).
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Wait until every node has unloaded them and the resources are gone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub wait: bool,
    /// How long to wait.
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub timeout: Duration,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Output,
}

/// What `delete` and `clear` did to one plugin, as `-o json|yaml` prints it.
#[derive(Serialize, Debug, Clone, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    pub name: String,
    /// `Deleted` (gone from the cluster), `DeletionRequested` (`--wait=false`)
    /// or `Pending` (still there when the wait timed out).
    pub status: String,
    pub component: Option<String>,
}

/// Print `value` as json or yaml, or `table()` for people.
pub fn emit<T: Serialize>(
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

fn deleted_lines(done: &[Deleted]) -> String {
    done.iter()
        .map(|d| {
            let what = match d.status.as_str() {
                "Deleted" => "deleted",
                "DeletionRequested" => "deletion requested",
                _ => "still there",
            };
            format!("ebpfplugin.ebpfconductor.io/{} {what}\n", d.name)
        })
        .collect()
}

pub async fn delete(client: kube::Client, args: DeleteArgs) -> anyhow::Result<()> {
    let plugins: Api<EbpfPlugin> = Api::all(client);
    let name = &args.plugin;
    let component = match plugins.get_opt(name).await {
        Ok(Some(p)) => p.spec.plugin.component,
        Ok(None) => {
            return Err(Failure::new(
                Exit::Error,
                format!("EbpfPlugin {name} not found (see `kubectl conductor list`)"),
            )
            .into());
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read EbpfPlugin {name}")),
    };
    delete_all(
        &plugins,
        vec![(name.clone(), component)],
        args.wait,
        args.timeout,
        args.output,
    )
    .await
}

/// Delete these plugins (name, component), wait until they are gone if
/// asked, print what was done; exit 4 if some are still there at the end.
async fn delete_all(
    plugins: &Api<EbpfPlugin>,
    targets: Vec<(String, String)>,
    wait: bool,
    timeout: Duration,
    output: Output,
) -> anyhow::Result<()> {
    let mut done: Vec<Deleted> = Vec::new();
    for (name, component) in &targets {
        match plugins.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            // Deleted by someone else meanwhile: the same outcome.
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                // What was done so far is still reported.
                let _ = emit(output, &done, || deleted_lines(&done));
                return Err(e).with_context(|| format!("cannot delete EbpfPlugin {name}"));
            }
        }
        done.push(Deleted {
            name: name.clone(),
            status: "DeletionRequested".into(),
            component: Some(component.clone()),
        });
    }
    let mut still = Vec::new();
    if wait {
        // The operator holds a finalizer until every node has unloaded it.
        let deadline = Instant::now() + timeout;
        loop {
            still.clear();
            for d in &mut done {
                let current = plugins
                    .get_opt(&d.name)
                    .await
                    .with_context(|| format!("cannot read EbpfPlugin {}", d.name))?;
                match current {
                    None => d.status = "Deleted".into(),
                    Some(p) => {
                        d.status = "Pending".into();
                        still.push((d.name.clone(), p.metadata.finalizers.unwrap_or_default()));
                    }
                }
            }
            if still.is_empty() || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    emit(output, &done, || deleted_lines(&done))?;
    if still.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = still
        .iter()
        .map(|(name, finalizers)| {
            format!(
                "EbpfPlugin {name} is still there after {}s (finalizers: {}); \
                 the nodes have not all unloaded it: see `kubectl get ebpfpluginnodestates -l ebpfconductor.io/plugin={name}`",
                timeout.as_secs(),
                finalizers.join(", ")
            )
        })
        .collect();
    Err(Failure::new(Exit::Timeout, lines.join("\n")).into())
}

/// `a,b` or `oci://r/x/a:1`: whether `reference` is one of `packages`.
fn names_package(packages: &[String], reference: &str) -> bool {
    packages.iter().any(|p| {
        p == reference || crate::run::name_from_reference(reference).as_deref() == Some(p.as_str())
    })
}

pub async fn clear(client: kube::Client, args: ClearArgs) -> anyhow::Result<()> {
    let plugins: Api<EbpfPlugin> = Api::all(client);
    let mut lp = ListParams::default();
    if let Some(sel) = &args.selector {
        lp = lp.labels(sel);
    }
    let listed = plugins
        .list(&lp)
        .await
        .context("cannot list EbpfPlugins")?
        .items;
    let targets: Vec<(String, String)> = listed
        .into_iter()
        .filter(|p| {
            args.all
                || args.packages.is_empty()
                || names_package(&args.packages, &p.spec.plugin.component)
        })
        .filter_map(|p| Some((p.metadata.name?, p.spec.plugin.component)))
        .collect();
    if targets.is_empty() {
        // Nothing matches: nothing to do, which a script may rely on.
        eprintln!("no EbpfPlugin matches; nothing to delete");
        return emit(args.output, &Vec::<Deleted>::new(), String::new);
    }
    if !args.yes {
        let names: Vec<&str> = targets.iter().map(|(n, _)| n.as_str()).collect();
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Err(Failure::new(
                Exit::Error,
                format!(
                    "would delete {} EbpfPlugin(s): {}; confirm with --yes (stdin is not a terminal to ask)",
                    names.len(),
                    names.join(", ")
                ),
            )
            .into());
        }
        eprint!(
            "Delete {} EbpfPlugin(s) ({}) from every node? [y/N] ",
            names.len(),
            names.join(", ")
        );
        let mut answer = String::new();
        stdin
            .read_line(&mut answer)
            .context("cannot read the answer")?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(Failure::new(Exit::Error, "not confirmed; nothing deleted").into());
        }
    }
    delete_all(&plugins, targets, args.wait, args.timeout, args.output).await
}
