//! `conductor serve`: the node daemon behind the `conductor.v1` gRPC API on
//! a Unix socket.
//!
//! - One daemon per socket and per state directory (`flock`ed lock files);
//!   a socket file left by a dead daemon is replaced.
//! - The socket is created under a temporary name, given mode 0660 and its
//!   group, then renamed into place, so it is never reachable with looser
//!   permissions. Every request's peer (SO_PEERCRED) is checked against an
//!   allow-list of uids and gids: others get `PERMISSION_DENIED`.
//! - The desired state is persisted after every successful change
//!   ([`crate::state`]) and restored at start.
//! - Loads run as tasks of their own: a client that goes away does not
//!   leave a half-done load behind, and a slow pull holds no lock.

pub mod state;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use anyhow::Context;
use conductor_api::v1::conductor_server::{Conductor, ConductorServer};
use conductor_api::v1::{self, watch_event};
use conductor_api::{PluginSpec, oci_reference};
use futures_util::Stream;
use tokio::sync::{Semaphore, broadcast};
use tonic::{Request, Response, Status};

use conductor_node::logs::{self, LogRecord};
use conductor_node::manager::{Change, Manager, ManagerError, Phase, PluginInfo, Ticket};
use conductor_node::node::{Node, NodeConfig, Services};
use conductor_oci::{self as oci, RegistryOptions};

use crate::state::{PersistedPlugin, StateDir};

/// Largest request accepted (a spec with its config and annotations is a
/// few KiB; this leaves room without letting a client make the daemon
/// buffer much).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Annotations of one plugin, keys and values together (as Kubernetes).
pub const MAX_ANNOTATION_BYTES: usize = 256 * 1024;
/// What all plugins' specs and annotations may take together, so that one
/// `List` answer always fits the 4 MiB a stock gRPC client accepts by
/// default (each load is checked; concurrent ones may pass it by one
/// request, [`MAX_REQUEST_BYTES`], which still fits).
pub const MAX_TOTAL_SPEC_BYTES: usize = 3 << 20;
/// Largest answer: the 4 MiB stock gRPC clients accept, which `List` stays
/// under (see [`MAX_TOTAL_SPEC_BYTES`]).
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// A plugin's status besides its spec and annotations: the phase, times,
/// digest and `lastError` (trimmed to [`MAX_LAST_ERROR_BYTES`]).
const STATUS_RESERVE_BYTES: usize = 6 * 1024;
/// `lastError` in a status is trimmed to this (the daemon's log has it whole).
pub const MAX_LAST_ERROR_BYTES: usize = 4 * 1024;

pub struct DaemonConfig {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    /// Group of the socket file (default: the daemon's own group).
    pub socket_group: Option<u32>,
    /// Peers allowed by uid (root is always allowed).
    pub allow_uids: Vec<u32>,
    /// Peers allowed by group; `None`: the socket's group.
    pub allow_gids: Option<Vec<u32>>,
    pub registry: RegistryOptions,
    /// Loads compiling and attaching at once; more wait as `Pending`.
    pub max_parallel_loads: usize,
    /// Log lines kept per plugin.
    pub log_lines: usize,
    /// How the API's connections are kept alive and when they are closed.
    pub connections: ConnectionTimeouts,
    /// Metrics, caches, OTLP and the workload cache: what `conductor run`
    /// is configured with too.
    pub node: NodeConfig,
}

/// HTTP/2 keep-alive and idle limits of the API's connections.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionTimeouts {
    /// Ping every client this often (on every connection, streams or not).
    pub keepalive: std::time::Duration,
    /// Disconnect a client whose ping answer is this late.
    pub keepalive_timeout: std::time::Duration,
    /// Close a connection with no byte in either direction for this long
    /// (longer than `keepalive`: a live client's ping answers count).
    pub idle: std::time::Duration,
}

impl Default for ConnectionTimeouts {
    fn default() -> Self {
        Self {
            keepalive: std::time::Duration::from_secs(30),
            keepalive_timeout: std::time::Duration::from_secs(20),
            idle: std::time::Duration::from_secs(120),
        }
    }
}

/// Run the daemon until SIGINT/SIGTERM.
pub fn serve(config: DaemonConfig) -> anyhow::Result<()> {
    logs::hub().set_capacity(config.log_lines);
    // Claim the state directory and the socket before touching the kernel.
    let state = StateDir::open(&config.state_dir)?;
    let _state_lock = lock(
        &state.path().join("lock"),
        "state directory",
        state.path(),
        "--state-dir",
    )?;
    let socket_lock_path = lock_path(&config.socket);
    if let Some(parent) = config.socket.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let _socket_lock = lock(&socket_lock_path, "socket", &config.socket, "--socket")?;
    let persisted = state.load()?;

    // The desired state stays on disk when the node stops: a restart
    // brings the plugins back.
    let node = Node::new(config.node.clone())?;
    node.run(|services| run(config, state, persisted, services))
}

async fn run(
    config: DaemonConfig,
    state: StateDir,
    persisted: Vec<PersistedPlugin>,
    services: Services,
) -> anyhow::Result<()> {
    let group = config
        .socket_group
        .unwrap_or_else(|| nix::unistd::getegid().as_raw());
    let listener = bind_socket(&config.socket, group)?;
    let ready = services.ready.clone();
    let manager = services.manager.clone();

    let api = Api {
        manager: manager.clone(),
        store: Arc::new(oci::Store::new(&config.node.cache_dir)),
        registry: Arc::new(config.registry),
        state: Arc::new(tokio::sync::Mutex::new(state)),
        load_slots: Arc::new(Semaphore::new(config.max_parallel_loads.max(1))),
        admission: Arc::new(tokio::sync::Mutex::new(())),
        node: Arc::default(),
        started_at: SystemTime::now(),
    };
    // Probe the kernel in the background; say at start what is missing.
    tokio::spawn({
        let api = api.clone();
        async move {
            let node = api.node_status().await;
            for c in node.capabilities.iter().filter(|c| c.kind == "feature") {
                if c.support() != v1::kernel_capability::Support::Yes {
                    tracing::info!(feature = %c.name, "kernel feature missing: {}", c.detail);
                }
            }
        }
    });

    // Bring the persisted plugins back, in parallel, while already serving.
    let restore = {
        let api = api.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            let total = persisted.len();
            let mut tasks = Vec::new();
            for p in persisted {
                let name = p.spec.name.clone();
                let ticket = match api
                    .manager
                    .reserve(&p.spec, p.annotations, p.generation, true)
                {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(plugin = %name, "cannot restore: {e}");
                        continue;
                    }
                };
                let api = api.clone();
                tasks.push(tokio::spawn(async move {
                    match api.bring_up(ticket.clone(), &p.spec, true).await {
                        Ok(_) => None,
                        Err(status) => {
                            tracing::error!(
                                plugin = %name,
                                retry_in_s = RESTORE_RETRY_FIRST.as_secs(),
                                "could not restore the plugin (listed as Failed until a retry works): {}",
                                status.message()
                            );
                            Some((ticket, p.spec))
                        }
                    }
                }));
            }
            let mut retries = Vec::new();
            for t in tasks {
                if let Ok(Some(retry)) = t.await {
                    retries.push(retry);
                }
            }
            // Ready once every plugin had its first attempt.
            ready.store(true, Ordering::Release);
            for (ticket, spec) in retries {
                tokio::spawn(api.clone().retry_restore(ticket, spec));
            }
            let failed = api
                .manager
                .list()
                .iter()
                .filter(|p| p.phase == Phase::Failed)
                .count();
            tracing::info!(
                plugins = total,
                failed,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "desired state restored"
            );
        })
    };

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<ConductorServer<Api>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("cannot build the reflection service")?;
    let allow = Arc::new(Allow {
        uids: std::iter::once(0).chain(config.allow_uids).collect(),
        gids: config.allow_gids.unwrap_or_else(|| vec![group]),
    });
    tracing::info!(
        socket = %config.socket.display(),
        group,
        allowed_uids = ?allow.uids,
        allowed_gids = ?allow.gids,
        "serving the node API"
    );
    let timeouts = config.connections;
    let incoming = futures_util::StreamExt::map(accept_with_backoff(listener), move |s| {
        s.map(|s| conductor_node::idle::IdleTimeout::new(s, timeouts.idle))
    });
    let grpc = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(timeouts.keepalive))
        .http2_keepalive_timeout(Some(timeouts.keepalive_timeout))
        .layer(tonic::service::InterceptorLayer::new(move |req| {
            allow.check(req)
        }))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            ConductorServer::new(api)
                .max_decoding_message_size(MAX_REQUEST_BYTES)
                .max_encoding_message_size(MAX_RESPONSE_BYTES),
        )
        .serve_with_incoming_shutdown(incoming, {
            let services = services.clone();
            async move { services.stopped().await }
        });
    let grpc = tokio::spawn(grpc);

    services.stopped().await;
    tracing::info!("detaching every plugin (they come back at the next start)");
    restore.abort();
    // Open Watch/Logs streams would hold the server up; give it a moment.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), grpc).await;
    let _ = std::fs::remove_file(&config.socket);
    Ok(())
}

/// How long accepting pauses when the process is out of descriptors.
const ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);
/// At most one log line about it this often.
const ACCEPT_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// The accepted connections. When `accept` fails because descriptors (or
/// memory) ran out, the pending connection stays in the backlog and the
/// listener stays readable, so retrying at once would spin a core: pause
/// instead, and say so (at most every [`ACCEPT_WARN_EVERY`]).
fn accept_with_backoff(
    listener: tokio::net::UnixListener,
) -> impl Stream<Item = std::io::Result<tokio::net::UnixStream>> {
    futures_util::stream::unfold(
        (listener, None::<std::time::Instant>),
        |(listener, mut warned)| async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => return Some((Ok(stream), (listener, warned))),
                    Err(e) => {
                        let exhausted = matches!(
                            e.raw_os_error(),
                            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                        );
                        if warned.is_none_or(|t| t.elapsed() >= ACCEPT_WARN_EVERY) {
                            warned = Some(std::time::Instant::now());
                            if exhausted {
                                tracing::error!(
                                    "cannot accept API connections: {e}; out of file descriptors \
                                     or memory, retrying every {} ms (raise the limit, e.g. \
                                     LimitNOFILE, or find what holds descriptors)",
                                    ACCEPT_BACKOFF.as_millis()
                                );
                            } else {
                                tracing::warn!("cannot accept an API connection: {e}");
                            }
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            }
        },
    )
}

/// Where the lock guarding `socket` lives: beside it.
fn lock_path(socket: &Path) -> PathBuf {
    let mut name = socket.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    socket.with_file_name(name)
}

/// Take an exclusive `flock` on `path` (kept for the life of the process)
/// and write our pid into it.
fn lock(
    path: &Path,
    what: &str,
    guarded: &Path,
    flag: &str,
) -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    use std::io::{Read, Seek, Write};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
        Ok(mut locked) => {
            locked.set_len(0)?;
            locked.rewind()?;
            writeln!(locked, "{}", std::process::id())?;
            Ok(locked)
        }
        Err((mut file, errno)) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let pid = pid.trim();
            if errno == nix::errno::Errno::EWOULDBLOCK {
                anyhow::bail!(
                    "another conductor daemon{} is already using the {what} {}; stop it first, or give this one another {flag}",
                    if pid.is_empty() {
                        String::new()
                    } else {
                        format!(" (pid {pid})")
                    },
                    guarded.display()
                )
            }
            anyhow::bail!("cannot lock {}: {errno}", path.display())
        }
    }
}

/// Create the socket with mode 0660 and group `group` before anyone can
/// reach it; a stale socket of a dead daemon (we hold the lock) is replaced.
fn bind_socket(path: &Path, group: u32) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        anyhow::ensure!(
            meta.file_type().is_socket(),
            "{} exists and is not a socket; remove it or choose another --socket",
            path.display()
        );
        tracing::info!(socket = %path.display(), "removing the stale socket of a daemon that is gone");
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let _ = std::fs::remove_file(&tmp);
    let listener = tokio::net::UnixListener::bind(&tmp)
        .with_context(|| format!("cannot listen on {}", tmp.display()))?;
    let setup = || -> anyhow::Result<()> {
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660))?;
        nix::unistd::chown(&tmp, None, Some(nix::unistd::Gid::from_raw(group)))
            .with_context(|| format!("cannot give the socket group {group}"))?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    };
    if let Err(e) = setup() {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("cannot set up the socket {}", path.display())));
    }
    Ok(listener)
}

/// Who may call the API.
struct Allow {
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl Allow {
    fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let cred = req
            .extensions()
            .get::<tonic::transport::server::UdsConnectInfo>()
            .and_then(|i| i.peer_cred);
        let Some(cred) = cred else {
            return Err(Status::permission_denied(
                "the peer's credentials (SO_PEERCRED) are unknown; connect over the daemon's Unix socket",
            ));
        };
        if self.uids.contains(&cred.uid()) || self.gids.contains(&cred.gid()) {
            return Ok(req);
        }
        // Supplementary groups of the peer process.
        if let Some(pid) = cred.pid()
            && supplementary_groups(pid)
                .iter()
                .any(|g| self.gids.contains(g))
        {
            return Ok(req);
        }
        tracing::warn!(
            uid = cred.uid(),
            gid = cred.gid(),
            pid = cred.pid(),
            "refused a client that is not on the allow-list"
        );
        Err(Status::permission_denied(format!(
            "uid {} (gid {}) may not use the conductor daemon: allowed are uids {:?} and groups {:?} \
             (see `conductor serve --allow-uid/--allow-gid/--socket-group`)",
            cred.uid(),
            cred.gid(),
            self.uids,
            self.gids
        )))
    }
}

/// Who sent a request, for the log of changes: `uid <uid> pid <pid>`.
fn peer<T>(req: &Request<T>) -> String {
    match req
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
        .and_then(|i| i.peer_cred)
    {
        Some(c) => match c.pid() {
            Some(pid) => format!("uid {} pid {pid}", c.uid()),
            None => format!("uid {}", c.uid()),
        },
        None => "unknown peer".to_owned(),
    }
}

fn supplementary_groups(pid: i32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Groups:").map(|g| {
                    g.split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                })
            })
        })
        .unwrap_or_default()
}

/// First retry of a persisted plugin that could not be restored; doubles
/// up to `RESTORE_RETRY_MAX`.
const RESTORE_RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(2);
const RESTORE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(300);

#[derive(Clone)]
struct Api {
    manager: Arc<Manager>,
    store: Arc<oci::Store>,
    registry: Arc<RegistryOptions>,
    state: Arc<tokio::sync::Mutex<StateDir>>,
    load_slots: Arc<Semaphore>,
    /// Held from the total-size check of a load to its reservation.
    admission: Arc<tokio::sync::Mutex<()>>,
    /// The `Node` answer: the kernel is probed once, at start.
    node: Arc<tokio::sync::OnceCell<v1::NodeResponse>>,
    started_at: SystemTime,
}

/// What a plugin may add to a `List` answer.
fn footprint(spec: &v1::PluginSpec, annotations: &BTreeMap<String, String>) -> usize {
    use prost::Message;
    spec.encoded_len()
        + annotations
            .iter()
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum::<usize>()
        + STATUS_RESERVE_BYTES
}

impl Api {
    async fn node_status(&self) -> &v1::NodeResponse {
        let started_at = self.started_at;
        self.node
            .get_or_init(|| async move {
                let mut node = tokio::task::spawn_blocking(conductor_node::features::node_status)
                    .await
                    .unwrap_or_else(|e| v1::NodeResponse {
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        kernel: format!("unknown: the kernel probe failed ({e})"),
                        ..Default::default()
                    });
                node.started_at = Some(timestamp(started_at));
                node
            })
            .await
    }

    /// Refuse a spec that would take the plugins' specs past
    /// [`MAX_TOTAL_SPEC_BYTES`] (`replacing`: the plugin it updates).
    fn check_total(
        &self,
        spec: &PluginSpec,
        annotations: &BTreeMap<String, String>,
        replacing: Option<&str>,
    ) -> Result<(), Status> {
        let others: usize = self
            .manager
            .list()
            .iter()
            .filter(|p| Some(p.name.as_str()) != replacing)
            .map(|p| footprint(&v1::PluginSpec::from(&p.spec), &p.annotations))
            .sum();
        let this = footprint(&v1::PluginSpec::from(spec), annotations);
        if others + this > MAX_TOTAL_SPEC_BYTES {
            return Err(Status::resource_exhausted(format!(
                "plugin {:?} takes {this} bytes of spec and annotations and the other plugins {others}: \
                 together more than the {MAX_TOTAL_SPEC_BYTES} bytes a host keeps (so that a List \
                 answer fits a client's 4 MiB); make configs smaller or unload plugins",
                spec.name
            )));
        }
        Ok(())
    }

    /// Pull, then load a reserved plugin (waiting for a load slot).
    /// `restoring`: from the persisted state, where a failure leaves the
    /// plugin listed as Failed; otherwise a failure forgets it.
    async fn bring_up(
        &self,
        ticket: Ticket,
        spec: &PluginSpec,
        restoring: bool,
    ) -> Result<PluginInfo, Status> {
        let fail = |status: Status| {
            if restoring {
                self.manager.fail(&ticket, status.message().to_owned());
            } else {
                self.manager.discard(&ticket);
            }
            status
        };
        let cancelled = || manager_status(ManagerError::Cancelled(spec.name.clone()));
        let mut unloaded = ticket.clone();
        let resolved = tokio::select! {
            r = self.resolve(spec, Some(&ticket)) => r.map_err(fail)?,
            _ = unloaded.cancelled() => return Err(cancelled()),
        };
        let permit = match self.load_slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                self.manager.set_phase(&ticket, Phase::Pending, None);
                tokio::select! {
                    p = self.load_slots.clone().acquire_owned() => {
                        p.map_err(|_| fail(Status::unavailable("the daemon is stopping")))?
                    }
                    _ = unloaded.cancelled() => return Err(cancelled()),
                }
            }
        };
        let manager = self.manager.clone();
        let t = ticket.clone();
        let result = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            manager.activate(&t, &resolved, Path::new("/"), true)
        })
        .await
        .map_err(|e| fail(Status::internal(format!("the load task failed: {e}"))))?;
        result.map_err(|e| fail(manager_status(e)))
    }

    /// Retry restoring a plugin with a backoff until it loads, or is
    /// unloaded or updated meanwhile (a file or registry may come back).
    async fn retry_restore(self, ticket: Ticket, spec: PluginSpec) {
        let mut delay = RESTORE_RETRY_FIRST;
        loop {
            tokio::time::sleep(delay).await;
            if !self.manager.retry(&ticket) {
                return;
            }
            delay = (delay * 2).min(RESTORE_RETRY_MAX);
            match self.bring_up(ticket.clone(), &spec, true).await {
                Ok(_) => {
                    tracing::info!(plugin = %spec.name, "restored on a retry");
                    return;
                }
                Err(status) => tracing::warn!(
                    plugin = %spec.name,
                    retry_in_s = delay.as_secs(),
                    "still cannot restore the plugin: {}",
                    status.message()
                ),
            }
        }
    }

    /// Pull the spec's OCI references into the cache (reported as `Pulling`
    /// for a plugin being loaded, the `ticket`'s).
    async fn resolve(
        &self,
        spec: &PluginSpec,
        ticket: Option<&Ticket>,
    ) -> Result<PluginSpec, Status> {
        let has_oci = oci_reference(&spec.component).is_some()
            || spec
                .bytecode
                .as_ref()
                .and_then(|b| b.image.as_deref())
                .is_some_and(|i| oci_reference(i).is_some());
        if !has_oci {
            return Ok(spec.clone());
        }
        if let Some(t) = ticket {
            self.manager.set_phase(t, Phase::Pulling, None);
        }
        oci::resolve_spec(spec, &self.store, &self.registry)
            .await
            .map_err(|e| Status::failed_precondition(format!("cannot pull: {e}")))
    }

    /// Write the desired state; serialised, each write takes the latest state.
    async fn persist(&self) -> Result<(), Status> {
        let state = self.state.lock().await;
        self.save(&state, None)
    }

    /// Write the desired state, leaving out `without` (a plugin about to be
    /// unloaded), under the state lock the caller holds.
    fn save(&self, state: &StateDir, without: Option<&str>) -> Result<(), Status> {
        let plugins = self
            .manager
            .desired()
            .into_iter()
            .filter(|d| Some(d.spec.name.as_str()) != without)
            .map(|d| PersistedPlugin {
                spec: d.spec,
                annotations: d.annotations,
                generation: d.generation,
            })
            .collect();
        tokio::task::block_in_place(|| state.save(plugins)).map_err(|e| {
            tracing::error!("cannot persist the desired state: {e}");
            Status::internal(format!("cannot persist the desired state: {e}"))
        })
    }
}

/// A wire spec, validated, with its annotations.
fn accept_spec(
    spec: Option<v1::PluginSpec>,
    annotations: &std::collections::HashMap<String, String>,
) -> Result<PluginSpec, Status> {
    let wire = spec.ok_or_else(|| Status::invalid_argument("the request has no spec"))?;
    let spec = PluginSpec::try_from(wire).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let relative: Vec<String> = spec
        .relative_paths()
        .into_iter()
        .map(|(field, path)| format!("{field} {path:?}"))
        .collect();
    if !relative.is_empty() {
        return Err(Status::invalid_argument(format!(
            "invalid spec for plugin {:?}: relative paths: {}; the daemon does not share the client's \
             working directory, so paths must be absolute (`conductor load` makes the paths of a \
             spec file absolute against the file's directory)",
            spec.name,
            relative.join(", ")
        )));
    }
    let size: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_ANNOTATION_BYTES {
        return Err(Status::invalid_argument(format!(
            "annotations take {size} bytes; at most {MAX_ANNOTATION_BYTES} are allowed"
        )));
    }
    if let Some(k) = annotations.keys().find(|k| k.is_empty()) {
        return Err(Status::invalid_argument(format!(
            "annotation key {k:?} is empty"
        )));
    }
    Ok(spec)
}

fn manager_status(e: ManagerError) -> Status {
    let msg = e.to_string();
    match e {
        ManagerError::Duplicate(_) => Status::already_exists(msg),
        ManagerError::NotFound(_) => Status::not_found(msg),
        ManagerError::Busy(_) | ManagerError::Cancelled(_) => Status::aborted(msg),
        ManagerError::Load(conductor_node::plugin::LoadError::Spec(_)) => {
            Status::invalid_argument(msg)
        }
        ManagerError::Load(_)
        | ManagerError::UpdateRefused { .. }
        | ManagerError::UpdateRolledBack { .. }
        | ManagerError::UpdateLost { .. } => Status::failed_precondition(msg),
    }
}

fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(t)
}

pub fn to_wire(info: &PluginInfo) -> v1::PluginStatus {
    v1::PluginStatus {
        name: info.name.clone(),
        phase: v1::Phase::from(info.phase) as i32,
        phase_since: Some(timestamp(info.phase_since)),
        loaded_at: info.loaded_at.map(timestamp),
        restarts: info.restarts,
        last_error: info
            .last_error
            .as_deref()
            .map(trim_error)
            .unwrap_or_default(),
        component_digest: if info.digest.is_empty() || info.digest.starts_with("sha256:") {
            info.digest.clone()
        } else {
            format!("sha256:{}", info.digest)
        },
        spec: Some(v1::PluginSpec::from(&info.spec)),
        generation: info.generation,
        next_retry: info.next_retry.map(timestamp),
        annotations: info
            .annotations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        signer: String::new(),
    }
}

/// The signature status of the OCI artifact `spec.component` names, as
/// recorded in the cache when it was pulled; empty for a local file.
fn signer_of(store: &oci::Store, spec: &PluginSpec) -> String {
    oci_reference(&spec.component)
        .and_then(|r| store.record(r))
        .and_then(|rec| rec.signature)
        .map(|s| s.summary())
        .unwrap_or_default()
}

impl Api {
    /// `to_wire` with the signer filled in.
    fn status(&self, info: &PluginInfo) -> v1::PluginStatus {
        v1::PluginStatus {
            signer: signer_of(&self.store, &info.spec),
            ..to_wire(info)
        }
    }
}

/// `error` cut to [`MAX_LAST_ERROR_BYTES`] at a character boundary.
fn trim_error(error: &str) -> String {
    if error.len() <= MAX_LAST_ERROR_BYTES {
        return error.to_owned();
    }
    let mut end = MAX_LAST_ERROR_BYTES - 40;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} … ({} bytes in all)", &error[..end], error.len())
}

fn log_line(r: &LogRecord) -> v1::LogLine {
    v1::LogLine {
        time: Some(timestamp(r.time)),
        level: r.level.as_str().to_ascii_lowercase(),
        message: r.message.clone(),
        fields: r
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Conductor for Api {
    async fn load(
        &self,
        request: Request<v1::LoadRequest>,
    ) -> Result<Response<v1::LoadResponse>, Status> {
        let by = peer(&request);
        let req = request.into_inner();
        let spec = accept_spec(req.spec, &req.annotations)?;
        let annotations: BTreeMap<_, _> = req.annotations.into_iter().collect();
        let ticket = {
            let _admission = self.admission.lock().await;
            self.check_total(&spec, &annotations, None)?;
            self.manager
                .reserve(&spec, annotations, 1, false)
                .map_err(manager_status)?
        };
        // A task of its own: a client that hangs up does not stop a load
        // half-way (it completes, or rolls back, and is persisted).
        let api = self.clone();
        let task = tokio::spawn(async move {
            let info = api.bring_up(ticket, &spec, false).await?;
            if let Err(status) = api.persist().await {
                // Not persisted means not loaded: roll back.
                let manager = api.manager.clone();
                let name = spec.name.clone();
                let _ = tokio::task::spawn_blocking(move || manager.unload(&name)).await;
                // Best effort: a write by another request may have listed it.
                let _ = api.persist().await;
                return Err(status);
            }
            tracing::info!(plugin = %spec.name, digest = %info.digest, by, "loaded");
            Ok(info)
        });
        let info = task
            .await
            .map_err(|e| Status::internal(format!("the load task failed: {e}")))??;
        Ok(Response::new(v1::LoadResponse {
            status: Some(self.status(&info)),
        }))
    }

    async fn unload(
        &self,
        request: Request<v1::UnloadRequest>,
    ) -> Result<Response<v1::UnloadResponse>, Status> {
        let by = peer(&request);
        let name = request.into_inner().name;
        let api = self.clone();
        // Persisted first, then detached, under the state lock: the answer,
        // the kernel and the state on disk agree whatever fails (a state
        // that cannot be written leaves the plugin running and listed).
        let task = tokio::spawn(async move {
            let state = api.state.lock().await;
            let on_disk = api.manager.desired().iter().any(|d| d.spec.name == name);
            if on_disk {
                api.save(&state, Some(&name)).map_err(|status| {
                    Status::new(
                        status.code(),
                        format!(
                            "{}; nothing changed: plugin {name:?} stays loaded (make the state directory writable, then retry)",
                            status.message()
                        ),
                    )
                })?;
            }
            let manager = api.manager.clone();
            let n = name.clone();
            let unloaded = tokio::task::spawn_blocking(move || manager.unload(&n))
                .await
                .map_err(|e| Status::internal(format!("the unload task failed: {e}")))
                .and_then(|r| r.map_err(manager_status));
            if let Err(status) = unloaded {
                if on_disk {
                    // Put it back on disk as it still runs (or whatever
                    // the desired state is now).
                    let _ = api.save(&state, None);
                }
                return Err(status);
            }
            tracing::info!(plugin = %name, by, "unloaded");
            Ok(())
        });
        task.await
            .map_err(|e| Status::internal(format!("the unload task failed: {e}")))??;
        Ok(Response::new(v1::UnloadResponse {}))
    }

    async fn list(
        &self,
        _request: Request<v1::ListRequest>,
    ) -> Result<Response<v1::ListResponse>, Status> {
        Ok(Response::new(v1::ListResponse {
            plugins: self.manager.list().iter().map(|i| self.status(i)).collect(),
        }))
    }

    async fn get(
        &self,
        request: Request<v1::GetRequest>,
    ) -> Result<Response<v1::GetResponse>, Status> {
        let name = request.into_inner().name;
        let info = self
            .manager
            .get(&name)
            .ok_or_else(|| manager_status(ManagerError::NotFound(name)))?;
        Ok(Response::new(v1::GetResponse {
            status: Some(self.status(&info)),
        }))
    }

    async fn update(
        &self,
        request: Request<v1::UpdateRequest>,
    ) -> Result<Response<v1::UpdateResponse>, Status> {
        let by = peer(&request);
        let req = request.into_inner();
        let spec = accept_spec(req.spec, &req.annotations)?;
        let annotations: BTreeMap<_, _> = req.annotations.into_iter().collect();
        if self.manager.get(&spec.name).is_none() {
            return Err(manager_status(ManagerError::NotFound(spec.name)));
        }
        self.check_total(&spec, &annotations, Some(&spec.name))?;
        let api = self.clone();
        let task = tokio::spawn(async move {
            let resolved = api.resolve(&spec, None).await?;
            let manager = api.manager.clone();
            let s = spec.clone();
            let (info, kind) =
                tokio::task::spawn_blocking(move || manager.update(&s, &resolved, annotations))
                    .await
                    .map_err(|e| Status::internal(format!("the update task failed: {e}")))?
                    .map_err(manager_status)?;
            tracing::info!(plugin = %spec.name, generation = info.generation, ?kind, by, "updated");
            api.persist().await?;
            Ok::<_, Status>(info)
        });
        let info = task
            .await
            .map_err(|e| Status::internal(format!("the update task failed: {e}")))??;
        Ok(Response::new(v1::UpdateResponse {
            status: Some(self.status(&info)),
        }))
    }

    type WatchStream = BoxStream<v1::WatchEvent>;

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let only = request.into_inner().name;
        let wanted = move |info: &PluginInfo| only.is_empty() || info.name == only;
        let (initial, rx) = self.manager.subscribe();
        let initial: Vec<_> = initial
            .into_iter()
            .filter(|i| wanted(i))
            .map(|i| event(watch_event::Kind::Initial, &i))
            .collect();
        let manager = self.manager.clone();
        // Plain state, no task: when the client goes away the stream is
        // dropped and with it the subscription.
        let changes = futures_util::stream::unfold(
            (rx, manager, Vec::<v1::WatchEvent>::new()),
            move |(mut rx, manager, mut queued)| {
                let wanted = wanted.clone();
                async move {
                    loop {
                        if let Some(e) = queued.pop() {
                            return Some((Ok(e), (rx, manager, queued)));
                        }
                        match rx.recv().await {
                            Ok(Change::Changed(i)) if wanted(&i) => {
                                return Some((
                                    Ok(event(watch_event::Kind::Changed, &i)),
                                    (rx, manager, queued),
                                ));
                            }
                            Ok(Change::Removed(i)) if wanted(&i) => {
                                return Some((
                                    Ok(event(watch_event::Kind::Removed, &i)),
                                    (rx, manager, queued),
                                ));
                            }
                            Ok(_) => {}
                            Err(broadcast::error::RecvError::Lagged(n)) => {
                                // Too slow a reader: resend the current state.
                                tracing::debug!(missed = n, "a watcher fell behind; resyncing it");
                                queued = manager
                                    .list()
                                    .iter()
                                    .filter(|i| wanted(i))
                                    .map(|i| event(watch_event::Kind::Changed, i))
                                    .rev()
                                    .collect();
                            }
                            Err(broadcast::error::RecvError::Closed) => return None,
                        }
                    }
                }
            },
        );
        let stream = futures_util::StreamExt::chain(
            futures_util::stream::iter(initial.into_iter().map(Ok)),
            changes,
        );
        Ok(Response::new(Box::pin(stream)))
    }

    async fn node(
        &self,
        _request: Request<v1::NodeRequest>,
    ) -> Result<Response<v1::NodeResponse>, Status> {
        Ok(Response::new(self.node_status().await.clone()))
    }

    type LogsStream = BoxStream<v1::LogLine>;

    async fn logs(
        &self,
        request: Request<v1::LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let req = request.into_inner();
        let (lines, rx) = logs::hub()
            .read(&req.name, req.tail as usize)
            .ok_or_else(|| manager_status(ManagerError::NotFound(req.name.clone())))?;
        let first = futures_util::stream::iter(lines.into_iter().map(|l| Ok(log_line(&l))));
        if !req.follow {
            return Ok(Response::new(Box::pin(first)));
        }
        let follow = futures_util::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(l) => Some((Ok(log_line(&l)), rx)),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let note = LogRecord {
                        time: SystemTime::now(),
                        level: tracing::Level::WARN,
                        message: format!("{n} lines were skipped: this reader fell behind"),
                        fields: BTreeMap::from([("source".into(), "conductor".into())]),
                    };
                    Some((Ok(log_line(&note)), rx))
                }
                // The plugin was unloaded.
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        Ok(Response::new(Box::pin(futures_util::StreamExt::chain(
            first, follow,
        ))))
    }
}

fn event(kind: watch_event::Kind, info: &PluginInfo) -> v1::WatchEvent {
    v1::WatchEvent {
        kind: kind as i32,
        status: Some(to_wire(info)),
    }
}
