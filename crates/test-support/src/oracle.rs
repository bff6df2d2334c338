//! The oracle: what the offline engine decides for each intents partition, in offset
//! order, compared with what the service wrote.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use riskgate_core::decision::Source;
use riskgate_core::engine::{Clock, Engine, EngineOptions, Processed, RecordKey};
use riskgate_core::rules::Ruleset;

use super::{unique, Broker, Topics};

/// Outcome, score, reasons and counters as JSON text; or the dead-letter kind.
pub type Expected = Result<(String, i64, String, String), String>;

/// What the offline engine decides for each intents partition, read back from the topic in
/// offset order: the oracle for the service's decisions. Keyed by (partition, offset).
pub fn offline_decisions(
    broker: &Broker,
    topics: &Topics,
    rules: &Path,
) -> BTreeMap<(i64, i64), Expected> {
    let ruleset = Arc::new(Ruleset::load_dir(rules).unwrap());
    let options = EngineOptions {
        max_future_skew: None,
        ..EngineOptions::default()
    };
    let mut engines: HashMap<i32, Engine> = HashMap::new();
    let mut out = BTreeMap::new();
    // Read the raw payloads (read_all parses JSON; the oracle needs the bytes).
    let consumer: rdkafka::consumer::BaseConsumer = broker
        .client()
        .set("group.id", unique("oracle"))
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    use rdkafka::consumer::Consumer;
    use rdkafka::Message;
    let md = consumer
        .fetch_metadata(Some(&topics.intents), Duration::from_secs(10))
        .unwrap();
    let n = md.topics()[0].partitions().len();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..n as i32 {
        tpl.add_partition_offset(&topics.intents, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut done = HashSet::new();
    while done.len() < n {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let p = m.partition();
                let engine = engines
                    .entry(p)
                    .or_insert_with(|| Engine::new(ruleset.clone(), options.clone()));
                let source = Source::File {
                    file: Arc::from("oracle"),
                    line: 0,
                };
                // The service's own step: the record's key is checked as the service checks it.
                let processed = engine.process(
                    m.payload().unwrap_or_default(),
                    64 * 1024,
                    RecordKey::Kafka(m.key()),
                    source,
                    Clock::At(Utc::now()),
                );
                let verdict = match processed {
                    Processed::Decided(d) => {
                        let mut line = Vec::new();
                        d.write_json_line(&mut line);
                        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
                        Ok((
                            v["decision"].as_str().unwrap().to_owned(),
                            v["score"].as_i64().unwrap(),
                            v["reasons"].to_string(),
                            v["counters"].to_string(),
                        ))
                    }
                    Processed::Invalid(letter) => Err(letter.error.kind.as_str().to_owned()),
                };
                out.insert((i64::from(p), m.offset()), verdict);
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                done.insert(p);
            }
            Some(Err(e)) => panic!("{e}"),
            None => {}
        }
    }
    out
}

/// Checks the decisions and dead letters on the topics against the offline oracle:
/// every intent has exactly one output (deduplicated by source offset when `dedup`), on its
/// intent's partition, with the oracle's verdict and counters.
pub fn check_against_oracle(
    broker: &Broker,
    topics: &Topics,
    rules: &Path,
    dedup: bool,
) -> (usize, usize) {
    let oracle = offline_decisions(broker, topics, rules);
    let decisions = broker.read_all(&topics.decisions);
    let dead = broker.read_all(&topics.dead_letters);
    let mut seen: HashMap<(i64, i64), usize> = HashMap::new();
    for r in &decisions {
        let source = r.source_offset();
        *seen.entry(source).or_default() += 1;
        assert_eq!(
            i64::from(r.partition),
            source.0,
            "decision on the wrong partition: {:?}",
            r.value
        );
        assert_eq!(r.value["source"]["topic"], topics.intents.as_str());
        let expected = oracle
            .get(&source)
            .unwrap_or_else(|| panic!("no intent at {source:?}"));
        let (outcome, score, reasons, counters) = expected.as_ref().unwrap_or_else(|kind| {
            panic!("intent at {source:?} is invalid ({kind}) but was decided")
        });
        assert_eq!(r.value["decision"].as_str().unwrap(), outcome, "{source:?}");
        assert_eq!(r.value["score"].as_i64().unwrap(), *score, "{source:?}");
        assert_eq!(&r.value["reasons"].to_string(), reasons, "{source:?}");
        assert_eq!(&r.value["counters"].to_string(), counters, "{source:?}");
        assert!(
            r.value["intent"].is_object(),
            "the decision embeds its intent"
        );
    }
    for r in &dead {
        let source = r.source_offset();
        *seen.entry(source).or_default() += 1;
        let kind = r.value["error"]["kind"].as_str().unwrap();
        assert_eq!(
            oracle.get(&source),
            Some(&Err(kind.to_owned())),
            "{source:?}"
        );
    }
    for source in oracle.keys() {
        let n = seen.get(source).copied().unwrap_or(0);
        if dedup {
            assert!(n >= 1, "intent at {source:?} has no decision");
        } else {
            assert_eq!(n, 1, "intent at {source:?} has {n} outputs");
        }
    }
    assert_eq!(
        seen.len(),
        oracle.len(),
        "outputs for intents that do not exist"
    );
    (decisions.len(), dead.len())
}
