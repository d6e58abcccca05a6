//! Status: one node's state from its host's answer, and the plugin's
//! aggregate over its nodes. Pure functions, so they are tested directly.

use std::collections::BTreeMap;

use conductor_api::v1::PluginStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::crd::{
    EbpfPluginNodeStateStatus, EbpfPluginStatus, NodeFailure, NodePhase, host_annotations,
};

/// How many failing nodes the plugin's status lists by name.
pub const MAX_FAILURES_LISTED: usize = 10;

pub fn phase_of(p: i32) -> NodePhase {
    NodePhase::from_wire(p)
}

/// A condition; `previous` conditions keep their transition time while
/// their status does not change.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    observed_generation: Option<i64>,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        observed_generation,
        last_transition_time,
    }
}

/// Two statuses are the same for writing purposes when they differ at most
/// in condition transition times.
pub fn same_node_status(a: &EbpfPluginNodeStateStatus, b: &EbpfPluginNodeStateStatus) -> bool {
    let strip = |s: &EbpfPluginNodeStateStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}

/// What the agent reports for one node.
pub struct NodeReport<'a> {
    /// The host's status of the plugin, if it has it and it is ours.
    pub host: Option<&'a PluginStatus>,
    /// The spec hash the resource asks for.
    pub desired_hash: &'a str,
    /// An error of this reconcile (a load or update the host refused, an
    /// invalid spec, a name conflict), with its reason.
    pub error: Option<(&'a str, String)>,
    pub generation: Option<i64>,
}

/// The reason of a node state whose plugin waits for bpfman-operator to
/// load its `clusterBpfApplication` on the node.
pub const WAITING_FOR_BPFMAN: &str = "WaitingForBpfman";

pub fn node_status(
    r: &NodeReport<'_>,
    previous: &EbpfPluginNodeStateStatus,
) -> EbpfPluginNodeStateStatus {
    let mut s = EbpfPluginNodeStateStatus::default();
    if let Some(h) = r.host {
        let ann = |k: &str| h.annotations.get(k).cloned();
        s.phase = phase_of(h.phase);
        s.plugin_generation = ann(host_annotations::GENERATION).and_then(|g| g.parse().ok());
        s.spec_hash = ann(host_annotations::SPEC_HASH);
        s.component_digest = Some(h.component_digest.clone()).filter(|d| !d.is_empty());
        s.signer = Some(h.signer.clone()).filter(|d| !d.is_empty());
        s.host_generation = Some(h.generation);
        s.restarts = h.restarts;
        s.last_error = Some(h.last_error.clone()).filter(|e| !e.is_empty());
        s.next_retry = h
            .next_retry
            .as_ref()
            .and_then(|t| k8s_openapi::jiff::Timestamp::new(t.seconds, t.nanos).ok())
            .map(Time);
    } else if let Some((reason, _)) = &r.error {
        s.phase = if *reason == WAITING_FOR_BPFMAN {
            NodePhase::Pending
        } else {
            NodePhase::Failed
        };
    }
    let current = s.spec_hash.as_deref() == Some(r.desired_hash);
    let (ready, reason, message) = match (&r.error, s.phase) {
        (Some((reason, msg)), _) => {
            s.last_error = Some(msg.clone());
            (false, *reason, msg.clone())
        }
        (None, NodePhase::Running) if current => {
            (true, "Running", "running the current spec".into())
        }
        (None, NodePhase::Running) => (false, "Updating", "running an older spec".into()),
        (None, phase) => (
            false,
            phase.as_str(),
            s.last_error
                .clone()
                .unwrap_or_else(|| format!("plugin is {}", phase.as_str())),
        ),
    };
    s.conditions = vec![condition(
        &previous.conditions,
        "Ready",
        ready,
        reason,
        message,
        r.generation,
    )];
    s
}

/// The state of the host cannot be known: it did not answer.
pub fn unavailable_status(
    message: String,
    previous: &EbpfPluginNodeStateStatus,
    generation: Option<i64>,
) -> EbpfPluginNodeStateStatus {
    let mut s = previous.clone();
    s.phase = NodePhase::Unknown;
    s.last_error = Some(message.clone());
    s.conditions = vec![condition(
        &previous.conditions,
        "Ready",
        false,
        "HostUnavailable",
        message,
        generation,
    )];
    s
}

/// One node's view, as the cluster controller aggregates it.
pub struct NodeView<'a> {
    pub node: &'a str,
    /// `None`: the node is selected but has not reported yet.
    pub status: Option<&'a EbpfPluginNodeStateStatus>,
}

/// The plugin's status from its selected nodes' states.
pub fn aggregate(
    generation: Option<i64>,
    desired_hash: &str,
    nodes: &[NodeView<'_>],
    previous: &EbpfPluginStatus,
) -> EbpfPluginStatus {
    let selected = nodes.len() as u32;
    let mut running = 0;
    let mut failed = Vec::new();
    let mut progressing = Vec::new();
    for n in nodes {
        match n.status {
            Some(s)
                if s.phase == NodePhase::Running
                    && s.spec_hash.as_deref() == Some(desired_hash) =>
            {
                running += 1;
            }
            Some(s) => {
                let ready = s.conditions.iter().find(|c| c.type_ == "Ready");
                let error_reason = ready.is_some_and(|c| {
                    matches!(
                        c.reason.as_str(),
                        "LoadFailed"
                            | "UpdateFailed"
                            | "InvalidSpec"
                            | "NameConflict"
                            | "HostUnavailable"
                    )
                });
                if s.phase == NodePhase::Failed || error_reason {
                    let message = ready
                        .map(|c| c.message.clone())
                        .or_else(|| s.last_error.clone())
                        .unwrap_or_else(|| s.phase.as_str().to_string());
                    failed.push(NodeFailure {
                        node: n.node.to_string(),
                        message,
                    });
                } else {
                    progressing.push(n.node);
                }
            }
            None => progressing.push(n.node),
        }
    }
    let nodes_failed = failed.len() as u32;
    let summary = format!("{running}/{selected} nodes running");
    let prev = &previous.conditions;
    let ready = if selected == 0 {
        condition(
            prev,
            "Ready",
            false,
            "NoNodesSelected",
            "no node matches nodeSelector".into(),
            generation,
        )
    } else if running == selected {
        condition(
            prev,
            "Ready",
            true,
            "AllNodesRunning",
            summary.clone(),
            generation,
        )
    } else {
        condition(
            prev,
            "Ready",
            false,
            "NotAllNodesRunning",
            summary.clone(),
            generation,
        )
    };
    let progressing_c = if progressing.is_empty() {
        condition(
            prev,
            "Progressing",
            false,
            "Settled",
            "no node is loading or updating".into(),
            generation,
        )
    } else {
        condition(
            prev,
            "Progressing",
            true,
            "NodesProgressing",
            format!(
                "{} node(s) loading or updating: {}",
                progressing.len(),
                list(&progressing)
            ),
            generation,
        )
    };
    let degraded = if failed.is_empty() {
        condition(
            prev,
            "Degraded",
            false,
            "NoFailures",
            "no node reports an error".into(),
            generation,
        )
    } else {
        let first = &failed[0];
        condition(
            prev,
            "Degraded",
            true,
            "NodesFailed",
            format!(
                "{} node(s) failed; {}: {}",
                failed.len(),
                first.node,
                first.message
            ),
            generation,
        )
    };
    failed.truncate(MAX_FAILURES_LISTED);
    EbpfPluginStatus {
        observed_generation: generation,
        summary,
        nodes_selected: selected,
        nodes_running: running,
        nodes_failed,
        conditions: vec![ready, progressing_c, degraded],
        failures: failed,
    }
}

fn list(nodes: &[&str]) -> String {
    let mut s: Vec<&str> = nodes.iter().take(5).copied().collect();
    s.sort_unstable();
    let more = nodes.len().saturating_sub(5);
    if more > 0 {
        format!("{} and {more} more", s.join(", "))
    } else {
        s.join(", ")
    }
}

/// Two plugin statuses are the same for writing purposes when they differ
/// at most in condition transition times.
pub fn same_plugin_status(a: &EbpfPluginStatus, b: &EbpfPluginStatus) -> bool {
    let strip = |s: &EbpfPluginStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}

/// The annotations the agent stores with a plugin it loads.
pub fn host_annotations_for(
    uid: &str,
    generation: Option<i64>,
    hash: &str,
) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            host_annotations::MANAGED_BY.to_string(),
            host_annotations::MANAGER.to_string(),
        ),
        (host_annotations::UID.to_string(), uid.to_string()),
        (
            host_annotations::GENERATION.to_string(),
            generation.map(|g| g.to_string()).unwrap_or_default(),
        ),
        (host_annotations::SPEC_HASH.to_string(), hash.to_string()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use conductor_api::v1::Phase;

    fn running(hash: &str) -> EbpfPluginNodeStateStatus {
        EbpfPluginNodeStateStatus {
            phase: NodePhase::Running,
            spec_hash: Some(hash.into()),
            ..Default::default()
        }
    }

    fn cond<'a>(s: &'a EbpfPluginStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn three_of_four_running_one_failed() {
        let failed = EbpfPluginNodeStateStatus {
            phase: NodePhase::Failed,
            last_error: Some("verifier rejected handle_exec".into()),
            ..Default::default()
        };
        let ok = running("h");
        let nodes = [
            NodeView {
                node: "a",
                status: Some(&ok),
            },
            NodeView {
                node: "b",
                status: Some(&ok),
            },
            NodeView {
                node: "c",
                status: Some(&ok),
            },
            NodeView {
                node: "d",
                status: Some(&failed),
            },
        ];
        let s = aggregate(Some(3), "h", &nodes, &EbpfPluginStatus::default());
        assert_eq!(s.summary, "3/4 nodes running");
        assert_eq!(
            (s.nodes_selected, s.nodes_running, s.nodes_failed),
            (4, 3, 1)
        );
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(cond(&s, "Degraded").status, "True");
        assert!(
            cond(&s, "Degraded")
                .message
                .contains("d: verifier rejected"),
            "{:?}",
            s.conditions
        );
        assert_eq!(cond(&s, "Progressing").status, "False");
        assert_eq!(
            s.failures,
            [NodeFailure {
                node: "d".into(),
                message: "verifier rejected handle_exec".into()
            }]
        );
        assert_eq!(s.observed_generation, Some(3));
    }

    #[test]
    fn old_spec_and_unreported_nodes_are_progressing() {
        let old = running("old");
        let nodes = [
            NodeView {
                node: "a",
                status: Some(&old),
            },
            NodeView {
                node: "b",
                status: None,
            },
        ];
        let s = aggregate(Some(2), "new", &nodes, &EbpfPluginStatus::default());
        assert_eq!(s.summary, "0/2 nodes running");
        assert_eq!(cond(&s, "Progressing").status, "True");
        assert!(cond(&s, "Progressing").message.contains("a, b"));
        assert_eq!(cond(&s, "Degraded").status, "False");

        let ok = running("new");
        let nodes = [NodeView {
            node: "a",
            status: Some(&ok),
        }];
        let s2 = aggregate(Some(2), "new", &nodes, &s);
        assert_eq!(cond(&s2, "Ready").status, "True");
        // Degraded did not change: its transition time is kept.
        assert_eq!(
            cond(&s2, "Degraded").last_transition_time,
            cond(&s, "Degraded").last_transition_time
        );
        assert!(!same_plugin_status(&s, &s2));
        assert!(same_plugin_status(
            &s2,
            &aggregate(Some(2), "new", &nodes, &s2)
        ));
    }

    #[test]
    fn no_selected_node_is_not_ready() {
        let s = aggregate(Some(1), "h", &[], &EbpfPluginStatus::default());
        assert_eq!(s.summary, "0/0 nodes running");
        assert_eq!(cond(&s, "Ready").reason, "NoNodesSelected");
    }

    #[test]
    fn node_status_from_the_host() {
        let host = PluginStatus {
            name: "p".into(),
            phase: Phase::Running as i32,
            restarts: 2,
            component_digest: "sha256:ab".into(),
            signer: "verified: ci@example.org".into(),
            generation: 3,
            annotations: host_annotations_for("u", Some(7), "h")
                .into_iter()
                .collect(),
            ..Default::default()
        };
        let r = NodeReport {
            host: Some(&host),
            desired_hash: "h",
            error: None,
            generation: Some(7),
        };
        let s = node_status(&r, &Default::default());
        assert_eq!(s.phase, NodePhase::Running);
        assert_eq!(s.plugin_generation, Some(7));
        assert_eq!(s.restarts, 2);
        assert_eq!(s.host_generation, Some(3));
        assert_eq!(s.signer.as_deref(), Some("verified: ci@example.org"));
        assert_eq!(s.conditions[0].status, "True");

        // An update the host refused: the old version runs, the error shows.
        let r = NodeReport {
            host: Some(&host),
            desired_hash: "h2",
            error: Some(("UpdateFailed", "bad component".into())),
            generation: Some(8),
        };
        let s = node_status(&r, &s);
        assert_eq!(s.phase, NodePhase::Running);
        assert_eq!(s.conditions[0].reason, "UpdateFailed");
        assert_eq!(s.last_error.as_deref(), Some("bad component"));

        let r = NodeReport {
            host: None,
            desired_hash: "h",
            error: Some(("LoadFailed", "no such file".into())),
            generation: Some(1),
        };
        assert_eq!(
            node_status(&r, &Default::default()).phase,
            NodePhase::Failed
        );
    }
}
