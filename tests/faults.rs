//! Broker faults injected with rdkafka's in-process mock cluster: the pipeline runs in this
//! process against it. An error adding partitions makes the open transaction abortable: it must be
//! aborted, the consumer rewound and the state restored, so that every intent still gets
//! exactly one committed decision equal to the offline engine's. A broker outage must make
//! the service not ready, then resume without loss.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use riskgate_test_support as support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use riskgate::config::Config;
use riskgate::pipeline::{self, Controls, Health};
use riskgate_core::rules::Ruleset;
use support::oracle::check_against_oracle;
use support::{generated, wait_for, Broker, Topics};

struct Running {
    shutdown: Arc<AtomicBool>,
    health: Arc<Health>,
    thread: JoinHandle<Result<(), pipeline::Error>>,
    /// Rules whose counters are all keyed by account: the partitioning check accepts them on
    /// the two partitions these tests use.
    rules: tempfile::TempDir,
}

fn start(address: &str, topics: &Topics) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            std::env::var("RUST_LOG")
                .unwrap_or_else(|_| "info,librdkafka=warn,rdkafka=warn".into()),
        )
        .with_test_writer()
        .try_init();
    let text = format!(
        r#"[kafka]
brokers = "{address}"
group_id = "{group}"
intents_topic = "{intents}"
decisions_topic = "{decisions}"
dead_letter_topic = "{dlq}"
transactional_id = "faults-a"
[kafka.librdkafka]
"session.timeout.ms" = "6000"
"max.poll.interval.ms" = "7000"
"transaction.timeout.ms" = "10000"
[engine]
max_future_skew = "off"
"#,
        group = topics.group,
        intents = topics.intents,
        decisions = topics.decisions,
        dlq = topics.dead_letters,
    );
    let config = Config::parse(&text, "faults.toml", Vec::new()).unwrap();
    let rules = support::account_rules();
    let ruleset = Arc::new(Ruleset::load_dir(rules.path()).unwrap());
    let shutdown = Arc::new(AtomicBool::new(false));
    let health = Arc::new(Health::default());
    let (_reload_tx, reloads) = mpsc::channel();
    let controls = Controls {
        shutdown: shutdown.clone(),
        reloads,
        health: health.clone(),
    };
    let thread = std::thread::spawn(move || {
        let _keep_channel_open = _reload_tx;
        pipeline::run(config, ruleset, controls)
    });
    Running {
        shutdown,
        health,
        thread,
        rules,
    }
}

fn produce_intents(broker: &Broker, topics: &Topics, count: u64, seed: u64) {
    broker.produce(&topics.intents, &generated(count, seed, 15, false));
}

/// Waits until every intent has a committed output. (The mock cluster does not report
/// offsets committed by transactions to other group members, so the outputs are counted.)
fn wait_decided(broker: &Broker, topics: &Topics, total: usize) {
    wait_for("every intent decided", Duration::from_secs(90), || {
        let n =
            broker.read_all(&topics.decisions).len() + broker.read_all(&topics.dead_letters).len();
        (n >= total).then_some(())
    });
}

fn mock_with_topics(
    partitions: i32,
) -> (
    MockCluster<'static, rdkafka::producer::DefaultProducerContext>,
    Topics,
) {
    let mock = MockCluster::new(1).unwrap();
    let topics = Topics::new("faults");
    for t in [&topics.intents, &topics.decisions, &topics.dead_letters] {
        mock.create_topic(t, partitions, 1).unwrap();
    }
    (mock, topics)
}

/// Stops the pipeline cleanly, checks every output against the offline engine (exactly one
/// per intent), and returns how many there are.
fn stop_and_check(running: Running, broker: &Broker, topics: &Topics) -> usize {
    running.shutdown.store(true, Ordering::Relaxed);
    running.thread.join().unwrap().unwrap();
    let (decided, dead) = check_against_oracle(broker, topics, running.rules.path(), false);
    decided + dead
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "slow, on rdkafka's in-process mock cluster (no broker needed): scripts/test runs it"
)]
fn an_abortable_produce_error_aborts_rewinds_and_restores() {
    let (mock, topics) = mock_with_topics(2);
    let broker = Broker::external(mock.bootstrap_servers());
    produce_intents(&broker, &topics, 600, 21);
    let running = start(&broker.address, &topics);
    wait_for("the service to be ready", Duration::from_secs(60), || {
        running.health.ready().then_some(())
    });
    // The next three transactions cannot add their partitions: an error that makes the
    // transaction abortable (the test's own producer is not transactional, so only the
    // service meets it).
    mock.request_errors(
        RDKafkaApiKey::AddPartitionsToTxn,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 3],
    );
    produce_intents(&broker, &topics, 600, 22);
    wait_decided(&broker, &topics, 1_200);
    // Exactly one committed output per intent (read_committed hides the aborted ones on this
    // broker), each equal to the offline engine's decision.
    assert_eq!(stop_and_check(running, &broker, &topics), 1_200);
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "slow, on rdkafka's in-process mock cluster (no broker needed): scripts/test runs it"
)]
fn a_broker_outage_is_not_ready_then_resumes_without_loss() {
    let (mock, topics) = mock_with_topics(2);
    let broker = Broker::external(mock.bootstrap_servers());
    produce_intents(&broker, &topics, 300, 23);
    let running = start(&broker.address, &topics);
    wait_for("the service to be ready", Duration::from_secs(60), || {
        running.health.ready().then_some(())
    });
    wait_decided(&broker, &topics, 300);
    mock.broker_down(1).unwrap();
    wait_for(
        "not ready while the broker is down",
        Duration::from_secs(60),
        || (!running.health.ready()).then_some(()),
    );
    mock.broker_up(1).unwrap();
    produce_intents(&broker, &topics, 300, 24);
    wait_decided(&broker, &topics, 600);
    wait_for("ready again", Duration::from_secs(60), || {
        running.health.ready().then_some(())
    });
    assert_eq!(stop_and_check(running, &broker, &topics), 600);
}
