//! Decisions and dead letters: the output contract (DESIGN section 2).

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

use crate::intent::InvalidIntent;
use crate::rules::{Outcome, RuleAction};
use crate::window::CounterValue;

/// Where an intent came from.
#[derive(Debug, Clone, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reason {
    pub rule: Arc<str>,
    pub action: RuleAction,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A rule that failed to evaluate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RuleFailure {
    pub rule: Arc<str>,
    pub message: String,
}

/// The decision on one intent, with everything that explains it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub intent_id: String,
    pub agent_id: String,
    pub account_id: String,
    pub action: String,
    pub amount: Option<Decimal>,
    pub currency: Option<String>,
    pub created_at: DateTime<Utc>,
    pub outcome: Outcome,
    pub score: i64,
    pub reasons: Vec<Reason>,
    pub errors: Vec<RuleFailure>,
    /// Every counter available to the intent, in ruleset order, as the rules saw it.
    pub counters: Vec<(Arc<str>, CounterValue)>,
    pub ruleset: Arc<str>,
    pub decided_at: DateTime<Utc>,
    pub source: Source,
    pub duplicate: bool,
}

fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

struct Counters<'a>(&'a [(Arc<str>, CounterValue)]);

impl Serialize for Counters<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (id, value) in self.0 {
            match value {
                CounterValue::Int(i) => map.serialize_entry(&**id, i)?,
                // Sums and maxima are exact decimals: strings, like amounts.
                CounterValue::Num(n) => map.serialize_entry(&**id, &n.to_string())?,
            }
        }
        map.end()
    }
}

impl Serialize for Decision {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Decision", 17)?;
        st.serialize_field("intent_id", &self.intent_id)?;
        st.serialize_field("agent_id", &self.agent_id)?;
        st.serialize_field("account_id", &self.account_id)?;
        st.serialize_field("action", &self.action)?;
        if let Some(amount) = &self.amount {
            st.serialize_field("amount", &amount.to_string())?;
        }
        if let Some(currency) = &self.currency {
            st.serialize_field("currency", currency)?;
        }
        st.serialize_field("created_at", &timestamp(&self.created_at))?;
        st.serialize_field("decision", &self.outcome)?;
        st.serialize_field("score", &self.score)?;
        st.serialize_field("reasons", &self.reasons)?;
        st.serialize_field("errors", &self.errors)?;
        st.serialize_field("counters", &Counters(&self.counters))?;
        st.serialize_field("ruleset", &*self.ruleset)?;
        st.serialize_field("decided_at", &timestamp(&self.decided_at))?;
        st.serialize_field("source", &self.source)?;
        if self.duplicate {
            st.serialize_field("duplicate", &true)?;
        }
        st.end()
    }
}

impl Decision {
    /// Appends the decision as one JSON line.
    pub fn write_json_line(&self, out: &mut Vec<u8>) {
        // Serializing plain strings and numbers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, self);
        out.push(b'\n');
    }
}

/// An invalid intent, kept whole for the dead-letter output.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub error: InvalidIntent,
    pub payload: Vec<u8>,
    pub source: Source,
    pub at: DateTime<Utc>,
}

impl Serialize for DeadLetter {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("DeadLetter", 5)?;
        st.serialize_field("error", &self.error)?;
        match std::str::from_utf8(&self.payload) {
            Ok(text) => st.serialize_field("payload", text)?,
            Err(_) => {
                // Not text: keep every byte, hex-encoded, so nothing is lost.
                let hex: String = self.payload.iter().map(|b| format!("{b:02x}")).collect();
                st.serialize_field("payload_hex", &hex)?;
            }
        }
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
