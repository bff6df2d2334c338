//! The ruleset: loading and validating `rules/*.toml` ([docs/design.md](../../../docs/design.md#3-rules-semantics)).
//!
//! Loading collects every problem it can find, each with file, line, column and the rule,
//! counter or list it belongs to, before refusing the ruleset.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::TimeDelta;
use rust_decimal::Decimal;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use toml::Spanned;

use crate::currency::is_iso4217;
use crate::decision::{Outcome, RuleAction};
use crate::expr::{
    self, ActionIndex, Activation, CompileError, CompileOptions, ConstList, Elem, Program, Scalar,
    Scope, Ty,
};
use crate::intent::Field;
pub use crate::intent::FieldPath;
use crate::wire::text::decimal_text;

/// What a rule that fails to evaluate contributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    Hold,
    Deny,
    Ignore,
}

/// Which decisions a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contributes {
    All,
    Allowed,
    NotDenied,
}

impl Contributes {
    pub fn admits(self, outcome: Outcome) -> bool {
        match self {
            Contributes::All => true,
            Contributes::Allowed => outcome == Outcome::Allow,
            Contributes::NotDenied => outcome != Outcome::Deny,
        }
    }
}

pub use crate::velocity::Aggregate;
use crate::velocity::{CounterSpec, WindowSpec};

/// A `[[counter]]`.
#[derive(Debug)]
pub struct CounterDef {
    pub id: Arc<str>,
    pub description: Option<String>,
    pub key: Vec<FieldPath>,
    pub key_text: Vec<String>,
    pub aggregate: Aggregate,
    pub field: Option<FieldPath>,
    pub window: TimeDelta,
    /// Bucket width; the window spans `buckets` buckets.
    pub resolution: TimeDelta,
    pub buckets: i64,
    pub filter: Option<Program>,
    /// The `where` text, as written.
    pub filter_text: Option<String>,
    pub contributes: Contributes,
    /// Per key path: why the counter is unavailable when the intent lacks that path.
    pub unavailable: Vec<String>,
    /// Why the counter is unavailable to an intent dated before the state it keeps.
    pub too_old: String,
}

impl CounterDef {
    /// The counter as the velocity state keeps it.
    pub fn spec(&self) -> CounterSpec<'_> {
        CounterSpec {
            key: &self.key,
            window: WindowSpec {
                aggregate: self.aggregate,
                resolution_ns: self.resolution.num_nanoseconds().unwrap_or(i64::MAX).max(1),
                buckets: self.buckets,
            },
        }
    }
}

/// A message template: text with `{name}` placeholders.
#[derive(Debug)]
pub struct Template {
    parts: Vec<Part>,
    /// Room for a typical rendering: the text, and 24 bytes per placeholder.
    capacity: usize,
}

#[derive(Debug)]
enum Part {
    Text(String),
    Name(Program),
}

impl Template {
    /// Renders the template; a placeholder that cannot be read renders as `?`.
    pub fn render(&self, act: &Activation<'_>) -> String {
        let mut out = String::with_capacity(self.capacity);
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Name(p) => match p.eval(act) {
                    // Strings, the usual placeholder, skip the formatting machinery.
                    Ok(crate::expr::Value::Str(v)) => out.push_str(&v),
                    // So are numbers (the same text as their `Display`).
                    Ok(crate::expr::Value::Int(i)) => {
                        out.push_str(itoa::Buffer::new().format(i));
                    }
                    Ok(crate::expr::Value::Num(n)) => {
                        decimal_text(&n, |s| out.push_str(s));
                    }
                    Ok(v) => {
                        use std::fmt::Write;
                        let _ = write!(out, "{v}");
                    }
                    Err(_) => out.push('?'),
                },
            }
        }
        out
    }
}

/// A `[[rule]]`.
#[derive(Debug)]
pub struct RuleDef {
    pub id: Arc<str>,
    pub description: Option<String>,
    pub when: Program,
    pub action: RuleAction,
    pub score: i64,
    pub message: Option<Template>,
    /// How many different reviewers must approve an intent this hold rule held (1 unless
    /// `approvals` says otherwise; only hold rules have it).
    pub approvals: u8,
}

/// Score thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scoring {
    pub hold_at: Option<i64>,
    pub deny_at: Option<i64>,
}

/// Why an intent has no `amount_base`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FxError {
    #[error("`amount_base` is unavailable: [fx] has no rate for `{0}`")]
    NoRate(String),
    #[error("`amount_base` is unavailable: {amount} {currency} x {rate} exceeds exact decimal precision")]
    Precision {
        amount: Decimal,
        currency: String,
        rate: Decimal,
    },
}

/// Currency conversion into a base currency.
#[derive(Debug, Clone)]
pub struct Fx {
    pub base: String,
    pub rates: HashMap<String, Decimal>,
}

impl Fx {
    /// The exact amount in the base currency, or why there is none.
    pub fn convert(&self, amount: Decimal, currency: &str) -> Result<Decimal, FxError> {
        if currency == self.base {
            return Ok(amount);
        }
        let Some(rate) = self.rates.get(currency) else {
            return Err(FxError::NoRate(currency.to_owned()));
        };
        match amount.checked_mul(*rate) {
            Some(p) if p.scale() == amount.scale() + rate.scale() || p.is_zero() => Ok(p),
            _ => Err(FxError::Precision {
                amount,
                currency: currency.to_owned(),
                rate: *rate,
            }),
        }
    }
}

/// The most approvals a hold rule may ask for.
pub const MAX_APPROVALS: u8 = 5;

/// A loaded, validated ruleset.
#[derive(Debug)]
pub struct Ruleset {
    /// Content hash of the rules files (12 hex digits).
    pub version: Arc<str>,
    pub precedence: [Outcome; 3],
    pub on_error: OnError,
    pub scoring: Option<Scoring>,
    pub fx: Option<Fx>,
    /// The `[lists]` values, in the order conditions refer to them.
    pub list_values: Vec<ConstList>,
    pub counters: Vec<CounterDef>,
    pub rules: Vec<RuleDef>,
    pub files: Vec<PathBuf>,
    /// The actions the conditions' guards name, for [`Activation::action`].
    pub actions: ActionIndex,
}

/// A counter whose key does not contain the partition key: on several partitions, its
/// values would be split by partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitCounter {
    pub id: Arc<str>,
    /// The counter's key paths, as written.
    pub key: Vec<String>,
}

/// Why a ruleset cannot decide intents spread over several partitions by a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PartitioningError {
    pub partition_key: String,
    pub partitions: i32,
    pub counters: Vec<SplitCounter>,
}

impl fmt::Display for PartitioningError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (pk, n) = (&self.partition_key, self.partitions);
        write!(
            f,
            "the intents topic has {n} partitions keyed by `{pk}`, but {} counter{} not keyed by `{pk}`, so {} would be split by partition and miss intents decided elsewhere:",
            self.counters.len(),
            if self.counters.len() == 1 { " is" } else { "s are" },
            if self.counters.len() == 1 { "its count" } else { "their counts" },
        )?;
        for c in &self.counters {
            write!(f, "\n  counter `{}` has key [{}]", c.id, c.key.join(", "))?;
        }
        write!(
            f,
            "\nways out: use one partition (every counter is then exact); or key the intents by a field every counter's key contains (`[kafka] partition_key`); or add `{pk}` to the key of the counters above"
        )
    }
}

/// One problem found while loading a ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    pub file: PathBuf,
    /// 1-based line and column; 0 when the problem has no position.
    pub line: usize,
    pub column: usize,
    /// What the problem belongs to, e.g. ``rule `large-transfer` ``.
    pub item: Option<String>,
    pub message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        f.write_str(": ")?;
        if let Some(item) = &self.item {
            write!(f, "{item}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem that kept a ruleset from loading.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// The file format, as written.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    decision: Option<Spanned<RawDecision>>,
    scoring: Option<Spanned<RawScoring>>,
    fx: Option<Spanned<RawFx>>,
    lists: Option<BTreeMap<Spanned<String>, RawList>>,
    #[serde(default)]
    counter: Vec<RawCounter>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

type RawList = Spanned<Vec<Spanned<toml::Value>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDecision {
    precedence: Option<Spanned<Vec<String>>>,
    on_error: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScoring {
    hold_at: Option<Spanned<i64>>,
    deny_at: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFx {
    base: Spanned<String>,
    #[serde(default)]
    rates: BTreeMap<Spanned<String>, Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCounter {
    id: Spanned<String>,
    description: Option<String>,
    key: Spanned<Vec<Spanned<String>>>,
    aggregate: Spanned<String>,
    field: Option<Spanned<String>>,
    window: Spanned<String>,
    resolution: Option<Spanned<String>>,
    #[serde(rename = "where")]
    filter: Option<Spanned<String>>,
    contributes: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: Spanned<String>,
    description: Option<String>,
    when: Spanned<String>,
    action: Spanned<String>,
    score: Option<Spanned<i64>>,
    message: Option<Spanned<String>>,
    approvals: Option<Spanned<i64>>,
}

// ---------------------------------------------------------------------------------------
// Loading.

/// A source file being validated: turns byte spans into line / column.
struct Source<'s> {
    path: &'s Path,
    text: &'s str,
}

impl Source<'_> {
    fn position(&self, byte: usize) -> (usize, usize) {
        line_column(self.text, byte)
    }

    fn error(&self, span: Range<usize>, item: Option<String>, message: String) -> LoadError {
        let (line, column) = self.position(span.start);
        LoadError {
            file: self.path.to_owned(),
            line,
            column,
            item,
            message,
        }
    }

    /// The byte offset in the file of character `offset` of a string value at `span`.
    fn inside_string(&self, span: &Range<usize>, offset: Option<usize>) -> Range<usize> {
        let raw = &self.text[span.clone()];
        let mut skip = if raw.starts_with("'''") || raw.starts_with("\"\"\"") {
            3
        } else {
            1
        };
        if raw[skip.min(raw.len())..].starts_with('\n') {
            skip += 1;
        } else if raw[skip.min(raw.len())..].starts_with("\r\n") {
            skip += 2;
        }
        let body = &raw[skip.min(raw.len())..];
        let within = offset.map_or(0, |o| {
            body.char_indices().nth(o).map_or(body.len(), |(i, _)| i)
        });
        let start = span.start + skip + within;
        start..start
    }
}

/// The 1-based line and column (in characters) of byte offset `byte` of `text`.
pub fn line_column(text: &str, byte: usize) -> (usize, usize) {
    let mut byte = byte.min(text.len());
    while !text.is_char_boundary(byte) {
        byte -= 1;
    }
    let before = &text[..byte];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn item(kind: &str, id: &str) -> Option<String> {
    Some(format!("{kind} `{id}`"))
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn is_rule_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A number written in TOML (string, integer or float), read from its text.
fn toml_decimal(value: &Spanned<toml::Value>, src: &Source<'_>) -> Option<Decimal> {
    match value.get_ref() {
        toml::Value::String(s) => Decimal::from_str_exact(s).ok(),
        toml::Value::Integer(i) => Some(Decimal::from(*i)),
        toml::Value::Float(_) => {
            let text = src.text[value.span()].replace('_', "");
            if text.contains(['e', 'E']) {
                Decimal::from_scientific(&text).ok()
            } else {
                Decimal::from_str_exact(&text).ok()
            }
        }
        _ => None,
    }
}

/// What `Ruleset::load_dir` found in one file, before cross-file checks.
struct Parsed<'s> {
    src: Source<'s>,
    raw: RawFile,
}

impl Ruleset {
    /// Loads every `*.toml` file directly in `dir`, in name order.
    pub fn load_dir(dir: &Path) -> Result<Ruleset, LoadErrors> {
        let fail = |message: String| {
            LoadErrors(vec![LoadError {
                file: dir.to_owned(),
                line: 0,
                column: 0,
                item: None,
                message,
            }])
        };
        let entries = std::fs::read_dir(dir)
            .map_err(|e| fail(format!("cannot read the rules directory: {e}")))?;
        let files_here: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        // `Payments.TOML` was meant as rules: refused with a word, never skipped in silence.
        let misnamed: Vec<LoadError> = files_here
            .iter()
            .filter(|p| {
                p.extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| x != "toml" && x.eq_ignore_ascii_case("toml"))
            })
            .map(|p| LoadError {
                file: p.clone(),
                line: 0,
                column: 0,
                item: None,
                message: "rules files end in `.toml`, in lower case, and this one is not loaded: rename it (or move it out of the rules directory)".to_owned(),
            })
            .collect();
        if !misnamed.is_empty() {
            return Err(LoadErrors(misnamed));
        }
        let mut paths: Vec<PathBuf> = files_here
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        paths.sort();
        if paths.is_empty() {
            return Err(fail("no `*.toml` rules files in this directory".to_owned()));
        }
        let mut files = Vec::new();
        for path in &paths {
            let text = std::fs::read_to_string(path).map_err(|e| {
                LoadErrors(vec![LoadError {
                    file: path.clone(),
                    line: 0,
                    column: 0,
                    item: None,
                    message: format!("cannot read: {e}"),
                }])
            })?;
            files.push((path.clone(), text));
        }
        Self::load_sources(&files)
    }

    /// Whether this ruleset can decide intents spread over `partitions` partitions by
    /// `partition_key`: every counter's key must then contain it, or its values would be
    /// split by partition. One partition is always exact.
    pub fn check_partitioning(
        &self,
        partition_key: &FieldPath,
        partitions: i32,
    ) -> Result<(), PartitioningError> {
        if partitions <= 1 {
            return Ok(());
        }
        let counters: Vec<SplitCounter> = self
            .counters
            .iter()
            .filter(|c| !c.key.contains(partition_key))
            .map(|c| SplitCounter {
                id: c.id.clone(),
                key: c.key_text.clone(),
            })
            .collect();
        if counters.is_empty() {
            Ok(())
        } else {
            Err(PartitioningError {
                partition_key: partition_key.to_string(),
                partitions,
                counters,
            })
        }
    }

    /// Loads a ruleset from `(path, text)` pairs, in the given order.
    pub fn load_sources(files: &[(PathBuf, String)]) -> Result<Ruleset, LoadErrors> {
        Self::load_sources_with(files, CompileOptions::default())
    }

    /// [`Ruleset::load_sources`], with conditions compiled under `options`.
    pub fn load_sources_with(
        files: &[(PathBuf, String)],
        options: CompileOptions,
    ) -> Result<Ruleset, LoadErrors> {
        let mut errors = Vec::new();
        let mut parsed = Vec::new();
        for (path, text) in files {
            let src = Source { path, text };
            match toml::from_str::<RawFile>(text) {
                Ok(raw) => parsed.push(Parsed { src, raw }),
                Err(e) => {
                    let span = e.span().unwrap_or(0..0);
                    let owner = enclosing_item(text, span.start);
                    errors.push(src.error(span, owner, e.message().trim_end().to_owned()));
                }
            }
        }
        let mut hasher = Sha256::new();
        for (path, text) in files {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            hasher.update(name.as_bytes());
            hasher.update([0]);
            hasher.update(text.as_bytes());
            hasher.update([0]);
        }
        let digest = hasher.finalize();
        let version: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();

        let mut b = Builder {
            options,
            ..Builder::default()
        };
        b.global_sections(&parsed, &mut errors);
        b.lists(&parsed, &mut errors);
        b.counters(&parsed, &mut errors);
        b.rules(&parsed, &mut errors);
        if !errors.is_empty() {
            return Err(LoadErrors(errors));
        }
        let list_values = std::mem::take(&mut b.list_values);
        let actions = ActionIndex::build(
            &mut b
                .rules
                .iter_mut()
                .map(|r| &mut r.when)
                .chain(b.counters.iter_mut().filter_map(|c| c.filter.as_mut()))
                .collect::<Vec<_>>(),
        );
        Ok(Ruleset {
            version: version.into(),
            precedence: b
                .precedence
                .unwrap_or([Outcome::Deny, Outcome::Allow, Outcome::Hold]),
            on_error: b.on_error.unwrap_or(OnError::Hold),
            scoring: b.scoring,
            fx: b.fx,
            list_values,
            counters: b.counters,
            rules: b.rules,
            files: files.iter().map(|(p, _)| p.clone()).collect(),
            actions,
        })
    }
}

/// For a TOML error at `offset`, the `[[rule]]` / `[[counter]]` it falls in, by its `id`.
fn enclosing_item(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let is_header = |l: &str| l.trim_start().starts_with('[');
    // The last table header at or before the error's line.
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let header_at = text[..line_start]
        .match_indices('\n')
        .map(|(i, _)| i + 1)
        .chain(std::iter::once(0))
        .filter(|&i| is_header(&text[i..]))
        .max()
        .or_else(|| is_header(&text[line_start..]).then_some(line_start))?;
    let mut lines = text[header_at..].lines();
    let kind = match lines.next()?.trim() {
        "[[rule]]" => "rule",
        "[[counter]]" => "counter",
        _ => return None,
    };
    let id = lines.take_while(|l| !is_header(l)).find_map(|l| {
        let (k, v) = l.split_once('=')?;
        (k.trim() == "id").then(|| v.trim().trim_matches(['"', '\'']).to_owned())
    })?;
    item(kind, &id)
}

#[derive(Default)]
struct Builder {
    options: CompileOptions,
    precedence: Option<[Outcome; 3]>,
    on_error: Option<OnError>,
    scoring: Option<Scoring>,
    fx: Option<Fx>,
    list_types: Vec<(String, Elem)>,
    list_values: Vec<ConstList>,
    counters: Vec<CounterDef>,
    counter_types: Vec<(String, Ty)>,
    rules: Vec<RuleDef>,
}

/// Remembers where a once-only section or an id was first defined.
struct Seen<'a> {
    first: HashMap<String, (&'a Path, usize)>,
}

impl<'a> Seen<'a> {
    fn new() -> Self {
        Seen {
            first: HashMap::new(),
        }
    }

    /// `Some(message)` when `key` was seen before.
    fn again(&mut self, key: &str, src: &Source<'a>, span: &Range<usize>) -> Option<String> {
        let (line, _) = src.position(span.start);
        match self.first.get(key) {
            Some((path, first_line)) => Some(format!(
                "already defined at {}:{first_line}",
                path.display()
            )),
            None => {
                self.first.insert(key.to_owned(), (src.path, line));
                None
            }
        }
    }

    /// Reports a section that appears again.
    fn once(
        &mut self,
        section: &str,
        src: &Source<'a>,
        span: &Range<usize>,
        errors: &mut Vec<LoadError>,
    ) {
        if let Some(msg) = self.again(section, src, span) {
            errors.push(src.error(
                span.clone(),
                None,
                format!("`{section}` may appear once; {msg}"),
            ));
        }
    }
}

impl Builder {
    fn global_sections(&mut self, parsed: &[Parsed<'_>], errors: &mut Vec<LoadError>) {
        let mut seen = Seen::new();
        for Parsed { src, raw } in parsed {
            if let Some(decision) = &raw.decision {
                seen.once("[decision]", src, &decision.span(), errors);
                let d = decision.get_ref();
                if let Some(p) = &d.precedence {
                    let names = p.get_ref();
                    let outcomes: Vec<Option<Outcome>> =
                        names.iter().map(|n| Outcome::parse(n)).collect();
                    let unique: HashSet<Outcome> = outcomes.iter().flatten().copied().collect();
                    if outcomes.len() != 3
                        || outcomes.iter().any(Option::is_none)
                        || unique.len() != 3
                    {
                        errors.push(src.error(
                            p.span(),
                            None,
                            format!(
                                "`precedence` must name each of \"deny\", \"allow\" and \"hold\" exactly once, found {names:?}"
                            ),
                        ));
                    } else {
                        let o: Vec<Outcome> = outcomes.into_iter().flatten().collect();
                        self.precedence = Some([o[0], o[1], o[2]]);
                    }
                }
                if let Some(on_error) = &d.on_error {
                    let choices = [
                        ("hold", OnError::Hold),
                        ("deny", OnError::Deny),
                        ("ignore", OnError::Ignore),
                    ];
                    self.on_error = keyword(src, on_error, &None, "on_error", &choices, errors);
                }
            }
            if let Some(scoring) = &raw.scoring {
                seen.once("[scoring]", src, &scoring.span(), errors);
                let s = scoring.get_ref();
                let hold_at = s.hold_at.as_ref().map(|v| *v.get_ref());
                let deny_at = s.deny_at.as_ref().map(|v| *v.get_ref());
                if let (Some(h), Some(d)) = (hold_at, deny_at) {
                    if h > d {
                        errors.push(src.error(
                            scoring.span(),
                            None,
                            format!("`hold_at` ({h}) must not be above `deny_at` ({d})"),
                        ));
                    }
                }
                if hold_at.is_none() && deny_at.is_none() {
                    errors.push(src.error(
                        scoring.span(),
                        None,
                        "`[scoring]` needs `hold_at`, `deny_at` or both".to_owned(),
                    ));
                }
                self.scoring = Some(Scoring { hold_at, deny_at });
            }
            if let Some(fx) = &raw.fx {
                seen.once("[fx]", src, &fx.span(), errors);
                let f = fx.get_ref();
                let base = f.base.get_ref();
                if !is_iso4217(base) {
                    errors.push(src.error(
                        f.base.span(),
                        None,
                        format!("`base` `{base}` is not an ISO 4217 currency code"),
                    ));
                }
                let mut rates = HashMap::new();
                for (code, rate) in &f.rates {
                    if !is_iso4217(code.get_ref()) {
                        errors.push(src.error(
                            code.span(),
                            None,
                            format!(
                                "rate key `{}` is not an ISO 4217 currency code",
                                code.get_ref()
                            ),
                        ));
                    }
                    match toml_decimal(rate, src) {
                        Some(r) if r > Decimal::ZERO => {
                            rates.insert(code.get_ref().clone(), r);
                        }
                        _ => errors.push(src.error(
                            rate.span(),
                            None,
                            format!(
                                "the rate for `{}` must be a positive decimal, e.g. \"0.92\"",
                                code.get_ref()
                            ),
                        )),
                    }
                }
                self.fx = Some(Fx {
                    base: base.clone(),
                    rates,
                });
            }
        }
    }

    fn lists(&mut self, parsed: &[Parsed<'_>], errors: &mut Vec<LoadError>) {
        let mut seen = Seen::new();
        for Parsed { src, raw } in parsed {
            for (id, items) in raw.lists.iter().flatten() {
                let name = id.get_ref();
                let it = item("list", name);
                if let Some(msg) = seen.again(name, src, &id.span()) {
                    errors.push(src.error(
                        id.span(),
                        it.clone(),
                        format!("duplicate list id; {msg}"),
                    ));
                    continue;
                }
                if !is_identifier(name) {
                    errors.push(src.error(
                        id.span(),
                        it.clone(),
                        "a list id must be an identifier (letters, digits, `_`)".to_owned(),
                    ));
                }
                let mut values = Vec::new();
                let mut kinds = HashSet::new();
                for v in items.get_ref() {
                    let scalar = match v.get_ref() {
                        toml::Value::String(s) => Some(Scalar::Str(s.as_str().into())),
                        toml::Value::Integer(_) | toml::Value::Float(_) => {
                            toml_decimal(v, src).map(Scalar::Num)
                        }
                        _ => None,
                    };
                    match scalar {
                        Some(s) => {
                            kinds.insert(matches!(s, Scalar::Str(_)));
                            values.push(s);
                        }
                        None => errors.push(src.error(
                            v.span(),
                            it.clone(),
                            "list items must be strings or numbers".to_owned(),
                        )),
                    }
                }
                let elem = match (kinds.contains(&true), kinds.contains(&false)) {
                    (true, false) => Elem::Str,
                    (false, true) => Elem::Number,
                    _ => Elem::Dyn,
                };
                self.list_types.push((name.clone(), elem));
                self.list_values.push(ConstList::new(values));
            }
        }
    }

    fn counters(&mut self, parsed: &[Parsed<'_>], errors: &mut Vec<LoadError>) {
        let mut seen = Seen::new();
        // Types first, so rules can be checked against every counter.
        for Parsed { src, raw } in parsed {
            for c in &raw.counter {
                let id = c.id.get_ref();
                let it = item("counter", id);
                if let Some(msg) = seen.again(id, src, &c.id.span()) {
                    errors.push(src.error(c.id.span(), it, format!("duplicate counter id; {msg}")));
                    continue;
                }
                if !is_identifier(id) {
                    errors.push(src.error(
                        c.id.span(),
                        it.clone(),
                        "a counter id must be an identifier (letters, digits, `_`)".to_owned(),
                    ));
                }
                // A counter with errors is still known to rules, so that they do not also
                // report it as unknown.
                self.counter_types.push((id.clone(), Ty::Number));
                if let Some(def) = self.counter(src, c, errors) {
                    self.counters.push(def);
                }
            }
        }
    }

    fn counter(
        &self,
        src: &Source<'_>,
        c: &RawCounter,
        errors: &mut Vec<LoadError>,
    ) -> Option<CounterDef> {
        let id: Arc<str> = Arc::from(c.id.get_ref().as_str());
        let it = item("counter", &id);
        let before = errors.len();
        let path = |p: &Spanned<String>, errors: &mut Vec<LoadError>| {
            let parsed = FieldPath::parse(p.get_ref());
            if parsed.is_none() {
                errors.push(src.error(
                    p.span(),
                    it.clone(),
                    format!(
                        "`{}` is not an intent field; use `intent_id`, `agent_id`, `account_id`, `action`, `currency`, `amount`, `counterparty.<field>` or `attributes.<path>`",
                        p.get_ref()
                    ),
                ));
            }
            parsed
        };
        let key: Vec<Option<FieldPath>> = c.key.get_ref().iter().map(|p| path(p, errors)).collect();
        if key.is_empty() {
            errors.push(src.error(
                c.key.span(),
                it.clone(),
                "`key` needs at least one field".to_owned(),
            ));
        }
        let choices = [
            ("count", Aggregate::Count),
            ("sum", Aggregate::Sum),
            ("max", Aggregate::Max),
            ("distinct", Aggregate::Distinct),
        ];
        let aggregate = keyword(src, &c.aggregate, &it, "aggregate", &choices, errors);
        let field = c.field.as_ref().and_then(|f| path(f, errors));
        match (aggregate, &c.field) {
            (Some(Aggregate::Count), Some(f)) => errors.push(src.error(
                f.span(),
                it.clone(),
                "a count counter takes no `field`".to_owned(),
            )),
            (Some(Aggregate::Sum | Aggregate::Max | Aggregate::Distinct), None) => {
                errors.push(src.error(
                    c.aggregate.span(),
                    it.clone(),
                    format!("a {} counter needs a `field`", c.aggregate.get_ref()),
                ))
            }
            (Some(Aggregate::Sum | Aggregate::Max), Some(f)) => {
                if matches!(
                    field,
                    Some(FieldPath::Counterparty(_))
                        | Some(FieldPath::Field(
                            Field::IntentId
                                | Field::AgentId
                                | Field::AccountId
                                | Field::Action
                                | Field::Currency
                        ))
                ) {
                    errors.push(src.error(f.span(), it.clone(), format!("`{}` is not a number; sum and max need `amount` or a numeric `attributes.<path>`", f.get_ref())));
                }
            }
            _ => {}
        }
        let duration = |s: &Spanned<String>, what: &str, errors: &mut Vec<LoadError>| {
            match expr::parse_duration(s.get_ref()) {
                Ok(d) if d > TimeDelta::zero() => Some(d),
                Ok(_) => {
                    errors.push(src.error(
                        s.span(),
                        it.clone(),
                        format!("`{what}` must be positive"),
                    ));
                    None
                }
                Err(e) => {
                    errors.push(src.error(s.span(), it.clone(), format!("`{what}`: {e}")));
                    None
                }
            }
        };
        let window = duration(&c.window, "window", errors);
        let resolution = match (&c.resolution, window) {
            (Some(spanned), Some(w)) => match duration(spanned, "resolution", errors) {
                Some(r) if r > w => {
                    errors.push(src.error(
                        spanned.span(),
                        it.clone(),
                        "`resolution` must not be longer than `window`".to_owned(),
                    ));
                    None
                }
                other => other,
            },
            (None, Some(w)) => Some(default_resolution(w)),
            _ => None,
        };
        let filter = c.filter.as_ref().and_then(|w| {
            let scope = Scope {
                counters: None,
                lists: &self.list_types,
            };
            self.compile_at(src, w, &scope, true, &it, errors)
        });
        let choices = [
            ("all", Contributes::All),
            ("allowed", Contributes::Allowed),
            ("not_denied", Contributes::NotDenied),
        ];
        let contributes = c
            .contributes
            .as_ref()
            .and_then(|v| keyword(src, v, &it, "contributes", &choices, errors))
            .unwrap_or(Contributes::NotDenied);
        if errors.len() > before {
            return None;
        }
        let (window, resolution, aggregate) = (window?, resolution?, aggregate?);
        let res_ns = resolution.num_nanoseconds()?.max(1);
        let win_ns = window.num_nanoseconds()?;
        let key_text: Vec<String> = c
            .key
            .get_ref()
            .iter()
            .map(|p| p.get_ref().clone())
            .collect();
        Some(CounterDef {
            too_old: format!(
                "counter `{id}` is unavailable: the intent is dated more than one window ({}) before the newest intent, and that part of the state is no longer kept",
                c.window.get_ref()
            ),
            unavailable: key_text
                .iter()
                .map(|k| format!("counter `{id}` is unavailable: the intent has no `{k}`"))
                .collect(),
            id,
            description: c.description.clone(),
            key: key.into_iter().flatten().collect(),
            key_text,
            aggregate,
            field,
            window,
            resolution,
            buckets: (win_ns + res_ns - 1) / res_ns,
            filter,
            filter_text: c.filter.as_ref().map(|w| w.get_ref().clone()),
            contributes,
        })
    }

    fn rules(&mut self, parsed: &[Parsed<'_>], errors: &mut Vec<LoadError>) {
        let mut seen = Seen::new();
        for Parsed { src, raw } in parsed {
            for r in &raw.rule {
                let id = r.id.get_ref();
                let it = item("rule", id);
                // A duplicate is still checked, so that every problem shows at once.
                if let Some(msg) = seen.again(id, src, &r.id.span()) {
                    errors.push(src.error(
                        r.id.span(),
                        it.clone(),
                        format!("duplicate rule id; {msg}"),
                    ));
                }
                if !is_rule_id(id) {
                    errors.push(src.error(
                        r.id.span(),
                        it.clone(),
                        "a rule id must be 1 to 64 letters, digits, `_`, `-` or `.`".to_owned(),
                    ));
                }
                let scope = Scope {
                    counters: Some(&self.counter_types),
                    lists: &self.list_types,
                };
                let when = self.compile_at(src, &r.when, &scope, true, &it, errors);
                let choices = [
                    ("allow", RuleAction::Allow),
                    ("hold", RuleAction::Hold),
                    ("deny", RuleAction::Deny),
                    ("score", RuleAction::Score),
                ];
                let action = keyword(src, &r.action, &it, "action", &choices, errors);
                let score = match (action, &r.score) {
                    (Some(RuleAction::Score), Some(s)) => *s.get_ref(),
                    (Some(RuleAction::Score), None) => {
                        errors.push(src.error(
                            r.action.span(),
                            it.clone(),
                            "a score rule needs `score = <integer>`".to_owned(),
                        ));
                        0
                    }
                    (Some(_), Some(s)) => {
                        errors.push(src.error(
                            s.span(),
                            it.clone(),
                            "`score` is only allowed on rules with action = \"score\"".to_owned(),
                        ));
                        0
                    }
                    _ => 0,
                };
                let approvals = match (action, &r.approvals) {
                    (_, None) => 1,
                    (Some(RuleAction::Hold), Some(a)) => match u8::try_from(*a.get_ref()) {
                        Ok(n @ 1..=MAX_APPROVALS) => n,
                        _ => {
                            errors.push(src.error(
                                a.span(),
                                it.clone(),
                                format!("`approvals` must be 1 to {MAX_APPROVALS}"),
                            ));
                            1
                        }
                    },
                    (Some(_), Some(a)) => {
                        errors.push(
                            src.error(
                                a.span(),
                                it.clone(),
                                "`approvals` is only allowed on rules with action = \"hold\""
                                    .to_owned(),
                            ),
                        );
                        1
                    }
                    (None, Some(_)) => 1,
                };
                let message = r
                    .message
                    .as_ref()
                    .and_then(|m| self.template(src, m, &scope, &it, errors));
                if let (Some(when), Some(action)) = (when, action) {
                    self.rules.push(RuleDef {
                        id: Arc::from(id.as_str()),
                        description: r.description.clone(),
                        when,
                        action,
                        score,
                        message,
                        approvals,
                    });
                }
            }
        }
    }
}

/// Reads a keyword setting (`action = "hold"`) as one of `choices`; anything else is an
/// error at the value, listing the choices.
fn keyword<T: Copy>(
    src: &Source<'_>,
    value: &Spanned<String>,
    it: &Option<String>,
    what: &str,
    choices: &[(&str, T)],
    errors: &mut Vec<LoadError>,
) -> Option<T> {
    let text = value.get_ref().as_str();
    let found = choices
        .iter()
        .find(|(name, _)| *name == text)
        .map(|(_, v)| *v);
    if found.is_none() {
        let names: Vec<String> = choices.iter().map(|(n, _)| format!("\"{n}\"")).collect();
        let (last, rest) = names
            .split_last()
            .map_or((String::new(), &[][..]), |(l, r)| (l.clone(), r));
        let listed = if rest.is_empty() {
            last
        } else {
            format!("{} or {last}", rest.join(", "))
        };
        let message = if what == "action" {
            format!("unknown action `{text}`; a rule's action is {listed}")
        } else {
            format!("`{what}` must be {listed}, found `{text}`")
        };
        errors.push(src.error(value.span(), it.clone(), message));
    }
    found
}

/// The default bucket width: a sixtieth of the window, rounded down to a whole millisecond
/// (so never coarser than window/60).
pub fn default_resolution(window: TimeDelta) -> TimeDelta {
    let ms = (window.num_milliseconds() / 60).max(1);
    TimeDelta::milliseconds(ms)
}

impl Builder {
    fn compile_at(
        &self,
        src: &Source<'_>,
        text: &Spanned<String>,
        scope: &Scope<'_>,
        want_bool: bool,
        it: &Option<String>,
        errors: &mut Vec<LoadError>,
    ) -> Option<Program> {
        match expr::compile(
            text.get_ref(),
            scope,
            want_bool,
            &self.list_values,
            self.options,
        ) {
            Ok(p) => Some(p),
            Err(list) => {
                for CompileError { offset, message } in list {
                    let at = src.inside_string(&text.span(), offset);
                    errors.push(src.error(at, it.clone(), message));
                }
                None
            }
        }
    }

    /// Parses a message template: `{name}` placeholders, `{{` and `}}` for literal braces.
    fn template(
        &self,
        src: &Source<'_>,
        text: &Spanned<String>,
        scope: &Scope<'_>,
        it: &Option<String>,
        errors: &mut Vec<LoadError>,
    ) -> Option<Template> {
        let s = text.get_ref();
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = s.char_indices().peekable();
        let before = errors.len();
        let at = |char_pos: usize| src.inside_string(&text.span(), Some(char_pos));
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    if !literal.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut literal)));
                    }
                    let start = i + 1;
                    let Some(end) = s[start..].find('}').map(|e| start + e) else {
                        errors.push(src.error(
                            at(s[..i].chars().count()),
                            it.clone(),
                            "unclosed `{` in `message`; write `{{` for a literal brace".to_owned(),
                        ));
                        break;
                    };
                    let name = s[start..end].trim();
                    let pos = s[..start].chars().count();
                    match expr::compile(name, scope, false, &self.list_values, self.options) {
                        Ok(p) if p.is_name_path() => parts.push(Part::Name(p)),
                        _ => errors.push(src.error(
                            at(pos),
                            it.clone(),
                            format!("unknown placeholder `{{{name}}}` in `message`; placeholders name a condition name such as `{{amount}}`, `{{counterparty.id}}` or `{{counters.<id>}}`"),
                        )),
                    }
                    while chars.peek().is_some_and(|(j, _)| *j <= end) {
                        chars.next();
                    }
                }
                '}' => {
                    errors.push(src.error(
                        at(s[..i].chars().count()),
                        it.clone(),
                        "unmatched `}` in `message`; write `}}` for a literal brace".to_owned(),
                    ));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Text(literal));
        }
        let capacity = parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.len(),
                Part::Name(_) => 24,
            })
            .sum();
        (errors.len() == before).then_some(Template { parts, capacity })
    }
}

#[cfg(test)]
mod tests;
