use super::*;

fn load(files: &[(&str, &str)]) -> Result<Ruleset, LoadErrors> {
    let files: Vec<(PathBuf, String)> = files
        .iter()
        .map(|(n, t)| (PathBuf::from(n), t.to_string()))
        .collect();
    Ruleset::load_sources(&files)
}

fn errors(files: &[(&str, &str)]) -> Vec<String> {
    match load(files) {
        Ok(_) => panic!("the ruleset loaded"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts that `text`, as the file `a.toml`, fails to load with exactly the `expected` errors.
fn check_errors(text: &str, expected: &[&str]) {
    assert_eq!(errors(&[("a.toml", text)]), expected);
}

const GOOD: &str = r#"
[lists]
sanctioned = ["KP", "IR"]

[[counter]]
id = "n_1h"
key = ["account_id"]
aggregate = "count"
window = "1h"

[[rule]]
id = "velocity"
description = "Too many"
when = 'counters.n_1h >= 10'
action = "hold"
"#;

#[test]
fn a_good_ruleset_loads_with_a_stable_version() {
    let a = load(&[("a.toml", GOOD)]).unwrap();
    let b = load(&[("a.toml", GOOD)]).unwrap();
    assert_eq!(a.version, b.version);
    assert_eq!(a.version.len(), 12);
    assert!(a.version.chars().all(|c| c.is_ascii_hexdigit()));
    let c = load(&[("a.toml", &GOOD.replace(">= 10", ">= 11"))]).unwrap();
    assert_ne!(
        a.version, c.version,
        "any change to the rules changes the version"
    );
    assert_eq!(a.precedence, [Outcome::Deny, Outcome::Allow, Outcome::Hold]);
    assert_eq!(a.on_error, OnError::Hold);
    assert_eq!(a.counters[0].resolution, TimeDelta::minutes(1));
}

#[test]
fn unknown_counter_names_file_rule_and_position() {
    let text = "[[rule]]\nid = \"r1\"\nwhen = 'action == \"transfer\" && counters.nope > 1'\naction = \"hold\"\n";
    let e = errors(&[("limits.toml", text)]);
    // Line 3; `counters.nope` starts at character 24 of the expression, after `when = '`.
    assert_eq!(e, ["limits.toml:3:33: rule `r1`: unknown counter `nope`; defined counters: none are defined"]);
}

#[test]
fn syntax_errors_are_positioned() {
    let text = "[[rule]]\nid = \"r1\"\nwhen = 'amount >'\naction = \"hold\"\n";
    // The mistake is said in words, at the operator with nothing after it.
    check_errors(
        text,
        &["a.toml:3:16: rule `r1`: `>` has nothing on its right: put a value after it"],
    );
}

#[test]
fn unknown_keys_name_the_rule() {
    let text = "[[rule]]\nid = \"first\"\nwhen = 'true'\naction = \"hold\"\n\n[[rule]]\nid = \"second\"\nwhen = 'true'\nactoin = \"hold\"\n";
    let e = errors(&[("a.toml", text)]);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("a.toml:9:1: rule `second`: unknown field `actoin`"),
        "{e:?}"
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let a = r#"
[scoring]
hold_at = 90
deny_at = 50

[[counter]]
id = "c"
key = ["account"]
aggregate = "avg"
window = "1 hour"

[[rule]]
id = "dup"
when = 'true'
action = "block"

[[rule]]
id = "s"
when = 'true'
action = "hold"
score = 5

[[rule]]
id = "m"
when = 'true'
action = "hold"
message = "{nope} and {amount"
"#;
    let b = r#"
[scoring]
hold_at = 1

[[rule]]
id = "dup"
when = 'lists.nothing == 1'
action = "deny"
"#;
    let e = errors(&[("a.toml", a), ("b.toml", b)]);
    let expected = [
        "a.toml:2:1: `hold_at` (90) must not be above `deny_at` (50)",
        "b.toml:2:1: `[scoring]` may appear once; already defined at a.toml:2",
        "a.toml:8:8: counter `c`: `account` is not an intent field",
        "a.toml:9:13: counter `c`: `aggregate` must be \"count\", \"sum\", \"max\" or \"distinct\", found `avg`",
        "a.toml:10:10: counter `c`: `window`: `1 hour` is not a duration",
        "a.toml:15:10: rule `dup`: unknown action `block`",
        "a.toml:21:9: rule `s`: `score` is only allowed on rules with action = \"score\"",
        "a.toml:27:13: rule `m`: unknown placeholder `{nope}`",
        "a.toml:27:23: rule `m`: unclosed `{` in `message`",
        "b.toml:6:6: rule `dup`: duplicate rule id; already defined at a.toml:13",
        "b.toml:7:9: rule `dup`: unknown list `nothing`",
    ];
    for want in expected {
        assert!(
            e.iter().any(|got| got.starts_with(want)),
            "missing `{want}` in\n{}",
            e.join("\n")
        );
    }
    assert_eq!(e.len(), expected.len(), "{}", e.join("\n"));
}

#[test]
fn type_errors_are_load_errors() {
    let text = "[lists]\nc = [\"KP\"]\n\n[[rule]]\nid = \"t\"\nwhen = 'amount in lists.c'\naction = \"deny\"\n";
    // Operator errors point at the operator.
    check_errors(
        text,
        &["a.toml:6:16: rule `t`: a number is never in a list of strings"],
    );
}

#[test]
fn section_values_are_checked() {
    let text = "[decision]\nprecedence = [\"deny\", \"deny\", \"hold\"]\non_error = \"panic\"\n\n[fx]\nbase = \"EURO\"\nrates = { USD = \"-1\", XYZ = \"1\" }\n";
    let e = errors(&[("a.toml", text)]);
    for want in [
        "a.toml:2:14: `precedence` must name each of",
        "a.toml:3:12: `on_error` must be",
        "a.toml:6:8: `base` `EURO` is not an ISO 4217 currency code",
        "the rate for `USD` must be a positive decimal",
        "rate key `XYZ` is not an ISO 4217 currency code",
    ] {
        assert!(
            e.iter().any(|got| got.contains(want)),
            "missing `{want}` in\n{}",
            e.join("\n")
        );
    }
}

#[test]
fn counter_where_is_checked_and_cannot_read_counters() {
    let text = "[[counter]]\nid = \"c\"\nkey = [\"account_id\"]\naggregate = \"sum\"\nwindow = \"1h\"\nwhere = 'counters.c > 1'\n";
    let e = errors(&[("a.toml", text)]);
    assert!(
        e.iter()
            .any(|m| m.contains("a sum counter needs a `field`")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|m| m
                .starts_with("a.toml:6:10: counter `c`: a counter's `where` cannot read counters")),
        "{e:?}"
    );
}

#[test]
fn templates_render_placeholders_and_escaped_braces() {
    let text = "[[rule]]\nid = \"t\"\nwhen = 'true'\naction = \"hold\"\nmessage = \"{{literal}} {amount} {currency} for {counterparty.id}: {attributes.n} {attributes.neg} {attributes.ok}\"\n";
    let rs = load(&[("a.toml", text)]).unwrap();
    let intent = crate::intent::parse_intent(
        br#"{"intent_id":"i","agent_id":"a","account_id":"b","action":"transfer","amount":"5.50","currency":"EUR","created_at":"2026-01-01T00:00:00Z","attributes":{"n":-42,"neg":-0.050,"ok":true}}"#,
        1 << 16,
    )
    .unwrap();
    let act = Activation {
        intent: &intent,
        amount_base: Ok(Decimal::ZERO),
        counters: &[],
        lists: &[],
        action: crate::expr::ActionId::UNKNOWN,
    };
    let rendered = rs.rules[0].message.as_ref().map(|m| m.render(&act));
    assert_eq!(
        rendered.as_deref(),
        Some("{literal} 5.50 EUR for ?: -42 -0.050 true")
    );
}

#[test]
fn an_empty_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = Ruleset::load_dir(dir.path()).unwrap_err();
    assert!(e.to_string().contains("no `*.toml` rules files"), "{e}");
}

#[test]
fn resolution_is_checked_against_the_window() {
    let text = "[[counter]]\nid = \"c\"\nkey = [\"account_id\"]\naggregate = \"count\"\nwindow = \"1h\"\nresolution = \"2h\"\n";
    check_errors(
        text,
        &["a.toml:6:14: counter `c`: `resolution` must not be longer than `window`"],
    );
    let fine = text.replace("2h", "30s");
    let rs = load(&[("a.toml", &fine)]).unwrap();
    assert_eq!(
        (rs.counters[0].resolution, rs.counters[0].buckets),
        (TimeDelta::seconds(30), 120)
    );
}

#[test]
fn approvals_are_for_hold_rules_only_and_bounded() {
    let rules = r#"
[[rule]]
id = "two"
when = 'amount > 1'
action = "hold"
approvals = 2

[[rule]]
id = "deny-with-approvals"
when = 'amount > 2'
action = "deny"
approvals = 2

[[rule]]
id = "too-many"
when = 'amount > 3'
action = "hold"
approvals = 6

[[rule]]
id = "none"
when = 'amount > 4'
action = "hold"
approvals = 0
"#;
    check_errors(
        rules,
        &[
            "a.toml:12:13: rule `deny-with-approvals`: `approvals` is only allowed on rules with action = \"hold\"",
            "a.toml:18:13: rule `too-many`: `approvals` must be 1 to 5",
            "a.toml:24:13: rule `none`: `approvals` must be 1 to 5",
        ],
    );
    let good = load(&[("a.toml", "[[rule]]\nid = \"two\"\nwhen = 'amount > 1'\naction = \"hold\"\napprovals = 2\n\n[[rule]]\nid = \"one\"\nwhen = 'amount > 1'\naction = \"hold\"\n")]).unwrap();
    assert_eq!(
        good.rules.iter().map(|r| r.approvals).collect::<Vec<_>>(),
        [2, 1]
    );
}

#[test]
fn partitioning_needs_every_counter_keyed_by_the_partition_key() {
    use crate::intent::FieldPath;
    let rules = load(&[(
        "a.toml",
        r#"
[[counter]]
id = "by_account"
key = ["account_id"]
aggregate = "count"
window = "1h"

[[counter]]
id = "by_account_and_payee"
key = ["counterparty.id", "account_id"]
aggregate = "count"
window = "1h"

[[counter]]
id = "by_agent"
key = ["agent_id"]
aggregate = "count"
window = "1h"
"#,
    )])
    .unwrap();
    let account = FieldPath::Field(Field::AccountId);
    // One partition is exact for every counter.
    assert!(rules.check_partitioning(&account, 1).is_ok());
    let e = rules.check_partitioning(&account, 3).unwrap_err();
    assert_eq!(
        e.counters.iter().map(|c| &*c.id).collect::<Vec<_>>(),
        ["by_agent"],
        "a key that contains the partition key, in any position, is whole"
    );
    let text = e.to_string();
    assert!(text.starts_with("the intents topic has 3 partitions keyed by `account_id`, but 1 counter is not keyed by `account_id`"), "{text}");
    assert!(
        text.contains("counter `by_agent` has key [agent_id]"),
        "{text}"
    );
    assert!(text.contains("ways out: use one partition"), "{text}");
    // Keyed by agent, the two account counters are split instead.
    let e = rules
        .check_partitioning(&FieldPath::Field(Field::AgentId), 2)
        .unwrap_err();
    assert_eq!(
        e.counters.iter().map(|c| &*c.id).collect::<Vec<_>>(),
        ["by_account", "by_account_and_payee"]
    );
    // A ruleset without counters fits any partitioning.
    let none = load(&[("a.toml", "")]).unwrap();
    assert!(none.check_partitioning(&account, 12).is_ok());
}
