//! Rebuilding one partition's state from the decisions topic ([docs/design.md](../../docs/design.md#5-kafka-guarantees)).
//!
//! Every decision the service writes embeds its intent, so the decisions of a partition are
//! enough to rebuild its velocity counters and its duplicate horizon. Only decisions whose
//! `source.offset` is below the committed offset of the intents partition count: those are
//! exactly the decisions of committed transactions. A record of an aborted transaction for
//! an offset below the committed one (visible on brokers that expose aborted records) is
//! always followed in the log by the committed record for the same offset, so the last
//! record per source offset is the one kept.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::{Message, Offset, TopicPartitionList};

use crate::config::Config;
use riskgate_core::decision::{Decision, Source};
use riskgate_core::engine::Engine;
use riskgate_core::intent::Intent;
use riskgate_core::wire::{parse_record, ReadError};

use super::{engine_options, Error};
use crate::kafka::{decisions_reader, mac_of, Logging};
use crate::telemetry::events::{self, Emit};
use crate::telemetry::metrics;

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreStats {
    /// Records read from the decisions partition.
    pub read: u64,
    /// Decisions counted (committed, below the committed offset, last per source offset).
    pub applied: u64,
    /// Records that could not be read as decisions (logged, skipped).
    pub unreadable: u64,
    /// Records riskgate did not write (no or a wrong MAC: counted, logged, skipped).
    pub unverified: u64,
    pub elapsed: Duration,
}

impl RestoreStats {
    pub fn per_second(&self) -> f64 {
        self.read as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Builds the state of intents partition `partition`, whose committed offset is
/// `committed` (`None`: nothing committed yet, so nothing counts).
pub fn restore(
    config: &Config,
    ruleset: Arc<riskgate_core::rules::Ruleset>,
    partition: i32,
    committed: Option<i64>,
    stop: &AtomicBool,
) -> Result<(Engine, RestoreStats), Error> {
    let started = Instant::now();
    let mut engine = Engine::new(ruleset, engine_options(config));
    let mut stats = RestoreStats {
        read: 0,
        applied: 0,
        unreadable: 0,
        unverified: 0,
        elapsed: Duration::ZERO,
    };
    let Some(committed) = committed.filter(|c| *c > 0) else {
        stats.elapsed = started.elapsed();
        return Ok((engine, stats));
    };
    let topic = config.kafka.decisions_topic.as_str();
    let logging = Logging::new("the restore reader");
    let outage = logging.outage.clone();
    let consumer = decisions_reader(config, "restore", logging)
        .map_err(Error::kafka("create the restore consumer"))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .map_err(Error::kafka("assign the decisions partition"))?;
    consumer
        .assign(&tpl)
        .map_err(Error::kafka("assign the decisions partition"))?;

    let mut kept = Kept::new(&config.kafka.intents_topic, partition, committed);
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(Error::Stopped);
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                stats.read += 1;
                outage.ok();
                let Some(payload) = m.payload() else {
                    continue;
                };
                // Only riskgate's own records count: a forged decision must never be
                // remembered or move a counter.
                if let Err(why) = config.integrity.check(topic, m.key(), payload, mac_of(&m)) {
                    stats.unverified += 1;
                    events::UnverifiedRecord {
                        counter: &metrics().unverified_records,
                        topic,
                        partition,
                        offset: m.offset(),
                        reason: why.as_str(),
                        reader: "restore",
                    }
                    .emit();
                    continue;
                }
                match kept.offer(payload) {
                    Ok(()) => {}
                    Err(e) => {
                        stats.unreadable += 1;
                        tracing::warn!(
                            topic,
                            partition,
                            offset = m.offset(),
                            error = %e,
                            "skipping a record of the decisions topic that is not a decision"
                        );
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => {
                outage.ok();
                break;
            }
            Some(Err(e)) => {
                // Reconnecting is librdkafka's business; its errors queue up behind the
                // records (see `Outage::seen`), so they are read on without waiting.
                outage.seen(&format_args!("restoring partition {partition}: {e}"));
            }
            None => {}
        }
    }
    for (decision, intent) in kept.into_decisions() {
        stats.applied += 1;
        engine.restore(intent, decision);
    }
    engine.sweep();
    stats.elapsed = started.elapsed();
    Ok((engine, stats))
}

/// The decisions of one intents partition that a restore counts: those whose intent is below
/// the partition's committed offset, the last record per source offset.
struct Kept<'a> {
    intents_topic: &'a str,
    partition: i32,
    committed: i64,
    /// Source offset -> the last record for it. Kept whole until the end of the partition,
    /// because only then is it known which record for an offset is the last.
    by_offset: BTreeMap<i64, (Decision, Intent)>,
}

impl<'a> Kept<'a> {
    fn new(intents_topic: &'a str, partition: i32, committed: i64) -> Self {
        Kept {
            intents_topic,
            partition,
            committed,
            by_offset: BTreeMap::new(),
        }
    }

    /// Looks at the next record of the decisions partition; keeps it when it is a decision
    /// that counts. Review records and decisions of other partitions or of intents not
    /// committed are passed over; a record that is neither decision nor review is an error.
    fn offer(&mut self, payload: &[u8]) -> Result<(), ReadError> {
        // The embedded intents were valid when they were decided: a limit lowered since must
        // not drop them from the state (that would reset counters), so none applies here.
        let Some((decision, intent)) = parse_record(payload, usize::MAX)? else {
            return Ok(());
        };
        if let Source::Kafka {
            topic,
            partition,
            offset,
        } = &decision.source
        {
            if &**topic == self.intents_topic
                && *partition == self.partition
                && *offset < self.committed
            {
                self.by_offset.insert(*offset, (decision, intent));
            }
        }
        Ok(())
    }

    /// The kept decisions, in the order of their intents.
    fn into_decisions(self) -> impl Iterator<Item = (Decision, Intent)> {
        self.by_offset.into_values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use riskgate_core::engine::{Clock, EngineOptions, Processed, RecordKey};
    use riskgate_core::rules::Ruleset;

    /// The decisions-topic record of intent `id` at `offset` of intents `partition`, decided
    /// `outcome` (forced, as a re-decided or aborted copy would differ).
    fn record(id: &str, partition: i32, offset: i64, amount: &str) -> Vec<u8> {
        let rules = Ruleset::load_sources(&[]).unwrap();
        let mut engine = Engine::new(Arc::new(rules), EngineOptions::default());
        let payload = format!(
            r#"{{"intent_id":"{id}","agent_id":"bot","account_id":"a","action":"transfer","amount":"{amount}","currency":"EUR","created_at":"2026-11-28T10:00:00Z"}}"#
        );
        let source = Source::Kafka {
            topic: "intents".into(),
            partition,
            offset,
        };
        let at = Clock::At("2026-11-28T10:00:01Z".parse().unwrap());
        let Processed::Decided(d) = engine.process(
            payload.as_bytes(),
            1 << 16,
            RecordKey::Unchecked,
            source,
            at,
        ) else {
            panic!("valid")
        };
        let mut out = Vec::new();
        d.write_json(&mut out, Some(payload.as_bytes()));
        out
    }

    #[test]
    fn only_decisions_of_committed_intents_of_this_partition_count_the_last_per_offset() {
        let mut kept = Kept::new("intents", 1, 3);
        for r in [
            record("a", 1, 0, "1"),
            record("b", 1, 1, "1"),
            // An aborted copy of offset 1, then the committed one, which wins.
            record("b", 1, 1, "2"),
            record("c", 0, 2, "1"),  // another partition's intent
            record("d", 1, 3, "1"),  // at the committed offset: not committed
            record("e", 1, 90, "1"), // far beyond it
        ] {
            kept.offer(&r).unwrap();
        }
        assert!(kept.offer(b"not a decision").is_err());
        let got: Vec<(String, String)> = kept
            .into_decisions()
            .map(|(d, _)| {
                (
                    d.head.intent_id.to_string(),
                    d.head.amount.unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [("a".into(), "1".into()), ("b".into(), "2".into())],
            "below the committed offset of this partition only, the last record per offset"
        );
    }
}
