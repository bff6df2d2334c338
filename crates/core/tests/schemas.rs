//! The contracts in `schemas/` (JSON Schema 2020-12) against the code that reads and writes the
//! records they describe ([docs/intents.md](../../../docs/intents.md)):
//!
//! * each schema is a valid 2020-12 schema and says what the code's own constants say (the
//!   intent's fields, the currency list, the dead-letter kinds, the system rule ids, limits);
//! * every example of docs/intents.md, every line of the wire golden files and of the replay
//!   fixtures' expected outputs, and every line of `examples/intents.jsonl` matches its schema;
//! * the engine's own output (replay lines and Kafka records, decisions of every kind, system
//!   decisions, dead letters) over the sample intents and rules matches its schema;
//! * on the fixtures of `tests/intents/{valid,invalid}/`, the parser accepts exactly what the
//!   intent schema accepts, except for the differences listed in [`KNOWN_DIFFERENCES`], each
//!   with the reason a JSON Schema cannot say what the parser checks.
//!
//! Validation is offline: the four schemas are handed to the validator as resources, and
//! `format` is asserted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Tests fail loudly.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use jsonschema::{Draft, Registry, Validator};
use serde_json::Value;

use riskgate_core::decision::{DeadLetter, Outcome, Source, DEAD_LETTER_PAYLOAD_MAX};
use riskgate_core::engine::{Clock, Engine, EngineOptions, Processed, RecordKey, SystemReason};
use riskgate_core::intent::{
    parse_intent, CpField, Field, InvalidKind, DEFAULT_MAX_BYTES, MAX_INTENT_ID_CHARS,
};
use riskgate_core::rules::{Ruleset, MAX_APPROVALS};

/// The record kinds with a schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Kind {
    Intent,
    Decision,
    DeadLetter,
    ReviewRecord,
}

impl Kind {
    const ALL: [Kind; 4] = [
        Kind::Intent,
        Kind::Decision,
        Kind::DeadLetter,
        Kind::ReviewRecord,
    ];

    /// The name docs/intents.md marks an example with (`<!-- schema: intent -->`).
    fn name(self) -> &'static str {
        match self {
            Kind::Intent => "intent",
            Kind::Decision => "decision",
            Kind::DeadLetter => "dead-letter",
            Kind::ReviewRecord => "review-record",
        }
    }

    fn named(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    fn file(self) -> String {
        format!("{}.schema.json", self.name())
    }

    fn id(self) -> String {
        format!("https://riskgate.dev/schemas/{}", self.file())
    }
}

fn root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The non-blank lines of a JSON-lines file, numbered from 1.
fn lines(path: &Path) -> Vec<(usize, String)> {
    read(path)
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l.to_owned()))
        .collect()
}

/// The four schemas, ready to validate with.
struct Contracts {
    schemas: BTreeMap<Kind, Value>,
    registry: Registry<'static>,
    validators: HashMap<Kind, Validator>,
    /// Validators of parts of a schema, by URI (`...decision.schema.json#/properties/source`).
    parts: HashMap<String, Validator>,
}

impl Contracts {
    fn load() -> Contracts {
        let mut schemas = BTreeMap::new();
        let mut builder = Registry::new();
        for kind in Kind::ALL {
            let path = root().join("schemas").join(kind.file());
            let schema: Value = serde_json::from_str(&read(&path))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert_eq!(
                schema["$schema"],
                "https://json-schema.org/draft/2020-12/schema",
                "{}",
                path.display()
            );
            assert_eq!(schema["$id"], kind.id().as_str(), "{}", path.display());
            builder = builder.add(kind.id(), schema.clone()).unwrap();
            schemas.insert(kind, schema);
        }
        let registry = builder.draft(Draft::Draft202012).prepare().unwrap();
        let mut contracts = Contracts {
            schemas,
            registry,
            validators: HashMap::new(),
            parts: HashMap::new(),
        };
        for kind in Kind::ALL {
            let schema = contracts.schemas[&kind].clone();
            // Building checks the schema against the 2020-12 meta-schema.
            let validator = contracts
                .options()
                .build(&schema)
                .unwrap_or_else(|e| panic!("{}: {e}", kind.file()));
            contracts.validators.insert(kind, validator);
        }
        contracts
    }

    fn options(&self) -> jsonschema::ValidationOptions<'_> {
        jsonschema::options()
            .with_draft(Draft::Draft202012)
            .should_validate_formats(true)
            .offline()
            .with_registry(&self.registry)
    }

    /// Why `value` does not match the schema of `kind`, if it does not.
    fn problems(&self, kind: Kind, value: &Value) -> Option<String> {
        let errors: Vec<String> = self.validators[&kind]
            .iter_errors(value)
            .map(|e| format!("{} at `{}`", e, e.instance_path()))
            .collect();
        (!errors.is_empty()).then(|| errors.join("; "))
    }

    fn accepts(&self, kind: Kind, value: &Value) -> bool {
        self.validators[&kind].is_valid(value)
    }

    /// Checks that `value` matches its schema; `what` says where it came from.
    fn check(&self, kind: Kind, what: &str, value: &Value, problems: &mut Vec<String>) {
        if let Some(p) = self.problems(kind, value) {
            problems.push(format!("{what}: not a valid {}: {p}", kind.name()));
        }
    }

    /// Checks one line of JSON text.
    fn check_text(&self, kind: Kind, what: &str, text: &str, problems: &mut Vec<String>) {
        match serde_json::from_str::<Value>(text) {
            Ok(v) => self.check(kind, what, &v, problems),
            Err(e) => problems.push(format!("{what}: not JSON: {e}")),
        }
    }

    /// The part of a schema at `pointer`, its `$ref`s followed: the schema of that part and
    /// the pointer into it.
    fn resolve(&self, mut kind: Kind, mut pointer: String) -> (Kind, String, &Value) {
        for _ in 0..16 {
            let part = self.schemas[&kind]
                .pointer(&pointer)
                .unwrap_or_else(|| panic!("{}#{pointer}: no such part", kind.file()));
            let Some(target) = part.get("$ref").and_then(Value::as_str) else {
                return (kind, pointer, part);
            };
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            if !file.is_empty() {
                kind = Kind::ALL
                    .into_iter()
                    .find(|k| k.file() == file)
                    .unwrap_or_else(|| panic!("`$ref` to an unknown file: {target}"));
            }
            pointer = fragment.to_owned();
        }
        panic!("{}#{pointer}: `$ref`s go round in circles", kind.file())
    }

    /// Checks a *partial* record: each field it has against the schema of that field (and
    /// so on into objects whose schema lists their properties). The replay fixtures'
    /// expected lines name only the fields they check.
    fn check_partial(
        &mut self,
        kind: Kind,
        pointer: &str,
        what: &str,
        value: &Value,
        problems: &mut Vec<String>,
    ) {
        let (kind, pointer, part) = self.resolve(kind, pointer.to_owned());
        if let (Value::Object(fields), Some(Value::Object(properties))) =
            (value, part.get("properties"))
        {
            let known: BTreeSet<String> = properties.keys().cloned().collect();
            for (name, v) in fields {
                if known.contains(name) {
                    let at = format!("{pointer}/properties/{}", escape(name));
                    self.check_partial(kind, &at, &format!("{what}.{name}"), v, problems);
                } else {
                    problems.push(format!("{what}: field `{name}` is not in {}", kind.file()));
                }
            }
            return;
        }
        let uri = format!("{}#{pointer}", kind.id());
        if !self.parts.contains_key(&uri) {
            let validator = self
                .options()
                .build(&serde_json::json!({ "$ref": uri }))
                .unwrap_or_else(|e| panic!("{uri}: {e}"));
            self.parts.insert(uri.clone(), validator);
        }
        let errors: Vec<String> = self.parts[&uri]
            .iter_errors(value)
            .map(|e| e.to_string())
            .collect();
        if !errors.is_empty() {
            problems.push(format!("{what} ({uri}): {}", errors.join("; ")));
        }
    }
}

/// A JSON pointer token.
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

fn assert_none(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

fn property_names(schema: &Value, pointer: &str) -> BTreeSet<String> {
    schema
        .pointer(pointer)
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("no properties at {pointer}"))
        .keys()
        .cloned()
        .collect()
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_schemas_say_what_the_code_says() {
    let c = Contracts::load();
    let intent = &c.schemas[&Kind::Intent];

    // The intent's fields and the counterparty's.
    assert_eq!(
        property_names(intent, "/properties"),
        Field::ALL.map(|f| f.name().to_owned()).into()
    );
    assert_eq!(
        property_names(intent, "/$defs/counterparty/properties"),
        CpField::ALL.map(|f| f.name().to_owned()).into()
    );

    // Required are exactly the fields without which the parser reports `missing_field`
    // (from an intent without `amount`, which makes `currency` required)...
    let full: serde_json::Map<String, Value> =
        serde_json::from_str(&read(&root().join("tests/intents/valid/full.json"))).unwrap();
    assert_eq!(full.len(), Field::ALL.len(), "full.json has every field");
    let missing = |intent: &serde_json::Map<String, Value>, field: &str| {
        let mut without = intent.clone();
        without.remove(field);
        let text = serde_json::to_string(&without).unwrap();
        parse_intent(text.as_bytes(), DEFAULT_MAX_BYTES)
            .err()
            .map(|e| (e.kind, e.field))
    };
    let mut no_amount = full.clone();
    no_amount.remove("amount");
    let mut required = BTreeSet::new();
    for f in Field::ALL {
        match missing(&no_amount, f.name()) {
            None => {}
            Some((InvalidKind::MissingField, Some(field))) if field == f.name() => {
                required.insert(field);
            }
            other => panic!("without `{}`: {other:?}", f.name()),
        }
    }
    assert_eq!(strings(&intent["required"]), required);
    // ...and `currency` when `amount` is there.
    assert_eq!(
        missing(&full, "currency"),
        Some((InvalidKind::MissingField, Some("currency".to_owned())))
    );
    assert_eq!(
        strings(&intent["then"]["required"]),
        ["currency".to_owned()].into()
    );

    assert_eq!(
        intent["properties"]["intent_id"]["maxLength"],
        MAX_INTENT_ID_CHARS
    );

    // The currency list is the parser's, code for code.
    let mut accepted = BTreeSet::new();
    for a in b'A'..=b'Z' {
        for b in b'A'..=b'Z' {
            for d in b'A'..=b'Z' {
                let code = String::from_utf8(vec![a, b, d]).unwrap();
                if riskgate_core::currency::is_iso4217(&code) {
                    accepted.insert(code);
                }
            }
        }
    }
    assert_eq!(strings(&intent["$defs"]["currency"]["enum"]), accepted);

    let decision = &c.schemas[&Kind::Decision];
    assert_eq!(
        strings(&decision["$defs"]["outcome"]["enum"]),
        Outcome::ALL.iter().map(|o| o.as_str().to_owned()).collect()
    );
    assert_eq!(
        strings(&decision["$defs"]["system_rule"]["enum"]),
        SystemReason::ALL
            .iter()
            .map(|r| r.rule().to_owned())
            .collect()
    );
    assert_eq!(
        decision["$defs"]["reason"]["properties"]["approvals"]["maximum"],
        MAX_APPROVALS
    );

    let dead = &c.schemas[&Kind::DeadLetter];
    assert_eq!(
        strings(&dead["$defs"]["error"]["properties"]["kind"]["enum"]),
        InvalidKind::ALL
            .iter()
            .map(|k| k.as_str().to_owned())
            .collect()
    );
    assert_eq!(
        dead["properties"]["payload"]["maxLength"],
        DEAD_LETTER_PAYLOAD_MAX
    );
    assert_eq!(
        dead["properties"]["payload_hex"]["maxLength"],
        2 * DEAD_LETTER_PAYLOAD_MAX
    );
    assert_eq!(
        dead["if"]["properties"]["payload_bytes"]["minimum"],
        DEAD_LETTER_PAYLOAD_MAX + 1
    );

    let review = &c.schemas[&Kind::ReviewRecord];
    assert_eq!(
        review["properties"]["approvals"]["properties"]["required"]["maximum"],
        MAX_APPROVALS
    );
}

/// The fenced examples of docs/intents.md: ```json blocks, each after a line
/// `<!-- schema: NAME -->`, and ```text blocks after `<!-- invalid: intent -->`, one payload
/// a line.
#[test]
fn every_example_of_the_docs_matches_its_schema() {
    let c = Contracts::load();
    let path = root().join("docs/intents.md");
    let text = read(&path);
    let mut problems = Vec::new();
    let mut checked: BTreeMap<Kind, usize> = BTreeMap::new();
    let mut invalid = 0;
    let mut marker: Option<(String, String, usize)> = None;
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let n = i + 1;
        let trimmed = line.trim();
        if let Some(rest) = trimmed
            .strip_prefix("<!--")
            .and_then(|r| r.strip_suffix("-->"))
        {
            if let Some((what, name)) = rest.trim().split_once(':') {
                if what.trim() == "schema" || what.trim() == "invalid" {
                    marker = Some((what.trim().to_owned(), name.trim().to_owned(), n));
                }
            }
            continue;
        }
        let Some(lang) = trimmed.strip_prefix("```") else {
            if let (false, Some((_, name, m))) = (trimmed.is_empty(), marker.take()) {
                problems.push(format!(
                    "docs/intents.md:{m}: the marker for `{name}` is not right before a block"
                ));
            }
            continue;
        };
        let mut body = String::new();
        for (_, l) in lines.by_ref() {
            if l.trim() == "```" {
                break;
            }
            body.push_str(l);
            body.push('\n');
        }
        let at = format!("docs/intents.md:{n}");
        match (lang, marker.take()) {
            ("json", Some((what, name, _))) if what == "schema" => {
                let Some(kind) = Kind::named(&name) else {
                    problems.push(format!("{at}: unknown schema `{name}`"));
                    continue;
                };
                // One value, or several (JSON lines), per block.
                let mut values = 0;
                let mut stream = serde_json::Deserializer::from_str(&body).into_iter::<Value>();
                let mut start = 0;
                while let Some(v) = stream.next() {
                    let what = format!("{at} (value {})", values + 1);
                    let end = stream.byte_offset();
                    match v {
                        Ok(v) => {
                            c.check(kind, &what, &v, &mut problems);
                            if kind == Kind::Intent {
                                let text = body[start..end].trim();
                                if let Err(e) = parse_intent(text.as_bytes(), DEFAULT_MAX_BYTES) {
                                    problems.push(format!("{what}: the parser refuses it: {e}"));
                                }
                            }
                            values += 1;
                            start = end;
                        }
                        Err(e) => {
                            problems.push(format!("{what}: not JSON: {e}"));
                            break;
                        }
                    }
                }
                if values == 0 {
                    problems.push(format!("{at}: an empty example"));
                }
                *checked.entry(kind).or_default() += values;
            }
            ("json", _) => problems.push(format!(
                "{at}: a ```json block without a `<!-- schema: NAME -->` line before it"
            )),
            ("text", Some((what, name, _))) if what == "invalid" => {
                assert_eq!(name, "intent", "{at}: only invalid intents are shown");
                for payload in body.lines().filter(|l| !l.trim().is_empty()) {
                    let parsed = parse_intent(payload.as_bytes(), DEFAULT_MAX_BYTES).is_ok();
                    let valid = serde_json::from_str::<Value>(payload)
                        .is_ok_and(|v| c.accepts(Kind::Intent, &v));
                    if parsed || valid {
                        problems.push(format!(
                            "{at}: `{payload}` is shown as invalid, but the parser accepts it: {parsed}, the schema: {valid}"
                        ));
                    }
                    invalid += 1;
                }
            }
            (_, Some((_, name, m))) => problems.push(format!(
                "docs/intents.md:{m}: the marker for `{name}` is not followed by a block it applies to"
            )),
            _ => {}
        }
    }
    assert_none(problems);
    for kind in Kind::ALL {
        assert!(
            checked.get(&kind).copied().unwrap_or(0) > 0,
            "docs/intents.md has no example of a {}",
            kind.name()
        );
    }
    assert!(invalid > 0, "docs/intents.md shows no invalid intent");

    // Every field of every schema is documented.
    let mut missing = Vec::new();
    for (kind, schema) in &c.schemas {
        for name in property_names(schema, "/properties") {
            if !text.contains(&format!("`{name}`")) {
                missing.push(format!("{}: `{name}`", kind.name()));
            }
        }
    }
    assert!(missing.is_empty(), "not in docs/intents.md: {missing:?}");
}

#[test]
fn the_wire_golden_files_match_their_schemas() {
    let c = Contracts::load();
    let dir = root().join("crates/core/src/wire/golden");
    let mut problems = Vec::new();
    let mut count = 0;
    for (file, kind) in [
        ("decision.jsonl", Kind::Decision),
        ("decision_record.jsonl", Kind::Decision),
        ("dead_letters.jsonl", Kind::DeadLetter),
        ("review_record.jsonl", Kind::ReviewRecord),
    ] {
        for (n, line) in lines(&dir.join(file)) {
            c.check_text(kind, &format!("{file}:{n}"), &line, &mut problems);
            count += 1;
        }
    }
    // Every golden file is one of those.
    let files = std::fs::read_dir(&dir).unwrap().count();
    assert_eq!(
        files,
        4,
        "a new golden file in {}: add it here",
        dir.display()
    );
    assert_none(problems);
    assert!(count >= 6, "only {count} golden lines");
}

/// The expected lines of `tests/golden/<case>/` name only the fields they check: each of
/// those is checked against the schema of that field. The whole records the engine writes
/// for the same inputs are checked too.
#[test]
fn the_replay_fixtures_and_their_outputs_match_their_schemas() {
    let mut c = Contracts::load();
    let mut problems = Vec::new();
    let mut cases = 0;
    let mut expected = 0;
    let mut outputs = 0;
    let golden = root().join("tests/golden");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&golden)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for case in dirs {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        for (file, kind) in [
            ("expected.jsonl", Kind::Decision),
            ("expected_dlq.jsonl", Kind::DeadLetter),
        ] {
            for (n, line) in lines(&case.join(file)) {
                let mut value: Value = serde_json::from_str(&line).unwrap();
                let what = format!("tests/golden/{name}/{file}:{n}");
                // tests/fixtures.rs checks `errors` by rule id: a list of ids.
                if let Some(Value::Array(ids)) =
                    value.as_object_mut().and_then(|o| o.remove("errors"))
                {
                    for (i, id) in ids.iter().enumerate() {
                        let at = "/$defs/rule_failure/properties/rule";
                        c.check_partial(
                            kind,
                            at,
                            &format!("{what}.errors[{i}]"),
                            id,
                            &mut problems,
                        );
                    }
                }
                c.check_partial(kind, "", &what, &value, &mut problems);
                expected += 1;
            }
        }
        let input = case.join("input.jsonl");
        let (decisions, letters) = replay_file(&case.join("rules"), &input);
        for (n, d) in decisions.iter().enumerate() {
            let what = format!("{name}: decision {}", n + 1);
            c.check_text(Kind::Decision, &what, d, &mut problems);
        }
        for (n, d) in letters.iter().enumerate() {
            let what = format!("{name}: dead letter {}", n + 1);
            c.check_text(Kind::DeadLetter, &what, d, &mut problems);
        }
        outputs += decisions.len() + letters.len();
        // The inputs: the parser and the schema agree on every line.
        for (n, line) in lines(&input) {
            agree(
                &c,
                &format!("{name}/input.jsonl:{n}"),
                line.as_bytes(),
                &mut problems,
            );
        }
        cases += 1;
    }
    assert_none(problems);
    assert!(cases >= 2, "only {cases} cases under {}", golden.display());
    assert!(expected >= 8, "only {expected} expected lines");
    assert!(outputs >= 8, "only {outputs} outputs");
}

/// Whether the parser and the intent schema give `payload` the same verdict.
fn agree(c: &Contracts, what: &str, payload: &[u8], problems: &mut Vec<String>) {
    let parsed = parse_intent(payload, DEFAULT_MAX_BYTES);
    let schema = schema_verdict(c, payload);
    if parsed.is_ok() != schema.is_ok() {
        problems.push(format!(
            "{what}: the parser says {:?}, the schema {:?}",
            parsed.err().map(|e| e.message),
            schema.err()
        ));
    }
}

/// The intent schema's verdict on a payload: a payload that is not JSON matches no schema.
fn schema_verdict(c: &Contracts, payload: &[u8]) -> Result<(), String> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    c.problems(Kind::Intent, &value).map_or(Ok(()), Err)
}

/// A fixed wall clock for outputs, after every sample intent.
fn now() -> DateTime<Utc> {
    "2026-11-29T09:30:00.125Z".parse().unwrap()
}

/// Replays `input` with the ruleset in `rules`, as `riskgate replay` does (no future-skew
/// check): the decision lines and the dead-letter lines.
fn replay_file(rules: &Path, input: &Path) -> (Vec<String>, Vec<String>) {
    let ruleset = Ruleset::load_dir(rules).unwrap_or_else(|e| panic!("{}: {e}", rules.display()));
    let mut engine = Engine::new(
        Arc::new(ruleset),
        EngineOptions {
            max_future_skew: None,
            ..EngineOptions::default()
        },
    );
    let mut out = Vec::new();
    let mut dlq = Vec::new();
    let label = input
        .strip_prefix(root())
        .unwrap_or(input)
        .display()
        .to_string();
    riskgate_core::replay::replay(
        &mut engine,
        read(input).as_bytes(),
        &mut out,
        &mut dlq,
        &label,
        DEFAULT_MAX_BYTES,
        now,
    )
    .unwrap();
    let split = |b: Vec<u8>| -> Vec<String> {
        String::from_utf8(b)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    };
    (split(out), split(dlq))
}

/// `examples/intents.jsonl` with the sample rules of `rules/`, as replay lines and as the
/// service's records: every line agrees with the intent schema, every output matches its
/// schema.
#[test]
fn the_sample_intents_and_their_decisions_match_their_schemas() {
    let c = Contracts::load();
    let input = root().join("examples/intents.jsonl");
    let mut problems = Vec::new();
    let sample = lines(&input);
    let mut valid = 0;
    for (n, line) in &sample {
        agree(
            &c,
            &format!("examples/intents.jsonl:{n}"),
            line.as_bytes(),
            &mut problems,
        );
        valid += usize::from(parse_intent(line.as_bytes(), DEFAULT_MAX_BYTES).is_ok());
    }
    assert!(
        sample.len() >= 100 && valid >= 100,
        "{} lines",
        sample.len()
    );

    // Replay lines.
    let (decisions, letters) = replay_file(&root().join("rules"), &input);
    assert_eq!(decisions.len(), valid);
    assert_eq!(decisions.len() + letters.len(), sample.len());
    assert!(
        !letters.is_empty(),
        "the sample has invalid lines on purpose"
    );
    let mut outcomes = BTreeSet::new();
    let mut duplicates = 0;
    for (n, d) in decisions.iter().enumerate() {
        c.check_text(
            Kind::Decision,
            &format!("replay decision {}", n + 1),
            d,
            &mut problems,
        );
        let v: Value = serde_json::from_str(d).unwrap();
        outcomes.insert(v["decision"].as_str().unwrap().to_owned());
        duplicates += usize::from(v["duplicate"] == true);
    }
    for (n, d) in letters.iter().enumerate() {
        c.check_text(
            Kind::DeadLetter,
            &format!("replay dead letter {}", n + 1),
            d,
            &mut problems,
        );
    }
    assert_eq!(outcomes.len(), 3, "every outcome is checked: {outcomes:?}");
    assert!(duplicates > 0, "the sample has duplicates on purpose");

    // The service's records: keyed by `account_id`, the intent embedded.
    let ruleset = Ruleset::load_dir(&root().join("rules")).unwrap();
    let mut engine = Engine::new(Arc::new(ruleset), EngineOptions::default());
    let mut records = 0;
    for (offset, (n, line)) in sample.iter().enumerate() {
        let key = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v["account_id"].as_str().map(str::to_owned));
        let what = format!("record of examples/intents.jsonl:{n}");
        let (kind, out) = kafka_record(&mut engine, line.as_bytes(), key.as_deref(), offset);
        c.check_text(kind, &what, &out, &mut problems);
        records += 1;
    }
    assert_eq!(records, sample.len());
    assert_none(problems);
}

/// What the service writes for one intents record at `offset` of partition 0: a decision with
/// the intent embedded, or a dead letter.
fn kafka_record(
    engine: &mut Engine,
    payload: &[u8],
    key: Option<&str>,
    offset: usize,
) -> (Kind, String) {
    let source = Source::Kafka {
        topic: Arc::from("intents"),
        partition: 0,
        offset: offset as i64,
    };
    let mut out = Vec::new();
    let kind = match engine.process(
        payload,
        DEFAULT_MAX_BYTES,
        RecordKey::Kafka(key.map(str::as_bytes)),
        source,
        Clock::At(now()),
    ) {
        Processed::Decided(d) => {
            d.write_json(&mut out, Some(payload));
            Kind::Decision
        }
        Processed::Invalid(letter) => {
            letter.write_json_line(&mut out);
            out.pop();
            Kind::DeadLetter
        }
    };
    (kind, String::from_utf8(out).unwrap())
}

/// Every kind of system decision, a duplicate and a conflict, as the service writes them.
#[test]
fn system_decisions_and_duplicates_match_the_decision_schema() {
    let c = Contracts::load();
    let rules = r#"
[[counter]]
id = "acct_transfers_1h"
key = ["account_id"]
aggregate = "count"
window = "1h"

[[rule]]
id = "large-transfer"
when = 'amount > 10000'
action = "hold"
approvals = 2
message = "{amount} {currency} is above 10000"
"#;
    let ruleset =
        Ruleset::load_sources(&[(PathBuf::from("limits.toml"), rules.to_owned())]).unwrap();
    let mut engine = Engine::new(Arc::new(ruleset), EngineOptions::default());
    let intent = |id: &str, amount: &str, at: &str| {
        format!(
            r#"{{"intent_id":"{id}","agent_id":"payments-bot","account_id":"acct-7","action":"transfer","amount":"{amount}","currency":"EUR","created_at":"{at}"}}"#
        )
    };
    let held = intent("t-1", "12000.00", "2026-11-29T09:00:00Z");
    // The same intent, its keys in another order: a duplicate.
    let again = r#"{"account_id":"acct-7","intent_id":"t-1","agent_id":"payments-bot","action":"transfer","currency":"EUR","amount":"12000.00","created_at":"2026-11-29T10:00:00+01:00"}"#;
    let steps: Vec<(String, Option<&str>, Option<&str>, bool)> = vec![
        // payload, record key, the reason rule expected (None: the rules decide), duplicate
        (held.clone(), Some("acct-7"), None, false),
        (again.to_owned(), Some("acct-7"), None, true),
        (
            intent("t-1", "12000.01", "2026-11-29T09:00:00Z"),
            Some("acct-7"),
            Some("riskgate:conflict"),
            true,
        ),
        (
            held.clone(),
            Some("acct-8"),
            Some("riskgate:misrouted"),
            false,
        ),
        (held.clone(), None, Some("riskgate:misrouted"), false),
        (
            intent("t-2", "5.00", "2026-11-29T10:00:00Z"),
            Some("acct-7"),
            Some("riskgate:future"),
            false,
        ),
        (
            intent("t-3", "5.00", "2026-11-29T09:29:00Z"),
            Some("acct-7"),
            None,
            false,
        ),
        (
            intent("t-4", "5.00", "2026-11-28T09:00:00Z"),
            Some("acct-7"),
            Some("riskgate:stale"),
            false,
        ),
    ];
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (offset, (payload, key, rule, duplicate)) in steps.iter().enumerate() {
        let (kind, out) = kafka_record(&mut engine, payload.as_bytes(), *key, offset);
        assert_eq!(kind, Kind::Decision, "{payload}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let first = v["reasons"][0]["rule"].as_str();
        match rule {
            Some(rule) => {
                assert_eq!(first, Some(*rule), "{out}");
                seen.insert(rule.to_string());
            }
            None => assert!(!first.is_some_and(|r| r.starts_with("riskgate:")), "{out}"),
        }
        assert_eq!(v["duplicate"] == true, *duplicate, "{out}");
        c.check(
            Kind::Decision,
            &format!("step {}", offset + 1),
            &v,
            &mut problems,
        );
    }
    assert_eq!(
        seen,
        SystemReason::ALL
            .iter()
            .map(|r| r.rule().to_owned())
            .collect::<BTreeSet<_>>(),
        "every system decision is checked"
    );
    // A record that breaks a system decision's shape is refused: the schema can fail.
    let (_, out) = kafka_record(&mut engine, held.as_bytes(), None, 99);
    let mut v: Value = serde_json::from_str(&out).unwrap();
    v["score"] = Value::from(40);
    assert!(
        !c.accepts(Kind::Decision, &v),
        "a system decision with a score"
    );
    assert_none(problems);
}

/// Dead letters of every kind, from Kafka and from replay: capped payloads, text and bytes.
#[test]
fn dead_letters_match_the_dead_letter_schema() {
    let c = Contracts::load();
    let ruleset = Ruleset::load_sources(&[]).unwrap();
    let mut engine = Engine::new(Arc::new(ruleset), EngineOptions::default());
    let mut problems = Vec::new();
    let mut kinds = BTreeSet::new();
    let mut payloads: Vec<(String, Vec<u8>)> = fixtures("invalid")
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(root()).unwrap_or(&p).display().to_string();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    let big = format!(
        r#"{{"intent_id":"i-big","agent_id":"bot","account_id":"acct-1","action":"export","created_at":"2026-11-28T10:00:00Z","attributes":{{"blob":"{}"}}}}"#,
        "x".repeat(DEFAULT_MAX_BYTES)
    );
    payloads.extend([
        ("not UTF-8".to_owned(), b"{\"intent_id\":\"\xff\"}".to_vec()),
        ("empty".to_owned(), Vec::new()),
        ("too large".to_owned(), big.clone().into_bytes()),
        (
            "over the copy limit, cut in a character".to_owned(),
            format!("{}{}", &big[..DEAD_LETTER_PAYLOAD_MAX - 1], "é".repeat(10)).into_bytes(),
        ),
    ]);
    for (offset, (what, payload)) in payloads.iter().enumerate() {
        let (kind, out) = kafka_record(&mut engine, payload, Some("acct-0042"), offset);
        assert_eq!(kind, Kind::DeadLetter, "{what}");
        let v: Value = serde_json::from_str(&out).unwrap();
        kinds.insert(v["error"]["kind"].as_str().unwrap().to_owned());
        c.check(Kind::DeadLetter, what, &v, &mut problems);
    }
    assert_eq!(kinds.len(), InvalidKind::ALL.len(), "every kind: {kinds:?}");

    // A replay line over the limit, kept only in part.
    let mut out = Vec::new();
    let mut dlq = Vec::new();
    let input = format!("{big}\n");
    riskgate_core::replay::replay(
        &mut engine,
        input.as_bytes(),
        &mut out,
        &mut dlq,
        "-",
        1024,
        now,
    )
    .unwrap();
    let line = String::from_utf8(dlq).unwrap();
    c.check_text(
        Kind::DeadLetter,
        "replay of a long line",
        line.trim_end(),
        &mut problems,
    );
    assert!(line.contains("\"payload_truncated\":true"), "{line}");

    // A dead letter of an invalid intent, written directly.
    let error = parse_intent(b"{}", DEFAULT_MAX_BYTES).unwrap_err();
    let letter = DeadLetter::new(
        error,
        b"{}",
        DEFAULT_MAX_BYTES,
        Source::File {
            file: Arc::from("intents.jsonl"),
            line: 1,
        },
        DateTime::UNIX_EPOCH,
    );
    let mut out = Vec::new();
    letter.write_json_line(&mut out);
    c.check_text(
        Kind::DeadLetter,
        "a missing field",
        String::from_utf8(out).unwrap().trim_end(),
        &mut problems,
    );
    assert_none(problems);
}

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let path = root().join("tests/intents").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
}

/// What the intent schema says of a fixture on which it and the parser disagree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Schema {
    Accepts,
    Refuses,
}

/// The fixtures on which the parser and the intent schema necessarily disagree: what the
/// schema says, and why it cannot say what the parser says. Anything not listed must agree;
/// an entry that stops disagreeing must go (the test says so).
const KNOWN_DIFFERENCES: &[(&str, Schema, &str)] = &[
    (
        "invalid/duplicate-key.json",
        Schema::Accepts,
        "JSON Schema validates the parsed document, in which a repeated key has one value; the parser refuses a duplicate key",
    ),
    (
        "invalid/duplicate-attribute-key.json",
        Schema::Accepts,
        "the same, inside `attributes`: the parser refuses duplicate keys at any depth",
    ),
    (
        "invalid/amount-number-with-29-zero-decimals.json",
        Schema::Accepts,
        "a schema compares a number's value (1, a multiple of 1e-28); the parser reads its text, whose 29 decimal places are more than a decimal's 28",
    ),
    (
        "invalid/amount-number-over-96-bits.json",
        Schema::Accepts,
        "the value is below the maximum and a multiple of 1e-28, but its 29 digits together need more than 96 bits; no keyword ties a number's magnitude to its scale",
    ),
    (
        "valid/amount-29-digits.json",
        Schema::Refuses,
        "the exact limit is a 96-bit integer of digits (below 79228162514264337593543950336), wherever the point is; the schema's pattern bounds the significant digits at 28, which always fit",
    ),
    (
        "valid/created-at-1677.json",
        Schema::Refuses,
        "the parser's range is an instant (1677-09-21T00:12:43.145224192Z to 2262-04-11T23:47:16.854775807Z); the pattern bounds local years, 1678 to 2261",
    ),
    (
        "valid/created-at-space-separator.json",
        Schema::Refuses,
        "`format: date-time` follows RFC 3339's grammar, which separates date and time by `T`; the parser (chrono) also takes the space RFC 3339's note allows",
    ),
    (
        "valid/leap-second-not-at-midnight.json",
        Schema::Refuses,
        "`format: date-time` allows second 60 only at 23:59:60 UTC; the parser (chrono) accepts it at the end of any minute",
    ),
];

#[test]
fn the_parser_and_the_intent_schema_agree_on_the_fixtures() {
    let c = Contracts::load();
    let mut problems = Vec::new();
    let mut counts = BTreeMap::new();
    let mut listed: BTreeSet<&str> = KNOWN_DIFFERENCES.iter().map(|(f, _, _)| *f).collect();
    for dir in ["valid", "invalid"] {
        let files = fixtures(dir);
        counts.insert(dir, files.len());
        for path in files {
            let name = format!("{dir}/{}", path.file_name().unwrap().to_string_lossy());
            let payload = std::fs::read(&path).unwrap();
            let parsed = parse_intent(&payload, DEFAULT_MAX_BYTES);
            if parsed.is_ok() != (dir == "valid") {
                problems.push(format!(
                    "{name}: the parser says {:?}; move the fixture",
                    parsed.as_ref().err()
                ));
                continue;
            }
            let schema = schema_verdict(&c, &payload);
            let known = KNOWN_DIFFERENCES.iter().find(|(f, _, _)| *f == name);
            listed.remove(name.as_str());
            match known {
                None if parsed.is_ok() != schema.is_ok() => problems.push(format!(
                    "{name}: the parser says {:?}, the schema {:?}",
                    parsed.err().map(|e| e.message),
                    schema.err()
                )),
                Some((_, says, why)) => {
                    let got = if schema.is_ok() {
                        Schema::Accepts
                    } else {
                        Schema::Refuses
                    };
                    if got != *says || parsed.is_ok() == schema.is_ok() {
                        problems.push(format!(
                            "{name}: listed as a known difference ({why}), but the schema now {got:?} it and the parser {}: remove it from KNOWN_DIFFERENCES",
                            if parsed.is_ok() { "accepts" } else { "refuses" }
                        ));
                    }
                }
                None => {}
            }
        }
    }
    for name in listed {
        problems.push(format!("{name}: in KNOWN_DIFFERENCES but not a fixture"));
    }
    // What no fixture file can show: the size limit is in bytes of the payload.
    let big = format!(
        r#"{{"intent_id":"i-big","agent_id":"bot","account_id":"acct-1","action":"export","created_at":"2026-11-28T10:00:00Z","attributes":{{"blob":"{}"}}}}"#,
        "x".repeat(DEFAULT_MAX_BYTES)
    );
    let e = parse_intent(big.as_bytes(), DEFAULT_MAX_BYTES).unwrap_err();
    assert_eq!(e.kind, InvalidKind::TooLarge);
    assert!(
        schema_verdict(&c, big.as_bytes()).is_ok(),
        "the schema cannot see a payload's size in bytes"
    );
    // Nor a payload that is not UTF-8 (JSON text is Unicode): no schema sees it at all.
    assert!(parse_intent(b"{\"intent_id\":\"\xff\"}", DEFAULT_MAX_BYTES).is_err());

    assert_none(problems);
    assert!(counts["valid"] >= 5, "{counts:?}");
    assert!(counts["invalid"] >= 15, "{counts:?}");
}

/// The AsyncAPI document names the four schemas, by their files, as JSON Schema 2020-12, and
/// the topics by the configuration keys that name them. (No AsyncAPI parser is a dependency:
/// these are checks on its text.)
#[test]
fn the_asyncapi_document_refers_to_the_schemas() {
    let text = read(&root().join("schemas/asyncapi.yaml"));
    assert!(text.lines().any(|l| l.trim() == "asyncapi: 3.0.0"));
    let mut referenced = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(target) = line.strip_prefix("$ref:") {
            let target = target.trim().trim_matches(|c| c == '\'' || c == '"');
            if let Some(file) = target.strip_prefix("./") {
                let file = file.split('#').next().unwrap();
                assert!(
                    root().join("schemas").join(file).is_file(),
                    "asyncapi.yaml refers to a missing file: {target}"
                );
                referenced.insert(file.to_owned());
            } else {
                assert!(target.starts_with("#/"), "an unexpected $ref: {target}");
            }
        }
    }
    assert_eq!(
        referenced,
        Kind::ALL.iter().map(|k| k.file()).collect::<BTreeSet<_>>()
    );
    let formats = text
        .matches("schemaFormat: application/schema+json;version=draft-2020-12")
        .count();
    assert_eq!(
        formats,
        Kind::ALL.len(),
        "one JSON Schema payload per message"
    );
    for key in [
        "intents_topic",
        "decisions_topic",
        "dead_letter_topic",
        "partition_key",
    ] {
        assert!(text.contains(key), "asyncapi.yaml does not mention `{key}`");
    }
}
