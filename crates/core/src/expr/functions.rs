//! The functions conditions can call (`size`, `startsWith`, `timestamp`, `getHours`, ...)
//! and the text formats they read (durations, timestamps, time zone offsets).

use std::borrow::Cow;
use std::str::FromStr;

use chrono::{DateTime, Datelike, FixedOffset, TimeDelta, Timelike, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use smallvec::SmallVec;

use super::ast::{Func, TimePart};
use super::eval::err;
use super::value::{EvalError, EvalResult, Value};

/// A text that is not a duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{text}` is not a duration; write e.g. `100ms`, `30s`, `10m`, `1h30m`, `24h` or `30d`")]
pub struct DurationError {
    pub text: String,
}

/// Parses a duration: one or more `<number><unit>` with units `ns`, `us`, `ms`, `s`, `m`,
/// `h`, `d`, `w` (`1h30m`, `1.5h`, `100ms`, `30d`), optionally signed.
pub fn parse_duration(text: &str) -> Result<TimeDelta, DurationError> {
    let bad = || DurationError {
        text: text.to_owned(),
    };
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Decimal::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let number = Decimal::from_str(&rest[..digits]).map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per: i64 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "w" => 604_800_000_000_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = number
            .checked_mul(Decimal::from(nanos_per))
            .and_then(|n| total.checked_add(n))
            .ok_or_else(bad)?;
    }
    let nanos = total.trunc().to_i64().ok_or_else(bad)?;
    let delta = TimeDelta::nanoseconds(nanos);
    Ok(if negative { -delta } else { delta })
}

/// A duration as people write it, in the largest unit that divides it (`24h`, `90s`,
/// `15m`, `2d`, `100ms`): what [`parse_duration`] reads back.
pub fn format_duration(d: TimeDelta) -> String {
    let Some(nanos) = d.num_nanoseconds() else {
        return format!("{}s", d.num_seconds());
    };
    let sign = if nanos < 0 { "-" } else { "" };
    let n = nanos.unsigned_abs();
    for (unit, size) in [
        ("d", 86_400_000_000_000u64),
        ("h", 3_600_000_000_000),
        ("m", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
    ] {
        if n >= size && n % size == 0 {
            return format!("{sign}{}{unit}", n / size);
        }
    }
    format!("{sign}{n}ns")
}

pub(super) fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, EvalError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| EvalError::new(format!("`{text}` is not an RFC 3339 timestamp: {e}")))
}

fn parse_offset(text: &str) -> Result<FixedOffset, EvalError> {
    if text == "UTC" || text == "Z" {
        return FixedOffset::east_opt(0).ok_or_else(|| EvalError::new("bad offset"));
    }
    let bad = || {
        EvalError::new(format!(
            "`{text}` is not a time zone offset; write e.g. `+02:00` or `UTC`"
        ))
    };
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let h: i32 = h.parse().map_err(|_| bad())?;
    let m: i32 = m.parse().map_err(|_| bad())?;
    FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad)
}

#[inline(never)]
pub(super) fn call<'a>(f: Func, args: SmallVec<[Value<'a>; 2]>) -> EvalResult<'a> {
    let mut args = args.into_iter();
    let first = args.next().unwrap_or(Value::Null);
    let second = args.next();
    let str_arg = |v: Option<Value<'a>>| match v {
        Some(Value::Str(s)) => Ok(s),
        Some(other) => Err(EvalError::new(format!(
            "expected a string argument, not a {}",
            other.type_name()
        ))),
        None => Err(EvalError::new("missing argument")),
    };
    let recv_str = |v: Value<'a>| match v {
        Value::Str(s) => Ok(s),
        other => Err(EvalError::new(format!(
            "expected a string, not a {}",
            other.type_name()
        ))),
    };
    match f {
        Func::Size => match first {
            Value::Str(s) => Ok(Value::Int(s.chars().count() as i64)),
            Value::List(l) => Ok(Value::Int(l.len() as i64)),
            Value::Map(m) => Ok(Value::Int(m.len() as i64)),
            other => err(format!(
                "size() needs a string, list or map, not a {}",
                other.type_name()
            )),
        },
        Func::StartsWith => Ok(Value::Bool(
            recv_str(first)?.starts_with(str_arg(second)?.as_ref()),
        )),
        Func::EndsWith => Ok(Value::Bool(
            recv_str(first)?.ends_with(str_arg(second)?.as_ref()),
        )),
        Func::Contains => Ok(Value::Bool(
            recv_str(first)?.contains(str_arg(second)?.as_ref()),
        )),
        Func::LowerAscii => Ok(Value::Str(Cow::Owned(
            recv_str(first)?.to_ascii_lowercase(),
        ))),
        Func::UpperAscii => Ok(Value::Str(Cow::Owned(
            recv_str(first)?.to_ascii_uppercase(),
        ))),
        Func::Int => match first {
            Value::Int(i) => Ok(Value::Int(i)),
            Value::Num(n) => n
                .trunc()
                .to_i64()
                .map(Value::Int)
                .ok_or_else(|| EvalError::new(format!("{n} is out of the int range"))),
            Value::Str(s) => s
                .parse::<i64>()
                .map(Value::Int)
                .map_err(|_| EvalError::new(format!("`{s}` is not an integer"))),
            Value::Time(t) => Ok(Value::Int(t.timestamp())),
            other => err(format!("int() cannot convert a {}", other.type_name())),
        },
        Func::Double => match first {
            Value::Int(i) => Ok(Value::Num(Decimal::from(i))),
            Value::Num(n) => Ok(Value::Num(n)),
            Value::Str(s) => Decimal::from_str_exact(s.trim())
                .map(Value::Num)
                .map_err(|_| EvalError::new(format!("`{s}` is not a decimal number"))),
            other => err(format!("double() cannot convert a {}", other.type_name())),
        },
        Func::String => Ok(match first {
            Value::Str(s) => Value::Str(s),
            other => Value::Str(Cow::Owned(other.to_string())),
        }),
        Func::Timestamp => match first {
            Value::Str(s) => parse_timestamp(&s).map(Value::Time),
            Value::Time(t) => Ok(Value::Time(t)),
            other => err(format!(
                "timestamp() needs a string, not a {}",
                other.type_name()
            )),
        },
        Func::Duration => match first {
            Value::Str(s) => parse_duration(&s)
                .map(Value::Dur)
                .map_err(|e| EvalError::new(e.to_string())),
            Value::Dur(d) => Ok(Value::Dur(d)),
            other => err(format!(
                "duration() needs a string, not a {}",
                other.type_name()
            )),
        },
        Func::Dyn => Ok(first),
        Func::TimePart(part) => {
            let Value::Time(t) = first else {
                return err(format!("expected a timestamp, not a {}", first.type_name()));
            };
            let offset = match second {
                Some(Value::Str(tz)) => parse_offset(&tz)?,
                Some(other) => {
                    return err(format!(
                        "a time zone must be a string, not a {}",
                        other.type_name()
                    ))
                }
                None => FixedOffset::east_opt(0).ok_or_else(|| EvalError::new("bad offset"))?,
            };
            let local = t.with_timezone(&offset);
            let n = match part {
                TimePart::FullYear => local.year() as i64,
                TimePart::Month => local.month0() as i64,
                TimePart::Date => local.day() as i64,
                TimePart::DayOfMonth => local.day0() as i64,
                TimePart::DayOfWeek => local.weekday().num_days_from_sunday() as i64,
                TimePart::DayOfYear => local.ordinal0() as i64,
                TimePart::Hours => local.hour() as i64,
                TimePart::Minutes => local.minute() as i64,
                TimePart::Seconds => local.second() as i64,
            };
            Ok(Value::Int(n))
        }
    }
}
