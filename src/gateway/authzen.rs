//! OpenID AuthZEN Authorization API 1.0: an Access Evaluation request as an intent, and a
//! decision as an Access Evaluation response (docs/gateway.md, "AuthZEN").
//!
//! | AuthZEN | intent |
//! |---|---|
//! | `subject.id` | `agent_id` (the caller's key must speak for it) |
//! | `resource.id` | `account_id` |
//! | `action.name` | `action` |
//! | `action.properties.amount`, `.currency`, `.counterparty` | `amount`, `currency`, `counterparty` |
//! | `context.intent_id`, else the `X-Request-ID` header, else a new random id | `intent_id` |
//! | `context.time` (RFC 3339; seconds may be left out, as the spec's examples do) | `created_at` (else now) |
//! | the types, the other properties and the rest of `context` | `attributes.authzen` |
//!
//! `decision` is `true` only for `allow`; the outcome, its reasons and the score are in the
//! response's `context`, with `reason_admin` (`{"en": ...}`) listing the reasons in words.

use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

/// Why an Access Evaluation request cannot be read (a 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// The members of an object, or why not.
fn object<'a>(v: &'a Value, at: &str) -> Result<&'a Map<String, Value>, BadRequest> {
    v.as_object()
        .ok_or_else(|| BadRequest(format!("`{at}` must be an object")))
}

/// A required string member of `o` (at `at`).
fn required<'a>(o: &'a Map<String, Value>, at: &str, key: &str) -> Result<&'a str, BadRequest> {
    match o.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) | None | Some(Value::Null) => Err(BadRequest(format!(
            "`{at}.{key}` is required (AuthZEN 1.0, section 5)"
        ))),
        Some(_) => Err(BadRequest(format!("`{at}.{key}` must be a string"))),
    }
}

/// `context.time` as an intent's `created_at`: RFC 3339, or without seconds
/// (`1985-10-26T01:22-07:00`, as the specification's examples write it).
fn time(text: &str) -> Result<String, BadRequest> {
    if DateTime::parse_from_rfc3339(text).is_ok() {
        return Ok(text.to_owned());
    }
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M%:z")
        .or_else(|_| {
            NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%MZ")
                .map(|t| t.and_utc().fixed_offset())
        })
        .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
        .map_err(|_| {
            BadRequest(format!(
                "`context.time` is `{text}`, not an RFC 3339 date and time"
            ))
        })
}

/// The intent an Access Evaluation request proposes, as JSON for the engine's parser.
/// `request_id` is the request's `X-Request-ID`; `fresh_id` makes an id when neither the
/// context nor the request names one.
pub fn intent(
    request: &Value,
    request_id: Option<&str>,
    now: DateTime<Utc>,
    fresh_id: impl FnOnce() -> String,
) -> Result<Vec<u8>, BadRequest> {
    let r = object(request, "request")?;
    let member = |key: &str| -> Result<&Map<String, Value>, BadRequest> {
        match r.get(key) {
            Some(v) => object(v, key),
            None => Err(BadRequest(format!(
                "`{key}` is required (AuthZEN 1.0, section 6.1)"
            ))),
        }
    };
    let subject = member("subject")?;
    let resource = member("resource")?;
    let action = member("action")?;
    let empty = Map::new();
    let context = match r.get("context") {
        None | Some(Value::Null) => &empty,
        Some(v) => object(v, "context")?,
    };
    let agent_id = required(subject, "subject", "id")?;
    let subject_type = required(subject, "subject", "type")?;
    let account_id = required(resource, "resource", "id")?;
    let resource_type = required(resource, "resource", "type")?;
    let name = required(action, "action", "name")?;
    let properties = |o: &Map<String, Value>, at: &str| -> Result<Map<String, Value>, BadRequest> {
        match o.get("properties") {
            None | Some(Value::Null) => Ok(Map::new()),
            Some(v) => object(v, &format!("{at}.properties")).cloned(),
        }
    };
    let mut action_props = properties(action, "action")?;
    let mut rest = context.clone();
    let intent_id = match rest.remove("intent_id") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(BadRequest("`context.intent_id` must be a string".into())),
        None => request_id.map_or_else(fresh_id, str::to_owned),
    };
    let created_at = match rest.remove("time") {
        Some(Value::String(s)) => time(&s)?,
        Some(_) => return Err(BadRequest("`context.time` must be a string".into())),
        None => now.to_rfc3339_opts(SecondsFormat::Millis, true),
    };
    let mut out = Map::new();
    out.insert("intent_id".into(), json!(intent_id));
    out.insert("agent_id".into(), json!(agent_id));
    out.insert("account_id".into(), json!(account_id));
    out.insert("action".into(), json!(name));
    for key in ["amount", "currency", "counterparty"] {
        if let Some(v) = action_props.remove(key) {
            out.insert(key.into(), v);
        }
    }
    out.insert("created_at".into(), json!(created_at));
    let mut authzen = Map::new();
    let part = |kind: &str, props: Map<String, Value>| {
        let mut m = Map::new();
        m.insert("type".into(), json!(kind));
        if !props.is_empty() {
            m.insert("properties".into(), Value::Object(props));
        }
        Value::Object(m)
    };
    authzen.insert(
        "subject".into(),
        part(subject_type, properties(subject, "subject")?),
    );
    authzen.insert(
        "resource".into(),
        part(resource_type, properties(resource, "resource")?),
    );
    if !action_props.is_empty() {
        authzen.insert("action".into(), json!({"properties": action_props}));
    }
    if !rest.is_empty() {
        authzen.insert("context".into(), Value::Object(rest));
    }
    out.insert("attributes".into(), json!({"authzen": authzen}));
    serde_json::to_vec(&Value::Object(out)).map_err(|e| BadRequest(e.to_string()))
}

/// The Access Evaluation response for a decision record (JSON): `decision` is true only for
/// `allow`.
pub fn response(decision: &Value) -> Value {
    let outcome = decision["decision"].as_str().unwrap_or("deny");
    let reasons = decision["reasons"].as_array().cloned().unwrap_or_default();
    let words: Vec<String> = reasons
        .iter()
        .map(|r| {
            let rule = r["rule"].as_str().unwrap_or("?");
            match r["message"].as_str() {
                Some(m) => format!("{rule}: {m}"),
                None => rule.to_owned(),
            }
        })
        .collect();
    let mut context = json!({
        "decision": outcome,
        "intent_id": decision["intent_id"],
        "score": decision["score"],
        "reasons": reasons,
        "errors": decision["errors"],
    });
    if !words.is_empty() {
        context["reason_admin"] = json!({"en": words.join("; ")});
    }
    if decision["duplicate"] == json!(true) {
        context["duplicate"] = json!(true);
    }
    json!({"decision": outcome == "allow", "context": context})
}

/// The Access Evaluation response when no decision came within the wait: not permitted (a
/// PEP must not go ahead), with where the decision will be.
pub fn pending(location: &str, waited: &str) -> Value {
    json!({
        "decision": false,
        "context": {
            "decision": "pending",
            "location": location,
            "reason_admin": {"en": format!("no decision within {waited}; GET {location} for it")},
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> DateTime<Utc> {
        "2026-12-07T10:00:00Z".parse().unwrap()
    }

    fn map(request: Value) -> Result<Value, BadRequest> {
        intent(&request, None, at(), || "fresh".into()).map(|b| serde_json::from_slice(&b).unwrap())
    }

    #[test]
    fn a_payment_request_maps_field_by_field() {
        let got = map(json!({
            "subject": {"type": "agent", "id": "payments-bot", "properties": {"model": "x-1"}},
            "resource": {"type": "account", "id": "acct-1"},
            "action": {"name": "transfer", "properties": {
                "amount": "250.00", "currency": "EUR",
                "counterparty": {"id": "cp-9", "country": "DE"}, "channel": "api"}},
            "context": {"intent_id": "t-1", "time": "2026-12-07T09:59:00Z", "ip": "10.0.0.1"}
        }))
        .unwrap();
        assert_eq!(
            got,
            json!({
                "intent_id": "t-1", "agent_id": "payments-bot", "account_id": "acct-1",
                "action": "transfer", "amount": "250.00", "currency": "EUR",
                "counterparty": {"id": "cp-9", "country": "DE"},
                "created_at": "2026-12-07T09:59:00Z",
                "attributes": {"authzen": {
                    "subject": {"type": "agent", "properties": {"model": "x-1"}},
                    "resource": {"type": "account"},
                    "action": {"properties": {"channel": "api"}},
                    "context": {"ip": "10.0.0.1"}}}
            })
        );
    }

    #[test]
    fn ids_and_times_come_from_the_context_the_request_id_or_now() {
        let base = json!({
            "subject": {"type": "user", "id": "alice@example.com"},
            "resource": {"type": "account", "id": "123"},
            "action": {"name": "can_read"},
            "context": {"time": "1985-10-26T01:22-07:00"}
        });
        let got = map(base.clone()).unwrap();
        assert_eq!(got["intent_id"], "fresh");
        // The specification writes times without seconds; they are read as :00.
        assert_eq!(got["created_at"], "1985-10-26T01:22:00-07:00");
        let with_id: Value =
            serde_json::from_slice(&intent(&base, Some("req-7"), at(), || "fresh".into()).unwrap())
                .unwrap();
        assert_eq!(with_id["intent_id"], "req-7");
        let mut no_time = base.clone();
        no_time["context"] = Value::Null;
        assert_eq!(
            map(no_time).unwrap()["created_at"],
            "2026-12-07T10:00:00.000Z"
        );
    }

    #[test]
    fn missing_members_are_bad_requests_that_say_which() {
        for (request, says) in [
            (
                json!({"resource": {"type": "a", "id": "1"}, "action": {"name": "x"}}),
                "`subject` is required",
            ),
            (
                json!({"subject": {"type": "user"}, "resource": {"type": "a", "id": "1"}, "action": {"name": "x"}}),
                "`subject.id` is required",
            ),
            (
                json!({"subject": {"type": "user", "id": "u"}, "resource": {"id": "1"}, "action": {"name": "x"}}),
                "`resource.type` is required",
            ),
            (
                json!({"subject": {"type": "user", "id": "u"}, "resource": {"type": "a", "id": "1"}, "action": {}}),
                "`action.name` is required",
            ),
            (
                json!({"subject": {"type": "user", "id": "u"}, "resource": {"type": "a", "id": "1"}, "action": {"name": "x"}, "context": {"time": "yesterday"}}),
                "not an RFC 3339",
            ),
            (json!([1]), "`request` must be an object"),
        ] {
            let e = map(request).unwrap_err();
            assert!(e.0.contains(says), "{e} should say {says}");
        }
    }

    #[test]
    fn only_an_allow_is_true_and_the_reasons_are_in_the_context() {
        let hold = json!({"intent_id": "t-1", "decision": "hold", "score": 60,
            "reasons": [{"rule": "large-transfer", "action": "hold", "message": "over 10000"}],
            "errors": []});
        let r = response(&hold);
        assert_eq!(r["decision"], false);
        assert_eq!(r["context"]["decision"], "hold");
        assert_eq!(
            r["context"]["reason_admin"]["en"],
            "large-transfer: over 10000"
        );
        let allow = json!({"intent_id": "t-2", "decision": "allow", "score": 0, "reasons": [], "errors": []});
        assert_eq!(response(&allow)["decision"], true);
        assert!(response(&allow)["context"].get("reason_admin").is_none());
        let p = pending("/v1/decisions/a/b", "2s");
        assert_eq!(
            (p["decision"].clone(), p["context"]["decision"].clone()),
            (json!(false), json!("pending"))
        );
    }
}
