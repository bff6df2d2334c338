//! Review records: a person's approval or rejection of a hold, published on the decisions
//! topic after the hold decision.

use serde::{Deserialize, Serialize};

use crate::decision::Outcome;

/// Approve or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Approve,
    Reject,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Approve => "approve",
            Verdict::Reject => "reject",
        }
    }
}

/// What a hold a review record points at was, for the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRef {
    /// Where the hold decision is on the decisions topic.
    pub partition: i32,
    pub offset: i64,
    pub decided_at: String,
    pub ruleset: String,
}

/// Approvals asked for and given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approvals {
    pub required: u8,
    pub approved_by: Vec<String>,
}

/// A review record: published on the decisions topic after the hold decision, same partition,
/// same key ([docs/design.md](../../../../docs/design.md#review-record)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReviewRecord {
    /// Always `"review"`.
    pub stage: String,
    pub intent_id: String,
    /// The hold's partition-key value (its record key): with `intent_id`, what the review is
    /// of, since intent ids are unique per partition-key value only. Records written before
    /// it existed have none; their record key says the same.
    #[serde(default)]
    pub key: String,
    pub agent_id: String,
    pub account_id: String,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// The intent's decision after this record: `allow` once approved, `deny` once rejected,
    /// still `hold` while more approvals are needed.
    pub decision: Outcome,
    pub review: Verdict,
    /// Whether this record ends the review. Readers can rely on the review queue's rule
    /// instead (the first final record wins): it gives the same answer.
    #[serde(rename = "final")]
    pub is_final: bool,
    pub reviewer: String,
    pub comment: String,
    pub reviewed_at: String,
    pub approvals: Approvals,
    pub hold: HoldRef,
}
