//! The review HTTP API and the page that uses it (axum). `openapi.json` next to this file
//! describes every route.
//!
//! Every response carries a strict Content-Security-Policy (scripts and styles from this
//! origin only, no inline code) and `nosniff`; the page builds its DOM with `textContent`
//! only, so an intent field such as a counterparty named `<script>` renders as text.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
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

use super::auth::{Identity, Session, STREAMS_PER_SESSION};
use super::queue::{Ended, Filter, HistoryFilter, Hold, HoldId, Refusal};
use super::App;
use crate::config::Role;
use crate::server::ClientAddr;
use crate::telemetry::review_metrics;
use riskgate_core::expr::parse_duration;
use riskgate_core::wire::{self, Verdict};

const INDEX_HTML: &str = include_str!("web/index.html");
const APP_JS: &str = include_str!("web/app.js");
const APP_CSS: &str = include_str!("web/app.css");
/// The OpenAPI 3.1 description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The routes of the review service; `/metrics` among them unless it has a listener of its
/// own; requests for another `Host` than `allowed_hosts` (when given) are refused, except
/// `/healthz` and `/readyz`.
pub fn router(app: Arc<App>, with_metrics: bool, allowed_hosts: Vec<String>) -> Router {
    let mut router = Router::new()
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
        .route("/api/holds/review", post(review_many))
        .route("/api/history", get(list_history))
        .route("/api/holds/{key}/{intent_id}", get(get_hold))
        .route("/api/holds/{key}/{intent_id}/{verdict}", post(review_one))
        .route("/api/events", get(events))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    if with_metrics {
        router = router.route("/metrics", get(metrics));
    }
    let hosts = Arc::new(allowed_hosts);
    router
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such page or API route; the API is described at /api/openapi.json",
            )
        })
        .layer(axum::middleware::from_fn(move |request, next| {
            check_host(hosts.clone(), request, next)
        }))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

/// `/metrics` alone, for its own listener (`[review] metrics_listen`).
pub fn metrics_router(app: Arc<App>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(app)
}

/// Refuses (421) a request whose `Host` is not allowed, when an allow-list is configured:
/// a DNS-rebinding page cannot then reach the API through a name it controls.
async fn check_host(
    allowed: Arc<Vec<String>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let probe = path == "/healthz" || path == "/readyz";
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(|h| crate::server::host_name(h).to_ascii_lowercase());
    if allowed.is_empty() || probe || host.as_ref().is_some_and(|h| allowed.contains(h)) {
        return next.run(request).await;
    }
    ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "host_not_allowed",
        "this host name is not one the review service answers to ([review] allowed_hosts)",
    )
    .into_response()
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
    /// Ask for HTTP Basic credentials: only when wrong ones were sent, not by the page.
    challenge: bool,
    /// Seconds to wait before trying again (429, 503).
    retry_after: Option<u64>,
    /// Counted but not logged (a throttled attempt after the first of its wait).
    quiet: bool,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            challenge: false,
            retry_after: None,
            quiet: false,
        }
    }

    /// Too many attempts, or too many at once: try again in `wait`.
    fn later(status: StatusCode, code: &'static str, message: &str, wait: Duration) -> Self {
        let secs = crate::http::retry_after_secs(wait);
        let mut e = ApiError::new(status, code, format!("{message}; try again in {secs} s"));
        e.retry_after = Some(secs);
        e
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
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        r
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError::new(r.status(), "bad_request", r.body_text())
    }
}

/// Logs a refused attempt, counts it, and turns it into its HTTP error. `who` is logged only
/// as the configured reviewer it names: anything else a caller typed (a secret typed into the
/// name field, say) is `<unknown>`.
fn refuse(app: &App, who: &str, attempt: &str, hold: Option<&HoldId>, err: ApiError) -> ApiError {
    let who = match app.auth.reviewer(who) {
        Some(r) => r.name.as_str(),
        None if who.is_empty() => "",
        None => "<unknown>",
    };
    review_metrics()
        .refusals
        .with_label_values(&[err.code])
        .inc();
    if err.quiet {
        return err;
    }
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
        Refusal::InProgress(_) => (StatusCode::CONFLICT, "in_progress"),
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

/// The client a request comes from (see [`crate::server`]); the unspecified address when the
/// router runs without the server loop.
pub struct Client(pub IpAddr);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Client {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Client(
            parts
                .extensions
                .get::<ClientAddr>()
                .map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0),
        ))
    }
}

/// Who sent the request: a session cookie or HTTP Basic credentials. A state-changing
/// request on a session must carry the session's CSRF token in `X-CSRF-Token`.
async fn authenticate(
    app: &App,
    headers: &HeaderMap,
    client: IpAddr,
    attempt: &str,
    intent_id: Option<&HoldId>,
    changes_state: bool,
) -> Result<Caller, ApiError> {
    if let Some(token) = header_str(headers, header::COOKIE).and_then(|c| app.auth.token_in(c)) {
        if let Some(session) = app.auth.session(token) {
            if changes_state {
                let sent = header_str(headers, "x-csrf-token").unwrap_or("");
                if !session.csrf_matches(sent) {
                    let err = ApiError::new(
                        StatusCode::FORBIDDEN,
                        "csrf",
                        "this request changes state and needs the session's CSRF token in the X-CSRF-Token header",
                    );
                    return Err(refuse(app, &session.identity.name, attempt, intent_id, err));
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
            return Err(refuse(app, "", attempt, intent_id, err));
        };
        return match verify(app, name, secret, client).await {
            Ok(identity) => Ok(Caller::Basic(identity)),
            Err(mut err) => {
                // Wrong Basic credentials were sent: ask again, unless the page sent them.
                err.challenge = err.status == StatusCode::UNAUTHORIZED
                    && !headers.contains_key("x-requested-with");
                Err(refuse(app, name, attempt, intent_id, err))
            }
        };
    }
    // No credentials: no challenge, so that no browser is led to keep Basic credentials
    // (which would skip the CSRF check).
    let err = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "sign in first: POST /api/session, or send HTTP Basic credentials",
    );
    Err(refuse(app, "", attempt, intent_id, err))
}

/// The longest a throttled sign-in waits for its answer.
const THROTTLED_ANSWER: Duration = Duration::from_secs(1);

/// Checks `name`'s `secret`, from `client`: refused without a check (429, answered after the
/// wait or a second, whichever is shorter) while the name or the client waits after
/// failures; an unknown name waits as long as a check takes, without the
/// work; a known one is checked off the async workers in one of [`App::checks`] (or
/// [`App::suspect_checks`] when the name has failed lately), busy (503) when the lane is
/// full. Failures and successes feed the throttle.
async fn verify(app: &App, name: &str, secret: &str, client: IpAddr) -> Result<Identity, ApiError> {
    let auth = &app.auth;
    let attempt = match auth.throttle.begin(name, client) {
        Ok(attempt) => attempt,
        Err(throttled) => {
            // Answered slowly: a guessing connection gets an answer a second at most, and
            // costs next to nothing meanwhile (answered at once, a flood of 429s would take
            // the CPU that the checks of everyone else need).
            let slow = throttled.wait.min(THROTTLED_ANSWER);
            tokio::time::sleep(slow).await;
            let mut err = ApiError::later(
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                if throttled.first {
                    "too many failed sign-ins for this name or from this client (further refusals while it waits are counted, not logged)"
                } else {
                    "too many failed sign-ins for this name or from this client"
                },
                throttled.wait - slow,
            );
            err.quiet = !throttled.first;
            return Err(err);
        }
    };
    let wrong = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_credentials",
            "unknown reviewer or wrong secret",
        )
    };
    if auth.reviewer(name).is_none() {
        tokio::time::sleep(auth.check_time()).await;
        attempt.failed();
        return Err(wrong());
    }
    let busy = || {
        ApiError::later(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            "too many sign-ins at once",
            Duration::from_secs(1),
        )
    };
    let lane = if attempt.suspect {
        &app.suspect_checks
    } else {
        &app.checks
    };
    let place = lane.enter().await.ok_or_else(busy)?;
    let (checker, name_owned, secret_owned) =
        (Arc::clone(auth), name.to_owned(), secret.to_owned());
    let verified = tokio::task::spawn_blocking(move || checker.verify(&name_owned, &secret_owned))
        .await
        .ok()
        .flatten();
    drop(place);
    match verified {
        Some(identity) => {
            attempt.succeeded();
            Ok(identity)
        }
        None => {
            attempt.failed();
            Err(wrong())
        }
    }
}

fn session_body(s: &Session) -> Value {
    json!({"reviewer": s.identity.name, "role": s.identity.role, "csrf_token": s.csrf_token})
}

async fn current_session(
    State(app): State<Arc<App>>,
    Client(client): Client,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    match authenticate(&app, &headers, client, "session", None, false).await? {
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
    Client(client): Client,
    body: Result<Json<SignIn>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(SignIn { reviewer, secret }) = body?;
    let identity = verify(&app, &reviewer, &secret, client)
        .await
        .map_err(|err| refuse(&app, &reviewer, "sign_in", None, err))?;
    let (token, session) = app
        .auth
        .open(identity)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    tracing::info!(target: "riskgate::audit", reviewer = %session.identity.name, attempt = "sign_in", allowed = true, "reviewer signed in");
    let cookie = HeaderValue::from_str(&app.auth.cookie(&token))
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let mut r = Json(session_body(&session)).into_response();
    r.headers_mut().insert(header::SET_COOKIE, cookie);
    Ok(r)
}

async fn sign_out(
    State(app): State<Arc<App>>,
    Client(client): Client,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = authenticate(&app, &headers, client, "sign_out", None, true).await?;
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

/// A page of a list: `limit` (default [`PAGE`], at most [`PAGE_MAX`]) items from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Page {
    offset: usize,
    limit: usize,
}

/// Items of a list page when the request names no `limit`.
const PAGE: usize = 50;
/// The most items one page may hold.
const PAGE_MAX: usize = 500;

impl Page {
    fn of<T>(&self, items: Vec<T>) -> impl Iterator<Item = T> {
        items.into_iter().skip(self.offset).take(self.limit)
    }

    fn json(&self, count: usize, items: Vec<Value>, name: &str) -> Value {
        let mut o = json!({"count": count, "offset": self.offset, "limit": self.limit});
        o[name] = Value::Array(items);
        o
    }
}

/// Reads the query of a list: its page (`limit`, `offset`) and, through `field`, its
/// filters; unknown parameters and bad values are refused with a clear message that lists
/// the known ones.
fn query(
    params: &HashMap<String, String>,
    known: &str,
    mut field: impl FnMut(&str, &str) -> Result<bool, ApiError>,
) -> Result<Page, ApiError> {
    let mut page = Page {
        offset: 0,
        limit: PAGE,
    };
    for (key, value) in params {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        let count = || {
            value.parse::<usize>().map_err(|_| {
                ApiError::bad_request(format!("`{key}` must be a whole number, not `{value}`"))
            })
        };
        match key.as_str() {
            "offset" => page.offset = count()?,
            "limit" => page.limit = count()?.clamp(1, PAGE_MAX),
            _ if field(key, value)? => {}
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{key}`; the parameters are {known}, limit and offset"
                )))
            }
        }
    }
    Ok(page)
}

/// Reads the filters of the pending list.
fn filter(params: &HashMap<String, String>) -> Result<(Filter, Page), ApiError> {
    let mut f = Filter::default();
    let page = query(
        params,
        "rule, agent, account, text, min_amount, max_amount, min_age and max_age",
        |key, value| {
            let amount = || {
                value.parse::<Decimal>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "`{key}` must be a decimal amount such as 100 or 2500.50, not `{value}`"
                    ))
                })
            };
            let age = || {
                parse_duration(value).map_err(|e| ApiError::bad_request(format!("`{key}`: {e}")))
            };
            match key {
                "rule" => f.rule = Some(value.to_owned()),
                "agent" => f.agent = Some(value.to_owned()),
                "account" => f.account = Some(value.to_owned()),
                "text" => f.text = Some(value.to_owned()),
                "min_amount" => f.min_amount = Some(amount()?),
                "max_amount" => f.max_amount = Some(amount()?),
                "min_age" => f.min_age = Some(age()?),
                "max_age" => f.max_age = Some(age()?),
                _ => return Ok(false),
            }
            Ok(true)
        },
    )?;
    Ok((f.normalized(), page))
}

/// Reads the filters of the history.
fn history_filter(params: &HashMap<String, String>) -> Result<(HistoryFilter, Page), ApiError> {
    let mut f = HistoryFilter::default();
    let page = query(
        params,
        "reviewer, outcome, agent, account and text",
        |key, value| {
            match key {
                "reviewer" => f.reviewer = Some(value.to_owned()),
                "outcome" if matches!(value, "approve" | "reject" | "expire") => {
                    f.outcome = Some(value.to_owned())
                }
                "outcome" => {
                    return Err(ApiError::bad_request(format!(
                        "`outcome` is `approve`, `reject` or `expire`, not `{value}`"
                    )))
                }
                "agent" => f.agent = Some(value.to_owned()),
                "account" => f.account = Some(value.to_owned()),
                "text" => f.text = Some(value.to_owned()),
                _ => return Ok(false),
            }
            Ok(true)
        },
    )?;
    Ok((f.normalized(), page))
}

/// Whether `who` may approve `hold`, or why not: `viewer`, `proposer` or `already_approved`.
fn approval_refusal(hold: &Hold, who: &Identity) -> Option<&'static str> {
    if who.role != Role::Approver {
        Some("viewer")
    } else if super::queue::same_person(&hold.decision.head.agent_id, &who.name) {
        Some("proposer")
    } else if hold
        .approved_by
        .iter()
        .any(|a| super::queue::same_person(a, &who.name))
    {
        Some("already_approved")
    } else {
        None
    }
}

/// A hold as the API shows it to `who`. Amount, reasons, errors, counters, score, thresholds,
/// ruleset and `created_at` are copied from `record`, the decision as the engine wrote it, so
/// the page shows exactly what agents read on the topic.
fn hold_json(
    app: &App,
    hold: &Hold,
    record: &Value,
    who: &Identity,
    now: chrono::DateTime<Utc>,
) -> Value {
    let h = &hold.decision;
    let refusal = approval_refusal(hold, who);
    let mut o = json!({
        "intent_id": hold.id.intent_id,
        "key": hold.id.key,
        "agent_id": h.head.agent_id,
        "account_id": h.head.account_id,
        "action": h.head.action,
        "decided_at": wire::text::timestamp(&h.decided_at),
        "age_seconds": (now - h.head.created_at).num_seconds().max(0),
        "decided_age_seconds": (now - h.decided_at).num_seconds().max(0),
        "expires_at": wire::text::timestamp(&hold.expires_at(app.expire_after)),
        "approvals": {"required": hold.required, "approved_by": hold.approved_by},
        "record": {"partition": hold.partition, "offset": hold.offset},
        "may_approve": refusal.is_none(),
    });
    if let Some(why) = refusal {
        o["why_not"] = json!(why);
    }
    if let Some(base) = &hold.base_amount {
        o["base_amount"] = json!(wire::text::decimal_string(base));
    }
    if hold.base_unknown() {
        o["base_unknown"] = json!(true);
    }
    for key in [
        "amount",
        "currency",
        "base_currency",
        "created_at",
        "score",
        "thresholds",
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
    Client(client): Client,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let caller = authenticate(&app, &headers, client, "list", None, false).await?;
    let (f, page) = filter(&params)?;
    let now = Utc::now();
    let q = app.queue();
    let all = q.list(&f, now);
    let count = all.len();
    // Only the page's records are read: a queue of many thousands stays fast.
    let holds: Vec<Value> = page
        .of(all)
        .map(|h| hold_json(&app, h, &record_json(h), caller.identity(), now))
        .collect();
    Ok(Json(page.json(count, holds, "holds")))
}

/// An ended review as the history shows it.
fn ended_json(e: &Ended) -> Value {
    let mut o = json!({
        "intent_id": e.id.intent_id,
        "key": e.id.key,
        "agent_id": e.agent_id,
        "account_id": e.account_id,
        "action": e.action,
        "created_at": wire::text::timestamp(&e.created_at),
        "decided_at": wire::text::timestamp(&e.decided_at),
        "rules": e.rules,
        "outcome": e.outcome(),
        "reviewer": e.reviewer,
        "comment": e.comment,
        "approved_by": e.approved_by,
        "record": {"partition": e.partition, "offset": e.offset},
    });
    if let Some(a) = &e.amount {
        o["amount"] = json!(wire::text::decimal_string(a));
    }
    for (k, v) in [
        ("currency", &e.currency),
        ("base_currency", &e.base_currency),
    ] {
        if let Some(v) = v {
            o[k] = json!(v);
        }
    }
    if let Some(a) = &e.base_amount {
        o["base_amount"] = json!(wire::text::decimal_string(a));
    }
    if let Some(t) = &e.reviewed_at {
        o["reviewed_at"] = json!(wire::text::timestamp(t));
    }
    o
}

async fn list_history(
    State(app): State<Arc<App>>,
    Client(client): Client,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    authenticate(&app, &headers, client, "history", None, false).await?;
    let (f, page) = history_filter(&params)?;
    let q = app.queue();
    let all = q.history(&f);
    let count = all.len();
    let items: Vec<Value> = page.of(all).map(ended_json).collect();
    Ok(Json(page.json(count, items, "reviews")))
}

async fn get_hold(
    State(app): State<Arc<App>>,
    Client(client): Client,
    headers: HeaderMap,
    Path((key, intent_id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let id = HoldId::new(key, intent_id);
    let caller = authenticate(&app, &headers, client, "view", Some(&id), false).await?;
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
        json!({"hold": hold_json(&app, h, &decision, caller.identity(), now), "decision": decision}),
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

/// `POST /api/holds/{key}/{intent_id}/approve` and `.../reject`.
async fn review_one(
    State(app): State<Arc<App>>,
    Client(client): Client,
    headers: HeaderMap,
    Path((key, intent_id, verdict)): Path<(String, String, String)>,
    body: Result<Json<ReviewBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let verdict = match verdict.as_str() {
        "approve" => Verdict::Approve,
        "reject" => Verdict::Reject,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "a hold is reviewed with `approve` or `reject`",
            ))
        }
    };
    review(
        app,
        headers,
        client,
        HoldId::new(key, intent_id),
        body,
        verdict,
    )
    .await
}

/// The most a comment may hold.
const MAX_COMMENT: usize = 2000;

async fn review(
    app: Arc<App>,
    headers: HeaderMap,
    client: IpAddr,
    id: HoldId,
    body: Result<Json<ReviewBody>, JsonRejection>,
    verdict: Verdict,
) -> Result<Json<Value>, ApiError> {
    let attempt = verdict.as_str();
    let caller = authenticate(&app, &headers, client, attempt, Some(&id), true).await?;
    let who = caller.identity().clone();
    let Json(body) = body.map_err(|e| refuse(&app, &who.name, attempt, Some(&id), e.into()))?;
    check_comment(&body.comment).map_err(|e| refuse(&app, &who.name, attempt, Some(&id), e))?;
    let seen = body.record.map(|r| (r.partition, r.offset));
    review_hold(&app, &who, &id, seen, verdict, &body.comment)
        .await
        .map(Json)
}

/// A comment must fit in [`MAX_COMMENT`] characters.
fn check_comment(comment: &str) -> Result<(), ApiError> {
    if comment.chars().count() > MAX_COMMENT {
        return Err(ApiError::bad_request(format!(
            "a comment may have at most {MAX_COMMENT} characters"
        )));
    }
    Ok(())
}

/// Publishes `who`'s `verdict` on hold `id` (as seen at `seen`), logs it in the audit log,
/// and says how it went: `{"review", "final", "released"}`, or why not.
async fn review_hold(
    app: &App,
    who: &Identity,
    id: &HoldId,
    seen: Option<(i32, i64)>,
    verdict: Verdict,
    comment: &str,
) -> Result<Value, ApiError> {
    let attempt = verdict.as_str();
    let outcome = app
        .review(id, seen, &who.name, who.role, verdict, comment)
        .await;
    match outcome {
        Ok((record, ended)) => {
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
            let released = ended && verdict == Verdict::Approve;
            Ok(json!({"review": record, "final": ended, "released": released}))
        }
        Err(super::ReviewError::Refused(r)) => {
            Err(refuse(app, &who.name, attempt, Some(id), refusal_error(&r)))
        }
        Err(super::ReviewError::Overtaken(by)) => {
            let err = ApiError::new(
                StatusCode::CONFLICT,
                "already_reviewed",
                format!("{id} was reviewed by {by} first; your record came after it and changes nothing"),
            );
            Err(refuse(app, &who.name, attempt, Some(id), err))
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

/// `POST /api/holds/review`: one verdict and one comment for a selection of holds. Each hold
/// is reviewed on its own, exactly as `.../approve` or `.../reject` would (its own review
/// record, the proposer and two-person rules, the decision record it must still be), and
/// answers for itself in `results`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkBody {
    verdict: String,
    #[serde(default)]
    comment: String,
    holds: Vec<BulkHold>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BulkHold {
    key: String,
    intent_id: String,
    /// Required: a selection names exactly the decisions the reviewer saw.
    record: RecordRef,
}

/// Reviews of one bulk request published at once.
const BULK_CONCURRENCY: usize = 16;

async fn review_many(
    State(app): State<Arc<App>>,
    Client(client): Client,
    headers: HeaderMap,
    body: Result<Json<BulkBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let caller = authenticate(&app, &headers, client, "bulk", None, true).await?;
    let who = caller.identity().clone();
    let Json(body) = body.map_err(|e| refuse(&app, &who.name, "bulk", None, e.into()))?;
    let verdict = match body.verdict.as_str() {
        "approve" => Verdict::Approve,
        "reject" => Verdict::Reject,
        other => {
            let err =
                ApiError::bad_request(format!("`verdict` is `approve` or `reject`, not `{other}`"));
            return Err(refuse(&app, &who.name, "bulk", None, err));
        }
    };
    check_comment(&body.comment).map_err(|e| refuse(&app, &who.name, "bulk", None, e))?;
    if body.holds.is_empty() || body.holds.len() > PAGE_MAX {
        let err = ApiError::bad_request(format!(
            "`holds` names 1 to {PAGE_MAX} holds, not {}",
            body.holds.len()
        ));
        return Err(refuse(&app, &who.name, "bulk", None, err));
    }
    let comment: Arc<str> = Arc::from(body.comment.as_str());
    let permits = Arc::new(tokio::sync::Semaphore::new(BULK_CONCURRENCY));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, h) in body.holds.into_iter().enumerate() {
        let (app, who, comment, permits) =
            (app.clone(), who.clone(), comment.clone(), permits.clone());
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.ok();
            let id = HoldId::new(h.key, h.intent_id);
            let seen = Some((h.record.partition, h.record.offset));
            let outcome = review_hold(&app, &who, &id, seen, verdict, &comment).await;
            let mut result = json!({"key": id.key, "intent_id": id.intent_id});
            match outcome {
                Ok(done) => {
                    result["status"] = json!(200);
                    result["final"] = done["final"].clone();
                    result["released"] = done["released"].clone();
                }
                Err(e) => {
                    result["status"] = json!(e.status.as_u16());
                    result["code"] = json!(e.code);
                    result["message"] = json!(e.message);
                }
            }
            (i, result)
        });
    }
    let mut results: Vec<(usize, Value)> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        if let Ok(r) = done {
            results.push(r);
        }
    }
    results.sort_by_key(|(i, _)| *i);
    let reviewed = results.iter().filter(|(_, r)| r["status"] == 200).count();
    let results: Vec<Value> = results.into_iter().map(|(_, r)| r).collect();
    Ok(Json(json!({
        "verdict": verdict.as_str(),
        "reviewed": reviewed,
        "refused": results.len() - reviewed,
        "results": results,
    })))
}

/// Server-sent events for a signed-in page: `holds` whenever the pending set changes. A
/// session holds at most [`STREAMS_PER_SESSION`] streams, and they end when it signs out.
async fn events(
    State(app): State<Arc<App>>,
    Client(client): Client,
    headers: HeaderMap,
) -> Result<Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Caller::Session(_, session) =
        authenticate(&app, &headers, client, "events", None, false).await?
    else {
        let err = ApiError::new(
            StatusCode::FORBIDDEN,
            "session_required",
            "event streams are for signed-in pages; scripts poll GET /api/holds",
        );
        return Err(err);
    };
    let Some(slot) = session.stream_slot() else {
        let err = ApiError::later(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
            &format!("a session may hold {STREAMS_PER_SESSION} event streams at once"),
            Duration::from_secs(5),
        );
        return Err(refuse(&app, &session.identity.name, "events", None, err));
    };
    let changes = WatchStream::new(app.changes.subscribe())
        .map(|version| Some(Event::default().event("holds").data(version.to_string())));
    // `None` once the session is closed: the stream ends there.
    let closed = WatchStream::new(session.closed())
        .filter(|closed| *closed)
        .map(|_| None);
    let stream = changes
        .merge(closed)
        .take_while(Option::is_some)
        .filter_map(move |event| {
            let _open = &slot;
            event.map(Ok)
        });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    let m = review_metrics();
    m.ready.set(i64::from(app.is_ready()));
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
    let ready = app.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": ready,
            "topic_read": app.ready.load(Ordering::Relaxed),
            "broker_reachable": !app.broker_down(),
            "pending_holds": app.queue().len(),
        })),
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
            ("/api/holds/review", &["post"]),
            ("/api/history", &["get"]),
            ("/api/holds/{key}/{intent_id}", &["get"]),
            ("/api/holds/{key}/{intent_id}/approve", &["post"]),
            ("/api/holds/{key}/{intent_id}/reject", &["post"]),
            ("/api/events", &["get"]),
        ] {
            for m in methods {
                assert!(paths[path][m].is_object(), "{m} {path} is described");
            }
        }
        assert_eq!(paths.len(), 8, "and nothing that does not exist");
    }

    #[test]
    fn filters_are_checked() {
        let p = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>()
        };
        let (f, page) = filter(&p(&[
            ("min_amount", "100.5"),
            ("max_age", "10m"),
            ("rule", ""),
            ("agent", " Payments-BOT "),
            ("limit", "100000"),
            ("offset", "50"),
        ]))
        .unwrap();
        assert_eq!(f.min_amount, Some(Decimal::new(1005, 1)));
        assert_eq!(f.max_age, Some(chrono::TimeDelta::minutes(10)));
        assert_eq!(f.rule, None, "an empty filter is no filter");
        assert_eq!(
            f.agent.as_deref(),
            Some("payments-bot"),
            "compared ignoring case"
        );
        assert_eq!(
            page,
            Page {
                offset: 50,
                limit: PAGE_MAX
            },
            "a page holds at most PAGE_MAX"
        );
        let e = filter(&p(&[("min_amount", "lots")])).unwrap_err();
        assert_eq!(
            e.message,
            "`min_amount` must be a decimal amount such as 100 or 2500.50, not `lots`"
        );
        let e = filter(&p(&[("colour", "red")])).unwrap_err();
        assert!(
            e.message.starts_with("unknown parameter `colour`"),
            "{}",
            e.message
        );
        assert!(filter(&p(&[("limit", "many")]))
            .unwrap_err()
            .message
            .contains("whole number"));
        let (h, _) = history_filter(&p(&[("outcome", "expire"), ("reviewer", "Alice")])).unwrap();
        assert_eq!(
            (h.outcome.as_deref(), h.reviewer.as_deref()),
            (Some("expire"), Some("alice"))
        );
        assert!(history_filter(&p(&[("outcome", "maybe")])).is_err());
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
