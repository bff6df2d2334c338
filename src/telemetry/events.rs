//! What the service tells its operators, one type per event: each logs and counts in one place
//! ([`Emit::emit`]), so the log line and the metric of a happening can never drift apart
//! (vectordotdev/vector's `internal_events`).

use std::time::Duration;

use riskgate_core::decision::{Decision, SystemReason};
use riskgate_core::intent::InvalidKind;
use riskgate_core::rules::{LoadErrors, PartitioningError};

use super::metrics;

/// An event: logged and counted by [`Emit::emit`].
pub trait Emit {
    fn emit(&self);
}

/// An intent was decided. Counted only (one per intent: the hot path logs nothing).
pub struct Decided<'a> {
    pub decision: &'a Decision,
    /// Time spent parsing and deciding.
    pub evaluation: Duration,
    /// From the intent's Kafka timestamp to its decision, when it has one.
    pub end_to_end: Option<Duration>,
}

impl Emit for Decided<'_> {
    fn emit(&self) {
        let m = metrics();
        let d = self.decision;
        m.decisions.with_label_values(&[d.outcome.as_str()]).inc();
        if d.is_system() {
            // One reason, `riskgate:<reason>`: not a rule of the ruleset.
            if let Some(reason) = d
                .reasons
                .first()
                .and_then(|r| SystemReason::of_rule(&r.rule))
            {
                m.system_decisions
                    .with_label_values(&[reason.as_str()])
                    .inc();
            }
        } else {
            if d.duplicate {
                m.duplicates.inc();
            }
            for r in &d.reasons {
                m.rule_matches.with_label_values(&[&r.rule]).inc();
            }
            // A duplicate re-emits its original's errors: counted once, when they happened.
            if !d.duplicate {
                for e in &d.errors {
                    m.rule_errors.with_label_values(&[&*e.rule]).inc();
                }
            }
        }
        m.evaluation_seconds.observe(self.evaluation.as_secs_f64());
        if let Some(e) = self.end_to_end {
            m.end_to_end_seconds.observe(e.as_secs_f64());
        }
    }
}

/// An invalid intent went to the dead-letter topic. Counted only.
pub struct DeadLettered {
    pub kind: InvalidKind,
    pub evaluation: Duration,
}

impl Emit for DeadLettered {
    fn emit(&self) {
        let m = metrics();
        m.invalid_intents
            .with_label_values(&[self.kind.as_str()])
            .inc();
        m.evaluation_seconds.observe(self.evaluation.as_secs_f64());
    }
}

/// A transaction was committed with its decisions and offsets.
pub struct TransactionCommitted {
    pub records: usize,
    pub open: Duration,
    pub commit: Duration,
}

impl Emit for TransactionCommitted {
    fn emit(&self) {
        let m = metrics();
        m.transactions.with_label_values(&["commit"]).inc();
        m.commit_seconds.observe(self.commit.as_secs_f64());
        tracing::debug!(
            records = self.records,
            open_ms = self.open.as_millis() as u64,
            commit_ms = self.commit.as_millis() as u64,
            "transaction committed"
        );
    }
}

/// A transaction was aborted; its intents are decided again after a restore.
pub struct TransactionAborted<'a> {
    pub partitions: &'a [i32],
    pub intents: usize,
}

impl Emit for TransactionAborted<'_> {
    fn emit(&self) {
        metrics().transactions.with_label_values(&["abort"]).inc();
        tracing::warn!(
            partitions = ?self.partitions,
            intents = self.intents,
            "transaction aborted; restoring the state as of the last commit, then deciding its intents again"
        );
    }
}

/// The broker refused an intent's output in several aborts in a row (three, in the pipeline):
/// its partition waits, not ready, and tries again after `retry_in`.
///
pub struct RecordUnproducible<'a> {
    pub partition: i32,
    pub offset: i64,
    pub aborts: u32,
    pub error: &'a str,
    pub retry_in: Duration,
}

impl Emit for RecordUnproducible<'_> {
    fn emit(&self) {
        metrics()
            .unproducible_offset
            .with_label_values(&[&self.partition.to_string()])
            .set(self.offset);
        tracing::error!(
            partition = self.partition,
            offset = self.offset,
            aborts = self.aborts,
            error = self.error,
            retry_in_ms = self.retry_in.as_millis() as u64,
            "the broker keeps refusing the output of this intent; its partition waits and tries again (check the topic's max.message.bytes and ACLs)"
        );
    }
}

/// The output of an intent that had been refused was committed at last.
pub struct RecordProduced {
    pub partition: i32,
    pub offset: i64,
    pub aborts: u32,
}

/// Removes `partition`'s `riskgate_unproducible_offset` series: no refused intent holds it up
/// here any more.
fn clear_unproducible(partition: i32) {
    let _ = metrics()
        .unproducible_offset
        .remove_label_values(&[&partition.to_string()]);
}

impl Emit for RecordProduced {
    fn emit(&self) {
        clear_unproducible(self.partition);
        tracing::info!(
            partition = self.partition,
            offset = self.offset,
            aborts = self.aborts,
            "the output of a refused intent is committed; its partition goes on"
        );
    }
}

/// A partition held up by a refused intent was revoked: its new owner tries again.
pub struct UnproducibleDropped {
    pub partition: i32,
}

impl Emit for UnproducibleDropped {
    fn emit(&self) {
        clear_unproducible(self.partition);
    }
}

/// A partition's state was rebuilt from the decisions topic.
pub struct StateRestored {
    pub partition: i32,
    pub committed_offset: Option<i64>,
    pub records: u64,
    pub decisions: u64,
    pub unreadable: u64,
    pub elapsed: Duration,
}

impl Emit for StateRestored {
    fn emit(&self) {
        let m = metrics();
        m.restore_seconds.observe(self.elapsed.as_secs_f64());
        m.restored_decisions.inc_by(self.decisions);
        let secs = self.elapsed.as_secs_f64();
        tracing::info!(
            partition = self.partition,
            committed_offset = self.committed_offset,
            records = self.records,
            decisions = self.decisions,
            unreadable = self.unreadable,
            seconds = secs,
            records_per_second = (self.records as f64 / secs.max(1e-9)) as u64,
            "state restored"
        );
    }
}

/// A new, valid ruleset was loaded and handed to the pipeline.
pub struct RulesetReloaded<'a> {
    pub trigger: &'a str,
    pub old: &'a str,
    pub new: &'a str,
    pub rules: usize,
}

impl Emit for RulesetReloaded<'_> {
    fn emit(&self) {
        metrics()
            .ruleset_reloads
            .with_label_values(&["success"])
            .inc();
        tracing::info!(
            trigger = self.trigger,
            old = self.old,
            new = self.new,
            rules = self.rules,
            "ruleset reloaded"
        );
    }
}

/// Why a changed ruleset was refused.
pub enum Refusal<'a> {
    /// It has errors.
    Errors(&'a LoadErrors),
    /// It would split counters by partition.
    Partitioning(&'a PartitioningError),
}

/// A changed ruleset was refused; the running one keeps deciding.
pub struct RulesetRefused<'a> {
    pub trigger: &'a str,
    pub why: Refusal<'a>,
    pub running: &'a str,
}

impl Emit for RulesetRefused<'_> {
    fn emit(&self) {
        metrics()
            .ruleset_reloads
            .with_label_values(&["failure"])
            .inc();
        let summary = match self.why {
            Refusal::Errors(errors) => {
                for e in &errors.0 {
                    tracing::error!(trigger = self.trigger, error = %e, "ruleset reload refused");
                }
                "the new ruleset has errors; still deciding with the running one"
            }
            Refusal::Partitioning(e) => {
                tracing::error!(trigger = self.trigger, error = %e, "ruleset reload refused");
                "the new ruleset does not fit the partitioning; still deciding with the running one"
            }
        };
        tracing::error!(trigger = self.trigger, running = self.running, "{summary}");
    }
}

/// The pipeline now decides with this ruleset.
pub struct RulesetInUse<'a> {
    pub version: &'a str,
}

impl Emit for RulesetInUse<'_> {
    fn emit(&self) {
        metrics().set_ruleset(self.version);
    }
}

/// A record of riskgate's topics that riskgate did not write (or that names no configured
/// reviewer, or not the pending hold): ignored by the reader, counted in `counter` (the
/// registry of the process), and logged once per record, with where it is.
pub struct UnverifiedRecord<'a> {
    pub counter: &'a prometheus::IntCounterVec,
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub reason: &'a str,
    /// Who reads it: `restore`, `review`, `gateway`.
    pub reader: &'a str,
}

impl Emit for UnverifiedRecord<'_> {
    fn emit(&self) {
        self.counter
            .with_label_values(&[self.topic, self.reason])
            .inc();
        // Readers read the topic again (each restore, each start): each record is logged
        // once per process, within a bound.
        static LOGGED: std::sync::Mutex<Option<std::collections::HashSet<(String, i32, i64)>>> =
            std::sync::Mutex::new(None);
        let first = {
            let mut logged = LOGGED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let set = logged.get_or_insert_with(Default::default);
            if set.len() >= 100_000 {
                set.clear();
            }
            set.insert((self.topic.to_owned(), self.partition, self.offset))
        };
        if first {
            tracing::warn!(
                topic = self.topic,
                partition = self.partition,
                offset = self.offset,
                reason = self.reason,
                reader = self.reader,
                "ignoring a record riskgate did not write (or that answers nothing pending); check the topic's ACLs"
            );
        }
    }
}
