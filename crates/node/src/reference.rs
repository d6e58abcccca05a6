//! The manual's metric reference (`docs/src/reference/metrics.md`),
//! rendered from the registry itself: the descriptor of every family the
//! host registers (name, type, help, and label names read from the label
//! set's own encoding), checked against what a fresh registry exposes.
//!
//! `tests/reference.rs` fails when the committed page differs from
//! [`markdown`]; `cargo xtask docs` (or `CONDUCTOR_BLESS=1 cargo test -p
//! conductor-node --test reference`) writes it again.

use std::fmt::Write;

use crate::metrics::Metrics;

/// Where the page lives, relative to the repository root.
pub const PATH: &str = "docs/src/reference/metrics.md";

/// One family of the exposition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Family {
    /// The OpenMetrics family name (counters without `_total`).
    pub name: String,
    /// `counter`, `gauge`, `histogram`, ...
    pub kind: String,
    pub help: String,
    pub labels: Vec<String>,
}

impl Family {
    /// The sample names Prometheus stores.
    pub fn samples(&self) -> Vec<String> {
        match self.kind.as_str() {
            "counter" => vec![format!("{}_total", self.name)],
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{}{s}", self.name))
                .collect(),
            _ => vec![self.name.clone()],
        }
    }
}

/// The host's own families, in registration order.
///
/// Read from the registry's descriptors ([`Metrics::host_descriptors`]),
/// since the exposition leaves out a labelled family until it has a series;
/// every family the exposition does show must match its descriptor, and
/// every family it shows must be one of them.
pub fn host_families() -> Vec<Family> {
    let metrics = Metrics::new();
    let families: Vec<Family> = metrics
        .host_descriptors()
        .iter()
        .map(|d| Family {
            name: d.name.to_owned(),
            kind: d.kind.to_owned(),
            // As exposed: prometheus-client ends every HELP with a full stop.
            help: format!("{}.", d.help.trim_end_matches('.')),
            labels: d.labels.clone(),
        })
        .collect();
    let text = metrics.encode().expect("encoding a fresh registry");
    let mut help = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name.to_owned(), unescape(text)));
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let family = families
                .iter()
                .find(|f| f.name == name)
                .unwrap_or_else(|| panic!("{name} is exposed but not a described host metric"));
            assert_eq!(family.kind, kind, "type of {name}");
            let exposed_help = match help.take() {
                Some((n, text)) if n == name => text,
                _ => String::new(),
            };
            // prometheus-client ends every HELP with a full stop.
            assert_eq!(
                family.help.trim_end_matches('.'),
                exposed_help.trim_end_matches('.'),
                "help of {name}"
            );
        }
    }
    families
}

/// The host's metrics as Markdown.
pub fn markdown() -> String {
    let mut out = String::new();
    out.push_str("# Metric reference\n\n");
    out.push_str(
        "<!-- Generated from the registry in crates/node/src/metrics.rs by `cargo xtask docs`; \
         do not edit (crates/node/tests/reference.rs fails when this page is stale). -->\n\n",
    );
    out.push_str(
        "The host's own metrics, as `/metrics` exposes them (a labelled family \
         appears with its first series) and the OTLP exporter pushes them (OTLP \
         names counters without `_total`). Plugin metrics are named \
         `<plugin>__<metric>` and carry a `plugin` label: see \
         [Metrics](../metrics.md).\n\n",
    );
    out.push_str("| metric | type | labels | meaning |\n|---|---|---|---|\n");
    for family in host_families() {
        let mut labels: Vec<String> = family.labels.iter().map(|l| format!("`{l}`")).collect();
        if family.kind == "histogram" {
            labels.push("`le` (`_bucket`)".to_owned());
        }
        let samples: Vec<String> = family.samples().iter().map(|s| format!("`{s}`")).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            samples.join("<br>"),
            family.kind,
            labels.join(", "),
            family.help.replace('|', "\\|")
        );
    }
    out
}

/// OpenMetrics HELP escaping undone.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}
