//! Every metric riskgate exports, in one place ([docs/design.md](../../docs/design.md#7-metrics-and-health)).
//!
//! Names follow Prometheus conventions: the `riskgate_` prefix, `_total` counters, `_seconds`
//! histograms in base units, and labels of low cardinality only: outcome, rule id, dead-letter
//! kind, partition number, result. Never an intent, account or agent id.

pub mod events;

use std::sync::OnceLock;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// The service's metrics, registered in their own registry.
pub struct Metrics {
    pub registry: Registry,
    pub decisions: IntCounterVec,
    pub rule_matches: IntCounterVec,
    pub rule_errors: IntCounterVec,
    pub invalid_intents: IntCounterVec,
    pub duplicates: IntCounter,
    pub system_decisions: IntCounterVec,
    pub evaluation_seconds: Histogram,
    pub end_to_end_seconds: Histogram,
    pub consumer_lag: IntGaugeVec,
    pub unproducible_offset: IntGaugeVec,
    pub transactions: IntCounterVec,
    pub commit_seconds: Histogram,
    pub restore_seconds: Histogram,
    pub restored_decisions: IntCounter,
    pub ruleset_info: IntGaugeVec,
    pub ruleset_reloads: IntCounterVec,
    pub partitions_assigned: IntGauge,
    pub partitions_restoring: IntGauge,
    pub ready: IntGauge,
    pub unverified_records: IntCounterVec,
}

/// The help of `riskgate_unverified_records_total`, in both registries.
const UNVERIFIED_HELP: &str = "Records of riskgate's topics ignored because riskgate did not write them: no or a wrong riskgate-mac, or a review record that names no configured reviewer or not the pending hold; by topic and reason";

/// Buckets for the time to decide one intent: microseconds to a few milliseconds.
const EVALUATION_BUCKETS: [f64; 12] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 5e-3, 2.5e-2,
];

/// Buckets for end-to-end and Kafka round trips: milliseconds to tens of seconds.
const LATENCY_BUCKETS: [f64; 14] = [
    1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

impl Metrics {
    fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
            registry.register(Box::new(h.clone()))?;
            Ok::<_, prometheus::Error>(h)
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        Ok(Metrics {
            decisions: counter_vec(
                "riskgate_decisions_total",
                "Decisions published, by outcome",
                &["outcome"],
            )?,
            rule_matches: counter_vec(
                "riskgate_rule_matches_total",
                "Rules that matched an intent, by rule id",
                &["rule"],
            )?,
            rule_errors: counter_vec(
                "riskgate_rule_errors_total",
                "Rules that failed to evaluate for an intent (an entry of the decision's errors), by rule id",
                &["rule"],
            )?,
            invalid_intents: counter_vec(
                "riskgate_invalid_intents_total",
                "Invalid intents sent to the dead-letter topic, by kind",
                &["kind"],
            )?,
            duplicates: counter(
                "riskgate_duplicate_intents_total",
                "Intents whose intent_id was already decided within the duplicate horizon",
            )?,
            system_decisions: {
                let c = counter_vec(
                    "riskgate_system_decisions_total",
                    "Intents riskgate denied itself before any rule (misrouted, stale, future, conflict), by reason",
                    &["reason"],
                )?;
                for r in riskgate_core::engine::SystemReason::ALL {
                    c.with_label_values(&[r.as_str()]);
                }
                c
            },
            evaluation_seconds: histogram(
                "riskgate_decision_evaluation_seconds",
                "Time to parse, decide and serialize one intent",
                &EVALUATION_BUCKETS,
            )?,
            end_to_end_seconds: histogram(
                "riskgate_decision_latency_seconds",
                "From the intent's Kafka timestamp to its decision being produced",
                &LATENCY_BUCKETS,
            )?,
            consumer_lag: gauge_vec(
                "riskgate_consumer_lag",
                "Intents not yet consumed, per assigned partition of the intents topic (from librdkafka statistics)",
                &["partition"],
            )?,
            unproducible_offset: gauge_vec(
                "riskgate_unproducible_offset",
                "Offset of the intent whose decision or dead letter the broker keeps refusing, per intents partition; present only while the partition is held up by it",
                &["partition"],
            )?,
            transactions: counter_vec(
                "riskgate_transactions_total",
                "Kafka transactions, by result (commit or abort)",
                &["result"],
            )?,
            commit_seconds: histogram(
                "riskgate_transaction_commit_seconds",
                "Time to send the offsets and commit one transaction",
                &LATENCY_BUCKETS,
            )?,
            restore_seconds: histogram(
                "riskgate_state_restore_seconds",
                "Time to restore one partition's state from the decisions topic",
                &LATENCY_BUCKETS,
            )?,
            restored_decisions: counter(
                "riskgate_state_restored_decisions_total",
                "Decisions applied while restoring partition state",
            )?,
            ruleset_info: gauge_vec(
                "riskgate_ruleset_info",
                "The ruleset deciding now: 1 for its version",
                &["version"],
            )?,
            ruleset_reloads: {
                let c = counter_vec(
                    "riskgate_ruleset_reloads_total",
                    "Ruleset reloads, by result (success or failure)",
                    &["result"],
                )?;
                // Both series exist from the start at 0, so that the first refused reload is
                // an increase an alert can see.
                for result in ["success", "failure"] {
                    c.with_label_values(&[result]);
                }
                c
            },
            partitions_assigned: gauge(
                "riskgate_partitions_assigned",
                "Intents partitions assigned to this instance",
            )?,
            partitions_restoring: gauge(
                "riskgate_partitions_restoring",
                "Assigned partitions whose state is being restored",
            )?,
            ready: gauge(
                "riskgate_ready",
                "1 when assigned, restored and connected (what /readyz answers)",
            )?,
            unverified_records: counter_vec(
                "riskgate_unverified_records_total",
                UNVERIFIED_HELP,
                &["topic", "reason"],
            )?,
            registry,
        })
    }

    /// Marks `version` as the ruleset deciding now.
    pub fn set_ruleset(&self, version: &str) {
        self.ruleset_info.reset();
        self.ruleset_info.with_label_values(&[version]).set(1);
    }

    /// The names of every metric family, whether or not it has a value yet (what dashboards
    /// and alerts may refer to).
    pub fn names(&self) -> Vec<String> {
        family_names(&[
            &self.decisions,
            &self.rule_matches,
            &self.rule_errors,
            &self.invalid_intents,
            &self.duplicates,
            &self.system_decisions,
            &self.evaluation_seconds,
            &self.end_to_end_seconds,
            &self.consumer_lag,
            &self.unproducible_offset,
            &self.transactions,
            &self.commit_seconds,
            &self.restore_seconds,
            &self.restored_decisions,
            &self.ruleset_info,
            &self.ruleset_reloads,
            &self.partitions_assigned,
            &self.partitions_restoring,
            &self.ready,
            &self.unverified_records,
        ])
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

fn family_names(collectors: &[&dyn prometheus::core::Collector]) -> Vec<String> {
    collectors
        .iter()
        .flat_map(|c| c.desc().into_iter().map(|d| d.fq_name.clone()))
        .collect()
}

fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The review service's metrics (`riskgate review`), in their own registry: a review process
/// exports these and nothing of the engine.
pub struct ReviewMetrics {
    pub registry: Registry,
    pub pending_holds: IntGauge,
    pub time_to_review_seconds: Histogram,
    pub outcomes: IntCounterVec,
    pub refusals: IntCounterVec,
    pub unreadable_records: IntCounter,
    pub ready: IntGauge,
    pub unverified_records: IntCounterVec,
}

/// Buckets for the time a hold waits for people: seconds to a week.
const REVIEW_BUCKETS: [f64; 14] = [
    1.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0, 28800.0, 86400.0,
    172800.0, 604800.0,
];

impl ReviewMetrics {
    fn new() -> Result<ReviewMetrics, prometheus::Error> {
        let registry = Registry::new();
        let pending_holds = IntGauge::new(
            "riskgate_pending_holds",
            "Held intents waiting for a review, as this review instance reads the decisions topic",
        )?;
        let time_to_review_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "riskgate_review_time_seconds",
                "From the hold decision to the review that ended it (approve, reject or expiry), for reviews this instance published",
            )
            .buckets(REVIEW_BUCKETS.to_vec()),
        )?;
        let outcomes = IntCounterVec::new(
            Opts::new(
                "riskgate_review_outcomes_total",
                "Review records this instance published, by outcome (approve, partial_approve, reject, expire)",
            ),
            &["outcome"],
        )?;
        let refusals = IntCounterVec::new(
            Opts::new(
                "riskgate_review_refusals_total",
                "Refused review requests, by reason (unauthenticated, bad_credentials, csrf, viewer, proposer, already_approved, not_pending, no_comment, already_reviewed, hold_changed, bad_request)",
            ),
            &["reason"],
        )?;
        let unreadable_records = IntCounter::new(
            "riskgate_review_unreadable_records_total",
            "Records of the decisions topic that are neither a decision nor a review (logged, skipped)",
        )?;
        let ready = IntGauge::new(
            "riskgate_review_ready",
            "1 once the decisions topic has been read to its end at start (what /readyz answers)",
        )?;
        registry.register(Box::new(pending_holds.clone()))?;
        registry.register(Box::new(time_to_review_seconds.clone()))?;
        registry.register(Box::new(outcomes.clone()))?;
        registry.register(Box::new(refusals.clone()))?;
        registry.register(Box::new(unreadable_records.clone()))?;
        registry.register(Box::new(ready.clone()))?;
        let unverified_records = IntCounterVec::new(
            Opts::new("riskgate_unverified_records_total", UNVERIFIED_HELP),
            &["topic", "reason"],
        )?;
        registry.register(Box::new(unverified_records.clone()))?;
        Ok(ReviewMetrics {
            registry,
            pending_holds,
            time_to_review_seconds,
            outcomes,
            refusals,
            unreadable_records,
            ready,
            unverified_records,
        })
    }

    /// The names of every metric family, whether or not it has a value yet.
    pub fn names(&self) -> Vec<String> {
        family_names(&[
            &self.pending_holds,
            &self.time_to_review_seconds,
            &self.outcomes,
            &self.refusals,
            &self.unreadable_records,
            &self.ready,
            &self.unverified_records,
        ])
    }

    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

/// The metrics of `riskgate gateway`, in a registry of their own.
pub struct GatewayMetrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub wait_seconds: Histogram,
    pub refusals: IntCounterVec,
    pub answers: IntCounterVec,
    pub waiting: IntGauge,
    pub cache_entries: IntGauge,
    pub cache_bytes: IntGauge,
    pub ready: IntGauge,
    pub key_reloads: IntCounterVec,
    pub unverified_records: IntCounterVec,
}

/// Buckets for the wait of a gateway request: a millisecond to the longest wait.
const WAIT_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

impl GatewayMetrics {
    fn new() -> Result<GatewayMetrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "riskgate_gateway_requests_total",
                "Requests the gateway answered, by HTTP status code",
            ),
            &["code"],
        )?;
        let wait_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "riskgate_gateway_wait_seconds",
                "How long a request waited for its decision (answered or not), from handing the intent to Kafka",
            )
            .buckets(WAIT_BUCKETS.to_vec()),
        )?;
        let refusals = IntCounterVec::new(
            Opts::new(
                "riskgate_gateway_refusals_total",
                "Refused requests, by reason (unauthenticated, bad_key, wrong_agent, rate_limited, busy, too_large, unsupported_media_type, invalid_intent, bad_request, unavailable)",
            ),
            &["reason"],
        )?;
        let answers = IntCounterVec::new(
            Opts::new(
                "riskgate_gateway_answers_total",
                "What requests that waited were answered with: allow, hold, deny, dead_letter, or pending (a 202: no decision within the wait)",
            ),
            &["answer"],
        )?;
        let waiting = IntGauge::new(
            "riskgate_gateway_waiting_requests",
            "Requests waiting for their decision now",
        )?;
        let cache_entries = IntGauge::new(
            "riskgate_gateway_cache_entries",
            "Decisions and dead letters kept for answers",
        )?;
        let cache_bytes = IntGauge::new(
            "riskgate_gateway_cache_bytes",
            "About how many bytes the kept answers take",
        )?;
        let ready = IntGauge::new(
            "riskgate_gateway_ready",
            "1 once the gateway has read the decisions and dead-letter topics up to now at start, and while it can reach the broker",
        )?;
        let key_reloads = IntCounterVec::new(
            Opts::new(
                "riskgate_gateway_key_reloads_total",
                "Reloads of the API keys from the configuration file, by result (success, failure: the old keys stay)",
            ),
            &["result"],
        )?;
        let unverified_records = IntCounterVec::new(
            Opts::new("riskgate_unverified_records_total", UNVERIFIED_HELP),
            &["topic", "reason"],
        )?;
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(wait_seconds.clone()),
            Box::new(refusals.clone()),
            Box::new(answers.clone()),
            Box::new(waiting.clone()),
            Box::new(cache_entries.clone()),
            Box::new(cache_bytes.clone()),
            Box::new(ready.clone()),
            Box::new(key_reloads.clone()),
            Box::new(unverified_records.clone()),
        ] {
            registry.register(c)?;
        }
        Ok(GatewayMetrics {
            registry,
            requests,
            wait_seconds,
            refusals,
            answers,
            waiting,
            cache_entries,
            cache_bytes,
            ready,
            key_reloads,
            unverified_records,
        })
    }

    /// The names of every metric family, whether or not it has a value yet.
    pub fn names(&self) -> Vec<String> {
        family_names(&[
            &self.requests,
            &self.wait_seconds,
            &self.refusals,
            &self.answers,
            &self.waiting,
            &self.cache_entries,
            &self.cache_bytes,
            &self.ready,
            &self.key_reloads,
            &self.unverified_records,
        ])
    }

    pub fn render(&self) -> String {
        render(&self.registry)
    }
}

/// The gateway process's metrics.
pub fn gateway_metrics() -> &'static GatewayMetrics {
    static METRICS: OnceLock<GatewayMetrics> = OnceLock::new();
    METRICS.get_or_init(|| match GatewayMetrics::new() {
        Ok(m) => m,
        Err(e) => unreachable_metrics(e),
    })
}

/// The review process's metrics.
pub fn review_metrics() -> &'static ReviewMetrics {
    static METRICS: OnceLock<ReviewMetrics> = OnceLock::new();
    METRICS.get_or_init(|| match ReviewMetrics::new() {
        Ok(m) => m,
        Err(e) => unreachable_metrics(e),
    })
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| match Metrics::new() {
        Ok(m) => m,
        // Registration fails only on a duplicate or malformed name: a programming error
        // that the unit test below catches.
        Err(e) => unreachable_metrics(e),
    })
}

#[allow(clippy::panic)]
fn unreachable_metrics<M>(e: prometheus::Error) -> M {
    panic!("metric definitions are invalid: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateway_metrics_register_and_render() {
        let g = gateway_metrics();
        g.requests.with_label_values(&["200"]).inc();
        let text = g.render();
        assert!(
            text.contains("riskgate_gateway_requests_total{code=\"200\"} 1"),
            "{text}"
        );
        assert!(g
            .names()
            .contains(&"riskgate_gateway_wait_seconds".to_owned()));
    }

    #[test]
    fn every_metric_registers_and_renders() {
        let m = metrics();
        m.decisions.with_label_values(&["hold"]).inc();
        m.set_ruleset("abc123");
        m.set_ruleset("def456");
        let text = m.render();
        assert!(
            text.contains("riskgate_decisions_total{outcome=\"hold\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("riskgate_ruleset_info{version=\"def456\"} 1"),
            "{text}"
        );
        assert!(!text.contains("abc123"), "the old version is gone: {text}");
        assert!(text.contains("riskgate_decision_evaluation_seconds_bucket{le=\"0.000001\"}"));
    }

    #[test]
    fn rule_errors_count_once_and_refused_reloads_are_there_from_the_start() {
        use super::events::{Decided, Emit};
        use riskgate_core::decision::Source;
        use riskgate_core::engine::{Clock, Engine, EngineOptions, Processed, RecordKey};
        let text =
            "[[rule]]\nid = \"needs-note\"\nwhen = 'attributes.note == \"x\"'\naction = \"hold\"\n";
        let rules = riskgate_core::rules::Ruleset::load_sources(&[(
            std::path::PathBuf::from("t.toml"),
            text.to_owned(),
        )])
        .unwrap();
        let mut engine = Engine::new(std::sync::Arc::new(rules), EngineOptions::default());
        let intent = br#"{"intent_id":"i-1","agent_id":"bot","account_id":"a","action":"transfer","created_at":"2026-11-28T10:00:00Z"}"#;
        let m = metrics();
        let series = || m.rule_errors.with_label_values(&["needs-note"]).get();
        let before = series();
        for line in 1..=2 {
            let source = Source::File {
                file: "t".into(),
                line,
            };
            let Processed::Decided(d) = engine.process(
                intent,
                1 << 16,
                RecordKey::Unchecked,
                source,
                Clock::At(chrono::Utc::now()),
            ) else {
                panic!("a valid intent");
            };
            assert_eq!(d.errors.len(), 1, "the absent attribute is an error");
            assert_eq!(d.duplicate, line == 2);
            Decided {
                decision: &d,
                evaluation: std::time::Duration::ZERO,
                end_to_end: None,
            }
            .emit();
        }
        assert_eq!(
            series() - before,
            1,
            "the duplicate's re-emitted error is not counted again"
        );
        let text = m.render();
        assert!(
            text.contains("riskgate_ruleset_reloads_total{result=\"failure\"}"),
            "{text}"
        );
    }

    #[test]
    fn review_metrics_register_apart_from_the_engine() {
        let r = review_metrics();
        r.outcomes.with_label_values(&["approve"]).inc();
        r.pending_holds.set(3);
        let text = r.render();
        assert!(text.contains("riskgate_pending_holds 3"), "{text}");
        assert!(
            text.contains("riskgate_review_outcomes_total{outcome=\"approve\"} 1"),
            "{text}"
        );
        assert!(!text.contains("riskgate_decisions_total"), "{text}");
        assert_eq!(r.names().len(), 7);
    }
}
