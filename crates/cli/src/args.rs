//! Flags shared by several subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use conductor_api::files;
use conductor_client::Output;
use conductor_node::NodeConfig;
use conductor_node::otlp::OtlpConfig;
use conductor_oci::RegistryOptions;

/// What `run` and `serve` share: how the node host serves metrics, caches
/// components, reaches registries, pushes OTLP and learns about workloads.
#[derive(clap::Args)]
pub struct NodeArgs {
    /// Where to serve /metrics (OpenMetrics), /healthz and /readyz.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:9464",
        env = "CONDUCTOR_METRICS_ADDR"
    )]
    pub metrics_addr: SocketAddr,
    /// Where compiled components and pulled artifacts are cached [default: $XDG_CACHE_HOME/conductor or ~/.cache/conductor].
    #[arg(long, value_name = "DIR", env = "CONDUCTOR_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile components on every start instead of caching them
    /// (pulled artifacts are still kept in the cache directory).
    #[arg(long)]
    pub no_cache: bool,
    /// Largest component file a load reads, in bytes (only regular files
    /// are read).
    #[arg(long, value_name = "BYTES", default_value_t = files::DEFAULT_MAX_COMPONENT_BYTES)]
    pub max_component_bytes: u64,
    /// Largest BPF object file a load reads, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = files::DEFAULT_MAX_BYTECODE_BYTES)]
    pub max_bytecode_bytes: u64,
    #[command(flatten)]
    pub otlp: OtlpArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
    #[command(flatten)]
    pub k8s: K8sArgs,
}

impl NodeArgs {
    /// The node's configuration and the registry options.
    pub fn config(self) -> anyhow::Result<(NodeConfig, RegistryOptions)> {
        Ok((
            NodeConfig {
                metrics_addr: self.metrics_addr,
                cache_dir: self.cache_dir.unwrap_or_else(default_cache_dir),
                no_cache: self.no_cache,
                otlp: self.otlp.config()?,
                k8s: self.k8s.config(),
                file_caps: files::FileCaps {
                    component_bytes: self.max_component_bytes,
                    bytecode_bytes: self.max_bytecode_bytes,
                },
            },
            self.registry.options(),
        ))
    }
}

/// `$XDG_CACHE_HOME/conductor`, else `~/.cache/conductor`.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
        .join("conductor")
}

/// How a client command reaches the daemon and prints.
#[derive(clap::Args)]
pub struct ClientArgs {
    /// The daemon's socket.
    #[arg(long, value_name = "PATH", default_value = conductor_api::v1::DEFAULT_SOCKET, env = "CONDUCTOR_SOCKET")]
    pub socket: PathBuf,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Kubernetes metadata for the plugins' `k8s` lookups. Without a node name
/// (or without an API server configuration) the cache runs in local mode:
/// cgroup-based container identity only.
#[derive(clap::Args)]
pub struct K8sArgs {
    /// This node's name, as the downward API sets it (`spec.nodeName`); only
    /// its pods are watched.
    #[arg(long, value_name = "NODE", env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Kubeconfig file for the API server [default: in-cluster service
    /// account, else $KUBECONFIG, else ~/.kube/config].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Pod annotations plugins may read: keys, or prefixes ending in `*`
    /// (repeat, or comma-separate). None by default.
    #[arg(
        long = "k8s-annotation",
        value_name = "KEY",
        env = "CONDUCTOR_K8S_ANNOTATIONS",
        value_delimiter = ','
    )]
    pub annotations: Vec<String>,
    /// The cgroup v2 directory whose tree is scanned for containers
    /// [default: where cgroup2 is mounted].
    #[arg(long, value_name = "DIR", env = "CONDUCTOR_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,
    /// Least milliseconds between two rescans of the cgroup tree triggered
    /// by lookups of unknown cgroups (new containers are normally seen at
    /// once through inotify).
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub cgroup_rescan_interval_ms: u64,
    /// Seconds to wait at start for the first pod list before plugins start.
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    k8s_sync_timeout: u64,
}

impl K8sArgs {
    pub fn config(self) -> conductor_node::k8s::K8sConfig {
        conductor_node::k8s::K8sConfig {
            node_name: self.node_name.filter(|n| !n.is_empty()),
            kubeconfig: self.kubeconfig,
            annotations: self.annotations,
            cgroup_root: self.cgroup_root,
            min_rescan: Duration::from_millis(self.cgroup_rescan_interval_ms),
            sync_timeout: Duration::from_secs(self.k8s_sync_timeout),
        }
    }
}

/// How to reach OCI registries.
#[derive(clap::Args)]
pub struct RegistryArgs {
    /// A registry (`host:port`) that may be reached over plain HTTP; repeatable.
    /// Loopback registries always may.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST:PORT",
        env = "CONDUCTOR_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure: Vec<String>,
    /// Registry user name [default: from docker's config.json].
    #[arg(long, value_name = "USER", env = "CONDUCTOR_REGISTRY_USERNAME")]
    pub username: Option<String>,
    /// Registry password or token (prefer the environment variable).
    #[arg(
        long,
        value_name = "PASSWORD",
        env = "CONDUCTOR_REGISTRY_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Seconds to wait for a connection to a registry.
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub registry_connect_timeout: u64,
    /// Seconds one pull or push of a reference may take in all.
    #[arg(long, value_name = "SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub registry_timeout: u64,
}

impl RegistryArgs {
    pub fn options(self) -> RegistryOptions {
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
pub struct OtlpArgs {
    /// Push metrics to this OTLP endpoint (gRPC: http://host:4317; HTTP: http://host:4318, to which /v1/metrics is added).
    #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Full URL for metrics, used as is (overrides --otlp-endpoint).
    #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")]
    pub otlp_metrics_endpoint: Option<String>,
    /// grpc or http/protobuf.
    #[arg(
        long,
        value_name = "PROTOCOL",
        env = "OTEL_EXPORTER_OTLP_PROTOCOL",
        default_value = "http/protobuf"
    )]
    pub otlp_protocol: conductor_node::otlp::Protocol,
    /// Extra request headers, name=value (repeat, or comma-separate).
    #[arg(
        long = "otlp-header",
        value_name = "NAME=VALUE",
        env = "OTEL_EXPORTER_OTLP_HEADERS",
        value_delimiter = ','
    )]
    pub otlp_headers: Vec<String>,
    /// Export interval in milliseconds.
    #[arg(long, value_name = "MS", env = "OTEL_METRIC_EXPORT_INTERVAL", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub otlp_interval_ms: u64,
    /// Export timeout in milliseconds.
    #[arg(long, value_name = "MS", env = "OTEL_EXPORTER_OTLP_TIMEOUT", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub otlp_timeout_ms: u64,
    /// cumulative or delta (counters and histograms).
    #[arg(
        long,
        value_name = "TEMPORALITY",
        env = "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
        default_value = "cumulative"
    )]
    pub otlp_temporality: conductor_node::otlp::Temporality,
    /// Resource attributes, key=value (repeat, or comma-separate), e.g. k8s.node.name=$(NODE_NAME).
    #[arg(
        long = "resource-attr",
        value_name = "KEY=VALUE",
        env = "OTEL_RESOURCE_ATTRIBUTES",
        value_delimiter = ','
    )]
    pub resource_attrs: Vec<String>,
    /// service.name of the resource [default: conductor].
    #[arg(long, value_name = "NAME", env = "OTEL_SERVICE_NAME")]
    pub service_name: Option<String>,
}

impl OtlpArgs {
    pub fn config(self) -> anyhow::Result<Option<OtlpConfig>> {
        use conductor_node::otlp::{OtlpError, Protocol, parse_pairs};
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
