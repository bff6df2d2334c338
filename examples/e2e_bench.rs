//! End-to-end benchmark of `riskgate run` against a local Tansu broker.
//!
//! ```text
//! scripts/install-broker.sh
//! cargo build --release && cargo run --release --example e2e_bench -- [--intents N] [--partitions P] [--rate R] [--seconds S]
//! ```
//!
//! Three runs, each with a fresh broker and the service as a child process, exactly-once with
//! 100 ms transactions:
//! 1. **throughput, sample rules**: N intents are preloaded; the clock runs from the moment
//!    every partition is restored until the group has committed the last offset;
//! 2. **throughput, pass-through**: the same with a ruleset of no rules and no counters
//!    (parse, serialize, produce, commit: the cost of the pipeline itself);
//! 3. **latency**: intents produced live at R per second for S seconds; for each, the time
//!    from its send (carried in `attributes.sent_ns`) to its decision being visible to a
//!    read_committed consumer. Percentiles are printed.
//!
//! Figures are printed as a table; the ratio of runs 1 and 2 comes from the same invocation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use support::{Broker, Service, ServiceConfig, Topics};

struct Args {
    intents: u64,
    partitions: i32,
    rate: u64,
    seconds: u64,
}

fn args() -> Args {
    let mut a = Args {
        intents: 200_000,
        partitions: 3,
        rate: 5_000,
        seconds: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .and_then(|v| v.parse::<u64>().ok())
                .expect("a number")
        };
        match flag.as_str() {
            "--intents" => a.intents = value(),
            "--partitions" => a.partitions = value() as i32,
            "--rate" => a.rate = value(),
            "--seconds" => a.seconds = value(),
            "--bench" => {}
            other => {
                panic!("unknown argument {other}; see the doc comment of examples/e2e_bench.rs")
            }
        }
    }
    a
}

/// The release binary next to this example (target/release/examples/ -> target/release/).
fn riskgate_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("riskgate");
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release first",
        bin.display()
    );
    bin
}

fn lines(count: u64) -> Vec<(Option<i32>, String, Vec<u8>)> {
    support::generated(count, 1, 10_000, true)
}

/// The group's committed offsets, summed over partitions, read through one long-lived
/// client (creating a client per query would itself load the machine being measured).
fn committed_total(watcher: &BaseConsumer, topics: &Topics, partitions: i32) -> i64 {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(&topics.intents, p);
    }
    let Ok(got) = watcher.committed_offsets(tpl, Duration::from_secs(10)) else {
        return 0;
    };
    got.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

/// Runs the service over `n` preloaded intents; returns decisions per second.
fn throughput(a: &Args, rules: &Path, label: &str) -> f64 {
    let broker = Broker::start();
    let topics = Topics::new(label);
    topics.create(&broker, a.partitions);
    let input = lines(a.intents);
    broker.produce(&topics.intents, &input);
    std::env::set_var("RISKGATE_BINARY", riskgate_binary());
    let mut s = Service::start(&ServiceConfig {
        broker: &broker,
        topics: &topics,
        transactional_id: label,
        rules,
        extra: "",
    });
    s.wait_ready();
    let watcher: BaseConsumer = broker
        .client()
        .set("group.id", &topics.group)
        .create()
        .unwrap();
    let started = Instant::now();
    let total = input.len() as i64;
    loop {
        if committed_total(&watcher, &topics, a.partitions) >= total {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(600), "too slow");
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    assert!(s.terminate(Duration::from_secs(30)).success());
    let rate = total as f64 / secs;
    println!("{label:<28} {total:>9} intents in {secs:>6.2} s = {rate:>9.0} decisions/s");
    rate
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Produces intents live at `rate` per second and measures send-to-visible latency.
fn latency(a: &Args, rules: &Path) {
    let broker = Broker::start();
    let topics = Topics::new("latency");
    topics.create(&broker, a.partitions);
    std::env::set_var("RISKGATE_BINARY", riskgate_binary());
    let mut s = Service::start(&ServiceConfig {
        broker: &broker,
        topics: &topics,
        transactional_id: "latency",
        rules,
        extra: "",
    });
    s.wait_ready();
    let reader: BaseConsumer = broker
        .client()
        .set("group.id", "latency-reader")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "20")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..a.partitions {
        tpl.add_partition_offset(&topics.decisions, p, Offset::Beginning)
            .unwrap();
    }
    reader.assign(&tpl).unwrap();
    let producer: BaseProducer = broker.client().set("linger.ms", "5").create().unwrap();
    let total = a.rate * a.seconds;
    let template = lines(total);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut latencies: Vec<f64> = Vec::with_capacity(total as usize);
    // Send to `decided_at` (the service's clock, millisecond precision): how much of the
    // latency is before the decision, and how much is the transaction and the reader.
    let mut to_decided: Vec<f64> = Vec::with_capacity(total as usize);
    while (latencies.len() as u64) < total {
        // Send what is due by now.
        let due = ((started.elapsed().as_secs_f64() * a.rate as f64) as u64).min(total);
        while sent < due {
            let (_, key, line) = &template[sent as usize];
            let mut v: serde_json::Value = serde_json::from_slice(line).unwrap();
            v["attributes"]["sent_ns"] = serde_json::Value::from(now_ns());
            let body = serde_json::to_vec(&v).unwrap();
            loop {
                match producer.send(BaseRecord::to(&topics.intents).key(key).payload(&body)) {
                    Ok(()) => break,
                    Err(_) => producer.poll(Duration::from_millis(1)),
                }
            }
            sent += 1;
        }
        producer.poll(Duration::ZERO);
        if let Some(Ok(m)) = reader.poll(Duration::from_millis(1)) {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            if let Some(t) = v["intent"]["attributes"]["sent_ns"].as_i64() {
                latencies.push((now_ns() - t) as f64 / 1e6);
                let decided: chrono::DateTime<chrono::Utc> =
                    v["decided_at"].as_str().unwrap().parse().unwrap();
                let decided_ns = decided.timestamp_nanos_opt().unwrap();
                to_decided.push((decided_ns - t) as f64 / 1e6);
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(a.seconds * 3 + 60),
            "decisions stopped arriving"
        );
    }
    assert!(s.terminate(Duration::from_secs(30)).success());
    if let Ok(keep) = std::env::var("RISKGATE_KEEP_LOG") {
        std::fs::copy(&s.log, keep).unwrap();
    }
    latencies.sort_by(f64::total_cmp);
    to_decided.sort_by(f64::total_cmp);
    let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize];
    let d = |p: f64| to_decided[((to_decided.len() - 1) as f64 * p) as usize];
    println!(
        "  of which send to decided_at: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms",
        d(0.5),
        d(0.9),
        d(0.99)
    );
    println!(
        "latency at {} intents/s over {} s: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} decisions)",
        a.rate,
        a.seconds,
        q(0.5),
        q(0.9),
        q(0.99),
        q(1.0),
        latencies.len()
    );
}

fn main() {
    let a = args();
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("none.toml"), "# no rules, no counters\n").unwrap();
    println!(
        "e2e: {} partitions, exactly-once, 100 ms transactions, broker on this host",
        a.partitions
    );
    let rules = throughput(&a, &sample, "sample-rules");
    let pass = throughput(&a, empty.path(), "pass-through");
    println!("ratio sample rules / pass-through: {:.2}", rules / pass);
    latency(&a, &sample);
}
