//! Kafka, as every part of riskgate meets it: the client configuration, the reader of the
//! decisions topic (restore and review), partition lookup, how errors are classed and how
//! calls are retried. The pipeline and the review service both use this module.
//!
//! Errors fall in three classes ([docs/kafka.md](../docs/kafka.md#faults)): retriable (the
//! same call again, with backoff), abortable (abort the transaction and decide its intents
//! again: the pipeline's business) and fatal ([`is_fatal`]: stop, exit non-zero).

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
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

/// The context of consumers that read a topic to its end (restore, review): the end of a
/// partition is the expected way to get there, not an error worth logging.
pub struct Quiet;

impl ClientContext for Quiet {
    fn error(&self, error: KafkaError, reason: &str) {
        if !matches!(error, KafkaError::PartitionEOF(_)) {
            tracing::warn!(error = %error, reason, "decisions consumer error");
        }
    }
}

impl ConsumerContext for Quiet {}

/// A consumer that reads committed records of partitions it is assigned by hand, from
/// wherever it is told, and says when it reaches a partition's end. librdkafka wants a group
/// id even then (`<group_id>.<purpose>`); the consumer never joins that group nor commits.
pub fn decisions_reader(config: &Config, purpose: &str) -> Result<BaseConsumer<Quiet>, KafkaError> {
    client_config(config)
        .set("group.id", format!("{}.{purpose}", config.kafka.group_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .create_with_context(Quiet)
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
