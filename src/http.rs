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
    // Idle and slow connections are closed, and a flood of them cannot keep a probe out.
    tokio::spawn(crate::server::serve(
        listener,
        router(health),
        crate::server::Limits::default(),
    ));
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

/// Why [`probe`] got no status.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("`{0}` is not a plain-HTTP URL such as `http://127.0.0.1:9464/readyz`")]
    Url(String),
    #[error("cannot reach `{url}`: {error}")]
    Io { url: String, error: std::io::Error },
    #[error("`{0}` did not answer with an HTTP status line")]
    Answer(String),
}

/// The whole seconds a `Retry-After` header gives for `wait`: rounded up, at least 1.
pub fn retry_after_secs(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// `GET url` over plain HTTP/1.0, within `timeout` for each step: the status code. A probe
/// for container healthchecks (`riskgate probe`), which have no curl in a slim image.
pub fn probe(url: &str, timeout: std::time::Duration) -> Result<u16, ProbeError> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ProbeError::Url(url.to_owned()))?;
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let io = |error| ProbeError::Io {
        url: url.to_owned(),
        error,
    };
    let address = host
        .to_socket_addrs()
        .map_err(io)?
        .next()
        .ok_or_else(|| ProbeError::Url(url.to_owned()))?;
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    // One write: a server may read the request line in one go.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]).map_err(io)? {
            0 => break,
            n => read += n,
        }
    }
    let text = String::from_utf8_lossy(&head[..read]);
    text.strip_prefix("HTTP/1.")
        .and_then(|t| t.get(2..5))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| ProbeError::Answer(url.to_owned()))
}
