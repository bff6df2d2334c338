//! End-to-end benchmark of `riskgate run` against Apache Kafka on this machine, beside Kafka's
//! own exactly-once copier as the "bare Kafka" peer.
//!
//! ```text
//! scripts/install-broker.sh
//! cargo build --release && cargo run --release --example e2e_bench -- \
//!     [--intents N] [--partitions P] [--runs K] [--rate R] [--seconds S] [--copier-batch B]
//! ```
//!
//! One Kafka broker (`scripts/kafka-broker.sh`) for the whole invocation. N intents are
//! produced once to a P-partition topic; then, K times over, three consumers read that same
//! topic from the start, each with its own group and output topic, exactly-once:
//! 1. **riskgate, with rules** (`riskgate run`, 100 ms transactions): on one partition the
//!    sample rules (the only topology their agent counters are exact in); on more, the sample
//!    rules' account counters and policy (`support::account_rules`), which the partitioning
//!    check accepts for intents keyed by account;
//! 2. **riskgate, pass-through**: a ruleset of no rules and no counters (parse, serialize,
//!    produce, commit: the cost of the pipeline itself);
//! 3. **Kafka's copier**: `TransactionalMessageCopier` from kafka-tools (the tool of Kafka's
//!    own transactions system test) copying the intents to a topic in transactions of B
//!    records (default 10,000, riskgate's own `commit_max_records` cap), committing its
//!    offsets in each (`--group-mode --use-group-metadata`).
//!
//! All three are timed the same way: one watcher polls the group's committed offsets every
//! 20 ms; the clock runs from the first poll that sees anything committed to the one that sees
//! everything, and the rate is the records committed in between over that time (so process
//! start, group join and restore are left out for all three alike). Each run prints its
//! figures and riskgate/copier ratio; the end prints median, min and max over the K runs.
//! Last, **latency**: intents produced live at R per second for S seconds; for each, the time
//! from its send (carried in `attributes.sent_ns`) to its decision being visible to a
//! read_committed consumer. Percentiles are printed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use riskgate_test_support as support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use support::{Broker, Service, ServiceConfig, Topics};

struct Args {
    intents: u64,
    partitions: i32,
    runs: u64,
    rate: u64,
    seconds: u64,
    copier_batch: u64,
}

fn args() -> Args {
    let mut a = Args {
        intents: 200_000,
        partitions: 3,
        runs: 5,
        rate: 5_000,
        seconds: 20,
        // riskgate's own cap on a transaction (`commit_max_records`).
        copier_batch: 10_000,
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
            "--runs" => a.runs = value().max(1),
            "--copier-batch" => a.copier_batch = value().max(1),
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

/// Checks that the release binary next to this example is there (the services run it).
fn check_binary() {
    let bin = support::riskgate_binary();
    assert!(
        bin.exists(),
        "{} is missing: cargo build --release first",
        bin.display()
    );
}

fn lines(count: u64) -> Vec<(Option<i32>, String, Vec<u8>)> {
    support::generated(count, 1, 10_000, true)
}

/// A read_committed reader in `group`, assigned every partition of `topic` from its start; it
/// commits no offsets.
fn committed_reader(broker: &Broker, group: &str, topic: &str, partitions: i32) -> BaseConsumer {
    let reader: BaseConsumer = broker
        .client()
        .set("group.id", group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "20")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    reader.assign(&tpl).unwrap();
    reader
}

/// Counts the committed output of a run as a read_committed reader sees it. (The group's
/// committed offsets would do too, but a query for them waits while a transaction with
/// offsets is open, which a busy copier nearly always has.)
struct Watcher {
    reader: BaseConsumer,
    topic: String,
}

impl Watcher {
    /// A reader of every partition of `topic` from its start, assigned before the run starts.
    fn new(broker: &Broker, topic: &str, partitions: i32) -> Watcher {
        let group = support::unique("watcher");
        Watcher {
            reader: committed_reader(broker, &group, topic, partitions),
            topic: topic.to_owned(),
        }
    }

    /// Times the run through `expected` output records: from the first committed record seen
    /// to the last. Returns records per second over that span, leaving out the records that
    /// became visible with the first (their transaction's time is not in the span).
    fn time(&self, expected: u64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(900);
        let next = |wait: Duration| match self.reader.poll(wait) {
            Some(Ok(_)) => true,
            Some(Err(e)) => panic!("{}: {e}", self.topic),
            None => false,
        };
        while !next(Duration::from_millis(100)) {
            assert!(
                Instant::now() < deadline,
                "{}: nothing committed",
                self.topic
            );
        }
        let started = Instant::now();
        let mut seen = 1u64;
        while seen < expected && next(Duration::ZERO) {
            seen += 1;
        }
        let first = seen;
        while seen < expected {
            assert!(Instant::now() < deadline, "{}: too slow", self.topic);
            seen += u64::from(next(Duration::from_millis(100)));
        }
        (expected - first) as f64 / started.elapsed().as_secs_f64().max(1e-9)
    }
}

/// Runs the service with `rules` over the intents of `intents`; returns decisions per second.
fn riskgate(broker: &Broker, intents: &str, a: &Args, rules: &Path, label: &str) -> f64 {
    let mut topics = Topics::new(label);
    topics.intents = intents.to_owned();
    broker.create_topic(&topics.decisions, a.partitions);
    broker.create_topic(&topics.dead_letters, a.partitions);
    let watcher = Watcher::new(broker, &topics.decisions, a.partitions);
    let mut s = Service::start(&ServiceConfig::new(broker, &topics, &topics.group, rules));
    let rate = watcher.time(a.intents);
    s.stop();
    rate
}

/// Kafka's `TransactionalMessageCopier` over the same intents; returns records per second.
fn copier(broker: &Broker, intents: &str, a: &Args) -> f64 {
    let group = support::unique("copier");
    let output = format!("{group}.out");
    broker.create_topic(&output, a.partitions);
    let libs = support::tools()
        .join("kafka")
        .join(support::kafka_version())
        .join("libs");
    let watcher = Watcher::new(broker, &output, a.partitions);
    let mut child = Command::new("java")
        .arg("-cp")
        .arg(format!("{}/*", libs.display()))
        .args([
            "-Xmx512m",
            "org.apache.kafka.tools.TransactionalMessageCopier",
        ])
        .args(["--broker-list", &broker.address])
        .args(["--input-topic", intents, "--input-partition", "0"])
        .args(["--output-topic", &output])
        .args(["--consumer-group", &group, "--transactional-id", &group])
        .args(["--transaction-size", &a.copier_batch.to_string()])
        .args(["--group-mode", "--use-group-metadata"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("java, for Kafka's TransactionalMessageCopier");
    let rate = watcher.time(a.intents);
    let status = child.wait().unwrap();
    assert!(status.success(), "the copier exited with {status}");
    rate
}

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Produces intents live at `rate` per second and measures send-to-visible latency.
fn latency(broker: &Broker, a: &Args, rules: &Path) {
    let topics = Topics::new("latency");
    topics.create(broker, a.partitions);
    let mut s = Service::start(&ServiceConfig::new(broker, &topics, "latency", rules));
    s.wait_ready();
    let reader = committed_reader(broker, "latency-reader", &topics.decisions, a.partitions);
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
    s.stop();
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

/// Median, min and max.
fn spread(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    (median, v[0], v[n - 1])
}

fn main() {
    let a = args();
    check_binary();
    let accounts = support::account_rules();
    let (sample, rules_label) = if a.partitions == 1 {
        (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("rules"),
            "sample rules",
        )
    } else {
        (accounts.path().to_owned(), "account rules")
    };
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("none.toml"), "# no rules, no counters\n").unwrap();
    let broker = Broker::shared();
    println!(
        "e2e: Apache Kafka {} on this host, {} intents over {} partitions, exactly-once; riskgate ({rules_label}) 100 ms transactions, copier {} records per transaction",
        support::kafka_version(),
        a.intents,
        a.partitions,
        a.copier_batch
    );
    let intents = support::unique("e2e.intents");
    broker.create_topic(&intents, a.partitions);
    broker.produce(&intents, &lines(a.intents));
    let (mut rules, mut pass, mut copied, mut ratio) = (vec![], vec![], vec![], vec![]);
    for run in 1..=a.runs {
        let r = riskgate(&broker, &intents, &a, &sample, "rules");
        let p = riskgate(&broker, &intents, &a, empty.path(), "pass-through");
        let c = copier(&broker, &intents, &a);
        println!(
            "run {run}: riskgate {rules_label} {r:>8.0}/s, pass-through {p:>8.0}/s, copier {c:>8.0}/s; riskgate/copier {:.2}",
            r / c
        );
        rules.push(r);
        pass.push(p);
        copied.push(c);
        ratio.push(r / c);
    }
    for (label, values, unit) in [
        (rules_label, &rules, "decisions/s"),
        ("riskgate, pass-through", &pass, "decisions/s"),
        ("Kafka copier", &copied, "records/s"),
        ("ratio riskgate / copier", &ratio, ""),
    ] {
        let (median, min, max) = spread(values);
        if unit.is_empty() {
            println!("{label:<26} median {median:>8.2}  min {min:>8.2}  max {max:>8.2}");
        } else {
            println!("{label:<26} median {median:>8.0}  min {min:>8.0}  max {max:>8.0} {unit}");
        }
    }
    latency(&broker, &a, &sample);
}
