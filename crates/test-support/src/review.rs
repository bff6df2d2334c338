//! A review stack for tests: a broker, `riskgate run` deciding with rules that hold, and
//! `riskgate review` instances with four reviewers.

use std::sync::OnceLock;
use std::time::Duration;

use super::{http, wait_for, Broker, Response, Service, ServiceConfig, Topics};

/// Holds transfers above 10000 EUR (one approval) and payouts above 50000 (two approvals);
/// holds `payment`s whose purchase order cannot be read (a rule error) and scores purchases
/// above 100 EUR past `hold_at`. Amounts compare in EUR.
pub const RULES: &str = r#"
[scoring]
hold_at = 50
deny_at = 90

[fx]
base = "EUR"
rates = { USD = "0.92", HUF = "0.0025" }

[[rule]]
id = "po-limit"
description = "A payment must stay within its purchase order"
when = 'action == "payment" && amount_base > attributes.po_limit'
action = "hold"

[[rule]]
id = "shop-spend"
when = 'action == "purchase" && amount_base > 100'
action = "score"
score = 60
message = "purchase of {amount} {currency}"

[[rule]]
id = "large-transfer"
description = "A transfer above 10000 EUR needs a person"
when = 'action == "transfer" && amount_base > 10000'
action = "hold"
message = "{amount} {currency} to {counterparty.name} is above 10000"

[[rule]]
id = "large-payout"
description = "A payout above 50000 needs two people"
when = 'action == "payout" && amount > 50000'
action = "hold"
approvals = 2
"#;

/// Name, role and secret of the configured reviewers. `procurement-bot` is also an agent
/// that proposes intents: it may never approve its own.
pub const REVIEWERS: [(&str, &str, &str); 4] = [
    ("alice", "approver", "alice-secret-123"),
    ("bob", "approver", "bob-secret-456"),
    ("vera", "viewer", "vera-secret-789"),
    ("procurement-bot", "approver", "bot-secret-000"),
];

/// `riskgate hash-secret` of `secret`: the hash a `[[review.reviewers]]` table holds.
pub fn hash_secret(secret: &str) -> String {
    let out = super::output_with_input(
        std::process::Command::new(super::riskgate_binary()).arg("hash-secret"),
        format!("{secret}\n").as_bytes(),
    );
    super::assert_success(&out, "riskgate hash-secret");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The `[review]` section, with `extra` keys (e.g. `expire_after = "2s"`).
pub fn review_section(extra: &str) -> String {
    static HASHES: OnceLock<Vec<String>> = OnceLock::new();
    let hashes = HASHES.get_or_init(|| {
        REVIEWERS
            .iter()
            .map(|(_, _, secret)| hash_secret(secret))
            .collect()
    });
    let mut s = format!("[review]\nlisten = \"127.0.0.1:0\"\n{extra}\n");
    for ((name, role, _), hash) in REVIEWERS.iter().zip(hashes) {
        s.push_str(&format!(
            "[[review.reviewers]]\nname = \"{name}\"\nrole = \"{role}\"\nsecret_hash = \"{hash}\"\n"
        ));
    }
    s
}

/// The intents of the review tests: three held (`p-1` needs two approvals), one allowed.
pub fn proposals() -> Vec<String> {
    vec![
        intent(
            "t-1",
            "procurement-bot",
            "acct-1",
            "transfer",
            "20000.00",
            "Acme GmbH",
        ),
        intent(
            "t-2",
            "procurement-bot",
            "acct-2",
            "transfer",
            "50.00",
            "Acme GmbH",
        ),
        intent(
            "p-1",
            "payout-bot",
            "acct-3",
            "payout",
            "60000.00",
            "Payee Ltd",
        ),
        intent(
            "t-3",
            "treasury-bot",
            "acct-4",
            "transfer",
            "30000.00",
            "Globex",
        ),
    ]
}

/// Markup for every field the page displays; if any of it ran, `window.__xss` would be set.
pub const XSS: &str = "<script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\">";

/// A held intent, `x-1`, whose agent, account, counterparty name and id, and an attribute
/// are [`XSS`] (the hold reason's message quotes the counterparty's name).
pub fn hostile() -> String {
    serde_json::json!({
        "intent_id": "x-1", "agent_id": XSS, "account_id": XSS, "action": "transfer",
        "amount": "99999.00", "currency": "EUR",
        "counterparty": {"id": XSS, "name": XSS, "country": "DE"},
        "attributes": {"note": XSS},
        "created_at": chrono::Utc::now().to_rfc3339(),
    })
    .to_string()
}

/// The API path of the hold of `intent_id` keyed `key`: `/api/holds/{key}/{intent_id}`, each
/// segment percent-encoded.
pub fn hold_path(key: &str, intent_id: &str) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    format!("/api/holds/{}/{}", enc(key), enc(intent_id))
}

pub struct Stack {
    pub broker: Broker,
    pub topics: Topics,
    pub rules: tempfile::TempDir,
    pub engine: Service,
}

/// Three more holds for the queue's explanations: `h-1`, 1,500,000 HUF (3,750 EUR) held by a
/// rule error (no purchase order); `j-1`, a payment in JPY, which has no rate (its base
/// amount is unknown); `s-1`, a purchase held by its score (60 against `hold_at` 50).
pub fn explained() -> Vec<String> {
    let with = |id: &str, agent: &str, account: &str, action: &str, amount: &str, ccy: &str| {
        let mut v: serde_json::Value =
            serde_json::from_str(&intent(id, agent, account, action, amount, "Vendor Kft"))
                .unwrap();
        v["currency"] = serde_json::json!(ccy);
        v.to_string()
    };
    vec![
        with("h-1", "payments-bot", "acct-5", "payment", "1500000", "HUF"),
        with("j-1", "payments-bot", "acct-6", "payment", "20", "JPY"),
        with("s-1", "shop-bot", "acct-7", "purchase", "200.00", "EUR"),
    ]
}

/// An intent as JSON.
pub fn intent(
    id: &str,
    agent: &str,
    account: &str,
    action: &str,
    amount: &str,
    counterparty: &str,
) -> String {
    serde_json::json!({
        "intent_id": id, "agent_id": agent, "account_id": account, "action": action,
        "amount": amount, "currency": "EUR",
        "counterparty": {"id": "cp-1", "name": counterparty, "country": "DE"},
        "created_at": chrono::Utc::now().to_rfc3339(),
    })
    .to_string()
}

impl Stack {
    pub fn start(prefix: &str) -> Stack {
        let broker = Broker::shared();
        let topics = Topics::new(prefix);
        topics.create(&broker, 3);
        let rules = tempfile::tempdir().unwrap();
        std::fs::write(rules.path().join("rules.toml"), RULES).unwrap();
        let engine = Service::start(&ServiceConfig::new(
            &broker,
            &topics,
            &format!("{prefix}-engine"),
            rules.path(),
        ));
        Stack {
            broker,
            topics,
            rules,
            engine,
        }
    }

    pub fn config(&self) -> ServiceConfig<'_> {
        ServiceConfig::new(
            &self.broker,
            &self.topics,
            "unused-by-review",
            self.rules.path(),
        )
    }

    /// Starts a review instance and waits until it has read the decisions topic.
    pub fn review(&self, extra: &str) -> Review {
        let mut service = Service::review(&self.config(), &review_section(extra));
        let e = service.wait_event("serving the review page", Duration::from_secs(30), |_| true);
        let address = e["address"].as_str().unwrap().to_owned();
        service.wait_event("pending holds rebuilt", Duration::from_secs(60), |_| true);
        Review { service, address }
    }

    /// Produces intents, keyed by account, to the intents topic.
    pub fn propose(&self, intents: &[String]) {
        let records: Vec<(Option<i32>, String, Vec<u8>)> = intents
            .iter()
            .map(|i| {
                let v: serde_json::Value = serde_json::from_str(i).unwrap();
                (
                    None,
                    v["account_id"].as_str().unwrap_or("").to_owned(),
                    i.clone().into_bytes(),
                )
            })
            .collect();
        self.broker.produce(&self.topics.intents, &records);
    }

    /// Writes `value` to partition `partition` of the decisions topic with `key`, as a plain
    /// producer without a transactional id would: a forger's record, with `mac` as its
    /// `riskgate-mac` header if given.
    pub fn forge(&self, partition: i32, key: &str, value: &serde_json::Value, mac: Option<&str>) {
        use rdkafka::message::{Header, OwnedHeaders};
        use rdkafka::producer::{BaseRecord, Producer};
        let producer = self.broker.producer();
        let payload = value.to_string();
        let mut record = BaseRecord::to(&self.topics.decisions)
            .partition(partition)
            .key(key)
            .payload(&payload);
        if let Some(mac) = mac {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: "riskgate-mac",
                value: Some(mac),
            }));
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
        producer.flush(Duration::from_secs(30)).unwrap();
    }

    /// The review records on the decisions topic.
    pub fn review_records(&self) -> Vec<super::Record> {
        self.broker
            .read_all(&self.topics.decisions)
            .into_iter()
            .filter(|r| r.value["stage"] == "review")
            .collect()
    }
}

/// A running `riskgate review`.
pub struct Review {
    pub service: Service,
    pub address: String,
}

/// A signed-in browser-like client: its session cookie and CSRF token.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

impl Review {
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Response {
        http(&self.address, method, path, headers, body)
    }

    /// Signs `name` in with its configured secret.
    pub fn sign_in(&self, name: &str) -> Session {
        self.sign_in_with(name, &[])
    }

    /// Signs `name` in with its configured secret, sending `headers` (a `Host`, say).
    pub fn sign_in_with(&self, name: &str, headers: &[(&str, &str)]) -> Session {
        let secret = REVIEWERS.iter().find(|r| r.0 == name).unwrap().2;
        let body = serde_json::json!({"reviewer": name, "secret": secret}).to_string();
        let r = self.request("POST", "/api/session", headers, Some(&body));
        assert_eq!(r.status, 200, "{}", r.body);
        let cookie = r
            .header("set-cookie")
            .and_then(|c| c.split(';').next())
            .unwrap()
            .to_owned();
        Session {
            cookie,
            csrf: r.json()["csrf_token"].as_str().unwrap().to_owned(),
        }
    }

    /// `GET path` with `session`'s cookie.
    pub fn get(&self, s: &Session, path: &str) -> Response {
        self.request("GET", path, &[("Cookie", &s.cookie)], None)
    }

    /// Approves or rejects the hold of `intent_id` keyed `key` (its account) with `session`'s
    /// cookie and CSRF token.
    pub fn review(
        &self,
        s: &Session,
        key: &str,
        intent_id: &str,
        verdict: &str,
        comment: &str,
    ) -> Response {
        let body = serde_json::json!({"comment": comment}).to_string();
        self.request(
            "POST",
            &format!("{}/{verdict}", hold_path(key, intent_id)),
            &[("Cookie", &s.cookie), ("X-CSRF-Token", &s.csrf)],
            Some(&body),
        )
    }

    /// The pending intent ids (filtered by `query`), oldest first.
    pub fn pending(&self, s: &Session, query: &str) -> Vec<String> {
        let r = self.get(s, &format!("/api/holds{query}"));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["holds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["intent_id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Waits until the pending set is exactly `ids` (in any order).
    pub fn wait_pending(&self, s: &Session, ids: &[&str]) {
        let mut want: Vec<String> = ids.iter().map(|i| (*i).to_owned()).collect();
        want.sort();
        wait_for(
            &format!("pending holds {want:?}"),
            Duration::from_secs(60),
            || {
                let mut got = self.pending(s, "");
                got.sort();
                (got == want).then_some(())
            },
        );
    }
}
