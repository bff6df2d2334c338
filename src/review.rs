//! `riskgate review`: where finance operations see what is held, why, and approve or reject
//! it ([docs/design.md](../docs/design.md#6-review-of-held-intents)).
//!
//! The pending holds are rebuilt from the decisions topic ([`queue`], pure state) by a
//! consumer outside the engine's group that reads every partition from the beginning and
//! keeps following it. Outcomes are published as review records on the same topic, to the
//! hold's partition with its key, by an idempotent producer; a request is answered only once
//! its record has been read back, so the answer is what every instance and every agent
//! reading the topic will see. People reach it through an HTTP API and a web page ([`api`])
//! after signing in ([`auth`]).

pub mod api;
pub mod auth;
pub mod queue;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message, Offset, TopicPartitionList};
use tokio::sync::{watch, Notify};

use crate::config::{Config, Role};
use crate::integrity::{self, Integrity};
use crate::kafka::{
    client_config, decisions_reader, mac_of, wait_for_topic, Client, Logging, Outage,
};
use crate::shutdown::{Shutdown, GRACE};
use crate::telemetry::events::{self, Emit};
use crate::telemetry::review_metrics;
use auth::Auth;
use queue::{Applied, HoldId, Queue, Refusal};
use riskgate_core::wire::{ReviewRecord, Verdict};

/// How long a review record may take to be written (librdkafka's `message.timeout.ms` of the
/// review producer): during an outage a review fails with 503 in this time, never hangs.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest wait between two attempts to reach a broker (librdkafka's default is 10 s): a
/// review service is back within about this long after its broker. The pass-through table
/// wins when it sets `reconnect.backoff.max.ms`.
const RECONNECT_MAX: &str = crate::kafka::RECONNECT_BACKOFF_MAX_MS;

/// How long a request waits for its review record to be read back.
const READ_BACK: Duration = Duration::from_secs(10);

/// The longest a secret check waits for its turn.
const CHECK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The review service's shared state.
pub struct App {
    queue: Mutex<Queue>,
    pub auth: Arc<Auth>,
    pub expire_after: TimeDelta,
    /// Bumped whenever the pending set changes (the page listens through `/api/events`).
    pub changes: watch::Sender<u64>,
    /// Notified whenever the consumer has read further.
    progress: Notify,
    /// The decisions topic has been read to its end once.
    pub ready: AtomicBool,
    /// Secret checks (Argon2 is slow on purpose) of names that have not failed since their
    /// last success, and of names that have: a name under attack cannot delay the others.
    pub checks: auth::Lane,
    pub suspect_checks: auth::Lane,
    /// Reviews being published, by hold and reviewer (as [`queue::person`] names them): one
    /// reviewer's concurrent requests on one hold give one record and one 409.
    in_flight: Mutex<HashSet<(HoldId, String)>>,
    /// The broker as the review's producer sees it (logged), and as its reader of the
    /// decisions topic does: while the reader cannot reach it, the service is not ready and
    /// reviews fail fast.
    pub broker: Arc<Outage>,
    pub reader: Arc<Outage>,
    producer: FutureProducer<Logging>,
    topic: String,
    /// How review records are signed.
    integrity: Integrity,
}

/// A review being published (see [`App::claim`]).
struct Claim<'a> {
    app: &'a App,
    key: (HoldId, String),
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.app
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
    }
}

/// Why a review record could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write to `{topic}`: {error}")]
pub struct PublishError {
    topic: String,
    error: KafkaError,
}

/// Why a review was not published or not confirmed.
#[derive(Debug)]
pub enum ReviewError {
    Refused(Refusal),
    /// Another record ended the review first; it names who.
    Overtaken(String),
    Unavailable(String),
}

impl App {
    /// Whether the service can answer reviews: the decisions topic read to its end once, and
    /// the broker within reach.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.broker_down()
    }

    /// Whether the broker is out of reach now, as the reader of the decisions topic sees it:
    /// it keeps a connection open, where the producer's may be idle and say nothing.
    pub fn broker_down(&self) -> bool {
        self.reader.is_down()
    }

    pub fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes `name`'s verdict on the hold `id` and waits until it is read back: the
    /// record, and whether it ended the review.
    pub async fn review(
        &self,
        id: &HoldId,
        seen: Option<(i32, i64)>,
        name: &str,
        role: Role,
        verdict: Verdict,
        comment: &str,
    ) -> Result<(ReviewRecord, bool), ReviewError> {
        if !self.ready.load(Ordering::Relaxed) {
            return Err(ReviewError::Unavailable(
                "the decisions topic is still being read; try again in a moment".to_owned(),
            ));
        }
        if self.broker_down() {
            return Err(ReviewError::Unavailable(
                "the Kafka broker cannot be reached now, so no review can be recorded; try again when it is back".to_owned(),
            ));
        }
        let _one_at_a_time = self.claim(id, name)?;
        let (record, key, decided_at) = {
            let q = self.queue();
            let record = q
                .review(id, seen, name, role, verdict, comment, Utc::now())
                .map_err(ReviewError::Refused)?;
            let hold = q.get(id);
            (
                record,
                hold.and_then(|h| h.key.clone()),
                hold.map(|h| h.decision.decided_at),
            )
        };
        let (partition, offset) = self
            .publish(&record, key.as_deref())
            .await
            .map_err(|e| ReviewError::Unavailable(e.to_string()))?;
        if !self.read_past(partition, offset).await {
            return Err(ReviewError::Unavailable(format!(
                "the record was written (partition {partition}, offset {offset}) but not read back within {} s",
                READ_BACK.as_secs()
            )));
        }
        let ended = {
            let q = self.queue();
            match q.finished(id) {
                Some(f) if (f.partition, f.offset) == (partition, offset) => true,
                Some(f) => return Err(ReviewError::Overtaken(f.reviewer.clone())),
                None if verdict == Verdict::Approve
                    && q.get(id)
                        .is_some_and(|h| h.approved_by.iter().any(|a| a == name)) =>
                {
                    false
                }
                None => {
                    return Err(ReviewError::Overtaken(
                        "a later decision for the same intent".to_owned(),
                    ))
                }
            }
        };
        let outcome = match (verdict, ended) {
            (Verdict::Approve, false) => "partial_approve",
            (Verdict::Approve, true) => "approve",
            (Verdict::Reject, _) => "reject",
        };
        count_outcome(outcome, decided_at.filter(|_| ended));
        if ended && !record.is_final {
            // Another instance's approval landed between this one's check and its record:
            // together they release the intent. Say so in a final record, so that readers of
            // the topic need not count approvals themselves.
            let mut done = record.clone();
            done.is_final = true;
            done.decision = riskgate_core::decision::Outcome::Allow;
            done.comment = format!("approvals complete ({})", done.comment);
            if let Err(e) = self.publish(&done, key.as_deref()).await {
                tracing::warn!(intent_id = %id.intent_id, key = %id.key, error = %e, "could not publish the final record of a completed approval");
            }
        }
        Ok((record, ended))
    }

    /// Claims the publishing of `name`'s review of `id` until the claim is dropped, or says
    /// that one is under way.
    fn claim(&self, id: &HoldId, name: &str) -> Result<Claim<'_>, ReviewError> {
        let key = (id.clone(), queue::person(name));
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if !in_flight.insert(key.clone()) {
            return Err(ReviewError::Refused(Refusal::InProgress(id.clone())));
        }
        Ok(Claim { app: self, key })
    }

    /// Writes `record` to the decisions topic, on its hold's partition with the hold's key.
    async fn publish(
        &self,
        record: &ReviewRecord,
        key: Option<&[u8]>,
    ) -> Result<(i32, i64), PublishError> {
        let payload = record.to_json();
        let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic)
            .partition(record.hold.partition)
            .payload(&payload);
        if let Some(k) = key {
            r = r.key(k);
        }
        // Signed like every record riskgate writes: readers trust no other.
        if let Some(mac) = self.integrity.sign(&self.topic, key, &payload) {
            r = r.headers(OwnedHeaders::new().insert(Header {
                key: integrity::HEADER,
                value: Some(&mac),
            }));
        }
        match self.producer.send(r, WRITE_TIMEOUT).await {
            Ok(d) => Ok((d.partition, d.offset)),
            Err((error, _)) => Err(PublishError {
                topic: self.topic.clone(),
                error,
            }),
        }
    }

    /// Waits until the consumer has read past `offset` of `partition`.
    async fn read_past(&self, partition: i32, offset: i64) -> bool {
        let deadline = tokio::time::Instant::now() + READ_BACK;
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.queue().position(partition) > offset {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.queue().position(partition) > offset;
            }
        }
    }

    /// Rejects, as `system:expiry`, every hold past its time that is not being expired
    /// already.
    async fn expire_due(&self, in_flight: &mut HashSet<HoldId>) {
        let due = {
            let q = self.queue();
            in_flight.retain(|id| q.get(id).is_some());
            q.expired(Utc::now(), self.expire_after)
        };
        for (id, record) in due {
            if !in_flight.insert(id.clone()) {
                continue;
            }
            let (key, decided_at) = {
                let q = self.queue();
                let h = q.get(&id);
                (
                    h.and_then(|h| h.key.clone()),
                    h.map(|h| h.decision.decided_at),
                )
            };
            match self.publish(&record, key.as_deref()).await {
                Ok((partition, offset)) => {
                    let ours = self.read_past(partition, offset).await
                        && self
                            .queue()
                            .finished(&id)
                            .is_some_and(|f| (f.partition, f.offset) == (partition, offset));
                    if ours {
                        count_outcome("expire", decided_at);
                        tracing::info!(target: "riskgate::audit", reviewer = queue::EXPIRY_REVIEWER, intent_id = %id.intent_id, key = %id.key, hold_partition = record.hold.partition, hold_offset = record.hold.offset, attempt = "reject", allowed = true, decision = "deny", "hold expired unreviewed: rejected");
                    }
                }
                Err(e) => {
                    in_flight.remove(&id);
                    tracing::warn!(intent_id = %id.intent_id, key = %id.key, error = %e, "could not publish an expiry; retrying");
                }
            }
        }
    }
}

/// Counts a published review `outcome`; `ended_hold_decided_at`, when the review ended a
/// hold decided then, also gives the time it waited.
fn count_outcome(outcome: &str, ended_hold_decided_at: Option<chrono::DateTime<Utc>>) {
    let m = review_metrics();
    m.outcomes.with_label_values(&[outcome]).inc();
    if let Some(at) = ended_hold_decided_at {
        m.time_to_review_seconds
            .observe((Utc::now() - at).as_seconds_f64().max(0.0));
    }
}

/// Reads the decisions topic from the beginning into the queue, and keeps following it,
/// until `stop`.
fn follow(config: &Config, app: &App, stop: &AtomicBool) -> Result<(), FollowError> {
    let topic = config.kafka.decisions_topic.as_str();
    // Every start reads the topic from the beginning.
    let outage = app.reader.clone();
    let consumer = decisions_reader(
        config,
        "review",
        Logging {
            outage: outage.clone(),
        },
    )
    .map_err(FollowError::Consumer)?;
    let started = Instant::now();
    let Some(partitions) = wait_for_topic(consumer.client(), topic, stop, &outage) else {
        return Ok(());
    };
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(FollowError::Assign)?;
    }
    consumer.assign(&tpl).map_err(FollowError::Assign)?;
    tracing::info!(
        topic,
        partitions,
        "reading the decisions topic from the beginning"
    );
    let max_bytes = config.engine.max_intent_bytes;
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut read: u64 = 0;
    let m = review_metrics();
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(msg)) => {
                read += 1;
                outage.ok();
                let Some(payload) = msg.payload() else {
                    continue;
                };
                let unverified = |reason: &str| {
                    events::UnverifiedRecord {
                        counter: &m.unverified_records,
                        topic,
                        partition: msg.partition(),
                        offset: msg.offset(),
                        reason,
                        reader: "review",
                    }
                    .emit()
                };
                // Only riskgate's own records count: no forged hold is shown, no forged
                // review approves or hides anything.
                if let Err(why) = config
                    .integrity
                    .check(topic, msg.key(), payload, mac_of(&msg))
                {
                    app.queue().skip(msg.partition(), msg.offset());
                    unverified(why.as_str());
                    app.progress.notify_waiters();
                    continue;
                }
                let applied = {
                    let mut q = app.queue();
                    let r = q.apply(msg.partition(), msg.offset(), msg.key(), payload, max_bytes);
                    m.pending_holds.set(q.len() as i64);
                    r
                };
                match applied {
                    Ok(Applied::Refused(why)) => unverified(why),
                    Ok(Applied::Ignored(why)) => {
                        tracing::debug!(
                            partition = msg.partition(),
                            offset = msg.offset(),
                            why,
                            "record ignored"
                        );
                    }
                    Ok(_) => {
                        app.changes.send_modify(|v| *v += 1);
                    }
                    Err(e) => {
                        m.unreadable_records.inc();
                        tracing::warn!(topic, partition = msg.partition(), offset = msg.offset(), error = %e, "skipping a record of the decisions topic that is neither a decision nor a review");
                    }
                }
                app.progress.notify_waiters();
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                outage.ok();
                at_end.insert(p);
                if at_end.len() == partitions as usize && !app.ready.load(Ordering::Relaxed) {
                    app.ready.store(true, Ordering::Relaxed);
                    m.ready.set(1);
                    let pending = app.queue().len();
                    tracing::info!(
                        records = read,
                        pending,
                        seconds = started.elapsed().as_secs_f64(),
                        "pending holds rebuilt from the decisions topic; ready"
                    );
                    app.changes.send_modify(|v| *v += 1);
                }
            }
            Some(Err(e)) => {
                // librdkafka reconnects by itself; its errors queue up behind the messages,
                // so they are read on without waiting (the poll itself waits).
                outage.seen(&format_args!("reading `{topic}`: {e}"));
            }
            None => {}
        }
    }
    Ok(())
}

/// Why the review service cannot follow the decisions topic.
#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("cannot create the decisions consumer: {0}")]
    Consumer(KafkaError),
    #[error("cannot assign the decisions partitions: {0}")]
    Assign(KafkaError),
}

/// Runs the review service until SIGTERM or SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let review = &config.review;
    let m = review_metrics();
    config.integrity.announce(
        &m.unverified_records,
        &config.kafka.decisions_topic,
        &queue::REFUSED_RECORDS,
    );
    // Sign-in refusals an alert watches, at 0 from the start.
    for reason in ["bad_credentials", "throttled", "busy"] {
        m.refusals.with_label_values(&[reason]);
    }
    let auth = Auth::new(
        &review.reviewers,
        review
            .session_ttl
            .to_std()
            .unwrap_or(Duration::from_secs(8 * 3600)),
        review.secure_cookies,
    )?;
    let logging = Logging::new("the review service");
    let broker = logging.outage.clone();
    let mut producer = client_config(&config, Client::Producer);
    if !config
        .kafka
        .librdkafka
        .contains_key("reconnect.backoff.max.ms")
    {
        producer.set("reconnect.backoff.max.ms", RECONNECT_MAX);
    }
    if !config
        .kafka
        .librdkafka
        .contains_key("statistics.interval.ms")
    {
        // The statistics say when a broker is up again (the end of an outage).
        producer.set("statistics.interval.ms", "5000");
    }
    let producer: FutureProducer<Logging> = producer
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "0")
        .set("message.timeout.ms", WRITE_TIMEOUT.as_millis().to_string())
        .create_with_context(logging)
        .map_err(|e| anyhow::anyhow!("cannot create the review producer: {e}"))?;
    let app = Arc::new(App {
        queue: Mutex::new(
            Queue::with_duplicate_horizon(config.engine.duplicate_horizon).with_reviewers(
                review
                    .reviewers
                    .iter()
                    .map(|r| (r.name.as_str(), r.agents.as_slice())),
            ),
        ),
        auth: Arc::new(auth),
        expire_after: review.expire_after,
        changes: watch::Sender::new(0),
        progress: Notify::new(),
        ready: AtomicBool::new(false),
        checks: auth::Lane::new(2, CHECK_WAIT),
        suspect_checks: auth::Lane::new(1, CHECK_WAIT),
        in_flight: Mutex::new(HashSet::new()),
        broker,
        reader: Arc::new(Outage::new("the review's decisions reader")),
        producer,
        topic: config.kafka.decisions_topic.clone(),
        integrity: config.integrity.clone(),
    });
    let listener = tokio::net::TcpListener::bind(review.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {} (review.listen): {e}", review.listen))?;
    let bound = listener.local_addr()?;
    tracing::info!(address = %bound, reviewers = review.reviewers.len(), "serving the review page and API");
    // /metrics on its own listener when configured, away from the reviewers' port.
    let metrics_apart = match review.metrics_listen {
        Some(at) => {
            let metrics = tokio::net::TcpListener::bind(at).await.map_err(|e| {
                anyhow::anyhow!("cannot listen on {at} (review.metrics_listen): {e}")
            })?;
            tracing::info!(address = %metrics.local_addr()?, "serving /metrics");
            let router = api::metrics_router(app.clone());
            tokio::spawn(crate::server::serve(
                metrics,
                router,
                crate::server::Limits::default(),
            ));
            true
        }
        None => false,
    };
    let router = api::router(app.clone(), !metrics_apart, review.allowed_hosts.clone());
    tokio::spawn(crate::server::serve(
        listener,
        router,
        review.limits.clone(),
    ));

    let shutdown = Shutdown::new();
    let stop = shutdown.flag();
    let expiry = app.clone();
    tokio::spawn(async move {
        let mut in_flight = HashSet::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            if expiry.ready.load(Ordering::Relaxed) {
                expiry.expire_due(&mut in_flight).await;
            }
        }
    });
    shutdown.listen("closing the review service", GRACE)?;
    let follower = app.clone();
    tokio::task::spawn_blocking(move || follow(&config, &follower, &stop)).await??;
    tracing::info!("stopped cleanly");
    Ok(())
}
