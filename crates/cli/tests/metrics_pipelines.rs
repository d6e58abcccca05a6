//! The metrics pipelines end to end: a real Prometheus scraping the host
//! running the real exec-counter plugin, promtool on a real scrape, OTLP
//! (gRPC, HTTP/protobuf and HTTP/JSON, plain and over TLS with a CA and
//! client certificates made in the test, gzip) into receivers built on
//! `opentelemetry-proto`, the cardinality cap, and slow and failing collect
//! hooks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use conductor_test_support::*;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{AggregationTemporality, metric, number_data_point};
use prost::Message;

#[test]
fn prometheus_scrapes_the_host_and_promtool_accepts_the_exposition() {
    if !require_root() {
        return;
    }
    // promtool flags metric names that contain a type name, so this test
    // names the plugin `execs` rather than `exec-counter`.
    let host = Host::start(&exec_counter_spec("execs"));
    let prometheus = Prometheus::start(&host.target());
    let bin = UniqueBinary::new("cndtprom");
    const N: usize = 7;
    bin.run(N);

    // Prometheus negotiated OpenMetrics, stored the series under the
    // plugin's namespace and answers with exactly the execs we ran.
    let execs = prometheus.wait_for(
        &format!(
            r#"execs__execs_total{{plugin="execs",comm="{}"}}"#,
            bin.comm
        ),
        Duration::from_secs(60),
        |v| v >= N as f64,
    );
    assert_eq!(execs, N as f64);
    assert_eq!(
        prometheus.wait_for(r#"up{job="conductor"}"#, Duration::from_secs(30), |v| v
            == 1.0),
        1.0
    );
    let up = prometheus.query(r#"conductor_plugin_up{plugin="execs"}"#);
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].1, 1.0);
    // Histograms arrive as Prometheus histograms.
    assert!(
        !prometheus
            .query(
                r#"conductor_plugin_call_duration_seconds_bucket{plugin="execs",call="on_events"}"#
            )
            .is_empty()
    );

    // curl and promtool get the classic text format, which promtool accepts.
    let (content_type, text) = host.scrape_classic();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    assert!(text.contains(&format!(
        r#"execs__execs_total{{plugin="execs",comm="{}",namespace="",pod="",container=""}} {N}"#,
        bin.comm
    )));
    let (ok, lint) = promtool_check_metrics(&text);
    assert!(ok && lint.trim().is_empty(), "promtool: {lint}\n{text}");
    assert!(host.stop().success());
}

/// What a receiver got: each request, with the headers it came with.
type Received = Arc<Mutex<Vec<(BTreeMap<String, String>, ExportMetricsServiceRequest)>>>;

struct GrpcReceiver(Received);

#[tonic::async_trait]
impl MetricsService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let headers = request
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    Some((k.to_string(), v.to_str().ok()?.to_owned()))
                }
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .collect();
        let mut headers: BTreeMap<String, String> = headers;
        // Over TLS: how many certificates the client presented.
        if let Some(certs) = request.peer_certs() {
            headers.insert(":peer-certificates".into(), certs.len().to_string());
        }
        self.0.lock().unwrap().push((headers, request.into_inner()));
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A CA made for the test, a collector certificate for 127.0.0.1 and a
/// client certificate, all signed by it, as PEM files in a temporary
/// directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, pem: &str| std::fs::write(dir.path().join(name), pem).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "conductor test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        write("ca.pem", &ca.pem());
        for (name, san, usage) in [
            ("server", "127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth),
            (
                "client",
                "conductor.test",
                ExtendedKeyUsagePurpose::ClientAuth,
            ),
        ] {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec![san.to_owned()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, name);
            params.extended_key_usages = vec![usage];
            let cert = params.signed_by(&key, &*ca).unwrap();
            write(&format!("{name}.pem"), &cert.pem());
            write(&format!("{name}-key.pem"), &key.serialize_pem());
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> String {
        path_str(&self.dir.path().join(name))
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).unwrap()
    }

    /// The collector's rustls configuration; with `client_auth` it demands
    /// a client certificate signed by the CA.
    fn server_config(&self, client_auth: bool) -> Arc<rustls::ServerConfig> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(&self.read("server.pem"))
                .map(Result::unwrap)
                .collect();
        let key = PrivateKeyDer::from_pem_slice(&self.read("server-key.pem")).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_auth {
            let mut roots = rustls::RootCertStore::empty();
            for ca in CertificateDer::pem_slice_iter(&self.read("ca.pem")) {
                roots.add(ca.unwrap()).unwrap();
            }
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .unwrap(),
            )
        } else {
            builder.with_no_client_auth()
        };
        Arc::new(builder.with_single_cert(certs, key).unwrap())
    }
}

/// An HTTPS listener for axum: TLS handshakes on accept (failed ones are
/// skipped, as a collector does).
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    /// How many client certificates each accepted connection presented.
    peers: Arc<Mutex<Vec<usize>>>,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                let certs = tls.get_ref().1.peer_certificates().map_or(0, <[_]>::len);
                self.peers.lock().unwrap().push(certs);
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.tcp.local_addr()
    }
}

/// An OTLP receiver on loopback: gRPC or HTTP (`POST /v1/metrics`,
/// protobuf or JSON, gzip-compressed or not), plain or over TLS.
struct Receiver {
    received: Received,
    addr: SocketAddr,
    /// TLS over HTTP: the client certificates of each connection.
    tls_peers: Arc<Mutex<Vec<usize>>>,
    _rt: tokio::runtime::Runtime,
}

/// Decode an OTLP/HTTP body as its headers describe it. JSON bodies are also
/// kept as text under `:body`.
fn decode_http(
    headers: &mut BTreeMap<String, String>,
    body: &[u8],
) -> Result<ExportMetricsServiceRequest, String> {
    let body = match headers.get("content-encoding").map(String::as_str) {
        Some("gzip") => {
            let mut plain = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut plain)
                .map_err(|e| format!("bad gzip: {e}"))?;
            plain
        }
        None => body.to_vec(),
        Some(other) => return Err(format!("unsupported content-encoding {other}")),
    };
    match headers.get("content-type").map(String::as_str) {
        Some("application/x-protobuf") => {
            ExportMetricsServiceRequest::decode(&body[..]).map_err(|e| e.to_string())
        }
        Some("application/json") => {
            let text = String::from_utf8(body).map_err(|e| e.to_string())?;
            let req = serde_json::from_str(&text).map_err(|e| e.to_string())?;
            headers.insert(":body".into(), text);
            Ok(req)
        }
        other => Err(format!("unsupported content-type {other:?}")),
    }
}

impl Receiver {
    fn start(grpc: bool) -> Self {
        Self::start_with(grpc, None)
    }

    /// Over TLS with `pki`'s collector certificate; with `client_auth` a
    /// client certificate signed by its CA is required.
    fn start_tls(grpc: bool, pki: &Pki, client_auth: bool) -> Self {
        Self::start_with(grpc, Some((pki, client_auth)))
    }

    fn start_with(grpc: bool, tls: Option<(&Pki, bool)>) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let received = Received::default();
        let tls_peers = Arc::new(Mutex::new(Vec::new()));
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let sink = received.clone();
        if grpc {
            let incoming = tonic::transport::server::TcpIncoming::from(listener);
            let mut server = tonic::transport::Server::builder();
            if let Some((pki, client_auth)) = tls {
                use tonic::transport::{Certificate, Identity, ServerTlsConfig};
                let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
                    pki.read("server.pem"),
                    pki.read("server-key.pem"),
                ));
                if client_auth {
                    config = config.client_ca_root(Certificate::from_pem(pki.read("ca.pem")));
                }
                server = server.tls_config(config).unwrap();
            }
            rt.spawn(
                server
                    .add_service(
                        MetricsServiceServer::new(GrpcReceiver(sink))
                            .accept_compressed(tonic::codec::CompressionEncoding::Gzip),
                    )
                    .serve_with_incoming(incoming),
            );
        } else {
            let app = axum::Router::new().route(
                "/v1/metrics",
                axum::routing::post(
                    move |headers: axum::http::HeaderMap, body: axum::body::Bytes| async move {
                        let mut headers = headers
                            .iter()
                            .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_owned())))
                            .collect();
                        match decode_http(&mut headers, &body) {
                            Ok(req) => {
                                sink.lock().unwrap().push((headers, req));
                                (axum::http::StatusCode::OK, Vec::new())
                            }
                            Err(e) => (axum::http::StatusCode::BAD_REQUEST, e.into_bytes()),
                        }
                    },
                ),
            );
            match tls {
                None => {
                    rt.spawn(async move { axum::serve(listener, app).await });
                }
                Some((pki, client_auth)) => {
                    let listener = TlsListener {
                        tcp: listener,
                        acceptor: tokio_rustls::TlsAcceptor::from(pki.server_config(client_auth)),
                        peers: tls_peers.clone(),
                    };
                    rt.spawn(async move { axum::serve(listener, app).await });
                }
            }
        }
        Self {
            received,
            addr,
            tls_peers,
            _rt: rt,
        }
    }

    /// Wait for an export in which `find` finds a value satisfying `ok`.
    fn wait_for(
        &self,
        timeout: Duration,
        find: impl Fn(&ExportMetricsServiceRequest) -> Option<f64>,
        ok: impl Fn(f64) -> bool,
    ) -> (BTreeMap<String, String>, ExportMetricsServiceRequest) {
        let until = Instant::now() + timeout;
        loop {
            if let Some(hit) = self
                .received
                .lock()
                .unwrap()
                .iter()
                .rev()
                .find(|(_, r)| find(r).is_some_and(&ok))
            {
                return hit.clone();
            }
            if Instant::now() >= until {
                let received = self.received.lock().unwrap();
                let names: Vec<&str> = received
                    .last()
                    .into_iter()
                    .flat_map(|(_, r)| &r.resource_metrics)
                    .flat_map(|r| &r.scope_metrics)
                    .flat_map(|s| &s.metrics)
                    .map(|m| m.name.as_str())
                    .collect();
                panic!(
                    "no matching OTLP export within {timeout:?}; got {} exports, the last with metrics {names:?}",
                    received.len()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

/// The value of the data point of sum or gauge `name` whose attributes
/// include `attrs`.
fn point(req: &ExportMetricsServiceRequest, name: &str, attrs: &[(&str, &str)]) -> Option<f64> {
    let metric = req
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .find(|m| m.name == name)?;
    let points = match metric.data.as_ref()? {
        metric::Data::Sum(s) => &s.data_points,
        metric::Data::Gauge(g) => &g.data_points,
        _ => return None,
    };
    let p = points.iter().find(|p| {
        attrs
            .iter()
            .all(|(k, v)| string_attr(&p.attributes, k).as_deref() == Some(*v))
    })?;
    match p.value? {
        number_data_point::Value::AsDouble(v) => Some(v),
        number_data_point::Value::AsInt(v) => Some(v as f64),
    }
}

#[test]
fn otlp_grpc_receiver_gets_the_values_prometheus_shows() {
    if !require_root() {
        return;
    }
    let receiver = Receiver::start(true);
    let endpoint = format!("http://{}", receiver.addr);
    let host = Host::start_with(
        &exec_counter_spec("exec-counter"),
        None,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            "grpc",
            "--otlp-interval-ms",
            "300",
            "--otlp-header",
            "x-tenant=team-a",
            "--resource-attr",
            "k8s.node.name=node-1,k8s.pod.name=conductor-abc",
        ],
        &[],
    );
    let bin = UniqueBinary::new("cndtotlp");
    const N: usize = 9;
    bin.run(N);
    let series = format!(
        r#"exec_counter__execs_total{{plugin="exec-counter",comm="{}",namespace="",pod="",container=""}}"#,
        bin.comm
    );
    let scraped = host.wait_for_metric(&series, Duration::from_secs(15), |v| v >= N as f64);
    assert_eq!(scraped, N as f64);

    let comm = bin.comm.clone();
    let (headers, req) = receiver.wait_for(
        Duration::from_secs(30),
        |r| {
            point(
                r,
                "exec_counter__execs",
                &[("plugin", "exec-counter"), ("comm", &comm)],
            )
        },
        |v| v >= N as f64,
    );
    let pushed = point(&req, "exec_counter__execs", &[("comm", &bin.comm)]).unwrap();
    assert_eq!(pushed, scraped, "OTLP and Prometheus views differ");
    assert_eq!(headers.get("x-tenant").map(String::as_str), Some("team-a"));

    let resource = &req.resource_metrics[0]
        .resource
        .as_ref()
        .unwrap()
        .attributes;
    assert_eq!(
        string_attr(resource, "service.name").as_deref(),
        Some("conductor")
    );
    assert_eq!(
        string_attr(resource, "k8s.node.name").as_deref(),
        Some("node-1")
    );
    assert_eq!(
        string_attr(resource, "k8s.pod.name").as_deref(),
        Some("conductor-abc")
    );
    let execs = req.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == "exec_counter__execs")
        .unwrap();
    let Some(metric::Data::Sum(sum)) = &execs.data else {
        panic!("{execs:?}")
    };
    assert!(sum.is_monotonic);
    assert_eq!(
        sum.aggregation_temporality,
        AggregationTemporality::Cumulative as i32
    );
    // The host's own metrics travel too, histograms included.
    assert!(
        req.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .any(|m| {
                m.name == "conductor_plugin_call_duration_seconds"
                    && matches!(m.data, Some(metric::Data::Histogram(_)))
            })
    );
    assert!(host.stop().success());
}

/// `conductor serve` (what the DaemonSet runs) starts through the same node
/// builder as `run`: the same OTLP flags push the same metrics.
#[test]
fn serve_pushes_otlp_like_run() {
    if !require_root() {
        return;
    }
    let receiver = Receiver::start(false);
    let endpoint = format!("http://{}", receiver.addr);
    let daemon = conductor_test_support::daemon::Daemon::start_with(&[
        "--otlp-endpoint",
        &endpoint,
        "--otlp-interval-ms",
        "300",
        "--resource-attr",
        "k8s.node.name=node-7",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("exec-counter.yaml");
    std::fs::write(&spec, exec_counter_spec("exec-counter")).unwrap();
    let loaded = daemon.cli(&["load", spec.to_str().unwrap()]);
    assert!(
        loaded.status.success(),
        "load failed: {}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let bin = UniqueBinary::new("cndtsrve");
    const N: usize = 5;
    bin.run(N);
    let comm = bin.comm.clone();
    let (_, req) = receiver.wait_for(
        Duration::from_secs(30),
        |r| {
            point(
                r,
                "exec_counter__execs",
                &[("plugin", "exec-counter"), ("comm", &comm)],
            )
        },
        |v| v >= N as f64,
    );
    assert_eq!(
        point(&req, "exec_counter__execs", &[("comm", &comm)]),
        Some(N as f64)
    );
    let resource = &req.resource_metrics[0]
        .resource
        .as_ref()
        .unwrap()
        .attributes;
    assert_eq!(
        string_attr(resource, "k8s.node.name").as_deref(),
        Some("node-7")
    );
}

#[test]
fn otlp_http_protobuf_with_delta_temporality_from_otel_environment() {
    if !require_root() {
        return;
    }
    let receiver = Receiver::start(false);
    let endpoint = format!("http://{}", receiver.addr);
    let spec = format!(
        "name: ticker\ncomponent: {}\ntickIntervalMs: 20\n",
        path_str(&artifact("testing_steady.wasm"))
    );
    // Configured through the standard variables only.
    let host = Host::start_with(
        &spec,
        None,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0k"),
            ("OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE", "delta"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "k8s.namespace.name=observability",
            ),
            ("OTEL_SERVICE_NAME", "conductor-node"),
        ],
    );
    // Two exports that both saw ticks: with delta temporality each carries
    // only the ticks since the previous one, so together they stay below
    // the cumulative count the host serves afterwards.
    let (headers, first) = receiver.wait_for(
        Duration::from_secs(30),
        |r| point(r, "ticker__ticks", &[("plugin", "ticker")]),
        |v| v > 0.0,
    );
    assert_eq!(
        headers.get("authorization").map(String::as_str),
        Some("Bearer t0k")
    );
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("application/x-protobuf")
    );
    let resource = &first.resource_metrics[0]
        .resource
        .as_ref()
        .unwrap()
        .attributes;
    assert_eq!(
        string_attr(resource, "service.name").as_deref(),
        Some("conductor-node")
    );
    assert_eq!(
        string_attr(resource, "k8s.namespace.name").as_deref(),
        Some("observability")
    );
    let ticks = first.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .find(|m| m.name == "ticker__ticks")
        .unwrap();
    let Some(metric::Data::Sum(sum)) = &ticks.data else {
        panic!("{ticks:?}")
    };
    assert_eq!(
        sum.aggregation_temporality,
        AggregationTemporality::Delta as i32
    );

    // Wait for a few exports, then compare their sum with the cumulative value.
    let until = Instant::now() + Duration::from_secs(30);
    while receiver.received.lock().unwrap().len() < 4 {
        assert!(Instant::now() < until, "fewer than 4 exports in 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pushed_total: f64 = receiver
        .received
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, r)| point(r, "ticker__ticks", &[("plugin", "ticker")]))
        .sum();
    let served = value(&host.scrape(), r#"ticker__ticks_total{plugin="ticker"}"#).unwrap();
    assert!(
        pushed_total > 0.0 && pushed_total <= served,
        "deltas {pushed_total}, cumulative {served}"
    );
    assert!(host.stop().success());
}

fn collector(name: &str, extra: &str) -> String {
    format!(
        "name: {name}\ncomponent: {}\nlimits:\n  callTimeoutMs: 30000\n  maxSeriesPerMetric: 5\n{extra}",
        path_str(&artifact("testing_collector.wasm"))
    )
}

#[test]
fn slow_and_failing_collect_hooks_do_not_fail_the_scrape() {
    if !require_root() {
        return;
    }
    let spec = [
        collector("slow", "config:\n  mode: slow\n  delayMs: \"8000\"\n"),
        collector("failing", "config:\n  mode: error\n"),
        collector("fine", "config:\n  series: \"8\"\n"),
    ]
    .join("---\n");
    let host = Host::start(&spec);

    // The first scrape waits at most the collect deadline (500 ms), not for
    // the slow plugin's 8 s: it shows the slow plugin's last value (0).
    let text = host.scrape();
    assert_eq!(
        value(&text, r#"slow__collected{plugin="slow"}"#),
        Some(0.0),
        "{text}"
    );
    // The healthy plugin is collected on every scrape.
    host.wait_for_metric(
        r#"fine__collected{plugin="fine"}"#,
        Duration::from_secs(30),
        |v| v >= 1.0,
    );
    // The failing collect is reported as a fault of that plugin alone, and
    // every scrape still succeeds.
    host.wait_for_metric(
        r#"conductor_plugin_faults_total{plugin="failing",kind="error"}"#,
        Duration::from_secs(30),
        |v| v >= 1.0,
    );
    assert!(
        value(
            &host.scrape(),
            r#"conductor_plugin_faults_total{plugin="fine""#
        )
        .is_none()
    );
    // The slow collect does finish, and a later scrape shows its value.
    host.wait_for_metric(
        r#"slow__collected{plugin="slow"}"#,
        Duration::from_secs(60),
        |v| v >= 1.0,
    );
    let text = host.scrape();

    // Cardinality cap: 8 label values against a cap of 5. The plugin got the
    // typed error for each refused sample, the host counted them, and only
    // 5 series exist.
    assert_eq!(
        value(&text, r#"fine__capped{plugin="fine"}"#),
        Some(3.0),
        "{text}"
    );
    assert_eq!(value(&text, r#"fine__cap_limit{plugin="fine"}"#), Some(5.0));
    assert_eq!(
        value(
            &text,
            r#"conductor_plugin_series_dropped_total{plugin="fine"}"#
        ),
        Some(3.0)
    );
    let series = text
        .lines()
        .filter(|l| l.starts_with("fine__labelled_total{"))
        .count();
    assert_eq!(series, 5, "{text}");
    assert!(host.stop().success());
}

#[test]
fn an_unreachable_collector_is_counted_and_never_fatal() {
    if !require_root() {
        return;
    }
    let spec = format!(
        "name: ticker\ncomponent: {}\ntickIntervalMs: 50\n",
        path_str(&artifact("testing_steady.wasm"))
    );
    // Nothing listens there: every export fails.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    for protocol in ["grpc", "http/protobuf"] {
        let host = Host::start_with(
            &spec,
            None,
            &[
                "--otlp-endpoint",
                &endpoint,
                "--otlp-protocol",
                protocol,
                "--otlp-interval-ms",
                "100",
                "--otlp-timeout-ms",
                "1000",
            ],
            &[],
        );
        host.wait_for_metric(
            r#"conductor_otlp_exports_total{outcome="error"}"#,
            Duration::from_secs(30),
            |v| v >= 2.0,
        );
        // The host keeps running its plugins and serving scrapes.
        host.wait_for_metric(
            r#"ticker__ticks_total{plugin="ticker"}"#,
            Duration::from_secs(30),
            |v| v >= 1.0,
        );
        assert!(host.stop().success(), "{protocol}");
    }
}

/// A plugin that counts ticks, for the OTLP transport tests.
fn ticker_spec() -> String {
    format!(
        "name: ticker\ncomponent: {}\ntickIntervalMs: 20\n",
        path_str(&artifact("testing_steady.wasm"))
    )
}

fn ticks(r: &ExportMetricsServiceRequest) -> Option<f64> {
    point(r, "ticker__ticks", &[("plugin", "ticker")])
}

/// gRPC over mutual TLS with gzip, configured through the generic
/// `OTEL_EXPORTER_OTLP_*` variables alone: the collector (tonic, demanding
/// a client certificate from the test's CA and accepting gzip) decodes the
/// export.
#[test]
fn otlp_grpc_over_mutual_tls_with_gzip_from_the_generic_variables() {
    if !require_root() {
        return;
    }
    let pki = Pki::new();
    let receiver = Receiver::start_tls(true, &pki, true);
    let endpoint = format!("https://{}", receiver.addr);
    let host = Host::start_with(
        &ticker_spec(),
        None,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", &pki.path("ca.pem")),
            (
                "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
                &pki.path("client.pem"),
            ),
            ("OTEL_EXPORTER_OTLP_CLIENT_KEY", &pki.path("client-key.pem")),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=team-b"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "5000"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
        ],
    );
    let (headers, req) = receiver.wait_for(Duration::from_secs(30), ticks, |v| v > 0.0);
    assert_eq!(
        headers.get("grpc-encoding").map(String::as_str),
        Some("gzip")
    );
    assert_eq!(headers.get("x-tenant").map(String::as_str), Some("team-b"));
    assert_eq!(
        headers.get(":peer-certificates").map(String::as_str),
        Some("1"),
        "the client certificate was not presented: {headers:?}"
    );
    assert!(
        req.resource_metrics[0].scope_metrics[0]
            .metrics
            .iter()
            .any(|m| m.name == "conductor_plugin_call_duration_seconds"),
        "the host's metrics are missing"
    );
    assert!(host.stop().success());
}

/// HTTP/protobuf over TLS (server authentication) with gzip, through the
/// metrics-specific variables, which win over the generic ones: the
/// generic ones here name a CA file that does not exist and no compression.
#[test]
fn otlp_http_over_tls_with_gzip_from_the_metrics_variables() {
    if !require_root() {
        return;
    }
    let pki = Pki::new();
    let receiver = Receiver::start_tls(false, &pki, false);
    let url = format!("https://{}/v1/metrics", receiver.addr);
    let host = Host::start_with(
        &ticker_spec(),
        None,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", &url),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_CERTIFICATE",
                &pki.path("ca.pem"),
            ),
            ("OTEL_EXPORTER_OTLP_CERTIFICATE", "/nonexistent/ca.pem"),
            ("OTEL_EXPORTER_OTLP_METRICS_COMPRESSION", "gzip"),
            ("OTEL_EXPORTER_OTLP_COMPRESSION", "none"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-tenant=metrics"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=generic"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "300"),
        ],
    );
    let (headers, _) = receiver.wait_for(Duration::from_secs(30), ticks, |v| v > 0.0);
    assert_eq!(
        headers.get("content-encoding").map(String::as_str),
        Some("gzip")
    );
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("application/x-protobuf")
    );
    assert_eq!(headers.get("x-tenant").map(String::as_str), Some("metrics"));
    assert!(host.stop().success());
}

/// HTTP/JSON over mutual TLS, from flags: the body is the OTLP JSON
/// mapping (camelCase fields, 64-bit integers as strings, enums as
/// numbers) and decodes to the same export.
#[test]
fn otlp_http_json_over_mutual_tls_from_flags() {
    if !require_root() {
        return;
    }
    let pki = Pki::new();
    let receiver = Receiver::start_tls(false, &pki, true);
    let endpoint = format!("https://{}", receiver.addr);
    let host = Host::start_with(
        &ticker_spec(),
        None,
        &[
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            "http/json",
            "--otlp-certificate",
            &pki.path("ca.pem"),
            "--otlp-client-certificate",
            &pki.path("client.pem"),
            "--otlp-client-key",
            &pki.path("client-key.pem"),
            "--otlp-interval-ms",
            "300",
        ],
        &[],
    );
    let (headers, _) = receiver.wait_for(Duration::from_secs(30), ticks, |v| v > 0.0);
    assert_eq!(
        headers.get("content-type").map(String::as_str),
        Some("application/json")
    );
    let body: serde_json::Value = serde_json::from_str(&headers[":body"]).unwrap();
    let metrics = &body["resourceMetrics"][0]["scopeMetrics"][0]["metrics"];
    let ticks = metrics
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "ticker__ticks")
        .unwrap_or_else(|| panic!("no ticker__ticks in {body}"));
    let point = &ticks["sum"]["dataPoints"][0];
    assert!(point["timeUnixNano"].is_string(), "{point}");
    assert!(point["asDouble"].is_number(), "{point}");
    assert_eq!(
        ticks["sum"]["aggregationTemporality"],
        AggregationTemporality::Cumulative as i32
    );
    assert!(
        receiver.tls_peers.lock().unwrap().iter().all(|&n| n == 1),
        "a connection came without the client certificate"
    );
    assert!(host.stop().success());
}

/// Without a CA file the system's trusted roots verify the collector: here
/// the system store is pointed at the test's CA with `SSL_CERT_FILE`, as
/// OpenSSL and rustls-native-certs read it. Both transports.
#[test]
fn otlp_over_tls_trusts_the_system_roots_by_default() {
    if !require_root() {
        return;
    }
    let pki = Pki::new();
    for grpc in [true, false] {
        let receiver = Receiver::start_tls(grpc, &pki, false);
        let host = Host::start_with(
            &ticker_spec(),
            None,
            &[
                "--otlp-endpoint",
                &format!("https://{}", receiver.addr),
                "--otlp-protocol",
                if grpc { "grpc" } else { "http/protobuf" },
                "--otlp-interval-ms",
                "300",
            ],
            &[("SSL_CERT_FILE", &pki.path("ca.pem"))],
        );
        receiver.wait_for(Duration::from_secs(30), ticks, |v| v > 0.0);
        assert!(host.stop().success());
    }
}

/// Without its client certificate the exporter is refused by a collector
/// that demands one: every export fails, is counted, and the host runs on.
#[test]
fn otlp_without_the_client_certificate_is_refused_and_counted() {
    if !require_root() {
        return;
    }
    let pki = Pki::new();
    let receiver = Receiver::start_tls(true, &pki, true);
    let host = Host::start_with(
        &ticker_spec(),
        None,
        &[
            "--otlp-endpoint",
            &format!("https://{}", receiver.addr),
            "--otlp-protocol",
            "grpc",
            "--otlp-certificate",
            &pki.path("ca.pem"),
            "--otlp-interval-ms",
            "200",
            "--otlp-timeout-ms",
            "2000",
        ],
        &[],
    );
    host.wait_for_metric(
        r#"conductor_otlp_exports_total{outcome="error"}"#,
        Duration::from_secs(30),
        |v| v >= 2.0,
    );
    assert!(receiver.received.lock().unwrap().is_empty());
    assert!(host.stop().success());
}

/// A CA file that cannot be read stops the start with an error naming the
/// file and the setting.
#[test]
fn an_unreadable_otlp_ca_file_is_a_clear_start_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("ticker.yaml");
    std::fs::write(&spec, ticker_spec()).unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    let out = std::process::Command::new(conductor_bin())
        .arg("run")
        .arg(&spec)
        .args(["--metrics-addr", "127.0.0.1:0"])
        .args(["--otlp-endpoint", "https://127.0.0.1:4318"])
        .arg("--otlp-certificate")
        .arg(&missing)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started anyway: {stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot read the OTLP CA certificate file {}",
            missing.display()
        )) && stderr.contains("--otlp-certificate"),
        "{stderr}"
    );
}
