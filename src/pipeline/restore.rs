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
use riskgate_core::wire::parse_record;

use super::{engine_options, Error};
use crate::kafka::decisions_reader;

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreStats {
    /// Records read from the decisions partition.
    pub read: u64,
    /// Decisions counted (committed, below the committed offset, last per source offset).
    pub applied: u64,
    /// Records that could not be read as decisions (logged, skipped).
    pub unreadable: u64,
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
        elapsed: Duration::ZERO,
    };
    let Some(committed) = committed.filter(|c| *c > 0) else {
        stats.elapsed = started.elapsed();
        return Ok((engine, stats));
    };
    let topic = config.kafka.decisions_topic.as_str();
    let consumer =
        decisions_reader(config, "restore").map_err(Error::kafka("create the restore consumer"))?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .map_err(Error::kafka("assign the decisions partition"))?;
    consumer
        .assign(&tpl)
        .map_err(Error::kafka("assign the decisions partition"))?;

    // Source offset -> the last record for it. Kept whole until the end of the partition,
    // because only then is it known which record for an offset is the last.
    let mut kept: BTreeMap<i64, (Decision, Intent)> = BTreeMap::new();
    // The embedded intents were valid when they were decided: a limit lowered since must not
    // drop them from the state (that would reset counters), so none applies here.
    let max_bytes = usize::MAX;
    let intents_topic = config.kafka.intents_topic.as_str();
    let mut backoff = Duration::from_millis(100);
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(Error::Stopped);
        }
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                stats.read += 1;
                backoff = Duration::from_millis(100);
                let Some(payload) = m.payload() else {
                    continue;
                };
                match parse_record(payload, max_bytes) {
                    Ok(Some((decision, intent))) => {
                        if let Source::Kafka {
                            topic: t,
                            partition: p,
                            offset,
                        } = &decision.source
                        {
                            if &**t == intents_topic && *p == partition && *offset < committed {
                                kept.insert(*offset, (decision, intent));
                            }
                        }
                    }
                    Ok(None) => {}
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
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => {
                tracing::warn!(topic, partition, error = %e, "restore: reading the decisions topic failed; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            None => {}
        }
    }
    for (_, (decision, intent)) in kept {
        stats.applied += 1;
        engine.restore(intent, decision);
    }
    engine.sweep();
    stats.elapsed = started.elapsed();
    Ok((engine, stats))
}
