//! Intents: the input contract ([docs/design.md](../../../../docs/design.md#intent)).
//!
//! Parsing never panics and never guesses: a payload is either a valid [`Intent`] or an
//! [`InvalidIntent`] that says which field was wrong and how, ready for the dead-letter output.
//! Amounts go from the JSON text straight to an exact [`Decimal`], never through a float.

mod fields;
mod parse;

use chrono::{DateTime, Utc};
use compact_str::CompactString;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::{Map, Value as Json};

pub use fields::{json_decimal, CpField, Field, FieldPath};
pub use parse::{parse_amount, parse_intent, AmountError};

/// The default limit on the size of one intent payload.
pub const DEFAULT_MAX_BYTES: usize = 64 * 1024;

/// The longest accepted `intent_id`, in characters.
pub const MAX_INTENT_ID_CHARS: usize = 128;

/// A valid intent: a proposed action by a non-human identity.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    /// The fields a decision repeats (it takes them over whole).
    pub head: IntentHead,
    pub counterparty: Option<Counterparty>,
    /// Any extra JSON object the producer wants rules to see.
    pub attributes: Option<Map<String, Json>>,
}

/// Who proposes what, on which account, for how much, when: the part of an intent that its
/// decision repeats.
#[derive(Debug, Clone, PartialEq)]
pub struct IntentHead {
    pub intent_id: CompactString,
    pub agent_id: CompactString,
    pub account_id: CompactString,
    pub action: CompactString,
    /// Exact amount, `>= 0`; `None` for non-monetary actions.
    pub amount: Option<Decimal>,
    /// ISO 4217 code; always present when `amount` is.
    pub currency: Option<CompactString>,
    pub created_at: DateTime<Utc>,
}

/// The other side of the action.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Counterparty {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<CompactString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<CompactString>,
    /// ISO 3166 alpha-2 (two upper-case letters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<CompactString>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account: Option<CompactString>,
}

impl Counterparty {
    /// Field `f`, if the intent has it.
    pub fn get(&self, f: CpField) -> Option<&str> {
        self.slot(f).as_deref()
    }

    fn slot(&self, f: CpField) -> &Option<CompactString> {
        match f {
            CpField::Id => &self.id,
            CpField::Name => &self.name,
            CpField::Country => &self.country,
            CpField::Account => &self.account,
        }
    }

    fn slot_mut(&mut self, f: CpField) -> &mut Option<CompactString> {
        match f {
            CpField::Id => &mut self.id,
            CpField::Name => &mut self.name,
            CpField::Country => &mut self.country,
            CpField::Account => &mut self.account,
        }
    }
}

/// Why a payload is not a valid intent (the dead-letter `kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidKind {
    InvalidJson,
    TooLarge,
    MissingField,
    UnknownField,
    InvalidField,
}

impl InvalidKind {
    pub const ALL: [InvalidKind; 5] = [
        InvalidKind::InvalidJson,
        InvalidKind::TooLarge,
        InvalidKind::MissingField,
        InvalidKind::UnknownField,
        InvalidKind::InvalidField,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InvalidKind::InvalidJson => "invalid_json",
            InvalidKind::TooLarge => "too_large",
            InvalidKind::MissingField => "missing_field",
            InvalidKind::UnknownField => "unknown_field",
            InvalidKind::InvalidField => "invalid_field",
        }
    }
}

/// A precise, human-readable reason why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{message}")]
pub struct InvalidIntent {
    pub kind: InvalidKind,
    /// The offending field as a dotted path (`counterparty.country`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    pub message: String,
}

impl InvalidIntent {
    /// A payload of `bytes` bytes, over the limit of `max_bytes`.
    pub fn too_large(bytes: usize, max_bytes: usize) -> InvalidIntent {
        InvalidIntent::new(
            InvalidKind::TooLarge,
            None,
            format!("payload is {bytes} bytes; the limit is {max_bytes} bytes"),
        )
    }

    fn new(kind: InvalidKind, field: Option<&str>, message: String) -> Self {
        InvalidIntent {
            kind,
            field: field.map(str::to_owned),
            message,
        }
    }

    fn field(field: &str, message: String) -> Self {
        Self::new(InvalidKind::InvalidField, Some(field), message)
    }
}
