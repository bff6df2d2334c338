//! Parsing and validation of an intent's JSON: never panics, never guesses.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use compact_str::CompactString;
use rust_decimal::Decimal;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value as Json};

use super::{
    Counterparty, CpField, Field, Intent, IntentHead, InvalidIntent, InvalidKind,
    DEFAULT_MAX_BYTES, MAX_INTENT_ID_CHARS,
};
use crate::currency::is_iso4217;

/// Parses and validates one intent payload of at most `max_bytes` bytes.
pub fn parse_intent(payload: &[u8], max_bytes: usize) -> Result<Intent, InvalidIntent> {
    if payload.len() > max_bytes {
        return Err(InvalidIntent::too_large(payload.len(), max_bytes));
    }
    // UTF-8 is checked once, here: serde_json then reads a `str` and checks no string again.
    let text = std::str::from_utf8(payload).map_err(|e| {
        InvalidIntent::new(
            InvalidKind::InvalidJson,
            None,
            format!(
                "invalid JSON: the payload is not UTF-8 (byte {} is not valid)",
                e.valid_up_to() + 1
            ),
        )
    })?;
    let mut raw = Raw::default();
    let mut de = serde_json::Deserializer::from_str(text);
    // The fields are read into `raw` in place: an intent is large, and moving it through the
    // layers of results below would copy it each time.
    let parsed = de
        .deserialize_any(IntentVisitor { raw: &mut raw })
        .and_then(|checked| de.end().map(|()| checked));
    match parsed {
        Ok(checked) => checked.and_then(|()| raw.finish()),
        Err(e) => Err(InvalidIntent::new(
            InvalidKind::InvalidJson,
            None,
            json_message(&e),
        )),
    }
}

fn json_message(e: &serde_json::Error) -> String {
    let text = e.to_string();
    if text.contains("EOF while parsing") && e.line() == 1 && e.column() == 0 {
        return "payload is empty; expected a JSON object".to_owned();
    }
    format!("invalid JSON: {text}")
}

/// Why an amount's text is not an amount.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("must not be negative, found `{0}`")]
    Negative(String),
    #[error(
        "`{0}` is not a plain decimal (digits with an optional decimal point, e.g. `12000.50`)"
    )]
    NotPlain(String),
    #[error(
        "`{0}` cannot be represented exactly (at most 28 decimal places, and its digits read as one integer below 2^96: 28 significant digits always fit)"
    )]
    Inexact(String),
}

/// Parses an exact, non-negative decimal from an amount's JSON text.
///
/// Strings must be plain decimals (digits with an optional point; no sign, no exponent);
/// JSON numbers may use an exponent and are converted exactly.
pub fn parse_amount(text: &str, is_json_number: bool) -> Result<Decimal, AmountError> {
    let plain = |s: &str| {
        let (int, frac) = s.split_once('.').unwrap_or((s, ""));
        !s.is_empty()
            && !int.is_empty()
            && int.bytes().all(|b| b.is_ascii_digit())
            && (!s.contains('.') || !frac.is_empty())
            && frac.bytes().all(|b| b.is_ascii_digit())
    };
    if !is_json_number {
        if text.starts_with('-') {
            return Err(AmountError::Negative(text.to_owned()));
        }
        if !plain(text) {
            return Err(AmountError::NotPlain(text.to_owned()));
        }
    } else if let Some(magnitude) = text.strip_prefix('-') {
        // `-0` and `-0.0` are zero, every other negative number is refused.
        let zero = magnitude.bytes().all(|b| matches!(b, b'0' | b'.'))
            || magnitude
                .split(['e', 'E'])
                .next()
                .is_some_and(|m| m.bytes().all(|b| matches!(b, b'0' | b'.')));
        if !zero {
            return Err(AmountError::Negative(text.to_owned()));
        }
    }
    let parsed = if text.contains(['e', 'E']) {
        Decimal::from_scientific(text)
    } else {
        Decimal::from_str_exact(text)
    };
    let value = parsed.map_err(|_| AmountError::Inexact(text.to_owned()))?;
    Ok(if value.is_sign_negative() {
        Decimal::ZERO
    } else {
        value
    })
}

fn json_type(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn valid_action(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

/// Text read from the payload: borrowed when it holds no escapes, so that reading a key or a
/// value that is only checked (or parsed into a number or a time) allocates nothing.
struct Text;

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// The value of an intent or counterparty field. None of them holds an array or an object, so
/// those are skipped and stand only for their type; strings and numbers keep their text.
enum Scalar<'de> {
    Null,
    Bool,
    Number(Cow<'de, str>),
    Str(Cow<'de, str>),
    Array,
    Object,
}

impl Scalar<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Scalar::Null => "null",
            Scalar::Bool => "a boolean",
            Scalar::Number(_) => "a number",
            Scalar::Str(_) => "a string",
            Scalar::Array => "an array",
            Scalar::Object => "an object",
        }
    }
}

/// Reads a [`Scalar`].
struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Number(Cow::Owned(v.to_string())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::Number(Cow::Owned(v.to_string())))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Number(Cow::Owned(v.to_string())))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Array)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // With serde_json's `arbitrary_precision`, a number arrives as a one-entry map under a
        // private key, its exact text as the value.
        match map.next_key_seed(Text)? {
            Some(key) if key == NUMBER_TOKEN => {
                let text = map.next_value_seed(Text)?;
                number_token::<A>(&text, &mut map)?;
                Ok(Scalar::Number(text))
            }
            Some(_) => {
                map.next_value::<IgnoredAny>()?;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Object)
            }
            None => Ok(Scalar::Object),
        }
    }
}

/// A JSON value as read from the payload: strict about duplicate keys at every depth.
enum Strict {
    Value(Json),
    /// A duplicate key somewhere inside, as a dotted path relative to this value.
    DuplicateKey(String),
}

/// Reads any JSON value, nested ones included (`attributes`).
#[derive(Clone, Copy)]
struct StrictValue;

impl<'de> DeserializeSeed<'de> for StrictValue {
    type Value = Strict;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictValue {
    type Value = Strict;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict::Value(Json::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict::Value(Json::from(v)))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict::Value(Json::from(v)))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
        Ok(Strict::Value(Json::from(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict::Value(Json::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict::Value(Json::String(v)))
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict::Value(Json::Null))
    }
    fn visit_none<E>(self) -> Result<Strict, E> {
        Ok(Strict::Value(Json::Null))
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        let mut dup = None;
        let mut index = 0usize;
        while let Some(item) = seq.next_element_seed(self)? {
            match item {
                Strict::Value(v) => items.push(v),
                Strict::DuplicateKey(path) => {
                    dup.get_or_insert(format!("[{index}].{path}"));
                }
            }
            index += 1;
        }
        Ok(dup.map_or(Strict::Value(Json::Array(items)), Strict::DuplicateKey))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        // With serde_json's `arbitrary_precision`, a number arrives as a one-entry map under a
        // private key; `Json` knows how to read that back, so hand such maps over to it.
        let mut object = Map::new();
        let mut dup: Option<String> = None;
        while let Some(key) = map.next_key_seed(Text)? {
            if key == NUMBER_TOKEN && object.is_empty() {
                let text: String = map.next_value()?;
                number_token::<A>(&text, &mut map)?;
                return Ok(Strict::Value(Json::Number(
                    serde_json::Number::from_string_unchecked(text),
                )));
            }
            let key = key.into_owned();
            match map.next_value_seed(self)? {
                Strict::Value(v) => {
                    if object.contains_key(&key) {
                        dup.get_or_insert(key);
                    } else {
                        object.insert(key, v);
                    }
                }
                Strict::DuplicateKey(path) => {
                    dup.get_or_insert(format!("{key}.{path}"));
                }
            }
        }
        Ok(dup.map_or(Strict::Value(Json::Object(object)), Strict::DuplicateKey))
    }
}

/// Reads an intent's fields into `raw`; says whether they were valid.
struct IntentVisitor<'r> {
    raw: &'r mut Raw,
}

#[derive(Default)]
struct Raw {
    intent_id: Option<CompactString>,
    agent_id: Option<CompactString>,
    account_id: Option<CompactString>,
    action: Option<CompactString>,
    amount: Option<Decimal>,
    currency: Option<CompactString>,
    counterparty: Option<Counterparty>,
    created_at: Option<DateTime<Utc>>,
    attributes: Option<Map<String, Json>>,
}

impl<'de> Visitor<'de> for IntentVisitor<'_> {
    type Value = Result<(), InvalidIntent>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let raw = self.raw;
        let mut seen = [false; Field::ALL.len()];
        let mut error: Option<InvalidIntent> = None;
        while let Some(key) = map.next_key_seed(Text)? {
            if error.is_some() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let Some(field) = Field::named(&key) else {
                map.next_value::<IgnoredAny>()?;
                error = Some(InvalidIntent::new(
                    InvalidKind::UnknownField,
                    Some(&key),
                    format!(
                        "unknown field `{key}`; an intent has only {} (extra data belongs in `attributes`)",
                        backticked(Field::ALL.map(Field::name))
                    ),
                ));
                continue;
            };
            if std::mem::replace(&mut seen[field as usize], true) {
                map.next_value::<IgnoredAny>()?;
                error = Some(InvalidIntent::field(&key, format!("duplicate key `{key}`")));
                continue;
            }
            let result = match field {
                Field::Counterparty => map
                    .next_value_seed(CounterpartySeed)?
                    .map(|cp| raw.counterparty = cp),
                Field::Attributes => match map.next_value_seed(StrictValue)? {
                    Strict::Value(v) => raw.set_attributes(v),
                    Strict::DuplicateKey(path) => Err(InvalidIntent::field(
                        &format!("{key}.{path}"),
                        format!("duplicate key `{key}.{path}`"),
                    )),
                },
                _ => raw.set(field, map.next_value_seed(ScalarSeed)?),
            };
            if let Err(e) = result {
                error = Some(e);
            }
        }
        Ok(error.map_or(Ok(()), Err))
    }
}

fn backticked<const N: usize>(names: [&str; N]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn required_string<'de>(field: &str, value: Scalar<'de>) -> Result<Cow<'de, str>, InvalidIntent> {
    match value {
        Scalar::Str(s) if s.is_empty() => Err(InvalidIntent::field(
            field,
            format!("`{field}` must not be empty"),
        )),
        Scalar::Str(s) => Ok(s),
        Scalar::Null => Err(InvalidIntent::new(
            InvalidKind::MissingField,
            Some(field),
            format!("required field `{field}` is null"),
        )),
        other => Err(InvalidIntent::field(
            field,
            format!("`{field}` must be a string, found {}", other.type_name()),
        )),
    }
}

fn optional_string<'de>(
    field: &str,
    value: Scalar<'de>,
) -> Result<Option<Cow<'de, str>>, InvalidIntent> {
    match value {
        Scalar::Null => Ok(None),
        Scalar::Str(s) => Ok(Some(s)),
        other => Err(InvalidIntent::field(
            field,
            format!("`{field}` must be a string, found {}", other.type_name()),
        )),
    }
}

/// Reads `YYYY-MM-DDTHH:MM:SS[.fraction]Z`, the form nearly every producer writes, without
/// the general RFC 3339 parser; `None` for any other text, valid or not, which that parser
/// then reads (other offsets, lower-case letters, leap seconds, more than nine digits).
fn utc_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    let shape = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[b.len() - 1] == b'Z';
    if !shape {
        return None;
    }
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0u32, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let nanos = match &b[19..b.len() - 1] {
        [] => 0,
        [b'.', digits @ ..] if (1..=9).contains(&digits.len()) => {
            number(digits)? * 10u32.pow(9 - digits.len() as u32)
        }
        _ => return None,
    };
    let date = NaiveDate::from_ymd_opt(
        number(&b[0..4])? as i32,
        number(&b[5..7])?,
        number(&b[8..10])?,
    )?;
    let time = NaiveTime::from_hms_nano_opt(
        number(&b[11..13])?,
        number(&b[14..16])?,
        number(&b[17..19])?,
        nanos,
    )?;
    Some(date.and_time(time).and_utc())
}

impl Raw {
    /// Sets a scalar field (any but `counterparty` and `attributes`).
    fn set(&mut self, field: Field, value: Scalar<'_>) -> Result<(), InvalidIntent> {
        let name = field.name();
        match field {
            Field::IntentId => {
                let id = required_string(name, value)?;
                let chars = id.chars().count();
                if chars > MAX_INTENT_ID_CHARS {
                    return Err(InvalidIntent::field(
                        name,
                        format!("`intent_id` is {chars} characters long; at most {MAX_INTENT_ID_CHARS} are allowed"),
                    ));
                }
                self.intent_id = Some(id.into());
            }
            Field::AgentId => self.agent_id = Some(required_string(name, value)?.into()),
            Field::AccountId => self.account_id = Some(required_string(name, value)?.into()),
            Field::Action => {
                let action = required_string(name, value)?;
                if !valid_action(&action) {
                    return Err(InvalidIntent::field(
                        name,
                        format!("`action` `{action}` must be 1 to 64 lower-case letters, digits, `_`, `.` or `-` (e.g. `transfer`)"),
                    ));
                }
                self.action = Some(action.into());
            }
            Field::Amount => {
                self.amount = match value {
                    Scalar::Null => None,
                    Scalar::Str(s) => Some(parse_amount(&s, false)),
                    Scalar::Number(n) => Some(parse_amount(&n, true)),
                    other => {
                        return Err(InvalidIntent::field(
                            name,
                            format!(
                                "`amount` must be a decimal string or number, found {}",
                                other.type_name()
                            ),
                        ))
                    }
                }
                .transpose()
                .map_err(|e| InvalidIntent::field(name, format!("`amount` {e}")))?;
            }
            Field::Currency => {
                let currency = optional_string(name, value)?;
                if let Some(c) = &currency {
                    if !is_iso4217(c) {
                        return Err(InvalidIntent::field(
                            name,
                            format!("`currency` `{c}` is not an ISO 4217 currency code (three upper-case letters, e.g. `EUR`)"),
                        ));
                    }
                }
                self.currency = currency.map(CompactString::from);
            }
            Field::CreatedAt => {
                let text = match value {
                    Scalar::Str(s) => s,
                    Scalar::Null => {
                        return Err(InvalidIntent::new(
                            InvalidKind::MissingField,
                            Some(name),
                            "required field `created_at` is null".to_owned(),
                        ))
                    }
                    other => {
                        return Err(InvalidIntent::field(
                            name,
                            format!(
                                "`created_at` must be an RFC 3339 timestamp string, found {}",
                                other.type_name()
                            ),
                        ))
                    }
                };
                let utc = match utc_timestamp(&text) {
                    Some(utc) => utc,
                    None => DateTime::parse_from_rfc3339(&text)
                        .map_err(|e| {
                            InvalidIntent::field(
                                name,
                                format!("`created_at` `{text}` is not an RFC 3339 timestamp ({e}); example: `2026-11-28T10:00:00Z`"),
                            )
                        })?
                        .with_timezone(&Utc),
                };
                if utc.timestamp_nanos_opt().is_none() {
                    return Err(InvalidIntent::field(
                        name,
                        format!(
                            "`created_at` `{text}` is outside the supported years 1678 to 2261"
                        ),
                    ));
                }
                self.created_at = Some(utc);
            }
            // Read by `CounterpartySeed` and `set_attributes`, never through `set`.
            Field::Counterparty | Field::Attributes => {}
        }
        Ok(())
    }

    fn set_attributes(&mut self, value: Json) -> Result<(), InvalidIntent> {
        self.attributes = match value {
            Json::Null => None,
            Json::Object(o) => Some(o),
            other => {
                return Err(InvalidIntent::field(
                    Field::Attributes.name(),
                    format!(
                        "`attributes` must be an object, found {}",
                        json_type(&other)
                    ),
                ))
            }
        };
        Ok(())
    }

    fn finish(self) -> Result<Intent, InvalidIntent> {
        fn need<T>(v: Option<T>, field: &str) -> Result<T, InvalidIntent> {
            v.ok_or_else(|| {
                InvalidIntent::new(
                    InvalidKind::MissingField,
                    Some(field),
                    format!("required field `{field}` is missing"),
                )
            })
        }
        let intent = Intent {
            head: IntentHead {
                intent_id: need(self.intent_id, "intent_id")?,
                agent_id: need(self.agent_id, "agent_id")?,
                account_id: need(self.account_id, "account_id")?,
                action: need(self.action, "action")?,
                amount: self.amount,
                currency: self.currency,
                created_at: need(self.created_at, "created_at")?,
            },
            counterparty: self.counterparty,
            attributes: self.attributes,
        };
        if intent.head.amount.is_some() && intent.head.currency.is_none() {
            return Err(InvalidIntent::new(
                InvalidKind::MissingField,
                Some("currency"),
                "`currency` is required when `amount` is present".to_owned(),
            ));
        }
        Ok(intent)
    }
}

/// Reads `counterparty` straight into a [`Counterparty`]: `Ok(Err(..))` when it is invalid.
struct CounterpartySeed;

const NUMBER_TOKEN: &str = "$serde_json::private::Number";

/// serde_json's `arbitrary_precision` hands each number over as a one-entry map under
/// [`NUMBER_TOKEN`], its text as the value. A producer can write that map itself (the key
/// may even be escaped), so what arrives so is taken for a number only when it is one entry
/// whose text is a JSON number; anything else is invalid JSON, never a number with text
/// such as `abc`. (A hand-written `{"$serde_json::private::Number": "5"}` still reads as the
/// number 5, which the producer could have written plainly.)
fn number_token<'de, A: MapAccess<'de>>(text: &str, map: &mut A) -> Result<(), A::Error> {
    use serde::de::Error as _;
    let is_number = text
        .bytes()
        .next()
        .is_some_and(|b| b == b'-' || b.is_ascii_digit())
        && text.bytes().last().is_some_and(|b| b.is_ascii_digit())
        && serde_json::from_str::<serde_json::Number>(text).is_ok();
    if !is_number {
        return Err(A::Error::custom(format!(
            "an object under the reserved key `{NUMBER_TOKEN}` is not a number"
        )));
    }
    if map.next_key::<IgnoredAny>()?.is_some() {
        return Err(A::Error::custom(format!(
            "an object with the reserved key `{NUMBER_TOKEN}` and other keys"
        )));
    }
    Ok(())
}

impl<'de> DeserializeSeed<'de> for CounterpartySeed {
    type Value = Result<Option<Counterparty>, InvalidIntent>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn not_an_object(found: &str) -> Result<Option<Counterparty>, InvalidIntent> {
    Err(InvalidIntent::field(
        "counterparty",
        format!("`counterparty` must be an object, found {found}"),
    ))
}

impl<'de> Visitor<'de> for CounterpartySeed {
    type Value = Result<Option<Counterparty>, InvalidIntent>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a counterparty object")
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Ok(None))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(not_an_object("a boolean"))
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(not_an_object("a string"))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(not_an_object("an array"))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut cp = Counterparty::default();
        let mut seen = [false; CpField::ALL.len()];
        let mut error = None;
        while let Some(key) = map.next_key_seed(Text)? {
            if key == NUMBER_TOKEN {
                map.next_value::<IgnoredAny>()?;
                return Ok(not_an_object("a number"));
            }
            if error.is_some() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let Some(field) = CpField::named(&key) else {
                map.next_value::<IgnoredAny>()?;
                let path = format!("counterparty.{key}");
                error = Some(InvalidIntent::new(
                    InvalidKind::UnknownField,
                    Some(&path),
                    format!(
                        "unknown field `{path}`; a counterparty has only {}",
                        backticked(CpField::ALL.map(CpField::name))
                    ),
                ));
                continue;
            };
            let path = field.path();
            if std::mem::replace(&mut seen[field as usize], true) {
                map.next_value::<IgnoredAny>()?;
                error = Some(InvalidIntent::field(
                    path,
                    format!("duplicate key `{path}`"),
                ));
                continue;
            }
            let value = map.next_value_seed(ScalarSeed)?;
            match optional_string(path, value) {
                Ok(v) => *cp.slot_mut(field) = v.map(CompactString::from),
                Err(e) => error = Some(e),
            }
        }
        Ok(match error {
            Some(e) => Err(e),
            None => validate_counterparty(cp).map(Some),
        })
    }
}

fn validate_counterparty(cp: Counterparty) -> Result<Counterparty, InvalidIntent> {
    if cp.id.as_deref() == Some("") {
        return Err(InvalidIntent::field(
            "counterparty.id",
            "`counterparty.id` must not be empty".to_owned(),
        ));
    }
    if let Some(country) = &cp.country {
        if country.len() != 2 || !country.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(InvalidIntent::field(
                "counterparty.country",
                format!("`counterparty.country` `{country}` is not an ISO 3166 alpha-2 code (two upper-case letters, e.g. `DE`)"),
            ));
        }
    }
    Ok(cp)
}

impl std::str::FromStr for Intent {
    type Err = InvalidIntent;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_intent(s.as_bytes(), DEFAULT_MAX_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"{"intent_id":"i-1","agent_id":"bot","account_id":"acct-1","action":"transfer","amount":"12000.50","currency":"EUR","counterparty":{"id":"cp-1","country":"DE"},"created_at":"2026-11-28T10:00:00Z","attributes":{"x":1}}"#;

    fn invalid(payload: &str) -> InvalidIntent {
        match parse_intent(payload.as_bytes(), DEFAULT_MAX_BYTES) {
            Ok(i) => panic!("{payload} parsed as {i:?}"),
            Err(e) => e,
        }
    }

    fn with(field: &str, value: &str) -> String {
        let mut v: serde_json::Map<String, Json> = serde_json::from_str(VALID).unwrap();
        v.remove(field);
        let mut text = serde_json::to_string(&v).unwrap();
        text.pop();
        format!("{text},\"{field}\":{value}}}")
    }

    #[test]
    fn a_hand_written_number_token_is_never_a_number_with_any_text() {
        for value in [
            r#"{"$serde_json::private::Number":"abc"}"#,
            r#"{"\u0024serde_json::private::Number":"1e"}"#,
            r#"{"$serde_json::private::Number":" 5"}"#,
            r#"{"$serde_json::private::Number":"5","x":1}"#,
            r#"{"$serde_json::private::Number":5}"#,
        ] {
            let e = invalid(&with("amount", value));
            assert_eq!(e.kind, InvalidKind::InvalidJson, "{value}: {e:?}");
            let attrs = format!("{{\"x\":{value}}}");
            let e = invalid(&with("attributes", &attrs));
            assert_eq!(e.kind, InvalidKind::InvalidJson, "{attrs}: {e:?}");
        }
        // What serde_json itself would read as the number 5 is the number 5: no way around
        // the amount checks.
        let five = with("amount", r#"{"$serde_json::private::Number":"5"}"#);
        let i: Intent = five.parse().unwrap();
        assert_eq!(i.head.amount, Some(Decimal::new(5, 0)));
    }

    #[test]
    fn a_valid_intent_parses_exactly() {
        let i: Intent = VALID.parse().unwrap();
        assert_eq!(i.head.amount, Some(Decimal::new(1200050, 2)));
        assert_eq!(i.head.amount.unwrap().to_string(), "12000.50");
        assert_eq!(i.counterparty.unwrap().country.as_deref(), Some("DE"));
        assert_eq!(i.head.created_at.to_rfc3339(), "2026-11-28T10:00:00+00:00");
    }

    #[test]
    fn json_numbers_are_exact() {
        for (text, expected) in [
            ("0.1", "0.1"),
            ("10000.01", "10000.01"),
            ("12000.00", "12000.00"),
            ("1e3", "1000"),
            ("1.5E2", "150"),
            (
                "123456789012345678.123456789",
                "123456789012345678.123456789",
            ),
            ("-0", "0"),
        ] {
            let i: Intent = with("amount", text).parse().unwrap();
            assert_eq!(i.head.amount.unwrap().to_string(), expected, "{text}");
        }
    }

    #[test]
    fn offsets_are_accepted_and_normalised() {
        let i: Intent = with("created_at", "\"2026-11-28T11:30:00+01:30\"")
            .parse()
            .unwrap();
        assert_eq!(i.head.created_at.to_rfc3339(), "2026-11-28T10:00:00+00:00");
    }

    #[test]
    fn nulls_mean_absent_for_optional_fields() {
        let i: Intent = with("counterparty", "null").parse().unwrap();
        assert!(i.counterparty.is_none());
        let e = invalid(&with("agent_id", "null"));
        assert_eq!(
            (e.kind, e.field.as_deref()),
            (InvalidKind::MissingField, Some("agent_id"))
        );
    }

    #[test]
    fn field_names_match_their_lists() {
        for (i, f) in Field::ALL.into_iter().enumerate() {
            assert_eq!(Field::named(f.name()).map(|f| f as usize), Some(i), "{f:?}");
            assert_eq!(Field::named(f.name()).map(Field::name), Some(f.name()));
        }
        for (i, f) in CpField::ALL.into_iter().enumerate() {
            assert_eq!(
                CpField::named(f.name()).map(|f| f as usize),
                Some(i),
                "{f:?}"
            );
            assert_eq!(f.path(), format!("counterparty.{}", f.name()));
        }
        assert_eq!(Field::named("intent"), None);
        assert_eq!(CpField::named("ids"), None);
    }

    #[test]
    fn the_common_timestamp_form_reads_as_rfc3339_does() {
        let general = |t: &str| {
            DateTime::parse_from_rfc3339(t)
                .ok()
                .map(|d| d.with_timezone(&Utc))
        };
        let mut texts: Vec<String> = [
            "2026-11-28T10:00:00Z",
            "2026-11-28T10:00:00.5Z",
            "2026-11-28T10:00:00.123456789Z",
            "2024-02-29T23:59:59.999Z",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            // Not the common form: left to the general parser.
            "2026-11-28T10:00:00.1234567891Z",
            "2026-11-28T10:00:00+01:00",
            "2026-11-28t10:00:00z",
            "2016-12-31T23:59:60Z",
            // Invalid either way.
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-31T00:00:00Z",
            "2026-11-28T24:00:00Z",
            "2026-11-28T10:60:00Z",
            "2026-11-28T10:00:00.Z",
            "2026-11-28T1a:00:00Z",
            "2026-11-28 10:00:00Z",
            "+2026-11-28T10:00:00Z",
        ]
        .map(String::from)
        .to_vec();
        // Every day of four years, at a time with every digit position different.
        for day in 0..4 * 366 {
            let d = NaiveDate::from_ymd_opt(2023, 1, 1).unwrap() + chrono::Days::new(day);
            texts.push(format!(
                "{d}T{:02}:{:02}:{:02}.{:03}Z",
                day % 24,
                day % 60,
                (day * 7) % 60,
                day % 1000
            ));
        }
        let mut common = 0;
        for t in &texts {
            if let Some(fast) = utc_timestamp(t) {
                common += 1;
                assert_eq!(Some(fast), general(t), "{t}");
            }
        }
        assert_eq!(common, 6 + 4 * 366, "the common form is recognised");
        for t in &texts {
            let parsed = parse_intent(
                format!(r#"{{"intent_id":"i","agent_id":"a","account_id":"b","action":"transfer","created_at":"{t}"}}"#).as_bytes(),
                DEFAULT_MAX_BYTES,
            );
            // Years outside 1678 to 2261 are refused either way.
            let supported = general(t).filter(|d| d.timestamp_nanos_opt().is_some());
            assert_eq!(parsed.ok().map(|i| i.head.created_at), supported, "{t}");
        }
    }

    #[test]
    fn fields_by_index_are_fields_by_name() {
        let cp = Counterparty {
            id: Some("cp-1".into()),
            name: None,
            country: Some("DE".into()),
            account: Some("DE89".into()),
        };
        let by_name = |name: &str| match name {
            "id" => cp.id.as_deref(),
            "name" => cp.name.as_deref(),
            "country" => cp.country.as_deref(),
            _ => cp.account.as_deref(),
        };
        for f in CpField::ALL {
            assert_eq!(cp.get(f), by_name(f.name()), "{f:?}");
        }
    }

    #[test]
    fn payloads_that_are_not_utf8_are_invalid_json() {
        let mut payload = VALID.as_bytes().to_vec();
        let at = VALID.find("bot").unwrap();
        payload[at] = 0xff;
        let e = parse_intent(&payload, DEFAULT_MAX_BYTES).unwrap_err();
        assert_eq!(e.kind, InvalidKind::InvalidJson);
        assert!(
            e.message.contains(&format!("byte {}", at + 1)),
            "{}",
            e.message
        );
    }

    #[test]
    fn every_kind_of_invalid_input_is_named() {
        let cases: Vec<(String, InvalidKind, Option<&str>, &str)> = vec![
            ("{".into(), InvalidKind::InvalidJson, None, "EOF"),
            ("".into(), InvalidKind::InvalidJson, None, "empty"),
            ("[1]".into(), InvalidKind::InvalidJson, None, "JSON object"),
            (
                format!("{VALID} x"),
                InvalidKind::InvalidJson,
                None,
                "trailing",
            ),
            (
                VALID.replace(",\"agent_id\":\"bot\"", ""),
                InvalidKind::MissingField,
                Some("agent_id"),
                "`agent_id`",
            ),
            (
                with("colour", "\"red\""),
                InvalidKind::UnknownField,
                Some("colour"),
                "`colour`",
            ),
            (
                with("amount", "\"-5\""),
                InvalidKind::InvalidField,
                Some("amount"),
                "negative",
            ),
            (
                with("amount", "-5.5"),
                InvalidKind::InvalidField,
                Some("amount"),
                "negative",
            ),
            (
                with("amount", "\"1e3\""),
                InvalidKind::InvalidField,
                Some("amount"),
                "plain decimal",
            ),
            (
                with("amount", "\"12.\""),
                InvalidKind::InvalidField,
                Some("amount"),
                "plain decimal",
            ),
            (
                with("amount", "true"),
                InvalidKind::InvalidField,
                Some("amount"),
                "a boolean",
            ),
            (
                with("amount", "\"0.12345678901234567890123456789\""),
                InvalidKind::InvalidField,
                Some("amount"),
                "exactly",
            ),
            (
                with("currency", "\"XYZ\""),
                InvalidKind::InvalidField,
                Some("currency"),
                "ISO 4217",
            ),
            (
                with("currency", "null"),
                InvalidKind::MissingField,
                Some("currency"),
                "required when `amount`",
            ),
            (
                with("created_at", "\"yesterday\""),
                InvalidKind::InvalidField,
                Some("created_at"),
                "RFC 3339",
            ),
            (
                with("action", "\"Transfer\""),
                InvalidKind::InvalidField,
                Some("action"),
                "lower-case",
            ),
            (
                with("intent_id", &format!("\"{}\"", "x".repeat(129))),
                InvalidKind::InvalidField,
                Some("intent_id"),
                "129 characters",
            ),
            (
                with("intent_id", "\"\""),
                InvalidKind::InvalidField,
                Some("intent_id"),
                "empty",
            ),
            (
                with("intent_id", "7"),
                InvalidKind::InvalidField,
                Some("intent_id"),
                "a number",
            ),
            (
                with("counterparty", "{\"id\":\"c\",\"iban\":\"x\"}"),
                InvalidKind::UnknownField,
                Some("counterparty.iban"),
                "`counterparty.iban`",
            ),
            (
                with("counterparty", "{\"country\":\"Germany\"}"),
                InvalidKind::InvalidField,
                Some("counterparty.country"),
                "ISO 3166",
            ),
            (
                with("attributes", "[1]"),
                InvalidKind::InvalidField,
                Some("attributes"),
                "an array",
            ),
            (
                format!("{{\"intent_id\":\"a\",{}", &with("intent_id", "\"b\"")[1..]),
                InvalidKind::InvalidField,
                Some("intent_id"),
                "duplicate key",
            ),
            (
                with("attributes", "{\"a\":{\"b\":1,\"b\":2}}"),
                InvalidKind::InvalidField,
                Some("attributes.a.b"),
                "duplicate key",
            ),
        ];
        for (payload, kind, field, needle) in cases {
            let e = invalid(&payload);
            assert_eq!(e.kind, kind, "{payload}: {e:?}");
            assert_eq!(e.field.as_deref(), field, "{payload}: {e:?}");
            assert!(
                e.message.contains(needle),
                "{payload}: `{}` lacks `{needle}`",
                e.message
            );
        }
    }

    #[test]
    fn payloads_over_the_limit_are_too_large() {
        let e = parse_intent(VALID.as_bytes(), 10).unwrap_err();
        assert_eq!(e.kind, InvalidKind::TooLarge);
        assert!(e.message.contains(&format!("{} bytes", VALID.len())));
    }

    #[test]
    fn attributes_keep_exact_numbers() {
        let i: Intent = with("attributes", "{\"rate\":0.1,\"n\":1000}")
            .parse()
            .unwrap();
        let attrs = i.attributes.unwrap();
        assert_eq!(attrs["rate"].to_string(), "0.1");
        assert_eq!(attrs["n"].as_i64(), Some(1000));
    }
}
