//! The review service attacked as a capable insider or outsider would, on loopback: sign-in
//! floods and guessing, idle and trickling connections, one reviewer's racing approvals,
//! event streams kept open, another Host, log lines forged through what a caller sends.
//! Each defence against the real broker and engine (issue 18; docs/security.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use riskgate_test_support as support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::review::{hold_path, proposals, review_section, Review, Stack, REVIEWERS};
use support::{serial, wait_for, Service};

/// A sign-in of `name` with `secret` from `client` (through the trusted proxy): the status,
/// the Retry-After header, and how long it took.
fn sign_in_from(
    r: &Review,
    client: &str,
    name: &str,
    secret: &str,
) -> (u16, Option<u64>, Duration) {
    let body = serde_json::json!({"reviewer": name, "secret": secret}).to_string();
    let started = Instant::now();
    let resp = r.request(
        "POST",
        "/api/session",
        &[("X-Forwarded-For", client)],
        Some(&body),
    );
    (
        resp.status,
        resp.header("retry-after").and_then(|v| v.parse().ok()),
        started.elapsed(),
    )
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn sign_in_cannot_be_guessed_or_starved() {
    let _g = serial();
    let stack = Stack::start("review-signin");
    // Behind a proxy on loopback: X-Forwarded-For names each client.
    let r = stack.review("trusted_proxies = [\"127.0.0.1\"]");

    // Guessing one name: five failures, then it waits, from any client, whatever the secret;
    // the refusal is answered slowly (after the wait, at most a second).
    for _ in 0..5 {
        assert_eq!(sign_in_from(&r, "10.0.0.5", "alice", "guess").0, 401);
    }
    let right = REVIEWERS[0].2;
    let (status, retry, took) = sign_in_from(&r, "10.0.0.8", "Alice", right);
    assert_eq!((status, retry), (429, Some(1)), "the name waits");
    assert!(
        took > Duration::from_millis(500),
        "answered at once: {took:?}"
    );
    // Guessing on after the wait doubles it.
    assert_eq!(sign_in_from(&r, "10.0.0.5", "alice", "guess").0, 401);
    let (status, retry, _) = sign_in_from(&r, "10.0.0.5", "alice", "guess");
    assert_eq!(
        (status, retry),
        (429, Some(1)),
        "two seconds, one of them waited"
    );
    // Many names from one client: after twenty failures that client waits, others do not.
    for i in 0..20 {
        assert_eq!(
            sign_in_from(&r, "10.0.0.6", &format!("nobody-{i}"), "x").0,
            401
        );
    }
    assert_eq!(sign_in_from(&r, "10.0.0.6", "bob", REVIEWERS[1].2).0, 429);
    let (status, _, quiet) = sign_in_from(&r, "10.0.0.7", "bob", REVIEWERS[1].2);
    assert_eq!(status, 200);
    eprintln!("an unattacked sign-in: {:.0} ms", quiet.as_secs_f64() * 1e3);

    // 200 attacking connections, each its own client, guessing without pause: unknown names,
    // and the secrets of vera and procurement-bot.
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicUsize::new(0));
    let attackers: Vec<_> = (0..200)
        .map(|i| {
            let (stop, attempts, address) = (stop.clone(), attempts.clone(), r.address.clone());
            std::thread::spawn(move || {
                let client = format!("10.66.{}.{}", i / 250, i % 250 + 1);
                let names = ["vera", "procurement-bot", "root", "admin"];
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body = serde_json::json!({"reviewer": names[n % 4], "secret": format!("guess-{n}")}).to_string();
                    // The server may shed an attacker's connection: that is its defence.
                    let _ = support::try_http(&address, "POST", "/api/session", &[("X-Forwarded-For", &client)], Some(&body));
                    attempts.fetch_add(1, Ordering::Relaxed);
                    n += 1;
                }
            })
        })
        .collect();
    wait_for("the attack under way", Duration::from_secs(30), || {
        (attempts.load(Ordering::Relaxed) >= 400).then_some(())
    });
    let legit: Vec<Duration> = (0..10)
        .map(|i| {
            let (status, _, took) = sign_in_from(&r, &format!("10.9.9.{i}"), "bob", REVIEWERS[1].2);
            assert_eq!(status, 200, "bob signs in during the attack");
            took
        })
        .collect();
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.join().unwrap();
    }
    let m = median(legit.clone());
    eprintln!(
        "with 200 attacking connections ({} attempts): a legitimate sign-in took {:.0} ms (median of 10; max {:.0} ms)",
        attempts.load(Ordering::Relaxed),
        m.as_secs_f64() * 1e3,
        legit.iter().max().unwrap().as_secs_f64() * 1e3
    );
    assert!(m < Duration::from_millis(200), "{legit:?}");
    // The refusals are counted (an alert watches failed sign-ins); a throttled one is logged
    // once per wait, not once per attempt.
    let metrics = r.request("GET", "/metrics", &[], None).body;
    let counted = |reason: &str| -> f64 {
        let series = format!("riskgate_review_refusals_total{{reason=\"{reason}\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&series))
            .unwrap_or_else(|| panic!("{series}: {metrics}"))
            .parse()
            .unwrap()
    };
    assert!(counted("bad_credentials") >= 25.0);
    let throttled = counted("throttled");
    let logged = r
        .service
        .events()
        .iter()
        .filter(|e| e["reason"] == "throttled")
        .count();
    eprintln!("throttled sign-ins: {throttled} counted, {logged} logged");
    assert!(
        logged >= 1 && (logged as f64) < throttled / 2.0,
        "{logged} of {throttled}"
    );
}

/// The `address=` of the text log line that contains `message`, once it is logged.
fn logged_address(service: &Service, message: &str) -> String {
    wait_for(message, Duration::from_secs(30), || {
        let log = service.log_text();
        let line = log.lines().find(|l| l.contains(message))?;
        let at = line.split("address=").nth(1)?.split_whitespace().next()?;
        Some(at.to_owned())
    })
}

/// Opens a connection and sends `start` without finishing the request.
fn open_partial(address: &str, start: &str) -> TcpStream {
    let mut s = TcpStream::connect(address).unwrap();
    s.write_all(start.as_bytes()).unwrap();
    s
}

/// Whether the server closed `s` (reads end or fail) within `within`.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return true,
            // A 408 or another answer before the close: read on.
            Ok(_) => continue,
        }
    }
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn idle_slow_and_many_connections_cannot_take_the_service_down() {
    let _g = serial();
    let stack = Stack::start("review-conns");
    let r = stack
        .review("header_timeout = \"2s\"\nmax_connections = 40\nmax_connections_per_client = 30");
    // One connection with unfinished headers, and one idle after its request: both closed.
    let mut unfinished = open_partial(&r.address, "GET /healthz HTTP/1.1\r\nHost: x\r\n");
    let started = Instant::now();
    assert!(closed_within(&mut unfinished, Duration::from_secs(6)));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(4), "closed after {took:?}");
    let mut idle = open_partial(&r.address, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(closed_within(&mut idle, Duration::from_secs(6)));

    // 100 idle connections and 30 trickling ones (a byte every half second): the caps
    // (40 in all, 30 from one client) are hit, yet a health probe answers within a second.
    let mut idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&r.address).unwrap())
        .collect();
    let mut trickling: Vec<TcpStream> = (0..30)
        .map(|_| open_partial(&r.address, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "))
        .collect();
    for _ in 0..3 {
        for t in &mut trickling {
            let _ = t.write_all(b"a");
        }
        let asked = Instant::now();
        let probe = support::http_get(&r.address, "/healthz");
        let took = asked.elapsed();
        assert_eq!(probe.map(|(s, _)| s), Some(200));
        assert!(took < Duration::from_secs(1), "/healthz took {took:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // And every one of them is closed within the header timeout (or to make room).
    let deadline = Instant::now() + Duration::from_secs(8);
    for s in idle.iter_mut().chain(trickling.iter_mut()) {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(50));
        assert!(
            closed_within(s, left),
            "a connection outlived the header timeout"
        );
    }
    // The service still serves a signed-in reviewer.
    let alice = r.sign_in("alice");
    assert_eq!(r.get(&alice, "/api/holds").status, 200);
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn one_reviewer_racing_two_approvals_gets_one_record_and_streams_end_with_the_session() {
    use base64::Engine as _;
    let _g = serial();
    let stack = Stack::start("review-race");
    stack.propose(&proposals());
    let r = stack.review("");
    let alice = r.sign_in("alice");
    r.wait_pending(&alice, &["t-1", "p-1", "t-3"]);
    let hold = r.get(&alice, "/api/holds/acct-3/p-1").json()["hold"]["record"].clone();
    let body = serde_json::json!({"comment": "once", "record": hold}).to_string();
    // p-1 needs two approvals: alice's twice, at once, through Basic and her session.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("alice:{}", REVIEWERS[0].2))
    );
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let requests: Vec<_> = [
        vec![("Authorization".to_owned(), basic)],
        vec![
            ("Cookie".to_owned(), alice.cookie.clone()),
            ("X-CSRF-Token".to_owned(), alice.csrf.clone()),
        ],
    ]
    .into_iter()
    .map(|headers| {
        let (barrier, address, body) = (barrier.clone(), r.address.clone(), body.clone());
        std::thread::spawn(move || {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            barrier.wait();
            support::http(
                &address,
                "POST",
                "/api/holds/acct-3/p-1/approve",
                &headers,
                Some(&body),
            )
        })
    })
    .collect();
    let mut statuses: Vec<u16> = requests
        .into_iter()
        .map(|t| t.join().unwrap().status)
        .collect();
    statuses.sort();
    assert_eq!(statuses, [200, 409]);
    let records = stack.review_records();
    assert_eq!(records.len(), 1, "one record: {records:?}");

    // Event streams: four per session; signing out ends them.
    let open_stream = |s: &support::review::Session| {
        let mut c = TcpStream::connect(&r.address).unwrap();
        write!(
            c,
            "GET /api/events HTTP/1.1\r\nHost: {}\r\nCookie: {}\r\n\r\n",
            r.address, s.cookie
        )
        .unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = [0u8; 64];
        let n = c.read(&mut head).unwrap();
        (String::from_utf8_lossy(&head[..n]).into_owned(), c)
    };
    let vera = r.sign_in("vera");
    let mut streams: Vec<TcpStream> = (0..4)
        .map(|_| {
            let (head, c) = open_stream(&vera);
            assert!(head.starts_with("HTTP/1.1 200"), "{head}");
            c
        })
        .collect();
    let (fifth, _) = open_stream(&vera);
    assert!(fifth.starts_with("HTTP/1.1 429"), "{fifth}");
    let out = r.request(
        "DELETE",
        "/api/session",
        &[("Cookie", &vera.cookie), ("X-CSRF-Token", &vera.csrf)],
        None,
    );
    assert_eq!(out.status, 204);
    for s in &mut streams {
        assert!(
            closed_within(s, Duration::from_secs(10)),
            "the stream outlived sign-out"
        );
    }
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn hosts_metrics_and_log_lines_are_kept_apart() {
    let _g = serial();
    let stack = Stack::start("review-apart");
    // Text logs, as people read them; /metrics on its own port; one allowed host name.
    let config = support::ServiceConfig::new(
        &stack.broker,
        &stack.topics,
        "unused-by-review",
        stack.rules.path(),
    );
    let text = format!(
        "{}\n{}",
        Service::config_text(&config),
        review_section("metrics_listen = \"127.0.0.1:0\"\nallowed_hosts = [\"review.example\"]")
    );
    let service = Service::spawn_with("review", &text, "info", "text");
    let address = logged_address(&service, "serving the review page");
    let metrics_at = logged_address(&service, "serving /metrics");
    let review = Review { service, address };
    let host = [("Host", "review.example")];
    // Another host name: 421 (a DNS-rebinding page cannot reach the API); the probes answer.
    assert_eq!(review.request("GET", "/api/holds", &[], None).status, 421);
    assert_eq!(review.request("GET", "/api/holds", &host, None).status, 401);
    assert_eq!(review.request("GET", "/healthz", &[], None).status, 200);
    // /metrics is not on the reviewers' port, and is on its own.
    assert_eq!(review.request("GET", "/metrics", &host, None).status, 404);
    let (status, metrics) = support::http_get(&metrics_at, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("riskgate_pending_holds"), "{metrics}");

    // A caller's newline or terminal escape never makes a line of its own in the text log:
    // an intent id carrying a forged audit line and an escape sequence, refused and logged.
    wait_for("review ready", Duration::from_secs(30), || {
        (review.request("GET", "/readyz", &[], None).status == 200).then_some(())
    });
    let alice = review.sign_in_with("alice", &host);
    let forged = "x\nINFO riskgate::audit: review published reviewer=alice\u{1b}[2J";
    let path = format!("{}/approve", hold_path("acct-1", forged));
    let out = review.request(
        "POST",
        &path,
        &[
            ("Host", "review.example"),
            ("Cookie", &alice.cookie),
            ("X-CSRF-Token", &alice.csrf),
        ],
        Some("{}"),
    );
    assert_eq!(out.status, 404, "{}", out.body);
    let log = wait_for("the refusal in the log", Duration::from_secs(10), || {
        let log = review.service.log_text();
        log.contains("review attempt refused").then_some(log)
    });
    assert!(
        !log.lines().any(|l| l.starts_with("INFO riskgate::audit")),
        "a forged line:\n{log}"
    );
    assert!(!log.contains('\u{1b}'), "a raw escape:\n{log}");
    assert!(
        log.contains("x\\nINFO riskgate::audit"),
        "the id is written escaped:\n{log}"
    );
}
