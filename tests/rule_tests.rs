//! Every case of the sample ruleset's `rules/tests/*.toml` runs under `cargo test`, and every
//! sample rule is covered by a passing case that expects it to match.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Tests fail loudly.

use std::path::Path;
use std::sync::Arc;

use riskgate_core::rules::Ruleset;
use riskgate_core::testing::run_dir;

#[test]
fn sample_rule_tests_pass_and_cover_every_rule() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let ruleset = Ruleset::load_dir(&dir)
        .unwrap_or_else(|e| panic!("the sample ruleset does not load:\n{e}"));
    let report = run_dir(&dir, Arc::new(ruleset));
    let failures: Vec<String> = report
        .cases
        .iter()
        .filter(|c| !c.passed())
        .map(|c| {
            format!(
                "{}: {}\n    {}",
                c.file.display(),
                c.name,
                c.failures.join("\n    ")
            )
        })
        .chain(report.broken_files.iter().cloned())
        .collect();
    assert!(
        failures.is_empty(),
        "{} rule test(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        report.cases.len() >= 30,
        "only {} cases",
        report.cases.len()
    );
    assert!(
        report.uncovered.is_empty(),
        "rules no case covers: {:?}",
        report.uncovered
    );
}

#[test]
fn a_wrong_expectation_fails_with_expected_and_actual() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let ruleset = Arc::new(Ruleset::load_dir(&dir).unwrap());
    let text = r#"
[[case]]
name = "deliberately wrong"
intent = { intent_id = "x", agent_id = "payments-bot", account_id = "acct-1", action = "transfer", amount = "10.00", currency = "EUR", created_at = "2026-11-28T12:00:00Z" }
expect = { decision = "deny", rules = ["large-transfer"], score = 7 }
"#;
    let cases = riskgate_core::testing::run_file(Path::new("wrong.toml"), text, &ruleset).unwrap();
    let failures = cases[0].failures.join("\n");
    assert!(
        failures.contains("decision: expected `deny`, got `allow`"),
        "{failures}"
    );
    assert!(
        failures.contains("missing [\"large-transfer\"]"),
        "{failures}"
    );
    assert!(failures.contains("score: expected 7, got 0"), "{failures}");
    assert!(failures.contains("actual: decision `allow`"), "{failures}");
}
