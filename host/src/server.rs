//! The HTTP endpoint: `/metrics` (OpenMetrics text) and `/healthz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::manager::Manager;

/// How long a scrape waits for plugins' `collect` exports.
const COLLECT_DEADLINE: Duration = Duration::from_millis(500);

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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

/// Serve `/metrics` and `/healthz` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    manager: Arc<Manager>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(manager);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

async fn metrics(State(manager): State<Arc<Manager>>) -> Response {
    let result = tokio::task::spawn_blocking(move || {
        manager.collect(COLLECT_DEADLINE);
        manager.metrics().encode()
    })
    .await;
    match result {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
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
