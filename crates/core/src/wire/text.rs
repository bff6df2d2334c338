//! The text of values on the wire, one copy each: timestamps, exact decimals, integers and
//! JSON strings, written without the formatting machinery (one decision is written per
//! intent), and a small JSON object writer.

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;

/// A timestamp as every record writes it: RFC 3339, UTC, milliseconds (`2026-11-28T10:00:00.012Z`).
pub fn timestamp(t: &DateTime<Utc>) -> String {
    let mut out = Vec::with_capacity(24);
    write_timestamp(&mut out, t);
    String::from_utf8(out).unwrap_or_else(|_| t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Appends [`timestamp`]'s text.
pub fn write_timestamp(out: &mut Vec<u8>, t: &DateTime<Utc>) {
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
        out.extend_from_slice(t.to_rfc3339_opts(SecondsFormat::Millis, true).as_bytes());
    }
}

/// A small JSON writer for the hot path: one decision is written per intent, so it avoids
/// serde's generic machinery and temporary strings.
pub(super) struct Writer<'b> {
    out: &'b mut Vec<u8>,
    first: bool,
}

impl<'b> Writer<'b> {
    pub(super) fn object(out: &'b mut Vec<u8>) -> Self {
        out.push(b'{');
        Writer { out, first: true }
    }

    pub(super) fn key(&mut self, key: &str) -> &mut Vec<u8> {
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

    pub(super) fn str(&mut self, key: &str, value: &str) {
        let out = self.key(key);
        string(out, value);
    }

    pub(super) fn int(&mut self, key: &str, value: i64) {
        let out = self.key(key);
        integer(out, value);
    }

    /// An exact decimal, as a string.
    pub(super) fn decimal(&mut self, key: &str, value: &Decimal) {
        let out = self.key(key);
        out.push(b'"');
        decimal(out, value);
        out.push(b'"');
    }

    pub(super) fn time(&mut self, key: &str, t: &DateTime<Utc>) {
        let out = self.key(key);
        out.push(b'"');
        write_timestamp(out, t);
        out.push(b'"');
    }

    pub(super) fn end(self) -> &'b mut Vec<u8> {
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
pub fn integer(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

/// Writes an exact decimal as `Decimal`'s `Display` does (`12000.50`, `0.001`, `-3`).
pub fn decimal(out: &mut Vec<u8>, value: &Decimal) {
    decimal_text(value, |s| out.extend_from_slice(s.as_bytes()));
}

/// An exact decimal's text, as [`decimal`] writes it.
pub fn decimal_string(value: &Decimal) -> String {
    let mut s = String::new();
    decimal_text(value, |piece| s.push_str(piece));
    s
}

/// Gives the text of `value`, as `Decimal`'s `Display` writes it, to `emit` piece by piece,
/// without the formatting machinery.
pub fn decimal_text(value: &Decimal, mut emit: impl FnMut(&str)) {
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
pub(super) fn array<T>(out: &mut Vec<u8>, items: &[T], fields: impl Fn(&mut Writer<'_>, &T)) {
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
pub fn string(out: &mut Vec<u8>, s: &str) {
    if !needs_escape(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
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
