//! Rule tests: `rules/tests/*.toml`, run by `riskgate test` and by `cargo test`.
//!
//! Each `[[case]]` starts from empty state, feeds its `history` through the engine (decisions
//! not checked), then decides `intent` and compares the result with `expect`. Every intent is
//! decided with the clock at its own `created_at`, as a live service would.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Deserialize;

use crate::decision::{CounterValue, Decision, Source};
use crate::engine::{Clock, Engine, EngineOptions, Processed, RecordKey};
use crate::intent::{InvalidIntent, DEFAULT_MAX_BYTES};
use crate::rules::Ruleset;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    defaults: Option<toml::Table>,
    #[serde(default)]
    case: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    #[serde(default)]
    history: Vec<toml::Table>,
    intent: toml::Table,
    expect: Expect,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Expect {
    decision: Option<String>,
    rules: Option<Vec<String>>,
    score: Option<i64>,
    errors: Option<Vec<String>>,
    counters: Option<BTreeMap<String, toml::Value>>,
    duplicate: Option<bool>,
    /// The intent is invalid: the dead-letter kind expected.
    invalid: Option<String>,
}

/// A rule-test file that is not valid TOML or not in the shape of test cases.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct TestFileError {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The outcome of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub file: PathBuf,
    pub name: String,
    /// What differed, one line each; empty when the case passed.
    pub failures: Vec<String>,
    /// Rule ids the case expects to match.
    pub covers: Vec<String>,
}

impl CaseResult {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// Everything a `riskgate test` run found.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub ruleset: String,
    pub cases: Vec<CaseResult>,
    /// Test files that could not be read, with why.
    pub broken_files: Vec<String>,
    /// Rules that no passing case expects to match.
    pub uncovered: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed()).count()
    }

    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed() + self.broken_files.len()
    }
}

/// Runs every case of every `*.toml` under `rules_dir/tests` against the ruleset of
/// `rules_dir`.
pub fn run_dir(rules_dir: &Path, ruleset: Arc<Ruleset>) -> Report {
    let tests_dir = rules_dir.join("tests");
    let mut report = Report {
        ruleset: ruleset.version.to_string(),
        ..Report::default()
    };
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(&tests_dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect(),
        Err(e) => {
            report.broken_files.push(format!(
                "{}: cannot read the tests directory: {e}",
                tests_dir.display()
            ));
            return report;
        }
    };
    paths.sort();
    for path in paths {
        match std::fs::read_to_string(&path) {
            Ok(text) => match run_file(&path, &text, &ruleset) {
                Ok(cases) => report.cases.extend(cases),
                Err(e) => report.broken_files.push(e.to_string()),
            },
            Err(e) => report
                .broken_files
                .push(format!("{}: cannot read: {e}", path.display())),
        }
    }
    let covered: BTreeSet<&str> = report
        .cases
        .iter()
        .filter(|c| c.passed())
        .flat_map(|c| c.covers.iter().map(String::as_str))
        .collect();
    report.uncovered = ruleset
        .rules
        .iter()
        .map(|r| r.id.to_string())
        .filter(|id| !covered.contains(id.as_str()))
        .collect();
    report
}

/// Runs the cases of one test file.
pub fn run_file(
    path: &Path,
    text: &str,
    ruleset: &Arc<Ruleset>,
) -> Result<Vec<CaseResult>, TestFileError> {
    let file: TestFile = toml::from_str(text).map_err(|e| {
        let (line, column) = crate::rules::line_column(text, e.span().map_or(0, |s| s.start));
        TestFileError {
            path: path.to_owned(),
            line,
            column,
            message: e.message().trim_end().to_owned(),
        }
    })?;
    let defaults = file.defaults.unwrap_or_default();
    Ok(file
        .case
        .iter()
        .enumerate()
        .map(|(i, case)| run_case(path, i + 1, case, &defaults, ruleset))
        .collect())
}

fn run_case(
    path: &Path,
    number: usize,
    case: &Case,
    defaults: &toml::Table,
    ruleset: &Arc<Ruleset>,
) -> CaseResult {
    let mut engine = Engine::new(ruleset.clone(), EngineOptions::default());
    let mut failures = Vec::new();
    let label: Arc<str> = Arc::from(format!("{}#{number}", path.display()));
    let mut line = 0;
    for (h, item) in case.history.iter().enumerate() {
        let mut item = item.clone();
        let repeat = match item.remove("repeat") {
            Some(toml::Value::Integer(n)) if n >= 1 => n as usize,
            Some(other) => {
                failures.push(format!(
                    "history[{h}]: `repeat` must be a positive integer, found {other}"
                ));
                1
            }
            None => 1,
        };
        for k in 1..=repeat {
            let mut one = item.clone();
            let id = match one.get("intent_id").and_then(toml::Value::as_str) {
                Some(id) if repeat > 1 => format!("{id}#{k}"),
                Some(id) => id.to_owned(),
                None => format!("case{number}-h{h}-{k}"),
            };
            one.insert("intent_id".into(), toml::Value::String(id));
            line += 1;
            if let Err(e) = decide(
                &mut engine,
                &one,
                defaults,
                Source::File {
                    file: label.clone(),
                    line,
                },
            ) {
                failures.push(format!("history[{h}] is not a valid intent: {e}"));
            }
        }
    }
    let mut intent = case.intent.clone();
    intent
        .entry("intent_id")
        .or_insert_with(|| toml::Value::String(format!("case{number}")));
    let result = decide(
        &mut engine,
        &intent,
        defaults,
        Source::File {
            file: label,
            line: line + 1,
        },
    );
    compare(&case.expect, result, &mut failures);
    CaseResult {
        file: path.to_owned(),
        name: case.name.clone(),
        failures,
        covers: case.expect.rules.clone().unwrap_or_default(),
    }
}

/// Decides one test intent: `Err` with why when it is invalid.
fn decide(
    engine: &mut Engine,
    table: &toml::Table,
    defaults: &toml::Table,
    source: Source,
) -> Result<Arc<Decision>, InvalidIntent> {
    let mut merged = defaults.clone();
    for (k, v) in table {
        merged.insert(k.clone(), v.clone());
    }
    let json =
        serde_json::Value::Object(merged.into_iter().map(|(k, v)| (k, to_json(v))).collect());
    // A JSON value always serializes (its keys are strings).
    let payload = serde_json::to_vec(&json).unwrap_or_default();
    match engine.process(
        &payload,
        DEFAULT_MAX_BYTES,
        RecordKey::Unchecked,
        source,
        Clock::EventTime,
    ) {
        Processed::Decided(d) => Ok(d),
        Processed::Invalid(letter) => Err(letter.error),
    }
}

fn to_json(v: toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => serde_json::Value::String(s),
        toml::Value::Integer(i) => serde_json::Value::from(i),
        // Shortest text that reads back as the same double: `0.1` stays `0.1`.
        toml::Value::Float(f) => {
            serde_json::Value::Number(serde_json::Number::from_string_unchecked(f.to_string()))
        }
        toml::Value::Boolean(b) => serde_json::Value::Bool(b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(a.into_iter().map(to_json).collect()),
        toml::Value::Table(t) => {
            serde_json::Value::Object(t.into_iter().map(|(k, v)| (k, to_json(v))).collect())
        }
    }
}

fn compare(
    expect: &Expect,
    result: Result<Arc<Decision>, InvalidIntent>,
    failures: &mut Vec<String>,
) {
    let d = match (result, &expect.invalid) {
        (Err(e), Some(kind)) => {
            if e.kind.as_str() != kind {
                failures.push(format!(
                    "expected a dead letter of kind `{kind}`, got {}: {}",
                    e.kind.as_str(),
                    e.message
                ));
            }
            return;
        }
        (Err(e), None) => {
            failures.push(format!(
                "the intent is invalid: {}: {}",
                e.kind.as_str(),
                e.message
            ));
            return;
        }
        (Ok(d), Some(kind)) => {
            failures.push(format!(
                "expected a dead letter of kind `{kind}`, got decision `{}`",
                d.outcome
            ));
            return;
        }
        (Ok(d), None) => d,
    };
    match &expect.decision {
        Some(want) if want != d.outcome.as_str() => {
            failures.push(format!("decision: expected `{want}`, got `{}`", d.outcome))
        }
        Some(_) => {}
        None => failures.push("`expect` needs `decision` (or `invalid`)".to_owned()),
    }
    if let Some(want) = &expect.rules {
        let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
        let got: BTreeSet<&str> = d.reasons.iter().map(|r| &*r.rule).collect();
        if want != got {
            let missing: Vec<_> = want.difference(&got).collect();
            let extra: Vec<_> = got.difference(&want).collect();
            failures.push(format!(
                "rules: expected {want:?}, got {got:?} (missing {missing:?}, unexpected {extra:?})"
            ));
        }
    }
    if let Some(want) = expect.score {
        if want != d.score {
            failures.push(format!("score: expected {want}, got {}", d.score));
        }
    }
    if let Some(want) = &expect.errors {
        let want: BTreeSet<&str> = want.iter().map(String::as_str).collect();
        let got: BTreeSet<&str> = d.errors.iter().map(|e| &*e.rule).collect();
        if want != got {
            failures.push(format!("errors: expected {want:?}, got {got:?}"));
        }
    }
    if let Some(want) = &expect.counters {
        for (id, value) in want {
            let got = d.counters.iter().find(|(c, _)| &**c == id).map(|(_, v)| *v);
            let want_dec = match value {
                toml::Value::Integer(i) => Some(Decimal::from(*i)),
                toml::Value::Float(f) => Decimal::from_str_exact(&f.to_string()).ok(),
                toml::Value::String(s) => Decimal::from_str_exact(s).ok(),
                _ => None,
            };
            let got_dec = got.map(|v| match v {
                CounterValue::Int(i) => Decimal::from(i),
                CounterValue::Num(n) => n,
            });
            if want_dec.is_none() || want_dec != got_dec {
                let shown = got_dec.map_or("unavailable".to_owned(), |g| g.to_string());
                failures.push(format!("counters.{id}: expected {value}, got {shown}"));
            }
        }
    }
    if let Some(want) = expect.duplicate {
        if want != d.duplicate {
            failures.push(format!("duplicate: expected {want}, got {}", d.duplicate));
        }
    }
    if !failures.is_empty() {
        failures.push(format!("actual: {}", explain(&d)));
    }
}

/// A one-line account of a decision, for failure output.
pub fn explain(d: &Decision) -> String {
    let mut s = format!("decision `{}`, score {}", d.outcome, d.score);
    let rules: Vec<&str> = d.reasons.iter().map(|r| &*r.rule).collect();
    let _ = write!(s, ", matched {rules:?}");
    for e in &d.errors {
        let _ = write!(s, ", rule `{}` failed: {}", e.rule, e.message);
    }
    let counters: Vec<String> = d
        .counters
        .iter()
        .map(|(id, v)| match v {
            CounterValue::Int(i) => format!("{id}={i}"),
            CounterValue::Num(n) => format!("{id}={n}"),
        })
        .collect();
    if !counters.is_empty() {
        let _ = write!(s, ", counters {}", counters.join(" "));
    }
    s
}
