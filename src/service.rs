//! `riskgate run`: wires the pipeline thread to signals, rules reloads and (optionally)
//! topic creation, on a tokio runtime.

use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, Producer};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc as tmpsc;

use crate::config::Config;
use crate::kafka::{client_config, partition_count};
use crate::pipeline::{self, Controls, Health};
use crate::shutdown::{Shutdown, GRACE};
use crate::telemetry::events::{self, Emit};
use riskgate_core::intent::FieldPath;
use riskgate_core::rules::Ruleset;

/// Runs the service until SIGTERM or SIGINT. `ruleset` is the one loaded and validated at
/// start.
pub async fn run(config: Config, ruleset: Arc<Ruleset>) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    let health = Arc::new(Health::default());
    let bound = crate::http::serve(config.http.listen, health.clone())
        .await
        .map_err(|e| {
            anyhow::anyhow!("cannot listen on {} (http.listen): {e}", config.http.listen)
        })?;
    tracing::info!(address = %bound, "serving /metrics, /healthz and /readyz");
    if config.kafka.create_topics {
        // Metadata calls block: they run off the async workers.
        let c = config.clone();
        let runtime = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || create_topics(&c, &runtime)).await??;
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

    shutdown.listen("finishing the open transaction", GRACE)?;

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
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|e| !e.kind.is_access()) {
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
            Ok(Ok(rs))
                if rs
                    .check_partitioning(
                        &partition_key,
                        health
                            .intents_partitions
                            .load(std::sync::atomic::Ordering::Relaxed),
                    )
                    .is_err() =>
            {
                let partitions = health
                    .intents_partitions
                    .load(std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = rs.check_partitioning(&partition_key, partitions) {
                    events::PartitioningRefused {
                        trigger: why,
                        error: &e,
                        running: &current,
                    }
                    .emit();
                }
            }
            Ok(Ok(rs)) => {
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
                errors: &errors,
                running: &current,
            }
            .emit(),
            Err(e) => tracing::error!(error = %e, "ruleset reload failed"),
        }
    }
}

/// Creates missing topics: the intents topic with `partitions` partitions, the others with
/// as many as the intents topic has. Blocking: it runs on a blocking thread, and drives the
/// admin client's request on `runtime`.
fn create_topics(config: &Config, runtime: &tokio::runtime::Handle) -> anyhow::Result<()> {
    let k = &config.kafka;
    let probe: BaseProducer = client_config(config)
        .set("allow.auto.create.topics", "false")
        .create()?;
    let timeout = Duration::from_secs(10);
    let intents = partition_count(probe.client(), &k.intents_topic, timeout)?;
    let partitions = intents.unwrap_or(k.partitions);
    let admin: AdminClient<DefaultClientContext> = client_config(config).create()?;
    let mut wanted = Vec::new();
    for name in [&k.intents_topic, &k.decisions_topic, &k.dead_letter_topic] {
        if partition_count(probe.client(), name, timeout)?.is_none() {
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
    let results = runtime.block_on(admin.create_topics(wanted.iter(), &AdminOptions::new()))?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, partitions, "topic created"),
            Err((name, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                tracing::info!(topic = %name, "topic already exists")
            }
            Err((name, code)) => anyhow::bail!("cannot create topic `{name}`: {code}"),
        }
    }
    // Metadata is eventually consistent: wait until every topic is visible.
    for _ in 0..100 {
        let mut all = true;
        for name in [&k.intents_topic, &k.decisions_topic, &k.dead_letter_topic] {
            all &= partition_count(probe.client(), name, timeout)?.is_some();
        }
        if all {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    anyhow::bail!("created topics did not appear in the metadata within 10 s")
}
