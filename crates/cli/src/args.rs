//! Flags shared by several subcommands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use conductor_api::files;
use conductor_client::Output;
use conductor_node::NodeConfig;
use conductor_node::otlp::{OtlpConfig, Protocol};
use conductor_oci::{self as oci, RegistryOptions};

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
    /// Components of at least this many MiB whose optimised code is not
    /// cached start on wasmtime's baseline compiler (seconds instead of
    /// tens of seconds for a JavaScript or Python component) and move to
    /// the optimising compiler's code once it is ready, compiled in the
    /// background into the cache. `0` starts every uncached component so.
    #[arg(
        long,
        value_name = "MIB",
        default_value_t = 4,
        conflicts_with = "no_baseline"
    )]
    pub baseline_above_mib: u64,
    /// Always compile with the optimising compiler before a plugin starts.
    #[arg(long)]
    pub no_baseline: bool,
    /// Largest component file a load reads, in bytes (only regular files
    /// are read).
    #[arg(long, value_name = "BYTES", default_value_t = files::DEFAULT_MAX_COMPONENT_BYTES)]
    pub max_component_bytes: u64,
    /// Largest BPF object file a load reads, in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = files::DEFAULT_MAX_BYTECODE_BYTES)]
    pub max_bytecode_bytes: u64,
    /// Capabilities the host keeps after start-up (comma-separated, e.g.
    /// `bpf,perfmon,net_admin,sys_admin`); every other one is dropped from
    /// all its sets. `all` keeps everything. See the deploy guide for what
    /// each attach kind needs.
    #[arg(
        long,
        value_name = "CAPS",
        default_value = "CAP_BPF,CAP_PERFMON,CAP_NET_ADMIN",
        env = "CONDUCTOR_KEEP_CAPABILITIES"
    )]
    pub keep_capabilities: conductor_node::privileges::Keep,
    /// Seconds reading one component, BPF object or spec file may take
    /// (a file on a stalled mount fails the load instead of holding its slot).
    #[arg(long, value_name = "SECONDS", default_value_t = files::DEFAULT_READ_DEADLINE.as_secs(), value_parser = clap::value_parser!(u64).range(1..))]
    pub file_read_timeout_secs: u64,
    /// Seconds a metrics client has to send a request's headers (slow or
    /// half requests get 408 and are closed).
    #[arg(long, value_name = "SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub metrics_header_timeout_secs: u64,
    /// Close a metrics connection after this many seconds without a byte
    /// in either direction (idle keep-alive, silent peers).
    #[arg(long, value_name = "SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub metrics_idle_timeout_secs: u64,
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
        files::set_read_deadline(Duration::from_secs(self.file_read_timeout_secs));
        Ok((
            NodeConfig {
                metrics_addr: self.metrics_addr,
                cache_dir: self.cache_dir.unwrap_or_else(default_cache_dir),
                no_cache: self.no_cache,
                baseline_above: (!self.no_baseline)
                    .then_some(self.baseline_above_mib.saturating_mul(1 << 20)),
                otlp: self.otlp.config()?,
                k8s: self.k8s.config(),
                file_caps: files::FileCaps {
                    component_bytes: self.max_component_bytes,
                    bytecode_bytes: self.max_bytecode_bytes,
                },
                keep_capabilities: self.keep_capabilities,
                http_timeouts: conductor_node::server::HttpTimeouts {
                    header_read: Duration::from_secs(self.metrics_header_timeout_secs),
                    idle: Duration::from_secs(self.metrics_idle_timeout_secs),
                },
            },
            self.registry.options()?,
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
    /// Signatures of pulled artifacts: `required` refuses what no trusted
    /// key signed (cosign's keyed layout), `warn` runs it with a warning
    /// (looking for signatures only when a key is trusted), `off` does not look.
    #[arg(
        long,
        value_name = "POLICY",
        default_value = "warn",
        env = "CONDUCTOR_SIGNATURE_POLICY"
    )]
    pub signature_policy: oci::SignatureMode,
    /// A trusted public key (PEM, e.g. cosign.pub); repeat, or comma-separate.
    #[arg(
        long = "trusted-key",
        value_name = "FILE",
        env = "CONDUCTOR_TRUSTED_KEYS",
        value_delimiter = ','
    )]
    pub trusted_keys: Vec<PathBuf>,
    /// Only these references may be pulled: prefixes of
    /// `registry/repository[:tag]` or manifest digests `sha256:<hex>`;
    /// repeat, or comma-separate. None: any.
    #[arg(
        long = "allowed-reference",
        value_name = "PREFIX|DIGEST",
        env = "CONDUCTOR_ALLOWED_REFERENCES",
        value_delimiter = ','
    )]
    pub allowed_references: Vec<String>,
}

impl RegistryArgs {
    pub fn options(self) -> anyhow::Result<RegistryOptions> {
        use std::io::IsTerminal;
        let keys = self
            .trusted_keys
            .iter()
            .map(|p| oci::TrustedKey::from_file(p))
            .collect::<Result<Vec<_>, _>>()?;
        let trust = oci::TrustPolicy {
            mode: self.signature_policy,
            keys,
            allowed: self.allowed_references,
        };
        trust.check()?;
        Ok(RegistryOptions {
            insecure: self.insecure,
            username: self.username,
            password: self.password,
            connect_timeout: std::time::Duration::from_secs(self.registry_connect_timeout),
            timeout: std::time::Duration::from_secs(self.registry_timeout),
            progress: std::io::stderr().is_terminal(),
            trust,
        })
    }
}

/// OTLP push; off unless an endpoint is set. Each flag defaults to its
/// standard OpenTelemetry environment variable: the metrics-specific
/// `OTEL_EXPORTER_OTLP_METRICS_*` one, else the generic
/// `OTEL_EXPORTER_OTLP_*` one (empty values count as unset).
#[derive(clap::Args)]
pub struct OtlpArgs {
    /// Push metrics to this OTLP endpoint (gRPC: http(s)://host:4317; HTTP: http(s)://host:4318, to which /v1/metrics is added).
    #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// Full URL for metrics, used as is (overrides --otlp-endpoint).
    #[arg(long, value_name = "URL", env = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT")]
    pub otlp_metrics_endpoint: Option<String>,
    /// grpc, http/protobuf or http/json (else OTEL_EXPORTER_OTLP_PROTOCOL) [default: http/protobuf].
    #[arg(
        long,
        value_name = "PROTOCOL",
        env = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"
    )]
    pub otlp_protocol: Option<String>,
    /// Extra request headers, name=value (repeat, or comma-separate; else OTEL_EXPORTER_OTLP_HEADERS).
    #[arg(
        long = "otlp-header",
        value_name = "NAME=VALUE",
        env = "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
        value_delimiter = ','
    )]
    pub otlp_headers: Vec<String>,
    /// Export interval in milliseconds.
    #[arg(long, value_name = "MS", env = "OTEL_METRIC_EXPORT_INTERVAL", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub otlp_interval_ms: u64,
    /// Export timeout in milliseconds (else OTEL_EXPORTER_OTLP_TIMEOUT) [default: 10000].
    #[arg(long, value_name = "MS", env = "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT")]
    pub otlp_timeout_ms: Option<String>,
    /// gzip or none (else OTEL_EXPORTER_OTLP_COMPRESSION) [default: none].
    #[arg(
        long,
        value_name = "COMPRESSION",
        env = "OTEL_EXPORTER_OTLP_METRICS_COMPRESSION"
    )]
    pub otlp_compression: Option<String>,
    /// PEM file of the CA(s) that verify an https:// collector, instead of the system roots (else OTEL_EXPORTER_OTLP_CERTIFICATE).
    #[arg(
        long,
        value_name = "FILE",
        env = "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE"
    )]
    pub otlp_certificate: Option<PathBuf>,
    /// PEM client certificate for mutual TLS, with --otlp-client-key (else OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE).
    #[arg(
        long,
        value_name = "FILE",
        env = "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE"
    )]
    pub otlp_client_certificate: Option<PathBuf>,
    /// PEM private key of the client certificate (else OTEL_EXPORTER_OTLP_CLIENT_KEY).
    #[arg(
        long,
        value_name = "FILE",
        env = "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY"
    )]
    pub otlp_client_key: Option<PathBuf>,
    /// For a gRPC endpoint given without http:// or https://: true for plain text, false for TLS (else OTEL_EXPORTER_OTLP_INSECURE) [default: false].
    #[arg(
        long,
        value_name = "BOOL",
        env = "OTEL_EXPORTER_OTLP_METRICS_INSECURE",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub otlp_insecure: Option<String>,
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
        self.config_with_env(|name| std::env::var(name).ok())
    }

    /// The configuration, with the generic `OTEL_EXPORTER_OTLP_*` variables
    /// read through `env` (the metrics-specific ones and the flags are
    /// already in `self`, and win).
    pub fn config_with_env(
        self,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Option<OtlpConfig>> {
        use anyhow::Context;
        use conductor_node::otlp::{OtlpError, TlsFiles, parse_pairs};
        // Flags and metrics-specific variables (through clap) first, then
        // the generic variable; empty values are unset, as the
        // specification says. Parse errors name where the value came from.
        let setting = |flag: Option<String>, flag_name: &str, suffix: &str| {
            let specific = format!("--{flag_name} / OTEL_EXPORTER_OTLP_METRICS_{suffix}");
            flag.filter(|v| !v.trim().is_empty())
                .map(|v| (specific, v.trim().to_owned()))
                .or_else(|| {
                    let name = format!("OTEL_EXPORTER_OTLP_{suffix}");
                    env(&name)
                        .filter(|v| !v.trim().is_empty())
                        .map(|v| (name, v.trim().to_owned()))
                })
        };
        fn parse<T: std::str::FromStr>(value: Option<(String, String)>) -> anyhow::Result<Option<T>>
        where
            T::Err: std::fmt::Display,
        {
            value
                .map(|(name, v)| {
                    v.parse::<T>()
                        .map_err(|e| anyhow::anyhow!("{name}={v:?}: {e}"))
                })
                .transpose()
        }
        let nonempty = |v: Option<String>| v.filter(|v| !v.trim().is_empty());

        let protocol = parse(setting(self.otlp_protocol, "otlp-protocol", "PROTOCOL"))?
            .unwrap_or(Protocol::HttpProtobuf);
        let insecure = parse::<bool>(setting(self.otlp_insecure, "otlp-insecure", "INSECURE"))?
            .unwrap_or(false);
        let endpoint = match (
            nonempty(self.otlp_metrics_endpoint),
            nonempty(self.otlp_endpoint),
        ) {
            (Some(url), _) => url,
            (None, Some(base)) if protocol.is_http() => {
                format!("{}/v1/metrics", base.trim_end_matches('/'))
            }
            (None, Some(base)) => base,
            (None, None) => return Ok(None),
        };
        // gRPC endpoints may omit the scheme; INSECURE then chooses it.
        let endpoint = if protocol == Protocol::Grpc
            && !endpoint.starts_with("http://")
            && !endpoint.starts_with("https://")
        {
            format!("{}://{endpoint}", if insecure { "http" } else { "https" })
        } else {
            endpoint
        };
        let headers = if self.otlp_headers.iter().all(|h| h.trim().is_empty()) {
            setting(None, "otlp-header", "HEADERS")
                .map(|(_, v)| vec![v])
                .unwrap_or_default()
        } else {
            self.otlp_headers
        };
        let timeout_ms = parse::<u64>(setting(self.otlp_timeout_ms, "otlp-timeout-ms", "TIMEOUT"))?
            .unwrap_or(10_000);
        anyhow::ensure!(timeout_ms > 0, "the OTLP timeout must be at least 1 ms");
        let compression = parse(setting(
            self.otlp_compression,
            "otlp-compression",
            "COMPRESSION",
        ))?
        .unwrap_or_default();
        let file = |flag: Option<PathBuf>, suffix: &str| match flag {
            Some(path) if !path.as_os_str().is_empty() => Some(path),
            _ => setting(None, "", suffix).map(|(_, v)| PathBuf::from(v)),
        };
        let tls = TlsFiles {
            ca: file(self.otlp_certificate, "CERTIFICATE"),
            client_certificate: file(self.otlp_client_certificate, "CLIENT_CERTIFICATE"),
            client_key: file(self.otlp_client_key, "CLIENT_KEY"),
        };
        // Only explicit-bucket histograms are exported (the registry's own).
        if let Some(aggregation) = env("OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION")
            .filter(|v| !v.is_empty())
        {
            anyhow::ensure!(
                aggregation == "explicit_bucket_histogram",
                "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION={aggregation:?} is not supported: \
                 histograms are exported with their explicit buckets (explicit_bucket_histogram)"
            );
        }
        Ok(Some(OtlpConfig {
            endpoint,
            protocol,
            headers: parse_pairs(&headers, OtlpError::Header)?,
            interval: Duration::from_millis(self.otlp_interval_ms),
            timeout: Duration::from_millis(timeout_ms),
            temporality: self.otlp_temporality,
            resource: OtlpConfig::resource_with_defaults(
                self.service_name,
                parse_pairs(&self.resource_attrs, OtlpError::Attribute)
                    .context("invalid OTEL_RESOURCE_ATTRIBUTES or --resource-attr")?,
            ),
            compression,
            tls,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use conductor_node::otlp::Compression;

    #[derive(clap::Parser)]
    struct Otlp {
        #[command(flatten)]
        otlp: OtlpArgs,
    }

    /// The OTLP configuration from flags and generic variables (the
    /// metrics-specific variables behave as the flags: clap reads them).
    fn otlp(flags: &[&str], generic: &[(&str, &str)]) -> anyhow::Result<Option<OtlpConfig>> {
        let args = Otlp::try_parse_from(std::iter::once("conductor").chain(flags.iter().copied()))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        args.otlp.config_with_env(|name| {
            generic
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn the_generic_variables_fill_what_flags_leave_unset() {
        let c = otlp(
            &[],
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=two%20words"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/etc/client.pem"),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/etc/client-key.pem"),
            ],
        );
        // No endpoint: no export, whatever else is set.
        assert!(c.unwrap().is_none());
        let c = otlp(
            &["--otlp-endpoint", "https://collector:4318/"],
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,b=two%20words"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/ca.pem"),
                ("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", "/etc/client.pem"),
                ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/etc/client-key.pem"),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.endpoint, "https://collector:4318/v1/metrics");
        assert_eq!(c.protocol, Protocol::HttpJson);
        assert_eq!(
            c.headers,
            vec![
                ("a".to_owned(), "1".to_owned()),
                ("b".to_owned(), "two words".to_owned())
            ]
        );
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.compression, Compression::Gzip);
        assert_eq!(
            c.tls.ca.as_deref(),
            Some(std::path::Path::new("/etc/ca.pem"))
        );
        assert_eq!(
            c.tls.client_certificate.as_deref(),
            Some(std::path::Path::new("/etc/client.pem"))
        );
        assert_eq!(
            c.tls.client_key.as_deref(),
            Some(std::path::Path::new("/etc/client-key.pem"))
        );
    }

    #[test]
    fn flags_and_metrics_variables_win_over_the_generic_ones() {
        let generic = [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "a=generic"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/etc/generic.pem"),
        ];
        let c = otlp(
            &[
                "--otlp-endpoint",
                "http://base:4317",
                "--otlp-metrics-endpoint",
                "https://metrics:4317",
                "--otlp-protocol",
                "grpc",
                "--otlp-header",
                "a=specific",
                "--otlp-timeout-ms",
                "700",
                "--otlp-compression",
                "none",
                "--otlp-certificate",
                "/etc/specific.pem",
            ],
            &generic,
        )
        .unwrap()
        .unwrap();
        // The metrics endpoint is used as is, also for HTTP.
        assert_eq!(c.endpoint, "https://metrics:4317");
        assert_eq!(c.protocol, Protocol::Grpc);
        assert_eq!(c.headers, vec![("a".to_owned(), "specific".to_owned())]);
        assert_eq!(c.timeout, Duration::from_millis(700));
        assert_eq!(c.compression, Compression::None);
        assert_eq!(
            c.tls.ca.as_deref(),
            Some(std::path::Path::new("/etc/specific.pem"))
        );
    }

    #[test]
    fn defaults_empty_values_and_schemeless_grpc_endpoints() {
        let c = otlp(
            &["--otlp-endpoint", "http://collector:4318"],
            &[
                ("OTEL_EXPORTER_OTLP_PROTOCOL", ""),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", " "),
                ("OTEL_EXPORTER_OTLP_CERTIFICATE", ""),
            ],
        )
        .unwrap()
        .unwrap();
        assert_eq!(c.protocol, Protocol::HttpProtobuf);
        assert_eq!(c.endpoint, "http://collector:4318/v1/metrics");
        assert_eq!(c.timeout, Duration::from_millis(10_000));
        assert_eq!(c.compression, Compression::None);
        assert!(c.tls.ca.is_none());

        let grpc = |flags: &[&str], env: &[(&str, &str)]| {
            let mut all = vec![
                "--otlp-endpoint",
                "collector:4317",
                "--otlp-protocol",
                "grpc",
            ];
            all.extend_from_slice(flags);
            otlp(&all, env).unwrap().unwrap().endpoint
        };
        assert_eq!(grpc(&[], &[]), "https://collector:4317");
        assert_eq!(
            grpc(&[], &[("OTEL_EXPORTER_OTLP_INSECURE", "true")]),
            "http://collector:4317"
        );
        assert_eq!(grpc(&["--otlp-insecure"], &[]), "http://collector:4317");
        assert_eq!(
            grpc(
                &["--otlp-insecure=false"],
                &[("OTEL_EXPORTER_OTLP_INSECURE", "true")]
            ),
            "https://collector:4317"
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        let err = |env: &[(&str, &str)]| {
            otlp(&["--otlp-endpoint", "http://c:4318"], env)
                .unwrap_err()
                .to_string()
        };
        let e = err(&[("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd")]);
        assert!(
            e.contains("OTEL_EXPORTER_OTLP_COMPRESSION") && e.contains("gzip"),
            "{e}"
        );
        let e = err(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/xml")]);
        assert!(e.contains("OTEL_EXPORTER_OTLP_PROTOCOL"), "{e}");
        let e = err(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")]);
        assert!(e.contains("OTEL_EXPORTER_OTLP_TIMEOUT"), "{e}");
        let e = err(&[(
            "OTEL_EXPORTER_OTLP_METRICS_DEFAULT_HISTOGRAM_AGGREGATION",
            "base2_exponential_bucket_histogram",
        )]);
        assert!(e.contains("explicit_bucket_histogram"), "{e}");
    }
}
