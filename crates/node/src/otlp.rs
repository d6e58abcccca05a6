//! OTLP push of the registry `/metrics` serves.
//!
//! There is one registry ([`crate::metrics::Metrics`]): recording a sample
//! touches it once. At each export the host runs the plugins' `collect`
//! exports, reads the registry as data through prometheus-client's protobuf
//! encoder and converts that to OTLP messages (`opentelemetry-proto`), sent
//! over gRPC (tonic) or HTTP (protobuf or JSON), in the clear or over TLS
//! (system roots or a CA file, optionally a client certificate), optionally
//! gzip-compressed. The OpenTelemetry SDK is not in this
//! path on purpose: it can only export what its own instruments aggregated
//! (its `MetricProducer` was removed before 1.0 and its data types cannot be
//! built outside the crate), so it would either record every event twice or
//! lose our histograms.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as prom;
use prost::Message;

use crate::manager::Manager;

/// How long an export waits for plugins' `collect` exports, as a scrape does.
const COLLECT_DEADLINE: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
    /// OTLP/HTTP with the protobuf JSON mapping the specification defines.
    HttpJson,
}

impl Protocol {
    pub fn is_http(self) -> bool {
        matches!(self, Self::HttpProtobuf | Self::HttpJson)
    }
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            "http/json" => Ok(Self::HttpJson),
            _ => Err(format!(
                "unsupported OTLP protocol {s:?}: use grpc, http/protobuf or http/json"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "gzip" => Ok(Self::Gzip),
            _ => Err(format!(
                "unsupported OTLP compression {s:?}: use gzip or none"
            )),
        }
    }
}

/// PEM files for an `https://` endpoint. Without a CA file the system's
/// trusted roots verify the collector.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    /// Trusted certificate(s) for the collector, instead of the system roots.
    pub ca: Option<PathBuf>,
    /// Client certificate (chain) and its private key, for mutual TLS.
    pub client_certificate: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Temporality {
    Cumulative,
    Delta,
}

impl std::str::FromStr for Temporality {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "cumulative" => Ok(Self::Cumulative),
            "delta" => Ok(Self::Delta),
            _ => Err(format!(
                "unsupported temporality {s:?}: use cumulative or delta"
            )),
        }
    }
}

/// Where and how to push. Built from `conductor run` flags, whose defaults
/// come from the standard `OTEL_*` environment variables.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// For gRPC the collector's address (`http://host:4317`); for
    /// HTTP/protobuf the full URL metrics are posted to.
    pub endpoint: String,
    pub protocol: Protocol,
    pub headers: Vec<(String, String)>,
    pub interval: Duration,
    pub timeout: Duration,
    pub temporality: Temporality,
    pub resource: Vec<(String, String)>,
    pub compression: Compression,
    /// Used for `https://` endpoints.
    pub tls: TlsFiles,
}

#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("invalid OTLP endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
    #[error("invalid OTLP header {0:?}: expected name=value with a valid header name and value")]
    Header(String),
    #[error("invalid resource attribute {0:?}: expected key=value")]
    Attribute(String),
    #[error("reading the metric registry failed: {0}")]
    Encode(fmt::Error),
    #[error("collecting plugin metrics before the export failed: {0}")]
    Collect(String),
    #[error("OTLP gRPC export to {endpoint} failed: {status}")]
    Grpc {
        endpoint: String,
        status: Box<tonic::Status>,
    },
    #[error("OTLP HTTP export to {endpoint} failed: {reason}")]
    Http { endpoint: String, reason: String },
    #[error(
        "cannot read the OTLP {what} {}: {source} (set by {flag} or {env})",
        path.display()
    )]
    TlsFile {
        what: &'static str,
        flag: &'static str,
        env: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid OTLP TLS configuration: {0}")]
    Tls(String),
}

/// Parse `k=v,k2=v2` lists as `OTEL_EXPORTER_OTLP_HEADERS` and
/// `OTEL_RESOURCE_ATTRIBUTES` hold them (values percent-encoded).
pub fn parse_pairs(
    items: &[String],
    err: fn(String) -> OtlpError,
) -> Result<Vec<(String, String)>, OtlpError> {
    items
        .iter()
        .flat_map(|i| i.split(','))
        .filter(|i| !i.trim().is_empty())
        .map(|item| {
            let (k, v) = item.split_once('=').ok_or_else(|| err(item.to_owned()))?;
            let k = k.trim();
            if k.is_empty() {
                return Err(err(item.to_owned()));
            }
            let v = percent_encoding::percent_decode_str(v.trim())
                .decode_utf8()
                .map_err(|_| err(item.to_owned()))?;
            Ok((k.to_owned(), v.into_owned()))
        })
        .collect()
}

impl OtlpConfig {
    /// The resource: `service.name` (from `OTEL_SERVICE_NAME`, else
    /// `conductor`) and `host.name`, then the given attributes, which win.
    pub fn resource_with_defaults(
        service_name: Option<String>,
        attributes: Vec<(String, String)>,
    ) -> Vec<(String, String)> {
        let mut resource = vec![(
            "service.name".to_owned(),
            service_name.unwrap_or_else(|| "conductor".to_owned()),
        )];
        if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            resource.push(("host.name".to_owned(), host.trim().to_owned()));
        }
        for (k, v) in attributes {
            resource.retain(|(existing, _)| *existing != k);
            resource.push((k, v));
        }
        resource
    }
}

/// Pushes the registry every `interval` until dropped.
pub struct Exporter {
    config: OtlpConfig,
    manager: Arc<Manager>,
    transport: Transport,
    converter: Converter,
}

enum Transport {
    Grpc(MetricsServiceClient<tonic::transport::Channel>),
    /// One agent for every export, so its connection (and TLS session) is
    /// reused.
    Http(ureq::Agent),
}

/// A TLS file's contents, with an error naming the file and the setting.
fn read_tls_file(
    path: &Path,
    what: &'static str,
    flag: &'static str,
    env: &'static str,
) -> Result<Vec<u8>, OtlpError> {
    std::fs::read(path).map_err(|source| OtlpError::TlsFile {
        what,
        flag,
        env,
        path: path.to_owned(),
        source,
    })
}

/// The PEM contents of the configured TLS files, checked: the CA file and
/// the client certificate hold certificates, the key a private key, and a
/// client certificate comes with its key.
struct TlsPem {
    ca: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsPem {
    fn load(files: &TlsFiles) -> Result<Self, OtlpError> {
        let ca = match &files.ca {
            Some(path) => {
                let pem = read_tls_file(
                    path,
                    "CA certificate file",
                    "--otlp-certificate",
                    "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
                )?;
                if pem_certificates(&pem).is_empty() {
                    return Err(OtlpError::Tls(format!(
                        "{} holds no PEM certificate",
                        path.display()
                    )));
                }
                Some(pem)
            }
            None => None,
        };
        let identity = match (&files.client_certificate, &files.client_key) {
            (Some(cert_path), Some(key_path)) => {
                let cert = read_tls_file(
                    cert_path,
                    "client certificate file",
                    "--otlp-client-certificate",
                    "OTEL_EXPORTER_OTLP_METRICS_CLIENT_CERTIFICATE",
                )?;
                let key = read_tls_file(
                    key_path,
                    "client key file",
                    "--otlp-client-key",
                    "OTEL_EXPORTER_OTLP_METRICS_CLIENT_KEY",
                )?;
                if pem_certificates(&cert).is_empty() {
                    return Err(OtlpError::Tls(format!(
                        "{} holds no PEM certificate",
                        cert_path.display()
                    )));
                }
                if pem_private_key(&key).is_none() {
                    return Err(OtlpError::Tls(format!(
                        "{} holds no PEM private key",
                        key_path.display()
                    )));
                }
                Some((cert, key))
            }
            (None, None) => None,
            _ => {
                return Err(OtlpError::Tls(
                    "a client certificate needs its key and a key its certificate: set both \
                     --otlp-client-certificate and --otlp-client-key"
                        .into(),
                ));
            }
        };
        Ok(Self { ca, identity })
    }
}

fn pem_certificates(pem: &[u8]) -> Vec<ureq::tls::Certificate<'static>> {
    ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
            _ => None,
        })
        .collect()
}

fn pem_private_key(pem: &[u8]) -> Option<ureq::tls::PrivateKey<'static>> {
    ureq::tls::parse_pem(pem).find_map(|item| match item {
        Ok(ureq::tls::PemItem::PrivateKey(k)) => Some(k),
        _ => None,
    })
}

/// The system's trusted roots (as rustls-native-certs finds them: the
/// distribution's bundle, `SSL_CERT_FILE`/`SSL_CERT_DIR`).
fn system_roots() -> Result<Vec<ureq::tls::Certificate<'static>>, OtlpError> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        return Err(OtlpError::Tls(format!(
            "no trusted system root certificates found ({:?}): install ca-certificates or \
             give the collector's CA with --otlp-certificate",
            found.errors
        )));
    }
    Ok(found
        .certs
        .iter()
        .map(|der| ureq::tls::Certificate::from_der(der.as_ref()).to_owned())
        .collect())
}

impl Exporter {
    pub fn new(config: OtlpConfig, manager: Arc<Manager>) -> Result<Self, OtlpError> {
        let endpoint_err = |reason: String| OtlpError::Endpoint {
            endpoint: config.endpoint.clone(),
            reason,
        };
        let https = config.endpoint.starts_with("https://");
        if !https && !config.endpoint.starts_with("http://") {
            return Err(endpoint_err("use an http:// or https:// URL".into()));
        }
        let tls = if https {
            TlsPem::load(&config.tls)?
        } else {
            if config.tls.ca.is_some() || config.tls.client_certificate.is_some() {
                tracing::warn!(
                    endpoint = %config.endpoint,
                    "OTLP certificate files are set but the endpoint is http://: they are not used"
                );
            }
            TlsPem {
                ca: None,
                identity: None,
            }
        };
        let transport = match config.protocol {
            Protocol::Grpc => {
                let mut endpoint = tonic::transport::Endpoint::from_shared(config.endpoint.clone())
                    .map_err(|e| endpoint_err(e.to_string()))?
                    .timeout(config.timeout)
                    .connect_timeout(config.timeout);
                if https {
                    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
                    let mut tls_config = ClientTlsConfig::new();
                    tls_config = match &tls.ca {
                        Some(pem) => tls_config.ca_certificate(Certificate::from_pem(pem)),
                        None => tls_config.with_native_roots(),
                    };
                    if let Some((cert, key)) = &tls.identity {
                        tls_config = tls_config.identity(Identity::from_pem(cert, key));
                    }
                    endpoint = endpoint
                        .tls_config(tls_config)
                        .map_err(|e| OtlpError::Tls(e.to_string()))?;
                }
                // Connect on first use: a collector that starts after us is fine.
                let mut client = MetricsServiceClient::new(endpoint.connect_lazy());
                if config.compression == Compression::Gzip {
                    client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
                }
                Transport::Grpc(client)
            }
            Protocol::HttpProtobuf | Protocol::HttpJson => {
                let mut builder = ureq::config::Config::builder()
                    .timeout_global(Some(config.timeout))
                    .http_status_as_error(false);
                if https {
                    use ureq::tls::{ClientCert, RootCerts, TlsConfig, TlsProvider};
                    let roots = match &tls.ca {
                        Some(pem) => pem_certificates(pem),
                        None => system_roots()?,
                    };
                    let client_cert = match &tls.identity {
                        Some((cert, key)) => Some(ClientCert::new_with_certs(
                            &pem_certificates(cert),
                            pem_private_key(key).ok_or_else(|| {
                                OtlpError::Tls("the client key holds no private key".into())
                            })?,
                        )),
                        None => None,
                    };
                    builder = builder.tls_config(
                        TlsConfig::builder()
                            .provider(TlsProvider::Rustls)
                            .root_certs(RootCerts::Specific(Arc::new(roots)))
                            .client_cert(client_cert)
                            .build(),
                    );
                }
                Transport::Http(ureq::Agent::new_with_config(builder.build()))
            }
        };
        for (k, v) in &config.headers {
            if k.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>()
                .is_err()
                || v.parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>()
                    .is_err()
            {
                return Err(OtlpError::Header(format!("{k}={v}")));
            }
        }
        let converter = Converter::new(&config);
        Ok(Self {
            config,
            manager,
            transport,
            converter,
        })
    }

    /// Export every `interval`; errors are logged and counted, never fatal.
    pub async fn run(mut self) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick fires at once; export after one interval
        loop {
            ticker.tick().await;
            let outcome = match self.export_once().await {
                Ok(()) => "ok",
                Err(e) => {
                    tracing::warn!("{e}");
                    "error"
                }
            };
            self.manager.metrics().host.otlp_exports(outcome).inc();
        }
    }

    /// Collect, convert and send one export.
    pub async fn export_once(&mut self) -> Result<(), OtlpError> {
        let manager = self.manager.clone();
        let families = tokio::task::spawn_blocking(move || {
            manager.collect(COLLECT_DEADLINE);
            manager.metrics().families()
        })
        .await
        .map_err(|e| OtlpError::Collect(e.to_string()))?
        .map_err(OtlpError::Encode)?;
        let request = self.converter.convert(&families, SystemTime::now());
        match &mut self.transport {
            Transport::Grpc(client) => {
                let mut req = tonic::Request::new(request);
                for (k, v) in &self.config.headers {
                    // Checked in `new`.
                    if let (Ok(k), Ok(v)) = (
                        k.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(),
                        v.parse(),
                    ) {
                        req.metadata_mut().insert(k, v);
                    }
                }
                client.export(req).await.map_err(|status| OtlpError::Grpc {
                    endpoint: self.config.endpoint.clone(),
                    status: Box::new(status),
                })?;
                Ok(())
            }
            Transport::Http(agent) => {
                let (content_type, body) = match self.config.protocol {
                    Protocol::HttpJson => (
                        "application/json",
                        serde_json::to_vec(&request).map_err(|e| OtlpError::Http {
                            endpoint: self.config.endpoint.clone(),
                            reason: format!("cannot encode the request as JSON: {e}"),
                        })?,
                    ),
                    _ => ("application/x-protobuf", request.encode_to_vec()),
                };
                let request = HttpRequest {
                    agent: agent.clone(),
                    url: self.config.endpoint.clone(),
                    headers: self.config.headers.clone(),
                    content_type,
                    gzip: self.config.compression == Compression::Gzip,
                    body,
                };
                let endpoint = self.config.endpoint.clone();
                tokio::task::spawn_blocking(move || request.post())
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r)
                    .map_err(|reason| OtlpError::Http { endpoint, reason })
            }
        }
    }
}

/// One OTLP/HTTP export, sent on a blocking thread.
struct HttpRequest {
    agent: ureq::Agent,
    url: String,
    headers: Vec<(String, String)>,
    content_type: &'static str,
    gzip: bool,
    body: Vec<u8>,
}

impl HttpRequest {
    fn post(self) -> Result<(), String> {
        let mut req = self
            .agent
            .post(&self.url)
            .header("content-type", self.content_type);
        let body = if self.gzip {
            req = req.header("content-encoding", "gzip");
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder
                .write_all(&self.body)
                .and_then(|()| encoder.finish())
                .map_err(|e| format!("gzip: {e}"))?
        } else {
            self.body
        };
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let mut resp = req.send(&body[..]).map_err(|e| e.to_string())?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else {
            let text = resp
                .body_mut()
                .with_config()
                .limit(4096)
                .read_to_string()
                .unwrap_or_default();
            Err(format!("HTTP {status}: {}", text.trim()))
        }
    }
}

/// Turns registry snapshots into OTLP requests, remembering the previous
/// export for delta temporality.
struct Converter {
    resource: Resource,
    temporality: Temporality,
    start: SystemTime,
    last_export: SystemTime,
    /// Delta: previous cumulative value per (metric, labels); for
    /// histograms the count, sum and per-bucket counts.
    previous: HashMap<SeriesKey, Vec<f64>>,
}

/// A metric's name and one series' labels.
type SeriesKey = (String, Vec<(String, String)>);

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

impl Converter {
    fn new(config: &OtlpConfig) -> Self {
        let now = SystemTime::now();
        Self {
            resource: Resource {
                attributes: config.resource.iter().map(|(k, v)| kv(k, v)).collect(),
                ..Default::default()
            },
            temporality: config.temporality,
            start: now,
            last_export: now,
            previous: HashMap::new(),
        }
    }

    /// The delta of `current` against the previous export of `key` (all of
    /// `current` after a reset), remembering `current`.
    fn delta(&mut self, key: SeriesKey, current: Vec<f64>) -> Vec<f64> {
        let previous = self.previous.insert(key, current.clone());
        match previous {
            Some(p) if p.len() == current.len() && p.iter().zip(&current).all(|(p, c)| c >= p) => {
                current.iter().zip(&p).map(|(c, p)| c - p).collect()
            }
            _ => current,
        }
    }

    fn convert(
        &mut self,
        families: &[prom::MetricFamily],
        now: SystemTime,
    ) -> ExportMetricsServiceRequest {
        let delta = self.temporality == Temporality::Delta;
        let (start, time) = (
            nanos(if delta { self.last_export } else { self.start }),
            nanos(now),
        );
        let temporality = if delta {
            AggregationTemporality::Delta
        } else {
            AggregationTemporality::Cumulative
        } as i32;
        let mut metrics = Vec::with_capacity(families.len());
        for family in families {
            let ty = prom::MetricType::try_from(family.r#type).unwrap_or(prom::MetricType::Untyped);
            // OTLP names counters without the Prometheus `_total`; receivers
            // that write to Prometheus add it back.
            let name = match ty {
                prom::MetricType::Counter => family
                    .name
                    .strip_suffix("_total")
                    .unwrap_or(&family.name)
                    .to_owned(),
                _ => family.name.clone(),
            };
            let data = match ty {
                prom::MetricType::Counter => {
                    let points = family
                        .metric
                        .iter()
                        .map(|m| {
                            let labels = labels(m);
                            let mut v = m.counter.as_ref().map_or(0.0, |c| c.value);
                            if delta {
                                v = self.delta((name.clone(), labels.clone()), vec![v])[0];
                            }
                            number(labels, start, time, v)
                        })
                        .collect();
                    metric::Data::Sum(Sum {
                        data_points: points,
                        aggregation_temporality: temporality,
                        is_monotonic: true,
                    })
                }
                prom::MetricType::Gauge | prom::MetricType::Untyped => {
                    let points = family
                        .metric
                        .iter()
                        .map(|m| {
                            let v = m
                                .gauge
                                .as_ref()
                                .map(|g| g.value)
                                .or(m.untyped.as_ref().map(|u| u.value))
                                .unwrap_or(0.0);
                            number(labels(m), 0, time, v)
                        })
                        .collect();
                    metric::Data::Gauge(Gauge {
                        data_points: points,
                    })
                }
                prom::MetricType::Histogram => {
                    let points = family
                        .metric
                        .iter()
                        .filter_map(|m| {
                            let h = m.histogram.as_ref()?;
                            Some(self.histogram_point(&name, labels(m), h, delta, start, time))
                        })
                        .collect();
                    metric::Data::Histogram(Histogram {
                        data_points: points,
                        aggregation_temporality: temporality,
                    })
                }
                // The registry holds no summaries or infos.
                _ => continue,
            };
            metrics.push(Metric {
                name,
                description: family.help.clone(),
                unit: family.unit.clone(),
                data: Some(data),
                ..Default::default()
            });
        }
        self.last_export = now;
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "conductor".to_owned(),
                        version: env!("CARGO_PKG_VERSION").to_owned(),
                        ..Default::default()
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn histogram_point(
        &mut self,
        name: &str,
        labels: Vec<(String, String)>,
        h: &prom::Histogram,
        delta: bool,
        start: u64,
        time: u64,
    ) -> HistogramDataPoint {
        // Prometheus buckets are cumulative and end with +Inf (or f64::MAX);
        // OTLP wants the finite bounds and a count per bucket, +Inf last.
        let mut bounds = Vec::with_capacity(h.bucket.len());
        let mut counts = Vec::with_capacity(h.bucket.len() + 1);
        let mut below = 0u64;
        for b in &h.bucket {
            if b.upper_bound.is_infinite() || b.upper_bound == f64::MAX {
                break;
            }
            bounds.push(b.upper_bound);
            counts.push(b.cumulative_count.saturating_sub(below) as f64);
            below = b.cumulative_count;
        }
        counts.push(h.sample_count.saturating_sub(below) as f64);
        let (mut count, mut sum) = (h.sample_count as f64, h.sample_sum);
        if delta {
            let mut current = vec![count, sum];
            current.extend(&counts);
            let d = self.delta((name.to_owned(), labels.clone()), current);
            (count, sum) = (d[0], d[1]);
            counts = d[2..].to_vec();
        }
        HistogramDataPoint {
            attributes: labels.iter().map(|(k, v)| kv(k, v)).collect(),
            start_time_unix_nano: start,
            time_unix_nano: time,
            count: count as u64,
            sum: Some(sum),
            bucket_counts: counts.into_iter().map(|c| c as u64).collect(),
            explicit_bounds: bounds,
            ..Default::default()
        }
    }
}

fn labels(m: &prom::Metric) -> Vec<(String, String)> {
    m.label
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect()
}

fn number(labels: Vec<(String, String)>, start: u64, time: u64, v: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: labels.iter().map(|(k, v)| kv(k, v)).collect(),
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    fn config(temporality: Temporality) -> OtlpConfig {
        OtlpConfig {
            endpoint: "http://127.0.0.1:1".into(),
            protocol: Protocol::Grpc,
            headers: vec![],
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            temporality,
            resource: vec![("service.name".into(), "conductor".into())],
            compression: Compression::None,
            tls: TlsFiles::default(),
        }
    }

    fn find<'a>(req: &'a ExportMetricsServiceRequest, name: &str) -> &'a metric::Data {
        req.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.data.as_ref())
            .unwrap_or_else(|| panic!("no metric {name}"))
    }

    #[test]
    fn converts_counters_gauges_and_histograms_cumulative_and_delta() {
        for temporality in [Temporality::Cumulative, Temporality::Delta] {
            let metrics = Metrics::new();
            let pm = metrics.add_plugin("p", 10);
            let c = pm.counter("hits", "h", vec!["x".into()]).unwrap();
            let h = pm.histogram("lat", "h", vec![], vec![1.0, 2.0]).unwrap();
            let g = pm.gauge("g", "h", vec![]).unwrap();
            c.add(vec!["a".into()], 3).unwrap();
            for v in [0.5, 1.5, 1.5, 9.0] {
                h.observe(vec![], v).unwrap();
            }
            g.set(vec![], 7.0).unwrap();
            let mut conv = Converter::new(&config(temporality));
            let first = conv.convert(&metrics.families().unwrap(), SystemTime::now());
            let metric::Data::Sum(sum) = find(&first, "p__hits") else {
                panic!("not a sum")
            };
            assert!(sum.is_monotonic);
            assert_eq!(
                sum.data_points[0].value,
                Some(number_data_point::Value::AsDouble(3.0))
            );
            assert_eq!(
                sum.data_points[0].attributes,
                vec![kv("plugin", "p"), kv("x", "a")]
            );
            let metric::Data::Histogram(hist) = find(&first, "p__lat") else {
                panic!("not a histogram")
            };
            let p = &hist.data_points[0];
            assert_eq!(
                (p.count, p.sum, &p.explicit_bounds[..], &p.bucket_counts[..]),
                (4, Some(12.5), &[1.0, 2.0][..], &[1, 2, 1][..])
            );
            assert!(matches!(find(&first, "p__g"), metric::Data::Gauge(_)));

            c.add(vec!["a".into()], 2).unwrap();
            h.observe(vec![], 0.1).unwrap();
            let second = conv.convert(&metrics.families().unwrap(), SystemTime::now());
            let metric::Data::Sum(sum) = find(&second, "p__hits") else {
                panic!("not a sum")
            };
            let metric::Data::Histogram(hist) = find(&second, "p__lat") else {
                panic!("not a histogram")
            };
            let p = &hist.data_points[0];
            match temporality {
                Temporality::Cumulative => {
                    assert_eq!(
                        sum.data_points[0].value,
                        Some(number_data_point::Value::AsDouble(3.0 + 2.0))
                    );
                    assert_eq!((p.count, &p.bucket_counts[..]), (5, &[2, 2, 1][..]));
                }
                Temporality::Delta => {
                    assert_eq!(
                        sum.aggregation_temporality,
                        AggregationTemporality::Delta as i32
                    );
                    assert_eq!(
                        sum.data_points[0].value,
                        Some(number_data_point::Value::AsDouble(2.0))
                    );
                    assert_eq!((p.count, &p.bucket_counts[..]), (1, &[1, 0, 0][..]));
                }
            }
        }
    }

    #[test]
    fn tls_files_are_checked_when_the_exporter_is_built() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let missing = dir.path().join("missing.pem");
        let load = |ca: Option<&Path>, cert: Option<&Path>, key: Option<&Path>| {
            TlsPem::load(&TlsFiles {
                ca: ca.map(Path::to_owned),
                client_certificate: cert.map(Path::to_owned),
                client_key: key.map(Path::to_owned),
            })
            .err()
            .map(|e| e.to_string())
        };
        assert_eq!(load(None, None, None), None);
        let e = load(Some(&missing), None, None).unwrap();
        assert!(
            e.contains(&format!(
                "cannot read the OTLP CA certificate file {}",
                missing.display()
            )) && e.contains("--otlp-certificate")
                && e.contains("OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE"),
            "{e}"
        );
        let e = load(Some(&not_pem), None, None).unwrap();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let e = load(None, Some(&not_pem), None).unwrap();
        assert!(e.contains("--otlp-client-key"), "{e}");
        let e = load(None, None, Some(&missing)).unwrap();
        assert!(e.contains("--otlp-client-certificate"), "{e}");
    }

    #[test]
    fn parses_otel_pair_lists() {
        let pairs = parse_pairs(
            &[
                "k8s.pod.name=web-1,k8s.namespace.name=shop".into(),
                "a=b%2Cc".into(),
            ],
            OtlpError::Attribute,
        )
        .unwrap();
        assert_eq!(
            pairs,
            vec![
                ("k8s.pod.name".into(), "web-1".into()),
                ("k8s.namespace.name".into(), "shop".into()),
                ("a".into(), "b,c".into())
            ]
        );
        assert!(parse_pairs(&["novalue".into()], OtlpError::Attribute).is_err());
        let r = OtlpConfig::resource_with_defaults(None, vec![("service.name".into(), "x".into())]);
        assert_eq!(r.iter().filter(|(k, _)| k == "service.name").count(), 1);
        assert!(r.contains(&("service.name".into(), "x".into())));
    }
}
