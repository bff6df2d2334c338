//! Rebuilding state from decisions (what the service does on assignment) gives the same
//! later decisions as never having stopped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use riskgate_core::decision::{Decision, Source};
use riskgate_core::engine::{Engine, EngineOptions};
use riskgate_core::intent::parse_intent;
use riskgate_core::rules::Ruleset;
use riskgate_core::wire::parse_record;

use riskgate_test_support as support;

/// Generated valid intents, one JSON object per element.
fn lines(count: u64, seed: u64, accounts: u32) -> Vec<Vec<u8>> {
    support::generated(count, seed, accounts, true)
        .into_iter()
        .map(|(_, _, line)| line)
        .collect()
}

fn engine() -> Engine {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let options = EngineOptions {
        max_future_skew: None,
        ..EngineOptions::default()
    };
    Engine::new(Arc::new(Ruleset::load_dir(&rules).unwrap()), options)
}

fn decide(engine: &mut Engine, line: &[u8], offset: usize) -> Arc<Decision> {
    let intent = parse_intent(line, 1 << 16).unwrap();
    let source = Source::Kafka {
        topic: Arc::from("intents"),
        partition: 0,
        offset: offset as i64,
    };
    let now: DateTime<Utc> = "2026-12-01T00:00:00Z".parse().unwrap();
    engine.decide(intent, source, now)
}

/// What must not change: the outcome, the score, the reasons and the counters.
fn verdict(d: &Decision) -> String {
    format!(
        "{:?} {} {:?} {:?}",
        d.outcome, d.score, d.reasons, d.counters
    )
}

#[test]
fn a_sweep_changes_no_decision() {
    let input = lines(6_000, 3, 25);
    let (mut steady, mut swept) = (engine(), engine());
    for (i, line) in input.iter().enumerate() {
        if i % 1_000 == 999 {
            swept.sweep();
        }
        assert_eq!(
            verdict(&decide(&mut steady, line, i)),
            verdict(&decide(&mut swept, line, i)),
            "line {i}"
        );
    }
}

#[test]
fn restoring_from_decision_records_changes_no_decision() {
    let input = lines(6_000, 5, 25);
    let mut steady = engine();
    let mut before = engine();
    let cut = 3_700;
    let mut records = Vec::new();
    for (i, line) in input[..cut].iter().enumerate() {
        let d = decide(&mut before, line, i);
        let mut out = Vec::new();
        d.write_json(&mut out, Some(line));
        records.push(out);
    }
    let mut restored = engine();
    for r in &records {
        let (decision, intent) = parse_record(r, 1 << 16).unwrap().expect("a decision");
        restored.restore(intent, decision);
    }
    restored.sweep();
    for (i, line) in input.iter().enumerate() {
        let expected = decide(&mut steady, line, i);
        if i >= cut {
            assert_eq!(
                verdict(&decide(&mut restored, line, i)),
                verdict(&expected),
                "line {i}"
            );
        }
    }
}
