//! Offline replay: a JSON-lines stream of intents in, one decision line per valid intent out,
//! in input order; invalid lines go to the dead-letter output. Streaming: memory does not
//! grow with the input (only with the engine's state).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::decision::{Outcome, Source};
use crate::engine::{Clock, Engine, EngineSize, Processed};
use crate::intent::InvalidKind;

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
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        line_no += 1;
        let payload = trim_line_end(&line);
        if payload.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        summary.lines += 1;
        let source = Source::File {
            file: label.clone(),
            line: line_no,
        };
        out.clear();
        match engine.process(payload, max_bytes, source, Clock::At(clock())) {
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

fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
