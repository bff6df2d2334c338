//! `riskgate review` against a real broker, with the real engine deciding: holds appear,
//! outcomes are published as review records, every instance agrees, a restart rebuilds the
//! same queue, holds expire, and only the right people may do the right things.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use riskgate_test_support as support;

use support::review::{hold_path, hostile, intent, proposals, Stack, REVIEWERS, XSS};
use support::serial;

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn holds_are_reviewed_once_and_every_instance_agrees() {
    let _g = serial();
    let stack = Stack::start("review-flow");
    stack.propose(&proposals());
    let a = stack.review("");
    let b = stack.review("");
    let alice = a.sign_in("alice");
    let bob_on_b = b.sign_in("bob");
    a.wait_pending(&alice, &["t-1", "p-1", "t-3"]);
    b.wait_pending(&bob_on_b, &["t-1", "p-1", "t-3"]);

    // The full decision is there: reasons, counters, ruleset, the intent.
    let detail = a.get(&alice, "/api/holds/acct-1/t-1").json();
    let reason = &detail["hold"]["reasons"][0];
    assert_eq!(reason["rule"], "large-transfer");
    assert_eq!(
        reason["message"],
        "20000.00 EUR to Acme GmbH is above 10000"
    );
    assert_eq!(detail["decision"]["decision"], "hold");
    assert_eq!(detail["decision"]["intent"]["agent_id"], "procurement-bot");
    assert_eq!(detail["hold"]["ruleset"], detail["decision"]["ruleset"]);
    assert_eq!(detail["hold"]["amount"], "20000.00");
    assert_eq!(detail["hold"]["approvals"]["required"], 1);
    assert_eq!(
        a.get(&alice, "/api/holds/acct-3/p-1").json()["hold"]["approvals"]["required"],
        2
    );

    // Filters.
    assert_eq!(a.pending(&alice, "?rule=large-payout"), ["p-1"]);
    assert_eq!(a.pending(&alice, "?agent=treasury-bot"), ["t-3"]);
    assert_eq!(a.pending(&alice, "?account=acct-1"), ["t-1"]);
    let mut big = a.pending(&alice, "?min_amount=25000");
    big.sort();
    assert_eq!(big, ["p-1", "t-3"]);
    assert_eq!(a.pending(&alice, "?max_amount=20000"), ["t-1"]);
    assert_eq!(
        a.pending(&alice, "?max_age=1s&min_age=1h"),
        Vec::<String>::new()
    );
    assert_eq!(a.pending(&alice, "?min_age=0s").len(), 3);
    let bad = a.get(&alice, "/api/holds?min_amount=lots");
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.json()["error"]["message"],
        "`min_amount` must be a decimal amount such as 100 or 2500.50, not `lots`"
    );

    // Approve on instance A: one review record on the topic, on the hold's partition with its key.
    let r = a.review(&alice, "acct-1", "t-1", "approve", "invoice checked");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.json()["released"].as_bool(), r.json()["final"].as_bool()),
        (Some(true), Some(true))
    );
    let records = stack.review_records();
    assert_eq!(records.len(), 1, "{records:?}");
    let rec = &records[0];
    assert_eq!(rec.value["intent_id"], "t-1");
    assert_eq!(rec.value["decision"], "allow");
    assert_eq!(rec.value["review"], "approve");
    assert_eq!(rec.value["final"], true);
    assert_eq!(rec.value["reviewer"], "alice");
    assert_eq!(rec.value["comment"], "invoice checked");
    assert!(rec.value["reviewed_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    let hold = stack
        .broker
        .read_all(&stack.topics.decisions)
        .into_iter()
        .find(|d| d.value["intent_id"] == "t-1" && d.value["stage"].is_null())
        .unwrap();
    assert_eq!(
        (rec.partition, rec.key.as_deref()),
        (hold.partition, Some("acct-1"))
    );
    assert_eq!(rec.value["hold"]["offset"].as_i64(), Some(hold.offset));

    // Instance B read it and dropped the hold; approving there is refused.
    b.wait_pending(&bob_on_b, &["p-1", "t-3"]);
    assert_eq!(
        b.review(&bob_on_b, "acct-1", "t-1", "approve", "").status,
        404
    );

    // Reject on B; A follows.
    let r = b.review(&bob_on_b, "acct-4", "t-3", "reject", "unknown payee");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["review"]["decision"], "deny");
    a.wait_pending(&alice, &["p-1"]);

    // A restarted instance rebuilds the same queue, approvals given so far included.
    let first = a.review(&alice, "acct-3", "p-1", "approve", "");
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(first.json()["released"], false);
    drop(a);
    let a2 = stack.review("");
    let alice2 = a2.sign_in("alice");
    a2.wait_pending(&alice2, &["p-1"]);
    let approvals = &a2.get(&alice2, "/api/holds/acct-3/p-1").json()["hold"]["approvals"];
    assert_eq!(approvals["approved_by"], serde_json::json!(["alice"]));
    assert_eq!(
        a2.review(&alice2, "acct-3", "p-1", "approve", "").status,
        409,
        "alice counts once"
    );
    let second = a2.review(
        &a2.sign_in("bob"),
        "acct-3",
        "p-1",
        "approve",
        "second pair of eyes",
    );
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.json()["released"], true);
    b.wait_pending(&bob_on_b, &[]);
    let mut finals: Vec<_> = stack
        .review_records()
        .into_iter()
        .filter(|r| r.value["final"] == true)
        .map(|r| r.value["intent_id"].as_str().unwrap().to_owned())
        .collect();
    finals.sort();
    assert_eq!(finals, ["p-1", "t-1", "t-3"], "one final record per intent");

    // Metrics of the instance that published.
    let metrics = a2.request("GET", "/metrics", &[], None).body;
    assert!(metrics.contains("riskgate_pending_holds 0"), "{metrics}");
    assert!(
        metrics.contains("riskgate_review_outcomes_total{outcome=\"approve\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("riskgate_review_refusals_total{reason=\"already_approved\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("riskgate_review_time_seconds_count 1"),
        "{metrics}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn one_intent_id_in_two_accounts_is_two_holds_each_reviewed_on_its_own() {
    let _g = serial();
    let stack = Stack::start("review-scope");
    stack.propose(&[
        intent(
            "dup-1",
            "procurement-bot",
            "acct-1",
            "transfer",
            "20000.00",
            "Acme GmbH",
        ),
        intent(
            "dup-1",
            "procurement-bot",
            "acct-2",
            "transfer",
            "30000.00",
            "Globex",
        ),
    ]);
    let r = stack.review("");
    let alice = r.sign_in("alice");
    r.wait_pending(&alice, &["dup-1", "dup-1"]);
    let listed = r.get(&alice, "/api/holds").json();
    let holds = listed["holds"].as_array().unwrap();
    let hold_of = |key: &str| {
        holds
            .iter()
            .find(|h| h["key"] == key)
            .unwrap_or_else(|| panic!("a hold keyed {key} in {holds:?}"))
            .clone()
    };
    let (one, two) = (hold_of("acct-1"), hold_of("acct-2"));
    assert_eq!(
        (one["amount"].as_str(), two["amount"].as_str()),
        (Some("20000.00"), Some("30000.00"))
    );
    assert_ne!(one["record"], two["record"], "two decision records");
    let detail = r.get(&alice, &hold_path("acct-2", "dup-1")).json();
    assert_eq!(detail["hold"]["counterparty"]["name"], "Globex");
    assert_eq!(detail["decision"]["intent"]["account_id"], "acct-2");

    // Approving one leaves the other pending.
    let auth = [
        ("Cookie", alice.cookie.as_str()),
        ("X-CSRF-Token", alice.csrf.as_str()),
    ];
    let body = serde_json::json!({"comment": "checked", "record": one["record"]}).to_string();
    let ok = r.request(
        "POST",
        &format!("{}/approve", hold_path("acct-1", "dup-1")),
        &auth,
        Some(&body),
    );
    assert_eq!(
        (ok.status, ok.json()["released"].as_bool()),
        (200, Some(true)),
        "{}",
        ok.body
    );
    assert_eq!(ok.json()["review"]["key"], "acct-1");
    assert_eq!(ok.json()["review"]["amount"], "20000.00");
    let left = r.get(&alice, "/api/holds").json();
    assert_eq!(left["holds"].as_array().map(Vec::len), Some(1), "{left}");
    assert_eq!(left["holds"][0]["key"], "acct-2");

    // A review that names a decision record other than the pending one is refused.
    let mut stale = two["record"].clone();
    stale["offset"] = (stale["offset"].as_i64().unwrap() + 1000).into();
    let body = serde_json::json!({"comment": "no", "record": stale}).to_string();
    let refused = r.request(
        "POST",
        &format!("{}/reject", hold_path("acct-2", "dup-1")),
        &auth,
        Some(&body),
    );
    assert_eq!(
        (refused.status, refused.json()["error"]["code"].as_str()),
        (409, Some("hold_changed")),
        "{}",
        refused.body
    );
    let body = serde_json::json!({"comment": "no", "record": two["record"]}).to_string();
    let rejected = r.request(
        "POST",
        &format!("{}/reject", hold_path("acct-2", "dup-1")),
        &auth,
        Some(&body),
    );
    assert_eq!(rejected.status, 200, "{}", rejected.body);
    r.wait_pending(&alice, &[]);

    let mut records: Vec<_> = stack
        .review_records()
        .into_iter()
        .map(|rec| {
            (
                rec.key.clone().unwrap_or_default(),
                rec.value["key"].as_str().unwrap_or("").to_owned(),
                rec.value["decision"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    records.sort();
    assert_eq!(
        records,
        [
            ("acct-1".into(), "acct-1".into(), "allow".into()),
            ("acct-2".into(), "acct-2".into(), "deny".into())
        ],
        "each hold answered by its own record"
    );
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn unreviewed_holds_expire_to_a_reject_by_the_system() {
    let _g = serial();
    let stack = Stack::start("review-expiry");
    let r = stack.review("expire_after = \"3s\"");
    let vera = r.sign_in("vera");
    stack.propose(&proposals()[..1]);
    r.wait_pending(&vera, &["t-1"]);
    r.wait_pending(&vera, &[]);
    let records = stack.review_records();
    assert_eq!(records.len(), 1, "{records:?}");
    let rec = &records[0].value;
    assert_eq!(
        (
            &rec["intent_id"],
            &rec["reviewer"],
            &rec["review"],
            &rec["decision"],
            &rec["final"]
        ),
        (
            &"t-1".into(),
            &"system:expiry".into(),
            &"reject".into(),
            &"deny".into(),
            &true.into()
        )
    );
    assert_eq!(
        rec["comment"],
        "not reviewed within 3s; rejected automatically"
    );
    let metrics = r.request("GET", "/metrics", &[], None).body;
    assert!(
        metrics.contains("riskgate_review_outcomes_total{outcome=\"expire\"} 1"),
        "{metrics}"
    );
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn only_the_right_people_may_review() {
    let _g = serial();
    let stack = Stack::start("review-security");
    let mut evil = proposals();
    evil.push(hostile());
    stack.propose(&evil);
    let r = stack.review("");
    let alice = r.sign_in("alice");
    r.wait_pending(&alice, &["t-1", "p-1", "t-3", "x-1"]);

    // No credentials: 401, and no Basic challenge (a browser would keep Basic credentials,
    // which skip the CSRF check): the challenge answers only wrong Basic credentials, and
    // never the page's own requests.
    use base64::Engine as _;
    let none = r.request("GET", "/api/holds", &[], None);
    assert_eq!(none.status, 401);
    assert_eq!(none.json()["error"]["code"], "unauthenticated");
    assert_eq!(none.header("www-authenticate"), None);
    let events = r.request("GET", "/api/events", &[], None);
    assert_eq!(
        (events.status, events.header("www-authenticate")),
        (401, None)
    );
    let wrong = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("bob:not-bobs-secret")
    );
    let script = r.request("GET", "/api/holds", &[("Authorization", &wrong)], None);
    assert_eq!(script.status, 401);
    assert!(script
        .header("www-authenticate")
        .is_some_and(|h| h.starts_with("Basic")));
    let page = r.request(
        "GET",
        "/api/holds",
        &[("X-Requested-With", "riskgate"), ("Authorization", &wrong)],
        None,
    );
    assert_eq!((page.status, page.header("www-authenticate")), (401, None));
    assert_eq!(
        r.request("POST", "/api/holds/acct-1/t-1/approve", &[], Some("{}"))
            .status,
        401
    );
    // A wrong secret, an unknown reviewer.
    for (who, secret) in [("alice", "bob-secret-456"), ("mallory", "alice-secret-123")] {
        let body = serde_json::json!({"reviewer": who, "secret": secret}).to_string();
        let bad = r.request("POST", "/api/session", &[], Some(&body));
        assert_eq!(
            (bad.status, bad.header("set-cookie")),
            (401, None),
            "{}",
            bad.body
        );
    }
    // A forged cookie.
    let forged = r.request(
        "GET",
        "/api/holds",
        &[("Cookie", "riskgate_session=00ff")],
        None,
    );
    assert_eq!(forged.status, 401);

    // The session cookie is host-only, HTTPS-only, HttpOnly and SameSite=Strict.
    let body = serde_json::json!({"reviewer": "vera", "secret": REVIEWERS[2].2}).to_string();
    let signed = r.request("POST", "/api/session", &[], Some(&body));
    let cookie = signed.header("set-cookie").unwrap();
    assert!(
        cookie.starts_with("__Host-riskgate_session=")
            && cookie.contains("; Secure")
            && cookie.contains("; HttpOnly")
            && cookie.contains("; SameSite=Strict"),
        "{cookie}"
    );

    // A viewer sees but may not approve or reject.
    let vera = r.sign_in("vera");
    assert_eq!(r.pending(&vera, "").len(), 4);
    let v = r.review(&vera, "acct-4", "t-3", "approve", "");
    assert_eq!(
        (v.status, v.json()["error"]["code"].as_str()),
        (403, Some("viewer"))
    );
    assert_eq!(r.review(&vera, "acct-4", "t-3", "reject", "no").status, 403);

    // Missing or wrong CSRF token on a session: 403, nothing published.
    let body = Some("{\"comment\":\"\"}");
    for headers in [
        vec![("Cookie", alice.cookie.as_str())],
        vec![("Cookie", alice.cookie.as_str()), ("X-CSRF-Token", "guess")],
        vec![
            ("Cookie", alice.cookie.as_str()),
            ("X-CSRF-Token", vera.csrf.as_str()),
        ],
    ] {
        let c = r.request("POST", "/api/holds/acct-4/t-3/approve", &headers, body);
        assert_eq!(
            (c.status, c.json()["error"]["code"].as_str()),
            (403, Some("csrf")),
            "{headers:?}"
        );
    }
    // A form post (not JSON) is refused too.
    let form = r.request(
        "POST",
        "/api/holds/acct-4/t-3/approve",
        &[
            ("Cookie", &alice.cookie),
            ("X-CSRF-Token", &alice.csrf),
            ("Content-Type", "application/x-www-form-urlencoded"),
        ],
        None,
    );
    assert_eq!(form.status, 415, "{}", form.body);

    // The agent that proposed an intent can never approve it, even as an approver.
    let bot = r.sign_in("procurement-bot");
    let own = r.review(&bot, "acct-1", "t-1", "approve", "looks fine to me");
    assert_eq!(
        (own.status, own.json()["error"]["code"].as_str()),
        (403, Some("proposer"))
    );

    // Two approvals: one approver does not release it, and the same approver counts once.
    let one = r.review(&alice, "acct-3", "p-1", "approve", "");
    assert_eq!(
        (one.status, one.json()["released"].as_bool()),
        (200, Some(false)),
        "{}",
        one.body
    );
    assert_eq!(one.json()["review"]["decision"], "hold");
    let again = r.review(&alice, "acct-3", "p-1", "approve", "");
    assert_eq!(
        (again.status, again.json()["error"]["code"].as_str()),
        (409, Some("already_approved"))
    );
    assert!(r.pending(&alice, "").contains(&"p-1".to_owned()));
    // HTTP Basic works for scripts, without a CSRF token.
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("bob:{}", REVIEWERS[1].2))
    );
    let two = r.request(
        "POST",
        "/api/holds/acct-3/p-1/approve",
        &[("Authorization", &basic)],
        Some("{\"comment\":\"ok\"}"),
    );
    assert_eq!(
        (two.status, two.json()["released"].as_bool()),
        (200, Some(true)),
        "{}",
        two.body
    );
    // Only t-1... and the refused attempts published nothing.
    let records = stack.review_records();
    assert_eq!(
        records
            .iter()
            .map(|r| (
                r.value["intent_id"].as_str().unwrap(),
                r.value["reviewer"].as_str().unwrap()
            ))
            .collect::<Vec<_>>(),
        [("p-1", "alice"), ("p-1", "bob")]
    );

    // Every attempt is logged with who and why.
    let events = r.service.events();
    let refused: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["message"] == "review attempt refused")
        .map(|e| {
            (
                e["reviewer"].as_str().unwrap_or("").to_owned(),
                e["reason"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for want in [
        ("vera", "viewer"),
        ("alice", "csrf"),
        ("procurement-bot", "proposer"),
        ("alice", "already_approved"),
        // A name that is no reviewer's is not logged: it may be a secret typed there.
        ("<unknown>", "bad_credentials"),
        ("", "unauthenticated"),
    ] {
        assert!(
            refused
                .iter()
                .any(|(w, r)| (w.as_str(), r.as_str()) == want),
            "{want:?} in {refused:?}"
        );
    }
    assert!(events.iter().any(|e| e["message"] == "review published"
        && e["reviewer"] == "bob"
        && e["intent_id"] == "p-1"));
    assert!(
        !r.service.log_text().contains("alice-secret-123"),
        "no secret in the log"
    );

    // Intent fields come back as JSON strings, never as markup; every response forbids
    // inline scripts (the browser test checks the page renders them inert).
    let x = r.get(&alice, &hold_path(XSS, "x-1"));
    assert_eq!(x.json()["hold"]["counterparty"]["name"], XSS);
    assert_eq!(x.header("content-type"), Some("application/json"));
    let csp = r.request("GET", "/", &[], None);
    assert!(csp
        .header("content-security-policy")
        .is_some_and(|c| c.contains("script-src 'self'")));
    assert_eq!(csp.header("x-content-type-options"), Some("nosniff"));
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn each_hold_says_why_in_base_amounts_and_filters_pages_and_history_work() {
    let _g = serial();
    let stack = Stack::start("review-why");
    stack.propose(&proposals());
    stack.propose(&support::review::explained());
    let a = stack.review("");
    let alice = a.sign_in("alice");
    a.wait_pending(&alice, &["t-1", "p-1", "t-3", "h-1", "j-1", "s-1"]);
    let holds = a.get(&alice, "/api/holds").json();
    assert_eq!(holds["count"], 6);
    let hold = |id: &str| {
        holds["holds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["intent_id"] == id)
            .unwrap()
            .clone()
    };
    // A hold from a rule error says which rule failed and why.
    let h1 = hold("h-1");
    assert_eq!(h1["reasons"], serde_json::json!([]), "{h1}");
    assert_eq!(h1["errors"][0]["rule"], "po-limit", "{h1}");
    assert!(
        h1["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("po_limit"),
        "{h1}"
    );
    // Amounts in the intent's currency and in the base currency.
    assert_eq!(
        (
            &h1["amount"],
            &h1["currency"],
            &h1["base_amount"],
            &h1["base_currency"]
        ),
        (
            &serde_json::json!("1500000"),
            &serde_json::json!("HUF"),
            &serde_json::json!("3750.0000"),
            &serde_json::json!("EUR")
        )
    );
    // A hold from the score says the score and the thresholds.
    let s1 = hold("s-1");
    assert_eq!(s1["score"], 60);
    assert_eq!(
        s1["thresholds"],
        serde_json::json!({"hold_at": 50, "deny_at": 90})
    );
    // No rate: the base amount is unknown, and said to be.
    let j1 = hold("j-1");
    assert_eq!(
        (j1.get("base_amount"), &j1["base_unknown"]),
        (None, &serde_json::json!(true))
    );
    // Ages from the intent and from the decision.
    for h in holds["holds"].as_array().unwrap() {
        let (intent_age, decided_age) = (
            h["age_seconds"].as_i64().unwrap(),
            h["decided_age_seconds"].as_i64().unwrap(),
        );
        assert!(intent_age >= decided_age && decided_age >= 0, "{h}");
    }

    // Amount filters compare base amounts: 1,500,000 HUF is not above 10000 EUR; the JPY
    // payment, whose base amount nobody knows, is kept (flagged) rather than hidden.
    let mut big = a.pending(&alice, "?min_amount=10000");
    big.sort();
    assert_eq!(big, ["j-1", "p-1", "t-1", "t-3"]);
    // Substrings, ignoring case: rule ids (of reasons and errors), agents, any text.
    let mut large = a.pending(&alice, "?rule=LARGE");
    large.sort();
    assert_eq!(large, ["p-1", "t-1", "t-3"]);
    let mut po = a.pending(&alice, "?rule=po-");
    po.sort();
    assert_eq!(po, ["h-1", "j-1"]);
    assert_eq!(a.pending(&alice, "?agent=treasury"), ["t-3"]);
    assert_eq!(a.pending(&alice, "?text=globex"), ["t-3"]);
    // Pages: the same order, `count` the whole.
    let all = a.pending(&alice, "");
    let first = a.get(&alice, "/api/holds?limit=4").json();
    assert_eq!(
        (
            first["count"].as_u64(),
            first["holds"].as_array().unwrap().len()
        ),
        (Some(6), 4)
    );
    let rest = a.pending(&alice, "?limit=4&offset=4");
    let paged: Vec<String> = first["holds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["intent_id"].as_str().unwrap().to_owned())
        .chain(rest)
        .collect();
    assert_eq!(paged, all);

    // The proposing agent's own reviewer account may not approve its hold: the API says so.
    let bot = a.sign_in("procurement-bot");
    let t1 = a.get(&bot, "/api/holds/acct-1/t-1").json()["hold"].clone();
    assert_eq!(
        (&t1["may_approve"], &t1["why_not"]),
        (&serde_json::json!(false), &serde_json::json!("proposer"))
    );
    assert_eq!(hold("t-3")["may_approve"], true);
    let vera = a.sign_in("vera");
    assert_eq!(
        a.get(&vera, "/api/holds/acct-4/t-3").json()["hold"]["why_not"],
        "viewer"
    );

    // Bulk: one verdict and comment for a selection; each hold is reviewed on its own, with
    // the proposer rule per hold (t-1 is the bot's own), a stale decision record refused,
    // and each approved hold with a record of its own.
    let record = |id: &str| hold(id)["record"].clone();
    let body = serde_json::json!({
        "verdict": "approve", "comment": "batch 7 checked",
        "holds": [
            {"key": "acct-1", "intent_id": "t-1", "record": record("t-1")},
            {"key": "acct-4", "intent_id": "t-3", "record": record("t-3")},
            {"key": "acct-7", "intent_id": "s-1", "record": {"partition": 0, "offset": 999_999}},
        ]
    });
    let r = a.request(
        "POST",
        "/api/holds/review",
        &[("Cookie", &bot.cookie), ("X-CSRF-Token", &bot.csrf)],
        Some(&body.to_string()),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let out = r.json();
    assert_eq!(
        (out["reviewed"].as_u64(), out["refused"].as_u64()),
        (Some(1), Some(2)),
        "{out}"
    );
    let results = out["results"].as_array().unwrap();
    assert_eq!(
        (&results[0]["status"], &results[0]["code"]),
        (&serde_json::json!(403), &serde_json::json!("proposer"))
    );
    assert_eq!(
        (&results[1]["status"], &results[1]["released"]),
        (&serde_json::json!(200), &serde_json::json!(true))
    );
    assert_eq!(
        (&results[2]["status"], &results[2]["code"]),
        (&serde_json::json!(409), &serde_json::json!("hold_changed"))
    );
    // A bulk request without a decision record is refused as a whole.
    let bad = serde_json::json!({"verdict": "reject", "comment": "x", "holds": [{"key": "acct-7", "intent_id": "s-1"}]});
    let r = a.request(
        "POST",
        "/api/holds/review",
        &[("Cookie", &alice.cookie), ("X-CSRF-Token", &alice.csrf)],
        Some(&bad.to_string()),
    );
    assert_eq!(r.status, 422, "{}", r.body);
    // Alice rejects two in one go: two records, each its own.
    let before = stack.review_records().len();
    let body = serde_json::json!({
        "verdict": "reject", "comment": "no purchase order on file",
        "holds": [
            {"key": "acct-5", "intent_id": "h-1", "record": record("h-1")},
            {"key": "acct-6", "intent_id": "j-1", "record": record("j-1")},
        ]
    });
    let r = a.request(
        "POST",
        "/api/holds/review",
        &[("Cookie", &alice.cookie), ("X-CSRF-Token", &alice.csrf)],
        Some(&body.to_string()),
    );
    assert_eq!(r.json()["reviewed"], 2, "{}", r.body);
    let records = stack.review_records();
    assert_eq!(records.len(), before + 2);
    let mut ids: Vec<&str> = records
        .iter()
        .filter(|r| r.value["comment"] == "no purchase order on file")
        .map(|r| r.value["intent_id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["h-1", "j-1"]);

    // The history of ended reviews: who, when, outcome, comment; filtered.
    let history = a.get(&alice, "/api/history").json();
    assert_eq!(history["count"], 3, "{history}");
    let newest = &history["reviews"][0];
    assert!(
        newest["intent_id"] == "h-1" || newest["intent_id"] == "j-1",
        "{history}"
    );
    assert_eq!(
        (&newest["outcome"], &newest["reviewer"]),
        (&serde_json::json!("reject"), &serde_json::json!("alice"))
    );
    assert_eq!(newest["comment"], "no purchase order on file");
    assert!(newest["reviewed_at"].as_str().unwrap().ends_with('Z'));
    let approved = a.get(&alice, "/api/history?outcome=approve").json();
    assert_eq!(approved["count"], 1);
    assert_eq!(
        (
            &approved["reviews"][0]["intent_id"],
            &approved["reviews"][0]["reviewer"],
            &approved["reviews"][0]["comment"]
        ),
        (
            &serde_json::json!("t-3"),
            &serde_json::json!("procurement-bot"),
            &serde_json::json!("batch 7 checked")
        )
    );
    assert_eq!(
        a.get(&alice, "/api/history?reviewer=ALI&text=purchase")
            .json()["count"],
        2
    );
    assert_eq!(a.get(&alice, "/api/history?outcome=sometimes").status, 400);
    // The history is rebuilt from the topic by a new instance, too.
    let b = stack.review("");
    let bob = b.sign_in("bob");
    assert_eq!(b.get(&bob, "/api/history").json()["count"], 3);
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn during_a_broker_outage_review_is_not_ready_fails_fast_and_logs_little() {
    use std::time::{Duration, Instant};
    use support::review::{review_section, Review, RULES};
    use support::{http_get, wait_for, KafkaNode, Service, ServiceConfig, Topics};
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut node = KafkaNode::start(dir.path());
    let broker = node.broker();
    let topics = Topics::new("review-outage");
    topics.create(&broker, 1);
    let rules = tempfile::tempdir().unwrap();
    std::fs::write(rules.path().join("rules.toml"), RULES).unwrap();
    let config = ServiceConfig::new(&broker, &topics, &topics.group, rules.path());
    let mut engine = Service::start(&config);
    engine.wait_ready();
    let mut service = Service::review(&config, &review_section(""));
    let address = service.wait_event("serving the review page", Duration::from_secs(30), |_| true)
        ["address"]
        .as_str()
        .unwrap()
        .to_owned();
    service.wait_event("pending holds rebuilt", Duration::from_secs(60), |_| true);
    let review = Review { service, address };
    let records: Vec<(Option<i32>, String, Vec<u8>)> = proposals()
        .into_iter()
        .map(|i| {
            let v: serde_json::Value = serde_json::from_str(&i).unwrap();
            (
                None,
                v["account_id"].as_str().unwrap().to_owned(),
                i.into_bytes(),
            )
        })
        .collect();
    broker.produce(&topics.intents, &records);
    let alice = review.sign_in("alice");
    review.wait_pending(&alice, &["t-1", "p-1", "t-3"]);
    let status = || http_get(&review.address, "/readyz").map(|(s, _)| s);
    assert_eq!(status(), Some(200));
    // Reading the topic to its end said nothing worth a warning.
    let warnings = |s: &Service| {
        s.events()
            .into_iter()
            .filter(|e| matches!(e["level"].as_str(), Some("WARN" | "ERROR")))
            .count()
    };
    assert_eq!(
        warnings(&review.service),
        0,
        "{}",
        review.service.log_text()
    );

    node.kill();
    let killed = Instant::now();
    wait_for("/readyz to drop", Duration::from_secs(30), || {
        (status() == Some(503)).then_some(())
    });
    let not_ready_after = killed.elapsed();
    // A review fails fast with 503, well within the request timeout.
    let asked = Instant::now();
    let r = review.review(&alice, "acct-4", "t-3", "approve", "during the outage");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "{:?}",
        asked.elapsed()
    );
    // An outage of 30 s more logs a few lines, not one per failed connection.
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        assert_eq!(status(), Some(503), "not ready while the broker is away");
        std::thread::sleep(Duration::from_millis(500));
    }
    let during = warnings(&review.service);
    node.restart();
    wait_for("/readyz to come back", Duration::from_secs(60), || {
        (status() == Some(200)).then_some(())
    });
    let mut service = review.service;
    service.wait_event(
        "the Kafka broker is reachable again",
        Duration::from_secs(30),
        |_| true,
    );
    eprintln!(
        "review: not ready {:.1} s after the kill; {during} warning lines in a {:.0} s outage",
        not_ready_after.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
    assert!((1..=6).contains(&during), "{}", service.log_text());
    let review = Review {
        service,
        address: review.address,
    };
    let r = review.review(&alice, "acct-4", "t-3", "approve", "after the outage");
    assert_eq!(r.status, 200, "{}", r.body);
    drop(engine);
}

/// A review record as riskgate writes it, for forging: `reviewer`'s `verdict` on the hold of
/// `intent_id` keyed `key` at `record` (its decision record's partition and offset).
fn forged_review(
    intent_id: &str,
    key: &str,
    reviewer: &str,
    verdict: &str,
    record: &serde_json::Value,
) -> serde_json::Value {
    let decision = if verdict == "approve" {
        "allow"
    } else {
        "deny"
    };
    serde_json::json!({
        "stage": "review", "intent_id": intent_id, "key": key, "agent_id": "x",
        "account_id": key, "action": "transfer", "amount": "1", "currency": "EUR",
        "decision": decision, "review": verdict, "final": true, "reviewer": reviewer,
        "comment": "forged", "reviewed_at": "2026-11-29T13:52:10.114Z",
        "approvals": {"required": 1, "approved_by": [reviewer]},
        "hold": {"partition": record["partition"], "offset": record["offset"],
                 "decided_at": "2026-11-29T13:52:03.871Z", "ruleset": "000000000000"},
    })
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn forged_records_are_ignored_counted_and_reported() {
    let _g = serial();
    let stack = Stack::start("review-forged");
    stack.propose(&proposals());
    let a = stack.review("");
    let alice = a.sign_in("alice");
    a.wait_pending(&alice, &["t-1", "p-1", "t-3"]);
    let hold = |id: &str, key: &str| {
        a.get(&alice, &support::review::hold_path(key, id)).json()["hold"].clone()
    };
    let (t1, p1, t3) = (
        hold("t-1", "acct-1"),
        hold("p-1", "acct-3"),
        hold("t-3", "acct-4"),
    );
    let part = |h: &serde_json::Value| h["record"]["partition"].as_i64().unwrap() as i32;
    // Alice gives p-1 the first of its two approvals.
    let r = a.review(&alice, "acct-3", "p-1", "approve", "first");
    assert_eq!(r.json()["released"], false, "{}", r.body);

    // A plain producer (no transactional id, no key) writes what the review must never trust:
    // approvals by `mallory` (no reviewer), by `ghost` completing p-1's two approvals, an
    // expiry by `system:expiry`, a hold for "Attacker Ltd", an approval written in advance
    // for an intent not yet proposed, and one record with a MAC made with another key.
    stack.forge(
        part(&t1),
        "acct-1",
        &forged_review("t-1", "acct-1", "mallory", "approve", &t1["record"]),
        None,
    );
    stack.forge(
        part(&p1),
        "acct-3",
        &forged_review("p-1", "acct-3", "ghost", "approve", &p1["record"]),
        None,
    );
    stack.forge(
        part(&t3),
        "acct-4",
        &forged_review("t-3", "acct-4", "system:expiry", "reject", &t3["record"]),
        None,
    );
    let attacker = serde_json::json!({
        "intent_id": "a-1", "agent_id": "payout-bot", "account_id": "acct-8", "action": "payout",
        "amount": "250000.00", "currency": "EUR", "created_at": "2026-11-29T13:00:00.000Z",
        "decision": "hold", "score": 0,
        "reasons": [{"rule": "large-payout", "action": "hold", "message": "pay Attacker Ltd"}],
        "errors": [], "counters": {}, "ruleset": "000000000000",
        "decided_at": "2026-11-29T13:00:00.010Z",
        "source": {"topic": stack.topics.intents, "partition": 0, "offset": 0},
        "intent": {"intent_id": "a-1", "agent_id": "payout-bot", "account_id": "acct-8", "action": "payout",
                   "amount": "250000.00", "currency": "EUR",
                   "counterparty": {"id": "cp-666", "name": "Attacker Ltd", "country": "DE"},
                   "created_at": "2026-11-29T13:00:00Z"},
    });
    stack.forge(0, "acct-8", &attacker, None);
    let advance = serde_json::json!({"partition": 0, "offset": 0});
    stack.forge(
        0,
        "acct-9",
        &forged_review("v-1", "acct-9", "alice", "approve", &advance),
        None,
    );
    stack.forge(
        part(&t1),
        "acct-1",
        &forged_review("t-1", "acct-1", "alice", "approve", &t1["record"]),
        Some("test:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    );
    let unverified = |reason: &str| {
        let text = a.request("GET", "/metrics", &[], None).body;
        let series = format!(
            "riskgate_unverified_records_total{{reason=\"{reason}\",topic=\"{}\"}} ",
            stack.topics.decisions
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&series)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    support::wait_for(
        "the forged records read",
        std::time::Duration::from_secs(30),
        || (unverified("missing") == 5 && unverified("bad_mac") == 1).then_some(()),
    );
    // Nothing changed: the same three holds, p-1 still waiting for its second approval,
    // no hold of Attacker Ltd.
    a.wait_pending(&alice, &["t-1", "p-1", "t-3"]);
    assert_eq!(
        hold("p-1", "acct-3")["approvals"]["approved_by"],
        serde_json::json!(["alice"])
    );
    assert_eq!(a.get(&alice, "/api/holds?text=attacker").json()["count"], 0);
    // The real 90,000 EUR transfer the forged approval was written for appears, and waits.
    stack.propose(&[intent(
        "v-1",
        "treasury-bot",
        "acct-9",
        "transfer",
        "90000.00",
        "Initech",
    )]);
    a.wait_pending(&alice, &["t-1", "p-1", "t-3", "v-1"]);
    // Each forged record is logged once, with where it is.
    let log = a.service.log_text();
    assert_eq!(
        log.matches("ignoring a record riskgate did not write")
            .count(),
        6,
        "{log}"
    );
    assert!(
        log.contains("\"reason\":\"missing\"") && log.contains("\"offset\":"),
        "{log}"
    );
    // A restarted instance reads the same topic and agrees.
    let b = stack.review("");
    let bob = b.sign_in("bob");
    b.wait_pending(&bob, &["t-1", "p-1", "t-3", "v-1"]);
}
