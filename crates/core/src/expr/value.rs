//! Runtime values of conditions: exact decimals, borrowed strings, no floats.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::rc::Rc;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use rust_decimal::Decimal;
use serde_json::{Map, Value as Json};

use crate::intent::{json_decimal, Counterparty, CpField};

/// An evaluation failure; the message is shown in the decision's `errors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvalError(pub Cow<'static, str>);

impl EvalError {
    pub fn new(message: impl Into<Cow<'static, str>>) -> Self {
        EvalError(message.into())
    }
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub type EvalResult<'a> = Result<Value<'a>, EvalError>;

/// A value a condition computes with. Numbers are `Int` (counts, scores, int literals) or
/// `Num` (exact decimals: amounts, sums, double literals); the two compare and mix exactly.
#[derive(Debug, Clone)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Num(Decimal),
    Str(Cow<'a, str>),
    Time(DateTime<Utc>),
    Dur(TimeDelta),
    List(List<'a>),
    Map(MapValue<'a>),
}

/// A list: borrowed from the intent's JSON, a ruleset list, or built by the condition.
#[derive(Debug, Clone)]
pub enum List<'a> {
    Json(&'a [Json]),
    Const(&'a ConstList),
    Owned(Rc<Vec<Value<'a>>>),
}

/// A map: the intent's `attributes` (or a JSON object in them), its counterparty, or built.
#[derive(Debug, Clone)]
pub enum MapValue<'a> {
    Json(&'a Map<String, Json>),
    Counterparty(Option<&'a Counterparty>),
    Owned(Rc<Vec<(Value<'a>, Value<'a>)>>),
}

/// A constant held by a compiled ruleset (literals, list items): `Send + Sync`, unlike
/// [`Value`], which may borrow from an intent.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    Num(Decimal),
    Str(Box<str>),
    Time(DateTime<Utc>),
    Dur(TimeDelta),
}

impl Scalar {
    pub fn value(&self) -> Value<'_> {
        match self {
            Scalar::Null => Value::Null,
            Scalar::Bool(b) => Value::Bool(*b),
            Scalar::Int(i) => Value::Int(*i),
            Scalar::Num(n) => Value::Num(*n),
            Scalar::Str(s) => Value::Str(Cow::Borrowed(s)),
            Scalar::Time(t) => Value::Time(*t),
            Scalar::Dur(d) => Value::Dur(*d),
        }
    }
}

/// A `[lists]` entry, with a hash set for fast membership of strings.
#[derive(Debug, Clone)]
pub struct ConstList {
    pub items: Vec<Scalar>,
    strings: HashSet<Box<str>, ahash::RandomState>,
}

impl ConstList {
    pub fn new(items: Vec<Scalar>) -> Self {
        let strings = items
            .iter()
            .filter_map(|v| match v {
                Scalar::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        ConstList { items, strings }
    }

    pub fn contains(&self, needle: &Value<'_>) -> bool {
        match needle {
            Value::Str(s) => self.strings.contains(s.as_ref()),
            other => self.items.iter().any(|item| equals(&item.value(), other)),
        }
    }
}

impl<'a> Value<'a> {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::Num(_) => "number",
            Value::Str(_) => "string",
            Value::Time(_) => "timestamp",
            Value::Dur(_) => "duration",
            Value::List(_) => "list",
            Value::Map(_) => "map",
        }
    }

    /// A value borrowing from `self` (no allocation for strings).
    pub fn borrowed(&self) -> Value<'_> {
        match self {
            Value::Str(s) => Value::Str(Cow::Borrowed(s.as_ref())),
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Int(*i),
            Value::Num(n) => Value::Num(*n),
            Value::Time(t) => Value::Time(*t),
            Value::Dur(d) => Value::Dur(*d),
            Value::List(l) => Value::List(match l {
                List::Json(j) => List::Json(j),
                List::Const(c) => List::Const(c),
                List::Owned(o) => List::Owned(Rc::new(o.iter().map(Value::borrowed).collect())),
            }),
            Value::Map(m) => Value::Map(match m {
                MapValue::Json(j) => MapValue::Json(j),
                MapValue::Counterparty(c) => MapValue::Counterparty(*c),
                MapValue::Owned(o) => MapValue::Owned(Rc::new(
                    o.iter()
                        .map(|(k, v)| (k.borrowed(), v.borrowed()))
                        .collect(),
                )),
            }),
        }
    }

    /// A value of a JSON value found in the intent: numbers become exact decimals.
    pub fn from_json(json: &'a Json) -> EvalResult<'a> {
        Ok(match json {
            Json::Null => Value::Null,
            Json::Bool(b) => Value::Bool(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Num(json_decimal(n).ok_or_else(|| {
                    EvalError::new(format!(
                        "number `{n}` cannot be represented as an exact decimal"
                    ))
                })?),
            },
            Json::String(s) => Value::Str(Cow::Borrowed(s)),
            Json::Array(a) => Value::List(List::Json(a)),
            Json::Object(o) => Value::Map(MapValue::Json(o)),
        })
    }

    pub fn as_decimal(&self) -> Option<Decimal> {
        match self {
            Value::Int(i) => Some(Decimal::from(*i)),
            Value::Num(n) => Some(*n),
            _ => None,
        }
    }
}

impl<'a> List<'a> {
    pub fn len(&self) -> usize {
        match self {
            List::Json(j) => j.len(),
            List::Const(c) => c.items.len(),
            List::Owned(o) => o.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, index: usize) -> Option<EvalResult<'a>> {
        match self {
            List::Json(j) => j.get(index).map(Value::from_json),
            List::Const(c) => c.items.get(index).map(|v| Ok(v.value())),
            List::Owned(o) => o.get(index).cloned().map(Ok),
        }
    }

    pub fn contains(&self, needle: &Value<'_>) -> bool {
        match self {
            List::Const(c) => c.contains(needle),
            _ => (0..self.len()).any(|i| matches!(self.get(i), Some(Ok(v)) if equals(&v, needle))),
        }
    }
}

impl<'a> MapValue<'a> {
    /// `Ok(None)` when the key is absent.
    pub fn get(&self, key: &Value<'_>) -> Result<Option<Value<'a>>, EvalError> {
        match self {
            MapValue::Json(o) => match key {
                Value::Str(k) => o.get(k.as_ref()).map(Value::from_json).transpose(),
                _ => Ok(None),
            },
            MapValue::Counterparty(cp) => match key {
                Value::Str(k) => Ok(cp
                    .zip(CpField::named(k))
                    .and_then(|(cp, f)| cp.get(f))
                    .map(|s| Value::Str(Cow::Borrowed(s)))),
                _ => Ok(None),
            },
            MapValue::Owned(entries) => Ok(entries
                .iter()
                .find(|(k, _)| equals(k, key))
                .map(|(_, v)| v.clone())),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            MapValue::Json(o) => o.len(),
            MapValue::Counterparty(cp) => cp.map_or(0, |cp| {
                CpField::ALL
                    .iter()
                    .filter(|f| cp.get(**f).is_some())
                    .count()
            }),
            MapValue::Owned(o) => o.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The keys, for comprehensions over a map.
    pub fn keys(&self) -> Vec<Value<'a>> {
        match self {
            MapValue::Json(o) => o
                .keys()
                .map(|k| Value::Str(Cow::Borrowed(k.as_str())))
                .collect(),
            MapValue::Counterparty(cp) => CpField::ALL
                .iter()
                .filter(|f| cp.is_some_and(|cp| cp.get(**f).is_some()))
                .map(|f| Value::Str(Cow::Borrowed(f.name())))
                .collect(),
            MapValue::Owned(o) => o.iter().map(|(k, _)| k.clone()).collect(),
        }
    }
}

/// CEL equality: values of different types are unequal; numbers compare exactly across
/// `Int` and `Num`.
pub fn equals(a: &Value<'_>, b: &Value<'_>) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Time(x), Value::Time(y)) => x == y,
        (Value::Dur(x), Value::Dur(y)) => x == y,
        (Value::Int(_) | Value::Num(_), Value::Int(_) | Value::Num(_)) => {
            a.as_decimal() == b.as_decimal()
        }
        (Value::List(x), Value::List(y)) => {
            x.len() == y.len()
                && (0..x.len()).all(|i| match (x.get(i), y.get(i)) {
                    (Some(Ok(p)), Some(Ok(q))) => equals(&p, &q),
                    _ => false,
                })
        }
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len()
                && x.keys().iter().all(|k| match (x.get(k), y.get(k)) {
                    (Ok(Some(p)), Ok(Some(q))) => equals(&p, &q),
                    _ => false,
                })
        }
        _ => false,
    }
}

/// CEL ordering, for `<`, `<=`, `>`, `>=`: numbers, strings, timestamps, durations, booleans.
pub fn compare(a: &Value<'_>, b: &Value<'_>) -> Result<Ordering, EvalError> {
    Ok(match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Int(_) | Value::Num(_), Value::Int(_) | Value::Num(_)) => {
            // Both are numbers, so both have a decimal form.
            a.as_decimal().cmp(&b.as_decimal())
        }
        (Value::Str(x), Value::Str(y)) => x.cmp(y),
        (Value::Time(x), Value::Time(y)) => x.cmp(y),
        (Value::Dur(x), Value::Dur(y)) => x.cmp(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        _ => {
            return Err(EvalError::new(format!(
                "cannot compare {} with {}",
                a.type_name(),
                b.type_name()
            )))
        }
    })
}

impl fmt::Display for Value<'_> {
    /// The text a message placeholder shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Num(n) => write!(f, "{n}"),
            Value::Str(s) => f.write_str(s),
            Value::Time(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            Value::Dur(d) => write!(
                f,
                "{}s",
                Decimal::from(d.num_milliseconds()) / Decimal::from(1000)
            ),
            Value::List(l) => {
                f.write_str("[")?;
                for i in 0..l.len() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    match l.get(i) {
                        Some(Ok(v)) => write!(f, "{v}")?,
                        _ => f.write_str("?")?,
                    }
                }
                f.write_str("]")
            }
            Value::Map(m) => {
                f.write_str("{")?;
                for (i, k) in m.keys().iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    match m.get(k) {
                        Ok(Some(v)) => write!(f, "{k}: {v}")?,
                        _ => write!(f, "{k}: ?")?,
                    }
                }
                f.write_str("}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn num(s: &str) -> Value<'static> {
        Value::Num(Decimal::from_str(s).unwrap())
    }

    #[test]
    fn numbers_compare_exactly_across_int_and_decimal() {
        assert_eq!(
            compare(&num("10000.00"), &Value::Int(10000)).unwrap(),
            Ordering::Equal
        );
        assert_eq!(
            compare(&num("10000.01"), &Value::Int(10000)).unwrap(),
            Ordering::Greater
        );
        assert!(equals(&num("1.10"), &num("1.1")));
        assert!(!equals(&Value::Str("1".into()), &Value::Int(1)));
    }

    #[test]
    fn incomparable_types_are_an_error() {
        let e = compare(&Value::Str("a".into()), &Value::Int(1)).unwrap_err();
        assert_eq!(e.0, "cannot compare string with number");
    }

    #[test]
    fn const_lists_find_strings_and_numbers() {
        let list = ConstList::new(vec![
            Scalar::Str("KP".into()),
            Scalar::Num(Decimal::new(50, 1)),
        ]);
        assert!(list.contains(&Value::Str("KP".into())));
        assert!(!list.contains(&Value::Str("DE".into())));
        assert!(list.contains(&Value::Int(5)));
    }
}
