//! Failures only a real cluster shows: brokers killed with kill -9 in the middle of a run.
//!
//! * Three Kafka nodes on loopback, every topic replicated three times with
//!   `min.insync.replicas=2`: the leader of intents partition 0 (and of decisions partitions) is
//!   killed while 20,000 intents stream in, and restarted later. Until the controller fences it
//!   and moves its leaderships, those partitions have no reachable leader: `/readyz` must say
//!   so (`leaderless_partitions`, or `stalled` when a commit is waiting on the dead leader),
//!   then come back.
//! * One Kafka node, killed the same way and restarted on the same data directory.
//!
//! Both end the same way: every intent has exactly one committed output (read_committed),
//! equal, counters included, to what the offline engine decides for its partition: no
//! decision lost or repeated, no velocity limit reset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use riskgate_test_support as support;

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use support::oracle::check_against_oracle;
use support::*;

const INTENTS: u64 = 20_000;
/// Intents per second: the run lasts 20 s, so the kill lands mid-run.
const RATE: u64 = 1_000;

/// The status of `GET /readyz`, if the service answers.
fn readyz(address: &str) -> Option<u16> {
    http_get(address, "/readyz").map(|(status, _)| status)
}

/// What the service did through an outage, timed from the kill.
struct Outage {
    not_ready_after: Duration,
    ready_after: Duration,
    /// WARN and ERROR lines the service logged during the whole run.
    loud_lines: usize,
}

/// Runs a service on `topics`, streams [`INTENTS`] intents at [`RATE`], calls `kill` once a
/// quarter is committed, then `recover` once `/readyz` has dropped with a body that `why`
/// accepts; checks exactly-once against the offline engine at the end.
fn run_through_outage(
    broker: &Broker,
    topics: &Topics,
    kill: &mut dyn FnMut(),
    why: &dyn Fn(&serde_json::Value) -> bool,
    recover: &mut dyn FnMut(Instant),
) -> Outage {
    let rules = account_rules();
    let mut s = Service::start(&ServiceConfig {
        broker,
        topics,
        transactional_id: &topics.group,
        rules: rules.path(),
        extra: "",
    });
    let http = s.http_address();
    s.wait_ready();
    let input = generated(INTENTS, 41, 200, false);
    let producing = produce_at(broker, &topics.intents, input, RATE);
    wait_for(
        "a quarter of the intents committed",
        Duration::from_secs(120),
        || {
            (committed_total(broker, &topics.group, &topics.intents, 3) >= INTENTS as i64 / 4)
                .then_some(())
        },
    );
    assert_eq!(readyz(&http), Some(200));
    kill();
    let killed = Instant::now();
    // Not ready, and saying why (`why` picks the reason this outage must show).
    let mut seen = String::new();
    let dropped = wait_for_or("/readyz to drop", Duration::from_secs(60), || {
        let (status, body) = http_get(&http, "/readyz")?;
        let v = serde_json::from_str::<serde_json::Value>(&body).ok()?;
        seen = body;
        (status == 503 && why(&v)).then_some(())
    });
    assert!(
        dropped.is_some(),
        "/readyz never dropped for the expected reason; it said {seen}"
    );
    let not_ready_after = killed.elapsed();
    recover(killed);
    let mut last = String::new();
    let back = wait_for_or("/readyz to come back", Duration::from_secs(120), || {
        let (status, body) = http_get(&http, "/readyz")?;
        last = body;
        (status == 200).then_some(())
    });
    if back.is_none() {
        panic!(
            "/readyz did not come back; it says {last}; the service's threads:\n{}",
            s.stacks()
        );
    }
    let ready_after = killed.elapsed();
    producing.join().unwrap();
    wait_all_committed(broker, topics, 3, Duration::from_secs(180));
    assert!(s.terminate(Duration::from_secs(60)).success());
    let (decided, dead) = check_against_oracle(broker, topics, rules.path(), false);
    assert_eq!((decided + dead) as u64, INTENTS);
    // The outage was told once when it started and once when it ended, not once per failed
    // connection (librdkafka reconnects about every second, to every broker).
    let events = s.events();
    let loud: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| matches!(e["level"].as_str(), Some("WARN" | "ERROR")))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["message"] == "the Kafka broker is reachable again"),
        "the end of the outage is logged"
    );
    assert!(loud.len() <= 12, "{} warnings: {loud:#?}", loud.len());
    Outage {
        not_ready_after,
        ready_after,
        loud_lines: loud.len(),
    }
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn the_leader_killed_in_a_three_broker_cluster_loses_and_repeats_nothing() {
    let _serial = serial();
    // Leaderships move back to a restarted broker within seconds, not five minutes.
    let cluster = RefCell::new(KafkaCluster::start(
        3,
        &["leader.imbalance.check.interval.seconds=5"],
    ));
    let broker = cluster.borrow().broker();
    let topics = Topics::new("failover");
    for t in [&topics.intents, &topics.decisions, &topics.dead_letters] {
        broker.create_topic_with(t, 3, 3, &[("min.insync.replicas", "2")]);
    }
    let victim = Cell::new(-1);
    let leaderless_for = Cell::new(Duration::ZERO);
    let outage = run_through_outage(
        &broker,
        &topics,
        &mut || {
            let inputs = broker.leaders(&topics.intents);
            let outputs = broker.leaders(&topics.decisions);
            let v = inputs[0];
            victim.set(v);
            eprintln!(
                "intents leaders {inputs:?}, decisions leaders {outputs:?}: killing node {v}"
            );
            assert!(
                outputs.contains(&v),
                "node {v} leads no decisions partition"
            );
            cluster.borrow_mut().node(v).kill();
        },
        // The other brokers answer: what is missing is a leader for some partitions. Either the
        // clients' statistics show it (`leaderless_partitions`), or, when the kill lands while
        // a transaction is being committed, the commit waits on the dead leader and holds the
        // loop up, and the statistics (delivered when the loop polls) cannot arrive until the
        // commit gives up: then `/readyz` says `stalled`. Both are "a partition has no leader".
        &|readyz| {
            readyz["leaderless_partitions"]
                .as_u64()
                .is_some_and(|n| n > 0)
                || readyz["stalled"] == true
        },
        &mut |killed| {
            // The dead broker's partitions have no reachable leader until the controller
            // fences it and elects new leaders from the in-sync replicas.
            wait_for(
                "new leaders for the dead broker's partitions",
                Duration::from_secs(60),
                || {
                    let all: Vec<i32> = [&topics.intents, &topics.decisions, &topics.dead_letters]
                        .iter()
                        .flat_map(|t| broker.leaders(t))
                        .collect();
                    (all.len() == 9 && all.iter().all(|l| *l >= 0 && *l != victim.get()))
                        .then_some(())
                },
            );
            leaderless_for.set(killed.elapsed());
            cluster.borrow_mut().node(victim.get()).restart();
        },
    );
    eprintln!(
        "node {} killed: /readyz 503 after {:.1} s, partitions without a live leader for {:.1} s, ready again after {:.1} s; {} warning lines",
        victim.get(),
        outage.not_ready_after.as_secs_f64(),
        leaderless_for.get().as_secs_f64(),
        outage.ready_after.as_secs_f64(),
        outage.loud_lines
    );
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn a_single_broker_killed_and_restarted_on_its_data_loses_and_repeats_nothing() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut node = KafkaNode::start(dir.path());
    let broker = node.broker();
    let topics = Topics::new("restart");
    topics.create(&broker, 3);
    let node = RefCell::new(&mut node);
    let outage = run_through_outage(
        &broker,
        &topics,
        &mut || node.borrow_mut().kill(),
        // No broker answers at all.
        &|readyz| readyz["broker_reachable"] == false || readyz["stalled"] == true,
        &mut |_| node.borrow_mut().restart(),
    );
    eprintln!(
        "the broker killed: /readyz 503 after {:.1} s, ready again after {:.1} s (restart included); {} warning lines",
        outage.not_ready_after.as_secs_f64(),
        outage.ready_after.as_secs_f64(),
        outage.loud_lines
    );
}
