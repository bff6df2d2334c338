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

/// The decision on one intent, with everything that explains it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The intent's own fields, taken over whole.
    pub head: IntentHead,
    pub outcome: Outcome,
    pub score: i64,
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

/// An invalid intent, kept whole for the dead-letter output.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub error: InvalidIntent,
    pub payload: Vec<u8>,
    pub source: Source,
    pub at: DateTime<Utc>,
}
