//! `conductor`: the eBPFConductor node host.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use conductor_host::client::{self, Client, ClientError, Exit, Output};
use conductor_host::daemon::{self, DaemonConfig, wait_for_signal};
use conductor_host::manager::Manager;
use conductor_host::metrics::Metrics;
use conductor_host::oci::{self, RegistryOptions};
use conductor_host::otlp::{Exporter, OtlpConfig};
use conductor_host::runtime::Runtime;
use conductor_host::{bpf, server};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "conductor",
    version,
    about = "Runs sandboxed wasm plugins on live eBPF events"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CONDUCTOR_LOG_FORMAT")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the plugins of a spec file in the foreground until Ctrl-C.
    ///
    /// The file holds one or more plugin specs (YAML documents separated by
    /// `---`); relative paths in it are resolved against its directory.
    Run {
        /// The plugin spec file.
        spec: PathBuf,
        /// Where to serve /metrics (OpenMetrics) and /healthz.
        #[arg(long, default_value = "127.0.0.1:9464", env = "CONDUCTOR_METRICS_ADDR")]
        metrics_addr: SocketAddr,
        /// Where compiled components are cached [default: $XDG_CACHE_HOME/conductor or ~/.cache/conductor].
        #[arg(long, env = "CONDUCTOR_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        /// Compile components on every start instead of caching them
        /// (pulled artifacts are still kept in the cache directory).
        #[arg(long)]
        no_cache: bool,
        #[command(flatten)]
        otlp: OtlpArgs,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Run the node daemon: serve the conductor.v1 API on a Unix socket and
    /// keep the plugins it is asked to load running, across restarts.
    Serve {
        /// The Unix socket to serve on.
        #[arg(long, default_value = conductor_api::v1::DEFAULT_SOCKET, env = "CONDUCTOR_SOCKET")]
        socket: PathBuf,
        /// Where the desired state (the loaded plugins) is kept.
        #[arg(
            long,
            default_value = "/var/lib/conductor",
            env = "CONDUCTOR_STATE_DIR"
        )]
        state_dir: PathBuf,
        /// Where to serve /metrics, /healthz and /readyz.
        #[arg(long, default_value = "127.0.0.1:9464", env = "CONDUCTOR_METRICS_ADDR")]
        metrics_addr: SocketAddr,
        /// Group (name or gid) of the socket file, mode 0660 [default: the daemon's group].
        #[arg(long, env = "CONDUCTOR_SOCKET_GROUP")]
        socket_group: Option<String>,
        /// Also allow clients running as this uid (root always may); repeatable.
        #[arg(long = "allow-uid", value_delimiter = ',')]
        allow_uids: Vec<u32>,
        /// Allow clients in this group (name or gid); repeatable. [default: the socket's group]
        #[arg(long = "allow-gid", value_delimiter = ',')]
        allow_gids: Vec<String>,
        /// Where compiled components and pulled artifacts are cached [default: $XDG_CACHE_HOME/conductor or ~/.cache/conductor].
        #[arg(long, env = "CONDUCTOR_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        /// Compile components on every start instead of caching them.
        #[arg(long)]
        no_cache: bool,
        /// Plugins compiling and attaching at the same time; more wait as Pending.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
        max_parallel_loads: u64,
        /// Log lines kept per plugin for `conductor logs`.
        #[arg(long, default_value_t = conductor_host::logs::DEFAULT_LINES as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        log_lines: u64,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Load the plugins of a spec file into the daemon (all or nothing, each).
    ///
    /// Relative paths in the file are resolved against its directory.
    Load {
        spec: PathBuf,
        /// Annotation KEY=VALUE kept with the plugin; repeatable.
        #[arg(long = "annotation", short = 'a')]
        annotations: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Replace running plugins by the versions of a spec file, without
    /// losing events when only the component or config changed.
    Update {
        spec: PathBuf,
        /// Annotation KEY=VALUE; replaces the plugin's annotations if given.
        #[arg(long = "annotation", short = 'a')]
        annotations: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stop plugins and detach their programs.
    Unload {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The daemon's plugins and their state.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// One plugin's state, spec and annotations.
    Get {
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// A plugin's recent log lines (its log calls, stdout and stderr, and
    /// what the host said about it).
    Logs {
        name: String,
        /// Keep printing new lines until interrupted.
        #[arg(long, short)]
        follow: bool,
        /// Only the last N lines kept [default: all].
        #[arg(long, default_value_t = 0)]
        tail: u32,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print plugin state changes as they happen (the current state first).
    Watch {
        /// Only this plugin.
        name: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Push a plugin component to an OCI registry (CNCF wasm artifact format).
    Push {
        /// The component file (`.wasm`).
        file: PathBuf,
        /// Where to push: `oci://registry/repository:tag` (`oci://` optional).
        reference: String,
        /// Annotation org.opencontainers.image.title [default: the file name].
        #[arg(long)]
        title: Option<String>,
        /// Annotation org.opencontainers.image.version.
        #[arg(long)]
        version: Option<String>,
        /// Annotation org.opencontainers.image.source (e.g. the repository URL).
        #[arg(long)]
        source: Option<String>,
        /// Annotation org.opencontainers.image.description.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Pull a plugin component (or, with --bytecode, a bpfman bytecode image)
    /// into the local cache, re-resolving its tag.
    Pull {
        /// `oci://registry/repository:tag` or `...@sha256:<digest>` (`oci://` optional).
        reference: String,
        /// The reference is a bpfman bytecode image, not a component.
        #[arg(long)]
        bytecode: bool,
        /// Also copy the artifact (the component, or the extracted BPF object) here.
        #[arg(long, short)]
        output: Option<PathBuf>,
        /// The cache directory [default: $XDG_CACHE_HOME/conductor or ~/.cache/conductor].
        #[arg(long, env = "CONDUCTOR_CACHE_DIR")]
        cache_dir: Option<PathBuf>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// List or prune pulled artifacts.
    Cache {
        #[command(subcommand)]
        action: CacheAction,
        /// The cache directory [default: $XDG_CACHE_HOME/conductor or ~/.cache/conductor].
        #[arg(long, env = "CONDUCTOR_CACHE_DIR", global = true)]
        cache_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CacheAction {
    /// One line per cached reference: reference, kind, layer digest, size.
    List,
    /// Remove blobs no cached reference uses and leftovers of interrupted pulls.
    Prune {
        /// Remove every pulled artifact and every compiled component.
        #[arg(long)]
        all: bool,
    },
}

/// How a client command reaches the daemon and prints.
#[derive(clap::Args)]
struct ClientArgs {
    /// The daemon's socket.
    #[arg(long, default_value = conductor_api::v1::DEFAULT_SOCKET, env = "CONDUCTOR_SOCKET")]
    socket: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    output: Output,
}

/// How to reach OCI registries.
#[derive(clap::Args)]
struct RegistryArgs {
    /// A registry (`host:port`) that may be reached over plain HTTP; repeatable.
    /// Loopback registries always may.
    #[arg(
        long = "insecure-registry",
        env = "CONDUCTOR_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    insecure: Vec<String>,
    /// Registry user name [default: from docker's config.json].
    #[arg(long, env = "CONDUCTOR_REGISTRY_USERNAME")]
    username: Option<String>,
    /// Registry password or token (prefer the environment variable).
    #[arg(long, env = "CONDUCTOR_REGISTRY_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Seconds to wait for a connection to a registry.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    registry_connect_timeout: u64,
    /// Seconds one pull or push of a reference may take in all.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    registry_timeout: u64,
}

impl RegistryArgs {
    fn options(self) -> RegistryOptions {
        use std::io::IsTerminal;
        RegistryOptions {
            insecure: self.insecure,
            username: self.username,
            password: self.password,
            connect_timeout: std::time::Duration::from_secs(self.registry_connect_timeout),
            timeout: std::time::Duration::from_secs(self.registry_timeout),
            progress: std::io::stderr().is_terminal(),
        }
    }
}

/// OTLP push; off unless an endpoint is set. Each flag defaults to its
/// standard OpenTelemetry environment variable.
#[derive(clap::Args)]
struct OtlpArgs {
    /// Push metrics to this OTLP endpoint (gRPC: http://host:4317; HTTP: http://host:4318, to which /v1/metrics is added).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Full URL for metrics, used as is (overrides --otlp-endpoint).
    #[arg(long, env = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")]
    otlp_metrics_endpoint: Option<String>,
    /// grpc or http/protobuf.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        default_value = "http/protobuf"
    )]
    otlp_protocol: conductor_host::otlp::Protocol,
    /// Extra request headers, name=value (repeat, or comma-separate).
    #[arg(
        long = "otlp-header",
        env = "OTEL_EXPORTER_OTLP_HEADERS",
        value_delimiter = ','
    )]
    otlp_headers: Vec<String>,
    /// Export interval in milliseconds.
    #[arg(long, env = "OTEL_METRIC_EXPORT_INTERVAL", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    otlp_interval_ms: u64,
    /// Export timeout in milliseconds.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_TIMEOUT", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    otlp_timeout_ms: u64,
    /// cumulative or delta (counters and histograms).
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
        default_value = "cumulative"
    )]
    otlp_temporality: conductor_host::otlp::Temporality,
    /// Resource attributes, key=value (repeat, or comma-separate), e.g. k8s.node.name=$(NODE_NAME).
    #[arg(
        long = "resource-attr",
        env = "OTEL_RESOURCE_ATTRIBUTES",
        value_delimiter = ','
    )]
    resource_attrs: Vec<String>,
    /// service.name of the resource [default: conductor].
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    service_name: Option<String>,
}

impl OtlpArgs {
    fn config(self) -> anyhow::Result<Option<OtlpConfig>> {
        use conductor_host::otlp::{OtlpError, Protocol, parse_pairs};
        let endpoint = match (self.otlp_metrics_endpoint, self.otlp_endpoint) {
            (Some(url), _) => url,
            (None, Some(base)) if self.otlp_protocol == Protocol::HttpProtobuf => {
                format!("{}/v1/metrics", base.trim_end_matches('/'))
            }
            (None, Some(base)) => base,
            (None, None) => return Ok(None),
        };
        Ok(Some(OtlpConfig {
            endpoint,
            protocol: self.otlp_protocol,
            headers: parse_pairs(&self.otlp_headers, OtlpError::Header)?,
            interval: Duration::from_millis(self.otlp_interval_ms),
            timeout: Duration::from_millis(self.otlp_timeout_ms),
            temporality: self.otlp_temporality,
            resource: OtlpConfig::resource_with_defaults(
                self.service_name,
                parse_pairs(&self.resource_attrs, OtlpError::Attribute)?,
            ),
        }))
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Some(exit) = client_command(&cli.command) {
        return exit;
    }
    init_logging(cli.log_format, matches!(cli.command, Command::Serve { .. }));
    let result = match cli.command {
        Command::Serve {
            socket,
            state_dir,
            metrics_addr,
            socket_group,
            allow_uids,
            allow_gids,
            cache_dir,
            no_cache,
            max_parallel_loads,
            log_lines,
            registry,
        } => (|| {
            let socket_group = socket_group.as_deref().map(gid).transpose()?;
            let allow_gids = if allow_gids.is_empty() {
                None
            } else {
                Some(
                    allow_gids
                        .iter()
                        .map(|g| gid(g))
                        .collect::<anyhow::Result<_>>()?,
                )
            };
            daemon::serve(DaemonConfig {
                socket,
                state_dir,
                metrics_addr,
                socket_group,
                allow_uids,
                allow_gids,
                cache_dir: cache_dir.unwrap_or_else(default_cache_dir),
                no_cache,
                registry: registry.options(),
                max_parallel_loads: max_parallel_loads as usize,
                log_lines: log_lines as usize,
            })
        })(),
        Command::Load { .. }
        | Command::Update { .. }
        | Command::Unload { .. }
        | Command::List { .. }
        | Command::Get { .. }
        | Command::Logs { .. }
        | Command::Watch { .. } => unreachable!("client commands are handled above"),
        Command::Run {
            spec,
            metrics_addr,
            cache_dir,
            no_cache,
            otlp,
            registry,
        } => {
            let cache_dir = cache_dir.unwrap_or_else(default_cache_dir);
            otlp.config().and_then(|otlp| {
                run(
                    spec,
                    metrics_addr,
                    cache_dir,
                    no_cache,
                    registry.options(),
                    otlp,
                )
            })
        }
        Command::Push {
            file,
            reference,
            title,
            version,
            source,
            description,
            registry,
        } => {
            let notes = oci::PushAnnotations {
                title,
                version,
                source,
                description,
            };
            push(file, reference, notes, registry.options())
        }
        Command::Pull {
            reference,
            bytecode,
            output,
            cache_dir,
            registry,
        } => pull(
            reference,
            bytecode,
            output,
            cache_dir.unwrap_or_else(default_cache_dir),
            registry.options(),
        ),
        Command::Cache { action, cache_dir } => {
            cache(action, cache_dir.unwrap_or_else(default_cache_dir))
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A group name or number.
fn gid(group: &str) -> anyhow::Result<u32> {
    if let Ok(n) = group.parse() {
        return Ok(n);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => anyhow::bail!("there is no group {group:?} (give a group name or a gid)"),
        Err(e) => anyhow::bail!("cannot look up group {group:?}: {e}"),
    }
}

/// Run a client command, if it is one: the exit code says how it went.
fn client_command(command: &Command) -> Option<std::process::ExitCode> {
    let args = match command {
        Command::Load { client, .. }
        | Command::Update { client, .. }
        | Command::Unload { client, .. }
        | Command::List { client }
        | Command::Get { client, .. }
        | Command::Logs { client, .. }
        | Command::Watch { client, .. } => client,
        _ => return None,
    };
    let result: Result<(), ClientError> = (|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ClientError {
                exit: Exit::Error,
                message: format!("cannot start the async runtime: {e}"),
            })?;
        rt.block_on(async {
            let mut c = Client::connect(&args.socket, args.output).await?;
            match command {
                Command::Load {
                    spec, annotations, ..
                } => c.load(spec, &client::parse_annotations(annotations)?).await,
                Command::Update {
                    spec, annotations, ..
                } => {
                    c.update(spec, &client::parse_annotations(annotations)?)
                        .await
                }
                Command::Unload { names, .. } => c.unload(names).await,
                Command::List { .. } => c.list().await,
                Command::Get { name, .. } => c.get(name).await,
                Command::Logs {
                    name, follow, tail, ..
                } => {
                    tokio::select! {
                        r = c.logs(name, *follow, *tail) => r,
                        _ = wait_for_signal() => Ok(()),
                    }
                }
                Command::Watch { name, .. } => {
                    tokio::select! {
                        r = c.watch(name.as_deref()) => r,
                        _ = wait_for_signal() => Ok(()),
                    }
                }
                _ => Ok(()),
            }
        })
    })();
    Some(match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(e.exit as u8)
        }
    })
}

fn block_on<T>(fut: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(fut)
}

fn strip_scheme(reference: &str) -> &str {
    conductor_api::oci_reference(reference).unwrap_or(reference)
}

fn push(
    file: PathBuf,
    reference: String,
    notes: oci::PushAnnotations,
    opts: RegistryOptions,
) -> anyhow::Result<()> {
    let reference = strip_scheme(&reference);
    let pushed = block_on(async { Ok(oci::push(&file, reference, notes, &opts).await?) })?;
    println!("pushed oci://{reference}");
    println!("manifest {}", pushed.manifest_url);
    println!("layer {}", pushed.layer_digest);
    for (k, v) in &pushed.annotations {
        println!("annotation {k}={v}");
    }
    Ok(())
}

fn pull(
    reference: String,
    bytecode: bool,
    output: Option<PathBuf>,
    cache_dir: PathBuf,
    opts: RegistryOptions,
) -> anyhow::Result<()> {
    let reference = strip_scheme(&reference);
    let store = oci::Store::new(&cache_dir);
    let kind = if bytecode {
        oci::Kind::Bytecode
    } else {
        oci::Kind::Component
    };
    let pulled = block_on(async {
        Ok(oci::pull(
            &store,
            reference,
            kind,
            conductor_api::PullPolicy::Always,
            &opts,
        )
        .await?)
    })?;
    if let Some(out) = output {
        std::fs::copy(&pulled.path, &out)
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    println!("pulled oci://{}", pulled.record.reference);
    println!("manifest {}", pulled.record.manifest_digest);
    println!("layer {}", pulled.record.layer_digest);
    println!("size {}", pulled.record.size);
    println!("downloaded {}", !pulled.from_cache);
    println!("path {}", pulled.path.display());
    Ok(())
}

fn cache(action: CacheAction, cache_dir: PathBuf) -> anyhow::Result<()> {
    let store = oci::Store::new(&cache_dir);
    match action {
        CacheAction::List => {
            for r in store.list()? {
                let kind = match r.kind {
                    oci::Kind::Component => "component",
                    oci::Kind::Bytecode => "bytecode",
                };
                println!(
                    "oci://{}\t{kind}\t{}\t{}",
                    r.reference, r.layer_digest, r.size
                );
            }
        }
        CacheAction::Prune { all } => {
            // Digests of the components still referenced, read before pruning.
            let keep: Vec<String> = if all {
                Vec::new()
            } else {
                store
                    .list()?
                    .into_iter()
                    .filter_map(|r| r.layer_digest.strip_prefix("sha256:").map(str::to_owned))
                    .collect()
            };
            let mut removed = store.prune(all)?;
            // Compiled components live beside the OCI store, named
            // `<sha256 of the component>-<engine hash>.cwasm`: drop those whose
            // component is no longer cached (a local file's is recompiled on
            // its next start).
            if let Ok(entries) = std::fs::read_dir(&cache_dir) {
                for e in entries.flatten() {
                    let path = e.path();
                    if path.extension().is_none_or(|x| x != "cwasm") {
                        continue;
                    }
                    let name = e.file_name().to_string_lossy().into_owned();
                    let digest = name.split('-').next().unwrap_or_default();
                    if !keep.iter().any(|k| k == digest) {
                        std::fs::remove_file(&path)
                            .with_context(|| format!("cannot remove {}", path.display()))?;
                        removed.push(path);
                    }
                }
            }
            for p in &removed {
                println!("removed {}", p.display());
            }
            println!("{} removed", removed.len());
        }
    }
    Ok(())
}

fn run(
    spec_path: PathBuf,
    metrics_addr: SocketAddr,
    cache_dir: PathBuf,
    no_cache: bool,
    registry: RegistryOptions,
    otlp: Option<OtlpConfig>,
) -> anyhow::Result<()> {
    let specs = conductor_api::load_file(&spec_path)?;
    let store = oci::Store::new(&cache_dir);
    let cache_dir = (!no_cache).then_some(cache_dir);
    let base_dir = spec_path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                p.to_owned()
            }
        })
        .unwrap_or_else(|| PathBuf::from("."));

    bpf::prepare_host();
    let runtime = Runtime::new(cache_dir).context("cannot start the wasm runtime")?;
    let metrics = Arc::new(Metrics::new());
    let manager = Arc::new(Manager::new(runtime, metrics));

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let ready = Arc::new(AtomicBool::new(false));
    let result = rt.block_on(async {
        // Bind first: a taken port should fail before anything is attached.
        let listener = server::bind(metrics_addr).await?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(
            listener,
            manager.clone(),
            ready.clone(),
            async {
                let _ = stop_rx.await;
            },
        ));
        // The gRPC channel needs the runtime, hence built in here.
        let exporter = match otlp {
            Some(config) => {
                tracing::info!(endpoint = %config.endpoint, protocol = ?config.protocol, "pushing metrics over OTLP");
                Some(tokio::spawn(Exporter::new(config, manager.clone())?.run()))
            }
            None => None,
        };

        for spec in &specs {
            // OCI references become cached files before anything loads.
            let resolved = oci::resolve_spec(spec, &store, &registry)
                .await
                .with_context(|| format!("cannot load plugin {:?}", spec.name))?;
            let (manager, owned, base) = (manager.clone(), resolved, base_dir.clone());
            // A pulled component loads from a cache path: name its reference.
            let from = conductor_api::oci_reference(&spec.component)
                .map(|_| format!(" (component {})", spec.component))
                .unwrap_or_default();
            tokio::task::spawn_blocking(move || manager.load(&owned, &base))
                .await
                .context("loading plugin")?
                .with_context(|| format!("cannot load plugin {:?}{from}", spec.name))?;
        }
        ready.store(true, Ordering::Release);
        tracing::info!(plugins = specs.len(), "running; press Ctrl-C to stop");

        wait_for_signal().await;
        tracing::info!("stopping");
        let _ = stop_tx.send(());
        if let Some(e) = exporter {
            e.abort();
        }
        server.await.context("metrics server")??;
        anyhow::Ok(())
    });
    // Whatever happened above, detach everything before exiting.
    manager.shutdown();
    result
}

fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
        .join("conductor")
}

/// Logs to stderr, filtered by `CONDUCTOR_LOG`; the daemon also keeps each
/// plugin's recent lines for `conductor logs` (see `conductor_host::logs`).
fn init_logging(format: LogFormat, capture_plugin_logs: bool) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter =
        EnvFilter::try_from_env("CONDUCTOR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let console = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let capture = capture_plugin_logs.then(|| {
        conductor_host::logs::CaptureLayer.with_filter(conductor_host::logs::CaptureLayer::filter())
    });
    tracing_subscriber::registry()
        .with(console)
        .with(capture)
        .init();
}
