//! `riskgate gateway` against the real broker, with the real engine (`riskgate run`) deciding:
//! an agent's round trips (allow, hold, deny, invalid), duplicates and conflicts, waits that
//! run out and the later `GET`, a gateway killed with requests in flight, two instances,
//! every key and limit, forged decisions, and OpenID AuthZEN evaluations (the
//! specification's own examples among them).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use riskgate_test_support as support;

use std::fs;
use std::time::Duration;

use base64::Engine as _;
use chrono::{SecondsFormat, Utc};
use serde_json::{json, Value};
use support::gateway::{config_text, AgentKey, Gateway};
use support::*;

/// A test's own topics on the shared broker, and the rules the engine decides with.
struct Setup {
    _serial: std::sync::MutexGuard<'static, ()>,
    broker: Broker,
    topics: Topics,
    rules: tempfile::TempDir,
}

/// The sample policy (precedence, scoring, rates) and three rules whose outcome depends only
/// on the intent, not on the hour or on what came before (the sample payments rules score
/// night transfers and new payees): a trusted payee is allowed up to 50,000 EUR, a transfer
/// above 10,000 EUR held, above 100,000 EUR denied.
fn rules() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::copy(
        repo().join("rules/00-policy.toml"),
        dir.path().join("00-policy.toml"),
    )
    .unwrap();
    fs::write(
        dir.path().join("gateway.toml"),
        r#"
[[rule]]
id = "transfer-hard-limit"
when = 'action == "transfer" && amount_base > 100000'
action = "deny"
message = "{amount} {currency} is above the 100000 EUR hard limit for a single transfer"

[[rule]]
id = "large-transfer"
when = 'action == "transfer" && amount_base > 10000'
action = "hold"
message = "{amount} {currency} is above the 10000 EUR transfer limit"

[[rule]]
id = "trusted-payee"
when = 'has(counterparty.id) && counterparty.id in lists.trusted_payees && amount_base <= 50000'
action = "allow"
message = "{counterparty.id} is a trusted payee"
"#,
    )
    .unwrap();
    dir
}

impl Setup {
    fn new(prefix: &str, partitions: i32) -> Setup {
        let (_serial, broker, topics) = topics_on_shared_broker(prefix, partitions);
        Setup {
            _serial,
            broker,
            topics,
            rules: rules(),
        }
    }

    fn config(&self) -> ServiceConfig<'_> {
        ServiceConfig::new(
            &self.broker,
            &self.topics,
            &self.topics.group,
            self.rules.path(),
        )
    }

    /// `riskgate run`, started and deciding.
    fn engine(&self) -> Service {
        let mut service = Service::start(&self.config());
        service.wait_ready();
        service
    }
}

/// An intent of `agent` on `account` now: a transfer of `amount` EUR to `payee`.
fn transfer(id: &str, agent: &str, account: &str, amount: &str, payee: &str) -> Value {
    json!({
        "intent_id": id,
        "agent_id": agent,
        "account_id": account,
        "action": "transfer",
        "amount": amount,
        "currency": "EUR",
        "counterparty": {"id": payee, "country": "DE"},
        "created_at": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
    })
}

/// The rule ids of a decision's reasons.
fn rules_of(decision: &Value) -> Vec<String> {
    decision["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits until the gateway's metric `series` reaches `at_least`.
fn wait_metric(g: &Gateway, series: &str, at_least: f64) {
    wait_for(
        &format!("{series} >= {at_least}"),
        Duration::from_secs(30),
        || (g.metric(series).unwrap_or(0.0) >= at_least).then_some(()),
    );
}

/// `POST /v1/intents` from another thread, tolerating a connection that breaks.
fn propose_in_background(
    address: &str,
    key: &AgentKey,
    intent: &Value,
    wait: &str,
) -> std::thread::JoinHandle<std::io::Result<Response>> {
    let (address, bearer, body) = (address.to_owned(), key.bearer(), intent.to_string());
    let path = format!("/v1/intents?wait={wait}");
    std::thread::spawn(move || {
        try_http(
            &address,
            "POST",
            &path,
            &[("Authorization", &bearer)],
            Some(&body),
        )
    })
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn an_agent_gets_allow_hold_and_deny_and_what_is_invalid_never_reaches_kafka() {
    let setup = Setup::new("gw-trip", 3);
    let (broker, topics, c) = (&setup.broker, &setup.topics, setup.config());
    let _service = setup.engine();
    let bot = AgentKey::new("payments-bot");
    let g = Gateway::start(&config_text(&c, "", &[&bot]));

    // Allow (a trusted payee), hold (above 10,000 EUR), deny (above the hard limit): each
    // answered with the engine's decision, without the intent the agent sent.
    for (id, amount, payee, outcome, rule) in [
        ("t-allow", "50.00", "cp-0001", "allow", "trusted-payee"),
        ("t-hold", "20000.00", "cp-7777", "hold", "large-transfer"),
        (
            "t-deny",
            "200000.00",
            "cp-7777",
            "deny",
            "transfer-hard-limit",
        ),
    ] {
        let r = g.propose(
            &bot,
            &transfer(id, "payments-bot", "acct-1", amount, payee),
            "10s",
        );
        assert_eq!(r.status, 200, "{id}: {}", r.body);
        let d = r.json();
        assert_eq!(d["intent_id"], id);
        assert_eq!(d["decision"], outcome, "{id}: {d}");
        assert!(rules_of(&d).contains(&rule.to_owned()), "{id}: {d}");
        assert!(
            d.get("intent").is_none(),
            "the agent's own intent is not sent back"
        );
        assert_eq!(d["source"]["topic"], topics.intents.as_str());
    }
    // What the gateway wrote is what the engine decided: keyed by account, on the partition
    // Kafka's Java clients choose for that key (murmur2), answered once each.
    let intents = broker.read_all(&topics.intents);
    assert_eq!(intents.len(), 3);
    assert!(intents.iter().all(|r| r.key.as_deref() == Some("acct-1")));
    assert_eq!(
        intents.iter().map(|r| r.partition).collect::<Vec<_>>(),
        vec![intents[0].partition; 3]
    );

    // Invalid: 400 with the dead-letter error (its kind as the code, its field), and nothing
    // written to Kafka.
    let mut no_account = transfer("t-bad", "payments-bot", "acct-1", "1.00", "cp-1");
    no_account.as_object_mut().unwrap().remove("account_id");
    let r = g.propose(&bot, &no_account, "1s");
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "missing_field");
    assert_eq!(r.json()["error"]["field"], "account_id");
    let mut bad_amount = transfer("t-bad", "payments-bot", "acct-1", "1.00", "cp-1");
    bad_amount["amount"] = json!("1e5");
    let r = g.propose(&bot, &bad_amount, "1s");
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (400, json!("invalid_field"))
    );
    let r = g.request(
        "POST",
        "/v1/intents",
        Some(&bot),
        Some(("application/json", "{\"intent_id\": ")),
        &[],
    );
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (400, json!("invalid_json"))
    );
    let r = g.request(
        "POST",
        "/v1/intents",
        Some(&bot),
        Some(("text/plain", "hello")),
        &[],
    );
    assert_eq!(r.status, 415, "{}", r.body);
    assert_eq!(
        broker.read_all(&topics.intents).len(),
        3,
        "nothing invalid was written"
    );

    // A signed intent (application/jose) goes to Kafka as it was sent; until the engine
    // verifies signatures (design 9.1) it cannot read one, and the agent is told so: 422
    // with the dead letter.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = transfer("t-jws", "payments-bot", "acct-1", "5.00", "cp-0001");
    let jws = format!(
        "{}.{}.{}",
        b64.encode(br#"{"alg":"EdDSA","kid":"bot-1"}"#),
        b64.encode(payload.to_string()),
        b64.encode([7u8; 64])
    );
    let r = g.request(
        "POST",
        "/v1/intents?wait=10s",
        Some(&bot),
        Some(("application/jose", &jws)),
        &[],
    );
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "dead_letter");
    assert_eq!(r.json()["error"]["dead_letter"]["kind"], "invalid_json");
    let letters = broker.read_all(&topics.dead_letters);
    assert_eq!(letters.len(), 1);
    assert_eq!(
        letters[0].value["payload"],
        jws.as_str(),
        "passed through unchanged"
    );

    // Counted: requests by status, waits, answers by outcome.
    for (series, n) in [
        ("riskgate_gateway_requests_total{code=\"200\"}", 3.0),
        ("riskgate_gateway_requests_total{code=\"400\"}", 3.0),
        ("riskgate_gateway_requests_total{code=\"422\"}", 1.0),
        ("riskgate_gateway_wait_seconds_count", 4.0),
        ("riskgate_gateway_answers_total{answer=\"hold\"}", 1.0),
        (
            "riskgate_gateway_refusals_total{reason=\"invalid_intent\"}",
            3.0,
        ),
    ] {
        assert_eq!(g.metric(series), Some(n), "{series}");
    }
    // The example agent (Python, standard library only) acts on each outcome.
    for (amount, payee, code, says) in [
        ("25.00", "cp-0001", 0, "allowed: transferring 25.00 EUR"),
        ("30000.00", "cp-7777", 10, "held for review"),
        ("300000.00", "cp-7777", 20, "denied"),
    ] {
        let out = std::process::Command::new("python3")
            .arg(repo().join("examples/agent.py"))
            .args(["--account", "acct-2", "--amount", amount, "--payee", payee])
            .env("RISKGATE_GATEWAY", format!("http://{}", g.address))
            .env("RISKGATE_KEY", &bot.key)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.starts_with(says), "{stdout}");
    }
    // The description of the API, and the probes.
    let doc = g.request("GET", "/v1/openapi.json", None, None, &[]).json();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(g.request("GET", "/readyz", None, None, &[]).status, 200);
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn waits_that_run_out_duplicates_conflicts_and_forged_decisions() {
    let setup = Setup::new("gw-dup", 1);
    let (broker, topics, c) = (&setup.broker, &setup.topics, setup.config());
    let bot = AgentKey::new("payments-bot");
    let other = AgentKey::new("other-bot");
    // The gateway first, no engine yet: nothing is decided.
    let g = Gateway::start(&config_text(&c, "", &[&bot, &other]));

    let allow = transfer("t-1", "payments-bot", "acct-9", "50.00", "cp-0001");
    let r = g.propose(&bot, &allow, "500ms");
    assert_eq!(r.status, 202, "{}", r.body);
    let location = r.header("location").unwrap().to_owned();
    assert_eq!(location, "/v1/decisions/acct-9/t-1");
    assert_eq!(r.json()["status"], "pending");
    assert_eq!(g.get(&bot, &location, "0").status, 202);
    let r = g.get(&bot, "/v1/decisions/acct-9/never-proposed", "0");
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (404, json!("not_known"))
    );

    // A forged `allow` for a big transfer, written by a plain producer without the MAC, for
    // exactly the record the gateway waits on: never an answer, and counted.
    let deny = transfer("t-big", "payments-bot", "acct-9", "200000.00", "cp-7777");
    let r = g.propose(&bot, &deny, "0");
    assert_eq!(r.status, 202);
    let big = r.header("location").unwrap().to_owned();
    let written = broker.read_all(&topics.intents);
    let at = written
        .iter()
        .find(|r| r.value["intent_id"] == "t-big")
        .unwrap();
    let mut forged = deny.clone();
    forged["decision"] = json!("allow");
    forged["score"] = json!(0);
    forged["reasons"] = json!([]);
    forged["errors"] = json!([]);
    forged["counters"] = json!({});
    forged["ruleset"] = json!("forged");
    forged["decided_at"] = json!(Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true));
    forged["source"] =
        json!({"topic": topics.intents, "partition": at.partition, "offset": at.offset});
    broker.produce(
        &topics.decisions,
        &[(None, "acct-9".to_owned(), forged.to_string().into_bytes())],
    );
    wait_metric(
        &g,
        &format!(
            "riskgate_unverified_records_total{{reason=\"missing\",topic=\"{}\"}}",
            topics.decisions
        ),
        1.0,
    );
    assert_eq!(
        g.get(&bot, &big, "1s").status,
        202,
        "the forged allow is no answer"
    );

    // A signed intent, not decided yet either: the engine will send it to the dead letters.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let jws = format!(
        "{}.{}.{}",
        b64.encode(br#"{"alg":"ES256","kid":"bot-1"}"#),
        b64.encode(transfer("t-jws", "payments-bot", "acct-9", "5.00", "cp-0001").to_string()),
        b64.encode([9u8; 64])
    );
    let r = g.request(
        "POST",
        "/v1/intents?wait=0",
        Some(&bot),
        Some(("application/jose", &jws)),
        &[],
    );
    assert_eq!(r.status, 202, "{}", r.body);
    let signed = r.header("location").unwrap().to_owned();

    // The engine starts: the waiting intents are decided, and a GET gets each.
    let mut service = Service::start(&c);
    let r = g.get(&bot, &location, "30s");
    assert_eq!(r.status, 200, "{}", r.body);
    let first = r.json();
    assert_eq!(first["decision"], "allow");
    let r = g.get(&bot, &big, "30s");
    assert_eq!(
        (r.status, r.json()["decision"].clone()),
        (200, json!("deny"))
    );
    // The signed intent's dead letter is its answer by id too (this gateway wrote it).
    let r = g.get(&bot, &signed, "30s");
    assert_eq!(r.status, 422, "{}", r.body);
    assert_eq!(r.json()["error"]["dead_letter"]["kind"], "invalid_json");
    // Another agent's decision is not known to this key.
    assert_eq!(g.get(&other, &location, "0").status, 404);

    // The same intent again: its decision, as a duplicate.
    let r = g.propose(&bot, &allow, "10s");
    assert_eq!(r.status, 200, "{}", r.body);
    let again = r.json();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["decision"], first["decision"]);
    assert_eq!(again["reasons"], first["reasons"]);
    // Formatting and key order do not make another intent.
    let reordered = format!(
        "{{\"created_at\":{},\"intent_id\":\"t-1\",\"account_id\":\"acct-9\",\"agent_id\":\"payments-bot\",\"action\":\"transfer\",\"amount\":50.0,\"currency\":\"EUR\",\"counterparty\":{{\"country\":\"DE\",\"id\":\"cp-0001\"}}}}",
        allow["created_at"]
    );
    let r = g.request(
        "POST",
        "/v1/intents?wait=10s",
        Some(&bot),
        Some(("application/json", &reordered)),
        &[],
    );
    assert_eq!(
        (r.status, r.json()["duplicate"].clone()),
        (200, json!(true))
    );
    // A different intent under the same id: its conflict denial, not the first decision.
    let mut conflicting = allow.clone();
    conflicting["amount"] = json!("5000.00");
    let r = g.propose(&bot, &conflicting, "10s");
    assert_eq!(r.status, 200, "{}", r.body);
    let conflict = r.json();
    assert_eq!(conflict["decision"], "deny");
    assert_eq!(rules_of(&conflict), vec!["riskgate:conflict".to_owned()]);
    // By id, the intent's own decision still.
    let r = g.get(&bot, &location, "0");
    assert_eq!(r.json()["decision"], "allow");
    assert!(r.json().get("duplicate").is_none(), "{}", r.body);
    // An instance started now reads the decisions of the last `cache_age` (on a transactional
    // topic, whose end is past a commit marker) and is ready, with the answers.
    let later = Gateway::start(&config_text(&c, "", &[&bot, &other]));
    let r = later.get(&bot, &location, "0");
    assert_eq!(
        (r.status, r.json()["decision"].clone()),
        (200, json!("allow"))
    );
    assert_eq!(later.get(&bot, &big, "0").json()["decision"], "deny");
    service.stop();
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn a_gateway_killed_with_requests_in_flight_loses_nothing_and_any_instance_answers() {
    let setup = Setup::new("gw-kill", 3);
    let (broker, topics, c) = (&setup.broker, &setup.topics, setup.config());
    let bot = AgentKey::new("payments-bot");
    let config = config_text(&c, "", &[&bot]);
    let mut first = Gateway::start(&config);

    // Five requests wait for decisions no engine makes yet; the gateway dies under them.
    let intents: Vec<Value> = (0..5)
        .map(|i| {
            transfer(
                &format!("k-{i}"),
                "payments-bot",
                &format!("acct-{i}"),
                &format!("{}.00", 20 + i * 5000),
                "cp-4242",
            )
        })
        .collect();
    let waiting: Vec<_> = intents
        .iter()
        .map(|i| propose_in_background(&first.address, &bot, i, "30s"))
        .collect();
    wait_for("the five intents written", Duration::from_secs(30), || {
        (broker.read_all(&topics.intents).len() == 5).then_some(())
    });
    first.process.kill();
    for w in waiting {
        let broken = w.join().unwrap();
        assert!(
            broken.as_ref().map_or(true, |r| r.status == 0),
            "no answer from a killed gateway: {broken:?}"
        );
    }

    // The engine and two new instances. Each client retries on one; the other answers too.
    let mut service = Service::start(&c);
    let a = Gateway::start(&config);
    let b = Gateway::start(&config);
    for intent in &intents {
        let r = a.propose(&bot, intent, "30s");
        assert_eq!(r.status, 200, "{}", r.body);
        let retried = r.json();
        assert_eq!(
            retried["duplicate"], true,
            "the first write was decided: {retried}"
        );
        let location = format!(
            "/v1/decisions/{}/{}",
            intent["account_id"].as_str().unwrap(),
            intent["intent_id"].as_str().unwrap()
        );
        let r = b.get(&bot, &location, "30s");
        assert_eq!(r.status, 200, "{}", r.body);
        let original = r.json();
        assert!(original.get("duplicate").is_none());
        assert_eq!(original["decision"], retried["decision"]);
    }
    // Exactly one decision per intent, and one duplicate per retry.
    wait_all_committed(broker, topics, 3, Duration::from_secs(60));
    let decisions = broker.read_all(&topics.decisions);
    for intent in &intents {
        let of: Vec<&Record> = decisions
            .iter()
            .filter(|d| d.value["intent_id"] == intent["intent_id"])
            .collect();
        let originals = of
            .iter()
            .filter(|d| d.value.get("duplicate").is_none())
            .count();
        assert_eq!((of.len(), originals), (2, 1), "{}", intent["intent_id"]);
    }
    service.stop();
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn keys_and_limits_are_enforced_and_keys_reload_without_a_restart() {
    let setup = Setup::new("gw-keys", 1);
    let (broker, topics, c) = (&setup.broker, &setup.topics, setup.config());
    let [bot, other, waiter, eager, newcomer] = [
        "payments-bot",
        "other-bot",
        "waiter-bot",
        "eager-bot",
        "new-bot",
    ]
    .map(AgentKey::new);
    let limits = "rate = 3\nburst = 3\nmax_body_bytes = 4096\nmax_waiting = 2\n";
    let g = Gateway::start(&config_text(&c, limits, &[&bot, &other, &waiter, &eager]));
    let intent = transfer("t-1", "payments-bot", "acct-1", "10.00", "cp-0001");
    let body = intent.to_string();

    // 401: no key, or not one of the gateway's; with the challenge.
    let r = g.request(
        "POST",
        "/v1/intents",
        None,
        Some(("application/json", &body)),
        &[],
    );
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (401, json!("unauthenticated"))
    );
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"riskgate\"")
    );
    let forged = AgentKey {
        key: "rgk_not-a-key-anyone-made".into(),
        ..bot.clone()
    };
    let r = g.propose(&forged, &intent, "0");
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (401, json!("bad_key"))
    );
    // 403: a key speaks for its agent only.
    let r = g.propose(&other, &intent, "0");
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (403, json!("wrong_agent"))
    );
    // 413: a body above max_body_bytes.
    let mut big = intent.clone();
    big["attributes"] = json!({"note": "x".repeat(5000)});
    let r = g.propose(&bot, &big, "0");
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (413, json!("too_large"))
    );
    assert_eq!(
        broker.read_all(&topics.intents).len(),
        0,
        "nothing refused was written"
    );

    // 503: no more than max_waiting requests wait (no engine runs: they wait their time).
    let parked: Vec<_> = (0..2)
        .map(|i| {
            let mine = transfer(&format!("w-{i}"), "waiter-bot", "acct-2", "1.00", "cp-0001");
            propose_in_background(&g.address, &waiter, &mine, "10s")
        })
        .collect();
    wait_metric(&g, "riskgate_gateway_waiting_requests", 2.0);
    let r = g.propose(
        &waiter,
        &transfer("w-2", "waiter-bot", "acct-2", "1.00", "cp-0001"),
        "10s",
    );
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (503, json!("busy"))
    );
    assert!(r.header("retry-after").is_some());
    for p in parked {
        assert_eq!(p.join().unwrap().unwrap().status, 202);
    }

    // 429: a key's rate (3 at once here), with Retry-After; another key is not held up.
    let statuses: Vec<u16> = (0..4)
        .map(|_| g.get(&eager, "/v1/decisions/acct-3/none", "0").status)
        .collect();
    assert_eq!(statuses, vec![404, 404, 404, 429]);
    let r = g.get(&eager, "/v1/decisions/acct-3/none", "0");
    assert_eq!(r.status, 429);
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(g.get(&bot, "/v1/decisions/acct-3/none", "0").status, 404);
    for (reason, n) in [
        ("unauthenticated", 1.0),
        ("bad_key", 1.0),
        ("wrong_agent", 1.0),
        ("too_large", 1.0),
        ("busy", 1.0),
        ("rate_limited", 2.0),
    ] {
        assert_eq!(
            g.metric(&format!(
                "riskgate_gateway_refusals_total{{reason=\"{reason}\"}}"
            )),
            Some(n),
            "{reason}"
        );
    }

    // The keys reload when the file changes: a new key works, a removed one does not.
    let file = g.process.dir.path().join("riskgate.toml");
    assert_eq!(
        g.get(&newcomer, "/v1/decisions/acct-3/none", "0").status,
        401
    );
    fs::write(&file, config_text(&c, limits, &[&bot, &newcomer])).unwrap();
    let mut process = g.process;
    process.wait_event("gateway keys reloaded", Duration::from_secs(30), |e| {
        e["keys"] == 2
    });
    let g = Gateway {
        process,
        address: g.address,
    };
    assert_eq!(
        g.get(&newcomer, "/v1/decisions/acct-3/none", "0").status,
        404
    );
    assert_eq!(g.get(&other, "/v1/decisions/acct-3/none", "0").status, 401);
    // A configuration that does not load keeps the running keys.
    fs::write(&file, "[gateway\n").unwrap();
    let mut process = g.process;
    process.wait_event(
        "the configuration does not load",
        Duration::from_secs(30),
        |_| true,
    );
    let g = Gateway {
        process,
        address: g.address,
    };
    assert_eq!(
        g.get(&newcomer, "/v1/decisions/acct-3/none", "0").status,
        404
    );
    assert_eq!(
        g.metric("riskgate_gateway_key_reloads_total{result=\"failure\"}"),
        Some(1.0)
    );
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn authzen_evaluations_the_specifications_examples_and_payments() {
    let setup = Setup::new("gw-authzen", 1);
    let (broker, topics, c) = (&setup.broker, &setup.topics, setup.config());
    let _service = setup.engine();
    let alice = AgentKey::new("alice@example.com");
    let bot = AgentKey::new("payments-bot");
    let g = Gateway::start(&config_text(&c, "", &[&alice, &bot]));
    let spec = |name: &str| fs::read_to_string(repo().join("tests/authzen").join(name)).unwrap();
    let evaluate = |key: &AgentKey, body: &str, request_id: Option<&str>| {
        let mut more = Vec::new();
        if let Some(id) = request_id {
            more.push(("X-Request-ID", id));
        }
        g.request(
            "POST",
            "/access/v1/evaluation?wait=10s",
            Some(key),
            Some(("application/json", body)),
            &more,
        )
    };

    // The specification's example request (section 6.1.1): no rule is about reading, so
    // it is allowed: `{"decision": true}` as in its example response, with riskgate's
    // decision in the context.
    let r = evaluate(
        &alice,
        &spec("request-1-access-evaluation-request.json"),
        Some("req-1"),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.header("x-request-id"), Some("req-1"));
    let v = r.json();
    let expected: Value = serde_json::from_str(&spec("response-1-decision-true.json")).unwrap();
    assert_eq!(v["decision"], expected["decision"]);
    assert_eq!(v["context"]["decision"], "allow");
    assert_eq!(v["context"]["intent_id"], "req-1");
    // The intent on the topic is the documented mapping of the request.
    let written = broker.read_all(&topics.intents);
    let i = &written[0].value;
    assert_eq!(
        (
            &i["agent_id"],
            &i["account_id"],
            &i["action"],
            &i["created_at"]
        ),
        (
            &json!("alice@example.com"),
            &json!("123"),
            &json!("can_read"),
            &json!("1985-10-26T01:22:00-07:00")
        )
    );
    assert_eq!(
        i["attributes"]["authzen"]["action"]["properties"]["method"],
        "GET"
    );
    assert_eq!(written[0].key.as_deref(), Some("123"));

    // A payment in AuthZEN terms: allowed, then one held with its reasons in words.
    let payment = |id: &str, amount: &str| {
        json!({
            "subject": {"type": "agent", "id": "payments-bot"},
            "resource": {"type": "account", "id": "acct-5"},
            "action": {"name": "transfer", "properties": {
                "amount": amount, "currency": "EUR", "counterparty": {"id": "cp-0001"}}},
            "context": {"intent_id": id}
        })
        .to_string()
    };
    let v = evaluate(&bot, &payment("p-1", "10.00"), None).json();
    assert_eq!(
        (v["decision"].clone(), v["context"]["decision"].clone()),
        (json!(true), json!("allow"))
    );
    let v = evaluate(&bot, &payment("p-2", "60000.00"), None).json();
    assert_eq!(v["decision"], false, "{v}");
    assert_eq!(v["context"]["decision"], "hold");
    assert!(
        v["context"]["reason_admin"]["en"]
            .as_str()
            .unwrap()
            .contains("large-transfer"),
        "{v}"
    );

    // The specification's HTTPS example (section 10.1.4), with its request id, dated 1985:
    // now far behind what was decided, it cannot be checked against the intents of then, so
    // it is denied as stale (design 9.4), `decision: false`.
    let r = evaluate(
        &alice,
        &spec("request-2-https-access-evaluation-request.json"),
        Some("bfe9eb29-ab87-4ca3-be83-a1d5d8305716"),
    );
    assert_eq!(
        r.header("x-request-id"),
        Some("bfe9eb29-ab87-4ca3-be83-a1d5d8305716")
    );
    let v = r.json();
    assert_eq!(v["decision"], false, "{v}");
    assert_eq!(v["context"]["reasons"][0]["rule"], "riskgate:stale");

    // Bad requests say what is missing; a subject the key does not speak for is refused.
    let r = evaluate(
        &alice,
        r#"{"subject":{"type":"user","id":"alice@example.com"},"action":{"name":"can_read"}}"#,
        None,
    );
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`resource` is required"));
    let r = evaluate(
        &bot,
        &spec("request-1-access-evaluation-request.json"),
        None,
    );
    assert_eq!(r.status, 403);
    // The PDP metadata (section 9).
    let meta = g
        .request(
            "GET",
            "/.well-known/authzen-configuration",
            None,
            None,
            &[("Host", "pdp.example.com")],
        )
        .json();
    assert_eq!(meta["policy_decision_point"], "http://pdp.example.com");
    assert_eq!(
        meta["access_evaluation_endpoint"],
        "http://pdp.example.com/access/v1/evaluation"
    );
}
