//! `riskgate run`: wires the pipeline thread to signals, rules reloads and (optionally)
//! topic creation, on a tokio runtime.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::producer::{BaseProducer, Producer};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc as tmpsc;

use crate::config::Config;
use crate::kafka::{self, client_config, partition_count, Client, Logging, RetryError};
use crate::pipeline::{self, Controls, Health};
use crate::shutdown::{Shutdown, GRACE};
use crate::telemetry::events::{self, Emit};
use riskgate_core::intent::FieldPath;
use riskgate_core::rules::Ruleset;

/// Runs the service until SIGTERM or SIGINT. `ruleset` is the one loaded and validated at
/// start.
pub async fn run(config: Config, ruleset: Arc<Ruleset>) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    shutdown.listen("finishing the open transaction", GRACE)?;
    let health = Arc::new(Health::default());
    let bound = crate::http::serve(config.http.listen, health.clone())
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot listen on {} (http.listen): {e}", config.http.listen)
        })?;
    tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    config.integrity.announce(
        &crate::telemetry::metrics().unverified_records,
        &config.kafka.decisions_topic,
        &[],
    );
    if config.kafka.create_topics {
        // Metadata calls block: they run off the async workers.
        let c = config.clone();
        let runtime = tokio::runtime::Handle::current();
        let stop = shutdown.flag();
        tokio::task::spawn_blocking(move || create_topics(&c, &runtime, &stop)).await??;
    }

    // Reload triggers: SIGHUP and, when watched, changes in the rules directory.
    let (trigger_tx, trigger_rx) = tmpsc::channel::<&'static str>(16);
    let _watcher = if config.rules.watch {
        Some(watch(&config.rules.dir, trigger_tx.clone())?)
    } else {
        None
    };
    let mut hangup = signal(SignalKind::hangup())?;
    let hup_tx = trigger_tx.clone();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let _ = hup_tx.send("SIGHUP").await;
        }
    });
    let (reload_tx, reload_rx) = mpsc::channel();
    tokio::spawn(reloader(
        config.rules.dir.clone(),
        ruleset.version.clone(),
        trigger_rx,
        reload_tx,
        (health.clone(), config.kafka.partition_key.clone()),
    ));

    let controls = Controls {
        shutdown: shutdown.flag(),
        reloads: reload_rx,
        health,
    };
    tokio::task::spawn_blocking(move || pipeline::run(config, ruleset, controls)).await??;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// Watches `dir` and sends a trigger for every change (the reloader coalesces bursts).
fn watch(
    dir: &Path,
    trigger: tmpsc::Sender<&'static str>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    watch_in(dir, None, trigger)
}

/// Watches `dir` and sends a trigger for every change of a file in it named `only` (of any
/// file when `None`). The directory, not the file: editors and configuration managers
/// replace a file by renaming another onto it.
pub(crate) fn watch_in(
    dir: &Path,
    only: Option<std::ffi::OsString>,
    trigger: tmpsc::Sender<&'static str>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(e) = event else { return };
        let named = |p: &std::path::PathBuf| only.as_ref().is_none_or(|n| p.file_name() == Some(n));
        if !e.kind.is_access() && (only.is_none() || e.paths.iter().any(named)) {
            let _ = trigger.try_send("file change");
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    Ok(watcher)
}

/// Loads and validates the ruleset on every trigger; hands a valid, changed one to the
/// pipeline; logs every error of an invalid one and keeps the running ruleset.
async fn reloader(
    dir: std::path::PathBuf,
    mut current: Arc<str>,
    mut triggers: tmpsc::Receiver<&'static str>,
    reloads: mpsc::Sender<Arc<Ruleset>>,
    (health, partition_key): (Arc<Health>, FieldPath),
) {
    while let Some(why) = triggers.recv().await {
        // Editors write files in several steps: let a burst of changes settle first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        while triggers.try_recv().is_ok() {}
        let d = dir.clone();
        let loaded = tokio::task::spawn_blocking(move || Ruleset::load_dir(&d)).await;
        match loaded {
            Ok(Ok(rs)) if rs.version == current => {
                tracing::debug!(trigger = why, version = %current, "rules unchanged");
            }
            Ok(Ok(rs)) => {
                let partitions = health
                    .intents_partitions
                    .load(std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = rs.check_partitioning(&partition_key, partitions) {
                    events::RulesetRefused {
                        trigger: why,
                        why: events::Refusal::Partitioning(&e),
                        running: &current,
                    }
                    .emit();
                    continue;
                }
                events::RulesetReloaded {
                    trigger: why,
                    old: &current,
                    new: &rs.version,
                    rules: rs.rules.len(),
                }
                .emit();
                current = rs.version.clone();
                if reloads.send(Arc::new(rs)).is_err() {
                    return;
                }
            }
            Ok(Err(errors)) => events::RulesetRefused {
                trigger: why,
                why: events::Refusal::Errors(&errors),
                running: &current,
            }
            .emit(),
            Err(e) => tracing::error!(error = %e, "ruleset reload failed"),
        }
    }
}

/// Why the topics could not be created at start.
#[derive(Debug, thiserror::Error)]
enum TopicsError {
    #[error("cannot create a Kafka client for `{brokers}`: {error}")]
    Client {
        brokers: String,
        error: rdkafka::error::KafkaError,
    },
    #[error("stopped while waiting for the brokers `{brokers}` to create the topics")]
    Stopped { brokers: String },
    #[error("the brokers `{brokers}` gave a fatal error while reading topic metadata: {error}; check `kafka.brokers` and the security settings in `[kafka.librdkafka]`")]
    Fatal {
        brokers: String,
        error: rdkafka::error::KafkaError,
    },
    #[error("the brokers `{brokers}` refused to create topic `{topic}`: {code}; {hint}")]
    Refused {
        brokers: String,
        topic: String,
        code: rdkafka::types::RDKafkaErrorCode,
        hint: &'static str,
    },
    #[error("the topics created on `{brokers}` did not appear in its metadata within 10 s")]
    NotVisible { brokers: String },
}

/// What to check when the broker refuses to create a topic.
fn refusal_hint(code: rdkafka::types::RDKafkaErrorCode) -> &'static str {
    use rdkafka::types::RDKafkaErrorCode as C;
    match code {
        C::InvalidReplicationFactor => "`kafka.replication_factor` is more than the brokers there are",
        C::InvalidPartitions => "`kafka.partitions` must be at least 1",
        C::TopicAuthorizationFailed | C::ClusterAuthorizationFailed => {
            "riskgate's principal may not create topics: create them yourself, or grant it CREATE (docs/kafka.md)"
        }
        C::PolicyViolation => "the broker's topic policy refuses these settings",
        _ => "create the topics yourself (docs/kafka.md), or check the broker's log",
    }
}

/// Creates missing topics: the intents topic with `partitions` partitions, the others with
/// as many as the intents topic has. Waits while the brokers cannot be reached (the outage is
/// logged, naming them), until `stop`. Blocking: it runs on a blocking thread, and drives the
/// admin client's request on `runtime`.
fn create_topics(
    config: &Config,
    runtime: &tokio::runtime::Handle,
    stop: &AtomicBool,
) -> Result<(), TopicsError> {
    let k = &config.kafka;
    let brokers = || k.brokers.clone();
    let client = |error| TopicsError::Client {
        brokers: brokers(),
        error,
    };
    let logging = Logging::new("topic creation");
    let outage = logging.outage.clone();
    let probe: BaseProducer<Logging> = client_config(config, Client::Producer)
        .set("allow.auto.create.topics", "false")
        .create_with_context(logging.clone())
        .map_err(client)?;
    let timeout = Duration::from_secs(10);
    let count = |name: &str| {
        let what = format!("read the metadata of `{name}` from `{}`", k.brokers);
        kafka::retry(&outage, &what, stop, || {
            partition_count(probe.client(), name, timeout)
        })
        .map_err(|e| match e {
            RetryError::Fatal(error) => TopicsError::Fatal {
                brokers: brokers(),
                error,
            },
            RetryError::Stopped => TopicsError::Stopped { brokers: brokers() },
        })
    };
    let names = [&k.intents_topic, &k.decisions_topic, &k.dead_letter_topic];
    let partitions = count(&k.intents_topic)?.unwrap_or(k.partitions);
    let mut wanted = Vec::new();
    for name in names {
        if count(name)?.is_none() {
            wanted.push(NewTopic::new(
                name,
                partitions,
                TopicReplication::Fixed(k.replication_factor),
            ));
        }
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<Logging> = client_config(config, Client::Admin)
        .create_with_context(logging)
        .map_err(client)?;
    let results = runtime
        .block_on(admin.create_topics(wanted.iter(), &AdminOptions::new()))
        .map_err(|error| TopicsError::Fatal {
            brokers: brokers(),
            error,
        })?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, partitions, "topic created"),
            Err((name, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::info!(topic = %name, "topic already exists")
            }
            Err((topic, code)) => {
                return Err(TopicsError::Refused {
                    brokers: brokers(),
                    topic,
                    code,
                    hint: refusal_hint(code),
                })
            }
        }
    }
    // Metadata is eventually consistent: wait until every topic is visible.
    for _ in 0..100 {
        let mut all = true;
        for name in names {
            all &= count(name)?.is_some();
        }
        if all {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(TopicsError::NotVisible { brokers: brokers() })
}
