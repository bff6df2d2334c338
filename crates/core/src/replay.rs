//! Offline replay: a JSON-lines stream of intents in, one decision line per valid intent out,
//! in input order; invalid lines go to the dead-letter output. Streaming: memory does not
//! grow with the input (only with the engine's state).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::decision::DeadLetter;
use crate::decision::{Outcome, Source};
use crate::engine::{Clock, Engine, EngineSize, Processed, RecordKey};
use crate::intent::{InvalidIntent, InvalidKind};

/// Counts of what a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub lines: u64,
    pub decisions: u64,
    pub by_outcome: [u64; 3],
    pub duplicates: u64,
    pub invalid: u64,
    pub invalid_by_kind: [u64; 5],
    pub state: Option<EngineSize>,
}

impl Summary {
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.by_outcome[outcome as usize]
    }
}

/// Decides every line of `input`, writing decisions to `output` and dead letters to `dlq`.
/// `label` names the input in each decision's `source`; `clock` gives `decided_at`.
///
/// The outputs are flushed whenever the input has nothing more buffered, so a consumer on a
/// pipe sees each decision as soon as its intent has been read.
pub fn replay(
    engine: &mut Engine,
    input: impl Read,
    output: impl Write,
    dlq: impl Write,
    label: &str,
    max_bytes: usize,
    clock: impl Fn() -> DateTime<Utc>,
) -> io::Result<Summary> {
    let mut input = BufReader::with_capacity(1 << 16, input);
    let mut output = output;
    let mut dlq = dlq;
    let label: Arc<str> = Arc::from(label);
    let mut summary = Summary::default();
    let mut line = Vec::with_capacity(1024);
    let mut out = Vec::with_capacity(4096);
    let mut line_no = 0u64;
    loop {
        line.clear();
        if input.buffer().is_empty() {
            output.flush()?;
            dlq.flush()?;
        }
        // A line is kept up to the size limit (and a byte more), never whole: memory does not
        // grow with a line's length.
        let Some(long) = read_line(&mut input, &mut line, max_bytes.saturating_add(2))? else {
            break;
        };
        line_no += 1;
        let payload = trim_line_end(&line);
        if long.is_none() && payload.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        summary.lines += 1;
        let source = Source::File {
            file: label.clone(),
            line: line_no,
        };
        if let Some((bytes, sha256)) = long {
            summary.invalid += 1;
            summary.invalid_by_kind[InvalidKind::TooLarge as usize] += 1;
            out.clear();
            DeadLetter::of_prefix(
                InvalidIntent::too_large(bytes, max_bytes),
                payload,
                bytes,
                sha256,
                source,
                clock(),
            )
            .write_json_line(&mut out);
            dlq.write_all(&out)?;
            continue;
        }
        out.clear();
        match engine.process(
            payload,
            max_bytes,
            RecordKey::Unchecked,
            source,
            Clock::At(clock()),
        ) {
            Processed::Decided(d) => {
                summary.decisions += 1;
                summary.by_outcome[d.outcome as usize] += 1;
                summary.duplicates += u64::from(d.duplicate);
                d.write_json_line(&mut out);
                output.write_all(&out)?;
            }
            Processed::Invalid(letter) => {
                summary.invalid += 1;
                summary.invalid_by_kind[InvalidKind::ALL
                    .iter()
                    .position(|k| *k == letter.error.kind)
                    .unwrap_or(0)] += 1;
                letter.write_json_line(&mut out);
                dlq.write_all(&out)?;
            }
        }
    }
    output.flush()?;
    dlq.flush()?;
    // Report the live state: drop what has expired since the last periodic sweep.
    engine.sweep();
    summary.state = Some(engine.size());
    Ok(summary)
}

/// Reads the next line into `line`, its end included, keeping at most `keep` bytes of it.
/// `None` at the end of the input; `Some(Some((length, sha256)))` when the line was longer
/// than `keep`: its whole length and the SHA-256 of all of it, both without the final `\n`.
#[allow(clippy::type_complexity)]
fn read_line(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    keep: usize,
) -> io::Result<Option<Option<(usize, String)>>> {
    use sha2::Digest;
    let mut read = 0usize;
    let mut hasher: Option<sha2::Sha256> = None;
    let mut ended = false;
    while !ended {
        let buf = input.fill_buf()?;
        if buf.is_empty() {
            break;
        }
        let (chunk, done) = match memchr::memchr(b'\n', buf) {
            Some(i) => (&buf[..=i], true),
            None => (buf, false),
        };
        ended = done;
        let n = chunk.len();
        let kept = n.min(keep.saturating_sub(line.len()));
        line.extend_from_slice(&chunk[..kept]);
        read += n;
        if read > keep {
            let payload = &chunk[..n - usize::from(done)];
            match &mut hasher {
                Some(h) => h.update(payload),
                None => {
                    // The bytes kept before this chunk, then all of this chunk.
                    let mut h = sha2::Sha256::new();
                    h.update(&line[..line.len() - kept]);
                    h.update(payload);
                    hasher = Some(h);
                }
            }
        }
        input.consume(n);
    }
    if read == 0 {
        return Ok(None);
    }
    Ok(Some(hasher.map(|h| {
        let mut hex = String::with_capacity(64);
        for b in h.finalize() {
            use std::fmt::Write;
            let _ = write!(hex, "{b:02x}");
        }
        (read - usize::from(ended), hex)
    })))
}

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
