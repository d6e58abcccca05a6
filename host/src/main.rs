//! `conductor`: the eBPFConductor node host.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use conductor_host::manager::Manager;
use conductor_host::metrics::Metrics;
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
        /// Compile components on every start instead of caching them.
        #[arg(long)]
        no_cache: bool,
        #[command(flatten)]
        otlp: OtlpArgs,
    },
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
    init_logging(cli.log_format);
    match cli.command {
        Command::Run {
            spec,
            metrics_addr,
            cache_dir,
            no_cache,
            otlp,
        } => {
            let cache_dir = (!no_cache).then(|| cache_dir.unwrap_or_else(default_cache_dir));
            match otlp
                .config()
                .and_then(|otlp| run(spec, metrics_addr, cache_dir, otlp))
            {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("error: {e:#}");
                    std::process::ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(
    spec_path: PathBuf,
    metrics_addr: SocketAddr,
    cache_dir: Option<PathBuf>,
    otlp: Option<OtlpConfig>,
) -> anyhow::Result<()> {
    let specs = conductor_api::load_file(&spec_path)?;
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
    let result = rt.block_on(async {
        // Bind first: a taken port should fail before anything is attached.
        let listener = server::bind(metrics_addr).await?;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(server::serve(listener, manager.clone(), async {
            let _ = stop_rx.await;
        }));
        // The gRPC channel needs the runtime, hence built in here.
        let exporter = match otlp {
            Some(config) => {
                tracing::info!(endpoint = %config.endpoint, protocol = ?config.protocol, "pushing metrics over OTLP");
                Some(tokio::spawn(Exporter::new(config, manager.clone())?.run()))
            }
            None => None,
        };

        for spec in &specs {
            let (manager, owned, base) = (manager.clone(), spec.clone(), base_dir.clone());
            tokio::task::spawn_blocking(move || manager.load(&owned, &base))
                .await
                .context("loading plugin")?
                .with_context(|| format!("cannot load plugin {:?}", spec.name))?;
        }
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

async fn wait_for_signal() {
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

fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
        .join("conductor")
}

fn init_logging(format: LogFormat) {
    let filter =
        EnvFilter::try_from_env("CONDUCTOR_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
