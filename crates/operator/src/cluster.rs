//! The cluster controller (`conductor-operator cluster`, one replica): owns
//! what no single node can decide.
//!
//! - It adds the `EbpfPlugin` finalizer and removes it once no node state of
//!   the plugin is left, so a deleted plugin disappears only after every
//!   node unloaded it.
//! - It removes the node states of nodes that left the cluster (their agent
//!   will never do it), so they block neither deletion nor the status.
//! - It is the only writer of `EbpfPlugin.status`, aggregated from the node
//!   states: one write per change instead of every node racing to patch the
//!   same object.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::{Resource, ResourceExt, SelectorExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::crd::{
    EbpfPlugin, EbpfPluginNodeState, EbpfPluginStatus, PLUGIN_FINALIZER, PLUGIN_LABEL,
    has_finalizer, spec_hash,
};
use crate::status::{NodeView, aggregate, condition, same_plugin_status};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

struct Ctx {
    plugins: Api<EbpfPlugin>,
    states: Api<EbpfPluginNodeState>,
    nodes: Api<Node>,
    node_store: Store<Node>,
    resync: Duration,
}

pub struct ClusterConfig {
    /// How often a settled plugin's status is recomputed without an event.
    pub resync: Duration,
}

pub async fn run(client: kube::Client, cfg: ClusterConfig) -> anyhow::Result<()> {
    let plugins: Api<EbpfPlugin> = Api::all(client.clone());
    let states: Api<EbpfPluginNodeState> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());

    // Nodes: a cache for selecting, and every change re-reconciles all plugins.
    let (node_store, writer) = reflector::store();
    let node_events =
        reflector::reflector(writer, watcher(nodes.clone(), watcher::Config::default()))
            .default_backoff()
            .touched_objects()
            .filter_map(|r| async move {
                match r {
                    Ok(_) => Some(()),
                    Err(e) => {
                        warn!("watching nodes: {e}");
                        None
                    }
                }
            });

    let ctx = Arc::new(Ctx {
        plugins: plugins.clone(),
        states: states.clone(),
        nodes,
        node_store: node_store.clone(),
        resync: cfg.resync,
    });
    let controller = Controller::new(plugins, watcher::Config::default())
        .owns(states, watcher::Config::default())
        .reconcile_all_on(node_events)
        .shutdown_on_signal();
    info!("cluster controller started");
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            match r {
                Ok((obj, _)) => debug!(plugin = %obj.name, "reconciled"),
                Err(e) => debug!("reconcile: {e}"),
            }
        })
        .await;
    info!("cluster controller stopped");
    Ok(())
}

fn error_policy(_p: Arc<EbpfPlugin>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    warn!("{e}");
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(plugin: Arc<EbpfPlugin>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = plugin.name_any();
    let deleting = plugin.meta().deletion_timestamp.is_some();

    if !deleting && !has_finalizer(plugin.as_ref(), PLUGIN_FINALIZER) {
        let mut finalizers = plugin.finalizers().to_vec();
        finalizers.push(PLUGIN_FINALIZER.to_string());
        patch_finalizers(&ctx.plugins, &plugin, finalizers).await?;
        // The patch is an event of its own: the next reconcile goes on.
        return Ok(Action::await_change());
    }

    // Fresh from the API, not a cache: removing the finalizer on a stale
    // view could let the resource go while a node still runs it.
    let lp = ListParams::default().labels(&format!("{PLUGIN_LABEL}={name}"));
    let mut states = Vec::new();
    for st in ctx.states.list(&lp).await?.items {
        if st.spec.plugin_name != name {
            continue;
        }
        if node_gone(&ctx, &st.spec.node_name).await? {
            info!(plugin = %name, node = %st.spec.node_name, "removing the node state of a node that left the cluster");
            crate::node::remove_state(&ctx.states, &st).await?;
            continue;
        }
        states.push(st);
    }

    if deleting {
        if states.is_empty() {
            if has_finalizer(plugin.as_ref(), PLUGIN_FINALIZER) {
                info!(plugin = %name, "unloaded from every node; releasing the resource");
                let rest = plugin
                    .finalizers()
                    .iter()
                    .filter(|f| *f != PLUGIN_FINALIZER)
                    .cloned()
                    .collect();
                patch_finalizers(&ctx.plugins, &plugin, rest).await?;
            }
            return Ok(Action::await_change());
        }
        debug!(plugin = %name, "waiting for {} node(s) to unload", states.len());
        return Ok(Action::requeue(Duration::from_secs(10)));
    }

    let uid = plugin.uid();
    let prev = plugin.status.clone().unwrap_or_default();
    let generation = plugin.meta().generation;
    let status = match kube::core::Selector::try_from(plugin.spec.node_selector.clone()) {
        Err(e) => {
            let mut s = prev.clone();
            s.observed_generation = generation;
            s.conditions = vec![condition(
                &prev.conditions,
                "Degraded",
                true,
                "InvalidSpec",
                format!("spec.nodeSelector: {}", e.0),
                generation,
            )];
            s
        }
        Ok(selector) => {
            let mut selected: Vec<String> = ctx
                .node_store
                .state()
                .iter()
                .filter(|n| selector.matches(n.labels()))
                .map(|n| n.name_any())
                .collect();
            selected.sort();
            let by_node: BTreeMap<&str, &EbpfPluginNodeState> = states
                .iter()
                .filter(|st| {
                    st.owner_references()
                        .iter()
                        .any(|o| Some(&o.uid) == uid.as_ref())
                })
                .map(|st| (st.spec.node_name.as_str(), st))
                .collect();
            let views: Vec<NodeView<'_>> = selected
                .iter()
                .map(|n| NodeView {
                    node: n,
                    status: by_node.get(n.as_str()).and_then(|st| st.status.as_ref()),
                })
                .collect();
            aggregate(generation, &spec_hash(&plugin.spec.plugin), &views, &prev)
        }
    };
    if plugin.status.is_none() || !same_plugin_status(&prev, &status) {
        write_status(&ctx.plugins, &name, &status).await?;
    }
    Ok(Action::requeue(ctx.resync))
}

/// Whether `node` is gone. Confirmed with a fresh GET: a node just added
/// may not be in the cache yet.
async fn node_gone(ctx: &Ctx, node: &str) -> Result<bool, kube::Error> {
    if ctx.node_store.get(&ObjectRef::new(node)).is_some() {
        return Ok(false);
    }
    Ok(ctx.nodes.get_opt(node).await?.is_none())
}

/// Set the finalizers, conflict-safe: the patch carries the resourceVersion
/// the decision was made on, so a concurrent change makes it fail (409) and
/// the reconcile runs again on fresh data.
async fn patch_finalizers(
    plugins: &Api<EbpfPlugin>,
    plugin: &EbpfPlugin,
    finalizers: Vec<String>,
) -> Result<(), kube::Error> {
    let patch = json!({ "metadata": {
        "finalizers": finalizers,
        "resourceVersion": plugin.resource_version(),
    }});
    match plugins
        .patch(
            &plugin.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

async fn write_status(
    plugins: &Api<EbpfPlugin>,
    name: &str,
    status: &EbpfPluginStatus,
) -> Result<(), kube::Error> {
    plugins
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    Ok(())
}
