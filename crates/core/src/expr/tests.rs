use super::ast::Node;
use super::*;
use crate::intent::{parse_intent, CpField};
use chrono::TimeDelta;

const INTENT: &str = r#"{"intent_id":"i-1","agent_id":"procurement-bot","account_id":"acct-7","action":"transfer",
  "amount":"10000.01","currency":"EUR","counterparty":{"id":"cp-9","country":"KP"},
  "created_at":"2026-11-28T22:30:00Z","attributes":{"records":1500,"tags":["a","b"],"rate":0.1,"env":"production"}}"#;

fn scope_counters() -> Vec<(String, Ty)> {
    vec![
        ("n_1h".into(), Ty::Number),
        ("sum_1h".into(), Ty::Number),
        ("missing".into(), Ty::Number),
    ]
}

fn scope_lists() -> Vec<(String, Elem)> {
    vec![("sanctioned".into(), Elem::Str)]
}

/// Compiles `src` as a condition (checked and, unless `options` say otherwise, optimized).
fn compile(src: &str, scope: &Scope<'_>, want_bool: bool) -> Result<Program, Vec<CompileError>> {
    super::compile(src, scope, want_bool, &[], CompileOptions::default())
}

/// Compiles `src` as a condition with the sample lists and no counters (as a counter's
/// `where` is).
fn compile_without_counters(src: &str) -> Program {
    let lists = scope_lists();
    let scope = Scope {
        counters: None,
        lists: &lists,
    };
    compile(src, &scope, true).unwrap()
}

/// Compiles `src` with the sample counters and lists in scope, optimized.
fn compile_sample(src: &str) -> Result<Program, Vec<CompileError>> {
    compile_sample_with(src, CompileOptions::default())
}

/// The root node of `src` compiled in the sample scope.
fn node(src: &str) -> Node {
    compile_sample(src).unwrap().node
}

fn compile_sample_with(src: &str, options: CompileOptions) -> Result<Program, Vec<CompileError>> {
    let counters = scope_counters();
    let lists = scope_lists();
    let scope = Scope {
        counters: Some(&counters),
        lists: &lists,
    };
    super::compile(src, &scope, false, &[], options)
}

/// Evaluates `src` against the sample intent, compiled with the optimizer on and with it
/// off: `Ok(value text)` or `Err(message)`. Both must agree, to the letter of the error.
fn run(src: &str) -> Result<String, String> {
    let on = run_with(src, CompileOptions { optimize: true });
    let off = run_with(src, CompileOptions { optimize: false });
    assert_eq!(on, off, "{src}: the optimizer changed the answer");
    on
}

fn run_with(src: &str, options: CompileOptions) -> Result<String, String> {
    let program =
        compile_sample_with(src, options).map_err(|e| format!("load: {}", e[0].message))?;
    let intent = parse_intent(INTENT.as_bytes(), 1 << 16).unwrap();
    let counter_values = [
        Ok(Value::Int(10)),
        Ok(Value::Num(Decimal::new(100, 2))),
        Err("counter `missing` is unavailable: the intent has no `counterparty.account`"),
    ];
    let list_values = [ConstList::new(vec![
        Scalar::Str("KP".into()),
        Scalar::Str("IR".into()),
    ])];
    let act = Activation {
        intent: &intent,
        amount_base: Ok(Decimal::new(1000001, 2)),
        counters: &counter_values,
        lists: &list_values,
        action: ActionId::UNKNOWN,
    };
    program
        .eval(&act)
        .map(|v| v.to_string())
        .map_err(|e| e.0.into_owned())
}

fn check(src: &str, expected: &str) {
    assert_eq!(run(src), Ok(expected.to_owned()), "{src}");
}

fn check_err(src: &str, needle: &str) {
    match run(src) {
        Ok(v) => panic!("{src} gave {v}, expected an error with `{needle}`"),
        Err(e) => assert!(e.contains(needle), "{src}: `{e}` lacks `{needle}`"),
    }
}

#[test]
fn decimal_boundaries_are_exact() {
    check("amount > 10000", "true");
    check("amount > 10000.01", "false");
    check("amount >= 10000.01", "true");
    check("amount == 10000.010", "true");
    check("amount_base - 10000 == 0.01", "true");
    // Literal first: the fused comparison flips the operator.
    check("10000 < amount", "true");
    check("10000.01 <= amount", "true");
    check("10000.02 <= amount", "false");
    check("10000.01 == amount_base", "true");
    check("counters.sum_1h != 1", "false");
    check("0.1 + 0.2 == 0.3", "true");
    check("attributes.rate * 3 == 0.3", "true");
    check("counters.sum_1h + amount", "10001.01");
}

#[test]
fn fused_sums_answer_as_the_general_arithmetic_does() {
    for (fused, general) in [
        (
            "counters.sum_1h + amount_base > 10001",
            "counters.sum_1h + amount_base + 0 > 10001",
        ),
        (
            "counters.sum_1h + amount_base > 10002",
            "counters.sum_1h + amount_base + 0 > 10002",
        ),
        (
            "amount_base + counters.n_1h == 10010.01",
            "amount_base + counters.n_1h + 0 == 10010.01",
        ),
        (
            "amount - counters.sum_1h <= 9999",
            "amount - counters.sum_1h + 0 <= 9999",
        ),
        (
            "10001.01 >= counters.sum_1h + amount",
            "10001.01 >= counters.sum_1h + amount + 0",
        ),
        (
            "10001.01 < counters.sum_1h + amount",
            "10001.01 < counters.sum_1h + amount + 0",
        ),
        (
            "counters.missing + amount_base > 1",
            "counters.missing + amount_base + 0 > 1",
        ),
    ] {
        assert!(
            matches!(node(fused), Node::CmpArith(..)),
            "{fused} is not fused"
        );
        assert!(matches!(node(general), Node::Cmp(..)), "{general}");
        assert_eq!(run(fused), run(general), "{fused}");
    }
    // Two counts add as integers, as before: not fused.
    assert!(matches!(
        node("counters.n_1h + counters.n_1h > 1"),
        Node::Cmp(..)
    ));
    check("counters.sum_1h + amount_base > 10001", "true");
    check_err("counters.missing + amount_base > 1", "unavailable");
}

#[test]
fn has_on_a_counterparty_field_is_a_field_test() {
    assert!(matches!(
        node("has(counterparty.country)"),
        Node::HasCp(CpField::Country)
    ));
    assert!(matches!(node("has(attributes.env)"), Node::Has(..)));
    check("has(counterparty.country)", "true");
    check("has(counterparty.account)", "false");
}

#[test]
fn integers_and_decimals_mix() {
    check("7 / 2", "3");
    check("7.0 / 2", "3.5");
    check("7 % 3", "1");
    check("-(3)", "-3");
    check("int(12.9)", "12");
    check("double(\"1.25\") * 4", "5.00");
    check_err("1 / 0", "division by zero");
    check_err("9223372036854775807 + 1", "overflowed");
}

#[test]
fn names_fields_counters_and_lists() {
    check("action", "transfer");
    check("counterparty.id", "cp-9");
    check("counterparty.country in lists.sanctioned", "true");
    check("\"DE\" in lists.sanctioned", "false");
    check("counters.n_1h >= 10", "true");
    check("attributes.records > 1000", "true");
    check("attributes[\"env\"] == \"production\"", "true");
    check("has(attributes.change_request)", "false");
    check("has(attributes.env)", "true");
    check("has(counterparty.name)", "false");
    check("has(counterparty.id)", "true");
    check(
        "has(counterparty.country) && !has(counterparty.account)",
        "true",
    );
    check("currency", "EUR");
    check("size(attributes.tags)", "2");
    check("attributes.tags[1]", "b");
}

#[test]
fn errors_are_absorbed_as_cel_does() {
    check_err("counters.missing == 0", "unavailable");
    check("false && counters.missing == 0", "false");
    check("counters.missing == 0 && false", "false");
    check("true || counters.missing == 0", "true");
    check("counters.missing == 0 || true", "true");
    check_err("true && counters.missing == 0", "unavailable");
    check_err("attributes.nothing > 1", "no field `nothing`");
    check_err("counterparty.name == \"x\"", "no `counterparty.name`");
}

#[test]
fn strings_and_regexes() {
    check("agent_id.startsWith(\"procurement-\")", "true");
    check("agent_id.endsWith(\"-bot\")", "true");
    check("agent_id.contains(\"ment\")", "true");
    check("agent_id.matches(\"^proc.*bot$\")", "true");
    check("action.upperAscii()", "TRANSFER");
    check("size(\"héllo\")", "5");
    check("\"a\" + \"b\"", "ab");
}

#[test]
fn time_and_durations() {
    check("created_at.getHours()", "22");
    check("created_at.getHours(\"+02:00\")", "0");
    check("created_at.getDayOfWeek()", "6");
    check("created_at > timestamp(\"2026-11-28T00:00:00Z\")", "true");
    check(
        "created_at - timestamp(\"2026-11-28T22:00:00Z\") == duration(\"30m\")",
        "true",
    );
    check("duration(\"1h30m\") > duration(\"90m\")", "false");
}

#[test]
fn macros() {
    check("attributes.tags.exists(t, t == \"b\")", "true");
    check("attributes.tags.all(t, t == \"b\")", "false");
    check("attributes.tags.exists_one(t, t == \"a\")", "true");
    check("attributes.tags.map(t, t + \"!\")", "[a!, b!]");
    check("attributes.tags.filter(t, t != \"a\")", "[b]");
    check("[1, 2, 3].exists(x, x > 2)", "true");
    check("true ? \"y\" : \"n\"", "y");
}

#[test]
fn load_errors_name_the_problem() {
    let cases = [
        (
            "amount >",
            "`>` has nothing on its right: put a value after it",
        ),
        // A syntax error that is none of the common mistakes keeps the parser's words.
        ("amount > 5 5", "extraneous input"),
        ("amout > 1", "unknown name `amout`"),
        (
            "counters.n_2h > 1",
            "unknown counter `n_2h`; defined counters: `n_1h`, `sum_1h`, `missing`",
        ),
        ("lists.trusted", "unknown list `trusted`"),
        (
            "counterparty.iban == \"x\"",
            "a counterparty has no field `iban`",
        ),
        ("action > 5", "cannot order a string against a number"),
        ("amount == \"5\"", "always unequal"),
        (
            "amount in lists.sanctioned",
            "a number is never in a list of strings",
        ),
        ("action.frobnicate()", "unknown function `x.frobnicate(…)`"),
        ("agent_id.matches(\"(\")", "invalid regular expression"),
        (
            "timestamp(\"yesterday\") < created_at",
            "not an RFC 3339 timestamp",
        ),
        (
            "duration(\"5 parsecs\") < duration(\"1h\")",
            "not a duration",
        ),
        (
            "action + 1 == 2",
            "cannot apply `+` to a string and a number",
        ),
        ("!amount", "`!` needs true or false"),
    ];
    for (src, needle) in cases {
        match run(src) {
            Err(e) => assert!(
                e.starts_with("load: ") && e.contains(needle),
                "{src}: `{e}` lacks `{needle}`"
            ),
            Ok(v) => panic!("{src} compiled and gave {v}"),
        }
    }
}

#[test]
fn conditions_must_be_boolean() {
    let counters = scope_counters();
    let scope = Scope {
        counters: Some(&counters),
        lists: &[],
    };
    let e = compile("amount + 1", &scope, true).unwrap_err();
    assert!(e[0].message.contains("must be true or false"), "{e:?}");
    assert!(
        compile("attributes.flag", &scope, true).is_ok(),
        "dyn may be bool at run time"
    );
}

#[test]
fn where_clauses_cannot_read_counters() {
    let scope = Scope {
        counters: None,
        lists: &[],
    };
    let e = compile("counters.n_1h > 1", &scope, true).unwrap_err();
    assert!(e[0].message.contains("cannot read counters"), "{e:?}");
}

#[test]
fn error_offsets_point_into_the_expression() {
    let scope = Scope {
        counters: Some(&[]),
        lists: &[],
    };
    let e = compile("action == \"x\" && amout > 1", &scope, true).unwrap_err();
    assert_eq!(e[0].offset, Some(17), "{e:?}");
    let e = compile("action ==", &scope, true).unwrap_err();
    assert!(e[0].offset.is_some(), "{e:?}");
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("1h30m").unwrap(), TimeDelta::minutes(90));
    assert_eq!(
        parse_duration("100ms").unwrap(),
        TimeDelta::milliseconds(100)
    );
    assert_eq!(parse_duration("30d").unwrap(), TimeDelta::days(30));
    assert_eq!(parse_duration("1.5h").unwrap(), TimeDelta::minutes(90));
    assert_eq!(parse_duration("-2s").unwrap(), TimeDelta::seconds(-2));
    for bad in ["", "h", "5", "5 m", "1y", "1h-5m"] {
        assert!(parse_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn action_guards_answer_exactly_as_evaluation_does() {
    let counters = scope_counters();
    let lists = scope_lists();
    let scope = Scope {
        counters: Some(&counters),
        lists: &lists,
    };
    let list_values = [ConstList::new(vec![
        Scalar::Str("payout".into()),
        Scalar::Str("refund".into()),
    ])];
    let conditions = [
        ("action == \"transfer\" && counters.missing > 1", Some(1)),
        ("counters.missing > 1 && \"transfer\" == action", Some(1)),
        ("action in lists.sanctioned && amount > 1", Some(2)),
        (
            "action in [\"payout\", \"deploy\"] && counters.missing > 1",
            Some(2),
        ),
        (
            "(action == \"transfer\" && amount > 1) || (action == \"deploy\" && amount > 1)",
            Some(2),
        ),
        (
            "action == \"transfer\" && amount > 1 && counters.missing > 1",
            Some(1),
        ),
        (
            "action in lists.sanctioned && (amount > 1 && counters.missing > 1) && amount < 5",
            Some(2),
        ),
        ("action == \"payout\"", Some(1)),
        ("action in lists.sanctioned", Some(2)),
        ("amount > 1 && action == \"transfer\"", Some(1)),
        ("action == \"transfer\" || amount > 1", None),
        ("!(action == \"transfer\")", None),
    ];
    // Guards numbered among themselves and with a second condition's, so that some
    // actions have numbers the first does not hold; `export` has none at all.
    let guarded_program = |src: &str| {
        super::compile(src, &scope, true, &list_values, CompileOptions::default()).unwrap()
    };
    let other = || guarded_program("action == \"refund\" && amount > 1");
    for (src, guarded) in conditions {
        let plain = super::compile(
            src,
            &scope,
            true,
            &list_values,
            CompileOptions { optimize: false },
        )
        .unwrap();
        let fast = guarded_program(src);
        assert_eq!(
            fast.guard.as_ref().map(|g| g.actions.len()),
            guarded,
            "{src}"
        );
        let mut numbered = guarded_program(src);
        let mut refund = other();
        let index = ActionIndex::build(&mut [&mut numbered, &mut refund]);
        assert_eq!(
            numbered.guard.as_ref().map(|g| g.set.is_some()),
            guarded.map(|_| true),
            "{src}"
        );
        for action in ["transfer", "payout", "deploy", "export", "refund"] {
            let json = INTENT.replace("\"transfer\"", &format!("\"{action}\""));
            let intent = parse_intent(json.as_bytes(), 1 << 16).unwrap();
            let counter_values = [
                Ok(Value::Int(10)),
                Ok(Value::Num(Decimal::ONE)),
                Err("unavailable"),
            ];
            let mut act = Activation {
                intent: &intent,
                amount_base: Ok(Decimal::ONE),
                counters: &counter_values,
                lists: &list_values,
                action: ActionId::UNKNOWN,
            };
            assert_eq!(
                fast.eval_bool(&act),
                plain.eval_bool(&act),
                "{src} for {action}"
            );
            act.action = index.id(action);
            assert_eq!(
                index.names.iter().any(|n| **n == *action),
                act.action != ActionId::OTHER
            );
            assert_eq!(
                numbered.eval_bool(&act),
                plain.eval_bool(&act),
                "{src} for {action}, by numbers"
            );
        }
    }
}

#[test]
fn a_leading_action_test_is_answered_by_its_guard() {
    let cover = |src: &str| compile_without_counters(src).guard.map(|g| g.cover);
    assert_eq!(cover("action == \"x\""), Some(Cover::Whole));
    assert_eq!(cover("action == \"x\" && amount > 1"), Some(Cover::First));
    assert_eq!(
        cover("action == \"x\" && amount > 1 && amount < 5 && has(counterparty.id)"),
        Some(Cover::First)
    );
    assert_eq!(cover("amount > 1 && action == \"x\""), Some(Cover::Implied));
    assert_eq!(cover("amount > 1"), None);
}

#[test]
fn any_number_of_guarded_actions_is_numbered() {
    let mut programs: Vec<Program> = (0..130)
        .map(|i| compile_without_counters(&format!("action == \"a{i}\"")))
        .collect();
    let index = ActionIndex::build(&mut programs.iter_mut().collect::<Vec<_>>());
    for name in ["a1", "a64", "a129"] {
        let intent = parse_intent(
            INTENT
                .replace("\"transfer\"", &format!("\"{name}\""))
                .as_bytes(),
            1 << 16,
        )
        .unwrap();
        let act = Activation {
            intent: &intent,
            amount_base: Ok(Decimal::ONE),
            counters: &[],
            lists: &[],
            action: index.id(&intent.head.action),
        };
        assert_ne!(act.action, ActionId::OTHER, "{name}");
        for (i, p) in programs.iter().enumerate() {
            assert_eq!(
                p.eval_bool(&act),
                Ok(format!("a{i}") == name),
                "{name} by a{i}"
            );
        }
    }
}
