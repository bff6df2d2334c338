//! The review HTTP API and the page that uses it (axum). `openapi.json` next to this file
//! describes every route.
//!
//! Every response carries a strict Content-Security-Policy (scripts and styles from this
//! origin only, no inline code) and `nosniff`; the page builds its DOM with `textContent`
//! only, so an intent field such as a counterparty named `<script>` renders as text.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use chrono::Utc;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_stream::wrappers::WatchStream;
use tokio_stream::StreamExt as _;

use super::auth::{token_in, Identity, Session};
use super::queue::{Filter, Hold, HoldId, Refusal};
use super::App;
use crate::config::is_reviewer_name;
use crate::telemetry::review_metrics;
use riskgate_core::expr::parse_duration;
use riskgate_core::wire::{self, Verdict};

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const APP_CSS: &str = include_str!("web/app.css");
/// The OpenAPI 3.1 description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The routes of the review service.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { page("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { page("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/api/openapi.json",
            get(|| async { page("application/json", OPENAPI) }),
        )
        .route(
            "/api/session",
            get(current_session).post(sign_in).delete(sign_out),
        )
        .route("/api/holds", get(list_holds))
        .route("/api/holds/{key}/{intent_id}", get(get_hold))
        .route("/api/holds/{key}/{intent_id}/approve", post(approve))
        .route("/api/holds/{key}/{intent_id}/reject", post(reject))
        .route("/api/events", get(events))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such page or API route; the API is described at /api/openapi.json",
            )
        })
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// An error as the API reports it: `{"error":{"status":403,"code":"forbidden","message":"..."}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// Ask for HTTP Basic credentials (not when the page's own scripts called).
    challenge: bool,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            challenge: false,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"status": self.status.as_u16(), "code": self.code, "message": self.message}});
        let mut r = (self.status, Json(body)).into_response();
        if self.challenge {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"riskgate review\", charset=\"UTF-8\""),
            );
        }
        r
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::new(r.status(), "bad_request", r.body_text())
    }
}

/// Logs a refused attempt, counts it, and turns it into its HTTP error. A name that cannot be
/// a reviewer's (anything a caller typed) is not logged as such.
fn refuse(who: &str, attempt: &str, hold: Option<&HoldId>, err: ApiError) -> ApiError {
    let who = if who.is_empty() || is_reviewer_name(who) {
        who
    } else {
        "<not a reviewer name>"
    };
    review_metrics()
        .refusals
        .with_label_values(&[err.code])
        .inc();
    tracing::warn!(
        target: "riskgate::audit",
        reviewer = who,
        attempt,
        intent_id = hold.map_or("", |h| h.intent_id.as_str()),
        key = hold.map_or("", |h| h.key.as_str()),
        allowed = false,
        reason = err.code,
        detail = %err.message,
        "review attempt refused"
    );
    err
}

fn refusal_error(r: &Refusal) -> ApiError {
    let (status, code) = match r {
        Refusal::NotPending(_) => (StatusCode::NOT_FOUND, "not_pending"),
        Refusal::Viewer => (StatusCode::FORBIDDEN, "viewer"),
        Refusal::Proposer(_) => (StatusCode::FORBIDDEN, "proposer"),
        Refusal::AlreadyApproved(_) => (StatusCode::CONFLICT, "already_approved"),
        Refusal::NoComment => (StatusCode::UNPROCESSABLE_ENTITY, "no_comment"),
        Refusal::Changed { .. } => (StatusCode::CONFLICT, "hold_changed"),
    };
    debug_assert_eq!(code, r.kind());
    ApiError::new(status, code, r.to_string())
}

/// How a request proved who sent it.
enum Caller {
    Session(String, Session),
    Basic(Identity),
}

impl Caller {
    fn identity(&self) -> &Identity {
        match self {
            Caller::Session(_, s) => &s.identity,
            Caller::Basic(i) => i,
        }
    }
}

fn header_str(headers: &HeaderMap, name: impl axum::http::header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Who sent the request: a session cookie or HTTP Basic credentials. A state-changing
/// request on a session must carry the session's CSRF token in `X-CSRF-Token`.
async fn authenticate(
    app: &App,
    headers: &HeaderMap,
    attempt: &str,
    intent_id: Option<&HoldId>,
    changes_state: bool,
) -> Result<Caller, ApiError> {
    let from_page = headers.contains_key("x-requested-with");
    if let Some(token) = header_str(headers, header::COOKIE).and_then(token_in) {
        if let Some(session) = app.auth.session(token) {
            if changes_state {
                let sent = header_str(headers, "x-csrf-token").unwrap_or("");
                if !session.csrf_matches(sent) {
                    let err = ApiError::new(
                        StatusCode::FORBIDDEN,
                        "csrf",
                        "this request changes state and needs the session's CSRF token in the X-CSRF-Token header",
                    );
                    return Err(refuse(&session.identity.name, attempt, intent_id, err));
                }
            }
            return Ok(Caller::Session(token.to_owned(), session));
        }
    }
    if let Some(basic) =
        header_str(headers, header::AUTHORIZATION).and_then(|v| v.strip_prefix("Basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(basic.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok());
        let Some((name, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
            let err =
                ApiError::bad_request("the Authorization header is not Basic base64(name:secret)");
            return Err(refuse("", attempt, intent_id, err));
        };
        let verified = verify(app, name.to_owned(), secret.to_owned()).await;
        return match verified {
            Some(identity) => Ok(Caller::Basic(identity)),
            None => {
                let mut err = ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "bad_credentials",
                    "unknown reviewer or wrong secret",
                );
                err.challenge = !from_page;
                Err(refuse(name, attempt, intent_id, err))
            }
        };
    }
    let mut err = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "sign in first: POST /api/session, or send HTTP Basic credentials",
    );
    err.challenge = !from_page;
    Err(refuse("", attempt, intent_id, err))
}

/// Checks a secret off the async workers, at most [`App::verifying`]'s permits at a time: a
/// flood of sign-in attempts queues up instead of taking every core.
async fn verify(app: &App, name: String, secret: String) -> Option<Identity> {
    let _permit = app.verifying.acquire().await.ok()?;
    let auth = Arc::clone(&app.auth);
    tokio::task::spawn_blocking(move || auth.verify(&name, &secret))
        .await
        .ok()
        .flatten()
}

fn session_body(s: &Session) -> Value {
    json!({"reviewer": s.identity.name, "role": s.identity.role, "csrf_token": s.csrf_token})
}

async fn current_session(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    match authenticate(&app, &headers, "session", None, false).await? {
        Caller::Session(_, s) => Ok(Json(session_body(&s))),
        Caller::Basic(i) => Ok(Json(json!({"reviewer": i.name, "role": i.role}))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SignIn {
    reviewer: String,
    secret: String,
}

async fn sign_in(
    State(app): State<Arc<App>>,
    body: Result<Json<SignIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(SignIn { reviewer, secret }) = body?;
    let verified = verify(&app, reviewer.clone(), secret).await;
    let Some(identity) = verified else {
        let err = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "unknown reviewer or wrong secret",
        );
        return Err(refuse(&reviewer, "sign_in", None, err));
    };
    let (token, session) = app
        .auth
        .open(identity)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    tracing::info!(target: "riskgate::audit", reviewer = %reviewer, attempt = "sign_in", allowed = true, "reviewer signed in");
    let cookie = HeaderValue::from_str(&app.auth.cookie(&token))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let mut r = Json(session_body(&session)).into_response();
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(r)
}

async fn sign_out(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let caller = authenticate(&app, &headers, "sign_out", None, true).await?;
    if let Caller::Session(token, s) = &caller {
        app.auth.close(token);
        tracing::info!(target: "riskgate::audit", reviewer = %s.identity.name, attempt = "sign_out", allowed = true, "reviewer signed out");
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    if let Ok(v) = HeaderValue::from_str(&app.auth.clear_cookie()) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(r)
}

/// Reads the list filters, refusing unknown parameters and bad values with a clear message.
fn filter(params: &HashMap<String, String>) -> Result<Filter, ApiError> {
    let mut f = Filter::default();
    for (key, value) in params {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let amount = || {
            value.parse::<Decimal>().map_err(|_| {
                ApiError::bad_request(format!(
                    "`{key}` must be a decimal amount such as 100 or 2500.50, not `{value}`"
                ))
            })
        };
        let age =
            || parse_duration(value).map_err(|e| ApiError::bad_request(format!("`{key}`: {e}")));
        match key.as_str() {
            "rule" => f.rule = Some(value.to_owned()),
            "agent" => f.agent = Some(value.to_owned()),
            "account" => f.account = Some(value.to_owned()),
            "min_amount" => f.min_amount = Some(amount()?),
            "max_amount" => f.max_amount = Some(amount()?),
            "min_age" => f.min_age = Some(age()?),
            "max_age" => f.max_age = Some(age()?),
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown filter `{key}`; the filters are rule, agent, account, min_amount, max_amount, min_age and max_age"
                )))
            }
        }
    }
    Ok(f)
}

fn time(t: &chrono::DateTime<Utc>) -> String {
    wire::text::timestamp(t)
}

/// A hold as the API shows it. Amount, reasons, errors, counters, score, ruleset and
/// `created_at` are copied from `record`, the decision as the engine wrote it, so the page
/// shows exactly what agents read on the topic.
fn hold_json(app: &App, hold: &Hold, record: &Value, now: chrono::DateTime<Utc>) -> Value {
    let h = &hold.decision;
    let mut o = json!({
        "intent_id": hold.id.intent_id,
        "key": hold.id.key,
        "agent_id": h.head.agent_id,
        "account_id": h.head.account_id,
        "action": h.head.action,
        "decided_at": time(&h.decided_at),
        "age_seconds": (now - h.decided_at).num_seconds().max(0),
        "expires_at": time(&hold.expires_at(app.expire_after)),
        "approvals": {"required": hold.required, "approved_by": hold.approved_by},
        "record": {"partition": hold.partition, "offset": hold.offset},
    });
    for key in [
        "amount",
        "currency",
        "created_at",
        "score",
        "reasons",
        "errors",
        "counters",
        "ruleset",
    ] {
        if let Some(v) = record.get(key) {
            o[key] = v.clone();
        }
    }
    if let Some(cp) = &hold.counterparty {
        o["counterparty"] = json!(cp);
    }
    o
}

fn record_json(hold: &Hold) -> Value {
    serde_json::from_str(&hold.record).unwrap_or(Value::Null)
}

async fn list_holds(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    authenticate(&app, &headers, "list", None, false).await?;
    let f = filter(&params)?;
    let now = Utc::now();
    let q = app.queue();
    let holds: Vec<Value> = q
        .list(&f, now)
        .into_iter()
        .map(|h| hold_json(&app, h, &record_json(h), now))
        .collect();
    Ok(Json(json!({"count": holds.len(), "holds": holds})))
}

async fn get_hold(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((key, intent_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = HoldId::new(key, intent_id);
    authenticate(&app, &headers, "view", Some(&id), false).await?;
    let now = Utc::now();
    let q = app.queue();
    let Some(h) = q.get(&id) else {
        let msg = match q.finished(&id) {
            Some(f) => format!(
                "{id} is no longer held: {} by {}",
                match f.verdict {
                    Verdict::Approve => "approved",
                    Verdict::Reject => "rejected",
                },
                f.reviewer
            ),
            None => format!("{id} is not held (or not read yet)"),
        };
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_pending", msg));
    };
    let decision = record_json(h);
    Ok(Json(
        json!({"hold": hold_json(&app, h, &decision, now), "decision": decision}),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    #[serde(default)]
    comment: String,
    /// The hold decision the reviewer looked at (`record` of the hold): when given, the review
    /// is refused if the hold has been decided again since, at another record.
    #[serde(default)]
    record: Option<RecordRef>,
}

/// A record of the decisions topic.
#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RecordRef {
    partition: i32,
    offset: i64,
}

async fn approve(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((key, intent_id)): Path<(String, String)>,
    body: Result<Json<ReviewBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    review(
        app,
        headers,
        HoldId::new(key, intent_id),
        body,
        Verdict::Approve,
    )
    .await
}

async fn reject(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path((key, intent_id)): Path<(String, String)>,
    body: Result<Json<ReviewBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    review(
        app,
        headers,
        HoldId::new(key, intent_id),
        body,
        Verdict::Reject,
    )
    .await
}

/// The most a comment may hold.
const MAX_COMMENT: usize = 2000;

async fn review(
    app: Arc<App>,
    headers: HeaderMap,
    id: HoldId,
    body: Result<Json<ReviewBody>, JsonRejection>,
    verdict: Verdict,
) -> Result<Json<Value>, ApiError> {
    let attempt = verdict.as_str();
    let caller = authenticate(&app, &headers, attempt, Some(&id), true).await?;
    let who = caller.identity().clone();
    let Json(body) = body.map_err(|e| refuse(&who.name, attempt, Some(&id), e.into()))?;
    if body.comment.chars().count() > MAX_COMMENT {
        let err = ApiError::bad_request(format!(
            "a comment may have at most {MAX_COMMENT} characters"
        ));
        return Err(refuse(&who.name, attempt, Some(&id), err));
    }
    let seen = body.record.map(|r| (r.partition, r.offset));
    let outcome = app
        .review(&id, seen, &who.name, who.role, verdict, &body.comment)
        .await;
    match outcome {
        Ok((record, ended)) => {
            let released = ended;
            tracing::info!(
                target: "riskgate::audit",
                reviewer = %who.name,
                attempt,
                intent_id = %id.intent_id,
                key = %id.key,
                hold_partition = record.hold.partition,
                hold_offset = record.hold.offset,
                allowed = true,
                decision = %record.decision,
                ended,
                "review published"
            );
            let released = released && verdict == Verdict::Approve;
            Ok(Json(
                json!({"review": record, "final": ended, "released": released}),
            ))
        }
        Err(super::ReviewError::Refused(r)) => {
            Err(refuse(&who.name, attempt, Some(&id), refusal_error(&r)))
        }
        Err(super::ReviewError::Overtaken(by)) => {
            let err = ApiError::new(
                StatusCode::CONFLICT,
                "already_reviewed",
                format!("{id} was reviewed by {by} first; your record came after it and changes nothing"),
            );
            Err(refuse(&who.name, attempt, Some(&id), err))
        }
        Err(super::ReviewError::Unavailable(e)) => {
            tracing::error!(reviewer = %who.name, intent_id = %id.intent_id, key = %id.key, error = %e, "publishing a review failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                format!("the review could not be confirmed on the decisions topic: {e}; reload and try again"),
            ))
        }
    }
}

async fn events(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    authenticate(&app, &headers, "events", None, false).await?;
    let stream = WatchStream::new(app.changes.subscribe())
        .map(|version| Ok(Event::default().event("holds").data(version.to_string())));
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let m = review_metrics();
    m.ready.set(i64::from(app.ready.load(Ordering::Relaxed)));
    m.pending_holds.set(app.queue().len() as i64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
}

async fn readyz(State(app): State<Arc<App>>) -> impl IntoResponse {
    let ready = app.ready.load(Ordering::Relaxed);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"ready": ready, "pending_holds": app.queue().len()})),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_openapi_description_covers_every_api_route() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        for (path, methods) in [
            ("/api/session", &["get", "post", "delete"][..]),
            ("/api/holds", &["get"]),
            ("/api/holds/{key}/{intent_id}", &["get"]),
            ("/api/holds/{key}/{intent_id}/approve", &["post"]),
            ("/api/holds/{key}/{intent_id}/reject", &["post"]),
            ("/api/events", &["get"]),
        ] {
            for m in methods {
                assert!(paths[path][m].is_object(), "{m} {path} is described");
            }
        }
        assert_eq!(paths.len(), 6, "and nothing that does not exist");
    }

    #[test]
    fn filters_are_checked() {
        let p = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>()
        };
        let f = filter(&p(&[
            ("min_amount", "100.5"),
            ("max_age", "10m"),
            ("rule", ""),
        ]))
        .unwrap();
        assert_eq!(f.min_amount, Some(Decimal::new(1005, 1)));
        assert_eq!(f.max_age, Some(chrono::TimeDelta::minutes(10)));
        assert_eq!(f.rule, None, "an empty filter is no filter");
        let e = filter(&p(&[("min_amount", "lots")])).unwrap_err();
        assert_eq!(
            e.message,
            "`min_amount` must be a decimal amount such as 100 or 2500.50, not `lots`"
        );
        let e = filter(&p(&[("colour", "red")])).unwrap_err();
        assert!(
            e.message.starts_with("unknown filter `colour`"),
            "{}",
            e.message
        );
        assert!(filter(&p(&[("min_age", "soon")]))
            .unwrap_err()
            .message
            .starts_with("`min_age`: `soon` is not a duration"));
    }

    #[test]
    fn the_page_has_no_inline_code_or_remote_resources() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("app.css", APP_CSS),
        ] {
            for bad in [
                "http://",
                "https://",
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
                "eval(",
                " style=\"",
                " onclick=",
            ] {
                assert!(!text.contains(bad), "{name} contains {bad}");
            }
        }
        assert!(!INDEX_HTML.contains("<script>"), "no inline script");
    }
}
