//! Files as tests: every directory under `tests/golden/` and `tests/load_errors/` is a case,
//! run through the real `riskgate` binary.
//!
//! * `tests/golden/<case>/`: `rules/`, `input.jsonl`, and hand-written `expected.jsonl` /
//!   `expected_dlq.jsonl`. Each expected line lists the fields to check; `errors` is checked
//!   by rule id, `source` by line.
//! * `tests/load_errors/<case>/`: rules files and `expected.txt`, one expected error per
//!   line, each the start of an error line of `riskgate check` (paths relative to the case).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Tests fail loudly.

use std::path::{Path, PathBuf};
use std::process::Command;

use riskgate_test_support::assert_success;
use serde_json::Value;

fn riskgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_riskgate"))
}

fn cases(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(dir);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "no cases under {}", root.display());
    cases
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Checks that every field named in `expected` has that value in `actual`.
fn check_fields(
    case: &str,
    index: usize,
    expected: &Value,
    actual: &Value,
    problems: &mut Vec<String>,
) {
    let Value::Object(fields) = expected else {
        panic!("{case}: expected line {index} is not an object")
    };
    for (key, want) in fields {
        let got = &actual[key];
        let same = match (key.as_str(), want) {
            ("errors", Value::Array(ids)) => {
                let got_ids: Vec<&Value> = got
                    .as_array()
                    .map(|a| a.iter().map(|e| &e["rule"]).collect())
                    .unwrap_or_default();
                ids.iter().collect::<Vec<_>>() == got_ids
            }
            ("source" | "error", Value::Object(parts)) => parts.iter().all(|(k, v)| &got[k] == v),
            _ => got == want,
        };
        if !same {
            problems.push(format!(
                "{case} line {}: `{key}` expected {want}, got {got}",
                index + 1
            ));
        }
    }
}

#[test]
fn golden_replays() {
    let mut problems = Vec::new();
    for case in cases("golden") {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let dlq = tempfile::NamedTempFile::new().unwrap();
        let out = riskgate()
            .args(["replay", "--quiet", "--rules"])
            .arg(case.join("rules"))
            .arg("--input")
            .arg(case.join("input.jsonl"))
            .arg("--dlq")
            .arg(dlq.path())
            .output()
            .unwrap();
        assert_success(&out, &name);
        let decisions = json_lines(&String::from_utf8(out.stdout).unwrap());
        let letters = json_lines(&std::fs::read_to_string(dlq.path()).unwrap());
        for (what, actual, file) in [
            ("decisions", &decisions, "expected.jsonl"),
            ("dead letters", &letters, "expected_dlq.jsonl"),
        ] {
            let expected = json_lines(&std::fs::read_to_string(case.join(file)).unwrap());
            if expected.len() != actual.len() {
                problems.push(format!(
                    "{name}: {} {what} expected, {} produced",
                    expected.len(),
                    actual.len()
                ));
                continue;
            }
            for (i, (e, a)) in expected.iter().zip(actual).enumerate() {
                check_fields(&format!("{name}/{file}"), i, e, a, &mut problems);
            }
        }
        for d in &decisions {
            let version = d["ruleset"].as_str().unwrap_or_default();
            assert!(
                version.len() == 12 && version.chars().all(|c| c.is_ascii_hexdigit()),
                "{name}: ruleset {version}"
            );
        }
    }
    assert!(
        problems.is_empty(),
        "golden replays differ:\n{}",
        problems.join("\n")
    );
}

#[test]
fn load_errors_name_file_rule_and_position() {
    let mut problems = Vec::new();
    for case in cases("load_errors") {
        let name = case.file_name().unwrap().to_string_lossy().into_owned();
        let out = riskgate().arg("check").arg(&case).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{name}: `riskgate check` must fail"
        );
        let stderr = String::from_utf8(out.stderr).unwrap();
        let prefix = format!("{}/", case.display());
        let errors: Vec<&str> = stderr
            .lines()
            .filter_map(|l| l.strip_prefix(&prefix))
            .collect();
        let expected = std::fs::read_to_string(case.join("expected.txt")).unwrap();
        let expected: Vec<&str> = expected.lines().filter(|l| !l.is_empty()).collect();
        for want in &expected {
            if !errors.iter().any(|e| e.starts_with(want)) {
                problems.push(format!(
                    "{name}: no error starts with `{want}`; got:\n  {}",
                    errors.join("\n  ")
                ));
            }
        }
        if errors.len() != expected.len() {
            problems.push(format!(
                "{name}: {} errors expected, got:\n  {}",
                expected.len(),
                errors.join("\n  ")
            ));
        }
        assert!(
            stderr.contains("riskgate check"),
            "{name}: the summary says how to go on: {stderr}"
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
