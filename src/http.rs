//! The service's HTTP side: `/metrics` (Prometheus text format), `/healthz` (the process is
//! alive) and `/readyz` (partitions assigned, state restored, broker reachable), usable as
//! Kubernetes probes.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::pipeline::Health;
use crate::telemetry::metrics;

/// The router for the three endpoints.
pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(health)
}

/// Binds `listen` and serves until the process ends; returns the bound address (port 0
/// picks a free one).
pub async fn serve(listen: SocketAddr, health: Arc<Health>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(health)).await {
            tracing::error!(error = %e, "the HTTP server stopped");
        }
    });
    Ok(bound)
}

async fn render_metrics(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let m = metrics();
    m.ready.set(i64::from(health.ready()));
    m.partitions_assigned
        .set(health.partitions.load(Ordering::Relaxed) as i64);
    m.partitions_restoring
        .set(health.restoring.load(Ordering::Relaxed) as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
}

async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let restoring = health.restoring.load(Ordering::Relaxed);
    let assigned = health.assigned.load(Ordering::Relaxed);
    let broker = health.broker_up.load(Ordering::Relaxed);
    let body = format!(
        "{{\"ready\":{},\"assigned\":{assigned},\"partitions\":{},\"restoring\":{restoring},\"broker_reachable\":{broker},\"leaderless_partitions\":{},\"stalled\":{},\"unproducible_partitions\":{}}}\n",
        health.ready(),
        health.partitions.load(Ordering::Relaxed),
        health.leaderless(),
        health.stalled(),
        health.unproducible.load(Ordering::Relaxed),
    );
    let status = if health.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, [(header::CONTENT_TYPE, "application/json")], body)
}
