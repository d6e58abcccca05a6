//! The HTTP endpoint: `/metrics` (OpenMetrics text), `/healthz` (the
//! process serves) and `/readyz` (its plugins are loaded: for `conductor
//! run` once every plugin of the spec file is, for the daemon once the
//! persisted plugins were brought back; and none of them is `Failed`,
//! `Restarting` or `CrashLoopBackOff`, i.e. every plugin the host should
//! run does).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

use crate::manager::{Manager, Phase};

/// How long a scrape waits for plugins' `collect` exports.
const COLLECT_DEADLINE: Duration = Duration::from_millis(500);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Bind the metrics address (separately from serving, so a taken port is
/// reported before any plugin is loaded).
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for metrics on {addr}: {e} (choose another with --metrics-addr)"
        )
    })?;
    tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
    Ok(listener)
}

/// How long the HTTP endpoint waits for its clients.
#[derive(Clone, Copy, Debug)]
pub struct HttpTimeouts {
    /// A request's headers must arrive within this after its first byte
    /// is awaited (slow or half requests are answered 408 and closed).
    pub header_read: Duration,
    /// A connection with no byte read or written for this long is closed
    /// (idle keep-alive connections, peers that connect and say nothing).
    pub idle: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            idle: Duration::from_secs(60),
        }
    }
}

/// Serve `/metrics`, `/healthz` and `/readyz` (200 once `ready` is set and
/// no plugin is `Failed`, `Restarting`, `CrashLoopBackOff` or `Pending`
/// with an error (waiting for its bpfman program to come back; not one
/// merely waiting for its turn), 503
/// otherwise, naming them) until
/// `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    manager: Arc<Manager>,
    ready: Arc<AtomicBool>,
    timeouts: HttpTimeouts,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move |State(manager): State<Arc<Manager>>| async move {
                if !ready.load(Ordering::Acquire) {
                    return (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "loading plugins\n".to_owned(),
                    );
                }
                let down: String = manager
                    .list()
                    .iter()
                    .filter(|p| {
                        matches!(
                            p.phase,
                            Phase::Failed | Phase::Restarting | Phase::CrashLoopBackOff
                        ) || (p.phase == Phase::Pending && p.last_error.is_some())
                    })
                    .map(|p| {
                        format!(
                            "plugin {} is {}: {}\n",
                            p.name,
                            p.phase,
                            p.last_error.as_deref().unwrap_or("")
                        )
                    })
                    .collect();
                if down.is_empty() {
                    (StatusCode::OK, "ready\n".to_owned())
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, down)
                }
            }),
        )
        .with_state(manager);
    // hyper directly rather than `axum::serve`: that one sets no timer, so
    // hyper's header-read timeout never fires, and it has no idle timeout.
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    let http = Arc::new(http);
    let (closing, _) = tokio::sync::watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors: the backlog stays readable, so do
                    // not spin.
                    tracing::warn!("cannot accept a metrics connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let io = TokioIo::new(crate::idle::IdleTimeout::new(stream, timeouts.idle));
        let service = TowerToHyperService::new(app.clone());
        let http = http.clone();
        let mut closing_rx = closing.subscribe();
        tokio::spawn(async move {
            let conn = http.serve_connection(io, service);
            let mut conn = std::pin::pin!(conn);
            let closing = tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!("metrics connection closed: {e}");
                    }
                    false
                }
                _ = closing_rx.wait_for(|c| *c) => true,
            };
            if closing {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        });
    }
    let _ = closing.send(true);
    Ok(())
}

async fn metrics(State(manager): State<Arc<Manager>>, headers: HeaderMap) -> Response {
    let openmetrics = wants_openmetrics(&headers);
    let result = tokio::task::spawn_blocking(move || {
        manager.collect(COLLECT_DEADLINE);
        manager.metrics().encode()
    })
    .await;
    match result {
        Ok(Ok(text)) if openmetrics => {
            ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response()
        }
        Ok(Ok(text)) => (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            crate::metrics::openmetrics_to_prometheus_text(&text),
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {e}\n"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("collecting metrics failed: {e}\n"),
        )
            .into_response(),
    }
}

/// Content negotiation: OpenMetrics when the client accepts it (Prometheus
/// asks for it first), the classic text format otherwise (curl, promtool and
/// older scrapers), as Prometheus client libraries do.
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';').map(str::trim);
            parts.next() == Some("application/openmetrics-text")
                && parts
                    .find_map(|p| p.strip_prefix("q="))
                    .map_or(1.0, |q| q.parse::<f32>().unwrap_or(0.0))
                    > 0.0
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn negotiates_openmetrics_only_when_asked() {
        // What Prometheus 2.x sends.
        assert!(wants_openmetrics(&accept(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(&accept("*/*")));
        assert!(!wants_openmetrics(&accept("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(&accept(
            "application/openmetrics-text;q=0"
        )));
        assert!(!wants_openmetrics(&HeaderMap::new()));
    }
}
