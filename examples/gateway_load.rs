//! Load on `riskgate gateway`, with the broker, the engine and the gateway on this machine.
//!
//! ```text
//! scripts/install-broker.sh
//! cargo build --release && cargo run --release --example gateway_load -- \
//!     [--rate R] [--seconds S] [--partitions P] [--agents A] [--accounts N] [--find-max]
//! ```
//!
//! One Kafka broker (`scripts/kafka-broker.sh`), `riskgate run` (the sample policy and account
//! rules, 100 ms transactions) and one `riskgate gateway`. Agents (`--agents`, default 20, a
//! key each) propose transfers on `--accounts` accounts (default 10,000) at R requests a
//! second (default 2,000) for S seconds (default 60), open loop: each request is sent at its
//! scheduled time whatever became of the ones before, and its latency runs from that time to
//! the end of its answer (so a stalled gateway is not hidden by requests that were not sent).
//! Prints p50, p95, p99 and the maximum, the rate achieved, the share of each status (202:
//! the decision took longer than the 2 s wait), and the gateway's memory per cached answer
//! (its RSS growth over the answers it keeps).
//!
//! `--find-max` then steps the rate up by 500 a second, 20 s a step, from R until p99 passes
//! 250 ms or a request fails, and prints the highest rate held.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use riskgate_test_support as support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use support::gateway::{config_text, AgentKey, Gateway};
use support::{Broker, Service, ServiceConfig, Topics};

struct Args {
    rate: u64,
    seconds: u64,
    partitions: i32,
    agents: usize,
    accounts: u64,
    find_max: bool,
}

fn args() -> Args {
    let mut a = Args {
        rate: 2_000,
        seconds: 60,
        partitions: 3,
        agents: 20,
        accounts: 10_000,
        find_max: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--find-max" {
            a.find_max = true;
            continue;
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let n: u64 = value
            .parse()
            .unwrap_or_else(|_| panic!("{flag}: `{value}` is not a number"));
        match flag.as_str() {
            "--rate" => a.rate = n,
            "--seconds" => a.seconds = n,
            "--partitions" => a.partitions = n as i32,
            "--agents" => a.agents = n as usize,
            "--accounts" => a.accounts = n,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// What one run measured.
struct Run {
    rate: u64,
    sent: usize,
    seconds: f64,
    latencies_ms: Vec<f64>,
    statuses: BTreeMap<u16, usize>,
    failures: usize,
}

impl Run {
    fn percentile(&self, p: f64) -> f64 {
        let i = ((self.latencies_ms.len() as f64 - 1.0) * p).round() as usize;
        self.latencies_ms.get(i).copied().unwrap_or(f64::NAN)
    }

    fn print(&self) {
        let n = self.latencies_ms.len().max(1) as f64;
        let shares: Vec<String> = self
            .statuses
            .iter()
            .map(|(s, c)| format!("{s}: {c} ({:.2} %)", *c as f64 * 100.0 / n))
            .collect();
        println!(
            "rate {} /s asked, {} sent, {:.0} /s answered over {:.1} s: p50 {:.1} ms, p95 {:.1} ms, p99 {:.1} ms, max {:.1} ms; {}; {} failed connections",
            self.rate,
            self.sent,
            self.latencies_ms.len() as f64 / self.seconds,
            self.seconds,
            self.percentile(0.50),
            self.percentile(0.95),
            self.percentile(0.99),
            self.latencies_ms.last().copied().unwrap_or(f64::NAN),
            shares.join(", "),
            self.failures
        );
    }
}

/// Reads a response body to its end.
async fn drain(mut body: hyper::body::Incoming) -> usize {
    use hyper::body::Body;
    let mut n = 0;
    while let Some(frame) =
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
    {
        if let Ok(data) = frame.map(|f| f.into_data()) {
            n += data.map_or(0, |d| d.len());
        }
    }
    n
}

/// Sends `rate` requests a second for `seconds`, open loop.
fn drive(
    gateway: &str,
    keys: &[AgentKey],
    accounts: u64,
    rate: u64,
    seconds: u64,
    first_id: u64,
) -> Run {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, String> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .build(connector);
    let uri: hyper::Uri = format!("http://{gateway}/v1/intents?wait=2s")
        .parse()
        .unwrap();
    let keys: Arc<Vec<(String, String)>> =
        Arc::new(keys.iter().map(|k| (k.agent.clone(), k.bearer())).collect());
    let total = rate * seconds;
    runtime.block_on(async move {
        let started = tokio::time::Instant::now();
        let mut tasks = Vec::with_capacity(total as usize);
        for i in 0..total {
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            tokio::time::sleep_until(due).await;
            let (agent, bearer) = keys[(i % keys.len() as u64) as usize].clone();
            let n = first_id + i;
            let account = (n * 7_919) % accounts;
            let body = format!(
                r#"{{"intent_id":"load-{n}","agent_id":"{agent}","account_id":"acct-{account}","action":"transfer","amount":"{}.{:02}","currency":"EUR","counterparty":{{"id":"cp-{:04}","country":"DE"}},"created_at":"{}"}}"#,
                10 + n % 900,
                n % 100,
                n % 50,
                Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
            );
            let request = hyper::Request::post(uri.clone())
                .header("authorization", bearer)
                .header("content-type", "application/json")
                .body(body)
                .unwrap();
            let client = client.clone();
            tasks.push(tokio::spawn(async move {
                let answer = match client.request(request).await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        drain(r.into_body()).await;
                        Some(status)
                    }
                    Err(_) => None,
                };
                (answer, due.elapsed())
            }));
        }
        let mut run = Run {
            rate,
            sent: total as usize,
            seconds: 0.0,
            latencies_ms: Vec::with_capacity(total as usize),
            statuses: BTreeMap::new(),
            failures: 0,
        };
        for t in tasks {
            let (answer, latency) = t.await.unwrap();
            match answer {
                Some(status) => {
                    *run.statuses.entry(status).or_default() += 1;
                    run.latencies_ms.push(latency.as_secs_f64() * 1e3);
                }
                None => run.failures += 1,
            }
        }
        run.seconds = started.elapsed().as_secs_f64();
        run.latencies_ms.sort_by(f64::total_cmp);
        run
    })
}

/// A process's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

fn main() {
    let a = args();
    let broker = Broker::shared();
    let topics = Topics::new("gwload");
    topics.create(&broker, a.partitions);
    let rules = support::account_rules();
    let c = ServiceConfig::new(&broker, &topics, &topics.group, rules.path());
    let mut service = Service::start(&c);
    service.wait_ready();
    let keys: Vec<AgentKey> = (0..a.agents)
        .map(|i| AgentKey::new(&format!("load-agent-{i}")))
        .collect();
    let refs: Vec<&AgentKey> = keys.iter().collect();
    let gateway = Gateway::start(&config_text(
        &c,
        // Agents come from many machines: one client here stands for all of them.
        "rate = 100000\nburst = 100000\nmax_waiting = 100000\nmax_connections = 8000\nmax_connections_per_client = 8000\n",
        &refs,
    ));
    let pid = gateway.process.pid();
    eprintln!(
        "broker {}, {} partitions, engine and gateway ready; gateway RSS {} KiB",
        broker.address,
        a.partitions,
        rss_kib(pid)
    );

    // Warm up (connections, the engine's state), then the measured run.
    let warm = drive(&gateway.address, &keys, a.accounts, a.rate.min(500), 5, 0);
    warm.print();
    let before = rss_kib(pid);
    let entries_before = gateway
        .metric("riskgate_gateway_cache_entries")
        .unwrap_or(0.0);
    let run = drive(
        &gateway.address,
        &keys,
        a.accounts,
        a.rate,
        a.seconds,
        1_000_000,
    );
    run.print();
    let after = rss_kib(pid);
    let entries = gateway
        .metric("riskgate_gateway_cache_entries")
        .unwrap_or(0.0);
    let counted = gateway
        .metric("riskgate_gateway_cache_bytes")
        .unwrap_or(0.0);
    let added = (entries - entries_before).max(1.0);
    println!(
        "gateway RSS {before} -> {after} KiB with {entries_before} -> {entries} cached answers: {:.0} bytes per answer by RSS, {:.0} by riskgate_gateway_cache_bytes",
        (after.saturating_sub(before) as f64 * 1024.0) / added,
        counted / entries.max(1.0)
    );
    println!(
        "verdict: {} (p99 {:.1} ms at {} /s; at least 2,000 /s with p99 <= 250 ms asked)",
        if run.percentile(0.99) <= 250.0 && run.failures == 0 && run.rate >= 2_000 {
            "holds"
        } else {
            "does not hold"
        },
        run.percentile(0.99),
        run.rate
    );

    if a.find_max {
        let mut rate = a.rate;
        let mut held = None;
        let mut next_id = 10_000_000;
        loop {
            let r = drive(&gateway.address, &keys, a.accounts, rate, 20, next_id);
            next_id += rate * 20;
            r.print();
            if r.percentile(0.99) > 250.0 || r.failures > 0 {
                break;
            }
            held = Some(rate);
            rate += 500;
        }
        match held {
            Some(r) => println!("highest rate held with p99 <= 250 ms: {r} /s"),
            None => println!("no rate from {} /s up held p99 <= 250 ms", a.rate),
        }
    }
    service.stop();
}
