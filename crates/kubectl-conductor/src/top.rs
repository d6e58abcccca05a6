//! `kubectl conductor top`: the busiest workloads for one plugin metric,
//! live, read from every host's `/metrics` through the API server's pod
//! proxy (`pods/<pod>:metrics/proxy/metrics`, as `kubectl get --raw` would
//! read it; RBAC: `get` on `pods/proxy`).
//!
//! Rows are the metric's series summed by `--by` labels (default
//! `namespace,pod` when the metric has a `pod` label, else all its labels),
//! over all chosen nodes. The first table is sorted by value; later ones
//! (live, every `--interval`) by the rate since the previous refresh. On a
//! terminal the table is redrawn in place until interrupted; otherwise (or
//! with `--once`, or `-o json|yaml`) one table is printed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use crate::list::Output;
use crate::logs::host_pods;
use crate::{Exit, Failure, parse_duration};

/// The host container's port name for `/metrics` (deploy/daemonset.yaml).
pub const METRICS_PORT: &str = "metrics";

/// Show the busiest pods (or other label values) for a plugin's metric.
#[derive(Args, Debug)]
pub struct TopArgs {
    pub plugin: String,
    /// The metric as the plugin declared it (e.g. `execs`); default: the
    /// plugin's metric with the most series.
    #[arg(long)]
    pub metric: Option<String>,
    /// Sum by these labels (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub by: Vec<String>,
    /// Only this node's host.
    #[arg(long)]
    pub node: Option<String>,
    /// The namespace of the conductor pods (default: any).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Print one table and exit (the default when stdout is not a terminal).
    #[arg(long)]
    pub once: bool,
    /// Refresh interval of the live view.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Rows shown.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Output,
}

/// One sample of the Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of a Prometheus text exposition (comments skipped; a line
/// that does not parse is skipped too, as a scraper would report it).
pub fn parse_exposition(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_sample)
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut chars = r.char_indices().peekable();
        let mut end = None;
        loop {
            while chars.peek().is_some_and(|(_, c)| *c == ',' || *c == ' ') {
                chars.next();
            }
            match chars.peek() {
                Some((i, '}')) => {
                    end = Some(*i + 1);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut key = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                key.push(c);
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return None;
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some(c) => value.push(c),
                        None => return None,
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return None;
            }
            labels.insert(key.trim().to_owned(), value);
        }
        rest = &r[end?..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// The metric a sample name stands for: `<plugin>__<metric>[_total]` →
/// `<metric>` (the host's naming rule, docs/src/metrics.md).
pub fn declared_name(sample: &str) -> Option<&str> {
    let (_, metric) = sample.rsplit_once("__")?;
    Some(metric.strip_suffix("_total").unwrap_or(metric))
}

/// One row of the view.
#[derive(Serialize, Debug, Clone, PartialEq)]
pub struct Row {
    pub labels: BTreeMap<String, String>,
    pub nodes: Vec<String>,
    pub value: f64,
    /// Per second since the previous refresh (none on the first).
    pub rate: Option<f64>,
}

/// The view `-o json|yaml` prints.
#[derive(Serialize, Debug)]
struct View<'a> {
    plugin: &'a str,
    metric: &'a str,
    by: &'a [String],
    rows: &'a [Row],
}

/// The plugin's samples of `metric` from each node, summed by `by`.
pub fn rows(
    scrapes: &[(String, Vec<Sample>)],
    plugin: &str,
    metric: &str,
    by: &[String],
) -> Vec<Row> {
    let mut sums: BTreeMap<Vec<String>, (f64, BTreeSet<String>)> = BTreeMap::new();
    for (node, samples) in scrapes {
        for s in samples.iter().filter(|s| {
            s.labels.get("plugin").map(String::as_str) == Some(plugin)
                && declared_name(&s.name) == Some(metric)
        }) {
            let key: Vec<String> = by
                .iter()
                .map(|l| s.labels.get(l).cloned().unwrap_or_default())
                .collect();
            let e = sums.entry(key).or_default();
            e.0 += s.value;
            e.1.insert(node.clone());
        }
    }
    sums.into_iter()
        .map(|(key, (value, nodes))| Row {
            labels: by.iter().cloned().zip(key).collect(),
            nodes: nodes.into_iter().collect(),
            value,
            rate: None,
        })
        .collect()
}

/// The plugin's metrics (declared names) and their labels, most series first.
fn metrics_of(scrapes: &[(String, Vec<Sample>)], plugin: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut seen: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
    for s in scrapes.iter().flat_map(|(_, s)| s) {
        if s.labels.get("plugin").map(String::as_str) != Some(plugin) {
            continue;
        }
        let Some(m) = declared_name(&s.name) else {
            continue;
        };
        let e = seen.entry(m.to_owned()).or_default();
        e.0 += 1;
        e.1.extend(s.labels.keys().filter(|k| *k != "plugin").cloned());
    }
    let mut v: Vec<(String, (usize, BTreeSet<String>))> = seen.into_iter().collect();
    v.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
    v.into_iter().map(|(m, (_, l))| (m, l)).collect()
}

async fn scrape(
    client: &kube::Client,
    pods: &[(String, String, String)],
) -> anyhow::Result<Vec<(String, Vec<Sample>)>> {
    let mut out = Vec::new();
    for (ns, pod, node) in pods {
        let path = format!("/api/v1/namespaces/{ns}/pods/{pod}:{METRICS_PORT}/proxy/metrics");
        let request = http::Request::get(&path)
            .header(http::header::ACCEPT, "text/plain;version=0.0.4")
            .body(Vec::new())
            .context("cannot build the proxy request")?;
        let text = client.request_text(request).await.map_err(|e| {
            Failure::new(
                Exit::Error,
                format!(
                    "cannot read /metrics of pod {ns}/{pod} (node {node}) through the API server's pod proxy: {e}"
                ),
            )
        })?;
        out.push((node.clone(), parse_exposition(&text)));
    }
    Ok(out)
}

pub async fn top(client: kube::Client, args: TopArgs) -> anyhow::Result<()> {
    let pods = host_pods(&client, args.namespace.as_deref(), args.node.as_deref()).await?;
    let live =
        !args.once && matches!(args.output, Output::Table) && std::io::stdout().is_terminal();
    let first = scrape(&client, &pods).await?;
    let metrics = metrics_of(&first, &args.plugin);
    if metrics.is_empty() {
        return Err(Failure::new(
            Exit::Error,
            format!(
                "no metric of plugin {} on the chosen nodes' hosts (is it running there? see `kubectl conductor list`)",
                args.plugin
            ),
        )
        .into());
    }
    let (metric, labels) = match &args.metric {
        Some(m) => metrics
            .iter()
            .find(|(n, _)| n == m)
            .cloned()
            .ok_or_else(|| {
                Failure::new(
                    Exit::Error,
                    format!(
                        "plugin {} has no metric {m}; it has: {}",
                        args.plugin,
                        metrics
                            .iter()
                            .map(|(n, _)| n.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
            })?,
        None => metrics[0].clone(),
    };
    let by: Vec<String> = if !args.by.is_empty() {
        args.by.clone()
    } else if labels.contains("pod") {
        vec!["namespace".into(), "pod".into()]
    } else {
        labels.iter().cloned().collect()
    };
    let mut current = rows(&first, &args.plugin, &metric, &by);
    sort(&mut current);
    if !live {
        current.truncate(args.limit);
        return print(&args, &metric, &by, &current);
    }
    let mut taken = Instant::now();
    loop {
        let mut shown = current.clone();
        shown.truncate(args.limit);
        print!("\x1b[H\x1b[2J");
        println!(
            "{} {} by {} on {} node(s), every {}s (Ctrl-C to stop)\n",
            args.plugin,
            metric,
            if by.is_empty() {
                "-".to_owned()
            } else {
                by.join(",")
            },
            pods.len(),
            args.interval.as_secs_f64()
        );
        print!("{}", table(&by, &shown));
        tokio::time::sleep(args.interval).await;
        let next = rows(&scrape(&client, &pods).await?, &args.plugin, &metric, &by);
        let elapsed = taken.elapsed().as_secs_f64();
        taken = Instant::now();
        current = with_rates(&current, next, elapsed);
        sort(&mut current);
    }
}

/// Busiest first: by rate when known, else by value.
fn sort(rows: &mut [Row]) {
    rows.sort_by(|a, b| {
        let key = |r: &Row| r.rate.unwrap_or(r.value);
        key(b).total_cmp(&key(a)).then(a.labels.cmp(&b.labels))
    });
}

fn with_rates(before: &[Row], mut now: Vec<Row>, seconds: f64) -> Vec<Row> {
    for r in &mut now {
        let prev = before
            .iter()
            .find(|b| b.labels == r.labels)
            .map_or(0.0, |b| b.value);
        // A counter that went down was reset (a restart): count from zero.
        let delta = if r.value >= prev {
            r.value - prev
        } else {
            r.value
        };
        r.rate = Some(delta / seconds.max(f64::EPSILON));
    }
    now
}

fn print(args: &TopArgs, metric: &str, by: &[String], rows: &[Row]) -> anyhow::Result<()> {
    let view = View {
        plugin: &args.plugin,
        metric,
        by,
        rows,
    };
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&view)?),
        Output::Yaml => print!("{}", serde_yaml_ng::to_string(&view)?),
        Output::Table => print!("{}", table(by, rows)),
    }
    Ok(())
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// `<BY...> NODE VALUE RATE/S`, aligned like kubectl's tables.
pub fn table(by: &[String], rows: &[Row]) -> String {
    let mut lines: Vec<Vec<String>> = vec![
        by.iter()
            .map(|b| b.to_uppercase())
            .chain(["NODE", "VALUE", "RATE/S"].map(String::from))
            .collect(),
    ];
    for r in rows {
        lines.push(
            by.iter()
                .map(|b| {
                    r.labels
                        .get(b)
                        .filter(|v| !v.is_empty())
                        .cloned()
                        .unwrap_or_else(|| "-".into())
                })
                .chain([
                    r.nodes.join(","),
                    number(r.value),
                    r.rate.map_or("-".into(), |x| format!("{x:.2}")),
                ])
                .collect(),
        );
    }
    crate::list::align(&lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP exec_counter__execs_total Executions.
# TYPE exec_counter__execs_total counter
exec_counter__execs_total{plugin="exec-counter",comm="ls",namespace="web",pod="a"} 5
exec_counter__execs_total{plugin="exec-counter",comm="sh",namespace="web",pod="a"} 2
exec_counter__execs_total{plugin="exec-counter",comm="sh",namespace="db",pod="b, \"x\""} 9
exec_counter__distinct_commands{plugin="exec-counter"} 2
other__execs_total{plugin="other",pod="a"} 100
conductor_plugins 3
"#;

    #[test]
    fn exposition_and_rows() {
        let s = parse_exposition(TEXT);
        assert_eq!(s.len(), 6);
        assert_eq!(s[2].labels["pod"], "b, \"x\"");
        assert_eq!(declared_name(&s[0].name), Some("execs"));
        assert_eq!(declared_name("conductor_plugins"), None);
        let scrapes = vec![("n1".to_string(), s)];
        let m = metrics_of(&scrapes, "exec-counter");
        assert_eq!(m[0].0, "execs");
        let by = vec!["namespace".to_string(), "pod".to_string()];
        let mut r = rows(&scrapes, "exec-counter", "execs", &by);
        sort(&mut r);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].labels["pod"], "b, \"x\"");
        assert_eq!(r[0].value, 9.0);
        assert_eq!(r[1].value, 7.0);
        let t = table(&by, &r);
        assert!(t.starts_with("NAMESPACE   POD"), "{t}");
        let later = vec![Row {
            value: 17.0,
            ..r[1].clone()
        }];
        let rated = with_rates(&r, later, 2.0);
        assert_eq!(rated[0].rate, Some(5.0));
    }
}
