//! The Kafka service ([docs/design.md](../docs/design.md#5-kafka-guarantees)): consume intents, decide, produce decisions and dead
//! letters, and commit the consumed offsets in the same transaction.
//!
//! One thread runs the loop below on rdkafka's blocking clients; transactions are blocking
//! calls anyway, and one thread owning the producer and every partition's engine needs no
//! locks on the hot path. The consumer's rebalance callbacks run inside `poll` on that same
//! thread, so the state they touch is shared through an uncontended mutex.
//!
//! Per partition: assigned -> paused while its state is restored from the decisions topic
//! (on a helper thread) -> resumed and deciding -> on revocation, the open transaction is
//! committed and the state dropped. An abortable transaction error aborts; the partitions
//! it touched go back to their state as of the last commit (restored again) and the
//! intents of the aborted transaction, kept in memory until a commit, are decided again:
//! the consumer never seeks back.

pub(crate) mod restore;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::config::Config;
use crate::integrity;
use crate::kafka::{
    self, client_config, is_fatal, partition_count, Backoff, Client, Outage, RetryError,
};
use crate::telemetry::events::{self, Emit};
use crate::telemetry::metrics;
use riskgate_core::decision::Source;
use riskgate_core::engine::{Clock, Engine, EngineOptions, Processed, RecordKey};
use riskgate_core::rules::Ruleset;

pub use restore::{restore, RestoreStats};

/// What stops the service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kafka error is part of the message, not a separate source: `main` prints the
    /// chain of sources, and would print it twice.
    #[error("cannot {what}: {error}")]
    Kafka {
        what: &'static str,
        error: KafkaError,
    },
    #[error("{0}")]
    Setup(String),
    #[error("stopped")]
    Stopped,
}

impl Error {
    fn kafka(what: &'static str) -> impl FnOnce(KafkaError) -> Error {
        move |error| Error::Kafka { what, error }
    }
}

/// What the HTTP side reads to answer `/readyz`.
#[derive(Debug, Default)]
pub struct Health {
    /// The consumer holds partitions (or has been told it holds none).
    pub assigned: AtomicBool,
    /// Partitions assigned now.
    pub partitions: AtomicUsize,
    /// Partitions whose state is being restored.
    pub restoring: AtomicUsize,
    /// The last broker interaction succeeded.
    pub broker_up: AtomicBool,
    /// Assigned intents partitions whose leader is unknown or unreachable (from the
    /// consumer's statistics).
    pub leaderless_inputs: AtomicUsize,
    /// Partitions of the decisions and dead-letter topics whose leader is unknown or
    /// unreachable (from the producer's statistics).
    pub leaderless_outputs: AtomicUsize,
    /// How many partitions the intents topic has, once checked at start (0 before).
    pub intents_partitions: AtomicI32,
    /// When the loop entered a blocking broker call it has not returned from (a
    /// transaction's commit or abort), in milliseconds since the Unix epoch; 0: none.
    pub blocked_since_ms: AtomicU64,
    /// Assigned partitions held up by a record the broker keeps refusing (see
    /// [`Unproducible`]).
    pub unproducible: AtomicUsize,
    /// A broker outage as the service's clients see it, logged without flooding.
    pub outage: Outage,
}

/// A blocking broker call that lasts longer than this makes the service not ready: a commit
/// normally takes milliseconds, and one waiting for a partition leader holds everything up.
const STALL: Duration = Duration::from_secs(2);

fn now_ms() -> u64 {
    Utc::now().timestamp_millis().max(0) as u64
}

/// Marks a blocking broker call on [`Health`] while it lasts.
struct Blocked<'a>(&'a Health, u64);

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        self.0.blocked_since_ms.store(self.1, Ordering::Relaxed);
    }
}

impl Health {
    pub fn ready(&self) -> bool {
        self.assigned.load(Ordering::Relaxed)
            && self.restoring.load(Ordering::Relaxed) == 0
            && self.broker_up.load(Ordering::Relaxed)
            && self.leaderless() == 0
            && !self.stalled()
            && self.unproducible.load(Ordering::Relaxed) == 0
    }

    /// Whether a blocking broker call has been waiting for longer than [`STALL`].
    pub fn stalled(&self) -> bool {
        let since = self.blocked_since_ms.load(Ordering::Relaxed);
        since != 0 && now_ms().saturating_sub(since) > STALL.as_millis() as u64
    }

    /// Marks a blocking broker call until the guard is dropped (nested calls keep the
    /// outermost start).
    fn blocked(&self) -> Blocked<'_> {
        let before = self.blocked_since_ms.load(Ordering::Relaxed);
        if before == 0 {
            self.blocked_since_ms.store(now_ms(), Ordering::Relaxed);
        }
        Blocked(self, before)
    }

    /// Partitions this instance reads or writes that have no reachable leader now.
    pub fn leaderless(&self) -> usize {
        self.leaderless_inputs.load(Ordering::Relaxed)
            + self.leaderless_outputs.load(Ordering::Relaxed)
    }
}

/// How many partitions of `topic` (only those the application assigned, when
/// `assigned_only`) have no leader, or a leader librdkafka is not connected to: a broker
/// that died keeps its leaderships in the metadata until the controller moves them.
fn leaderless(stats: &rdkafka::Statistics, topic: &str, assigned_only: bool) -> usize {
    let Some(t) = stats.topics.get(topic) else {
        return 0;
    };
    t.partitions
        .iter()
        .filter(|(p, part)| **p >= 0 && (part.desired || !assigned_only))
        .filter(|(_, part)| {
            part.leader < 0
                || !stats
                    .brokers
                    .values()
                    .any(|b| b.nodeid == part.leader && b.state == "UP")
        })
        .count()
}

/// The producer's context: its statistics say which output partitions lack a leader, and
/// its delivery reports which intent's output the broker refused.
struct ProducerCtx {
    health: Arc<Health>,
    topics: [String; 2],
    /// The first refused output of each intents partition in the open transaction: the
    /// intent's offset and the broker's error. Taken after every abort.
    refused: Mutex<HashMap<i32, (i64, String)>>,
}

/// What a produced record answers, as its delivery opaque: the intent's partition and offset
/// packed in one word (no allocation per record): partitions below 65,535, offsets below
/// 2^48. Out of range, `usize::MAX`: not attributed.
fn source_tag(partition: i32, offset: i64) -> usize {
    const _: () = assert!(usize::BITS >= 64, "a source tag needs a 64-bit usize");
    match (u16::try_from(partition), u64::try_from(offset)) {
        (Ok(p), Ok(o)) if p < u16::MAX && o < 1 << 48 => ((u64::from(p) << 48) | o) as usize,
        _ => usize::MAX,
    }
}

fn untag_source(tag: usize) -> Option<(i32, i64)> {
    (tag != usize::MAX).then(|| {
        let tag = tag as u64;
        ((tag >> 48) as i32, (tag & ((1 << 48) - 1)) as i64)
    })
}

impl ProducerCtx {
    fn outage(&self) -> &Outage {
        &self.health.outage
    }
}

impl ClientContext for ProducerCtx {
    kafka::tell_outages!();

    fn stats(&self, stats: rdkafka::Statistics) {
        self.health.outage.statistics(&stats);
        let n = self
            .topics
            .iter()
            .map(|t| leaderless(&stats, t, false))
            .sum();
        self.health.leaderless_outputs.store(n, Ordering::Relaxed);
    }
}

impl rdkafka::producer::ProducerContext for ProducerCtx {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, tag: usize) {
        let Err((e, _)) = result else {
            return;
        };
        // Records purged by an abort did nothing wrong.
        if matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight)
        ) {
            return;
        }
        if let Some((p, offset)) = untag_source(tag) {
            self.refused
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(p)
                .or_insert_with(|| (offset, e.to_string()));
        }
    }
}

pub(crate) fn engine_options(config: &Config) -> EngineOptions {
    EngineOptions {
        duplicate_horizon: config.engine.duplicate_horizon,
        max_future_skew: config.engine.max_future_skew,
        partition_key: config.kafka.partition_key.clone(),
        ..EngineOptions::default()
    }
}

/// The service's transactional producer.
fn transactional_producer(
    config: &Config,
    health: &Arc<Health>,
) -> Result<BaseProducer<ProducerCtx>, Error> {
    let k = &config.kafka;
    let mut producer_config = client_config(config, Client::Producer);
    if !k.librdkafka.contains_key("statistics.interval.ms") {
        producer_config.set("statistics.interval.ms", "5000");
    }
    producer_config
        .set("transactional.id", &k.transactional_id)
        .set("linger.ms", "5")
        // Looking a topic up must not create it: only `create_topics` does.
        .set("allow.auto.create.topics", "false")
        .create_with_context(ProducerCtx {
            health: health.clone(),
            topics: [k.decisions_topic.clone(), k.dead_letter_topic.clone()],
            refused: Mutex::new(HashMap::new()),
        })
        .map_err(Error::kafka("create the producer"))
}

/// How much longer than its own timeout a call into the producer may take before the
/// producer counts as wedged (see [`Worker::send_offsets`]).
const WEDGED_AFTER: Duration = Duration::from_secs(5);

/// librdkafka's `transaction.timeout.ms` as configured (its default: 60 s).
fn transaction_timeout(config: &Config) -> Duration {
    config
        .kafka
        .librdkafka
        .get("transaction.timeout.ms")
        .and_then(|v| v.parse().ok())
        .map_or(Duration::from_secs(60), Duration::from_millis)
}

/// Signals from outside the loop.
pub struct Controls {
    pub shutdown: Arc<AtomicBool>,
    pub reloads: Receiver<Arc<Ruleset>>,
    pub health: Arc<Health>,
}

/// Runs the service until `controls.shutdown` is set; then commits the open transaction,
/// leaves the group and returns.
pub fn run(config: Config, ruleset: Arc<Ruleset>, controls: Controls) -> Result<(), Error> {
    let config = Arc::new(config);
    let k = &config.kafka;
    let producer = transactional_producer(&config, &controls.health)?;
    let (intents, decisions, dead_letters) = wait_for_topics(&config, &producer, &controls)?;
    tracing::info!(
        intents_topic = %k.intents_topic, partitions = intents,
        decisions_topic = %k.decisions_topic, decisions_partitions = decisions,
        dead_letter_topic = %k.dead_letter_topic, dead_letter_partitions = dead_letters,
        "topics checked"
    );
    controls
        .health
        .intents_partitions
        .store(intents, Ordering::Relaxed);
    // Counters must not be split by partition (docs/kafka.md, "Partitioning").
    ruleset
        .check_partitioning(&k.partition_key, intents)
        .map_err(|e| Error::Setup(format!("refusing to start: {e}")))?;
    retry_until_done(
        &controls.health,
        &controls.shutdown,
        "initialise transactions",
        || producer.init_transactions(Duration::from_secs(30)),
    )?;
    tracing::info!(transactional_id = %k.transactional_id, "transactions initialised; earlier incarnations fenced");

    events::RulesetInUse {
        version: &ruleset.version,
    }
    .emit();
    let (restored_tx, restored_rx) = mpsc::channel();
    let worker = Arc::new(Mutex::new(Worker {
        config: config.clone(),
        producer: Arc::new(producer),
        ruleset,
        partitions: HashMap::new(),
        txn: None,
        dead_letter_partitions: dead_letters,
        restored_tx,
        stop: controls.shutdown.clone(),
        health: controls.health.clone(),
        out: Vec::with_capacity(4096),
        intents_topic: Arc::from(k.intents_topic.as_str()),
        generation: 0,
        fatal: None,
        transaction_timeout: transaction_timeout(&config),
    }));
    let mut consumer_config = client_config(&config, Client::Consumer);
    if !k.librdkafka.contains_key("statistics.interval.ms") {
        consumer_config.set("statistics.interval.ms", "5000");
    }
    let consumer: BaseConsumer<Ctx> = consumer_config
        .set("group.id", &k.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create_with_context(Ctx {
            worker: worker.clone(),
            health: controls.health.clone(),
            intents_topic: k.intents_topic.clone(),
        })
        .map_err(Error::kafka("create the consumer"))?;
    consumer
        .subscribe(&[&k.intents_topic])
        .map_err(Error::kafka("subscribe to the intents topic"))?;
    tracing::info!(group_id = %k.group_id, topic = %k.intents_topic, "subscribed");

    let result = main_loop(&consumer, &worker, &restored_rx, &controls);
    // Leave cleanly: commit what is decided (or abort), then leave the group.
    let closing = lock(&worker).finish_transaction(&consumer);
    consumer.unsubscribe();
    let _ = consumer.poll(Duration::from_millis(100));
    drop(consumer);
    tracing::info!("left the consumer group");
    result.and(closing)
}

fn main_loop(
    consumer: &BaseConsumer<Ctx>,
    worker: &Arc<Mutex<Worker>>,
    restored: &Receiver<Restored>,
    controls: &Controls,
) -> Result<(), Error> {
    while !controls.shutdown.load(Ordering::Relaxed) {
        let polled = consumer.poll(Duration::from_millis(20));
        let mut w = lock(worker);
        if let Some(fatal) = w.fatal.take() {
            return Err(fatal);
        }
        match polled {
            Some(Ok(m)) => {
                w.health.broker_up.store(true, Ordering::Relaxed);
                w.health.outage.ok();
                w.handle(consumer, &m)?;
            }
            Some(Err(e)) => {
                // Transport errors: librdkafka reconnects by itself; the outage says so,
                // not too often.
                w.health.broker_up.store(false, Ordering::Relaxed);
                w.health.outage.seen(&format_args!("consumer: {e}"));
            }
            None => {}
        }
        w.start_restores(consumer)?;
        while let Ok(r) = restored.try_recv() {
            w.restored(consumer, r)?;
        }
        if let Ok(ruleset) = controls.reloads.try_recv() {
            w.reload(consumer, ruleset)?;
        }
        w.commit_if_due(consumer)?;
        w.producer.poll(Duration::ZERO);
    }
    Ok(())
}

fn lock(worker: &Mutex<Worker>) -> MutexGuard<'_, Worker> {
    worker.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lock_refused(
    producer: &BaseProducer<ProducerCtx>,
) -> MutexGuard<'_, HashMap<i32, (i64, String)>> {
    producer
        .context()
        .refused
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

/// Checks the topics, creating them when configured to; waits while the broker is down.
fn wait_for_topics(
    config: &Config,
    producer: &BaseProducer<ProducerCtx>,
    controls: &Controls,
) -> Result<(i32, i32, i32), Error> {
    let k = &config.kafka;
    let names = [&k.intents_topic, &k.decisions_topic, &k.dead_letter_topic];
    let counts = retry_until_done(
        &controls.health,
        &controls.shutdown,
        "read topic metadata",
        || {
            let mut counts = [None; 3];
            for (i, t) in names.iter().enumerate() {
                counts[i] = partition_count(producer.client(), t, Duration::from_secs(10))?;
            }
            Ok(counts)
        },
    )?;
    let missing: Vec<&str> = names
        .iter()
        .zip(counts)
        .filter(|(_, c)| c.is_none())
        .map(|(n, _)| n.as_str())
        .collect();
    if !missing.is_empty() {
        return Err(Error::Setup(format!(
            "missing topic(s): {}; create them with as many partitions for decisions as for intents, or set kafka.create_topics = true",
            missing.join(", ")
        )));
    }
    let [Some(i), Some(d), Some(l)] = counts else {
        return Err(Error::Setup(
            "topic metadata changed while reading it".into(),
        ));
    };
    if d < i {
        return Err(Error::Setup(format!(
            "the decisions topic `{}` has {d} partition(s), fewer than the {i} of the intents topic `{}`: each decision goes to its intent's partition number, so it needs at least {i}",
            k.decisions_topic, k.intents_topic
        )));
    }
    Ok((i, d, l))
}

/// Calls `f` until it succeeds, backing off on errors ([`kafka::retry`]), unless the
/// service is told to `stop`; `health.broker_up` follows.
fn retry_until_done<T>(
    health: &Health,
    stop: &AtomicBool,
    what: &'static str,
    mut f: impl FnMut() -> Result<T, KafkaError>,
) -> Result<T, Error> {
    let result = kafka::retry(&health.outage, what, stop, || {
        let r = f();
        health.broker_up.store(r.is_ok(), Ordering::Relaxed);
        r
    });
    result.map_err(|e| match e {
        RetryError::Fatal(error) => Error::Kafka { what, error },
        RetryError::Stopped => Error::Stopped,
    })
}

/// The rebalance callbacks' view of the worker.
struct Ctx {
    worker: Arc<Mutex<Worker>>,
    health: Arc<Health>,
    intents_topic: String,
}

impl Ctx {
    fn outage(&self) -> &Outage {
        &self.health.outage
    }
}

impl ClientContext for Ctx {
    kafka::tell_outages!();

    /// librdkafka's statistics (every `statistics.interval.ms`): consumer lag per partition,
    /// as the end of the partition (the last stable offset, for read_committed) minus the
    /// position this instance has consumed to. librdkafka's own `consumer_lag` subtracts the
    /// consumer's committed offset, which offsets committed through the producer's
    /// transactions never update.
    fn stats(&self, stats: rdkafka::Statistics) {
        self.health.outage.statistics(&stats);
        self.health.leaderless_inputs.store(
            leaderless(&stats, &self.intents_topic, true),
            Ordering::Relaxed,
        );
        let Some(topic) = stats.topics.get(&self.intents_topic) else {
            return;
        };
        for (p, part) in &topic.partitions {
            // Partition -1 is librdkafka's internal unassigned partition; negative offsets
            // are "unknown".
            let end = if part.ls_offset >= 0 {
                part.ls_offset
            } else {
                part.hi_offset
            };
            let position = if part.app_offset >= 0 {
                part.app_offset
            } else {
                part.committed_offset
            };
            if *p >= 0 && end >= 0 && position >= 0 {
                metrics()
                    .consumer_lag
                    .with_label_values(&[&p.to_string()])
                    .set((end - position).max(0));
            }
        }
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut w = lock(&self.worker);
            // Offsets of revoked partitions can only be committed while they are still ours.
            if let Err(e) = w.finish_transaction(consumer) {
                w.fatal.get_or_insert(e);
            }
            let revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
            for p in &revoked {
                if let Some(part) = w.partitions.remove(p) {
                    if matches!(part.state, State::Restoring { .. }) {
                        w.health.restoring.fetch_sub(1, Ordering::Relaxed);
                    }
                    if part.unproducible.is_some_and(|u| u.held_up()) {
                        events::UnproducibleDropped { partition: *p }.emit();
                    }
                }
            }
            w.count_unproducible();
            w.health.assigned.store(false, Ordering::Relaxed);
            w.health
                .partitions
                .store(w.partitions.len(), Ordering::Relaxed);
            for p in &revoked {
                let _ = metrics()
                    .consumer_lag
                    .remove_label_values(&[&p.to_string()]);
            }
            tracing::info!(partitions = ?revoked, "partitions revoked; their state dropped");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let mut w = lock(&self.worker);
                // Nothing is decided until the partition's state is restored.
                if let Err(e) = consumer.pause(tpl) {
                    tracing::warn!(error = %e, "cannot pause newly assigned partitions");
                }
                let assigned: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                for p in &assigned {
                    w.begin_restore(*p, None, Vec::new());
                }
                w.health.assigned.store(true, Ordering::Relaxed);
                w.health
                    .partitions
                    .store(w.partitions.len(), Ordering::Relaxed);
                tracing::info!(partitions = ?assigned, "partitions assigned; restoring their state");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => tracing::warn!(error = %e, "rebalance error"),
        }
    }
}

/// A partition's state.
enum State {
    /// Waiting for its state; messages that arrive anyway are kept in order.
    Restoring {
        generation: u64,
        /// The committed offset, when known (after an abort); `None`: ask the group.
        committed: Option<Option<i64>>,
        started: bool,
        /// Intents to decide once restored, in offset order: after an abort, those of the
        /// aborted transaction, then whatever arrives meanwhile.
        buffered: Vec<OwnedMessage>,
    },
    Ready(Box<Engine>),
}

struct Partition {
    state: State,
    /// The offset after the last one committed; before the first commit, the first offset
    /// decided.
    committed: Option<i64>,
    /// The next offset to decide.
    next: Option<i64>,
    /// The intents decided in the open transaction: decided again after an abort, so that
    /// the consumer never has to seek back.
    pending: Vec<OwnedMessage>,
    /// An intent whose output the broker refused, until it is committed.
    unproducible: Option<Unproducible>,
}

/// Aborts in a row caused by one intent's refused output before its partition counts as held
/// up: it is then no longer retried at once but after a pause that doubles each time.
const UNPRODUCIBLE_AFTER: u32 = 3;
const UNPRODUCIBLE_FIRST_PAUSE: Duration = Duration::from_secs(1);
const UNPRODUCIBLE_MAX_PAUSE: Duration = Duration::from_secs(60);

/// An intent whose decision or dead letter the broker refused (a record larger than the
/// topic's `max.message.bytes`, a topic the producer may not write, ...), across the aborts
/// it caused. Its partition cannot move past it without losing it, so it waits, not ready,
/// and tries again with backoff: the other partitions go on.
struct Unproducible {
    offset: i64,
    aborts: u32,
    /// Not restored (and so not tried again) before this.
    retry_at: Option<Instant>,
}

impl Unproducible {
    fn held_up(&self) -> bool {
        self.aborts >= UNPRODUCIBLE_AFTER
    }
}

/// The open transaction.
struct Txn {
    started: Instant,
    records: usize,
}

struct Restored {
    partition: i32,
    generation: u64,
    committed: Option<i64>,
    result: Result<(Engine, RestoreStats), Error>,
}

struct Worker {
    config: Arc<Config>,
    /// Shared only with a helper thread of [`Worker::send_offsets`].
    producer: Arc<BaseProducer<ProducerCtx>>,
    ruleset: Arc<Ruleset>,
    partitions: HashMap<i32, Partition>,
    txn: Option<Txn>,
    dead_letter_partitions: i32,
    restored_tx: Sender<Restored>,
    stop: Arc<AtomicBool>,
    health: Arc<Health>,
    out: Vec<u8>,
    /// The intents topic's name, shared by every decision's `source`.
    intents_topic: Arc<str>,
    generation: u64,
    /// An error met inside a callback, returned by the loop.
    fatal: Option<Error>,
    /// librdkafka's `transaction.timeout.ms`: the coordinator aborts a transaction open
    /// longer than that.
    transaction_timeout: Duration,
}

impl Worker {
    /// Marks `p` as restoring; the restore itself starts from the loop.
    fn begin_restore(&mut self, p: i32, committed: Option<Option<i64>>, replay: Vec<OwnedMessage>) {
        self.generation += 1;
        let was_restoring = self
            .partitions
            .get(&p)
            .is_some_and(|part| matches!(part.state, State::Restoring { .. }));
        if !was_restoring {
            self.health.restoring.fetch_add(1, Ordering::Relaxed);
        }
        let state = State::Restoring {
            generation: self.generation,
            committed,
            started: false,
            buffered: replay,
        };
        match self.partitions.get_mut(&p) {
            Some(part) => part.state = state,
            None => {
                self.partitions.insert(
                    p,
                    Partition {
                        state,
                        committed: None,
                        next: None,
                        pending: Vec::new(),
                        unproducible: None,
                    },
                );
            }
        }
    }

    /// Starts the restores that are waiting: asks the group for committed offsets where they
    /// are not known, then restores on helper threads.
    fn start_restores(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), Error> {
        let now = Instant::now();
        let waiting: Vec<i32> = self
            .partitions
            .iter()
            .filter(|(_, part)| matches!(part.state, State::Restoring { started: false, .. }))
            .filter(|(_, part)| {
                part.unproducible
                    .as_ref()
                    .and_then(|u| u.retry_at)
                    .is_none_or(|at| at <= now)
            })
            .map(|(p, _)| *p)
            .collect();
        if waiting.is_empty() {
            return Ok(());
        }
        let topic = self.config.kafka.intents_topic.clone();
        let unknown: Vec<i32> = waiting
            .iter()
            .copied()
            .filter(|p| {
                matches!(
                    self.partitions.get(p).map(|x| &x.state),
                    Some(State::Restoring {
                        committed: None,
                        ..
                    })
                )
            })
            .collect();
        let mut fetched: HashMap<i32, Option<i64>> = HashMap::new();
        if !unknown.is_empty() {
            let mut tpl = TopicPartitionList::new();
            for p in &unknown {
                tpl.add_partition(&topic, *p);
            }
            match consumer.committed_offsets(tpl, Duration::from_secs(10)) {
                Ok(tpl) => {
                    for e in tpl.elements() {
                        let c = match e.offset() {
                            Offset::Offset(o) => Some(o),
                            _ => None,
                        };
                        fetched.insert(e.partition(), c);
                    }
                }
                Err(e) => {
                    self.health.broker_up.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, "cannot read committed offsets; retrying");
                    return Ok(());
                }
            }
        }
        for p in waiting {
            let Some(part) = self.partitions.get_mut(&p) else {
                continue;
            };
            let State::Restoring {
                generation,
                committed,
                started,
                ..
            } = &mut part.state
            else {
                continue;
            };
            let committed = match committed {
                Some(c) => *c,
                None => match fetched.get(&p) {
                    Some(c) => *c,
                    None => continue,
                },
            };
            *started = true;
            part.committed = committed;
            part.next = committed;
            let (config, ruleset, tx, stop) = (
                self.config.clone(),
                self.ruleset.clone(),
                self.restored_tx.clone(),
                self.stop.clone(),
            );
            let generation = *generation;
            std::thread::Builder::new()
                .name(format!("restore-{p}"))
                .spawn(move || {
                    let result = restore(&config, ruleset, p, committed, &stop);
                    let _ = tx.send(Restored {
                        partition: p,
                        generation,
                        committed,
                        result,
                    });
                })
                .map_err(|e| Error::Setup(format!("cannot start a restore thread: {e}")))?;
        }
        Ok(())
    }

    /// Installs a finished restore, resumes the partition and decides what it buffered.
    fn restored(&mut self, consumer: &BaseConsumer<Ctx>, r: Restored) -> Result<(), Error> {
        let Some(part) = self.partitions.get_mut(&r.partition) else {
            return Ok(()); // revoked meanwhile
        };
        let buffered = match &mut part.state {
            State::Restoring {
                generation,
                buffered,
                ..
            } if *generation == r.generation => std::mem::take(buffered),
            _ => return Ok(()), // superseded by a later restore
        };
        let (engine, stats) = match r.result {
            Ok(v) => v,
            Err(Error::Stopped) => return Ok(()),
            Err(e) => {
                tracing::warn!(partition = r.partition, error = %e, "restore failed; retrying");
                self.begin_restore(r.partition, Some(r.committed), buffered);
                return Ok(());
            }
        };
        part.state = State::Ready(Box::new(engine));
        self.health.restoring.fetch_sub(1, Ordering::Relaxed);
        events::StateRestored {
            partition: r.partition,
            committed_offset: r.committed,
            records: stats.read,
            decisions: stats.applied,
            unreadable: stats.unreadable,
            elapsed: stats.elapsed,
        }
        .emit();
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.config.kafka.intents_topic, r.partition);
        consumer
            .resume(&tpl)
            .map_err(Error::kafka("resume a restored partition"))?;
        let mut rest = buffered.into_iter();
        while let Some(m) = rest.next() {
            self.decide_one(consumer, m)?;
            // An abort while deciding these sends the partition back to restoring: what is
            // left waits for that restore.
            if let Some(Partition {
                state: State::Restoring { buffered, .. },
                ..
            }) = self.partitions.get_mut(&r.partition)
            {
                buffered.extend(rest);
                break;
            }
        }
        Ok(())
    }

    fn handle(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        m: &BorrowedMessage<'_>,
    ) -> Result<(), Error> {
        let p = m.partition();
        let Some(part) = self.partitions.get_mut(&p) else {
            return Ok(()); // not ours any more
        };
        let m = m.detach();
        if let State::Restoring { buffered, .. } = &mut part.state {
            buffered.push(m);
            return Ok(());
        }
        self.decide_one(consumer, m)
    }

    fn decide_one(&mut self, consumer: &BaseConsumer<Ctx>, m: OwnedMessage) -> Result<(), Error> {
        let (p, offset) = (m.partition(), m.offset());
        let Some(part) = self.partitions.get_mut(&p) else {
            return Ok(());
        };
        let State::Ready(engine) = &mut part.state else {
            return Ok(());
        };
        if part.next.is_some_and(|n| offset < n) {
            tracing::debug!(partition = p, offset, next = ?part.next, "skipping an offset already decided");
            return Ok(()); // already decided (fetched again after a pause)
        }
        if self.txn.is_none() {
            self.producer
                .begin_transaction()
                .map_err(Error::kafka("begin a transaction"))?;
            self.txn = Some(Txn {
                started: Instant::now(),
                records: 0,
            });
        }
        let k = &self.config.kafka;
        let source = Source::Kafka {
            topic: self.intents_topic.clone(),
            partition: p,
            offset,
        };
        let payload = m.payload().unwrap_or_default();
        let started = Instant::now();
        let now = Utc::now();
        self.out.clear();
        let processed = engine.process(
            payload,
            self.config.engine.max_intent_bytes,
            RecordKey::Kafka(m.key()),
            source,
            Clock::At(now),
        );
        let (topic, partition) = match processed {
            Processed::Decided(d) => {
                d.write_json(&mut self.out, Some(payload));
                // From the intent's Kafka timestamp (its producer's clock) to now.
                let end_to_end = m
                    .timestamp()
                    .to_millis()
                    .and_then(|sent| u64::try_from(now.timestamp_millis() - sent).ok())
                    .map(Duration::from_millis);
                events::Decided {
                    decision: &d,
                    evaluation: started.elapsed(),
                    end_to_end,
                }
                .emit();
                (k.decisions_topic.as_str(), p)
            }
            Processed::Invalid(letter) => {
                letter.write_json_line(&mut self.out);
                self.out.pop();
                events::DeadLettered {
                    kind: letter.error.kind,
                    evaluation: started.elapsed(),
                }
                .emit();
                (
                    k.dead_letter_topic.as_str(),
                    p % self.dead_letter_partitions.max(1),
                )
            }
        };
        part.committed = part.committed.or(Some(offset));
        part.next = Some(offset + 1);
        let mut record = BaseRecord::with_opaque_to(topic, source_tag(p, offset))
            .partition(partition)
            .payload(&self.out[..]);
        // The answer keeps the intent's key, unless no intent could have it: a key longer than
        // an intent may be is dropped (the partition number alone keeps the answer beside its
        // intent), so that no key can make an answer too large to publish.
        let key = m
            .key()
            .filter(|k| k.len() <= self.config.engine.max_intent_bytes);
        if let Some(key) = key {
            record = record.key(key);
        }
        // Signed, so that every reader can tell riskgate's records from anyone else's.
        if let Some(mac) = self.config.integrity.sign(topic, key, &self.out) {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: integrity::HEADER,
                value: Some(&mac),
            }));
        }
        let mut record = record;
        let sent = loop {
            match self.producer.send(record) {
                Ok(()) => break Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => break Err(e),
            }
        };
        part.pending.push(m);
        if let Some(txn) = &mut self.txn {
            txn.records += 1;
        }
        if let Err(e) = sent {
            tracing::warn!(error = %e, partition = p, offset, "cannot produce; aborting the transaction");
            lock_refused(&self.producer)
                .entry(p)
                .or_insert_with(|| (offset, e.to_string()));
            return self.abort_and_redo(consumer);
        }
        Ok(())
    }

    fn commit_if_due(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), Error> {
        let due = self.txn.as_ref().is_some_and(|t| {
            t.records >= self.config.kafka.commit_max_records
                || t.started.elapsed() >= self.config.kafka.commit_interval
        });
        if due {
            self.finish_transaction(consumer)
        } else {
            Ok(())
        }
    }

    /// Commits the open transaction with the offsets decided so far; on an abortable error,
    /// aborts and decides again. Fatal errors (fenced by a newer instance) stop the service.
    fn finish_transaction(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), Error> {
        if self.txn.is_none() {
            return Ok(());
        }
        let mut offsets = TopicPartitionList::new();
        for (p, part) in &self.partitions {
            // Only a partition deciding has decided anything since the last commit.
            if !matches!(part.state, State::Ready(_)) {
                continue;
            }
            if let (Some(next), true) = (part.next, part.next != part.committed) {
                offsets
                    .add_partition_offset(
                        &self.config.kafka.intents_topic,
                        *p,
                        Offset::Offset(next),
                    )
                    .map_err(Error::kafka("list offsets"))?;
            }
        }
        let health = self.health.clone();
        let _blocked = health.blocked();
        let timeout = Duration::from_secs(30);
        let commit_started = Instant::now();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        let mut offsets_sent = offsets.count() == 0;
        // rdkafka's commit first flushes, polling in steps of up to 100 ms: a commit would
        // take 100 ms. Waiting here for the last deliveries in 1 ms steps makes it ~1 ms.
        self.serve_deliveries(timeout);
        loop {
            let step = if offsets_sent {
                self.producer.commit_transaction(timeout)
            } else {
                match self.send_offsets(consumer, &offsets, timeout)? {
                    Some(sent) => sent
                        .map(|()| offsets_sent = true)
                        .and_then(|()| self.producer.commit_transaction(timeout)),
                    None => {
                        let why = format!(
                            "send_offsets_to_transaction did not return within its {} s timeout",
                            timeout.as_secs()
                        );
                        return self.renew_producer(consumer, &why);
                    }
                }
            };
            match step {
                Ok(()) => {
                    self.health.broker_up.store(true, Ordering::Relaxed);
                    self.health.outage.ok();
                    events::TransactionCommitted {
                        records: self.txn.as_ref().map_or(0, |t| t.records),
                        open: self
                            .txn
                            .as_ref()
                            .map_or(Duration::ZERO, |t| t.started.elapsed()),
                        commit: commit_started.elapsed(),
                    }
                    .emit();
                    for (p, part) in &mut self.partitions {
                        part.committed = part.next;
                        part.pending.clear();
                        if let Some(u) = part
                            .unproducible
                            .take_if(|u| part.committed.is_some_and(|c| c > u.offset))
                        {
                            events::RecordProduced {
                                partition: *p,
                                offset: u.offset,
                                aborts: u.aborts,
                            }
                            .emit();
                        }
                    }
                    self.count_unproducible();
                    self.txn = None;
                    return Ok(());
                }
                Err(KafkaError::Transaction(e)) if e.is_retriable() && !e.is_fatal() => {
                    self.health.broker_up.store(false, Ordering::Relaxed);
                    self.health
                        .outage
                        .failed(&format_args!("committing the transaction: {e}"));
                    let wait = backoff.next_wait();
                    if self.stop.load(Ordering::Relaxed) && wait > Duration::from_secs(5) {
                        return self.abort_and_redo(consumer);
                    }
                    std::thread::sleep(wait);
                }
                Err(e) if is_fatal(&e) => {
                    return self.fatal(
                        consumer,
                        "commit the transaction (fatal: this instance must restart)",
                        e,
                    )
                }
                Err(e) => {
                    tracing::warn!(error = %e, "transaction commit failed; aborting");
                    return self.abort_and_redo(consumer);
                }
            }
        }
    }

    /// Serves delivery reports until nothing is in flight, or for at most `limit`.
    fn serve_deliveries(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.producer.in_flight_count() > 0 && Instant::now() < deadline {
            self.producer.poll(Duration::from_millis(1));
        }
    }

    /// Aborts the open transaction, then for every partition it touched: pauses it,
    /// restores its state as of the last commit, and queues the intents of the aborted
    /// transaction to be decided again.
    fn abort_and_redo(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), Error> {
        let health = self.health.clone();
        let _blocked = health.blocked();
        let mut attempts = 0u32;
        loop {
            // The abort waits for the delivery reports of what was produced (failed, once the
            // transaction is in error): serve them, or it cannot finish.
            self.serve_deliveries(Duration::from_millis(200));
            match self.producer.abort_transaction(Duration::from_secs(1)) {
                Ok(()) => break,
                Err(e) if is_fatal(&e) => {
                    return self.fatal(
                        consumer,
                        "abort the transaction (fatal: this instance must restart)",
                        e,
                    )
                }
                Err(e) => {
                    attempts += 1;
                    if attempts % 10 == 1 {
                        tracing::warn!(error = %e, attempts, "transaction abort not done yet; retrying");
                    }
                    self.health.broker_up.store(false, Ordering::Relaxed);
                }
            }
        }
        self.redo_aborted(consumer)
    }

    /// A fatal error of a transaction call (`what`): the service stops, unless the open
    /// transaction outlived `transaction.timeout.ms`, when a new producer takes over.
    fn fatal(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        what: &'static str,
        e: KafkaError,
    ) -> Result<(), Error> {
        if self.transaction_expired() {
            return self.renew_producer(consumer, &e.to_string());
        }
        Err(Error::Kafka { what, error: e })
    }

    /// Whether the open transaction has been open longer than `transaction.timeout.ms`: then
    /// the coordinator has aborted it and fences this producer's epoch. A fence of a younger
    /// transaction comes from a newer incarnation of this instance (a zombie must stop).
    fn transaction_expired(&self) -> bool {
        self.txn
            .as_ref()
            .is_some_and(|t| t.started.elapsed() >= self.transaction_timeout)
    }

    /// `send_offsets_to_transaction` on a helper thread, waited for at most its own timeout
    /// and [`WEDGED_AFTER`] more. librdkafka can block in it forever when the group
    /// coordinator's broker dies (its coordinator requests never check their timeout:
    /// confluentinc/librdkafka#5456 and #5511, seen in `tests/failover.rs`). `None`: the call
    /// is still blocked and the producer is wedged; the thread keeps it until it returns.
    fn send_offsets(
        &self,
        consumer: &BaseConsumer<Ctx>,
        offsets: &TopicPartitionList,
        timeout: Duration,
    ) -> Result<Option<KafkaResult<()>>, Error> {
        let Some(meta) = consumer.group_metadata() else {
            return Err(Error::Setup("the consumer has no group metadata".into()));
        };
        let (tx, rx) = mpsc::sync_channel(1);
        let producer = self.producer.clone();
        let offsets = offsets.clone();
        let spawned = std::thread::Builder::new()
            .name("riskgate-offsets".into())
            .spawn(move || {
                let _ = tx.send(producer.send_offsets_to_transaction(&offsets, &meta, timeout));
            });
        if let Err(e) = spawned {
            return Err(Error::Setup(format!("cannot start a thread: {e}")));
        }
        Ok(rx.recv_timeout(timeout + WEDGED_AFTER).ok())
    }

    /// The producer cannot go on: its open transaction outlived `transaction.timeout.ms`
    /// (the broker or the coordinator was away that long) and the coordinator aborted it,
    /// which fences this producer for good; or a call into it never returned. A new producer
    /// with the same transactional id takes over (its `init_transactions` fences the old one
    /// and aborts what it left open), and the transaction's intents are decided again as
    /// after any abort.
    fn renew_producer(&mut self, consumer: &BaseConsumer<Ctx>, cause: &str) -> Result<(), Error> {
        tracing::warn!(
            cause,
            open_ms = self
                .txn
                .as_ref()
                .map_or(0, |t| t.started.elapsed().as_millis() as u64),
            transaction_timeout_ms = self.transaction_timeout.as_millis() as u64,
            "the producer cannot go on; starting a new one with the same transactional id"
        );
        self.producer = Arc::new(transactional_producer(&self.config, &self.health)?);
        let producer = self.producer.clone();
        retry_until_done(
            &self.health,
            &self.stop,
            "initialise transactions again",
            || producer.init_transactions(Duration::from_secs(30)),
        )?;
        tracing::info!(transactional_id = %self.config.kafka.transactional_id, "transactions initialised again");
        self.redo_aborted(consumer)
    }

    /// After an abort: restores every partition the transaction touched as of the last
    /// commit, and queues its intents to be decided again.
    fn redo_aborted(&mut self, consumer: &BaseConsumer<Ctx>) -> Result<(), Error> {
        self.txn = None;
        let refused = std::mem::take(&mut *lock_refused(&self.producer));
        for (p, (offset, error)) in refused {
            let Some(part) = self.partitions.get_mut(&p) else {
                continue;
            };
            let u = match &mut part.unproducible {
                Some(u) if u.offset == offset => u,
                u => u.insert(Unproducible {
                    offset,
                    aborts: 0,
                    retry_at: None,
                }),
            };
            u.aborts += 1;
            if u.held_up() {
                let pause = UNPRODUCIBLE_FIRST_PAUSE
                    .saturating_mul(1 << (u.aborts - UNPRODUCIBLE_AFTER).min(16))
                    .min(UNPRODUCIBLE_MAX_PAUSE);
                u.retry_at = Some(Instant::now() + pause);
                events::RecordUnproducible {
                    partition: p,
                    offset,
                    aborts: u.aborts,
                    error: &error,
                    retry_in: pause,
                }
                .emit();
            }
        }
        self.count_unproducible();
        let touched: Vec<(i32, Option<i64>, Vec<OwnedMessage>)> = self
            .partitions
            .iter_mut()
            .filter(|(_, part)| !part.pending.is_empty())
            .map(|(p, part)| {
                // Nothing past the last commit counts as decided any more: a commit of
                // other partitions while this one waits must not carry its offset forward.
                part.next = part.committed;
                (*p, part.committed, std::mem::take(&mut part.pending))
            })
            .collect();
        let mut tpl = TopicPartitionList::new();
        let mut redo = 0;
        for (p, committed, replay) in touched {
            tpl.add_partition(&self.config.kafka.intents_topic, p);
            redo += replay.len();
            self.begin_restore(p, Some(committed), replay);
        }
        if tpl.count() > 0 {
            consumer
                .pause(&tpl)
                .map_err(Error::kafka("pause partitions after an abort"))?;
        }
        events::TransactionAborted {
            partitions: &tpl
                .elements()
                .iter()
                .map(|e| e.partition())
                .collect::<Vec<_>>(),
            intents: redo,
        }
        .emit();
        Ok(())
    }

    fn count_unproducible(&self) {
        let n = self
            .partitions
            .values()
            .filter(|part| {
                part.unproducible
                    .as_ref()
                    .is_some_and(Unproducible::held_up)
            })
            .count();
        self.health.unproducible.store(n, Ordering::Relaxed);
    }

    /// Swaps in a new ruleset: commits what the old one decided, then rebuilds every
    /// partition's counters under the new counter definitions.
    fn reload(&mut self, consumer: &BaseConsumer<Ctx>, ruleset: Arc<Ruleset>) -> Result<(), Error> {
        // The reloader checked this already; a ruleset that would split counters by
        // partition never replaces the running one.
        let partitions = self.health.intents_partitions.load(Ordering::Relaxed);
        if let Err(e) = ruleset.check_partitioning(&self.config.kafka.partition_key, partitions) {
            tracing::error!(version = %ruleset.version, error = %e, "ruleset reload refused");
            return Ok(());
        }
        self.finish_transaction(consumer)?;
        tracing::info!(old = %self.ruleset.version, new = %ruleset.version, "ruleset swapped; rebuilding partition state under it");
        events::RulesetInUse {
            version: &ruleset.version,
        }
        .emit();
        self.ruleset = ruleset;
        // Every partition, restoring ones included: a restore that started under the old
        // ruleset is superseded (its result is ignored) and starts again under the new one.
        let parts: Vec<(i32, Option<Option<i64>>, Vec<OwnedMessage>)> = self
            .partitions
            .iter_mut()
            .map(|(p, part)| match &mut part.state {
                State::Ready(_) => (*p, Some(part.committed), Vec::new()),
                State::Restoring {
                    committed,
                    buffered,
                    ..
                } => (*p, *committed, std::mem::take(buffered)),
            })
            .collect();
        let mut tpl = TopicPartitionList::new();
        for (p, committed, buffered) in parts {
            tpl.add_partition(&self.config.kafka.intents_topic, p);
            self.begin_restore(p, committed, buffered);
        }
        if tpl.count() > 0 {
            consumer
                .pause(&tpl)
                .map_err(Error::kafka("pause partitions for a reload"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_tag_gives_back_its_partition_and_offset() {
        for (p, offset) in [(0, 0), (7, 41), (65_534, (1 << 48) - 1)] {
            assert_eq!(untag_source(source_tag(p, offset)), Some((p, offset)));
        }
        for (p, offset) in [(-1, 0), (65_535, 0), (0, -1), (0, 1 << 48)] {
            assert_eq!(untag_source(source_tag(p, offset)), None, "{p} {offset}");
        }
    }
}
