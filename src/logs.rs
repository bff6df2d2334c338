//! Log lines that cannot be forged: whatever a caller puts in a field (a newline in an intent
//! id or in an unknown JSON key, a terminal escape sequence), each event stays one line, with
//! its control characters escaped, in the text format as in JSON.

use std::io::{self, Write};

/// A writer for one formatted event (tracing-subscriber writes each event with one
/// `write_all` of the whole line): it escapes every control character but the final newline,
/// `\n` as `\n`, `\r` as `\r`, `\t` kept, and any other as `\u{1b}`. With `colors` (a
/// terminal) the escape character is kept for the formatter's own colours: tracing-subscriber
/// already escapes it, and the other terminal controls, inside field values.
pub struct OneLine<W: Write> {
    inner: W,
    colors: bool,
}

impl<W: Write> OneLine<W> {
    pub fn new(inner: W, colors: bool) -> Self {
        OneLine { inner, colors }
    }
}

/// `line` with its control characters escaped but a final newline (and, with `colors`, the
/// escape character).
pub fn escape(line: &[u8], colors: bool) -> std::borrow::Cow<'_, [u8]> {
    let (body, end) = match line.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (line, &b""[..]),
    };
    let kept = |b: u8| b == b'\t' || (colors && b == 0x1b);
    if !body.iter().any(|&b| b.is_ascii_control() && !kept(b)) {
        return std::borrow::Cow::Borrowed(line);
    }
    let mut out = Vec::with_capacity(line.len() + 16);
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b if kept(b) => out.push(b),
            b if b.is_ascii_control() => {
                let _ = write!(out, "\\u{{{b:x}}}");
            }
            b => out.push(b),
        }
    }
    out.extend_from_slice(end);
    std::borrow::Cow::Owned(out)
}

impl<W: Write> Write for OneLine<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_all(&escape(buf, self.colors))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_stays_one_line_with_its_control_characters_escaped() {
        let forged = b"INFO riskgate::audit: review attempt refused intent_id=x\nINFO riskgate::audit: review published reviewer=alice\x1b[2J\n";
        let out = escape(forged, false);
        let text = String::from_utf8(out.into_owned()).unwrap();
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        assert!(text.ends_with('\n'));
        assert!(
            text.contains("intent_id=x\\nINFO riskgate::audit"),
            "{text}"
        );
        assert!(text.contains("alice\\u{1b}[2J"), "{text}");
        assert!(matches!(
            escape(b"plain\tline\n", false),
            std::borrow::Cow::Borrowed(_)
        ));
        let mut sink = Vec::new();
        OneLine::new(&mut sink, false).write_all(b"a\rb\n").unwrap();
        assert_eq!(sink, b"a\\rb\n");
        // On a terminal the colours stay, a line break does not.
        let colored = b"\x1b[32mINFO\x1b[0m id=x\ny\n";
        assert_eq!(
            escape(colored, true).as_ref(),
            b"\x1b[32mINFO\x1b[0m id=x\\ny\n"
        );
    }
}
