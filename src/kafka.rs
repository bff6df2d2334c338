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

/// The librdkafka settings every client of the service shares: the brokers and the
/// pass-through table.
pub fn client_config(config: &Config) -> ClientConfig {
    let mut c = ClientConfig::new();
    for (k, v) in config.client_properties() {
        c.set(k, v);
    }
    c
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

/// How often a broker outage that goes on is logged again.
pub const OUTAGE_LOG_EVERY: Duration = Duration::from_secs(60);

/// A broker outage as one client sees it, told to the operators without flooding the log:
/// its first failure is logged when it starts (WARN), then at most once per
/// [`OUTAGE_LOG_EVERY`] with how many failures there were since, and its end once (INFO) with
/// how long it lasted. librdkafka's own reports of the same failures (every reconnect
/// attempt, to every broker) go through it too ([`Logging`]).
#[derive(Debug)]
pub struct Outage {
    /// What failed, for the log: `the decisions reader`, `the review producer`...
    client: &'static str,
    /// Whether there is an outage now: read without the lock on every success.
    down: AtomicBool,
    state: Mutex<OutageState>,
}

impl Default for Outage {
    fn default() -> Self {
        Outage::new("the service")
    }
}

#[derive(Debug, Default)]
struct OutageState {
    /// When the outage started, while there is one.
    since: Option<Instant>,
    last_logged: Option<Instant>,
    /// Failures since the last log line.
    unlogged: u64,
}

impl Outage {
    pub fn new(client: &'static str) -> Self {
        Outage {
            client,
            down: AtomicBool::new(false),
            state: Mutex::new(OutageState::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, OutageState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the broker is out of reach now, as far as this client knows.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// A call to the broker failed with `error` (retriable: the caller tries again).
    pub fn failed(&self, error: &dyn fmt::Display) {
        let mut s = self.state();
        let now = Instant::now();
        match s.since {
            None => {
                s.since = Some(now);
                self.down.store(true, Ordering::Relaxed);
                s.last_logged = Some(now);
                s.unlogged = 0;
                drop(s);
                tracing::warn!(client = self.client, error = %error, "the Kafka broker cannot be reached; retrying (logged again at most once a minute while it lasts)");
            }
            Some(since) => {
                s.unlogged += 1;
                if s.last_logged.is_none_or(|t| now - t >= OUTAGE_LOG_EVERY) {
                    let failures = std::mem::take(&mut s.unlogged);
                    s.last_logged = Some(now);
                    drop(s);
                    tracing::warn!(client = self.client, error = %error, failures, down_seconds = (now - since).as_secs(), "the Kafka broker is still out of reach; retrying");
                }
            }
        }
    }

    /// A call to the broker succeeded: an outage, if there was one, is over.
    pub fn ok(&self) {
        if !self.is_down() {
            return;
        }
        let mut s = self.state();
        self.down.store(false, Ordering::Relaxed);
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
            outage.failed(&message);
        }
        RDKafkaLogLevel::Emerg
        | RDKafkaLogLevel::Alert
        | RDKafkaLogLevel::Critical
        | RDKafkaLogLevel::Error => {
            tracing::error!(target: "librdkafka", facility, "{message}");
        }
        RDKafkaLogLevel::Warning => tracing::warn!(target: "librdkafka", facility, "{message}"),
        RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
            tracing::info!(target: "librdkafka", facility, "{message}");
        }
        RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", facility, "{message}"),
    }
}

/// Routes a client-wide librdkafka error: the end of a partition is no error; the rest are
/// failures of the broker connection, told through the outage.
pub fn client_error(outage: &Outage, error: &KafkaError, reason: &str) {
    if !matches!(error, KafkaError::PartitionEOF(_)) {
        outage.failed(&format_args!("{error}: {reason}"));
    }
}

/// Whether librdkafka's statistics show a broker connection up.
pub fn any_broker_up(stats: &rdkafka::Statistics) -> bool {
    stats.brokers.values().any(|b| b.state == "UP")
}

impl ClientContext for Logging {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        log_line(&self.outage, level, facility, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error(&self.outage, &error, reason);
    }

    fn stats(&self, stats: rdkafka::Statistics) {
        if any_broker_up(&stats) {
            self.outage.ok();
        }
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
    let mut c = client_config(config);
    if !config
        .kafka
        .librdkafka
        .contains_key("statistics.interval.ms")
    {
        // The statistics say when a broker is up again (the end of an outage).
        c.set("statistics.interval.ms", "5000");
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
