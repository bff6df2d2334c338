//! `riskgate run` against a real Kafka-compatible broker process (Tansu), as a child
//! process: exactly-once output, co-partitioning, restore after crashes, rebalances,
//! shutdown, hot reload, and the wire format as another client sees it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use riskgate_test_support as support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use riskgate_core::rules::Ruleset;
use support::oracle::check_against_oracle;
use support::*;

fn sample_rules() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")
}

use support::generated as intents;

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn ten_thousand_intents_over_three_partitions_are_decided_exactly_once() {
    let (_serial, broker, topics) = topics_on_shared_broker("ten-k", 3);
    let input = intents(10_000, 7, 200, false);
    broker.produce(&topics.intents, &input);

    // Counters keyed by account, as the intents are: the partitioning check accepts them.
    let account_rules = account_rules();
    let rules = account_rules.path().to_owned();
    let mut service = Service::on(&broker, &topics, &rules);
    wait_all_committed(&broker, &topics, 3, Duration::from_secs(120));
    let (decided, dead) = check_against_oracle(&broker, &topics, &rules, false);
    assert_eq!(decided + dead, 10_000);
    assert_eq!(dead, 200, "six invalid lines in every 300 (2%)");
    // Keys follow the intents: a decision has its intent's key.
    let decisions = broker.read_all(&topics.decisions);
    assert!(decisions
        .iter()
        .all(|r| r.key.as_deref() == r.value["account_id"].as_str()));
    let committed = broker.committed(&topics.group, &topics.intents, 3);
    assert_eq!(
        committed,
        broker
            .ends(&topics.intents, 3)
            .into_iter()
            .map(Some)
            .collect::<Vec<_>>()
    );
    service.stop();
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn crashes_do_not_change_decisions() {
    let _serial = serial();
    let broker = Broker::shared();
    let clean = Topics::new("clean");
    clean.create(&broker, 3);
    let mut crashed = Topics::new("crashed");
    crashed.intents = clean.intents.clone();
    broker.create_topic(&crashed.decisions, 3);
    broker.create_topic(&crashed.dead_letters, 3);
    // Few accounts, so that velocity limits hold some intents.
    let input = intents(20_000, 11, 30, false);
    broker.produce(&clean.intents, &input);
    let account_rules = account_rules();
    let rules = account_rules.path().to_owned();

    let mut reference = Service::start(&ServiceConfig::new(&broker, &clean, "clean-a", &rules));
    wait_all_committed(&broker, &clean, 3, Duration::from_secs(120));
    reference.stop();

    // Small transactions, so that each kill lands with work in flight.
    let config = ServiceConfig {
        extra: "commit_max_records = 500",
        ..ServiceConfig::new(&broker, &crashed, "crashed-a", &rules)
    };
    let seed = Utc::now().timestamp_subsec_nanos() as u64 | 1;
    eprintln!("kill points seed: {seed}");
    let mut rng = seed;
    let mut kills = 0;
    for round in 0..3 {
        let mut s = Service::start(&config);
        s.wait_ready();
        // Kill once a random share of this round's slice of the input is committed.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let target = 20_000 * (round * 3 + 1) / 10 + (rng % 2_000) as i64;
        wait_for("progress before the kill", Duration::from_secs(60), || {
            let done: i64 = broker
                .committed(&crashed.group, &crashed.intents, 3)
                .iter()
                .map(|c| c.unwrap_or(0))
                .sum();
            (done >= target).then_some(())
        });
        s.kill();
        kills += 1;
    }
    assert_eq!(kills, 3);
    let mut last = Service::start(&config);
    wait_all_committed(&broker, &crashed, 3, Duration::from_secs(120));
    last.stop();

    // Every intent has a decision, all decisions for one intent agree, and deduplicated
    // they equal the uninterrupted run's.
    check_against_oracle(&broker, &crashed, &rules, true);
    let expected = broker.read_all(&clean.decisions);
    let got = broker.read_all(&crashed.decisions);
    let expected = by_intent(&expected);
    let got = by_intent(&got);
    assert_eq!(
        expected.keys().collect::<HashSet<_>>(),
        got.keys().collect::<HashSet<_>>()
    );
    let mut held = 0;
    for (id, records) in &got {
        let first = verdict(records[0]);
        for r in records {
            assert_eq!(verdict(r), first, "decisions for {id} disagree");
        }
        assert_eq!(
            first,
            verdict(expected[id][0]),
            "{id} differs from the uninterrupted run"
        );
        held += usize::from(first.0 == "hold");
    }
    assert!(held > 100, "velocity rules held only {held} intents");
}

/// A ruleset with one velocity limit: the third transfer of an account within an hour is
/// held.
const VELOCITY_RULES: &str = r#"
[[counter]]
id = "transfers_1h"
key = ["account_id"]
aggregate = "count"
window = "1h"

[[rule]]
id = "velocity"
when = "counters.transfers_1h >= 2"
action = "hold"
message = "{counters.transfers_1h} transfers in the last hour"
"#;

/// A rules directory holding [`VELOCITY_RULES`].
fn velocity_rules() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("velocity.toml"), VELOCITY_RULES).unwrap();
    dir
}

fn transfer(n: u32, account: &str) -> (Option<i32>, String, Vec<u8>) {
    let body = format!(
        r#"{{"intent_id":"t-{n}","agent_id":"bot","account_id":"{account}","action":"transfer","amount":"10.00","currency":"EUR","created_at":"2026-11-28T10:{n:02}:00Z"}}"#
    );
    (Some(0), account.to_owned(), body.into_bytes())
}

/// The decision on intent `t-{n}`, waiting for it.
fn decision_on(broker: &Broker, topics: &Topics, n: u32) -> serde_json::Value {
    let id = format!("t-{n}");
    wait_for(
        &format!("a decision on {id}"),
        Duration::from_secs(60),
        || {
            broker
                .read_all(&topics.decisions)
                .into_iter()
                .find(|r| r.value["intent_id"] == id.as_str())
                .map(|r| r.value)
        },
    )
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn a_limit_is_not_reset_by_a_restart_or_a_move() {
    let (_serial, broker, topics) = topics_on_shared_broker("limit", 1);
    let rules = velocity_rules();
    let config = |tid| ServiceConfig::new(&broker, &topics, tid, rules.path());

    let mut a = Service::start(&config("limit-a"));
    a.wait_ready();
    broker.produce(
        &topics.intents,
        &[transfer(1, "acct-1"), transfer(2, "acct-1")],
    );
    assert_eq!(decision_on(&broker, &topics, 2)["decision"], "allow");
    broker.produce(&topics.intents, &[transfer(3, "acct-1")]);
    let third = decision_on(&broker, &topics, 3);
    assert_eq!(third["decision"], "hold");
    assert_eq!(third["counters"]["transfers_1h"], 2);

    // A crash and a restart: the counter is rebuilt, not reset.
    a.kill();
    let mut a = Service::start(&config("limit-a"));
    a.wait_ready();
    broker.produce(&topics.intents, &[transfer(4, "acct-1")]);
    let fourth = decision_on(&broker, &topics, 4);
    assert_eq!(fourth["decision"], "hold", "{fourth}");
    assert_eq!(fourth["counters"]["transfers_1h"], 3);

    // A second instance joins; the first leaves; the partition moves with its state.
    let mut b = Service::start(&config("limit-b"));
    b.wait_event("partitions assigned", Duration::from_secs(60), |_| true);
    a.stop();
    b.wait_event("state restored", Duration::from_secs(60), |e| {
        e["partition"] == 0 && e["decisions"] == 4
    });
    broker.produce(&topics.intents, &[transfer(5, "acct-1")]);
    let fifth = decision_on(&broker, &topics, 5);
    assert_eq!(fifth["decision"], "hold", "{fifth}");
    assert_eq!(fifth["counters"]["transfers_1h"], 4);
    // Another account is not affected.
    broker.produce(&topics.intents, &[transfer(6, "acct-2")]);
    assert_eq!(decision_on(&broker, &topics, 6)["decision"], "allow");
    b.stop();
}

/// The partitions of the latest assignment logged by `s`.
fn latest_assignment(s: &Service) -> Option<Vec<i64>> {
    s.events()
        .iter()
        .rev()
        .find(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("partitions assigned"))
        })
        .map(|e| {
            e["partitions"]
                .as_str()
                .unwrap_or("[]")
                .trim_matches(['[', ']'])
                .split(',')
                .filter_map(|x| x.trim().parse().ok())
                .collect()
        })
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn two_instances_split_the_partitions_and_one_takes_over() {
    let (_serial, broker, topics) = topics_on_shared_broker("pair", 4);
    let account_rules = account_rules();
    let rules = account_rules.path().to_owned();
    let config = |tid| ServiceConfig::new(&broker, &topics, tid, &rules);
    let mut a = Service::start(&config("pair-a"));
    a.wait_ready();
    let mut b = Service::start(&config("pair-b"));
    // Both hold a share: disjoint, together all four.
    let (pa, pb) = wait_for(
        "the partitions to be split",
        Duration::from_secs(60),
        || {
            let pa = latest_assignment(&a)?;
            let pb = latest_assignment(&b)?;
            let all: HashSet<i64> = pa.iter().chain(&pb).copied().collect();
            (!pa.is_empty() && !pb.is_empty() && all.len() == 4 && pa.len() + pb.len() == 4)
                .then_some((pa, pb))
        },
    );
    eprintln!("split: a {pa:?}, b {pb:?}");
    let input = intents(3_000, 5, 20, false);
    broker.produce(&topics.intents, &input[..1_500]);
    wait_all_committed(&broker, &topics, 4, Duration::from_secs(60));

    // One stops; the other takes over every partition, with its state.
    a.stop();
    wait_for("b to hold every partition", Duration::from_secs(60), || {
        (latest_assignment(&b)?.len() == 4).then_some(())
    });
    broker.produce(&topics.intents, &input[1_500..]);
    wait_all_committed(&broker, &topics, 4, Duration::from_secs(60));
    b.stop();
    // The decisions after the move equal those of one engine that saw everything.
    check_against_oracle(&broker, &topics, &rules, false);
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn sigterm_drains_and_a_broken_reload_keeps_the_running_rules() {
    let (_serial, broker, topics) = topics_on_shared_broker("reload", 2);
    // A directory of its own, which the test changes.
    let rules = account_rules();
    let old_version = Ruleset::load_dir(rules.path()).unwrap().version.to_string();
    let mut s = Service::on(&broker, &topics, rules.path());
    s.wait_ready();
    let input = intents(900, 3, 20, true);
    broker.produce(&topics.intents, &input[..300]);
    wait_all_committed(&broker, &topics, 2, Duration::from_secs(60));

    // A broken file: refused, with file, line and column, and the old rules keep deciding.
    std::fs::write(
        rules.path().join("zz-broken.toml"),
        "[[rule]]\nid = \"broken\"\nwhen = 'amount >'\naction = \"hold\"\n",
    )
    .unwrap();
    let refused = s.wait_event("ruleset reload refused", Duration::from_secs(30), |_| true);
    let error = refused["error"].as_str().unwrap();
    assert!(error.contains("zz-broken.toml:3:"), "{error}");
    assert!(error.contains("broken"), "{error}");
    broker.produce(&topics.intents, &input[300..450]);
    wait_all_committed(&broker, &topics, 2, Duration::from_secs(60));
    let decisions = broker.read_all(&topics.decisions);
    assert_eq!(decisions.len(), 450);
    assert!(decisions
        .iter()
        .all(|r| r.value["ruleset"] == old_version.as_str()));

    // A valid ruleset that these two partitions would split (a counter keyed by agent):
    // refused the same way, with the counter and the ways out.
    std::fs::remove_file(rules.path().join("zz-broken.toml")).unwrap();
    std::fs::write(
        rules.path().join("zz-split.toml"),
        "[[counter]]\nid = \"per_agent\"\nkey = [\"agent_id\"]\naggregate = \"count\"\nwindow = \"1h\"\n",
    )
    .unwrap();
    let refused = s.wait_event("ruleset reload refused", Duration::from_secs(30), |e| {
        e["error"]
            .as_str()
            .is_some_and(|t| t.contains("partitions keyed by"))
    });
    let error = refused["error"].as_str().unwrap();
    assert!(
        error.contains("counter `per_agent` has key [agent_id]"),
        "{error}"
    );
    assert!(error.contains("ways out"), "{error}");
    std::fs::remove_file(rules.path().join("zz-split.toml")).unwrap();
    broker.produce(&topics.intents, &input[450..600]);
    wait_all_committed(&broker, &topics, 2, Duration::from_secs(60));
    let decisions = broker.read_all(&topics.decisions);
    assert_eq!(decisions.len(), 600);
    assert!(
        decisions
            .iter()
            .all(|r| r.value["ruleset"] == old_version.as_str()),
        "the running rules kept deciding"
    );

    // A valid change is taken, and names itself on the decisions that follow.
    std::fs::write(
        rules.path().join("zz-extra.toml"),
        "[[rule]]\nid = \"extra\"\nwhen = 'amount > 1000000'\naction = \"hold\"\n",
    )
    .unwrap();
    let new_version = Ruleset::load_dir(rules.path()).unwrap().version.to_string();
    s.wait_event("ruleset reloaded", Duration::from_secs(30), |e| {
        e["new"] == new_version.as_str()
    });
    // SIGHUP also reloads (nothing changed: no swap, no error).
    s.signal("HUP");
    broker.produce(&topics.intents, &input[600..]);
    wait_all_committed(&broker, &topics, 2, Duration::from_secs(60));
    let decisions = broker.read_all(&topics.decisions);
    assert_eq!(decisions.len(), 900);
    let last_batch: HashSet<String> = input[600..]
        .iter()
        .map(|(_, _, p)| {
            serde_json::from_slice::<serde_json::Value>(p).unwrap()["intent_id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let after: Vec<&Record> = decisions
        .iter()
        .filter(|r| last_batch.contains(r.value["intent_id"].as_str().unwrap()))
        .filter(|r| r.value.get("duplicate").is_none())
        .collect();
    assert!(after.len() > 250, "{}", after.len());
    for r in after {
        assert_eq!(r.value["ruleset"], new_version.as_str(), "{}", r.value);
    }

    // SIGTERM while intents are in flight: exit 0, and what is committed is exactly what
    // has decisions.
    let more = intents(2_000, 9, 20, true);
    broker.produce(&topics.intents, &more);
    s.wait_event("state restored", Duration::from_secs(30), |_| true);
    let status = s.terminate(Duration::from_secs(30));
    assert!(status.success(), "{status}");
    let log = s.log_text();
    assert!(log.contains("left the consumer group"), "{log}");
    let committed = broker.committed(&topics.group, &topics.intents, 2);
    let decisions = broker.read_all(&topics.decisions);
    for p in 0..2 {
        let c = committed[p as usize].unwrap_or(0);
        let offsets: HashSet<i64> = decisions
            .iter()
            .filter(|r| r.source_offset().0 == p)
            .map(|r| r.source_offset().1)
            .collect();
        assert_eq!(
            offsets.len() as i64,
            c,
            "partition {p}: one decision per committed intent"
        );
        assert!(offsets.iter().all(|o| *o < c));
    }
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn too_few_decision_partitions_is_refused_at_start() {
    let _serial = serial();
    let broker = Broker::shared();
    let topics = Topics::new("narrow");
    broker.create_topic(&topics.intents, 3);
    broker.create_topic(&topics.decisions, 2);
    broker.create_topic(&topics.dead_letters, 1);
    let rules = sample_rules();
    let mut s = Service::on(&broker, &topics, &rules);
    let status = s.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "{status}");
    let log = s.log_text();
    assert!(
        log.contains("has 2 partition(s), fewer than the 3"),
        "{log}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn a_zombie_with_the_same_transactional_id_is_fenced_and_stops() {
    let (_serial, broker, topics) = topics_on_shared_broker("zombie", 2);
    let account_rules = account_rules();
    let rules = account_rules.path().to_owned();
    let config = ServiceConfig::new(&broker, &topics, "zombie-a", &rules);
    let mut old = Service::start(&config);
    old.wait_ready();
    broker.produce(&topics.intents, &intents(200, 8, 10, false));
    wait_all_committed(&broker, &topics, 2, Duration::from_secs(60));
    // A second incarnation of the same instance (same transactional_id) fences the first:
    // its next transaction fails fatally and it stops with an error.
    let mut new = Service::start(&config);
    new.wait_event("transactions initialised", Duration::from_secs(60), |_| {
        true
    });
    broker.produce(&topics.intents, &intents(200, 9, 10, false));
    let status = old.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "the fenced instance must not exit 0");
    let log = old.log_text();
    assert!(log.to_lowercase().contains("fenc"), "{log}");
    // The new incarnation decides everything, exactly once.
    wait_all_committed(&broker, &topics, 2, Duration::from_secs(90));
    check_against_oracle(&broker, &topics, &rules, true);
    new.stop();
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn missing_topics_are_refused_unless_creation_is_configured() {
    let _serial = serial();
    let broker = Broker::shared();
    let topics = Topics::new("fresh");
    let account_rules = account_rules();
    let rules = account_rules.path().to_owned();
    let config = |extra| ServiceConfig {
        extra,
        ..ServiceConfig::new(&broker, &topics, "fresh-a", &rules)
    };
    let mut refused = Service::start(&config(""));
    let status = refused.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "{status}");
    let log = refused.log_text();
    assert!(log.contains("missing topic(s)"), "{log}");
    assert!(log.contains(&topics.intents), "{log}");

    let mut created = Service::start(&config("create_topics = true\npartitions = 4"));
    assert_eq!(created.wait_ready(), vec![0, 1, 2, 3]);
    for t in [&topics.intents, &topics.decisions, &topics.dead_letters] {
        assert_eq!(broker.partitions(t), 4, "{t}");
    }
    broker.produce(&topics.intents, &intents(100, 4, 10, false));
    wait_all_committed(&broker, &topics, 4, Duration::from_secs(60));
    check_against_oracle(&broker, &topics, &rules, false);
    created.stop();
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn another_client_produces_intents_and_reads_decisions() {
    // One partition: the sample rules' agent counters are exact on it.
    let (_serial, broker, topics) = topics_on_shared_broker("wire", 1);
    let rules = sample_rules();
    let mut s = Service::on(&broker, &topics, &rules);
    s.wait_ready();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wire_format.py");
    let out = Command::new(python())
        .arg(&script)
        .args([
            &broker.address,
            &topics.intents,
            &topics.decisions,
            &topics.dead_letters,
        ])
        .output()
        .unwrap();
    assert_success(&out, "tests/wire_format.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("wire format ok"), "{stdout}");
    s.stop();
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn the_sample_rules_on_three_partitions_are_refused_with_the_ways_out() {
    let (_serial, broker, topics) = topics_on_shared_broker("split", 3);
    let rules = sample_rules();
    let mut s = Service::on(&broker, &topics, &rules);
    let status = s.wait_exit(Duration::from_secs(60));
    assert!(!status.success(), "{status}");
    let log = s.log_text();
    for needle in [
        "3 partitions keyed by `account_id`",
        "counter `agent_actions_10m` has key [agent_id]",
        "counter `agent_exports_1h` has key [agent_id]",
        "use one partition",
        "add `account_id` to the key",
    ] {
        assert!(log.contains(needle), "no `{needle}` in:\n{log}");
    }
    // The offline check says the same.
    let out = Command::new(env!("CARGO_BIN_EXE_riskgate"))
        .args([
            "check",
            "--partitions",
            "3",
            "--partition-key",
            "account_id",
        ])
        .arg(&rules)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("counter `agent_actions_10m` has key [agent_id]"),
        "{stderr}"
    );
}

/// The value of a metric series in `/metrics` text, when present.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn records_keyed_otherwise_than_their_account_are_denied_as_misrouted() {
    let (_serial, broker, topics) = topics_on_shared_broker("misrouted", 1);
    let rules = velocity_rules();
    let mut s = Service::on(&broker, &topics, rules.path());
    let http = s.http_address();
    s.wait_ready();
    let (_, _, body) = transfer(1, "acct-1");
    // No key (every client's default), a wrong key, then the right one.
    let producer = broker.producer();
    producer
        .send(rdkafka::producer::BaseRecord::<(), _>::to(&topics.intents).payload(&body))
        .map_err(|(e, _)| e)
        .unwrap();
    rdkafka::producer::Producer::flush(&producer, Duration::from_secs(30)).unwrap();
    broker.produce(
        &topics.intents,
        &[
            (None, "acct-2".to_owned(), transfer(2, "acct-1").2),
            transfer(3, "acct-1"),
        ],
    );
    let third = decision_on(&broker, &topics, 3);
    let decisions = broker.read_all(&topics.decisions);
    assert_eq!(decisions.len(), 3);
    for d in &decisions[..2] {
        assert_eq!(d.value["decision"], "deny", "{}", d.value);
        assert_eq!(d.value["reasons"][0]["rule"], "riskgate:misrouted");
        assert_eq!(d.value["counters"], serde_json::json!({}));
    }
    // The misrouted ones counted nowhere: the third sees no earlier transfer.
    assert_eq!(third["decision"], "allow", "{third}");
    assert_eq!(third["counters"]["transfers_1h"], 0);
    let (_, text) = http_get(&http, "/metrics").unwrap();
    assert_eq!(
        metric(
            &text,
            "riskgate_system_decisions_total{reason=\"misrouted\"}"
        ),
        Some(2.0),
        "{text}"
    );
    s.stop();
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn huge_and_broken_records_never_stall_a_partition() {
    use sha2_hex::hex_sha256;
    let (_serial, broker, topics) = topics_on_shared_broker("huge", 1);
    let rules = velocity_rules();
    let mut s = Service::on(&broker, &topics, rules.path());
    s.wait_ready();
    // 900 KB that is not UTF-8; a 700 KB JSON intent; the largest record this producer sends.
    let not_text: Vec<u8> = (0..900_000u32).map(|i| (i % 251) as u8 | 0x80).collect();
    let mut json = br#"{"intent_id":"big","agent_id":"bot","account_id":"acct-1","action":"transfer","attributes":{"blob":""#.to_vec();
    json.resize(700_000, b'a');
    json.extend_from_slice(br#""},"created_at":"2026-11-28T10:00:00Z"}"#);
    let largest = vec![b'{'; 999_000];
    let bad = [not_text, json, largest];
    let started = std::time::Instant::now();
    for (i, payload) in bad.iter().enumerate() {
        let this_one = std::time::Instant::now();
        broker.produce(
            &topics.intents,
            &[
                (None, "acct-1".to_owned(), payload.clone()),
                // An account of its own each, so that no velocity rule fires.
                transfer(10 + i as u32, &format!("acct-{}", 10 + i)),
            ],
        );
        let d = decision_on(&broker, &topics, 10 + i as u32);
        assert_eq!(d["decision"], "allow", "{d}");
        assert_eq!(d["counters"]["transfers_1h"], 0, "{d}");
        eprintln!(
            "huge record {i} and the intent after it: {:?}",
            this_one.elapsed()
        );
        assert!(
            this_one.elapsed() < Duration::from_secs(15),
            "the intent after huge record {i} is decided within seconds"
        );
    }
    // A valid intent under a 600 KB key that is not text: misrouted, and its answer (which
    // cannot carry that key) is published; the intent after it is decided.
    let this_one = std::time::Instant::now();
    let huge_key: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8 | 0x80).collect();
    let (_, _, small) = transfer(13, "acct-13");
    use rdkafka::producer::Producer as _;
    let producer = broker.producer();
    producer
        .send(
            rdkafka::producer::BaseRecord::to(&topics.intents)
                .partition(0)
                .key(&huge_key[..])
                .payload(&small[..]),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(Duration::from_secs(30)).unwrap();
    broker.produce(&topics.intents, &[transfer(14, "acct-14")]);
    let misrouted = decision_on(&broker, &topics, 13);
    assert_eq!(misrouted["decision"], "deny", "{misrouted}");
    assert_eq!(misrouted["reasons"][0]["rule"], "riskgate:misrouted");
    let message = misrouted["reasons"][0]["message"].as_str().unwrap();
    assert!(message.contains("(600000 bytes)"), "{message}");
    let d = decision_on(&broker, &topics, 14);
    assert_eq!(d["decision"], "allow", "{d}");
    assert!(this_one.elapsed() < Duration::from_secs(15));
    eprintln!(
        "four huge records and the intents after them: {:?}",
        started.elapsed()
    );
    let letters = broker.read_all(&topics.dead_letters);
    assert_eq!(letters.len(), 3, "one dead letter each, none written twice");
    for (letter, payload) in letters.iter().zip(&bad) {
        let v = &letter.value;
        assert_eq!(v["error"]["kind"], "too_large", "{v}");
        assert_eq!(v["payload_bytes"], payload.len());
        assert_eq!(v["payload_sha256"], hex_sha256(payload).as_str());
        assert_eq!(v["payload_truncated"], true);
    }
    s.stop();
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn a_record_the_broker_refuses_holds_up_its_partition_only_then_goes_on() {
    let _serial = serial();
    let broker = Broker::shared();
    let topics = Topics::new("refused");
    broker.create_topic(&topics.intents, 2);
    // Smaller than the decision on a 6 KB intent: the broker refuses that one record.
    broker.create_topic_with(&topics.decisions, 2, 1, &[("max.message.bytes", "4096")]);
    broker.create_topic(&topics.dead_letters, 2);
    let rules = account_rules();
    let mut s = Service::on(&broker, &topics, rules.path());
    let http = s.http_address();
    s.wait_ready();
    let (_, _, small) = transfer(1, "acct-big");
    let big = String::from_utf8(small)
        .unwrap()
        .replace("\"t-1\"", "\"t-big\"")
        .replace(
            "\"created_at\"",
            &format!(
                "\"attributes\":{{\"note\":\"{}\"}},\"created_at\"",
                "n".repeat(6000)
            ),
        );
    broker.produce(
        &topics.intents,
        &[
            (Some(0), "acct-big".to_owned(), big.into_bytes()),
            (Some(0), "acct-big".to_owned(), transfer(2, "acct-big").2),
            (
                Some(1),
                "acct-other".to_owned(),
                transfer(3, "acct-other").2,
            ),
        ],
    );
    // The other partition goes on.
    decision_on(&broker, &topics, 3);
    // Partition 0 is held up at offset 0, said by the metric, /readyz and an error log line.
    let held = wait_for(
        "partition 0 to be reported held up",
        Duration::from_secs(60),
        || {
            let (_, text) = http_get(&http, "/metrics")?;
            metric(&text, "riskgate_unproducible_offset{partition=\"0\"}")
        },
    );
    assert_eq!(held, 0.0);
    let (status, body) = http_get(&http, "/readyz").unwrap();
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("\"unproducible_partitions\":1"), "{body}");
    let logged = s.wait_event(
        "the broker keeps refusing the output of this intent",
        Duration::from_secs(5),
        |e| e["partition"] == 0 && e["offset"] == 0,
    );
    assert!(
        logged["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{logged}"
    );
    // It backs off instead of spinning: 1 s, 2 s, 4 s, 8 s between tries. Counted over a
    // fixed window (an observation, not a wait): without the backoff it is dozens.
    let aborts = || {
        let (_, text) = http_get(&http, "/metrics").unwrap();
        metric(&text, "riskgate_transactions_total{result=\"abort\"}").unwrap_or(0.0)
    };
    let before = aborts();
    let watched = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(8));
    let during = aborts() - before;
    assert!(during <= 4.0, "{during} aborts in {:?}", watched.elapsed());
    assert!(
        broker
            .read_all(&topics.decisions)
            .iter()
            .all(|d| d.partition == 1),
        "nothing after the refused record is decided on its partition"
    );

    // Once the topic takes it, the partition goes on by itself: nothing skipped or doubled.
    broker.alter_topic(&topics.decisions, &[("max.message.bytes", "1048588")]);
    decision_on(&broker, &topics, 2);
    wait_for("ready again", Duration::from_secs(60), || {
        (http_get(&http, "/readyz")?.0 == 200).then_some(())
    });
    let decisions = broker.read_all(&topics.decisions);
    let mut ids: Vec<&str> = decisions
        .iter()
        .filter_map(|d| d.value["intent_id"].as_str())
        .collect();
    ids.sort();
    assert_eq!(ids, ["t-2", "t-3", "t-big"], "one decision each");
    let (_, text) = http_get(&http, "/metrics").unwrap();
    assert_eq!(
        metric(&text, "riskgate_unproducible_offset{partition=\"0\"}"),
        None
    );
    s.stop();
}

mod sha2_hex {
    /// The SHA-256 of `bytes` in hex, computed here independently of riskgate's code.
    pub fn hex_sha256(bytes: &[u8]) -> String {
        let out = super::output_with_input(&mut std::process::Command::new("sha256sum"), bytes);
        String::from_utf8(out.stdout).unwrap()[..64].to_owned()
    }
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn the_example_configuration_starts_without_a_warning() {
    let (_serial, broker, topics) = topics_on_shared_broker("example", 1);
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = std::fs::read_to_string(root.join("riskgate.example.toml")).unwrap();
    // The example as it is, on this test's broker, topics and ports.
    let text = example
        .replace("\"127.0.0.1:9092\"", &format!("{:?}", broker.address))
        .replace(
            "group_id = \"riskgate\"",
            &format!("group_id = {:?}", topics.group),
        )
        .replace("\"intents\"", &format!("{:?}", topics.intents))
        .replace("\"decisions\"", &format!("{:?}", topics.decisions))
        .replace("\"intents.dlq\"", &format!("{:?}", topics.dead_letters))
        .replace("\"riskgate-a\"", &format!("{:?}", topics.group))
        .replace(
            "dir = \"rules\"",
            &format!("dir = {:?}", root.join("rules").display().to_string()),
        )
        .replace("127.0.0.1:9464", "127.0.0.1:0");
    // Its signing key, made as the example says.
    let secrets = tempfile::tempdir().unwrap();
    let key = secrets.path().join("k1");
    std::fs::write(&key, [42u8; 32]).unwrap();
    let text = text.replace(
        "secret_file = \"secrets/k1\"",
        &format!("secret_file = {:?}", key.display().to_string()),
    );
    assert_ne!(text, example, "the example was adapted");
    // Every level, librdkafka's own warnings included.
    let mut s = Service::spawn_logging("run", &text, "info");
    s.wait_ready();
    broker.produce(&topics.intents, &[transfer(1, "acct-1")]);
    decision_on(&broker, &topics, 1);
    let loud: Vec<serde_json::Value> = s
        .events()
        .into_iter()
        .filter(|e| matches!(e["level"].as_str(), Some("WARN" | "ERROR")))
        .collect();
    assert!(loud.is_empty(), "warnings at start: {loud:#?}");
    // Its gateway too, and the example key README.md's curl example sends.
    let gateway = support::gateway::Gateway::start(&text.replace("127.0.0.1:9467", "127.0.0.1:0"));
    let body = r#"{"intent_id":"readme-1","agent_id":"payments-bot","account_id":"acct-0005","action":"transfer","amount":"250.00","currency":"EUR","counterparty":{"id":"cp-0001"},"created_at":"2026-11-28T10:30:00Z"}"#;
    let r = http(
        &gateway.address,
        "POST",
        "/v1/intents?wait=10s",
        &[(
            "Authorization",
            "Bearer rgk_demo-payments-bot-never-use-this-key",
        )],
        Some(body),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["decision"], "allow", "{}", r.body);
    let loud: Vec<serde_json::Value> = gateway
        .process
        .events()
        .into_iter()
        .filter(|e| matches!(e["level"].as_str(), Some("WARN" | "ERROR")))
        .collect();
    assert!(loud.is_empty(), "the gateway's warnings: {loud:#?}");
    s.stop();
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn a_forged_decision_is_never_restored() {
    use rdkafka::producer::Producer as _;
    let _serial = serial();
    let broker = Broker::shared();
    let topics = Topics::new("forged");
    topics.create(&broker, 1);
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(
        rules.path().join("limits.toml"),
        "[[rule]]\nid = \"too-large\"\nwhen = 'amount > 50000'\naction = \"deny\"\n",
    )
    .unwrap();
    let mut s = Service::on(&broker, &topics, rules.path());
    s.wait_ready();
    broker.produce(
        &topics.intents,
        &[transfer(1, "acct-1"), transfer(2, "acct-1")],
    );
    decision_on(&broker, &topics, 2);
    // A forger writes an `allow` for an intent not proposed yet, below the committed offset,
    // as restore would count it, once without a MAC and once with a wrong one.
    let intent = r#"{"intent_id":"t-99","agent_id":"bot","account_id":"acct-1","action":"transfer","amount":"99000.00","currency":"EUR","created_at":"2026-11-28T10:30:00Z"}"#;
    let forged = format!(
        r#"{{"intent_id":"t-99","agent_id":"bot","account_id":"acct-1","action":"transfer","amount":"99000.00","currency":"EUR","created_at":"2026-11-28T10:30:00.000Z","decision":"allow","score":0,"reasons":[],"errors":[],"counters":{{}},"ruleset":"000000000000","decided_at":"2026-11-28T10:30:00.010Z","source":{{"topic":"{}","partition":0,"offset":0}},"intent":{intent}}}"#,
        topics.intents
    );
    let producer = broker.producer();
    for mac in [
        None,
        Some("test:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    ] {
        let mut record = rdkafka::producer::BaseRecord::to(&topics.decisions)
            .partition(0)
            .key("acct-1")
            .payload(&forged);
        if let Some(mac) = mac {
            record = record.headers(rdkafka::message::OwnedHeaders::new().insert(
                rdkafka::message::Header {
                    key: "riskgate-mac",
                    value: Some(mac),
                },
            ));
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    // A crash and a restart: the state is rebuilt from the decisions topic.
    s.kill();
    let mut s = Service::on(&broker, &topics, rules.path());
    let http = s.http_address();
    s.wait_ready();
    broker.produce(
        &topics.intents,
        &[(None, "acct-1".to_owned(), intent.as_bytes().to_vec())],
    );
    let real = wait_for("the decision on t-99", Duration::from_secs(60), || {
        broker
            .read_all(&topics.decisions)
            .into_iter()
            .find(|r| r.value["intent_id"] == "t-99" && r.value["source"]["offset"] == 2)
            .map(|r| r.value)
    });
    assert_eq!(real["decision"], "deny", "decided by the rules: {real}");
    assert!(
        real.get("duplicate").is_none(),
        "not a duplicate of the forgery: {real}"
    );
    let (_, text) = http_get(&http, "/metrics").unwrap();
    let series = |reason: &str| {
        format!(
            "riskgate_unverified_records_total{{reason=\"{reason}\",topic=\"{}\"}}",
            topics.decisions
        )
    };
    assert_eq!(metric(&text, &series("missing")), Some(1.0), "{text}");
    assert_eq!(metric(&text, &series("bad_mac")), Some(1.0), "{text}");
    assert!(s
        .log_text()
        .contains("ignoring a record riskgate did not write"));
    // Every record riskgate wrote carries its MAC.
    let decisions = broker.read_all(&topics.decisions);
    assert_eq!(decisions.len(), 5, "3 decisions and 2 forgeries");
    let signed = decisions
        .iter()
        .filter(|r| {
            r.mac
                .as_deref()
                .is_some_and(|m| m.starts_with("test:") && m.len() == 48)
        })
        .count();
    assert_eq!(
        signed, 4,
        "riskgate's 3 decisions, and the forgery with a made-up MAC"
    );
    assert!(s.terminate(Duration::from_secs(30)).success());
}
