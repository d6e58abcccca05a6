//! What this node's kernel supports, in the node API's terms: the daemon's
//! `Node` answer and `conductor features` print the same list.

use conductor_api::v1::{self, kernel_capability::Support};
use conductor_kernel::features::{Capability, KernelReport, kernel_report};

/// Probe the kernel (loads tiny programs and maps: needs CAP_BPF) and
/// describe it as the node API does (the caller sets `started_at`).
pub fn node_status() -> v1::NodeResponse {
    let report = kernel_report();
    v1::NodeResponse {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        kernel: report.release.clone(),
        started_at: None,
        capabilities: capabilities(&report),
    }
}

/// The report's lines in order: attach features, program types, map
/// types, helpers.
pub fn capabilities(report: &KernelReport) -> Vec<v1::KernelCapability> {
    let mut out: Vec<v1::KernelCapability> = report
        .features
        .iter()
        .map(|(f, r)| line("feature", f.name(), r.clone().map(|()| true)))
        .collect();
    for (kind, caps) in [
        ("program-type", &report.program_types),
        ("map-type", &report.map_types),
        ("helper", &report.helpers),
    ] {
        out.extend(
            caps.iter()
                .map(|Capability { name, supported }| line(kind, name, supported.clone())),
        );
    }
    out
}

fn line(kind: &str, name: &str, supported: Result<bool, String>) -> v1::KernelCapability {
    let (support, detail) = match supported {
        Ok(true) => (Support::Yes, String::new()),
        Ok(false) => (Support::No, "the kernel refused it".to_owned()),
        // A feature probe's error says what is missing: a definite "no".
        Err(why) if kind == "feature" => (Support::No, why),
        Err(why) => (Support::Unknown, why),
    };
    v1::KernelCapability {
        kind: kind.to_owned(),
        name: name.to_owned(),
        support: support as i32,
        detail,
    }
}
