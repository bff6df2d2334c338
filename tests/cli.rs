//! The command line as a user meets it: `riskgate check`, `test`, `replay` and `--help`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // Tests fail loudly.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn riskgate() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_riskgate"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"));
    c
}

const INTENT: &str = r#"{"intent_id":"cli-1","agent_id":"payments-bot","account_id":"acct-1","action":"transfer","amount":"20000.00","currency":"EUR","counterparty":{"id":"cp-0001","country":"DE"},"created_at":"2026-11-28T12:00:00Z"}"#;

#[test]
fn check_prints_the_ruleset_version() {
    let out = riskgate().args(["check", "rules"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let version = text.split_whitespace().nth(1).unwrap();
    assert!(
        text.starts_with("ruleset ") && text.contains("is valid"),
        "{text}"
    );
    assert!(
        version.len() == 12 && version.chars().all(|c| c.is_ascii_hexdigit()),
        "{text}"
    );
}

#[test]
fn check_of_a_missing_directory_says_so() {
    let out = riskgate().args(["check", "no/such/dir"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("no/such/dir: cannot read the rules directory"),
        "{err}"
    );
}

#[test]
fn test_reports_each_case_and_a_closing_count() {
    let out = riskgate().args(["test", "rules"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(out.status.success(), "{text}");
    let last = text.lines().last().unwrap();
    assert!(last.contains(" passed, 0 failed"), "{last}");
}

#[test]
fn test_exits_non_zero_on_a_failing_case() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("r.toml"),
        "[[rule]]\nid = \"big\"\nwhen = 'amount > 10'\naction = \"hold\"\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    std::fs::write(
        dir.path().join("tests/t.toml"),
        "[defaults]\nagent_id = \"a\"\naccount_id = \"b\"\naction = \"transfer\"\ncurrency = \"EUR\"\ncreated_at = 2026-11-28T10:00:00Z\n\n[[case]]\nname = \"eleven is big\"\nintent = { amount = \"11\" }\nexpect = { decision = \"allow\" }\n",
    )
    .unwrap();
    let out = riskgate().arg("test").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("FAIL  eleven is big"), "{text}");
    assert!(
        text.contains("decision: expected `allow`, got `hold`"),
        "{text}"
    );
    assert!(text.contains("0 passed, 1 failed"), "{text}");
}

#[test]
fn replay_of_the_examples_shows_every_outcome() {
    let out = riskgate()
        .args([
            "replay",
            "--rules",
            "rules",
            "--input",
            "examples/intents.jsonl",
            "--dlq",
            "/dev/null",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for outcome in ["allow", "hold", "deny"] {
        assert!(
            text.contains(&format!("\"decision\":\"{outcome}\"")),
            "no {outcome}"
        );
    }
    let summary = String::from_utf8(out.stderr).unwrap();
    assert!(
        summary.contains("decisions (") && summary.contains("invalid"),
        "{summary}"
    );
}

#[test]
fn replay_streams_each_decision_as_its_intent_arrives() {
    let mut child = riskgate()
        .args(["replay", "--quiet", "--rules", "rules"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    // Blank lines are skipped; the decision arrives while the input is still open.
    writeln!(stdin, "\n{INTENT}").unwrap();
    stdin.flush().unwrap();
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a decision before the input ends");
    let d: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(d["intent_id"], "cli-1");
    assert_eq!(
        d["source"],
        serde_json::json!({"file": "<stdin>", "line": 2})
    );
    // An invalid line goes to the dead letters (standard error), not the decisions.
    writeln!(stdin, "{{\"intent_id\": 5}}").unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(status.success());
    assert!(
        rx.recv_timeout(Duration::from_secs(5)).is_err(),
        "only one decision"
    );
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let letter: serde_json::Value = serde_json::from_str(err.lines().next().unwrap()).unwrap();
    assert_eq!(letter["error"]["kind"], "invalid_field");
    assert_eq!(letter["error"]["field"], "intent_id");
    assert_eq!(letter["payload"], "{\"intent_id\": 5}");
    assert_eq!(letter["source"]["line"], 3);
}

#[test]
fn replay_writes_to_files() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, format!("{INTENT}\nnot json\n")).unwrap();
    let (out, dlq) = (dir.path().join("out.jsonl"), dir.path().join("dlq.jsonl"));
    let status = riskgate()
        .args(["replay", "--quiet", "--rules", "rules", "--input"])
        .args([
            &input,
            Path::new("--output"),
            &out,
            Path::new("--dlq"),
            &dlq,
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let decision: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(decision["decision"], "allow", "a trusted payee: {decision}");
    let letter: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dlq).unwrap()).unwrap();
    assert_eq!(letter["error"]["kind"], "invalid_json");
}

/// Asserts that `riskgate ARGS` prints each of `words`.
fn assert_prints(args: &[&str], words: &[&str]) {
    let out = riskgate().args(args).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    for word in words {
        assert!(text.contains(word), "{word} missing from:\n{text}");
    }
}

#[test]
fn help_documents_every_flag() {
    let flags = [
        "--rules",
        "--input",
        "--output",
        "--dlq",
        "--max-intent-bytes",
        "--duplicate-horizon",
        "--max-future-skew",
        "--partition-key",
        "--quiet",
        "--fail-on-dead-letters",
    ];
    assert_prints(&["replay", "--help"], &flags);
    let commands = [
        "check",
        "test",
        "replay",
        "run",
        "review",
        "probe",
        "hash-secret",
        "config",
    ];
    assert_prints(&["--help"], &commands);
}

/// `riskgate ARGS` with `input` on standard input: its output.
fn run_with_input(args: &[&str], input: &str) -> std::process::Output {
    let mut child = riskgate()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn hash_secret(input: &str) -> std::process::Output {
    run_with_input(&["hash-secret"], input)
}

#[test]
fn hash_secret_prints_a_hash_that_signs_the_reviewer_in() {
    use riskgate::config::{Reviewer, Role};
    use riskgate::review::auth::Auth;
    let out = hash_secret("a-long-secret-for-alice\n");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$v=19$"), "{hash}");
    assert!(!hash.contains("a-long-secret"));
    let reviewer = Reviewer {
        name: "alice".into(),
        role: Role::Approver,
        secret_hash: hash,
        agents: Vec::new(),
    };
    let auth = Auth::new(&[reviewer], std::time::Duration::from_secs(60), false).unwrap();
    assert!(auth.verify("alice", "a-long-secret-for-alice").is_some());
    assert!(
        auth.verify("alice", "a-long-secret-for-alice\n").is_none(),
        "the newline is not part of it"
    );

    let short = hash_secret("short\n");
    assert_eq!(short.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&short.stderr).contains("shorter than 12 characters"));
}

#[test]
fn replay_exits_two_on_dead_letters_only_when_asked() {
    let input = format!("{INTENT}\nnot json\n");
    let run = |extra: &[&str]| {
        let mut args = vec!["replay", "--rules", "rules", "--dlq", "/dev/null"];
        args.extend_from_slice(extra);
        run_with_input(&args, &input)
    };
    // By default a dead letter does not change the exit status: the service goes on too.
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let out = run(&["--fail-on-dead-letters"]);
    assert_eq!(out.status.code(), Some(2));
    // Every decision is still written.
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("1 line of the input was invalid"), "{err}");
    // Without dead letters the flag changes nothing.
    let out = run_with_input(
        &["replay", "--rules", "rules", "--fail-on-dead-letters", "-q"],
        INTENT,
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn probe_passes_on_200_and_fails_otherwise() {
    use std::io::Read;
    use std::net::TcpListener;
    // A one-shot HTTP server answering `status`.
    let serve = |status: &'static str| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let n = stream.read(&mut request).unwrap();
            assert!(String::from_utf8_lossy(&request[..n]).starts_with("GET /readyz HTTP/1.0\r\n"));
            write!(stream, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").unwrap();
        });
        format!("http://{address}/readyz")
    };
    let probe = |url: &str| riskgate().args(["probe", url]).output().unwrap();
    assert_eq!(probe(&serve("200 OK")).status.code(), Some(0));
    let out = probe(&serve("503 Service Unavailable"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("answered 503"));
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let out = probe(&format!("http://{closed}/readyz"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach"));
    let out = probe("https://example.invalid/");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a plain-HTTP URL"));
}

#[test]
fn configuration_errors_name_environment_overrides_and_durations_print_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[kafka]\ntransactional_id = \"t\"\n[engine]\nduplicate_horizon = \"24h\"\n",
    )
    .unwrap();
    let out = riskgate()
        .args(["config", "--config"])
        .arg(&path)
        .env("RISKGATE__ENGINE__DUPLICATE_HORIZN", "48h")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("engine.duplicate_horizn (set by the environment variable `RISKGATE__ENGINE__DUPLICATE_HORIZN`): unknown key"),
        "{err}"
    );
    let out = riskgate()
        .args(["config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("duplicate_horizon = \"24h\""), "{text}");
}
