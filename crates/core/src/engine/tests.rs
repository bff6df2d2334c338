use super::*;
use crate::decision::RuleAction;
use crate::intent::{parse_intent, Field, FieldPath};
use std::path::PathBuf;

fn engine(rules: &str) -> Engine {
    engine_with(rules, |_| {})
}

/// An engine whose options are the defaults as `change` leaves them.
fn engine_with(rules: &str, change: impl FnOnce(&mut EngineOptions)) -> Engine {
    let rs = Ruleset::load_sources(&[(PathBuf::from("test.toml"), rules.to_owned())])
        .unwrap_or_else(|e| panic!("ruleset did not load:\n{e}"));
    let mut options = EngineOptions::default();
    change(&mut options);
    Engine::new(Arc::new(rs), options)
}

fn now() -> DateTime<Utc> {
    "2026-11-28T12:00:00Z".parse().unwrap()
}

/// An intent with sensible defaults; `extra` is spliced into the JSON object.
fn intent(id: &str, extra: &str) -> Intent {
    let mut fields: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&format!(
        r#"{{"intent_id":"{id}","agent_id":"bot","account_id":"acct-1","action":"transfer","amount":"100.00","currency":"EUR","created_at":"2026-11-28T10:00:00Z"}}"#
    ))
    .unwrap();
    let extra: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&format!("{{{extra}}}")).unwrap();
    for (k, v) in extra {
        if v.is_null() {
            fields.remove(&k);
        } else {
            fields.insert(k, v);
        }
    }
    parse_intent(serde_json::to_string(&fields).unwrap().as_bytes(), 1 << 16).unwrap()
}

fn source(line: u64) -> Source {
    Source::File {
        file: Arc::from("test"),
        line,
    }
}

fn decide(e: &mut Engine, id: &str, extra: &str) -> Arc<Decision> {
    e.decide(intent(id, extra), source(0), now())
}

/// The `extra` of an intent of `amount` created at `created_at`.
fn amount_at(amount: &str, created_at: &str) -> String {
    format!(r#""amount":"{amount}","created_at":"{created_at}""#)
}

fn matched(d: &Decision) -> Vec<&str> {
    d.reasons.iter().map(|r| &*r.rule).collect()
}

const PRECEDENCE_RULES: &str = r#"
[[rule]]
id = "big"
when = 'amount > 1000'
action = "hold"

[[rule]]
id = "trusted"
when = 'has(counterparty.id) && counterparty.id == "cp-trusted"'
action = "allow"

[[rule]]
id = "sanctioned"
when = 'has(counterparty.country) && counterparty.country == "KP"'
action = "deny"
"#;

/// A big transfer to the trusted counterparty: both `big` and `trusted` match.
const BIG_TO_TRUSTED: &str = r#""amount":"5000","counterparty":{"id":"cp-trusted"}"#;

#[test]
fn nothing_matched_is_allow() {
    let d = decide(&mut engine(PRECEDENCE_RULES), "a", "");
    assert_eq!((d.outcome, d.score), (Outcome::Allow, 0));
    assert!(d.reasons.is_empty() && d.errors.is_empty());
}

#[test]
fn default_precedence_is_deny_then_allow_then_hold() {
    let mut e = engine(PRECEDENCE_RULES);
    let d = decide(&mut e, "a", BIG_TO_TRUSTED);
    assert_eq!(d.outcome, Outcome::Allow, "allow beats hold");
    assert_eq!(
        matched(&d),
        ["big", "trusted"],
        "every matched rule is listed, in ruleset order"
    );
    let d = decide(
        &mut e,
        "b",
        r#""amount":"5000","counterparty":{"id":"cp-trusted","country":"KP"}"#,
    );
    assert_eq!(d.outcome, Outcome::Deny, "deny beats allow");
    assert_eq!(matched(&d), ["big", "trusted", "sanctioned"]);
}

#[test]
fn precedence_can_be_changed() {
    let mut e = engine(&format!(
        "[decision]\nprecedence = [\"deny\", \"hold\", \"allow\"]\n{PRECEDENCE_RULES}"
    ));
    let d = decide(&mut e, "a", BIG_TO_TRUSTED);
    assert_eq!(d.outcome, Outcome::Hold);
}

const SCORING_RULES: &str = r#"
[scoring]
hold_at = 50
deny_at = 90

[[rule]]
id = "forty"
when = 'amount >= 100'
action = "score"
score = 40

[[rule]]
id = "ten"
when = 'amount >= 200'
action = "score"
score = 10

[[rule]]
id = "forty-more"
when = 'amount >= 300'
action = "score"
score = 40

[[rule]]
id = "minus"
when = 'action == "refund"'
action = "score"
score = -45
"#;

#[test]
fn thresholds_turn_scores_into_decisions() {
    let mut e = engine(SCORING_RULES);
    let cases = [
        ("99.99", "transfer", 0, Outcome::Allow),
        ("100", "transfer", 40, Outcome::Allow),
        ("200", "transfer", 50, Outcome::Hold),
        ("300", "transfer", 90, Outcome::Deny),
        ("300", "refund", 45, Outcome::Allow),
    ];
    for (i, (amount, action, score, outcome)) in cases.into_iter().enumerate() {
        let d = decide(
            &mut e,
            &format!("s{i}"),
            &format!(r#""amount":"{amount}","action":"{action}""#),
        );
        assert_eq!((d.score, d.outcome), (score, outcome), "{amount} {action}");
        assert!(d
            .reasons
            .iter()
            .all(|r| r.action == RuleAction::Score && r.score.is_some()));
    }
}

const ERROR_RULES: &str = r#"
[[counter]]
id = "per_cp"
key = ["counterparty.id"]
aggregate = "count"
window = "1h"

[[rule]]
id = "reads-counter"
when = 'counters.per_cp > 5'
action = "deny"

[[rule]]
id = "guarded"
when = 'has(counterparty.id) && counters.per_cp > 5'
action = "deny"
"#;

#[test]
fn a_failing_rule_contributes_on_error() {
    let mut e = engine(ERROR_RULES);
    let d = decide(&mut e, "a", "");
    assert_eq!(d.outcome, Outcome::Hold, "default on_error is hold");
    assert_eq!(d.errors.len(), 1);
    assert_eq!(&*d.errors[0].rule, "reads-counter");
    assert!(
        d.errors[0]
            .message
            .contains("the intent has no `counterparty.id`"),
        "{}",
        d.errors[0].message
    );
    assert!(
        d.counters.is_empty(),
        "an unavailable counter is not listed"
    );

    for (setting, outcome) in [("deny", Outcome::Deny), ("ignore", Outcome::Allow)] {
        let mut e = engine(&format!(
            "[decision]\non_error = \"{setting}\"\n{ERROR_RULES}"
        ));
        assert_eq!(decide(&mut e, "a", "").outcome, outcome, "{setting}");
    }
    // With the key present, the counter is available and nothing fails.
    let d = decide(&mut e, "b", r#""counterparty":{"id":"cp-1"}"#);
    assert_eq!((d.outcome, d.errors.len()), (Outcome::Allow, 0));
    assert_eq!(d.counters, vec![("per_cp".into(), CounterValue::Int(0))]);
}

const VELOCITY_RULES: &str = r#"
[[counter]]
id = "transfers_1h"
key = ["account_id"]
aggregate = "count"
window = "1h"
where = 'action == "transfer"'

[[counter]]
id = "sum_1h"
key = ["account_id"]
aggregate = "sum"
field = "amount"
window = "1h"

[[counter]]
id = "approved_1h"
key = ["account_id"]
aggregate = "count"
window = "1h"
contributes = "allowed"

[[rule]]
id = "velocity"
when = 'counters.transfers_1h >= 3'
action = "hold"

[[rule]]
id = "too-much"
when = 'counters.sum_1h + amount > 1.00'
action = "deny"
message = "{counters.sum_1h} + {amount} {currency} is over 1.00"
"#;

#[test]
fn counters_see_earlier_intents_only_and_respect_where_and_contributes() {
    let at = |m: u32| amount_at("0.10", &format!("2026-11-28T10:{m:02}:00Z"));
    let mut e = engine(VELOCITY_RULES);
    let outcomes: Vec<_> = (0..5)
        .map(|i| decide(&mut e, &format!("v{i}"), &at(i)).outcome)
        .collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Allow,
            Outcome::Allow,
            Outcome::Allow,
            Outcome::Hold,
            Outcome::Hold
        ]
    );
    let d = decide(&mut e, "v5", &at(5));
    let value = |id: &str| d.counters.iter().find(|(c, _)| &**c == id).map(|(_, v)| *v);
    assert_eq!(value("transfers_1h"), Some(CounterValue::Int(5)));
    assert_eq!(
        value("sum_1h"),
        Some(CounterValue::Num(Decimal::new(50, 2)))
    );
    assert_eq!(
        value("approved_1h"),
        Some(CounterValue::Int(3)),
        "held intents do not count as allowed"
    );

    // `where` filters contributions: payments do not count as transfers.
    let mut e = engine(VELOCITY_RULES);
    for i in 0..5 {
        decide(
            &mut e,
            &format!("p{i}"),
            r#""action":"payment","amount":"0.01""#,
        );
    }
    assert_eq!(
        decide(&mut e, "t", r#""amount":"0.01""#).outcome,
        Outcome::Allow
    );
}

#[test]
fn counters_sharing_a_where_each_count_as_their_own_where_says() {
    // `a` is unavailable without a counterparty and `b` takes allowed intents only, so when
    // either skips an intent, `c` still answers the shared `where` for itself.
    let mut e = engine(
        r#"
[[counter]]
id = "a"
key = ["counterparty.id"]
aggregate = "count"
window = "1h"
where = 'action == "transfer"'

[[counter]]
id = "b"
key = ["account_id"]
aggregate = "count"
window = "1h"
where = 'action == "transfer"'
contributes = "allowed"

[[counter]]
id = "c"
key = ["account_id"]
aggregate = "count"
window = "1h"
where = 'action == "transfer"'

[[counter]]
id = "d"
key = ["account_id"]
aggregate = "count"
window = "1h"
where = 'action == "payment"'

[[rule]]
id = "big"
when = 'amount > 1000'
action = "hold"
"#,
    );
    let held = decide(&mut e, "t1", r#""amount":"2000""#);
    assert_eq!(held.outcome, Outcome::Hold);
    decide(&mut e, "p1", r#""action":"payment""#);
    let values = |d: &Decision| -> Vec<(String, CounterValue)> {
        d.counters
            .iter()
            .map(|(id, v)| (id.to_string(), *v))
            .collect()
    };
    let cp = r#""counterparty":{"id":"cp-1"}"#;
    let d = decide(&mut e, "t2", cp);
    let int = |id: &str, n| (id.to_owned(), CounterValue::Int(n));
    assert_eq!(
        values(&d),
        [int("a", 0), int("b", 0), int("c", 1), int("d", 1)]
    );
    let d = decide(&mut e, "t3", cp);
    assert_eq!(
        values(&d),
        [int("a", 1), int("b", 1), int("c", 2), int("d", 1)]
    );
}

#[test]
fn ten_times_ten_cents_is_exactly_one_euro() {
    let mut e = engine(
        VELOCITY_RULES
            .replace("counters.transfers_1h >= 3", "false")
            .as_str(),
    );
    for i in 0..10 {
        let d = decide(
            &mut e,
            &format!("c{i}"),
            r#""action":"payment","amount":"0.10""#,
        );
        assert_eq!(d.outcome, Outcome::Allow, "payment {i}");
    }
    let d = decide(&mut e, "over", r#""action":"payment","amount":"0.01""#);
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(
        d.reasons[0].message.as_deref(),
        Some("1.00 + 0.01 EUR is over 1.00")
    );
}

#[test]
fn windows_slide_in_event_time() {
    let mut e = engine(VELOCITY_RULES);
    for i in 0..3 {
        let created_at = format!("2026-11-28T10:0{i}:00Z");
        decide(&mut e, &format!("w{i}"), &amount_at("0.01", &created_at));
    }
    let d = decide(&mut e, "late", &amount_at("0.01", "2026-11-28T11:01:00Z"));
    assert_eq!(
        d.outcome,
        Outcome::Allow,
        "the 10:00 transfer and its bucket have left the window: {:?}",
        d.counters
    );
    let d = decide(&mut e, "in", &amount_at("0.01", "2026-11-28T10:59:00Z"));
    assert_eq!(d.outcome, Outcome::Hold, "{:?}", d.counters);
}

#[test]
fn denied_intents_do_not_count_by_default() {
    let mut e = engine(VELOCITY_RULES);
    for i in 0..5 {
        let d = decide(&mut e, &format!("d{i}"), r#""amount":"5""#);
        assert_eq!(d.outcome, Outcome::Deny);
    }
    assert_eq!(
        decide(&mut e, "ok", r#""amount":"0.5""#).outcome,
        Outcome::Allow
    );
}

#[test]
fn duplicates_repeat_the_original_and_move_no_counter() {
    let mut e = engine_with(VELOCITY_RULES, |o| o.max_future_skew = None);
    let first = e.decide(intent("dup", r#""amount":"0.40""#), source(1), now());
    // The same intent again, written differently: a duplicate, the original's decision.
    let again = e.decide(intent("dup", r#""amount":"0.4""#), source(2), now());
    assert!(again.duplicate && !first.duplicate);
    assert_eq!(again.source, source(2));
    assert_eq!(
        (again.outcome, &again.reasons, &again.head.amount),
        (first.outcome, &first.reasons, &first.head.amount)
    );
    // The id reused for a different intent of the same account: a conflict, denied.
    let conflict = e.decide(intent("dup", r#""amount":"999""#), source(3), now());
    assert!(conflict.duplicate);
    assert_eq!(conflict.outcome, Outcome::Deny);
    assert_eq!(conflict.reasons.len(), 1);
    assert_eq!(&*conflict.reasons[0].rule, "riskgate:conflict");
    assert!(conflict.counters.is_empty() && conflict.errors.is_empty() && conflict.score == 0);
    let message = conflict.reasons[0].message.as_deref().unwrap();
    assert!(
        message.contains("intent id `dup`")
            && message.contains("created at 2026-11-28T10:00:00.000Z"),
        "the conflict names the original's created_at: {message}"
    );
    // The same id on another account is another intent (ids are scoped by the partition key).
    let elsewhere = e.decide(
        intent("dup", r#""amount":"999","account_id":"other""#),
        source(4),
        now(),
    );
    assert!(!elsewhere.duplicate && !elsewhere.is_system());
    let d = decide(&mut e, "next", r#""amount":"0.10""#);
    assert_eq!(
        d.counters[0],
        ("transfers_1h".into(), CounterValue::Int(1)),
        "neither the duplicate nor the conflict counted"
    );
    // Beyond the horizon the same id is a new intent.
    let later = decide(&mut e, "dup", &amount_at("0.10", "2026-11-29T10:00:01Z"));
    assert!(!later.duplicate && !later.is_system());
}

#[test]
fn fx_converts_exactly_and_fails_closed_without_a_rate() {
    let rules = r#"
[fx]
base = "EUR"
rates = { USD = "0.92", GBP = 1.17 }

[[counter]]
id = "sum_1h"
key = ["account_id"]
aggregate = "sum"
field = "amount"
window = "1h"

[[rule]]
id = "big"
when = 'amount_base > 10000'
action = "hold"
message = "{amount} {currency} is {amount_base} EUR"
"#;
    let mut e = engine(rules);
    let d = decide(&mut e, "usd-under", r#""amount":"10869","currency":"USD""#);
    assert_eq!(d.outcome, Outcome::Allow, "10869 USD is 9999.48 EUR");
    let d = decide(&mut e, "usd-over", r#""amount":"10870","currency":"USD""#);
    assert_eq!(d.outcome, Outcome::Hold);
    // The decision says what the rules compared: the base amount, in the base currency.
    assert_eq!(d.amount_base, Some(Decimal::new(1000040, 2)));
    assert_eq!(d.base_currency.as_deref(), Some("EUR"));
    assert_eq!(
        d.reasons[0].message.as_deref(),
        Some("10870 USD is 10000.40 EUR")
    );
    let d = decide(&mut e, "gbp", r#""amount":"100.00","currency":"GBP""#);
    assert_eq!(
        d.counters[0].1,
        CounterValue::Num(Decimal::new(1999988, 2)),
        "sums add in EUR: 9999.48 + 10000.40"
    );
    let d = decide(&mut e, "jpy", r#""amount":"1","currency":"JPY""#);
    assert_eq!(d.outcome, Outcome::Hold, "no rate: the rule fails closed");
    assert_eq!(
        (d.amount_base, d.base_currency.as_deref()),
        (None, Some("EUR")),
        "no base amount, and the base currency says why: no rate"
    );
    assert!(
        d.errors[0].message.contains("no rate for `JPY`"),
        "{:?}",
        d.errors
    );
    assert_eq!(
        d.counters[0].1,
        CounterValue::Num(Decimal::new(2011688, 2)),
        "a float rate means its text: 100 GBP is 117.00 EUR"
    );
    let d = decide(&mut e, "after-jpy", r#""amount":"1","currency":"EUR""#);
    assert_eq!(
        d.counters[0].1,
        CounterValue::Num(Decimal::new(2011688, 2)),
        "an amount without a base value does not add"
    );
}

#[test]
fn non_monetary_intents_read_zero_and_empty_currency() {
    let mut e = engine("[[rule]]\nid = \"r\"\nwhen = 'amount == 0 && amount_base == 0 && currency == \"\"'\naction = \"hold\"\n");
    let d = decide(
        &mut e,
        "deploy",
        r#""action":"deploy","amount":null,"currency":null"#,
    );
    assert_eq!(d.outcome, Outcome::Hold);
    assert_eq!((d.head.amount, d.head.currency.as_deref()), (None, None));
}

#[test]
fn decisions_serialize_per_the_contract() {
    let mut e = engine(VELOCITY_RULES);
    let d = e.decide(
        intent("ser", r#""amount":"12000.00""#),
        Source::Kafka {
            topic: Arc::from("intents"),
            partition: 3,
            offset: 1042,
        },
        now(),
    );
    let mut line = Vec::new();
    d.write_json_line(&mut line);
    assert_eq!(line.last(), Some(&b'\n'));
    let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(v["intent_id"], "ser");
    assert_eq!(v["amount"], "12000.00", "amounts are exact strings");
    assert_eq!(v["decision"], "deny");
    assert_eq!(v["reasons"][0]["rule"], "too-much");
    assert_eq!(v["reasons"][0]["action"], "deny");
    assert_eq!(v["counters"]["transfers_1h"], 0);
    assert_eq!(v["counters"]["sum_1h"], "0");
    assert_eq!(v["ruleset"].as_str().map(str::len), Some(12));
    assert_eq!(v["decided_at"], "2026-11-28T12:00:00.000Z");
    assert_eq!(
        v["source"],
        serde_json::json!({"topic":"intents","partition":3,"offset":1042})
    );
    assert!(v.get("duplicate").is_none());
}

#[test]
fn far_future_intents_cannot_expire_the_state() {
    let mut e = engine_with(VELOCITY_RULES, |o| o.sweep_every = 1);
    // The clock reads the intents' own time, as it does live.
    let clock: DateTime<Utc> = "2026-11-28T10:00:30Z".parse().unwrap();
    for i in 0..3 {
        e.decide(
            intent(&format!("f{i}"), r#""amount":"0.01""#),
            source(0),
            clock,
        );
    }
    let future = amount_at("0.01", "2099-01-01T00:00:00Z");
    e.decide(intent("future", &future), source(0), clock);
    let d = e.decide(intent("now", r#""amount":"0.01""#), source(0), clock);
    assert_eq!(
        d.outcome,
        Outcome::Hold,
        "the velocity limit survived: {:?}",
        d.counters
    );
}

#[test]
fn backdated_intents_cannot_escape_velocity_limits() {
    let mut e = engine(VELOCITY_RULES);
    let ten = amount_at("0.01", "2026-11-28T10:00:00Z");
    for i in 0..5 {
        decide(&mut e, &format!("now{i}"), &ten);
    }
    // Dated three hours back, where the state no longer reaches: the counter is unavailable,
    // the rule reading it fails and the intent is held (on_error), instead of seeing zero.
    let d = decide(&mut e, "old", &amount_at("0.01", "2026-11-28T07:00:00Z"));
    assert_eq!(d.outcome, Outcome::Hold, "{d:?}");
    assert!(
        d.errors
            .iter()
            .any(|f| f.message.contains("no longer kept")),
        "{:?}",
        d.errors
    );
    // Within one window back, the state still answers, and counts the five.
    let d = decide(&mut e, "recent", &amount_at("0.01", "2026-11-28T09:30:00Z"));
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    assert_eq!(
        d.counters[0].1,
        CounterValue::Int(0),
        "the 10:00 transfers are later than 09:30"
    );
}

#[test]
fn state_is_swept_as_time_moves_on() {
    let mut e = engine_with(VELOCITY_RULES, |o| o.sweep_every = 1);
    for i in 0..50 {
        decide(
            &mut e,
            &format!("k{i}"),
            &format!(r#""account_id":"acct-{i}","amount":"0.01""#),
        );
    }
    assert_eq!(
        e.size().velocity.keys,
        50,
        "three counters keyed by account share one entry per account"
    );
    assert_eq!(e.size().remembered_intents, 50);
    // Sweeps run by themselves, at most once per entry of state: after a hundred decisions
    // two days later, nothing of the first fifty is left.
    let later: DateTime<Utc> = "2026-11-30T10:00:00Z".parse().unwrap();
    let extra = amount_at("0.01", "2026-11-30T10:00:00Z");
    for i in 0..100 {
        e.decide(intent(&format!("later-{i}"), &extra), source(0), later);
    }
    assert_eq!(
        e.size().velocity.keys,
        1,
        "only the new intents' key remains"
    );
    assert_eq!(e.size().remembered_intents, 100, "{:?}", e.size());
}

#[test]
fn the_duplicate_horizon_is_swept_long_before_the_velocity_state() {
    // Default options: the full sweep waits for 65,536 decisions; the duplicate horizon
    // (24 hours) must not keep every intent until then.
    let mut e = engine_with(VELOCITY_RULES, |o| o.max_future_skew = None);
    let start: DateTime<Utc> = "2026-11-28T00:00:00Z".parse().unwrap();
    let at = |i: i64| {
        (start + TimeDelta::minutes(30 * i)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let n = 6_000;
    let mut restored = engine_with(VELOCITY_RULES, |o| o.max_future_skew = None);
    for i in 0..n {
        let extra = format!(
            r#""account_id":"acct-{i}","amount":"0.01","created_at":"{}""#,
            at(i)
        );
        let d = decide(&mut e, &format!("i{i}"), &extra);
        // A restore from these decisions is bounded the same way.
        restored.restore(intent(&format!("i{i}"), &extra), (*d).clone());
    }
    assert!(
        restored.size().remembered_intents <= 1_024 + 48,
        "a restore grew the duplicate horizon to {:?}",
        restored.size()
    );
    // 48 intents are live (24 hours at one per 30 minutes); sweeps run whenever as many
    // decisions as were left by the last one (at least 1,024) have been made.
    let size = e.size();
    assert!(
        size.remembered_intents <= 1_024 + 48,
        "the duplicate horizon grew to {size:?}"
    );
    assert_eq!(
        size.velocity.keys, n as usize,
        "the velocity state waits for its own sweep"
    );
    // What is within the horizon is still a duplicate.
    let again = format!(
        r#""account_id":"acct-{}","amount":"0.01","created_at":"{}""#,
        n - 3,
        at(n - 3)
    );
    assert!(decide(&mut e, &format!("i{}", n - 3), &again).duplicate);
}

#[test]
fn when_sweeps_run_changes_no_duplicate() {
    let sweeping = |every: u64| {
        engine_with(VELOCITY_RULES, |o| {
            o.sweep_every = every;
            o.max_future_skew = None;
        })
    };
    // One engine sweeps after every decision, the other not before 65,536 of them.
    for mut e in [sweeping(1), sweeping(65_536)] {
        let old = &amount_at("0.01", "2026-11-28T10:00:00Z");
        assert!(!decide(&mut e, "old", old).duplicate);
        decide(&mut e, "a", &amount_at("0.01", "2026-11-29T09:00:00Z"));
        assert!(
            decide(&mut e, "old", old).duplicate,
            "23 hours behind the watermark: within the horizon"
        );
        decide(&mut e, "b", &amount_at("0.01", "2026-11-29T16:00:00Z"));
        assert!(
            !decide(&mut e, "old", old).duplicate,
            "30 hours behind the watermark: forgotten, swept or not"
        );
    }
}

#[test]
fn hold_reasons_carry_the_approvals_their_rule_asks_for() {
    let mut e = engine(
        "[[rule]]\nid = \"big\"\nwhen = 'amount > 100'\naction = \"hold\"\napprovals = 2\n\n[[rule]]\nid = \"any\"\nwhen = 'amount > 1'\naction = \"hold\"\n",
    );
    let d = decide(&mut e, "two", r#""amount":"500""#);
    assert_eq!(
        d.reasons.iter().map(|r| r.approvals).collect::<Vec<_>>(),
        [2, 1]
    );
    let mut line = Vec::new();
    d.write_json(&mut line, Some(br#"{"intent_id":"two","agent_id":"a","account_id":"acct-1","action":"transfer","amount":"500","currency":"EUR","created_at":"2026-11-28T10:00:00Z"}"#));
    let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
    assert_eq!(v["reasons"][0]["approvals"], 2);
    assert!(
        v["reasons"][1].get("approvals").is_none(),
        "one approval, the default, is not written"
    );
    let (back, _) = crate::wire::parse_record(&line, 65536).unwrap().unwrap();
    assert_eq!(back.reasons, d.reasons);
}

/// The shape every system decision has: deny, one `riskgate:*` reason, nothing else.
fn assert_system(d: &Decision, rule: &str) {
    assert_eq!(d.outcome, Outcome::Deny, "{d:?}");
    assert_eq!(matched(d), [rule], "{d:?}");
    assert!(d.is_system());
    assert_eq!(d.score, 0);
    assert!(d.counters.is_empty() && d.errors.is_empty(), "{d:?}");
    assert!(d.reasons[0]
        .message
        .as_deref()
        .is_some_and(|m| !m.is_empty()));
}

#[test]
fn a_stale_intent_is_denied_and_changes_nothing() {
    let mut e = engine_with(VELOCITY_RULES, |o| o.max_future_skew = None);
    let newest = amount_at("1", "2026-11-29T12:00:00Z");
    assert!(!decide(&mut e, "new", &newest).is_system());
    // Exactly one horizon (24 h) behind the watermark is still checked against the
    // remembered intents ("more than the horizon" is strict) ...
    let edge = decide(&mut e, "edge", &amount_at("1", "2026-11-28T12:00:00Z"));
    assert!(!edge.is_system(), "{edge:?}");
    // ... a nanosecond more is stale.
    let old = &amount_at("1", "2026-11-28T11:59:59.999999999Z");
    let stale = decide(&mut e, "old", old);
    assert_system(&stale, "riskgate:stale");
    // It was not remembered and moved no counter: the same intent again is stale again, not
    // a duplicate, and the next intent sees only the two earlier transfers.
    assert_system(&decide(&mut e, "old", old), "riskgate:stale");
    let next = decide(&mut e, "next", &amount_at("1", "2026-11-29T12:00:01Z"));
    assert_eq!(
        next.counters[0],
        ("transfers_1h".into(), CounterValue::Int(1))
    );
    // An allowed intent sent again a day after its watermark moved on is never decided again.
    let mut e = engine_with(VELOCITY_RULES, |o| o.max_future_skew = None);
    let pay = &amount_at("1", "2026-11-28T10:00:00Z");
    let first = decide(&mut e, "pay", pay);
    assert_eq!(first.outcome, Outcome::Allow);
    decide(&mut e, "later", &amount_at("1", "2026-11-29T10:00:01Z"));
    let replayed = decide(&mut e, "pay", pay);
    assert_system(&replayed, "riskgate:stale");
}

#[test]
fn a_future_intent_is_denied_only_with_a_skew_limit() {
    let mut e = engine(VELOCITY_RULES);
    // now() is 2026-11-28T12:00:00Z; the default skew is 5 minutes.
    let ahead = decide(
        &mut e,
        "f",
        r#""created_at":"2026-11-28T12:05:00.000000001Z""#,
    );
    assert_system(&ahead, "riskgate:future");
    let at_the_limit = decide(&mut e, "g", r#""created_at":"2026-11-28T12:05:00Z""#);
    assert!(!at_the_limit.is_system());
    // The future intent did not move the watermark: an intent a day before it is not stale.
    let earlier = decide(&mut e, "h", r#""created_at":"2026-11-27T12:10:00Z""#);
    assert!(!earlier.is_system(), "{earlier:?}");
    let mut replay = engine_with(VELOCITY_RULES, |o| o.max_future_skew = None);
    assert!(!decide(&mut replay, "f", r#""created_at":"2027-01-01T00:00:00Z""#).is_system());
}

#[test]
fn a_record_keyed_otherwise_than_its_partition_key_is_misrouted() {
    let mut e = engine(VELOCITY_RULES);
    let payload = br#"{"intent_id":"k","agent_id":"bot","account_id":"acct-1","action":"transfer","amount":"1","currency":"EUR","created_at":"2026-11-28T12:00:00Z"}"#;
    let run = |e: &mut Engine, key: RecordKey<'_>| match e.process(
        payload,
        1 << 16,
        key,
        source(1),
        Clock::At(now()),
    ) {
        Processed::Decided(d) => d,
        Processed::Invalid(l) => panic!("{l:?}"),
    };
    assert_system(&run(&mut e, RecordKey::Kafka(None)), "riskgate:misrouted");
    assert_system(
        &run(&mut e, RecordKey::Kafka(Some(b"acct-2"))),
        "riskgate:misrouted",
    );
    // Neither was remembered: the rightly keyed record is decided, not a duplicate.
    let d = run(&mut e, RecordKey::Kafka(Some(b"acct-1")));
    assert!(!d.is_system() && !d.duplicate, "{d:?}");
    assert!(!run(&mut e, RecordKey::Unchecked).is_system());
    // Another partition key: the record's key must then be that field.
    let mut by_agent = engine_with("", |o| o.partition_key = FieldPath::Field(Field::AgentId));
    assert_system(
        &run(&mut by_agent, RecordKey::Kafka(Some(b"acct-1"))),
        "riskgate:misrouted",
    );
    assert!(!run(&mut by_agent, RecordKey::Kafka(Some(b"bot"))).is_system());
    // A huge key is quoted by its first bytes and its size: no key makes a decision too
    // large to publish.
    let huge = vec![0xffu8; 500_000];
    let d = run(&mut e, RecordKey::Kafka(Some(&huge)));
    assert_system(&d, "riskgate:misrouted");
    let message = d.reasons[0].message.as_deref().unwrap();
    assert!(message.contains("(500000 bytes)"), "{message}");
    assert!(message.len() < 1_000, "{} bytes", message.len());
}

#[test]
fn system_decisions_are_not_restored() {
    let mut e = engine(VELOCITY_RULES);
    let stale_looking = decide(&mut e, "f", r#""created_at":"2026-11-28T13:00:00Z""#);
    assert!(stale_looking.is_system());
    let mut restored = engine(VELOCITY_RULES);
    restored.restore(
        intent("f", r#""created_at":"2026-11-28T13:00:00Z""#),
        (*stale_looking).clone(),
    );
    assert_eq!(restored.size().remembered_intents, 0);
    assert_eq!(restored.size().velocity.keys, 0);
}

#[test]
fn decisions_carry_thresholds_and_base_amounts_only_where_they_explain_something() {
    let scored = r#"
[scoring]
hold_at = 50

[[rule]]
id = "night"
when = 'amount > 100'
action = "score"
score = 60
"#;
    let mut e = engine(scored);
    let d = decide(&mut e, "big", r#""amount":"101""#);
    assert_eq!((d.outcome, d.score), (Outcome::Hold, 60));
    assert_eq!(
        d.thresholds,
        Some(crate::decision::Thresholds {
            hold_at: Some(50),
            deny_at: None
        })
    );
    let d = decide(&mut e, "small", r#""amount":"99""#);
    assert_eq!(
        d.thresholds, None,
        "a score of 0 was measured against nothing"
    );
    // Without [fx] the amount compares as it is: no base amount, no base currency.
    assert_eq!((d.amount_base, d.base_currency.as_deref()), (None, None));
    // A system decision runs no rule: neither.
    let stale = decide(&mut e, "old", &amount_at("101", "2026-11-20T10:00:00Z"));
    assert!(stale.is_system());
    assert_eq!((stale.thresholds, stale.amount_base), (None, None));
}
