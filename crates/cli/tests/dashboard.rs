//! The Grafana dashboards in deploy/grafana/ are valid JSON and every metric
//! their queries name is one the host (or the exec-counter plugin) exports;
//! each catalog dashboard (`catalog-<plugin>.json`) names only metrics its
//! plugin (`plugins/catalog/<plugin>/`) declares; the node overview
//! (`node-overview.json`) names only metrics of the host or of a plugin.

use std::collections::BTreeSet;
use std::path::Path;

use conductor_node::metrics::{
    CallLabels, FaultLabels, LostLabels, Metrics, PluginLabel, SourceLabels,
};

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// Every sample name the host's own metrics expose (each family given one
/// series, since empty families are not exposed).
fn host_sample_names() -> BTreeSet<String> {
    let m = Metrics::new();
    let (plugin, source) = ("p".to_owned(), "s".to_owned());
    let src = SourceLabels {
        plugin: plugin.clone(),
        source: source.clone(),
    };
    let pl = PluginLabel {
        plugin: plugin.clone(),
    };
    m.host.events_received.get_or_create(&src).inc();
    m.host.batches.get_or_create(&src).inc();
    m.host
        .events_lost
        .get_or_create(&LostLabels {
            plugin: plugin.clone(),
            source,
            reason: "kernel",
        })
        .inc();
    m.host
        .call_seconds
        .get_or_create(&CallLabels {
            plugin: plugin.clone(),
            call: "tick",
        })
        .observe(0.1);
    m.host
        .faults
        .get_or_create(&FaultLabels {
            plugin,
            kind: "trap",
        })
        .inc();
    m.host.restarts.get_or_create(&pl).inc();
    m.host.memory_bytes.get_or_create(&pl).set(1);
    m.host.up.get_or_create(&pl).set(1);
    m.host.series_dropped.get_or_create(&pl).inc();
    m.host.cpu_seconds.get_or_create(&pl).inc_by(0.1);
    m.host.otlp_exports("ok").inc();
    m.encode()
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// PromQL aggregation operators (they may be followed by `by`, not `(`) and
/// other keywords.
const KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "bool",
    "offset",
    "and",
    "or",
    "unless",
];

/// Metric names in a PromQL expression: identifiers that are not followed by
/// `(` (functions), not label names inside `{}` or `by (...)`, not keywords.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let (mut braces, mut parens_after_by) = (0, false);
    let chars: Vec<char> = expr.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' {
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += 1;
            }
        } else if c == '{' {
            braces += 1;
        } else if c == '}' {
            braces -= 1;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
        } else if c == ')' {
            parens_after_by = false;
        } else if c.is_ascii_digit() || c == '.' {
            // A number, with its exponent (`1e6`) or hex digits: not a name.
            while i + 1 < chars.len()
                && (chars[i + 1].is_ascii_alphanumeric() || chars[i + 1] == '.')
            {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i + 1 < chars.len()
                && (chars[i + 1].is_ascii_alphanumeric() || chars[i + 1] == '_')
            {
                i += 1;
            }
            let word: String = chars[start..=i].iter().collect();
            let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
            if [
                "by",
                "without",
                "on",
                "ignoring",
                "group_left",
                "group_right",
            ]
            .contains(&word.as_str())
            {
                parens_after_by = true;
            } else if braces == 0
                && !parens_after_by
                && next != Some(&'(')
                && !KEYWORDS.contains(&word.as_str())
            {
                names.push(word);
            }
        }
        i += 1;
    }
    names
}

#[test]
fn dashboard_queries_name_metrics_the_host_exports() {
    let path = root().join("deploy/grafana/conductor.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let host = host_sample_names();
    let exec_counter =
        std::fs::read_to_string(root().join("plugins/exec-counter/src/lib.rs")).unwrap();

    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            let q = var["query"].as_str().unwrap();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(',').map(|(e, _)| e.to_owned()))
                .unwrap();
            exprs.push(inner);
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");

    let mut seen = 0;
    for expr in &exprs {
        for name in metric_names(expr) {
            seen += 1;
            if let Some(metric) = name.strip_prefix("exec_counter__") {
                let declared = metric.strip_suffix("_total").unwrap_or(metric);
                assert!(
                    exec_counter.contains(&format!("declare(\"{declared}\"")),
                    "{name} in {expr:?} is not declared by plugins/exec-counter"
                );
            } else {
                assert!(
                    host.contains(&name),
                    "{name} in {expr:?} is not a metric the host exports; it exports {host:?}"
                );
            }
        }
    }
    assert!(seen >= exprs.len(), "every query names a metric");
    // The tokenizer itself: functions, labels and grouping are not metrics.
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.99, sum by (le, plugin) (rate(x_bucket{plugin=~"$p"}[5m])))"#
        ),
        vec!["x_bucket"]
    );
}

/// Every query of a dashboard: panel targets and query variables.
fn dashboard_exprs(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            let q = var["query"].as_str().unwrap();
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(',').map(|(e, _)| e.to_owned()))
                .unwrap_or_else(|| panic!("{}: query variable {q:?}", path.display()));
            exprs.push(inner);
        }
    }
    exprs
}

#[test]
fn catalog_dashboards_name_metrics_their_plugin_declares() {
    let mut dashboards = 0;
    for entry in std::fs::read_dir(root().join("deploy/grafana")).unwrap() {
        let path = entry.unwrap().path();
        let Some(plugin) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("catalog-"))
            .and_then(|n| n.strip_suffix(".json"))
            .map(str::to_owned)
        else {
            continue;
        };
        dashboards += 1;
        let source_path = root()
            .join("plugins/catalog")
            .join(&plugin)
            .join("src/lib.rs");
        let source = std::fs::read_to_string(&source_path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (no plugin for {})",
                source_path.display(),
                path.display()
            )
        });
        let prefix = format!("{}__", plugin.replace('-', "_"));
        let declared = declared_names(&source);
        let exprs = dashboard_exprs(&path);
        assert!(exprs.len() >= 3, "{}: {exprs:?}", path.display());
        for expr in &exprs {
            let names = metric_names(expr);
            assert!(
                !names.is_empty(),
                "{}: {expr:?} names no metric",
                path.display()
            );
            for name in names {
                let metric = name.strip_prefix(&prefix).unwrap_or_else(|| {
                    panic!(
                        "{}: {name} in {expr:?} is not a metric of {plugin}",
                        path.display()
                    )
                });
                // Counters gain _total; histograms _bucket, _sum and _count.
                let known = std::iter::once(metric)
                    .chain(
                        ["_total", "_bucket", "_sum", "_count"]
                            .iter()
                            .filter_map(|s| metric.strip_suffix(s)),
                    )
                    .any(|d| declared.contains(d));
                assert!(
                    known,
                    "{}: {name} in {expr:?} is not declared by {} (it declares {declared:?})",
                    path.display(),
                    source_path.display()
                );
            }
        }
    }
    assert!(dashboards >= 1, "no catalog dashboards in deploy/grafana");
}

/// The metric names a plugin's source declares: the string literal that
/// opens each `declare(` call.
fn declared_names(source: &str) -> BTreeSet<String> {
    source
        .split("declare(")
        .skip(1)
        .filter_map(|rest| {
            let rest = rest.trim_start().strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_owned())
        })
        .collect()
}

/// The declared metrics of the plugin whose metric prefix is `prefix`
/// (`pod_traffic` for `plugins/catalog/pod-traffic`, `exec_counter` for
/// `plugins/exec-counter`), or `None` if no plugin has that prefix.
fn plugin_declares(prefix: &str) -> Option<BTreeSet<String>> {
    let mut dirs = vec![root().join("plugins/exec-counter")];
    for entry in std::fs::read_dir(root().join("plugins/catalog")).unwrap() {
        dirs.push(entry.unwrap().path());
    }
    let dir = dirs.into_iter().find(|d| {
        d.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.replace('-', "_") == prefix)
    })?;
    let source = std::fs::read_to_string(dir.join("src/lib.rs")).unwrap();
    Some(declared_names(&source))
}

#[test]
fn node_overview_names_metrics_of_the_host_or_a_plugin() {
    let path = root().join("deploy/grafana/node-overview.json");
    let host = host_sample_names();
    let exprs = dashboard_exprs(&path);
    assert!(exprs.len() >= 15, "{exprs:?}");
    let mut plugins = BTreeSet::new();
    for expr in &exprs {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{expr:?} names no metric");
        for name in names {
            if host.contains(&name) {
                continue;
            }
            let (prefix, metric) = name.split_once("__").unwrap_or_else(|| {
                panic!("{name} in {expr:?} is neither a host metric ({host:?}) nor a plugin's")
            });
            let declared = plugin_declares(prefix)
                .unwrap_or_else(|| panic!("{name} in {expr:?}: no plugin exports {prefix}__*"));
            let known = std::iter::once(metric)
                .chain(
                    ["_total", "_bucket", "_sum", "_count"]
                        .iter()
                        .filter_map(|s| metric.strip_suffix(s)),
                )
                .any(|d| declared.contains(d));
            assert!(
                known,
                "{name} in {expr:?} is not declared by the {prefix} plugin (it declares {declared:?})"
            );
            plugins.insert(prefix.to_owned());
        }
    }
    // Over every catalog plugin and exec-counter.
    for entry in std::fs::read_dir(root().join("plugins/catalog")).unwrap() {
        let dir = entry
            .unwrap()
            .file_name()
            .to_string_lossy()
            .replace('-', "_");
        assert!(
            plugins.contains(&dir),
            "the node overview shows nothing of {dir}"
        );
    }
    assert!(plugins.contains("exec_counter"), "{plugins:?}");
}
