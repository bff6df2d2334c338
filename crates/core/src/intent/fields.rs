//! The names of an intent's fields, written once: the parser, the conditions, counter keys
//! and the decisions all refer to a field through these.

use std::borrow::Cow;

use rust_decimal::Decimal;
use serde_json::Value as Json;

use super::Intent;

/// A top-level field of an intent, in documentation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    IntentId,
    AgentId,
    AccountId,
    Action,
    Amount,
    Currency,
    Counterparty,
    CreatedAt,
    Attributes,
}

impl Field {
    pub const ALL: [Field; 9] = [
        Field::IntentId,
        Field::AgentId,
        Field::AccountId,
        Field::Action,
        Field::Amount,
        Field::Currency,
        Field::Counterparty,
        Field::CreatedAt,
        Field::Attributes,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Field::IntentId => "intent_id",
            Field::AgentId => "agent_id",
            Field::AccountId => "account_id",
            Field::Action => "action",
            Field::Amount => "amount",
            Field::Currency => "currency",
            Field::Counterparty => "counterparty",
            Field::CreatedAt => "created_at",
            Field::Attributes => "attributes",
        }
    }

    /// The field called `name` (one `match`: a jump on the length, then one comparison).
    pub fn named(name: &str) -> Option<Field> {
        Some(match name {
            "intent_id" => Field::IntentId,
            "agent_id" => Field::AgentId,
            "account_id" => Field::AccountId,
            "action" => Field::Action,
            "amount" => Field::Amount,
            "currency" => Field::Currency,
            "counterparty" => Field::Counterparty,
            "created_at" => Field::CreatedAt,
            "attributes" => Field::Attributes,
            _ => return None,
        })
    }

    /// The value of a string field (`intent_id`, `agent_id`, `account_id`, `action`,
    /// `currency`); `None` for the others, and for an absent currency.
    pub fn text(self, intent: &Intent) -> Option<&str> {
        let h = &intent.head;
        match self {
            Field::IntentId => Some(&h.intent_id),
            Field::AgentId => Some(&h.agent_id),
            Field::AccountId => Some(&h.account_id),
            Field::Action => Some(&h.action),
            Field::Currency => h.currency.as_deref(),
            _ => None,
        }
    }
}

/// A field of an intent's `counterparty`, in documentation order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CpField {
    Id,
    Name,
    Country,
    Account,
}

impl CpField {
    pub const ALL: [CpField; 4] = [
        CpField::Id,
        CpField::Name,
        CpField::Country,
        CpField::Account,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            CpField::Id => "id",
            CpField::Name => "name",
            CpField::Country => "country",
            CpField::Account => "account",
        }
    }

    /// The field's dotted path from the intent (`counterparty.id`).
    pub const fn path(self) -> &'static str {
        match self {
            CpField::Id => "counterparty.id",
            CpField::Name => "counterparty.name",
            CpField::Country => "counterparty.country",
            CpField::Account => "counterparty.account",
        }
    }

    pub fn named(name: &str) -> Option<CpField> {
        Some(match name {
            "id" => CpField::Id,
            "name" => CpField::Name,
            "country" => CpField::Country,
            "account" => CpField::Account,
            _ => return None,
        })
    }
}

/// A path into an intent, as counter keys and fields name it: `account_id`,
/// `counterparty.id`, `attributes.merchant.mcc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldPath {
    /// A top-level scalar field: `intent_id`, `agent_id`, `account_id`, `action`,
    /// `currency` or `amount`.
    Field(Field),
    Counterparty(CpField),
    /// A path into `attributes`, one key per part.
    Attribute(Vec<String>),
}

impl FieldPath {
    /// The path written as `text`, when it names a field a key or a counter can use.
    pub fn parse(text: &str) -> Option<FieldPath> {
        if let Some(field) = text.strip_prefix("counterparty.") {
            return CpField::named(field).map(FieldPath::Counterparty);
        }
        if let Some(rest) = text.strip_prefix("attributes.") {
            let parts: Vec<String> = rest.split('.').map(str::to_owned).collect();
            return (!parts.iter().any(String::is_empty)).then_some(FieldPath::Attribute(parts));
        }
        match Field::named(text)? {
            f @ (Field::IntentId
            | Field::AgentId
            | Field::AccountId
            | Field::Action
            | Field::Currency
            | Field::Amount) => Some(FieldPath::Field(f)),
            Field::Counterparty | Field::CreatedAt | Field::Attributes => None,
        }
    }

    /// The value at this path as key text, `None` when the intent lacks it.
    pub fn text<'a>(&self, intent: &'a Intent) -> Option<Cow<'a, str>> {
        match self {
            FieldPath::Field(Field::Amount) => intent
                .head
                .amount
                .map(|a| Cow::Owned(a.normalize().to_string())),
            FieldPath::Field(f) => f.text(intent).map(Cow::Borrowed),
            FieldPath::Counterparty(f) => intent
                .counterparty
                .as_ref()
                .and_then(|cp| cp.get(*f))
                .map(Cow::Borrowed),
            FieldPath::Attribute(_) => match self.json(intent)? {
                Json::Null => None,
                Json::String(s) => Some(Cow::Borrowed(s)),
                Json::Number(n) => Some(match json_decimal(n) {
                    Some(d) => Cow::Owned(d.normalize().to_string()),
                    None => Cow::Borrowed(n.as_str()),
                }),
                other => Some(Cow::Owned(other.to_string())),
            },
        }
    }

    /// The JSON value at an `attributes` path.
    pub fn json<'a>(&self, intent: &'a Intent) -> Option<&'a Json> {
        let FieldPath::Attribute(parts) = self else {
            return None;
        };
        let mut map = intent.attributes.as_ref()?;
        let (last, walk) = parts.split_last()?;
        for p in walk {
            map = map.get(p)?.as_object()?;
        }
        map.get(last)
    }
}

/// The exact decimal a JSON number's text stands for (`1e3` is 1000), if it fits.
pub fn json_decimal(n: &serde_json::Number) -> Option<Decimal> {
    let text = n.as_str();
    if text.contains(['e', 'E']) {
        Decimal::from_scientific(text).ok()
    } else {
        Decimal::from_str_exact(text).ok()
    }
}

impl std::fmt::Display for FieldPath {
    /// The path as a ruleset or a configuration writes it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldPath::Field(field) => f.write_str(field.name()),
            FieldPath::Counterparty(field) => f.write_str(field.path()),
            FieldPath::Attribute(parts) => write!(f, "attributes.{}", parts.join(".")),
        }
    }
}
