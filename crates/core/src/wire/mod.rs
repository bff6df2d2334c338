//! The decisions topic's format, in one place: how decisions, dead letters and review records
//! are written, and how a record of the decisions topic is read back
//! ([docs/design.md](../../../../docs/design.md#2-data-contracts)).
//!
//! The golden files in `wire/golden/` pin the bytes; `RISKGATE_BLESS=1 cargo test -p
//! riskgate-core wire` rewrites them after an intended change (then read the diff).

mod review;
pub mod text;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use compact_str::CompactString;
use rust_decimal::Decimal;
use serde::de::{Error as _, MapAccess, Visitor};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::decision::{
    CounterValue, DeadLetter, Decision, Outcome, Reason, RuleFailure, Source, Thresholds,
};
use crate::intent::{parse_intent, Intent};
pub use review::{Approvals, HoldRef, ReviewRecord, Verdict};
use text::{array, timestamp, Writer};

impl Decision {
    /// Appends the decision as one JSON line.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        self.write_json(out, None);
        out.push(b'\n');
    }

    /// Appends the decision as one JSON object; with `intent`, the intent's original JSON
    /// (already validated) is embedded as field `intent`, so that the record alone is enough
    /// to rebuild velocity state and to replay the decision later. The service writes this.
    pub fn write_json(&self, out: &mut Vec<u8>, intent: Option<&[u8]>) {
        let mut w = Writer::object(out);
        let h = &self.head;
        w.str("intent_id", &h.intent_id);
        w.str("agent_id", &h.agent_id);
        w.str("account_id", &h.account_id);
        w.str("action", &h.action);
        if let Some(amount) = &h.amount {
            w.decimal("amount", amount);
        }
        if let Some(currency) = &h.currency {
            w.str("currency", currency);
        }
        if let Some(amount_base) = &self.amount_base {
            w.decimal("amount_base", amount_base);
        }
        if let Some(base) = &self.base_currency {
            w.str("base_currency", base);
        }
        w.time("created_at", &h.created_at);
        w.str("decision", self.outcome.as_str());
        w.int("score", self.score);
        if let Some(t) = &self.thresholds {
            let mut o = Writer::object(w.key("thresholds"));
            if let Some(at) = t.hold_at {
                o.int("hold_at", at);
            }
            if let Some(at) = t.deny_at {
                o.int("deny_at", at);
            }
            let _ = o.end();
        }
        array(w.key("reasons"), &self.reasons, |o, r| {
            o.str("rule", &r.rule);
            o.str("action", r.action.as_str());
            if let Some(score) = r.score {
                o.int("score", score);
            }
            if let Some(message) = &r.message {
                o.str("message", message);
            }
            if r.approvals > 1 {
                o.int("approvals", i64::from(r.approvals));
            }
        });
        array(w.key("errors"), &self.errors, |o, e| {
            o.str("rule", &e.rule);
            o.str("message", &e.message);
        });
        let out = w.key("counters");
        let mut o = Writer::object(out);
        for (id, value) in &self.counters {
            match value {
                CounterValue::Int(i) => o.int(id, *i),
                // Sums and maxima are exact decimals: strings, like amounts.
                CounterValue::Num(n) => o.decimal(id, n),
            }
        }
        let _ = o.end();
        w.str("ruleset", &self.ruleset);
        w.time("decided_at", &self.decided_at);
        let out = w.key("source");
        let mut o = Writer::object(out);
        match &self.source {
            Source::Kafka {
                topic,
                partition,
                offset,
            } => {
                o.str("topic", topic);
                o.int("partition", i64::from(*partition));
                o.int("offset", *offset);
            }
            Source::File { file, line } => {
                o.str("file", file);
                o.int("line", i64::try_from(*line).unwrap_or(i64::MAX));
            }
        }
        let _ = o.end();
        if self.duplicate {
            w.key("duplicate").extend_from_slice(b"true");
        }
        if let Some(intent) = intent {
            w.key("intent").extend_from_slice(intent);
        }
        w.end();
    }
}

/// Why a record of the decisions topic cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("the record has no `intent`")]
    NoIntent,
    #[error("its intent is invalid: {}", .0.message)]
    Intent(crate::intent::InvalidIntent),
    #[error("`decision`, `decided_at` and `source` are required")]
    Incomplete,
    #[error("a review record: {0}")]
    Review(serde_json::Error),
}

/// Reads one record of the decisions topic, as [`Decision::write_json`] wrote it with the
/// intent embedded: the decision and its intent, or `None` for a later record about an
/// intent (a review outcome, `"stage": "review"`), which is not a decision of the engine
/// and never counts towards velocity.
pub fn parse_record(
    bytes: &[u8],
    max_intent_bytes: usize,
) -> Result<Option<(Decision, Intent)>, ReadError> {
    let r: DecisionRecord<'_> = serde_json::from_slice(bytes)?;
    if r.stage.is_some_and(|s| s != "decision") {
        return Ok(None);
    }
    let raw = r.intent.ok_or(ReadError::NoIntent)?;
    let intent = parse_intent(raw.get().as_bytes(), max_intent_bytes).map_err(ReadError::Intent)?;
    let (Some(decided_at), Some(outcome), Some(source)) = (r.decided_at, r.decision, r.source)
    else {
        return Err(ReadError::Incomplete);
    };
    let decision = Decision {
        head: intent.head.clone(),
        outcome,
        score: r.score,
        thresholds: r.thresholds,
        amount_base: r
            .amount_base
            .as_deref()
            .and_then(|a| Decimal::from_str_exact(a).ok()),
        base_currency: r.base_currency.as_deref().map(CompactString::from),
        reasons: r.reasons,
        errors: r.errors,
        counters: r.counters.0,
        ruleset: r.ruleset,
        decided_at,
        source,
        duplicate: r.duplicate,
    };
    Ok(Some((decision, intent)))
}

#[derive(Deserialize)]
struct DecisionRecord<'a> {
    #[serde(default)]
    stage: Option<&'a str>,
    #[serde(borrow)]
    intent: Option<&'a RawValue>,
    decision: Option<Outcome>,
    #[serde(default)]
    score: i64,
    #[serde(default)]
    thresholds: Option<Thresholds>,
    #[serde(default, borrow)]
    amount_base: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    base_currency: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    reasons: Vec<Reason>,
    #[serde(default)]
    errors: Vec<RuleFailure>,
    #[serde(default)]
    counters: Counters,
    #[serde(default = "unknown_ruleset")]
    ruleset: Arc<str>,
    decided_at: Option<DateTime<Utc>>,
    source: Option<Source>,
    #[serde(default)]
    duplicate: bool,
}

fn unknown_ruleset() -> Arc<str> {
    Arc::from("")
}

/// Counter values in the order written: numbers are counts, strings exact decimals.
#[derive(Default)]
struct Counters(Vec<(CompactString, CounterValue)>);

impl<'de> Deserialize<'de> for Counters {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> Visitor<'de> for Visit {
            type Value = Counters;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of counter values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Counters, A::Error> {
                let mut out = Vec::new();
                while let Some((id, value)) = map.next_entry::<String, serde_json::Value>()? {
                    let value = match &value {
                        serde_json::Value::Number(n) => n.as_i64().map(CounterValue::Int),
                        serde_json::Value::String(s) => {
                            Decimal::from_str_exact(s).ok().map(CounterValue::Num)
                        }
                        _ => None,
                    }
                    .ok_or_else(|| A::Error::custom(format!("counter `{id}`: bad value")))?;
                    out.push((CompactString::from(id), value));
                }
                Ok(Counters(out))
            }
        }
        d.deserialize_map(Visit)
    }
}

impl Serialize for DeadLetter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("DeadLetter", 10)?;
        st.serialize_field("error", &self.error)?;
        for (name, id) in [
            ("intent_id", &self.ids.intent_id),
            ("agent_id", &self.ids.agent_id),
            ("account_id", &self.ids.account_id),
        ] {
            if let Some(id) = id {
                st.serialize_field(name, id)?;
            }
        }
        match std::str::from_utf8(&self.payload) {
            Ok(text) => st.serialize_field("payload", text)?,
            Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => {
                // Text cut in the middle of a character: the whole characters.
                let text = std::str::from_utf8(&self.payload[..e.valid_up_to()]).unwrap_or("");
                st.serialize_field("payload", text)?
            }
            Err(_) => {
                // Not text: every byte copied, hex-encoded.
                let hex: String = self.payload.iter().map(|b| format!("{b:02x}")).collect();
                st.serialize_field("payload_hex", &hex)?;
            }
        }
        if self.payload_bytes > self.payload.len() {
            st.serialize_field("payload_truncated", &true)?;
        }
        st.serialize_field("payload_bytes", &self.payload_bytes)?;
        st.serialize_field("payload_sha256", &self.payload_sha256)?;
        st.serialize_field("source", &self.source)?;
        st.serialize_field("at", &timestamp(&self.at))?;
        st.end()
    }
}

impl DeadLetter {
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        let _ = serde_json::to_writer(&mut *out, self);
        out.push(b'\n');
    }
}

/// What every record of the decisions topic starts with: enough to tell decisions, holds and
/// review records apart without reading a whole decision.
#[derive(Debug, Deserialize)]
pub struct RecordHead<'a> {
    /// `None` or `"decision"` for the engine's decisions, `"review"` for review records.
    #[serde(default, borrow)]
    pub stage: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    pub intent_id: std::borrow::Cow<'a, str>,
    #[serde(default)]
    pub decision: Option<Outcome>,
    #[serde(default)]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub duplicate: bool,
    #[serde(default)]
    source: Option<SourceRef>,
    #[serde(default, borrow)]
    reasons: Vec<ReasonRule<'a>>,
}

/// A reason's rule id, as far as telling system decisions apart needs.
#[derive(Debug, Deserialize)]
struct ReasonRule<'a> {
    #[serde(borrow)]
    rule: std::borrow::Cow<'a, str>,
}

/// Where a decision's intent came from, as far as telling two proposals apart needs.
#[derive(Debug, Deserialize)]
struct SourceRef {
    partition: Option<i32>,
    offset: Option<i64>,
}

impl RecordHead<'_> {
    /// The intent's partition and offset, when the record names a Kafka source.
    pub fn source_position(&self) -> Option<(i32, i64)> {
        let s = self.source.as_ref()?;
        Some((s.partition?, s.offset?))
    }

    /// Whether this is a system decision (a reason of rule id `riskgate:*`: misrouted, stale,
    /// future, conflict): the engine ran no rule, and the intent it answers is not the one a
    /// hold of the same id decided.
    pub fn is_system(&self) -> bool {
        self.reasons
            .first()
            .is_some_and(|r| crate::decision::is_system_rule(&r.rule))
    }
}

/// Reads the [`RecordHead`] of a record of the decisions topic.
pub fn read_head(bytes: &[u8]) -> Result<RecordHead<'_>, ReadError> {
    Ok(serde_json::from_slice(bytes)?)
}

/// Reads a review record.
pub fn read_review(bytes: &[u8]) -> Result<ReviewRecord, ReadError> {
    serde_json::from_slice(bytes).map_err(ReadError::Review)
}

impl ReviewRecord {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
