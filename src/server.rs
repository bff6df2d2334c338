//! The HTTP server loop of every riskgate listener (the service's probes and metrics, the
//! review page and API, the gateway): axum routes served by hyper with connection limits, so
//! that idle, slow or many connections cannot take a listener down.
//!
//! * **Timeouts.** A connection must send a request's headers within `header_timeout` of
//!   opening, and of finishing its previous request (hyper's header-read timer also runs
//!   while a kept-alive connection waits): an idle or trickling connection is closed.
//! * **Caps.** At most `max_connections` connections in all and `per_client` from one client
//!   address (a trusted proxy, which carries many clients' connections, has only the cap in
//!   all). A new connection over a cap does not wait and is not refused: it takes the
//!   place of the oldest connection that has not completed a request yet (or, if all have,
//!   the oldest of them), so a health probe always gets through, and a flood of connections
//!   only churns itself. The cap in all is kept below the process's open-file limit.
//! * **Who.** Each request carries its client's address ([`ClientAddr`]) for the handlers
//!   (sign-in throttles); behind a proxy it comes from `X-Forwarded-For` when the peer is a
//!   configured trusted proxy.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tower::ServiceExt as _;

/// Connection limits of a listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The most connections at once (kept below the open-file limit).
    pub max_connections: usize,
    /// The most connections from one client address at once (not counted for a trusted
    /// proxy).
    pub per_client: usize,
    /// The time a connection has to send a request's headers (and an idle one to send its
    /// next request).
    pub header_timeout: Duration,
    /// Peers whose `X-Forwarded-For` names the client (the last address in it).
    pub trusted_proxies: Vec<IpAddr>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            per_client: 64,
            header_timeout: Duration::from_secs(10),
            trusted_proxies: Vec::new(),
        }
    }
}

/// The address of the client a request comes from (an extension of every request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Open files kept free for everything else the process does (Kafka connections, logs).
const FILES_RESERVED: u64 = 64;

/// The process's soft limit of open files, if it can be read.
fn open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given and nothing else.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (ok && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

impl Limits {
    /// `max_connections`, lowered below the open-file limit when that is lower.
    pub fn effective_max(&self) -> usize {
        let by_files = open_file_limit()
            .map(|l| l.saturating_sub(FILES_RESERVED).max(8))
            .and_then(|l| usize::try_from(l).ok())
            .unwrap_or(usize::MAX);
        self.max_connections.min(by_files).max(1)
    }
}

/// One open connection, as the loop tracks it.
struct Conn {
    client: IpAddr,
    opened: Instant,
    /// It has completed a request.
    served: Arc<AtomicBool>,
    close: Arc<Notify>,
}

/// The open connections of a listener.
#[derive(Default)]
struct Open {
    conns: HashMap<u64, Conn>,
}

impl Open {
    /// The connection to close so that one more from `client` fits, if one must go.
    fn victim(&self, client: IpAddr, limits: &Limits, max: usize) -> Option<u64> {
        let of_client = self.conns.values().filter(|c| c.client == client).count();
        let pick = |same_client: bool| {
            self.conns
                .iter()
                .filter(|(_, c)| !same_client || c.client == client)
                // Not yet served first, then the oldest.
                .min_by_key(|(_, c)| (c.served.load(Ordering::Relaxed), c.opened))
                .map(|(id, _)| *id)
        };
        if of_client >= limits.per_client && !limits.trusted_proxies.contains(&client) {
            pick(true)
        } else if self.conns.len() >= max {
            pick(false)
        } else {
            None
        }
    }
}

/// The client of a request from `peer`: the last `X-Forwarded-For` address when `peer` is a
/// trusted proxy, else `peer`.
pub fn client_of(peer: IpAddr, headers: &axum::http::HeaderMap, limits: &Limits) -> IpAddr {
    if !limits.trusted_proxies.contains(&peer) {
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .next_back()
        .unwrap_or(peer)
}

/// The host name of a `Host` header, without its port: `review.example` of
/// `review.example:9465`, `[::1]` of `[::1]:9465`.
pub fn host_name(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port))
            if port.bytes().all(|b| b.is_ascii_digit())
                && (!name.contains(':') || name.ends_with(']')) =>
        {
            name
        }
        _ => host,
    }
}

/// Serves `router` on `listener` with `limits` until the process ends.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits) {
    let limits = Arc::new(limits);
    let max = limits.effective_max();
    let open = Arc::new(Mutex::new(Open::default()));
    let ids = AtomicU64::new(0);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of files, or a connection reset before it was accepted: go on.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let id = ids.fetch_add(1, Ordering::Relaxed);
        let served = Arc::new(AtomicBool::new(false));
        let close = Arc::new(Notify::new());
        {
            let mut o = open.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(victim) = o.victim(peer.ip(), &limits, max) {
                if let Some(c) = o.conns.remove(&victim) {
                    c.close.notify_one();
                }
            }
            o.conns.insert(
                id,
                Conn {
                    client: peer.ip(),
                    opened: Instant::now(),
                    served: served.clone(),
                    close: close.clone(),
                },
            );
        }
        let (router, limits, open) = (router.clone(), limits.clone(), open.clone());
        tokio::spawn(async move {
            serve_connection(stream, peer, router, &limits, served, close).await;
            open.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .conns
                .remove(&id);
        });
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: &Limits,
    served: Arc<AtomicBool>,
    close: Arc<Notify>,
) {
    let trusted = limits.clone();
    let service = hyper::service::service_fn(move |mut request: Request<hyper::body::Incoming>| {
        let client = client_of(peer.ip(), request.headers(), &trusted);
        request.extensions_mut().insert(ClientAddr(client));
        let served = served.clone();
        let router = router.clone();
        async move {
            let response = router.oneshot(request.map(axum::body::Body::new)).await;
            served.store(true, Ordering::Relaxed);
            response
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, peer = %peer, "connection closed");
            }
        }
        () = close.notified() => {
            // Taken over by a newer connection: close now (a response in flight is cut).
            tracing::debug!(peer = %peer, "connection closed to make room for a newer one");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(client: [u8; 4], age_ms: u64, served: bool) -> Conn {
        Conn {
            client: IpAddr::from(client),
            opened: Instant::now() - Duration::from_millis(age_ms),
            served: Arc::new(AtomicBool::new(served)),
            close: Arc::new(Notify::new()),
        }
    }

    #[test]
    fn a_new_connection_over_a_cap_takes_the_place_of_the_oldest_unserved_one() {
        let limits = Limits {
            max_connections: 3,
            per_client: 2,
            ..Limits::default()
        };
        let mut open = Open::default();
        open.conns.insert(1, conn([10, 0, 0, 1], 300, true));
        open.conns.insert(2, conn([10, 0, 0, 2], 200, false));
        assert_eq!(open.victim(IpAddr::from([10, 0, 0, 3]), &limits, 3), None);
        open.conns.insert(3, conn([10, 0, 0, 2], 100, false));
        // Full: the oldest that never completed a request goes, not the older served one.
        assert_eq!(
            open.victim(IpAddr::from([10, 0, 0, 3]), &limits, 3),
            Some(2)
        );
        // A client at its own cap replaces its own oldest.
        open.conns.remove(&1);
        assert_eq!(
            open.victim(IpAddr::from([10, 0, 0, 2]), &limits, 9),
            Some(2)
        );
        // A trusted proxy carries many clients: only the cap in all applies to it.
        let proxied = Limits {
            trusted_proxies: vec![IpAddr::from([10, 0, 0, 2])],
            ..limits
        };
        assert_eq!(open.victim(IpAddr::from([10, 0, 0, 2]), &proxied, 9), None);
    }

    #[test]
    fn a_host_is_compared_without_its_port() {
        assert_eq!(host_name("review.example:9465"), "review.example");
        assert_eq!(host_name("review.example"), "review.example");
        assert_eq!(host_name("[::1]:9465"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("::1"), "::1");
        assert_eq!(host_name("evil:x"), "evil:x");
    }

    #[test]
    fn the_client_is_the_peer_unless_the_peer_is_a_trusted_proxy() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7".parse().unwrap(),
        );
        let proxy = IpAddr::from([127, 0, 0, 1]);
        let open = Limits::default();
        assert_eq!(client_of(proxy, &headers, &open), proxy);
        let behind = Limits {
            trusted_proxies: vec![proxy],
            ..Limits::default()
        };
        assert_eq!(
            client_of(proxy, &headers, &behind),
            IpAddr::from([198, 51, 100, 7])
        );
        assert!(Limits::default().effective_max() >= 1);
    }
}
