//! `kubectl conductor logs`: a plugin's log lines from the hosts that run
//! it, read as `kubectl logs` reads them.
//!
//! How the lines travel: the host (`conductor serve`, container `host` of
//! the conductor DaemonSet's pods) writes every log line to stderr, and
//! every line about a plugin, its own (`log` interface, stdout, stderr) and
//! the host's about it (faults, restarts, updates), carries the plugin's
//! name in a `plugin` field. The container runtime keeps stderr; the API
//! server serves it as the pod's `pods/log` subresource (through the
//! kubelet). This command reads `pods/log` of the chosen nodes' host pods
//! (`timestamps`, `sinceTime`/`sinceSeconds`, `follow`, `previous`) and
//! keeps the lines of the plugin. `--tail N` counts the plugin's lines, not
//! the host's: the API server's `tailLines` counts every line of the
//! container (most are about other plugins), so the whole log is read and
//! the last N lines of the plugin kept on each node; with `-f`, those are
//! printed, then a follow starts at their time (`sinceTime`, whole seconds
//! on the wire) and skips what was already printed. So it needs nothing new on the node (no port, no socket
//! reachable from outside), works with the same RBAC as `kubectl logs`
//! (`get` on `pods/log`), and sees what the cluster's log collectors see.
//! The host's JSON log format (`CONDUCTOR_LOG_FORMAT=json`, as the
//! DaemonSet sets it) and its text format are both understood.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use conductor_operator::crd::EbpfPlugin;
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, LogParams};
use serde::Serialize;

use crate::{Exit, Failure, parse_duration};

/// The labels of the conductor DaemonSet's pods (deploy/daemonset.yaml).
pub const HOST_POD_SELECTOR: &str =
    "app.kubernetes.io/name=conductor,app.kubernetes.io/component=node";
/// The container of those pods that runs `conductor serve`.
pub const HOST_CONTAINER: &str = "host";

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogOutput {
    /// `NODE TIME LEVEL MESSAGE fields`, for people.
    Text,
    /// One JSON object per line (node, pod, time, level, message, fields).
    Json,
    /// One YAML document per line (`---` between), the same fields.
    Yaml,
}

/// Print a plugin's log lines from the hosts on the chosen nodes.
#[derive(Args, Debug)]
pub struct LogsArgs {
    pub plugin: String,
    /// Only this node's host.
    #[arg(long)]
    pub node: Option<String>,
    /// Keep printing new lines as the hosts log them.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Only lines newer than this (e.g. 10m, 90s).
    #[arg(long, value_parser = parse_duration, conflicts_with = "since_time")]
    pub since: Option<Duration>,
    /// Only lines at or after this time (RFC 3339, e.g. 2026-11-30T08:00:00Z).
    #[arg(long)]
    pub since_time: Option<Timestamp>,
    /// Only the last N lines of the plugin from each node (then new ones with -f).
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// The lines of the previous host container on each node (the one
    /// before its last restart), as `kubectl logs --previous`.
    #[arg(short = 'p', long, conflicts_with = "follow")]
    pub previous: bool,
    /// The namespace of the conductor pods (default: found in any namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: LogOutput,
}

/// One line of a plugin, as `-o json` prints it.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Line {
    pub node: String,
    pub pod: String,
    /// When the container runtime received it (RFC 3339).
    pub time: String,
    pub level: String,
    pub message: String,
    pub fields: BTreeMap<String, String>,
}

/// The conductor host pods on the chosen node(s): (namespace, pod, node).
pub async fn host_pods(
    client: &kube::Client,
    namespace: Option<&str>,
    node: Option<&str>,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let api: Api<Pod> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut lp = ListParams::default().labels(HOST_POD_SELECTOR);
    if let Some(n) = node {
        lp = lp.fields(&format!("spec.nodeName={n}"));
    }
    let pods = api
        .list(&lp)
        .await
        .context("cannot list the conductor pods")?
        .items;
    let mut out: Vec<(String, String, String)> = pods
        .into_iter()
        .filter_map(|p| {
            let node = p.spec.as_ref()?.node_name.clone()?;
            Some((p.metadata.namespace?, p.metadata.name?, node))
        })
        .collect();
    out.sort_by(|a, b| a.2.cmp(&b.2));
    if out.is_empty() {
        return Err(Failure::new(
            Exit::Error,
            format!(
                "no conductor host pod (labels {HOST_POD_SELECTOR}){}{}: is eBPFConductor installed (`kubectl apply -k`) and scheduled there?",
                node.map(|n| format!(" on node {n}")).unwrap_or_default(),
                namespace
                    .map(|n| format!(" in namespace {n}"))
                    .unwrap_or_default()
            ),
        )
        .into());
    }
    Ok(out)
}

pub async fn logs(client: kube::Client, args: LogsArgs) -> anyhow::Result<()> {
    let name = args.plugin.clone();
    if Api::<EbpfPlugin>::all(client.clone())
        .get_opt(&name)
        .await
        .with_context(|| format!("cannot read EbpfPlugin {name}"))?
        .is_none()
    {
        return Err(Failure::new(
            Exit::Error,
            format!("EbpfPlugin {name} not found (see `kubectl conductor list`)"),
        )
        .into());
    }
    let pods = host_pods(&client, args.namespace.as_deref(), args.node.as_deref()).await?;
    let params = LogParams {
        container: Some(HOST_CONTAINER.into()),
        follow: args.follow,
        timestamps: true,
        previous: args.previous,
        since_seconds: args.since.map(|d| d.as_secs().max(1) as i64),
        since_time: args.since_time,
        ..Default::default()
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<Line>>(256);
    for (ns, pod, node) in pods {
        let tx = tx.clone();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let params = params.clone();
        let plugin = name.clone();
        let tail = args.tail;
        let output = args.output;
        tokio::spawn(async move {
            let at = format!("pod {ns}/{pod} (node {node})");
            let mut params = params;
            // With -f and --tail: the last N lines first, then a follow
            // from their time that skips what was printed.
            let mut printed_until: Option<Timestamp> = None;
            if let (Some(n), true) = (tail, params.follow) {
                let once = LogParams {
                    follow: false,
                    ..params.clone()
                };
                let lines = match read_lines(&api, &pod, &once, &plugin, &node).await {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx
                            .send(Err(anyhow::anyhow!("cannot read the log of {at}: {e}")))
                            .await;
                        return;
                    }
                };
                let from = lines.len().saturating_sub(n);
                for l in &lines[from..] {
                    let _ = print(l, output);
                }
                if let Some(last) = lines.last().and_then(|l| l.time.parse::<Timestamp>().ok()) {
                    printed_until = Some(last);
                    // sinceTime has whole seconds on the wire: round down.
                    params.since_seconds = None;
                    params.since_time = Timestamp::from_second(last.as_second()).ok();
                }
            }
            let stream = match api.log_stream(&pod, &params).await {
                Ok(s) => s,
                Err(e) => {
                    let _ = tx
                        .send(Err(anyhow::anyhow!("cannot read the log of {at}: {e}")))
                        .await;
                    return;
                }
            };
            let mut lines = stream.lines().into_stream();
            let mut kept: Vec<Line> = Vec::new();
            while let Some(line) = lines.next().await {
                let line = match line {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx
                            .send(Err(anyhow::anyhow!("the log of {at} broke off: {e}")))
                            .await;
                        return;
                    }
                };
                let Some(l) = parse(&line, &plugin, &node, &pod) else {
                    continue;
                };
                if let Some(until) = printed_until
                    && l.time.parse::<Timestamp>().is_ok_and(|t| t <= until)
                {
                    continue;
                }
                if params.follow || tail.is_none() {
                    if tx.send(Ok(l)).await.is_err() {
                        return;
                    }
                } else {
                    kept.push(l);
                }
            }
            if let Some(n) = tail {
                let from = kept.len().saturating_sub(n);
                for l in kept.drain(from..) {
                    if tx.send(Ok(l)).await.is_err() {
                        return;
                    }
                }
            }
        });
    }
    drop(tx);
    let mut errors = Vec::new();
    let mut collected = Vec::new();
    while let Some(item) = rx.recv().await {
        match item {
            Ok(line) if args.follow => print(&line, args.output)?,
            Ok(line) => collected.push(line),
            Err(e) => {
                eprintln!("error: {e:#}");
                errors.push(e);
            }
        }
    }
    // Several nodes: one timeline.
    collected.sort_by_key(|l| l.time.parse::<Timestamp>().ok());
    for line in &collected {
        print(line, args.output)?;
    }
    if !errors.is_empty() {
        return Err(Failure::new(
            Exit::Error,
            format!("{} host log(s) could not be read", errors.len()),
        )
        .into());
    }
    Ok(())
}

/// Every line of the plugin in one (non-follow) read of a host's log.
async fn read_lines(
    api: &Api<Pod>,
    pod: &str,
    params: &LogParams,
    plugin: &str,
    node: &str,
) -> anyhow::Result<Vec<Line>> {
    let text = api.logs(pod, params).await?;
    Ok(text
        .lines()
        .filter_map(|l| parse(l, plugin, node, pod))
        .collect())
}

fn print(line: &Line, output: LogOutput) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let text = match output {
        LogOutput::Json => serde_json::to_string(line)?,
        LogOutput::Yaml => format!("---\n{}", serde_yaml_ng::to_string(line)?.trim_end()),
        LogOutput::Text => {
            let mut s = format!(
                "{} {} {:<5} {}",
                line.node, line.time, line.level, line.message
            );
            for (k, v) in &line.fields {
                s.push_str(&format!(" {k}={v}"));
            }
            s
        }
    };
    // A closed pipe (`| head`) ends the command quietly.
    if writeln!(out, "{text}").and_then(|_| out.flush()).is_err() {
        std::process::exit(0);
    }
    Ok(())
}

/// One `pods/log` line (`<time> <host log line>`), if it is about `plugin`.
pub fn parse(line: &str, plugin: &str, node: &str, pod: &str) -> Option<Line> {
    let (time, rest) = line.split_once(' ')?;
    let rest = rest.trim_end();
    let mut l = if rest.starts_with('{') {
        parse_json(rest, plugin)?
    } else {
        parse_text(rest, plugin)?
    };
    l.node = node.to_owned();
    l.pod = pod.to_owned();
    l.time = time.to_owned();
    Some(l)
}

fn as_string(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// tracing-subscriber's JSON: `{"timestamp","level","fields":{"message",
/// "plugin",...},"target","span":{...},"spans":[...]}`; the plugin is named
/// in the event's fields or in an enclosing span's.
fn parse_json(rest: &str, plugin: &str) -> Option<Line> {
    let v: serde_json::Value = serde_json::from_str(rest).ok()?;
    let names = |o: &serde_json::Value| o.get("plugin").and_then(|p| p.as_str()) == Some(plugin);
    let about = names(&v["fields"])
        || names(&v["span"])
        || v["spans"].as_array().is_some_and(|s| s.iter().any(names));
    if !about {
        return None;
    }
    let mut fields: BTreeMap<String, String> = v["fields"]
        .as_object()
        .map(|o| o.iter().map(|(k, v)| (k.clone(), as_string(v))).collect())
        .unwrap_or_default();
    let message = fields.remove("message").unwrap_or_default();
    fields.remove("plugin");
    Some(Line {
        node: String::new(),
        pod: String::new(),
        time: String::new(),
        level: v["level"].as_str().unwrap_or("").to_owned(),
        message,
        fields,
    })
}

/// tracing-subscriber's text: `<time> <LEVEL> [spans:] <target>: <message>
/// key=value...`; the plugin is named as `plugin="<name>"` or `plugin=<name>`.
fn parse_text(rest: &str, plugin: &str) -> Option<Line> {
    let quoted = format!("plugin=\"{plugin}\"");
    let bare = format!("plugin={plugin}");
    let about = rest
        .split([' ', '{', '}', ':'])
        .any(|t| t == quoted || t == bare);
    if !about {
        return None;
    }
    let mut words = rest.split_whitespace();
    let _time = words.next()?;
    let level = words.next()?.to_owned();
    let start = rest.find(&level)? + level.len();
    Some(Line {
        node: String::new(),
        pod: String::new(),
        time: String::new(),
        level,
        message: rest[start..].trim().to_owned(),
        fields: BTreeMap::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_of_the_plugin_only() {
        let line = r#"2026-11-30T08:00:00.5Z {"timestamp":"2026-11-30T08:00:00.499Z","level":"INFO","fields":{"message":"steady started: hi","plugin":"steady","stream":"log"},"target":"plugin"}"#;
        let l = parse(line, "steady", "n1", "p1").unwrap();
        assert_eq!(l.time, "2026-11-30T08:00:00.5Z");
        assert_eq!(l.level, "INFO");
        assert_eq!(l.message, "steady started: hi");
        assert_eq!(l.fields.get("stream").map(String::as_str), Some("log"));
        assert!(!l.fields.contains_key("plugin"));
        assert_eq!(parse(line, "steady-2", "n1", "p1"), None);
        let in_span = r#"2026-11-30T08:00:00Z {"level":"WARN","fields":{"message":"restarting"},"span":{"plugin":"steady","name":"plugin"},"spans":[{"plugin":"steady"}]}"#;
        assert_eq!(
            parse(in_span, "steady", "n", "p").unwrap().message,
            "restarting"
        );
        let other = r#"2026-11-30T08:00:00Z {"level":"INFO","fields":{"message":"serving"}}"#;
        assert_eq!(parse(other, "steady", "n", "p"), None);
    }

    #[test]
    fn text_lines_of_the_plugin_only() {
        let line = "2026-11-30T08:00:00Z 2026-11-30T08:00:00.1Z  INFO plugin: steady started: hi plugin=\"steady\"";
        let l = parse(line, "steady", "n", "p").unwrap();
        assert_eq!(l.level, "INFO");
        assert_eq!(l.message, "plugin: steady started: hi plugin=\"steady\"");
        assert_eq!(parse(line, "stead", "n", "p"), None);
        let span = "2026-11-30T08:00:00Z 2026-11-30T08:00:00.1Z  WARN plugin{plugin=steady}: conductor_node: restarting";
        assert!(parse(span, "steady", "n", "p").is_some());
    }
}
