//! The cluster path to bpfman: an EbpfPlugin naming a bpfman-operator
//! `ClusterBpfApplication`. The fake API server serves bpfman-operator's
//! `ClusterBpfApplicationState` CRD; the test plays bpfman-agent (it writes
//! this node's state object over HTTP, as bpfman-agent does: create, then
//! the status subresource) and loads the program that bpfman-agent would
//! have loaded with a real bpfman 0.6 (in a private mount namespace, see
//! `conductor_test_support::bpfman`). A real `conductor serve` in that
//! namespace and a real node agent do the rest.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use conductor_operator::crd::{
    EbpfPlugin, EbpfPluginNodeState, EbpfPluginSpec, NodePhase, host_annotations,
};
use conductor_operator::status::WAITING_FOR_BPFMAN;
use conductor_test_support::bpfman::Bpfman;
use conductor_test_support::{UniqueBinary, path_str, value};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::json;

const T: Duration = Duration::from_secs(90);
const APP: &str = "exec-app";
const NODE: &str = "node-a";

/// Load and attach the exec-counter's program through bpfman, as
/// bpfman-agent would for the ClusterBpfApplication; its id.
fn load_in_bpfman(bpfman: &Bpfman) -> u32 {
    let obj = path_str(&artifacts().join("exec_counter.bpf.o"));
    bpfman.cli(&[
        "load",
        "file",
        "--path",
        &obj,
        "--programs",
        "tracepoint:handle_exec",
        "--application",
        APP,
    ]);
    let ids = bpfman.program_ids(&["--application", APP]);
    assert_eq!(ids.len(), 1, "{}", bpfman.cli(&["list", "programs"]));
    bpfman.cli(&[
        "attach",
        &ids[0].to_string(),
        "tracepoint",
        "--tracepoint",
        "sched/sched_process_exec",
    ]);
    ids[0]
}

/// This node's ClusterBpfApplicationState, written as bpfman-agent writes
/// it: created with its labels, then its status through the subresource.
async fn write_state(api: &Api<DynamicObject>, update_count: i64, load: &str, id: Option<u32>) {
    let name = format!("{APP}-{NODE}");
    if api.get_opt(&name).await.unwrap().is_none() {
        let mut obj = DynamicObject::new(&name, &conductor_operator::bpfman::api_resource());
        obj.metadata.labels = Some(BTreeMap::from([
            ("bpfman.io/ownedByProgram".to_string(), APP.to_string()),
            ("kubernetes.io/hostname".to_string(), NODE.to_string()),
        ]));
        api.create(&PostParams::default(), &obj).await.unwrap();
    }
    let mut program = json!({"name": "handle_exec", "programLinkStatus": "Success"});
    if let Some(id) = id {
        program["programId"] = json!(id);
    }
    let status = json!({"status": {
        "node": NODE,
        "updateCount": update_count,
        "appLoadStatus": load,
        "programs": [program],
    }});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
}

fn execs(comm: &str) -> String {
    format!(
        r#"execs__execs_total{{plugin="execs",comm="{comm}",namespace="",pod="",container=""}}"#
    )
}

#[test]
fn a_cluster_bpf_application_is_followed_across_reloads_without_a_restart() {
    if !require_root() {
        return;
    }
    let bpfman = Bpfman::start();
    let c = Cluster::start();
    let crd: CustomResourceDefinition = serde_yaml_ng::from_str(include_str!(
        "fixtures/bpfman.io_clusterbpfapplicationstates.yaml"
    ))
    .unwrap();
    c.api.create(&crd);
    c.add_node(NODE, &[]);
    // The host opens bpfman's pins, so it runs in bpfman's mount namespace;
    // it loads nothing and keeps its default capabilities.
    let ns = format!("--mount={}", bpfman.mount_ns().display());
    let d = Daemon::start_wrapped(&["nsenter", &ns], &[]);
    let ctl = Operator::cluster(&c.kubeconfig);
    let agent = Operator::node(&c.kubeconfig, NODE, &d.socket);
    let ctx = || format!("{}\n{}\n{}", ctl.log_text(), agent.log_text(), d.log_text());

    let rt = tokio::runtime::Runtime::new().unwrap();
    let states: Api<DynamicObject> = rt.block_on(async {
        let client = kube::Client::try_from(c.api.kube_config()).unwrap();
        conductor_operator::bpfman::states(client)
    });

    let spec = conductor_api::PluginSpec::from_yaml(&format!(
        "name: execs\ncomponent: {}\nclusterBpfApplication: {{name: {APP}, program: handle_exec}}\nmaps: [{{name: events, events: {{maxBatch: 64}}}}]\n",
        artifacts().join("exec_counter.wasm").display()
    ))
    .unwrap();
    let mut p = EbpfPlugin::new(
        "execs",
        EbpfPluginSpec {
            node_selector: Default::default(),
            plugin: spec,
        },
    );
    p.metadata.uid = None;
    c.api.create(&p);

    // No state from bpfman-agent yet: nothing on the host, the node state
    // says what it waits for.
    let st = wait_for(T, "the node state waiting for bpfman", ctx, || {
        let s = c.state("execs", NODE)?.status?;
        (s.conditions.first()?.reason == WAITING_FOR_BPFMAN).then_some(s)
    });
    assert_eq!(st.phase, NodePhase::Pending);
    assert!(
        st.last_error.as_deref().unwrap_or("").contains(APP),
        "{st:?}"
    );
    assert!(d.get("execs").is_none());

    // bpfman-agent loads it: NotLoaded first (still waiting), then
    // LoadSuccess with the program's id.
    rt.block_on(write_state(&states, 1, "NotLoaded", None));
    let first = load_in_bpfman(&bpfman);
    rt.block_on(write_state(&states, 2, "LoadSuccess", Some(first)));
    let h = wait_for(T, "execs running on the host", ctx, || {
        d.get("execs").filter(|h| {
            conductor_test_support::daemon::phase(h) == conductor_api::v1::Phase::Running
        })
    });
    let pin = format!("/run/bpfman/fs/maps/{first}/events");
    assert_eq!(
        h.spec.as_ref().unwrap().maps[0].pin.as_deref(),
        Some(pin.as_str()),
        "{h:?}"
    );
    assert_eq!(
        h.annotations.get(host_annotations::BPFMAN_PROGRAM_ID),
        Some(&first.to_string())
    );
    wait_for(T, "the node state running", ctx, || {
        let s = c.state("execs", NODE)?.status?;
        (s.phase == NodePhase::Running && s.conditions.first()?.reason == "Running").then_some(())
    });
    let bin = UniqueBinary::new("cndtclba");
    bin.run(30);
    let got = d.wait_for_metric(&execs(&bin.comm), Duration::from_secs(15), |v| v >= 30.0);
    assert_eq!(got, 30.0, "each exec counted exactly once");

    // bpfman reloads it under a new id; bpfman-agent reports the new id.
    bpfman.cli(&["unload", &first.to_string()]);
    let second = load_in_bpfman(&bpfman);
    assert_ne!(second, first);
    rt.block_on(write_state(&states, 3, "LoadSuccess", Some(second)));
    let h = wait_for(T, "the host handed the new pins", ctx, || {
        d.get("execs").filter(|h| {
            h.annotations.get(host_annotations::BPFMAN_PROGRAM_ID) == Some(&second.to_string())
        })
    });
    assert_eq!(
        h.spec.as_ref().unwrap().maps[0].pin.as_deref(),
        Some(format!("/run/bpfman/fs/maps/{second}/events").as_str())
    );
    // The same instance counts on from 30: re-pointed, not restarted.
    bin.run(20);
    let got = d.wait_for_metric(&execs(&bin.comm), Duration::from_secs(15), |v| v >= 50.0);
    assert_eq!(got, 50.0, "the count goes on across the reload");
    let log = d.log_text();
    assert_eq!(
        log.matches("plugin running").count(),
        1,
        "the instance is not re-created: {log}"
    );
    assert!(log.contains("re-opened the maps at the new pins"), "{log}");
    let text = d.scrape();
    assert_eq!(
        value(&text, r#"conductor_plugin_restarts_total{plugin="execs"}"#),
        Some(0.0),
        "{text}"
    );
    wait_for(T, "the node state running after the reload", ctx, || {
        let s = c.state("execs", NODE)?.status?;
        (s.phase == NodePhase::Running && s.conditions.first()?.reason == "Running").then_some(())
    });

    // Deleting the resource unloads the plugin; bpfman's program stays
    // (bpfman-operator owns it).
    c.api.delete::<EbpfPlugin>(None, "execs");
    wait_for(T, "the plugin unloaded", ctx, || {
        (d.get("execs").is_none() && c.api.list::<EbpfPluginNodeState>().is_empty()).then_some(())
    });
    assert_eq!(bpfman.program_ids(&["--application", APP]), [second]);

    // Given to the daemon by hand, nobody resolves it: refused, saying why.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("by-hand.yaml");
    std::fs::write(
        &file,
        format!(
            "name: by-hand\ncomponent: {}\nclusterBpfApplication: {{name: {APP}}}\nmaps: [{{name: events, events: {{}}}}]\n",
            artifacts().join("exec_counter.wasm").display()
        ),
    )
    .unwrap();
    let out = d.cli(&["load", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("map \"events\" has no pin") && stderr.contains("node agent"),
        "{stderr}"
    );
    assert!(d.get("by-hand").is_none());
}
