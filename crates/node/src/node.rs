//! The one start-up path of a node host, shared by `conductor run` and
//! `conductor serve`: they differ only in where plugin specs come from.
//!
//! [`Node::new`] prepares the kernel's filesystems and starts the wasm
//! runtime, the metrics registry and the plugin manager; [`Node::run`]
//! binds the metrics endpoint (so a taken port fails before anything is
//! attached), starts the workload cache, serves `/metrics`, pushes OTLP if
//! configured, then hands over to the spec source until SIGINT/SIGTERM.
//! Whatever happens, every plugin is detached before `run` returns.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use conductor_api::files::FileCaps;
use conductor_runtime::{Runtime, RuntimeOptions};
use tokio::sync::watch;

use crate::k8s::{K8sConfig, Workloads};
use crate::manager::Manager;
use crate::metrics::Metrics;
use crate::otlp::{Exporter, OtlpConfig};
use crate::server;

/// What a node host is configured with, whatever feeds it specs.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: SocketAddr,
    /// Compiled components are cached here (unless `no_cache`); pulled
    /// artifacts under `oci/`.
    pub cache_dir: PathBuf,
    pub no_cache: bool,
    /// Components of at least this many bytes without cached optimised
    /// code start on baseline code (see
    /// [`conductor_runtime::RuntimeOptions::baseline_above`]); `None`: off.
    pub baseline_above: Option<u64>,
    /// Push metrics over OTLP too.
    pub otlp: Option<OtlpConfig>,
    /// The workload cache behind the plugins' `k8s` lookups.
    pub k8s: K8sConfig,
    /// The largest component and bytecode files a load reads.
    pub file_caps: FileCaps,
    /// The capabilities kept after start-up (see [`crate::privileges`]).
    pub keep_capabilities: crate::privileges::Keep,
    /// How long the metrics endpoint waits for slow and idle clients.
    pub http_timeouts: server::HttpTimeouts,
}

/// A node host: the runtime, the registry and the manager, and the async
/// runtime they are served on.
pub struct Node {
    config: NodeConfig,
    manager: Arc<Manager>,
    rt: tokio::runtime::Runtime,
}

/// What a spec source gets from [`Node::run`].
#[derive(Clone)]
pub struct Services {
    pub manager: Arc<Manager>,
    /// Set it once every plugin had its first load attempt: `/readyz`
    /// answers 200 from then on.
    pub ready: Arc<AtomicBool>,
    /// Becomes `true` when the node is asked to stop; the source returns then.
    pub stop: watch::Receiver<bool>,
}

impl Services {
    /// Resolves once the node is asked to stop.
    pub async fn stopped(&self) {
        let mut stop = self.stop.clone();
        let _ = stop.wait_for(|s| *s).await;
    }

    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }
}

impl Node {
    pub fn new(config: NodeConfig) -> anyhow::Result<Self> {
        conductor_kernel::object::prepare_host();
        // Before any thread starts: arenas are made per thread.
        if let Some(arenas) = crate::memory::cap_malloc_arenas() {
            tracing::debug!(arenas, "capped malloc arenas");
        }
        // The kernel shows kallsyms addresses by the opener's credentials:
        // open it before CAP_SYSLOG goes, for the built-in ebpf_exporter.
        let kallsyms = std::fs::File::open("/proc/kallsyms").ok();
        // Before any thread starts: capabilities are per thread.
        if let Some(d) = crate::privileges::drop_capabilities(&config.keep_capabilities)? {
            tracing::info!(
                kept = %d.kept.join(","),
                dropped = d.dropped.len(),
                "dropped the capabilities plugins do not need"
            );
        }
        let runtime = Runtime::with_options(RuntimeOptions {
            cache_dir: (!config.no_cache).then(|| config.cache_dir.clone()),
            baseline_above: config.baseline_above,
        })
        .context("cannot start the wasm runtime")?;
        let metrics = Arc::new(Metrics::new());
        let manager = Arc::new(Manager::new(runtime, metrics));
        manager.set_file_caps(config.file_caps);
        if let Some(file) = kallsyms {
            manager.exporters().set_kallsyms_file(file);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        Ok(Self {
            config,
            manager,
            rt,
        })
    }

    pub fn manager(&self) -> &Arc<Manager> {
        &self.manager
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Serve metrics, start the workload cache and the OTLP exporter, then
    /// run `source` until it returns. `source` must return once
    /// [`Services::stop`] turns `true` (on SIGINT/SIGTERM); an error it
    /// returns earlier stops the node with that error.
    pub fn run<F, Fut>(self, source: F) -> anyhow::Result<()>
    where
        F: FnOnce(Services) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let Node {
            config,
            manager,
            rt,
        } = self;
        let result = rt.block_on(async {
            // Bind first: a taken port should fail before anything is attached.
            let listener = server::bind(config.metrics_addr).await?;
            // The workload cache before any plugin, so that their first
            // lookups already find this node's pods (it waits for the
            // first list, bounded by its sync timeout).
            let workloads = Workloads::start(config.k8s.clone(), manager.metrics().host.k8s.clone())
                .await?;
            manager.set_workloads(workloads);
            let ready = Arc::new(AtomicBool::new(false));
            let (stop_tx, stop_rx) = watch::channel(false);
            let http = {
                let mut stop = stop_rx.clone();
                tokio::spawn(server::serve(
                    listener,
                    manager.clone(),
                    ready.clone(),
                    config.http_timeouts,
                    async move {
                        let _ = stop.wait_for(|s| *s).await;
                    },
                ))
            };
            // The gRPC channel needs the runtime, hence built in here.
            let exporter = match config.otlp.clone() {
                Some(otlp) => {
                    tracing::info!(endpoint = %otlp.endpoint, protocol = ?otlp.protocol, "pushing metrics over OTLP");
                    Some(tokio::spawn(Exporter::new(otlp, manager.clone())?.run()))
                }
                None => None,
            };
            let signals = tokio::spawn({
                let stop_tx = stop_tx.clone();
                async move {
                    wait_for_signal().await;
                    tracing::info!("stopping");
                    let _ = stop_tx.send(true);
                }
            });
            let services = Services {
                manager: manager.clone(),
                ready,
                stop: stop_rx,
            };
            let outcome = source(services).await;
            let _ = stop_tx.send(true);
            signals.abort();
            if let Some(e) = exporter {
                e.abort();
            }
            let served = http.await.context("metrics server")?;
            outcome.and(served)
        });
        // Whatever happened above, detach everything before exiting.
        manager.shutdown();
        result
    }
}

/// Wait for SIGINT (Ctrl-C) or SIGTERM.
pub async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
