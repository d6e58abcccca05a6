//! The node agent (`conductor-operator node`): runs beside the node's host
//! and makes the host run exactly the EbpfPlugins whose selector matches
//! this node, reporting each in an `EbpfPluginNodeState`.
//!
//! Level-triggered: every reconcile compares the resource, the node's labels
//! and the host's answer, and does only what closes the gap, so a restart of
//! the agent or of the host converges without loading anything twice.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex, RwLock};
use std::time::{Duration, Instant};

use conductor_api::v1::PluginStatus;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::core::{Resource, ResourceExt};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use tracing::{debug, info, warn};

use crate::crd::{
    EbpfPlugin, EbpfPluginNodeState, EbpfPluginNodeStateSpec, EbpfPluginNodeStateStatus,
    NODE_FINALIZER, NODE_LABEL, PLUGIN_FINALIZER, PLUGIN_LABEL, has_finalizer, host_annotations,
    spec_hash, state_name,
};
use crate::host::{Host, HostError};
use crate::status::{
    NodeReport, host_annotations_for, node_status, same_node_status, unavailable_status,
};

#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's name (the downward API's `spec.nodeName`).
    pub node_name: String,
    /// The host daemon's socket.
    pub socket: PathBuf,
    /// How often host plugins and node states without a resource are looked for.
    pub sweep_interval: Duration,
    /// How often a settled plugin is checked again without any event.
    pub resync: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Host(#[from] HostError),
    #[error("the labels of node {0} are not known yet")]
    NodeUnknown(String),
}

/// A load or update the host refused: the same spec is not tried again
/// before `retry_at`, whatever triggers the reconcile (host events come
/// with every failed attempt).
struct Failure {
    hash: String,
    count: u32,
    retry_at: Instant,
}

struct Ctx {
    node: String,
    host: Arc<Host>,
    states: Api<EbpfPluginNodeState>,
    /// This node's labels, `None` until the Node object was read.
    labels: Arc<RwLock<Option<BTreeMap<String, String>>>>,
    /// The last load/update failure per plugin, for the retry backoff.
    failures: StdMutex<HashMap<String, Failure>>,
    resync: Duration,
    /// bpfman-operator's ClusterBpfApplicationStates (`clusterBpfApplication`).
    bpfman_states: Api<kube::api::DynamicObject>,
}

/// Run the agent until SIGTERM/SIGINT.
pub async fn run(client: kube::Client, cfg: NodeConfig) -> anyhow::Result<()> {
    let plugins: Api<EbpfPlugin> = Api::all(client.clone());
    let states: Api<EbpfPluginNodeState> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let host = Arc::new(Host::new(&cfg.socket));
    let labels = Arc::new(RwLock::new(None));
    let (trigger, triggers) = futures::channel::mpsc::unbounded::<()>();

    tokio::spawn(watch_node(
        nodes,
        cfg.node_name.clone(),
        labels.clone(),
        trigger.clone(),
    ));
    tokio::spawn(watch_host(host.clone(), trigger.clone()));
    let bpfman_states = crate::bpfman::states(client.clone());
    tokio::spawn(watch_bpfman(
        bpfman_states.clone(),
        cfg.node_name.clone(),
        trigger.clone(),
    ));

    let ctx = Arc::new(Ctx {
        node: cfg.node_name.clone(),
        host: host.clone(),
        states: states.clone(),
        labels,
        failures: StdMutex::new(HashMap::new()),
        resync: cfg.resync,
        bpfman_states,
    });
    let plugins_for_sweep = plugins.clone();
    let controller = Controller::new(plugins, watcher::Config::default())
        .owns(
            states.clone(),
            watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node_name)),
        )
        .reconcile_all_on(triggers)
        .shutdown_on_signal();
    tokio::spawn(sweep(ctx.clone(), plugins_for_sweep, cfg.sweep_interval));
    info!(node = %cfg.node_name, socket = %cfg.socket.display(), "node agent started");
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            match r {
                Ok((obj, _)) => debug!(plugin = %obj.name, "reconciled"),
                Err(e) => debug!("reconcile: {e}"),
            }
        })
        .await;
    info!("node agent stopped");
    Ok(())
}

/// Keep this node's labels; a change re-reconciles every plugin. Until the
/// Node is read, reconciles wait (nothing is loaded or unloaded on a guess).
async fn watch_node(
    nodes: Api<Node>,
    node: String,
    labels: Arc<RwLock<Option<BTreeMap<String, String>>>>,
    trigger: futures::channel::mpsc::UnboundedSender<()>,
) {
    let cfg = watcher::Config::default().fields(&format!("metadata.name={node}"));
    let mut stream = watcher(nodes, cfg).default_backoff().boxed();
    let mut warned = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(watcher::Event::Apply(n) | watcher::Event::InitApply(n)) => {
                let new = n.metadata.labels.unwrap_or_default();
                let mut slot = labels.write().unwrap_or_else(|p| p.into_inner());
                if slot.as_ref() != Some(&new) {
                    info!(node = %node, "node labels: {new:?}");
                    *slot = Some(new);
                    drop(slot);
                    let _ = trigger.unbounded_send(());
                }
                warned = false;
            }
            Ok(watcher::Event::InitDone) => {
                let known = labels.read().unwrap_or_else(|p| p.into_inner()).is_some();
                if !known {
                    warn!(
                        node = %node,
                        "there is no Node named {node:?}: nothing is loaded until it exists \
                         (is --node-name / NODE_NAME set from spec.nodeName?)"
                    );
                }
            }
            Ok(watcher::Event::Delete(_)) => {
                warn!(node = %node, "this Node was deleted; keeping the plugins as they are");
            }
            Ok(watcher::Event::Init) => {}
            Err(e) if !warned => {
                warn!(node = %node, "watching this node failed, retrying: {e}");
                warned = true;
            }
            Err(e) => debug!("watching node {node}: {e}"),
        }
    }
}

/// Follow the host's status changes; each one, and every reconnect,
/// re-reconciles (a restarted host is checked against every resource).
async fn watch_host(host: Arc<Host>, trigger: futures::channel::mpsc::UnboundedSender<()>) {
    let mut delay = Duration::from_millis(250);
    let mut connected_before = true;
    loop {
        match host.watch().await {
            Ok(mut stream) => {
                info!(socket = %host.socket().display(), "watching the host daemon");
                connected_before = true;
                delay = Duration::from_millis(250);
                let _ = trigger.unbounded_send(());
                loop {
                    match stream.message().await {
                        Ok(Some(ev)) => {
                            debug!(plugin = ?ev.status.as_ref().map(|s| &s.name), kind = ev.kind, "host event");
                            let _ = trigger.unbounded_send(());
                        }
                        Ok(None) => {
                            warn!("the host daemon closed its watch stream; reconnecting");
                            break;
                        }
                        Err(e) => {
                            warn!(
                                "lost the host daemon's watch stream ({}); reconnecting",
                                e.message()
                            );
                            break;
                        }
                    }
                }
                // Report the outage (reconciles mark states Unknown).
                let _ = trigger.unbounded_send(());
            }
            Err(e) => {
                if connected_before {
                    warn!("{e}; retrying");
                    connected_before = false;
                }
            }
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// Follow this node's ClusterBpfApplicationStates (bpfman-operator's): each
/// change re-reconciles, so a plugin naming an application is loaded once
/// bpfman loaded it and re-pointed when bpfman reloads it (a new
/// `programId`). Without bpfman-operator (its CRD not served) the watch
/// retries with backoff and says so once.
async fn watch_bpfman(
    states: Api<kube::api::DynamicObject>,
    node: String,
    trigger: futures::channel::mpsc::UnboundedSender<()>,
) {
    let cfg = watcher::Config::default().labels(&crate::bpfman::node_selector(&node));
    let mut stream = watcher(states, cfg).default_backoff().boxed();
    let mut warned = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone) => {
                let _ = trigger.unbounded_send(());
                warned = false;
            }
            Ok(_) => {}
            Err(e) if !warned => {
                debug!(
                    "cannot watch bpfman-operator's ClusterBpfApplicationStates (needed only for clusterBpfApplication; is bpfman-operator installed?), retrying: {e}"
                );
                warned = true;
            }
            Err(e) => debug!("watching ClusterBpfApplicationStates: {e}"),
        }
    }
}

fn error_policy(_plugin: Arc<EbpfPlugin>, e: &Error, _ctx: Arc<Ctx>) -> Action {
    match e {
        Error::NodeUnknown(_) => Action::requeue(Duration::from_millis(500)),
        _ => {
            warn!("{e}");
            Action::requeue(Duration::from_secs(2))
        }
    }
}

/// Why a resource cannot be run on a node, before asking the host.
pub fn check_resource(plugin: &EbpfPlugin) -> Result<(), String> {
    let name = plugin.name_any();
    let spec = &plugin.spec.plugin;
    let mut problems = Vec::new();
    if spec.name != name {
        problems.push(format!(
            "spec.plugin.name {:?} must equal metadata.name {name:?}",
            spec.name
        ));
    }
    if let Err(e) = spec.validate() {
        problems.push(e.to_string());
    }
    for (field, path) in spec.relative_paths() {
        problems.push(format!(
            "spec.plugin.{field} {path:?} must be an oci:// reference or an absolute path on the node"
        ));
    }
    if let Err(e) = kube::core::Selector::try_from(plugin.spec.node_selector.clone()) {
        problems.push(format!("spec.nodeSelector: {}", e.0));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// Whether the plugin's selector matches these node labels (an invalid
/// selector matches nothing).
pub fn selects(plugin: &EbpfPlugin, labels: &BTreeMap<String, String>) -> bool {
    use kube::core::SelectorExt;
    kube::core::Selector::try_from(plugin.spec.node_selector.clone())
        .is_ok_and(|s| s.matches(labels))
}

fn is_ours(s: &PluginStatus) -> bool {
    s.annotations
        .get(host_annotations::MANAGED_BY)
        .map(String::as_str)
        == Some(host_annotations::MANAGER)
}

async fn reconcile(plugin: Arc<EbpfPlugin>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let name = plugin.name_any();
    let labels = ctx
        .labels
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .ok_or_else(|| Error::NodeUnknown(ctx.node.clone()))?;
    let deleting = plugin.meta().deletion_timestamp.is_some();
    let wanted = !deleting && selects(&plugin, &labels);
    let sname = state_name(&name, &ctx.node);
    let state = ctx.states.get_opt(&sname).await?;
    let generation = plugin.meta().generation;

    let host = match ctx.host.get(&name).await {
        Ok(h) => h,
        Err(e) => {
            if let Some(st) = &state
                && wanted
            {
                let prev = st.status.clone().unwrap_or_default();
                let status = unavailable_status(e.to_string(), &prev, generation);
                write_status(&ctx.states, st, &status).await?;
            }
            return Err(e.into());
        }
    };

    if !wanted {
        if let Some(h) = &host
            && is_ours(h)
        {
            info!(plugin = %name, reason = if deleting { "deleted" } else { "node no longer selected" }, "unloading the plugin from the host");
            ctx.host.unload(&name).await?;
        }
        if let Some(st) = state {
            remove_state(&ctx.states, &st).await?;
        }
        ctx.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name);
        return Ok(Action::await_change());
    }

    // The state object exists (with our finalizer) before anything is
    // loaded, so a deletion can never miss this node.
    let state = match state {
        Some(st) if st.meta().deletion_timestamp.is_some() => {
            // Someone deleted it while the plugin still wants this node:
            // let it go and create it again.
            remove_state(&ctx.states, &st).await?;
            return Ok(Action::requeue(Duration::from_millis(500)));
        }
        Some(st) if !owned_by(&st, &plugin) => {
            // Left by an earlier resource of the same name.
            remove_state(&ctx.states, &st).await?;
            return Ok(Action::requeue(Duration::from_millis(500)));
        }
        Some(st) => st,
        None => create_state(&ctx.states, &plugin, &sname, &ctx.node).await?,
    };
    let prev = state.status.clone().unwrap_or_default();

    if !has_finalizer(plugin.as_ref(), PLUGIN_FINALIZER) {
        // The cluster controller adds it; loading before it would let a
        // deletion finish without this node unloading.
        let status = node_status(
            &NodeReport {
                host: None,
                desired_hash: "",
                error: None,
                generation,
            },
            &prev,
        );
        write_status(&ctx.states, &state, &status).await?;
        debug!(plugin = %name, "waiting for the cluster controller's finalizer");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    let hash = spec_hash(&plugin.spec.plugin);
    let uid = plugin.uid().unwrap_or_default();
    let mut annotations: HashMap<String, String> = host_annotations_for(&uid, generation, &hash)
        .into_iter()
        .collect();
    // A ClusterBpfApplication's program: the host gets the spec with its
    // pins, once bpfman-operator loaded it on this node (the spec hash stays
    // the resource's; the program id is an annotation of its own, so a
    // reload under a new id is an update of the pins alone, which the host
    // applies under the running instance).
    let mut waiting_for_bpfman = None;
    let resolved_spec;
    let spec = match &plugin.spec.plugin.cluster_bpf_application {
        Some(app) => match crate::bpfman::resolve(&ctx.bpfman_states, &ctx.node, app).await? {
            crate::bpfman::Resolved::Loaded { program_id } => {
                annotations.insert(
                    host_annotations::BPFMAN_PROGRAM_ID.into(),
                    program_id.to_string(),
                );
                resolved_spec = crate::bpfman::pinned(&plugin.spec.plugin, program_id);
                &resolved_spec
            }
            crate::bpfman::Resolved::Waiting(message) => {
                waiting_for_bpfman = Some(message);
                &plugin.spec.plugin
            }
        },
        None => &plugin.spec.plugin,
    };

    let mut error: Option<(&str, String)> = None;
    let mut current = host;
    let mut retry = false;
    let backing_off = {
        let failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures
            .get(&name)
            .filter(|f| f.hash == hash)
            .and_then(|f| f.retry_at.checked_duration_since(Instant::now()))
    };
    match (&current, check_resource(&plugin)) {
        (Some(h), _) if !is_ours(h) => {
            error = Some((
                "NameConflict",
                format!(
                    "a plugin named {name:?} was loaded on this node by someone else (not by the operator); \
                     unload it there (`conductor unload {name}`) to let the operator run this resource"
                ),
            ));
        }
        (_, Err(problem)) => error = Some(("InvalidSpec", problem)),
        (_, Ok(())) if waiting_for_bpfman.is_some() => {
            // Loaded already: it keeps running over the pins it has (the
            // status says what bpfman-operator reports).
            debug!(plugin = %name, "waiting for bpfman-operator");
            error = waiting_for_bpfman
                .take()
                .map(|m| (crate::status::WAITING_FOR_BPFMAN, m));
        }
        (None, Ok(())) if backing_off.is_some() => {
            // Refused before: the status already says why.
            return Ok(Action::requeue(backing_off.unwrap_or_default()));
        }
        (None, Ok(())) => {
            info!(plugin = %name, generation = ?generation, "loading the plugin on the host");
            match ctx.host.load(spec, annotations).await {
                Ok(s) => current = s,
                Err(HostError::Rejected {
                    code: tonic::Code::AlreadyExists,
                    message,
                }) => {
                    debug!(plugin = %name, "already loaded meanwhile: {message}");
                    return Ok(Action::requeue(Duration::from_millis(200)));
                }
                Err(HostError::Rejected { message, .. }) => {
                    warn!(plugin = %name, "load failed: {message}");
                    error = Some(("LoadFailed", message));
                    retry = true;
                }
                Err(e) => return Err(e.into()),
            }
        }
        (Some(h), Ok(())) => {
            let ann = |k: &str| h.annotations.get(k).map(String::as_str);
            let up_to_date = ann(host_annotations::SPEC_HASH) == Some(hash.as_str())
                && ann(host_annotations::UID) == Some(uid.as_str())
                && ann(host_annotations::BPFMAN_PROGRAM_ID)
                    == annotations
                        .get(host_annotations::BPFMAN_PROGRAM_ID)
                        .map(String::as_str);
            if !up_to_date && let Some(wait) = backing_off {
                return Ok(Action::requeue(wait));
            } else if !up_to_date {
                info!(plugin = %name, generation = ?generation, "updating the plugin on the host");
                match ctx.host.update(spec, annotations).await {
                    Ok(s) => current = s,
                    Err(HostError::Rejected { message, .. }) => {
                        warn!(plugin = %name, "update failed, the previous version keeps running: {message}");
                        error = Some(("UpdateFailed", message));
                        retry = true;
                    }
                    Err(e) => return Err(e.into()),
                }
            } else if ann(host_annotations::GENERATION)
                != Some(
                    generation
                        .map(|g| g.to_string())
                        .unwrap_or_default()
                        .as_str(),
                )
            {
                // Only the selector changed: same spec, nothing to do on the
                // host; the state reports the generation it now satisfies.
                let mut h2 = h.clone();
                h2.annotations.insert(
                    host_annotations::GENERATION.into(),
                    generation.map(|g| g.to_string()).unwrap_or_default(),
                );
                current = Some(h2);
            }
        }
    }

    let report = NodeReport {
        host: current.as_ref().filter(|h| is_ours(h)),
        desired_hash: &hash,
        error,
        generation,
    };
    let status = node_status(&report, &prev);
    write_status(&ctx.states, &state, &status).await?;

    let mut failures = ctx.failures.lock().unwrap_or_else(|p| p.into_inner());
    if retry {
        let count = failures
            .get(&name)
            .filter(|f| f.hash == hash)
            .map_or(1, |f| f.count + 1);
        let delay = retry_delay(count);
        failures.insert(
            name.clone(),
            Failure {
                hash: hash.clone(),
                count,
                retry_at: Instant::now() + delay,
            },
        );
        return Ok(Action::requeue(delay));
    }
    failures.remove(&name);
    let settled = status.phase == crate::crd::NodePhase::Running && report.error.is_none();
    Ok(Action::requeue(if settled {
        ctx.resync
    } else {
        ctx.resync.min(Duration::from_secs(30))
    }))
}

/// 2 s after the first refusal, doubling up to 256 s.
pub fn retry_delay(failures: u32) -> Duration {
    Duration::from_secs(1u64 << failures.clamp(1, 8))
}

fn owned_by(st: &EbpfPluginNodeState, plugin: &EbpfPlugin) -> bool {
    let uid = plugin.uid();
    st.owner_references()
        .iter()
        .any(|o| Some(&o.uid) == uid.as_ref())
}

async fn create_state(
    states: &Api<EbpfPluginNodeState>,
    plugin: &EbpfPlugin,
    name: &str,
    node: &str,
) -> Result<EbpfPluginNodeState, Error> {
    let plugin_name = plugin.name_any();
    let mut labels = BTreeMap::from([(PLUGIN_LABEL.to_string(), plugin_name.clone())]);
    if node.len() <= 63 {
        labels.insert(NODE_LABEL.to_string(), node.to_string());
    }
    let obj = EbpfPluginNodeState {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(labels),
            finalizers: Some(vec![NODE_FINALIZER.to_string()]),
            owner_references: plugin.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: EbpfPluginNodeStateSpec {
            plugin_name,
            node_name: node.to_string(),
        },
        status: None,
    };
    match states.create(&PostParams::default(), &obj).await {
        Ok(o) => Ok(o),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(states.get(name).await?),
        Err(e) => Err(e.into()),
    }
}

/// Write the status unless it is unchanged (so a resync costs no write).
async fn write_status(
    states: &Api<EbpfPluginNodeState>,
    st: &EbpfPluginNodeState,
    status: &EbpfPluginNodeStateStatus,
) -> Result<(), Error> {
    if st
        .status
        .as_ref()
        .is_some_and(|prev| same_node_status(prev, status))
    {
        return Ok(());
    }
    states
        .patch_status(
            &st.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
    Ok(())
}

/// Remove a node state: drop our finalizer (conflict-safe: the patch carries
/// the resourceVersion read) and delete it.
pub(crate) async fn remove_state(
    states: &Api<EbpfPluginNodeState>,
    st: &EbpfPluginNodeState,
) -> Result<(), kube::Error> {
    let name = st.name_any();
    if has_finalizer(st, NODE_FINALIZER) {
        let rest: Vec<&String> = st
            .finalizers()
            .iter()
            .filter(|f| *f != NODE_FINALIZER)
            .collect();
        let patch =
            json!({ "metadata": { "finalizers": rest, "resourceVersion": st.resource_version() } });
        match states
            .patch(&name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    match states.delete(&name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Find what no reconcile will visit: plugins the operator loaded on this
/// host whose resource is gone (its finalizer removed by hand, say) and
/// state objects of this node whose plugin is gone. The resources are
/// listed fresh from the API server each round (not from a cache), so a
/// stale view can never unload a plugin that still has its resource.
async fn sweep(ctx: Arc<Ctx>, plugins: Api<EbpfPlugin>, every: Duration) {
    debug!(every = ?every, "sweeping for plugins and node states without a resource");
    loop {
        tokio::time::sleep(every).await;
        let live: HashMap<String, String> = match plugins.list(&ListParams::default()).await {
            Ok(list) => list
                .items
                .iter()
                .map(|p| (p.name_any(), p.uid().unwrap_or_default()))
                .collect(),
            Err(e) => {
                debug!("sweep: listing EbpfPlugins: {e}");
                continue;
            }
        };
        match ctx.host.list().await {
            Ok(list) => {
                for h in list.iter().filter(|h| is_ours(h)) {
                    if !live.contains_key(&h.name) {
                        info!(plugin = %h.name, "unloading the plugin from the host: its EbpfPlugin no longer exists");
                        if let Err(e) = ctx.host.unload(&h.name).await {
                            warn!(plugin = %h.name, "unload failed: {e}");
                        }
                    }
                }
            }
            Err(e) => debug!("sweep: {e}"),
        }
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", ctx.node));
        match ctx.states.list(&lp).await {
            Ok(list) => {
                for st in list.items {
                    let owner = live.get(&st.spec.plugin_name);
                    let orphan = owner
                        .is_none_or(|uid| !st.owner_references().iter().any(|o| &o.uid == uid));
                    if orphan {
                        info!(state = %st.name_any(), "removing a node state whose EbpfPlugin is gone");
                        if let Err(e) = remove_state(&ctx.states, &st).await {
                            warn!("removing node state {}: {e}", st.name_any());
                        }
                    }
                }
            }
            Err(e) => debug!("sweep: listing node states: {e}"),
        }
        debug!("sweep done");
    }
}
