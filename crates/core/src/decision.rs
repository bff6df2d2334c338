//! Decisions, dead letters and the values they carry: the output contract
//! ([docs/design.md](../../../docs/design.md#decision)). These are plain data; their bytes on
//! a topic or in a file are written and read in [`crate::wire`].

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use compact_str::CompactString;
use rust_decimal::Decimal;
use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};

use crate::intent::{IntentHead, InvalidIntent};

/// A decision outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Allow,
    Hold,
    Deny,
}

impl Outcome {
    pub const ALL: [Outcome; 3] = [Outcome::Allow, Outcome::Hold, Outcome::Deny];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Hold => "hold",
            Outcome::Deny => "deny",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a matched rule contributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleAction {
    Allow,
    Hold,
    Deny,
    Score,
}

impl RuleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            RuleAction::Allow => "allow",
            RuleAction::Hold => "hold",
            RuleAction::Deny => "deny",
            RuleAction::Score => "score",
        }
    }

    pub fn outcome(self) -> Option<Outcome> {
        match self {
            RuleAction::Allow => Some(Outcome::Allow),
            RuleAction::Hold => Some(Outcome::Hold),
            RuleAction::Deny => Some(Outcome::Deny),
            RuleAction::Score => None,
        }
    }
}

/// A counter's value as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterValue {
    Int(i64),
    Num(Decimal),
}

/// What the rule id of a system decision's reason starts with (rule ids of rulesets cannot
/// contain `:`).
pub const SYSTEM_RULE_PREFIX: &str = "riskgate:";

/// Whether `rule` is the rule id of a system reason (`riskgate:*`).
pub fn is_system_rule(rule: &str) -> bool {
    rule.starts_with(SYSTEM_RULE_PREFIX)
}

/// Why an intent is answered by riskgate itself, before any rule: a system decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SystemReason {
    /// The record's Kafka key is missing or is not the intent's partition-key value.
    Misrouted,
    /// Dated more than the duplicate horizon before the watermark.
    Stale,
    /// Dated more than `max_future_skew` after the clock.
    Future,
    /// The intent id was used, within the horizon, for a different intent.
    Conflict,
}

impl SystemReason {
    pub const ALL: [SystemReason; 4] = [
        SystemReason::Misrouted,
        SystemReason::Stale,
        SystemReason::Future,
        SystemReason::Conflict,
    ];

    /// The reason's rule id on the decision.
    pub fn rule(self) -> &'static str {
        match self {
            SystemReason::Misrouted => "riskgate:misrouted",
            SystemReason::Stale => "riskgate:stale",
            SystemReason::Future => "riskgate:future",
            SystemReason::Conflict => "riskgate:conflict",
        }
    }

    /// The system reason a rule id names, if it names one.
    pub fn of_rule(rule: &str) -> Option<SystemReason> {
        SystemReason::ALL.into_iter().find(|r| r.rule() == rule)
    }

    /// The reason without its `riskgate:` prefix (a metric label).
    pub fn as_str(self) -> &'static str {
        &self.rule()[SYSTEM_RULE_PREFIX.len()..]
    }
}

/// Where an intent came from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Source {
    Kafka {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
    },
    File {
        file: Arc<str>,
        line: u64,
    },
}

impl Serialize for Source {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Source::Kafka {
                topic,
                partition,
                offset,
            } => {
                let mut st = s.serialize_struct("Source", 3)?;
                st.serialize_field("topic", topic)?;
                st.serialize_field("partition", partition)?;
                st.serialize_field("offset", offset)?;
                st.end()
            }
            Source::File { file, line } => {
                let mut st = s.serialize_struct("Source", 2)?;
                st.serialize_field("file", file)?;
                st.serialize_field("line", line)?;
                st.end()
            }
        }
    }
}

/// A matched rule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Reason {
    pub rule: Arc<str>,
    pub action: RuleAction,
    pub score: Option<i64>,
    pub message: Option<String>,
    /// On a hold reason: how many different reviewers must approve (absent means 1).
    #[serde(default = "one")]
    pub approvals: u8,
}

fn one() -> u8 {
    1
}

/// A rule that failed to evaluate.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RuleFailure {
    pub rule: Arc<str>,
    pub message: String,
}

/// The score thresholds a decision was measured against (`[scoring]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Thresholds {
    #[serde(default)]
    pub hold_at: Option<i64>,
    #[serde(default)]
    pub deny_at: Option<i64>,
}

/// The decision on one intent, with everything that explains it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The intent's own fields, taken over whole.
    pub head: IntentHead,
    pub outcome: Outcome,
    pub score: i64,
    /// The score thresholds of the ruleset that decided, when it has `[scoring]` and the
    /// score is not 0: what the score was measured against.
    pub thresholds: Option<Thresholds>,
    /// The amount in the ruleset's base currency, when the ruleset has `[fx]` and the
    /// intent's amount could be converted: what conditions on `amount_base` compared.
    pub amount_base: Option<Decimal>,
    /// The base currency of `[fx]`, on every decision of an intent with an amount when the
    /// ruleset has `[fx]` (so that an absent `amount_base` says "no rate", not "no `[fx]`").
    pub base_currency: Option<CompactString>,
    pub reasons: Vec<Reason>,
    pub errors: Vec<RuleFailure>,
    /// Every counter available to the intent, in ruleset order, as the rules saw it.
    /// Ids are stored inline up to 24 bytes: copying one costs no allocation and no atomic
    /// reference count, and decisions are made and dropped at a high rate.
    pub counters: Vec<(CompactString, CounterValue)>,
    pub ruleset: Arc<str>,
    pub decided_at: DateTime<Utc>,
    pub source: Source,
    pub duplicate: bool,
}

impl Decision {
    /// Whether riskgate itself answered, before any rule (a `riskgate:*` reason): such a
    /// decision contributes to no counter and is not remembered.
    pub fn is_system(&self) -> bool {
        self.reasons
            .first()
            .is_some_and(|r| is_system_rule(&r.rule))
    }
}

/// The most bytes of an invalid payload a dead letter copies: with its hex form for
/// payloads that are not text, a dead letter stays far below any producer's or broker's
/// record limit (1 MB by default), so it can always be written.
pub const DEAD_LETTER_PAYLOAD_MAX: usize = 8 * 1024;

/// An invalid intent, for the dead-letter output: why, the payload (its first
/// [`DEAD_LETTER_PAYLOAD_MAX`] bytes, its size and the SHA-256 of all of it) and the ids it
/// names, when they could be read.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub error: InvalidIntent,
    /// The payload's first bytes: all of it unless `payload_bytes` says it was longer.
    pub payload: Vec<u8>,
    /// The whole payload's size.
    pub payload_bytes: usize,
    /// The whole payload's SHA-256, in hex.
    pub payload_sha256: String,
    /// `intent_id`, `agent_id` and `account_id` as strings at the top of the payload, when it
    /// is JSON they could be read from.
    pub ids: Ids,
    pub source: Source,
    pub at: DateTime<Utc>,
}

/// The identifiers of an invalid intent, as far as they could be read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct Ids {
    #[serde(default, deserialize_with = "lenient_string")]
    pub intent_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub agent_id: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub account_id: Option<String>,
}

/// A string, or nothing for a value of another type.
fn lenient_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    })
}

impl DeadLetter {
    /// The dead letter of a payload of `bytes` bytes whose first bytes, `prefix`, are all
    /// that was kept (a replay line too long to hold), with the SHA-256 of all of it.
    pub fn of_prefix(
        error: InvalidIntent,
        prefix: &[u8],
        bytes: usize,
        sha256: String,
        source: Source,
        at: DateTime<Utc>,
    ) -> DeadLetter {
        DeadLetter {
            error,
            payload: prefix[..prefix.len().min(DEAD_LETTER_PAYLOAD_MAX)].to_vec(),
            payload_bytes: bytes,
            payload_sha256: sha256,
            ids: Ids::default(),
            source,
            at,
        }
    }

    /// The dead letter of `payload`, refused for `error`. `max_bytes` is the intent size
    /// limit: a payload over it is not read for ids.
    pub fn new(
        error: InvalidIntent,
        payload: &[u8],
        max_bytes: usize,
        source: Source,
        at: DateTime<Utc>,
    ) -> DeadLetter {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(payload);
        let mut hex = String::with_capacity(64);
        for b in digest {
            use std::fmt::Write;
            let _ = write!(hex, "{b:02x}");
        }
        let ids = if payload.len() <= max_bytes {
            serde_json::from_slice(payload).unwrap_or_default()
        } else {
            Ids::default()
        };
        DeadLetter {
            error,
            payload: payload[..payload.len().min(DEAD_LETTER_PAYLOAD_MAX)].to_vec(),
            payload_bytes: payload.len(),
            payload_sha256: hex,
            ids,
            source,
            at,
        }
    }
}
