//! Decisions and dead letters: the output contract (DESIGN section 2).

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, Utc};
use compact_str::CompactString;
use rust_decimal::Decimal;
use serde::de::{Error as _, MapAccess, Visitor};
use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

use crate::intent::{parse_intent, Intent, InvalidIntent};
use crate::rules::{Outcome, RuleAction};
use crate::velocity::CounterValue;

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
    pub intent_id: CompactString,
    pub agent_id: CompactString,
    pub account_id: CompactString,
    pub action: CompactString,
    pub amount: Option<Decimal>,
    pub currency: Option<CompactString>,
    pub created_at: DateTime<Utc>,
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

fn timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A small JSON writer for the hot path: one decision is written per intent, so it avoids
/// serde's generic machinery and temporary strings.
struct Writer<'b> {
    out: &'b mut Vec<u8>,
    first: bool,
}

impl<'b> Writer<'b> {
    fn object(out: &'b mut Vec<u8>) -> Self {
        out.push(b'{');
        Writer { out, first: true }
    }

    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        // Keys are field names and counter ids: identifiers that never need escaping.
        self.out.push(b'"');
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
        self.out
    }

    fn str(&mut self, key: &str, value: &str) {
        let out = self.key(key);
        string(out, value);
    }

    fn int(&mut self, key: &str, value: i64) {
        let out = self.key(key);
        integer(out, value);
    }

    /// An exact decimal, as a string.
    fn decimal(&mut self, key: &str, value: &Decimal) {
        let out = self.key(key);
        out.push(b'"');
        decimal(out, value);
        out.push(b'"');
    }

    fn time(&mut self, key: &str, t: &DateTime<Utc>) {
        let out = self.key(key);
        out.push(b'"');
        let secs = t.timestamp();
        let (days, of_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let (year, month, day) = civil_from_days(days);
        if (0..=9999).contains(&year) {
            // `YYYY-MM-DDTHH:MM:SS.mmmZ`, digit by digit into a fixed buffer, which is then
            // appended at once.
            let mut text = *b"0000-00-00T00:00:00.000Z";
            let year = year as u32;
            let millis = t.timestamp_subsec_millis().min(999);
            let pairs = [
                (year / 100, 0),
                (year % 100, 2),
                (month, 5),
                (day, 8),
                ((of_day / 3600) as u32, 11),
                ((of_day / 60 % 60) as u32, 14),
                ((of_day % 60) as u32, 17),
                (millis % 100, 21),
            ];
            for (value, at) in pairs {
                text[at..at + 2].copy_from_slice(two_digits(value));
            }
            text[20] = b'0' + (millis / 100) as u8;
            out.extend_from_slice(&text);
        } else {
            out.extend_from_slice(timestamp(t).as_bytes());
        }
        out.push(b'"');
    }

    fn end(self) -> &'b mut Vec<u8> {
        self.out.push(b'}');
        self.out
    }
}

/// The two decimal digits of `value` (below 100).
fn two_digits(value: u32) -> &'static [u8] {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let at = value as usize * 2;
    &PAIRS[at..at + 2]
}

/// The proleptic Gregorian date of a day number (days since 1970-01-01), by Howard Hinnant's
/// `civil_from_days`: far cheaper than going through calendar types for every timestamp.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Writes an integer in decimal.
fn integer(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Writes an exact decimal as `Decimal`'s `Display` does (`12000.50`, `0.001`, `-3`).
fn decimal(out: &mut Vec<u8>, value: &Decimal) {
    decimal_text(value, |s| out.extend_from_slice(s.as_bytes()));
}

/// Gives the text of `value`, as `Decimal`'s `Display` writes it, to `emit` piece by piece,
/// without the formatting machinery.
pub(crate) fn decimal_text(value: &Decimal, mut emit: impl FnMut(&str)) {
    const ZEROS: &str = "0000000000000000000000000000";
    if value.is_sign_negative() && !value.is_zero() {
        emit("-");
    }
    let mut buf = itoa::Buffer::new();
    let magnitude = value.mantissa().unsigned_abs();
    // Most mantissas fit in 64 bits, whose formatting is the cheaper one.
    let digits = match u64::try_from(magnitude) {
        Ok(small) => buf.format(small),
        Err(_) => buf.format(magnitude),
    };
    // At most 28 (`Decimal`'s largest scale).
    let scale = value.scale() as usize;
    if scale == 0 {
        emit(digits);
    } else if digits.len() > scale {
        let (whole, fraction) = digits.split_at(digits.len() - scale);
        emit(whole);
        emit(".");
        emit(fraction);
    } else {
        emit("0.");
        emit(&ZEROS[..scale - digits.len()]);
        emit(digits);
    }
}

/// Writes `items` as a JSON array of objects, each filled in by `fields`.
fn array<T>(out: &mut Vec<u8>, items: &[T], fields: impl Fn(&mut Writer<'_>, &T)) {
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let mut o = Writer::object(out);
        fields(&mut o, item);
        let _ = o.end();
    }
    out.push(b']');
}

/// Whether any byte is a control character, `"` or `\\`: eight bytes at a time.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is zero iff the same byte of this is set (no false positives across
    // bytes for this exact test: `(x - ONES) & !x & HIGHS`).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
        if control | zero(x ^ (ONES * u64::from(b'"'))) | zero(x ^ (ONES * u64::from(b'\\'))) != 0 {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Writes a JSON string: copied as is when nothing needs escaping, the usual case.
fn string(out: &mut Vec<u8>, s: &str) {
    if !needs_escape(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

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
        w.str("intent_id", &self.intent_id);
        w.str("agent_id", &self.agent_id);
        w.str("account_id", &self.account_id);
        w.str("action", &self.action);
        if let Some(amount) = &self.amount {
            w.decimal("amount", amount);
        }
        if let Some(currency) = &self.currency {
            w.str("currency", currency);
        }
        w.time("created_at", &self.created_at);
        w.str("decision", self.outcome.as_str());
        w.int("score", self.score);
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

/// Reads one record of the decisions topic, as [`Decision::write_json`] wrote it with the
/// intent embedded: the decision and its intent, or `None` for a later record about an
/// intent (a review outcome, `"stage": "review"`), which is not a decision of the engine
/// and never counts towards velocity.
pub fn parse_record(
    bytes: &[u8],
    max_intent_bytes: usize,
) -> Result<Option<(Decision, Intent)>, String> {
    let r: DecisionRecord<'_> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if r.stage.is_some_and(|s| s != "decision") {
        return Ok(None);
    }
    let raw = r.intent.ok_or("the record has no `intent`")?;
    let intent = parse_intent(raw.get().as_bytes(), max_intent_bytes)
        .map_err(|e| format!("its intent is invalid: {}", e.message))?;
    let (Some(decided_at), Some(outcome), Some(source)) = (r.decided_at, r.decision, r.source)
    else {
        return Err("`decision`, `decided_at` and `source` are required".to_owned());
    };
    let decision = Decision {
        intent_id: intent.intent_id.clone(),
        agent_id: intent.agent_id.clone(),
        account_id: intent.account_id.clone(),
        action: intent.action.clone(),
        amount: intent.amount,
        currency: intent.currency.clone(),
        created_at: intent.created_at,
        outcome,
        score: r.score,
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

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;
    use std::str::FromStr;

    #[test]
    fn numbers_are_written_as_display_writes_them() {
        for text in [
            "0",
            "1",
            "-1",
            "12000.50",
            "0.001",
            "-0.5",
            "10.0000",
            "79228162514264337593543950335",
            "0.0000000000000000000000000001",
        ] {
            let d = Decimal::from_str(text).unwrap();
            let mut out = Vec::new();
            decimal(&mut out, &d);
            assert_eq!(String::from_utf8(out).unwrap(), d.to_string(), "{text}");
        }
        for i in [0i64, 7, -7, 1042, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            integer(&mut out, i);
            assert_eq!(String::from_utf8(out).unwrap(), i.to_string());
        }
    }

    #[test]
    fn strings_are_escaped_when_needed() {
        for s in [
            "plain",
            "quote \" here",
            "back\\slash",
            "new\nline",
            "tab\t",
            "\u{1}",
            "émoji 🎉",
            "exactly8",
            "sixteen bytes ok",
            "sixteen bytes \"x",
            "0123456789abcde\u{1f}",
            "\u{7f}\u{80}",
        ] {
            let mut out = Vec::new();
            string(&mut out, s);
            let back: String = serde_json::from_slice(&out).unwrap();
            let naive = s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
            assert_eq!(needs_escape(s.as_bytes()), naive, "{s:?}");
            assert_eq!(back, s);
        }
    }

    #[test]
    fn civil_dates_agree_with_chrono() {
        for days in (-800_000..3_000_000)
            .step_by(997)
            .chain([-1, 0, 1, 59, 60, 365, 11_016, 20_785])
        {
            let date = DateTime::from_timestamp(days * 86_400, 0).unwrap();
            assert_eq!(
                civil_from_days(days),
                (i64::from(date.year()), date.month(), date.day()),
                "{days}"
            );
        }
    }

    #[test]
    fn timestamps_have_milliseconds_and_z() {
        let mut out = Vec::new();
        let t: DateTime<Utc> = "2026-01-02T03:04:05.678912Z".parse().unwrap();
        Writer::object(&mut out).time("t", &t);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"t":"2026-01-02T03:04:05.678Z""#
        );
        // Every digit position, against chrono's own formatting, from year 0 to 9999.
        let mut micros: i64 = -62_167_219_200_000_000; // 0000-01-01T00:00:00Z
        while micros < 253_402_300_799_000_000 {
            let t = DateTime::from_timestamp_micros(micros).unwrap();
            let mut out = Vec::new();
            Writer::object(&mut out).time("t", &t);
            let want = format!(
                r#"{{"t":"{}""#,
                t.to_rfc3339_opts(SecondsFormat::Millis, true)
            );
            assert_eq!(String::from_utf8(out).unwrap(), want);
            micros += 7_777_777_777_777 + 123_457;
        }
    }
}
