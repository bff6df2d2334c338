//! The wire format pinned: each record kind is written and compared byte for byte with its
//! golden file in `wire/golden/`, then read back and compared with what was written.
//! `RISKGATE_BLESS=1` rewrites the golden files instead (then read the diff).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use compact_str::CompactString;
use rust_decimal::Decimal;

use super::*;
use crate::decision::{
    CounterValue, DeadLetter, Decision, Outcome, Reason, RuleAction, RuleFailure, Source,
};
use crate::intent::{parse_intent, InvalidIntent, InvalidKind};

fn golden(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/wire/golden")
        .join(name)
}

/// Compares `bytes` with golden file `name`, or writes it when blessing.
fn check(name: &str, bytes: &[u8]) {
    let path = golden(name);
    if std::env::var_os("RISKGATE_BLESS").is_some() {
        std::fs::write(&path, bytes).unwrap();
        return;
    }
    let want = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with RISKGATE_BLESS=1 to write it",
            path.display()
        )
    });
    assert_eq!(
        String::from_utf8_lossy(bytes),
        String::from_utf8_lossy(&want),
        "{name} differs from its golden file; if the change is intended, run with RISKGATE_BLESS=1"
    );
}

fn at(t: &str) -> DateTime<Utc> {
    t.parse().unwrap()
}

/// The intent of the golden decision, as it is on the intents topic.
const INTENT: &str = r#"{"intent_id":"i-42","agent_id":"procurement-bot","account_id":"acct-7","action":"transfer","amount":"12000.00","currency":"EUR","counterparty":{"id":"cp-9","name":"Acme \"North\" GmbH","country":"DE"},"created_at":"2026-11-28T10:00:00+01:00","attributes":{"po":"PO-1"}}"#;

fn decision() -> Decision {
    let intent = parse_intent(INTENT.as_bytes(), 1 << 16).unwrap();
    Decision {
        head: intent.head,
        outcome: Outcome::Hold,
        score: 40,
        thresholds: Some(Thresholds {
            hold_at: Some(50),
            deny_at: Some(90),
        }),
        amount_base: Some(Decimal::new(1200000, 2)),
        base_currency: Some(CompactString::from("EUR")),
        reasons: vec![
            Reason {
                rule: Arc::from("large-transfer"),
                action: RuleAction::Hold,
                score: None,
                message: Some("12000.00 EUR is above 10000".to_owned()),
                approvals: 2,
            },
            Reason {
                rule: Arc::from("new-counterparty"),
                action: RuleAction::Score,
                score: Some(40),
                message: Some("first payment to cp-9\n(tab\there)".to_owned()),
                approvals: 1,
            },
        ],
        errors: vec![RuleFailure {
            rule: Arc::from("fx-check"),
            message: "`amount_base` is unavailable: [fx] has no rate for `EUR`".to_owned(),
        }],
        counters: vec![
            (
                CompactString::from("acct_transfers_1h"),
                CounterValue::Int(3),
            ),
            (
                CompactString::from("acct_outflow_24h"),
                CounterValue::Num(Decimal::new(7094672, 4)),
            ),
        ],
        ruleset: Arc::from("5f1c0a9e2b7d"),
        decided_at: at("2026-11-28T09:00:00.012Z"),
        source: Source::Kafka {
            topic: Arc::from("intents"),
            partition: 3,
            offset: 1042,
        },
        duplicate: false,
    }
}

#[test]
fn a_decision_line_is_pinned() {
    let mut d = decision();
    d.source = Source::File {
        file: Arc::from("examples/intents.jsonl"),
        line: 3,
    };
    let mut out = Vec::new();
    d.write_json_line(&mut out);
    check("decision.jsonl", &out);
}

#[test]
fn a_decision_record_is_pinned_and_reads_back_whole() {
    let mut d = decision();
    d.duplicate = true;
    let mut out = Vec::new();
    d.write_json(&mut out, Some(INTENT.as_bytes()));
    out.push(b'\n');
    check("decision_record.jsonl", &out);
    let (back, intent) = parse_record(&out, 1 << 16).unwrap().expect("a decision");
    assert_eq!(back, d);
    assert_eq!(intent, parse_intent(INTENT.as_bytes(), 1 << 16).unwrap());
    // The record head tells it apart without reading it all.
    let head = read_head(&out).unwrap();
    assert_eq!(head.stage, None);
    assert_eq!(&*head.intent_id, "i-42");
    assert_eq!(head.decision, Some(Outcome::Hold));
    assert!(head.duplicate);
    assert_eq!(head.source_position(), Some((3, 1042)));
}

#[test]
fn dead_letters_are_pinned_text_or_hex() {
    let error = InvalidIntent {
        kind: InvalidKind::InvalidField,
        field: Some("amount".to_owned()),
        message: "`amount` must not be negative, found `-5`".to_owned(),
    };
    let mut out = Vec::new();
    let text = br#"{"intent_id":"i-9","agent_id":"bot","account_id":"acct-1","amount":"-5"}"#;
    DeadLetter::new(
        error.clone(),
        text,
        1 << 16,
        Source::Kafka {
            topic: Arc::from("intents"),
            partition: 0,
            offset: 7,
        },
        at("2026-11-28T10:00:00.5Z"),
    )
    .write_json_line(&mut out);
    DeadLetter::new(
        InvalidIntent {
            kind: InvalidKind::InvalidJson,
            field: None,
            message: "invalid JSON: the payload is not UTF-8 (byte 2 is not valid)".to_owned(),
        },
        &[b'{', 0xff, b'}'],
        1 << 16,
        Source::File {
            file: Arc::from("-"),
            line: 12,
        },
        at("2026-11-28T10:00:01Z"),
    )
    .write_json_line(&mut out);
    // A payload over the copy limit: its first bytes, its size and the hash of all of it.
    let mut big = br#"{"intent_id":"i-10","note":""#.to_vec();
    big.resize(20_000, b'x');
    big.extend_from_slice(b"\"}");
    DeadLetter::new(
        InvalidIntent::too_large(big.len(), 16_384),
        &big,
        16_384,
        Source::File {
            file: Arc::from("-"),
            line: 13,
        },
        at("2026-11-28T10:00:02Z"),
    )
    .write_json_line(&mut out);
    check("dead_letters.jsonl", &out);
    let first: serde_json::Value =
        serde_json::from_slice(out.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(first["error"]["kind"], "invalid_field");
    assert_eq!(first["intent_id"], "i-9");
    assert_eq!(first["account_id"], "acct-1");
    assert_eq!(first["payload"], std::str::from_utf8(text).unwrap());
    let third: serde_json::Value =
        serde_json::from_slice(out.split(|b| *b == b'\n').nth(2).unwrap()).unwrap();
    assert_eq!(third["payload_truncated"], true);
    assert_eq!(third["payload_bytes"], 20_002);
    assert_eq!(
        third["payload"].as_str().unwrap().len(),
        crate::decision::DEAD_LETTER_PAYLOAD_MAX
    );
    assert!(
        third.get("intent_id").is_none(),
        "a payload over the limit is not read for ids"
    );
}

#[test]
fn a_review_record_is_pinned_and_reads_back_whole() {
    let record = ReviewRecord {
        stage: "review".to_owned(),
        intent_id: "i-42".to_owned(),
        key: "acct-7".to_owned(),
        agent_id: "procurement-bot".to_owned(),
        account_id: "acct-7".to_owned(),
        action: "transfer".to_owned(),
        amount: Some("12000.00".to_owned()),
        currency: Some("EUR".to_owned()),
        decision: Outcome::Hold,
        review: Verdict::Approve,
        is_final: false,
        reviewer: "alice".to_owned(),
        comment: "invoice 4711 checked".to_owned(),
        reviewed_at: text::timestamp(&at("2026-11-28T09:05:00Z")),
        approvals: Approvals {
            required: 2,
            approved_by: vec!["alice".to_owned()],
        },
        hold: HoldRef {
            partition: 3,
            offset: 88,
            decided_at: text::timestamp(&at("2026-11-28T09:00:00.012Z")),
            ruleset: "5f1c0a9e2b7d".to_owned(),
        },
    };
    let mut out = record.to_json();
    out.push(b'\n');
    check("review_record.jsonl", &out);
    assert_eq!(read_review(&out).unwrap(), record);
    assert_eq!(read_head(&out).unwrap().stage.as_deref(), Some("review"));
    // A review record is not a decision of the engine: restore skips it.
    assert_eq!(parse_record(&out, 1 << 16).unwrap(), None);
}
