//! `riskgate gateway`: decisions at the point of use (design 10, docs/gateway.md).
//!
//! An agent posts an intent and gets its decision in the answer. The gateway checks who is
//! calling (a key per agent), validates the intent with the engine's own parser, writes it to
//! the intents topic with an idempotent producer under its partition key, and waits for the
//! answer to *that record*: every instance reads the decisions and dead-letter topics
//! (`read_committed`, from `cache_age` ago at start) into a bounded [`cache::Cache`], and
//! each decision names the intents partition and offset it answers. Nothing is kept that the
//! topics do not hold: an instance may stop at any time, and a client that retries gets the
//! decision (a duplicate, answered with the first decision).

pub mod api;
pub mod authzen;
pub mod cache;
pub mod keys;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::FutureProducer;
use rdkafka::{Message, Offset, TopicPartitionList};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc as tmpsc;

use crate::config::{Config, Purpose};
use crate::kafka::{
    client_config, decisions_reader, mac_of, wait_for_topic, Backoff, Client, Logging, Outage,
};
use crate::shutdown::{Shutdown, GRACE};
use crate::telemetry::events::{self, Emit};
use crate::telemetry::gateway_metrics;
use cache::{Answer, Cache, Id, Rank};
use riskgate_core::intent::FieldPath;
use riskgate_core::wire::read_head;

/// How long a write to the intents topic may take before the request fails (503).
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The gateway's shared state.
pub struct App {
    cache: Mutex<Cache>,
    keys: RwLock<Arc<keys::Keys>>,
    limiter: governor::DefaultKeyedRateLimiter<[u8; 32]>,
    producer: FutureProducer<Logging>,
    pub settings: crate::config::Gateway,
    intents_topic: String,
    partition_key: FieldPath,
    max_intent_bytes: usize,
    /// Requests waiting for their decision now.
    waiting: AtomicUsize,
    /// The topics have been read up to the time of the start.
    pub ready: AtomicBool,
    /// The broker as the gateway's producer sees it, and as its reader does.
    pub broker: Arc<Outage>,
    pub reader: Arc<Outage>,
}

impl App {
    pub fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn keys(&self) -> Arc<keys::Keys> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Runs the gateway until SIGTERM or SIGINT; `path` is the configuration file, read again
/// for its keys on SIGHUP and when it changes.
pub async fn run(config: Config, path: PathBuf) -> anyhow::Result<()> {
    let g = config.gateway.clone();
    let m = gateway_metrics();
    for topic in [
        &config.kafka.decisions_topic,
        &config.kafka.dead_letter_topic,
    ] {
        config.integrity.announce(&m.unverified_records, topic, &[]);
    }
    for reason in [
        "unauthenticated",
        "bad_key",
        "wrong_agent",
        "rate_limited",
        "busy",
    ] {
        m.refusals.with_label_values(&[reason]);
    }
    for result in ["success", "failure"] {
        m.key_reloads.with_label_values(&[result]);
    }
    let logging = Logging::new("the gateway");
    let broker = logging.outage.clone();
    let mut producer = client_config(&config, Client::Producer);
    for (key, value) in [
        ("statistics.interval.ms", "5000"),
        (
            "reconnect.backoff.max.ms",
            crate::kafka::RECONNECT_BACKOFF_MAX_MS,
        ),
        // The same partition for a key as Kafka's Java clients choose: an account's intents
        // must all reach one partition, whoever produces them (docs/gateway.md).
        ("partitioner", "murmur2_random"),
        ("linger.ms", "2"),
    ] {
        if !config.kafka.librdkafka.contains_key(key) {
            producer.set(key, value);
        }
    }
    let producer: FutureProducer<Logging> = producer
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", WRITE_TIMEOUT.as_millis().to_string())
        .create_with_context(logging)
        .map_err(|e| anyhow::anyhow!("cannot create the gateway's producer: {e}"))?;
    let quota = governor::Quota::per_second(
        std::num::NonZeroU32::new(g.rate.max(1)).unwrap_or(std::num::NonZeroU32::MIN),
    )
    .allow_burst(std::num::NonZeroU32::new(g.burst.max(1)).unwrap_or(std::num::NonZeroU32::MIN));
    let app = Arc::new(App {
        cache: Mutex::new(Cache::new(
            g.cache_entries,
            g.cache_age.to_std().unwrap_or(Duration::from_secs(600)),
        )),
        keys: RwLock::new(Arc::new(keys::Keys::new(&g.keys))),
        limiter: governor::RateLimiter::keyed(quota),
        producer,
        settings: g.clone(),
        intents_topic: config.kafka.intents_topic.clone(),
        partition_key: config.kafka.partition_key.clone(),
        max_intent_bytes: config.engine.max_intent_bytes,
        waiting: AtomicUsize::new(0),
        ready: AtomicBool::new(false),
        broker,
        reader: Arc::new(Outage::new("the gateway's decisions reader")),
    });

    let listener = tokio::net::TcpListener::bind(g.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (gateway.listen): {e}", g.listen))?;
    tracing::info!(address = %listener.local_addr()?, keys = g.keys.len(), "serving the gateway API");
    let metrics_apart = match g.metrics_listen {
        Some(at) => {
            let metrics = tokio::net::TcpListener::bind(at).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on {at} (gateway.metrics_listen): {e}")
            })?;
            tracing::info!(address = %metrics.local_addr()?, "serving /metrics");
            tokio::spawn(crate::server::serve(
                metrics,
                api::metrics_router(),
                crate::server::Limits::default(),
            ));
            true
        }
        None => false,
    };
    tokio::spawn(crate::server::serve(
        listener,
        api::router(app.clone(), !metrics_apart),
        g.limits.clone(),
    ));

    // The keys reload on SIGHUP and when the configuration file changes.
    let (trigger_tx, trigger_rx) = tmpsc::channel::<&'static str>(16);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let _watcher = crate::service::watch_in(
        &dir,
        path.file_name().map(ToOwned::to_owned),
        trigger_tx.clone(),
    )?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let _ = trigger_tx.send("SIGHUP").await;
        }
    });
    tokio::spawn(reload_keys(path, app.clone(), trigger_rx));

    // Old answers leave the cache even when nothing new comes.
    let sweeper = app.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let mut c = sweeper.cache();
            c.evict(Instant::now());
            gauges(&c);
        }
    });

    let shutdown = Shutdown::new();
    let stop = shutdown.flag();
    shutdown.listen("closing the gateway", GRACE)?;
    let reader = app.clone();
    tokio::task::spawn_blocking(move || follow(&config, &reader, &stop)).await??;
    tracing::info!("stopped cleanly");
    Ok(())
}

fn gauges(c: &Cache) {
    let m = gateway_metrics();
    m.cache_entries
        .set(i64::try_from(c.len()).unwrap_or(i64::MAX));
    m.cache_bytes
        .set(i64::try_from(c.bytes()).unwrap_or(i64::MAX));
}

/// Reads the keys again on every trigger; a configuration that does not load keeps the
/// running keys.
async fn reload_keys(path: PathBuf, app: Arc<App>, mut triggers: tmpsc::Receiver<&'static str>) {
    let m = gateway_metrics();
    while let Some(why) = triggers.recv().await {
        // Editors write files in several steps: let a burst of changes settle first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while triggers.try_recv().is_ok() {}
        let p = path.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            Config::load_for(&p, std::env::vars(), Purpose::Gateway)
        })
        .await;
        match loaded {
            Ok(Ok(config)) => {
                let keys = keys::Keys::new(&config.gateway.keys);
                let n = keys.len();
                *app.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(keys);
                m.key_reloads.with_label_values(&["success"]).inc();
                tracing::info!(trigger = why, keys = n, "gateway keys reloaded");
            }
            Ok(Err(e)) => {
                m.key_reloads.with_label_values(&["failure"]).inc();
                tracing::error!(trigger = why, error = %e, "the configuration does not load; the running keys stay");
            }
            Err(e) => tracing::error!(error = %e, "reloading the keys failed"),
        }
    }
}

/// Why the gateway cannot read the decisions topics.
#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("cannot create the decisions consumer: {0}")]
    Consumer(KafkaError),
    #[error("cannot assign the decisions and dead-letter partitions: {0}")]
    Assign(KafkaError),
}

/// Reads the decisions and dead-letter topics from `cache_age` ago into the cache, and keeps
/// following them, until `stop`.
fn follow(config: &Config, app: &App, stop: &AtomicBool) -> Result<(), FollowError> {
    let outage = app.reader.clone();
    let consumer = decisions_reader(
        config,
        "gateway",
        Logging {
            outage: outage.clone(),
        },
    )
    .map_err(FollowError::Consumer)?;
    let decisions = config.kafka.decisions_topic.as_str();
    let dead_letters = config.kafka.dead_letter_topic.as_str();
    let mut counts = Vec::new();
    for topic in [decisions, dead_letters] {
        let Some(n) = wait_for_topic(consumer.client(), topic, stop, &outage) else {
            return Ok(());
        };
        counts.push((topic, n));
    }
    let since = chrono::Utc::now() - app.settings.cache_age;
    let start = start_offsets(&consumer, &counts, since.timestamp_millis(), stop, &outage)?;
    let Some((start, mut unread)) = start else {
        return Ok(());
    };
    consumer.assign(&start).map_err(FollowError::Assign)?;
    let total: i32 = counts.iter().map(|(_, n)| n).sum();
    tracing::info!(decisions, dead_letters, partitions = total, since = %since, "reading the decisions and dead letters from the cache's age on");
    let m = gateway_metrics();
    let started = Instant::now();
    let ready = |app: &App, unread: &std::collections::HashMap<(String, i32), i64>| {
        if unread.is_empty() && !app.ready.swap(true, Ordering::Relaxed) {
            m.ready.set(1);
            tracing::info!(
                answers = app.cache().len(),
                seconds = started.elapsed().as_secs_f64(),
                "read up to the start; ready"
            );
        }
    };
    ready(app, &unread);
    let mut looked = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // Caught up with a partition: its position has reached where it ended at the start.
        // (Not "read the record before the end": on a transactional topic the end is past a
        // commit marker, which no reader is given.)
        if !unread.is_empty() && looked.elapsed() >= Duration::from_millis(100) {
            looked = Instant::now();
            if let Ok(positions) = consumer.position() {
                for e in positions.elements() {
                    let place = (e.topic().to_owned(), e.partition());
                    let reached = match e.offset() {
                        Offset::Offset(o) => unread.get(&place).is_some_and(|end| o >= *end),
                        _ => false,
                    };
                    if reached {
                        unread.remove(&place);
                    }
                }
                ready(app, &unread);
            }
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                outage.ok();
                let topic = msg.topic();
                let Some(payload) = msg.payload() else {
                    continue;
                };
                if let Err(why) = config
                    .integrity
                    .check(topic, msg.key(), payload, mac_of(&msg))
                {
                    // Never an answer: a forged `allow` must not reach an agent.
                    events::UnverifiedRecord {
                        counter: &m.unverified_records,
                        topic,
                        partition: msg.partition(),
                        offset: msg.offset(),
                        reason: why.as_str(),
                        reader: "gateway",
                    }
                    .emit();
                    continue;
                }
                let read = if topic == dead_letters {
                    read_dead_letter(payload)
                } else {
                    read_decision(msg.key(), payload)
                };
                match read {
                    Ok(Some((source, id, answer))) => {
                        let mut c = app.cache();
                        c.insert(Instant::now(), source, id, answer);
                        gauges(&c);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::debug!(topic, partition = msg.partition(), offset = msg.offset(), error = %e, "a record the gateway cannot answer with");
                    }
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => outage.ok(),
            Some(Err(e)) => outage.seen(&format_args!("reading the decisions: {e}")),
            None => {}
        }
    }
    Ok(())
}

/// Where each partition's records end now, by topic and partition.
type Ends = std::collections::HashMap<(String, i32), i64>;

/// Each partition of `topics` at its first offset at or after `since` (milliseconds), and
/// the partitions that have records from there to their end now (with that end); `None`
/// when stopped first.
fn start_offsets(
    consumer: &BaseConsumer<Logging>,
    topics: &[(&str, i32)],
    since: i64,
    stop: &AtomicBool,
    outage: &Outage,
) -> Result<Option<(TopicPartitionList, Ends)>, FollowError> {
    let mut wanted = TopicPartitionList::new();
    for (topic, n) in topics {
        for p in 0..*n {
            wanted
                .add_partition_offset(topic, p, Offset::Offset(since))
                .map_err(FollowError::Assign)?;
        }
    }
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let looked_up = consumer
            .offsets_for_times(wanted.clone(), Duration::from_secs(10))
            .and_then(|found| {
                let mut start = TopicPartitionList::new();
                let mut unread = Ends::new();
                for e in found.elements() {
                    let (_, end) = consumer.fetch_watermarks(
                        e.topic(),
                        e.partition(),
                        Duration::from_secs(10),
                    )?;
                    // No record that recent: from the end.
                    let offset = match e.offset() {
                        Offset::Offset(o) if o >= 0 && o < end => {
                            unread.insert((e.topic().to_owned(), e.partition()), end);
                            Offset::Offset(o)
                        }
                        _ => Offset::End,
                    };
                    start.add_partition_offset(e.topic(), e.partition(), offset)?;
                }
                Ok((start, unread))
            });
        match looked_up {
            Ok(found) => {
                outage.ok();
                return Ok(Some(found));
            }
            Err(e) => outage.failed(&format_args!("looking up where to start reading: {e}")),
        }
        if !backoff.sleep(stop) {
            return Ok(None);
        }
    }
}

/// What a record answers: the intent's place, its identity (decisions only) and the answer.
type Read = Option<(cache::Source, Option<Id>, Answer)>;

/// A decision record as an answer: its fields but `intent`, and what choosing among the
/// answers of one id needs. Review records answer nothing here.
fn read_decision(key: Option<&[u8]>, payload: &[u8]) -> Result<Read, String> {
    let head = read_head(payload).map_err(|e| e.to_string())?;
    if head.stage.as_deref() == Some("review") {
        return Ok(None);
    }
    let Some(source) = head.source_position() else {
        return Ok(None);
    };
    let rank = if head.is_system() {
        Rank::System
    } else if head.duplicate {
        Rank::Duplicate
    } else {
        Rank::Original
    };
    let intent_id = head.intent_id.into_owned();
    let outcome = head.decision.map_or("deny", |o| o.as_str()).to_owned();
    let (body, agent_id) = without_intent(payload)?;
    let id = key.and_then(|k| std::str::from_utf8(k).ok()).map(|key| Id {
        key: key.to_owned(),
        intent_id,
    });
    Ok(Some((
        source,
        id,
        Answer::Decision {
            body,
            agent_id,
            outcome,
            rank,
        },
    )))
}

/// A dead letter as an answer: its `error`, for the intent at its source.
fn read_dead_letter(payload: &[u8]) -> Result<Read, String> {
    #[derive(Deserialize)]
    struct Letter<'a> {
        #[serde(borrow)]
        error: &'a RawValue,
        source: Option<SourceRef>,
    }
    #[derive(Deserialize)]
    struct SourceRef {
        partition: Option<i32>,
        offset: Option<i64>,
    }
    let letter: Letter<'_> = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let Some(SourceRef {
        partition: Some(p),
        offset: Some(o),
    }) = letter.source
    else {
        return Ok(None);
    };
    Ok(Some((
        (p, o),
        None,
        Answer::DeadLetter {
            error: Bytes::copy_from_slice(letter.error.get().as_bytes()),
        },
    )))
}

/// A decision record's JSON without its embedded `intent` (the agent sent it), in its own
/// order and bytes, and its `agent_id`.
fn without_intent(payload: &[u8]) -> Result<(Bytes, String), String> {
    struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);
    impl<'de> Deserialize<'de> for Fields<'de> {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Fields<'de>;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a JSON object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> Result<Fields<'de>, A::Error> {
                    let mut out = Vec::new();
                    while let Some(entry) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                        out.push(entry);
                    }
                    Ok(Fields(out))
                }
            }
            d.deserialize_map(V)
        }
    }
    let fields: Fields<'_> = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(payload.len());
    let mut agent_id = String::new();
    out.push(b'{');
    for (key, value) in fields.0.iter().filter(|(k, _)| k != "intent") {
        if out.len() > 1 {
            out.push(b',');
        }
        if key == "agent_id" {
            agent_id = serde_json::from_str(value.get()).map_err(|e| e.to_string())?;
        }
        serde_json::to_writer(&mut out, key.as_ref()).map_err(|e| e.to_string())?;
        out.push(b':');
        out.extend_from_slice(value.get().as_bytes());
    }
    out.push(b'}');
    Ok((Bytes::from(out), agent_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_record_answers_without_its_intent_in_its_own_order() {
        let record = br#"{"intent_id":"t-1","agent_id":"payments-bot","account_id":"acct-1","action":"transfer","decision":"hold","score":60,"reasons":[],"errors":[],"counters":{"intent":3},"ruleset":"abc","decided_at":"2026-12-07T10:00:00.000Z","source":{"topic":"intents","partition":2,"offset":41},"intent":{"intent_id":"t-1","intent":"x"}}"#;
        let Some((source, id, answer)) = read_decision(Some(b"acct-1"), record).unwrap() else {
            panic!("a decision answers")
        };
        assert_eq!(source, (2, 41));
        assert_eq!(
            id,
            Some(Id {
                key: "acct-1".into(),
                intent_id: "t-1".into()
            })
        );
        let Answer::Decision {
            body,
            agent_id,
            outcome,
            rank,
        } = answer
        else {
            panic!("a decision")
        };
        assert_eq!(
            (agent_id.as_str(), outcome.as_str(), rank),
            ("payments-bot", "hold", Rank::Original)
        );
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"intent_id":"t-1","agent_id":"payments-bot","account_id":"acct-1","action":"transfer","decision":"hold","score":60,"reasons":[],"errors":[],"counters":{"intent":3},"ruleset":"abc","decided_at":"2026-12-07T10:00:00.000Z","source":{"topic":"intents","partition":2,"offset":41}}"#
        );
        // A review record answers nothing here; a dead letter answers its source.
        let review = br#"{"stage":"review","intent_id":"t-1","decision":"allow"}"#;
        assert!(read_decision(Some(b"acct-1"), review).unwrap().is_none());
        let letter = br#"{"error":{"kind":"invalid_json","message":"bad"},"payload":"x","source":{"topic":"intents","partition":0,"offset":5}}"#;
        let Some((source, None, Answer::DeadLetter { error })) = read_dead_letter(letter).unwrap()
        else {
            panic!("a dead letter answers")
        };
        assert_eq!(source, (0, 5));
        assert_eq!(&error[..], br#"{"kind":"invalid_json","message":"bad"}"#);
    }
}
