//! The operator end to end: real `conductor-operator` processes against the
//! fake API server (real objects, watches, conflicts, 404/409/410) and, for
//! the node agent, real `conductor serve` daemons on real sockets running
//! the real exec-counter plugin on the real kernel.

mod common;

use std::time::Duration;

use common::*;
use conductor_api::v1::Phase;
use conductor_operator::crd::{
    EbpfPlugin, EbpfPluginNodeState, EbpfPluginNodeStateSpec, EbpfPluginNodeStateStatus,
    NODE_FINALIZER, NodePhase, PLUGIN_FINALIZER, PLUGIN_LABEL, has_finalizer, host_annotations,
    spec_hash, state_name,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::core::Resource;

const T: Duration = Duration::from_secs(90);

fn ready(p: &EbpfPlugin) -> Option<&str> {
    p.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.as_str())
}

fn summary(c: &Cluster, name: &str) -> Option<String> {
    c.plugin(name)?.status.map(|s| s.summary)
}

fn context<'a>(
    c: &'a Cluster,
    procs: Vec<&'a Operator>,
    daemons: Vec<&'a Daemon>,
) -> impl Fn() -> String + 'a {
    move || {
        let mut s = String::new();
        for p in c.api.list::<EbpfPlugin>() {
            s += &format!(
                "plugin {}: {:?} status {:?}\n",
                p.metadata.name.as_deref().unwrap_or(""),
                p.metadata.finalizers,
                p.status
            );
        }
        for st in c.api.list::<EbpfPluginNodeState>() {
            s += &format!(
                "state {}: {:?}\n",
                st.metadata.name.as_deref().unwrap_or(""),
                st.status
            );
        }
        for p in &procs {
            s += &p.log_text();
            s += "\n";
        }
        for d in &daemons {
            s += &d.log_text();
            s += "\n";
        }
        s
    }
}

/// A node state as a node agent would write it.
fn fake_state(
    plugin: &EbpfPlugin,
    node: &str,
    status: EbpfPluginNodeStateStatus,
) -> EbpfPluginNodeState {
    let name = plugin.metadata.name.clone().unwrap();
    let mut st = EbpfPluginNodeState::new(
        &state_name(&name, node),
        EbpfPluginNodeStateSpec {
            plugin_name: name.clone(),
            node_name: node.into(),
        },
    );
    st.metadata = ObjectMeta {
        name: Some(state_name(&name, node)),
        labels: Some(to_map(&[(PLUGIN_LABEL, &name)])),
        finalizers: Some(vec![NODE_FINALIZER.into()]),
        owner_references: plugin.controller_owner_ref(&()).map(|o| vec![o]),
        ..Default::default()
    };
    st.status = Some(status);
    st
}

/// The cluster controller alone, with node agents played by the test:
/// finalizers, aggregation, conflicts, lost watches and compaction, a node
/// that leaves, deletion.
#[test]
fn cluster_controller_finalizers_status_and_departed_nodes() {
    let c = Cluster::start();
    c.add_node("a", &[("role", "probe")]);
    c.add_node("b", &[("role", "probe")]);
    c.add_node("c", &[]);
    let ctl = Operator::cluster(&c.kubeconfig);
    let ctx = context(&c, vec![&ctl], vec![]);

    c.api
        .create(&exec_counter("probe", selector(&[("role", "probe")])));
    let p = wait_for(T, "the finalizer and a first status", &ctx, || {
        let p = c.plugin("probe")?;
        (has_finalizer(&p, PLUGIN_FINALIZER) && p.status.is_some()).then_some(p)
    });
    let s = p.status.as_ref().unwrap();
    assert_eq!(s.summary, "0/2 nodes running");
    assert_eq!(ready(&p), Some("False"));

    // Node a runs the current spec, node b failed.
    let hash = spec_hash(&p.spec.plugin);
    let running = EbpfPluginNodeStateStatus {
        phase: NodePhase::Running,
        spec_hash: Some(hash.clone()),
        ..Default::default()
    };
    let failed = EbpfPluginNodeStateStatus {
        phase: NodePhase::Failed,
        last_error: Some("verifier said no".into()),
        ..Default::default()
    };
    c.api.create(&fake_state(&p, "a", running.clone()));
    let b = c.api.create(&fake_state(&p, "b", failed));
    let mut b_status = b.clone();
    b_status.status = Some(EbpfPluginNodeStateStatus {
        phase: NodePhase::Failed,
        last_error: Some("verifier said no".into()),
        ..Default::default()
    });
    c.api.replace(&b_status);
    let p = wait_for(T, "1/2 running, degraded", &ctx, || {
        let p = c.plugin("probe")?;
        (p.status.as_ref()?.summary == "1/2 nodes running" && p.status.as_ref()?.nodes_failed == 1)
            .then_some(p)
    });
    let s = p.status.as_ref().unwrap();
    let degraded = s.conditions.iter().find(|c| c.type_ == "Degraded").unwrap();
    assert_eq!(degraded.status, "True");
    assert!(
        degraded.message.contains("b: verifier said no"),
        "{degraded:?}"
    );
    assert_eq!(s.failures[0].node, "b");

    // The status write meets a conflict once; the controller retries.
    c.api.fail_next("PATCH", "/ebpfplugins/probe/status", 409);
    let mut b_now: EbpfPluginNodeState = c.api.get(None, &state_name("probe", "b")).unwrap();
    b_now.status = Some(running.clone());
    c.api.replace(&b_now);
    let p = wait_for(T, "2/2 running after a conflict", &ctx, || {
        let p = c.plugin("probe")?;
        (ready(&p) == Some("True")).then_some(p)
    });
    assert_eq!(p.status.as_ref().unwrap().summary, "2/2 nodes running");
    assert!(
        c.api
            .requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.path.ends_with("/ebpfplugins/probe/status"))
            .count()
            >= 3,
        "the failed patch was retried"
    );

    // Watches are cut and history compacted: the controller relists (410
    // Gone) and still sees node c join the selection.
    let lists_before = c
        .api
        .requests()
        .iter()
        .filter(|r| r.is_list() && r.path.ends_with("/nodes"))
        .count();
    c.api.drop_watches();
    c.api.compact();
    c.label_node("c", &[("role", "probe")]);
    wait_for(T, "2/3 after node c joined", &ctx, || {
        (summary(&c, "probe")? == "2/3 nodes running").then_some(())
    });
    let lists_after = c
        .api
        .requests()
        .iter()
        .filter(|r| r.is_list() && r.path.ends_with("/nodes"))
        .count();
    assert!(
        lists_after > lists_before,
        "nodes were relisted after the watch was lost"
    );

    // Node b leaves the cluster: its state (with its agent's finalizer) is
    // removed for it.
    assert!(c.api.delete::<Node>(None, "b"));
    wait_for(T, "node b's state to be removed", &ctx, || {
        c.state("probe", "b").is_none().then_some(())
    });
    wait_for(T, "1/2 after node b left", &ctx, || {
        (summary(&c, "probe")? == "1/2 nodes running").then_some(())
    });

    // Deletion waits for node a's agent to unload (remove its state).
    c.api.delete::<EbpfPlugin>(None, "probe");
    wait_for(T, "the controller to wait for node a", &ctx, || {
        ctl.log_contains("waiting for 1 node(s) to unload")
            .then_some(())
    });
    let p = c
        .plugin("probe")
        .expect("the plugin stays while node a still runs it");
    assert!(p.metadata.deletion_timestamp.is_some());
    assert!(has_finalizer(&p, PLUGIN_FINALIZER));
    // Node a's agent unloads and lets its state go.
    let mut a: EbpfPluginNodeState = c.state("probe", "a").unwrap();
    a.metadata.finalizers = Some(vec![]);
    c.api.replace(&a);
    c.api
        .delete::<EbpfPluginNodeState>(None, &state_name("probe", "a"));
    wait_for(T, "the plugin to be gone", &ctx, || {
        c.plugin("probe").is_none().then_some(())
    });

    // Every call it made is one deploy/rbac.yaml grants it.
    assert_rbac_allows("ebpfconductor-cluster", &c.api.requests());
}

/// The node agent alone (the test plays the cluster controller's part: the
/// finalizer): load, report, unload on deletion; every API call it makes is
/// one its ClusterRole grants.
#[test]
fn node_agent_alone_within_its_rbac() {
    if !require_root() {
        return;
    }
    let c = Cluster::start();
    c.add_node("node-x", &[("kubernetes.io/os", "linux")]);
    let d = Daemon::start();
    let agent = Operator::node(&c.kubeconfig, "node-x", &d.socket);
    let ctx = context(&c, vec![&agent], vec![&d]);
    let mut p = exec_counter("solo", selector(&[("kubernetes.io/os", "linux")]));
    p.metadata.finalizers = Some(vec![PLUGIN_FINALIZER.into()]);
    c.api.create(&p);
    wait_for(T, "solo running", &ctx, || running_on(&d, "solo"));
    wait_for(T, "solo's state Running", &ctx, || {
        (c.state("solo", "node-x")?.status?.phase == NodePhase::Running).then_some(())
    });
    // The state's status write meets a conflict once: retried.
    c.api.fail_next("PATCH", "/ebpfpluginnodestates/", 409);
    let mut p = c.plugin("solo").unwrap();
    p.spec.plugin.config.insert("ignore".into(), "true".into());
    let p = c.api.replace(&p);
    wait_for(T, "the new config on the host", &ctx, || {
        d.get("solo").filter(|h| {
            h.spec
                .as_ref()
                .is_some_and(|s| s.config.contains_key("ignore"))
        })
    });
    wait_for(T, "the state at the new generation", &ctx, || {
        (c.state("solo", "node-x")?.status?.plugin_generation == p.metadata.generation)
            .then_some(())
    });
    c.api.delete::<EbpfPlugin>(None, "solo");
    wait_for(T, "solo unloaded and its state gone", &ctx, || {
        (d.get("solo").is_none() && c.state("solo", "node-x").is_none()).then_some(())
    });
    // The cluster controller would now release the resource.
    assert!(c.plugin("solo").is_some());
    assert_rbac_allows("ebpfconductor-node", &c.api.requests());
}

fn host_plugin(d: &Daemon, name: &str) -> Option<conductor_api::v1::PluginStatus> {
    d.get(name)
}

fn running_on(d: &Daemon, name: &str) -> Option<conductor_api::v1::PluginStatus> {
    d.get(name).filter(|p| p.phase == Phase::Running as i32)
}

/// Create, update the component, select another node, change the selector,
/// delete: on two real hosts with their own agents.
#[test]
fn plugin_lifecycle_on_real_hosts() {
    if !require_root() {
        return;
    }
    let c = Cluster::start();
    c.add_node("node-a", &[("role", "probe")]);
    c.add_node("node-b", &[]);
    let (da, db) = (Daemon::start(), Daemon::start());
    let ctl = Operator::cluster(&c.kubeconfig);
    let oa = Operator::node(&c.kubeconfig, "node-a", &da.socket);
    let ob = Operator::node(&c.kubeconfig, "node-b", &db.socket);
    let ctx = context(&c, vec![&ctl, &oa, &ob], vec![&da, &db]);

    // Create: runs on node-a only.
    let created = c
        .api
        .create(&exec_counter("execs", selector(&[("role", "probe")])));
    let uid = created.metadata.uid.clone().unwrap();
    let h = wait_for(T, "execs running on node-a", &ctx, || {
        running_on(&da, "execs")
    });
    assert_eq!(
        h.annotations
            .get(host_annotations::MANAGED_BY)
            .map(String::as_str),
        Some(host_annotations::MANAGER)
    );
    assert_eq!(h.annotations.get(host_annotations::UID), Some(&uid));
    assert_eq!(h.generation, 1);
    assert!(h.component_digest.starts_with("sha256:"), "{h:?}");
    let p = wait_for(T, "the plugin ready 1/1", &ctx, || {
        let p = c.plugin("execs")?;
        (ready(&p) == Some("True")).then_some(p)
    });
    assert_eq!(p.status.as_ref().unwrap().summary, "1/1 nodes running");
    let st = c.state("execs", "node-a").unwrap();
    let s = st.status.as_ref().unwrap();
    assert_eq!(s.phase, NodePhase::Running);
    assert_eq!(s.plugin_generation, Some(1));
    assert_eq!(
        s.component_digest.as_deref(),
        Some(h.component_digest.as_str())
    );
    assert!(has_finalizer(&st, NODE_FINALIZER));
    assert_eq!(st.metadata.owner_references.as_ref().unwrap()[0].uid, uid);
    assert!(
        host_plugin(&db, "execs").is_none(),
        "node-b is not selected"
    );
    assert!(c.state("execs", "node-b").is_none());

    // Update the component: the host runs the new one (Update, not a reload).
    let dir = tempfile::tempdir().unwrap();
    let v2 = dir.path().join("exec_counter_v2.wasm");
    std::fs::copy(artifacts().join("exec_counter.wasm"), &v2).unwrap();
    let mut p = c.plugin("execs").unwrap();
    p.spec.plugin.component = v2.display().to_string();
    let p = c.api.replace(&p);
    let gen2 = p.metadata.generation.unwrap();
    assert!(gen2 > 1);
    let h = wait_for(T, "the host to run the new component", &ctx, || {
        running_on(&da, "execs").filter(|h| {
            h.spec
                .as_ref()
                .is_some_and(|s| s.component == v2.display().to_string())
        })
    });
    assert_eq!(h.generation, 2, "updated in place, not loaded again");
    wait_for(T, "node-a's state at the new generation", &ctx, || {
        let s = c.state("execs", "node-a")?.status?;
        (s.plugin_generation == Some(gen2) && s.phase == NodePhase::Running).then_some(())
    });
    wait_for(T, "the plugin ready again", &ctx, || {
        let p = c.plugin("execs")?;
        (ready(&p) == Some("True") && p.status.as_ref()?.observed_generation == Some(gen2))
            .then_some(())
    });

    // node-b gets the label: it runs there too.
    c.label_node("node-b", &[("role", "probe")]);
    wait_for(T, "execs running on node-b", &ctx, || {
        running_on(&db, "execs")
    });
    wait_for(T, "2/2 nodes running", &ctx, || {
        (summary(&c, "execs")? == "2/2 nodes running").then_some(())
    });

    // Change the selector: unloaded from both, states gone.
    let mut p = c.plugin("execs").unwrap();
    p.spec.node_selector = selector(&[("role", "other")]);
    c.api.replace(&p);
    wait_for(T, "execs unloaded from both hosts", &ctx, || {
        (host_plugin(&da, "execs").is_none() && host_plugin(&db, "execs").is_none()).then_some(())
    });
    wait_for(T, "both node states removed", &ctx, || {
        (c.state("execs", "node-a").is_none() && c.state("execs", "node-b").is_none()).then_some(())
    });
    wait_for(T, "0/0 nodes", &ctx, || {
        (summary(&c, "execs")? == "0/0 nodes running").then_some(())
    });

    // Back on node-a, then delete: unloaded, state and finalizer gone.
    let mut p = c.plugin("execs").unwrap();
    p.spec.node_selector = selector(&[("role", "probe")]);
    p.spec.plugin.component = artifacts().join("exec_counter.wasm").display().to_string();
    c.api.replace(&p);
    wait_for(T, "execs running on both again", &ctx, || {
        running_on(&da, "execs").and(running_on(&db, "execs"))
    });
    c.api.delete::<EbpfPlugin>(None, "execs");
    wait_for(T, "the resource to be gone", &ctx, || {
        c.plugin("execs").is_none().then_some(())
    });
    assert!(
        host_plugin(&da, "execs").is_none(),
        "gone from the API only after unloading"
    );
    assert!(host_plugin(&db, "execs").is_none());
    assert!(c.api.list::<EbpfPluginNodeState>().is_empty());
}

/// Restarting the agent loads nothing twice; a host that restarts (its
/// state kept, or lost) gets the plugin back and the status follows;
/// while the host is down the state says so.
#[test]
fn restarts_converge_without_duplicate_loads() {
    if !require_root() {
        return;
    }
    let c = Cluster::start();
    c.add_node("node-r", &[]);
    let mut d = Daemon::start();
    let ctl = Operator::cluster(&c.kubeconfig);
    let mut agent = Operator::node(&c.kubeconfig, "node-r", &d.socket);
    c.api.create(&exec_counter("execs", Default::default()));
    let first = wait_for(
        T,
        "execs running",
        context(&c, vec![&ctl, &agent], vec![&d]),
        || running_on(&d, "execs"),
    );
    wait_for(
        T,
        "ready",
        context(&c, vec![&ctl, &agent], vec![&d]),
        || (ready(&c.plugin("execs")?) == Some("True")).then_some(()),
    );

    // The agent restarts (kill -9): it reconciles and writes, but loads
    // nothing again.
    agent.kill9();
    let writes_before = c.api.requests().len();
    agent.restart();
    wait_for(
        T,
        "the restarted agent to reconcile",
        context(&c, vec![&ctl, &agent], vec![&d]),
        || {
            (agent.log_contains("watching the host daemon") && agent.log_contains("reconciled"))
                .then_some(())
        },
    );
    let h = d.get("execs").unwrap();
    assert_eq!(
        h.generation, first.generation,
        "no update after an agent restart"
    );
    assert_eq!(
        h.loaded_at, first.loaded_at,
        "no reload after an agent restart"
    );
    assert_eq!(d.list().len(), 1);
    assert!(
        !agent.log_contains("loading the plugin"),
        "{}",
        agent.log_text()
    );
    assert!(c.api.requests().len() > writes_before);

    // The host is killed: the state reports it, then the host comes back
    // with its persisted plugins and the agent finds them current.
    d.kill9();
    wait_for(
        T,
        "the state to report the host down",
        context(&c, vec![&ctl, &agent], vec![&d]),
        || (c.state("execs", "node-r")?.status?.phase == NodePhase::Unknown).then_some(()),
    );
    d.spawn();
    let back = wait_for(
        T,
        "execs running after the host restart",
        context(&c, vec![&ctl, &agent], vec![&d]),
        || running_on(&d, "execs"),
    );
    assert_eq!(
        back.annotations.get(host_annotations::UID),
        first.annotations.get(host_annotations::UID)
    );
    wait_for(
        T,
        "the state Running again",
        context(&c, vec![&ctl, &agent], vec![&d]),
        || {
            let s = c.state("execs", "node-r")?.status?;
            (s.phase == NodePhase::Running && s.conditions[0].status == "True").then_some(())
        },
    );
    assert!(
        !agent.log_contains("loading the plugin"),
        "restored by the host itself: {}",
        agent.log_text()
    );
    assert_eq!(d.list().len(), 1);

    // The host comes back without its state (a new node disk): the agent
    // loads the plugin again, once.
    d.kill9();
    std::fs::remove_dir_all(&d.state_dir).unwrap();
    d.spawn();
    wait_for(
        T,
        "execs loaded again by the agent",
        context(&c, vec![&ctl, &agent], vec![&d]),
        || running_on(&d, "execs"),
    );
    wait_for(
        T,
        "ready after the reload",
        context(&c, vec![&ctl, &agent], vec![&d]),
        || {
            let s = c.state("execs", "node-r")?.status?;
            (s.phase == NodePhase::Running && s.conditions[0].status == "True").then_some(())
        },
    );
    assert_eq!(
        agent.count_in_log("loading the plugin"),
        1,
        "{}",
        agent.log_text()
    );
    assert_eq!(d.list().len(), 1);
}

/// Plugins loaded by hand are never unloaded nor replaced; a name taken by
/// one is reported; a resource the host cannot run is reported.
#[test]
fn hand_loaded_plugins_and_bad_resources_are_reported_not_touched() {
    if !require_root() {
        return;
    }
    let c = Cluster::start();
    c.add_node("node-h", &[]);
    let d = Daemon::start();
    let ctl = Operator::cluster(&c.kubeconfig);
    let agent = Operator::node(&c.kubeconfig, "node-h", &d.socket);
    let ctx = context(&c, vec![&ctl, &agent], vec![&d]);
    let a = artifacts();
    let by_hand = |name: &str| {
        format!(
            "name: {name}\ncomponent: {}\nbytecode:\n  path: {}\n  programs: [{{name: handle_exec, tracepoint: sched/sched_process_exec}}]\nmaps: [{{name: events}}]\n",
            a.join("exec_counter.wasm").display(),
            a.join("exec_counter.bpf.o").display()
        )
    };
    d.load_by_hand(&by_hand("mine"));
    d.load_by_hand(&by_hand("taken"));

    // A resource whose name a hand-loaded plugin has: reported, not touched.
    c.api.create(&exec_counter("taken", Default::default()));
    let st = wait_for(T, "the name conflict reported", &ctx, || {
        let st = c.state("taken", "node-h")?;
        (st.status.as_ref()?.conditions.first()?.reason == "NameConflict").then_some(st)
    });
    assert!(
        st.status
            .as_ref()
            .unwrap()
            .last_error
            .as_ref()
            .unwrap()
            .contains("conductor unload taken")
    );
    wait_for(T, "the plugin degraded", &ctx, || {
        let s = c.plugin("taken")?.status?;
        (s.conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True"))
        .then_some(())
    });
    let h = d.get("taken").unwrap();
    assert!(
        h.annotations.is_empty(),
        "the hand-loaded plugin was not replaced: {h:?}"
    );

    // A resource with a relative path (as the CEL rule cannot catch): reported.
    let mut bad = exec_counter("relative", Default::default());
    bad.spec.plugin.component = "exec_counter.wasm".into();
    c.api.create(&bad);
    let st = wait_for(T, "the invalid spec reported", &ctx, || {
        let st = c.state("relative", "node-h")?;
        (st.status.as_ref()?.conditions.first()?.reason == "InvalidSpec").then_some(st)
    });
    assert!(
        st.status
            .unwrap()
            .last_error
            .unwrap()
            .contains("absolute path")
    );
    assert!(d.get("relative").is_none());

    // A component the host refuses: reported, retried with a backoff (not
    // on every host event), and a fixed spec is loaded at once.
    let mut broken = exec_counter("broken", Default::default());
    broken.spec.plugin.component = a.join("exec_counter.bpf.o").display().to_string();
    c.api.create(&broken);
    wait_for(T, "the load failure reported", &ctx, || {
        let st = c.state("broken", "node-h")?;
        (st.status.as_ref()?.conditions.first()?.reason == "LoadFailed").then_some(())
    });
    let sweeps = agent.count_in_log("sweep done");
    wait_for(T, "three more sweeps", &ctx, || {
        (agent.count_in_log("sweep done") >= sweeps + 3).then_some(())
    });
    let attempts = agent
        .log_lines()
        .iter()
        .filter(|l| l.contains("loading the plugin on the host") && l.contains("plugin=broken"))
        .count();
    // 2 s, then 4 s between attempts: a handful in these seconds, where
    // retrying on every host event would make dozens.
    assert!(
        attempts <= 4,
        "{attempts} load attempts\n{}",
        agent.log_text()
    );
    let mut fixed = c.plugin("broken").unwrap();
    fixed.spec.plugin.component = a.join("exec_counter.wasm").display().to_string();
    c.api.replace(&fixed);
    wait_for(T, "the fixed plugin running", &ctx, || {
        running_on(&d, "broken")
    });
    c.api.delete::<EbpfPlugin>(None, "broken");
    wait_for(T, "broken unloaded", &ctx, || {
        d.get("broken").is_none().then_some(())
    });

    // A good one beside them runs; the sweeps (every second) leave the
    // hand-loaded plugins alone.
    c.api.create(&exec_counter("managed", Default::default()));
    wait_for(T, "managed running", &ctx, || running_on(&d, "managed"));
    c.api.delete::<EbpfPlugin>(None, "taken");
    wait_for(T, "taken's resource gone", &ctx, || {
        c.plugin("taken").is_none().then_some(())
    });
    wait_for(T, "two sweeps", &ctx, || {
        (agent.count_in_log("sweep done") >= 2).then_some(())
    });
    let names: Vec<String> = d.list().into_iter().map(|p| p.name).collect();
    assert!(
        names.contains(&"mine".to_string()) && names.contains(&"taken".to_string()),
        "{names:?}"
    );
    assert!(names.contains(&"managed".to_string()));

    // An admin strips the finalizer and deletes "managed" at once: no
    // reconcile sees it go, the agent's sweep still unloads it and removes
    // its node state.
    let mut m = c.plugin("managed").unwrap();
    m.metadata.finalizers = Some(vec![]);
    c.api.replace(&m);
    c.api.delete::<EbpfPlugin>(None, "managed");
    assert!(c.plugin("managed").is_none());
    wait_for(T, "the sweep to unload managed", &ctx, || {
        d.get("managed").is_none().then_some(())
    });
    wait_for(T, "managed's node state removed", &ctx, || {
        c.state("managed", "node-h").is_none().then_some(())
    });
    let names: Vec<String> = d.list().into_iter().map(|p| p.name).collect();
    assert_eq!(names, ["mine", "taken"], "hand-loaded plugins stay");
}
