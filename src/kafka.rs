//! Kafka, as every part of riskgate meets it: the client configuration, the reader of the
//! decisions topic (restore and review), partition lookup, how errors are classed and how
//! calls are retried. The pipeline and the review service both use this module.
//!
//! Errors fall in three classes ([docs/kafka.md](../docs/kafka.md#faults)): retriable (the
//! same call again, with backoff), abortable (abort the transaction and decide its intents
//! again: the pipeline's business) and fatal ([`is_fatal`]: stop, exit non-zero).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::ProducerContext;
use rdkafka::ClientContext;

use crate::config::Config;

/// What a client does, as far as which librdkafka properties apply to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    Consumer,
    Producer,
    /// Metadata lookups and topic creation: neither a consumer's nor a producer's properties.
    Admin,
}

/// librdkafka properties only consumers take (`C` in librdkafka's CONFIGURATION.md, 2.12).
const CONSUMER_ONLY: &[&str] = &[
    "group.id",
    "group.instance.id",
    "partition.assignment.strategy",
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "group.protocol.type",
    "group.protocol",
    "group.remote.assignor",
    "coordinator.query.interval.ms",
    "max.poll.interval.ms",
    "enable.auto.commit",
    "auto.commit.interval.ms",
    "enable.auto.offset.store",
    "queued.min.messages",
    "queued.max.messages.kbytes",
    "fetch.wait.max.ms",
    "fetch.queue.backoff.ms",
    "fetch.message.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.bytes",
    "fetch.min.bytes",
    "fetch.error.backoff.ms",
    "offset.store.method",
    "isolation.level",
    "enable.partition.eof",
    "check.crcs",
    "auto.commit.enable",
    "auto.offset.reset",
    "offset.store.path",
    "offset.store.sync.interval.ms",
    "consume.callback.max.messages",
];

/// librdkafka properties only producers take (`P` in librdkafka's CONFIGURATION.md, 2.12).
const PRODUCER_ONLY: &[&str] = &[
    "transactional.id",
    "transaction.timeout.ms",
    "enable.idempotence",
    "enable.gapless.guarantee",
    "queue.buffering.max.messages",
    "queue.buffering.max.kbytes",
    "queue.buffering.max.ms",
    "linger.ms",
    "message.send.max.retries",
    "retries",
    "queue.buffering.backpressure.threshold",
    "compression.codec",
    "compression.type",
    "compression.level",
    "batch.num.messages",
    "batch.size",
    "delivery.report.only.error",
    "sticky.partitioning.linger.ms",
    "request.required.acks",
    "acks",
    "request.timeout.ms",
    "message.timeout.ms",
    "delivery.timeout.ms",
    "queuing.strategy",
    "produce.offset.report",
    "partitioner",
];

/// Whether the pass-through property `key` applies to a `client`: a consumer property set
/// on a producer would only make librdkafka warn at start that it ignores it.
pub fn applies_to(key: &str, client: Client) -> bool {
    match client {
        Client::Consumer => !PRODUCER_ONLY.contains(&key),
        Client::Producer => !CONSUMER_ONLY.contains(&key),
        Client::Admin => !CONSUMER_ONLY.contains(&key) && !PRODUCER_ONLY.contains(&key),
    }
}

/// The librdkafka settings a `client` of the service takes: the brokers and the
/// pass-through table, without the properties of the other kind of client.
pub fn client_config(config: &Config, client: Client) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in config.client_properties() {
        if applies_to(&k, client) {
            c.set(k, v);
        }
    }
    c
}

/// The `riskgate-mac` header of a record, if it has one ([`crate::integrity`]).
pub fn mac_of<M: rdkafka::Message>(m: &M) -> Option<&[u8]> {
    use rdkafka::message::Headers;
    m.headers()?
        .iter()
        .find(|h| h.key == crate::integrity::HEADER)
        .and_then(|h| h.value)
}

/// How many partitions `topic` has, or `None` when it does not exist.
pub fn partition_count<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    timeout: Duration,
) -> Result<Option<i32>, KafkaError> {
    let md = client.fetch_metadata(Some(topic), timeout)?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as i32))
}

/// How many partitions `topic` has, asking `client` until the topic exists (logging that it
/// waits) and through outages (told to `outage`); `None` when `stop` is set first.
pub fn wait_for_topic<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
    stop: &AtomicBool,
    outage: &Outage,
) -> Option<i32> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        match partition_count(client, topic, Duration::from_secs(5)) {
            Ok(Some(n)) => {
                outage.ok();
                return Some(n);
            }
            Ok(None) => {
                outage.ok();
                tracing::warn!(topic, "waiting for the topic to exist");
            }
            Err(e) => outage.failed(&format_args!("reading the metadata of `{topic}`: {e}")),
        }
        if !backoff.sleep(stop) {
            return None;
        }
    }
}

/// The longest wait between two attempts to reach a broker of the clients that read the
/// decisions topic and of the review producer (librdkafka's default is 10 s), unless the
/// pass-through table sets it: they are back within about this long after the broker.
pub const RECONNECT_BACKOFF_MAX_MS: &str = "2000";

/// How often a broker outage that goes on is logged again.
pub const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(60);

/// A broker outage as one client sees it, told to the operators without flooding the log:
/// its first failure is logged when it starts (WARN), then at most once per
/// [`OUTAGE_LOG_EVERY`] with how many failures there were since, and its end once (INFO) with
/// how long it lasted. librdkafka's own reports of the same failures (every reconnect
/// attempt, to every broker) go through it too ([`Logging`]).
///
/// An outage is a set of failing brokers: a broker whose connection failed (named by
/// librdkafka's log line) stays failing until librdkafka's statistics show it up again; a
/// failed call, or a failure that names no broker, until a call succeeds or any broker is
/// up. The client cannot reach the cluster ([`Outage::is_down`]) while such a failure stands,
/// or while every broker it knows has failed: one dead broker of three is an outage to log,
/// not an unreachable cluster.
#[derive(Debug)]
pub struct Outage {
    /// What failed, for the log: `the decisions reader`, `the review producer`...
    client: &'static str,
    /// An outage is being told (some broker or call is failing): read without the lock on
    /// every success.
    active: AtomicBool,
    /// The cluster cannot be reached (see [`Outage::is_down`]).
    unreachable: AtomicBool,
    state: Mutex<OutageState>,
}

impl Default for Outage {
    fn default() -> Self {
        Outage::new("the service")
    }
}

/// What fails when no broker is named: a call, or a connection to a bootstrap address.
const ANY_BROKER: &str = "*";

#[derive(Debug, Default)]
struct OutageState {
    /// When the outage started, while there is one.
    since: Option<Instant>,
    last_logged: Option<Instant>,
    /// Failures since the last log line.
    unlogged: u64,
    /// The failing brokers (librdkafka's names, `host:port/id`), or [`ANY_BROKER`].
    failing: std::collections::BTreeSet<String>,
    /// The brokers the latest statistics showed up, less those that failed since.
    up: std::collections::BTreeSet<String>,
}

impl OutageState {
    fn unreachable(&self) -> bool {
        self.failing.contains(ANY_BROKER) || (!self.failing.is_empty() && self.up.is_empty())
    }
}

impl Outage {
    pub fn new(client: &'static str) -> Self {
        Outage {
            client,
            active: AtomicBool::new(false),
            unreachable: AtomicBool::new(false),
            state: Mutex::new(OutageState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, OutageState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the cluster is out of reach now, as far as this client knows: a call failed
    /// and none succeeded since, or every broker it knows has failed.
    pub fn is_down(&self) -> bool {
        self.unreachable.load(Ordering::Relaxed)
    }

    /// A call to the broker failed with `error` (retriable: the caller tries again).
    pub fn failed(&self, error: &dyn fmt::Display) {
        self.fail(ANY_BROKER, error);
    }

    /// The connection to `broker` (librdkafka's name for it) failed with `error`.
    pub fn broker_failed(&self, broker: &str, error: &dyn fmt::Display) {
        let who = if broker.ends_with("/bootstrap") {
            ANY_BROKER
        } else {
            broker
        };
        self.fail(who, error);
    }

    fn fail(&self, who: &str, error: &dyn fmt::Display) {
        let mut s = self.state();
        let now = Instant::now();
        let starting = s.failing.is_empty();
        s.failing.insert(who.to_owned());
        s.up.remove(who);
        self.publish(&s);
        if starting {
            s.since = Some(now);
            s.last_logged = Some(now);
            s.unlogged = 0;
            drop(s);
            tracing::warn!(client = self.client, error = %error, "the Kafka broker cannot be reached; retrying (logged again at most once a minute while it lasts)");
            return;
        }
        let since = s.since.unwrap_or(now);
        s.unlogged += 1;
        if s.last_logged.is_none_or(|t| now - t >= OUTAGE_LOG_EVERY) {
            let failures = std::mem::take(&mut s.unlogged);
            s.last_logged = Some(now);
            drop(s);
            tracing::warn!(client = self.client, error = %error, failures, down_seconds = (now - since).as_secs(), "the Kafka broker is still out of reach; retrying");
        }
    }

    fn publish(&self, s: &OutageState) {
        self.active.store(!s.failing.is_empty(), Ordering::Relaxed);
        self.unreachable.store(s.unreachable(), Ordering::Relaxed);
    }

    /// Ends the outage if nothing fails any more, saying how long it lasted.
    fn settle(&self, mut s: std::sync::MutexGuard<'_, OutageState>) {
        self.publish(&s);
        if !s.failing.is_empty() {
            return;
        }
        if let Some(since) = s.since.take() {
            let failures = std::mem::take(&mut s.unlogged);
            drop(s);
            tracing::info!(
                client = self.client,
                down_seconds = since.elapsed().as_secs_f64(),
                failures_not_logged = failures,
                "the Kafka broker is reachable again"
            );
        }
    }

    /// An error librdkafka queued with its events (a client error, or one a consumer's
    /// poll returns): part of the outage if there is one (counted with it), logged at debug
    /// level if not. It never starts an outage: such errors can be delivered seconds after
    /// the brokers are back (`AllBrokersDown` behind the messages); connection failures
    /// are told at once by librdkafka's log lines, and by the calls that fail.
    pub fn seen(&self, error: &dyn fmt::Display) {
        if self.active.load(Ordering::Relaxed) {
            let mut s = self.state();
            s.unlogged += 1;
        } else {
            tracing::debug!(client = self.client, error = %error, "Kafka client error");
        }
    }

    /// A call to the broker succeeded: the failures that named no broker are over.
    pub fn ok(&self) {
        if !self.active.load(Ordering::Relaxed) {
            return;
        }
        let mut s = self.state();
        s.failing.remove(ANY_BROKER);
        self.settle(s);
    }

    /// librdkafka's statistics: the brokers they show up are no longer failing; any broker
    /// up ends the failures that named none.
    pub fn statistics(&self, stats: &rdkafka::Statistics) {
        self.brokers_up(
            stats
                .brokers
                .values()
                .filter(|b| b.state == "UP")
                .map(|b| b.name.clone())
                .collect(),
        );
    }

    /// The brokers `up` now, and only those.
    fn brokers_up(&self, up: std::collections::BTreeSet<String>) {
        let mut s = self.state();
        if !up.is_empty() {
            s.failing.remove(ANY_BROKER);
        }
        s.failing.retain(|b| !up.contains(b));
        s.up = up;
        self.settle(s);
    }
}

/// The broker a librdkafka log line is about: `[thrd:…]: host:port/id: Connect to … failed`.
fn broker_of(message: &str) -> Option<&str> {
    let rest = message.split_once("]: ").map_or(message, |(_, r)| r);
    let (name, _) = rest.split_once(": ")?;
    (name.contains(':') && name.contains('/') && !name.contains(' ')).then_some(name)
}

/// Exponential backoff between attempts of a broker call: `first`, doubling up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    /// How long to wait before the next attempt; the one after waits twice as long.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// After a success: the next failure waits `first` again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps [`Backoff::next_wait`], in short steps, returning early (`false`) once `stop`
    /// is set.
    pub fn sleep(&mut self, stop: &AtomicBool) -> bool {
        let until = Instant::now() + self.next_wait();
        while Instant::now() < until {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
        }
        !stop.load(Ordering::Relaxed)
    }
}

/// Why [`retry`] gave up.
#[derive(Debug)]
pub enum RetryError {
    /// A fatal error ([`is_fatal`]): trying again cannot help.
    Fatal(KafkaError),
    /// Told to stop while waiting.
    Stopped,
}

/// Calls `f` (which does `what`) until it succeeds, backing off between attempts (200 ms
/// doubling to 10 s) and telling `outage` of each failure and of the success; gives up on a
/// fatal error or once `stop` is set.
pub fn retry<T>(
    outage: &Outage,
    what: &str,
    stop: &AtomicBool,
    mut f: impl FnMut() -> Result<T, KafkaError>,
) -> Result<T, RetryError> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match f() {
            Ok(v) => {
                outage.ok();
                return Ok(v);
            }
            Err(e) if is_fatal(&e) => return Err(RetryError::Fatal(e)),
            Err(e) => {
                outage.failed(&format_args!("cannot {what}: {e}"));
                if !backoff.sleep(stop) {
                    return Err(RetryError::Stopped);
                }
            }
        }
    }
}

/// The client context of every Kafka client riskgate makes: librdkafka's log lines and
/// errors go to the log through the client's [`Outage`], so that a broker outage is told
/// once, then at a limited rate, then once when it ends, however many connections fail;
/// the end of a partition is the expected way to get there, never a warning. With
/// statistics on (`statistics.interval.ms`), a report that a broker is up ends the outage.
#[derive(Debug, Clone)]
pub struct Logging {
    pub outage: Arc<Outage>,
}

impl Logging {
    pub fn new(client: &'static str) -> Self {
        Logging {
            outage: Arc::new(Outage::new(client)),
        }
    }
}

/// librdkafka's log facilities that report a connection failing: the outage tells them.
fn is_connection_failure(facility: &str) -> bool {
    matches!(
        facility,
        "FAIL" | "ERROR" | "BROKERFAIL" | "CONNECT" | "DISCONNECT"
    )
}

/// Routes a librdkafka log line: failures of connections are part of an outage; anything
/// else keeps its level.
pub fn log_line(outage: &Outage, level: RDKafkaLogLevel, facility: &str, message: &str) {
    match level {
        // A connection the broker closed while idle is no outage: librdkafka reconnects
        // when it needs to, and a failing reconnect is reported as such.
        _ if message.contains("Disconnected") && message.contains("in state UP") => {
            tracing::debug!(target: "librdkafka", facility, "{message}");
        }
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error
        | RDKafkaLogLevel::Warning
            if is_connection_failure(facility) =>
        {
            match broker_of(message) {
                Some(broker) => outage.broker_failed(broker, &message),
                None => outage.failed(&message),
            }
        }
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", facility, "{message}");
        }
        // A step librdkafka retries by itself (the transaction coordinator still loading at a
        // broker's start, say): worth knowing, not a warning.
        RDKafkaLogLevel::Warning if message.ends_with(": retrying") => {
            tracing::info!(target: "librdkafka", facility, "{message}");
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", facility, "{message}");
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
    }
}

/// Routes a client-wide librdkafka error: the end of a partition is no error; the rest are
/// part of the outage if there is one (counted with it), and logged at debug level if not.
/// They never start or end an outage: librdkafka queues them with its other events, so one
/// (`AllBrokersDown`) can be delivered seconds after the brokers are back. Connection
/// failures are told by its log lines, which come at once.
pub fn client_error(outage: &Outage, error: &KafkaError, reason: &str) {
    let end_of_partition = matches!(error, KafkaError::PartitionEOF(_))
        || error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF);
    if !end_of_partition {
        outage.seen(&format_args!("{error}: {reason}"));
    }
}

/// The `log` and `error` methods of a [`ClientContext`] that tells broker outages through the
/// [`Outage`] its method `outage()` returns ([`log_line`], [`client_error`]).
macro_rules! tell_outages {
    () => {
        fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
            $crate::kafka::log_line(self.outage(), level, facility, message);
        }

        fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
            $crate::kafka::client_error(self.outage(), &error, reason);
        }
    };
}
pub(crate) use tell_outages;

impl Logging {
    fn outage(&self) -> &Outage {
        &self.outage
    }
}

impl ClientContext for Logging {
    tell_outages!();

    fn stats(&self, stats: rdkafka::Statistics) {
        self.outage.statistics(&stats);
    }
}

impl ConsumerContext for Logging {}

impl ProducerContext for Logging {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
}

/// A consumer that reads committed records of partitions it is assigned by hand, from
/// wherever it is told, and says when it reaches a partition's end. librdkafka wants a group
/// id even then (`<group_id>.<purpose>`); the consumer never joins that group nor commits.
pub fn decisions_reader(
    config: &Config,
    purpose: &str,
    logging: Logging,
) -> Result<BaseConsumer<Logging>, KafkaError> {
    let mut c = client_config(config, Client::Consumer);
    if !config
        .kafka
        .librdkafka
        .contains_key("statistics.interval.ms")
    {
        // The statistics say when a broker is up again (the end of an outage).
        c.set("statistics.interval.ms", "5000");
    }
    if !config
        .kafka
        .librdkafka
        .contains_key("reconnect.backoff.max.ms")
    {
        c.set("reconnect.backoff.max.ms", RECONNECT_BACKOFF_MAX_MS);
    }
    c.set("group.id", format!("{}.{purpose}", config.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create_with_context(logging)
}

pub fn is_fatal(e: &KafkaError) -> bool {
    match e {
        KafkaError::Transaction(t) => t.is_fatal(),
        _ => matches!(
            e.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Fatal
                    | RDKafkaErrorCode::ProducerFenced
                    | RDKafkaErrorCode::InvalidProducerEpoch
                    | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
                    | RDKafkaErrorCode::ClusterAuthorizationFailed
            )
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_client_takes_only_the_pass_through_properties_of_its_kind() {
        let text = "[kafka]\ntransactional_id = \"t\"\n[kafka.librdkafka]\n\"session.timeout.ms\" = \"6000\"\n\"linger.ms\" = \"2\"\n\"security.protocol\" = \"plaintext\"\n";
        let config = Config::parse(text, "k.toml", Vec::new()).unwrap();
        let has = |client, key| client_config(&config, client).get(key).is_some();
        assert!(has(Client::Consumer, "session.timeout.ms"));
        assert!(!has(Client::Producer, "session.timeout.ms"));
        assert!(has(Client::Producer, "linger.ms"));
        assert!(!has(Client::Consumer, "linger.ms"));
        assert!(!has(Client::Admin, "linger.ms") && !has(Client::Admin, "session.timeout.ms"));
        for client in [Client::Consumer, Client::Producer, Client::Admin] {
            assert!(has(client, "security.protocol"), "{client:?}");
            assert!(has(client, "bootstrap.servers"), "{client:?}");
        }
    }

    fn names(list: &[&str]) -> std::collections::BTreeSet<String> {
        list.iter().map(|b| (*b).to_owned()).collect()
    }

    #[test]
    fn one_dead_broker_of_three_is_an_outage_to_tell_not_an_unreachable_cluster() {
        let outage = Outage::new("test");
        outage.brokers_up(names(&["h:1/1", "h:2/2", "h:3/3"]));
        let fail = |n: &str| {
            log_line(
                &outage,
                RDKafkaLogLevel::Error,
                "FAIL",
                &format!("[thrd:{n}]: {n}: Connect to ipv4#127.0.0.1:9 failed: Connection refused"),
            )
        };
        fail("h:2/2");
        assert!(outage.active.load(Ordering::Relaxed) && !outage.is_down());
        // Its reconnects go on failing; a success elsewhere does not end it.
        fail("h:2/2");
        outage.ok();
        outage.brokers_up(names(&["h:1/1", "h:3/3"]));
        assert!(outage.active.load(Ordering::Relaxed));
        assert_eq!(
            outage.state().unlogged,
            1,
            "one repeat, counted, not logged"
        );
        // Back up: over.
        outage.brokers_up(names(&["h:1/1", "h:2/2", "h:3/3"]));
        assert!(!outage.active.load(Ordering::Relaxed));
        // Every broker failing: the cluster is out of reach until statistics show one up.
        for n in ["h:1/1", "h:2/2", "h:3/3"] {
            fail(n);
        }
        assert!(outage.is_down());
        outage.ok();
        assert!(
            outage.is_down(),
            "a named broker stays failing until it is seen up"
        );
        outage.brokers_up(names(&["h:1/1"]));
        assert!(!outage.is_down() && outage.active.load(Ordering::Relaxed));
        assert_eq!(
            broker_of("[thrd:a:9/1]: a:9/1: Connect to x failed"),
            Some("a:9/1")
        );
        assert_eq!(broker_of("Global error: AllBrokersDown"), None);
    }

    #[test]
    fn the_end_of_a_partition_is_no_outage_and_a_failure_is_one_until_a_success() {
        let outage = Outage::new("test");
        client_error(
            &outage,
            &KafkaError::Global(RDKafkaErrorCode::PartitionEOF),
            "reached end of partition",
        );
        client_error(&outage, &KafkaError::PartitionEOF(0), "end");
        assert!(!outage.is_down());
        log_line(
            &outage,
            RDKafkaLogLevel::Info,
            "FAIL",
            "127.0.0.1:9092/1: Disconnected (after 600000ms in state UP)",
        );
        assert!(!outage.is_down(), "an idle disconnect is no outage");
        log_line(
            &outage,
            RDKafkaLogLevel::Error,
            "FAIL",
            "127.0.0.1:9092/bootstrap: Connect to ipv4#127.0.0.1:9092 failed: Connection refused",
        );
        assert!(outage.is_down());
        client_error(
            &outage,
            &KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "1/1 brokers are down",
        );
        assert!(outage.is_down());
        outage.ok();
        assert!(!outage.is_down());
        assert!(!outage.active.load(Ordering::Relaxed), "the outage ended");
        // A client error delivered late, after the brokers are back, starts no outage.
        client_error(
            &outage,
            &KafkaError::Global(RDKafkaErrorCode::AllBrokersDown),
            "2/2 brokers are down",
        );
        assert!(!outage.is_down());
    }
}
