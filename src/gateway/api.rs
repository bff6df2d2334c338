//! The gateway's HTTP API (axum); `openapi.json` next to this file describes every route.
//!
//! Every request but the probes, the metrics and the descriptions names its caller with
//! `Authorization: Bearer <key>`; the key speaks for one agent, and each key has its own
//! request rate. A request that waits for a decision holds one of `max_waiting` places.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use chrono::Utc;
use rdkafka::producer::FutureRecord;
use serde::Deserialize;
use serde_json::{json, Value};

use super::cache::{Answer, Cache, Id, Source, Ticket};
use super::keys::Caller;
use super::{authzen, App, WRITE_TIMEOUT};
use crate::telemetry::gateway_metrics;
use riskgate_core::expr::parse_duration;
use riskgate_core::intent::{parse_intent, Intent, InvalidIntent};

/// The OpenAPI 3.1 description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The routes of the gateway; `/metrics` among them unless it has a listener of its own.
pub fn router(app: Arc<App>, with_metrics: bool) -> Router {
    let limit = app.settings.max_body_bytes;
    let mut router = Router::new()
        .route("/v1/intents", post(propose))
        .route("/v1/decisions/{key}/{intent_id}", get(decision))
        .route("/access/v1/evaluation", post(evaluation))
        .route(
            "/.well-known/authzen-configuration",
            get(authzen_configuration),
        )
        .route("/v1/openapi.json", get(openapi))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz));
    if with_metrics {
        router = router.route("/metrics", get(metrics));
    }
    router
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such route; the API is described at /v1/openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::map_response(count))
        .with_state(app)
}

/// `/metrics` alone, for its own listener (`[gateway] metrics_listen`).
pub fn metrics_router() -> Router {
    Router::new().route("/metrics", get(metrics))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn count(response: Response) -> Response {
    gateway_metrics()
        .requests
        .with_label_values(&[response.status().as_str()])
        .inc();
    response
}

async fn metrics() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gateway_metrics().render(),
    )
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    let read = app.ready.load(Ordering::Relaxed);
    let reader = !app.reader.is_down();
    let broker = !app.broker.is_down();
    let ready = read && reader && broker;
    let body = Json(
        json!({"ready": ready, "read_up_to_start": read, "reader_reachable": reader, "broker_reachable": broker}),
    );
    if ready {
        (StatusCode::OK, body).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    }
}

/// An error as the API reports it: `{"error":{"status":403,"code":"wrong_agent","message":"..."}}`,
/// counted by its code.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// More members of `error` (the field of an invalid intent).
    more: Option<Value>,
    retry_after: Option<u64>,
    /// The `WWW-Authenticate` challenge of a 401.
    challenge: Option<&'static str>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            more: None,
            retry_after: None,
            challenge: None,
        }
    }

    /// Try again in `wait`.
    fn later(status: StatusCode, code: &'static str, message: &str, wait: Duration) -> Self {
        let secs = crate::http::retry_after_secs(wait);
        let mut e = ApiError::new(status, code, format!("{message}; try again in {secs} s"));
        e.retry_after = Some(secs);
        e
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// An intent the engine's parser refuses: 400 with the dead-letter error (its kind as the
    /// code, its field and message).
    fn invalid(e: &InvalidIntent) -> Self {
        let mut err = ApiError::new(StatusCode::BAD_REQUEST, e.kind.as_str(), e.message.clone());
        if let Some(field) = &e.field {
            err.more = Some(json!({ "field": field }));
        }
        err
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        // An intent the parser refuses is an `invalid_intent`; a body over the limit
        // (413, also `too_large`) is not read as an intent at all.
        let refusal = match (self.status, self.code) {
            (
                StatusCode::BAD_REQUEST,
                "invalid_json" | "too_large" | "missing_field" | "unknown_field" | "invalid_field",
            ) => "invalid_intent",
            (_, other) => other,
        };
        if self.status != StatusCode::NOT_FOUND {
            gateway_metrics()
                .refusals
                .with_label_values(&[refusal])
                .inc();
        }
        let mut error =
            json!({"status": self.status.as_u16(), "code": self.code, "message": self.message});
        if let (Some(Value::Object(more)), Some(e)) = (self.more, error.as_object_mut()) {
            e.extend(more);
        }
        let mut r = (self.status, Json(json!({ "error": error }))).into_response();
        if let Some(secs) = self.retry_after {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Some(c) = self.challenge {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        r
    }
}

/// The caller a request's key speaks for, within its rate.
fn caller(app: &App, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let sent = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, key) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
        });
    let Some(sent) = sent else {
        let mut e = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send the agent's key: Authorization: Bearer <key>",
        );
        e.challenge = Some("Bearer realm=\"riskgate\"");
        return Err(e);
    };
    let Some(caller) = app.keys().caller(sent) else {
        let mut e = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "bad_key",
            "this key is not one of the gateway's",
        );
        e.challenge = Some("Bearer realm=\"riskgate\", error=\"invalid_token\"");
        return Err(e);
    };
    if let Err(not_until) = app.limiter.check_key(&caller.key) {
        let wait = not_until.wait_time_from(governor::clock::Clock::now(
            &governor::clock::DefaultClock::default(),
        ));
        return Err(ApiError::later(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            &format!(
                "this key may make {} requests a second ({} at once)",
                app.settings.rate, app.settings.burst
            ),
            wait,
        ));
    }
    Ok(caller)
}

#[derive(Deserialize)]
struct WaitQuery {
    wait: Option<String>,
}

/// How long a request waits: its `?wait=` (at most `max_wait`), or the default.
fn wait_of(app: &App, q: &WaitQuery) -> Result<Duration, ApiError> {
    let max = app
        .settings
        .max_wait
        .to_std()
        .unwrap_or(Duration::from_secs(30));
    let Some(text) = q.wait.as_deref() else {
        return Ok(app
            .settings
            .default_wait
            .to_std()
            .unwrap_or(Duration::from_secs(2)));
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let d = parse_duration(text)
        .ok()
        .and_then(|d| d.to_std().ok())
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`wait` is `{text}`, not a duration such as `500ms`, `2s` or `30s`"
            ))
        })?;
    Ok(d.min(max))
}

/// A place among the requests that wait, given back when dropped.
struct Place<'a>(&'a App);

impl Drop for Place<'_> {
    fn drop(&mut self) {
        let n = self.0.waiting.fetch_sub(1, Ordering::Relaxed);
        gateway_metrics().waiting.set(n.saturating_sub(1) as i64);
    }
}

fn place(app: &App) -> Result<Place<'_>, ApiError> {
    let n = app.waiting.fetch_add(1, Ordering::Relaxed);
    let place = Place(app);
    if n >= app.settings.max_waiting {
        return Err(ApiError::later(
            StatusCode::SERVICE_UNAVAILABLE,
            "busy",
            &format!(
                "{} requests are waiting for decisions already",
                app.settings.max_waiting
            ),
            Duration::from_secs(1),
        ));
    }
    gateway_metrics().waiting.set(n as i64 + 1);
    Ok(place)
}

/// The media type a body is sent as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Media {
    Json,
    /// A compact JWS (design 9.1): passed to Kafka as it is.
    Jose,
}

fn media(headers: &HeaderMap) -> Result<Media, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match ct.as_str() {
        "application/json" => Ok(Media::Json),
        "application/jose" => Ok(Media::Jose),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the intent as application/json, or signed as application/jose",
        )),
    }
}

fn body_of(body: Result<Bytes, BytesRejection>, app: &App) -> Result<Bytes, ApiError> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!(
                    "a request body may have {} bytes at most",
                    app.settings.max_body_bytes
                ),
            )
        } else {
            ApiError::bad_request(e.body_text())
        }
    })
}

/// The intent a compact JWS carries (its payload), checked for shape only: three parts, a
/// header with `alg` `EdDSA` or `ES256` and a `kid`. Its signature is the engine's to verify
/// (design 9.1).
fn jws_payload(body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let bad = |why: &str| ApiError::bad_request(format!("not a compact JWS: {why}"));
    let text = std::str::from_utf8(body)
        .map_err(|_| bad("not text"))?
        .trim();
    let parts: Vec<&str> = text.split('.').collect();
    let [head, payload, signature] = parts[..] else {
        return Err(bad("it needs three parts separated by dots"));
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header: Value = b64
        .decode(head)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or_else(|| bad("its header is not base64url JSON"))?;
    if !matches!(header["alg"].as_str(), Some("EdDSA" | "ES256")) {
        return Err(bad("`alg` must be EdDSA or ES256"));
    }
    if !header["kid"].is_string() {
        return Err(bad("its header needs a `kid`"));
    }
    if signature.is_empty() {
        return Err(bad("it has no signature"));
    }
    b64.decode(payload)
        .map_err(|_| bad("its payload is not base64url"))
}

/// What became of a proposed intent.
struct Proposed {
    id: Id,
    answer: Option<Arc<Answer>>,
    waited: Duration,
}

impl App {
    /// Writes `value` (the intent, as sent) to the intents topic under the intent's partition
    /// key, if `caller` may propose it, and waits up to `wait` for its answer.
    async fn propose(
        &self,
        caller: &Caller,
        intent: &Intent,
        value: &[u8],
        wait: Duration,
    ) -> Result<Proposed, ApiError> {
        if intent.head.agent_id != caller.agent {
            // A security event (the per-key rate bounds how often it can be logged; log
            // lines escape control characters).
            tracing::warn!(
                key_agent = %caller.agent,
                intent_agent = %intent.head.agent_id,
                intent_id = %intent.head.intent_id,
                "a key proposed for another agent; refused"
            );
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "wrong_agent",
                format!(
                    "this key speaks for `{}`, not for `{}`",
                    caller.agent, intent.head.agent_id
                ),
            ));
        }
        let Some(key) = self.partition_key.text(intent) else {
            return Err(ApiError::bad_request(format!(
                "the intent has no `{}`, the field intents are keyed by",
                self.partition_key
            )));
        };
        let id = Id {
            key: key.into_owned(),
            intent_id: intent.head.intent_id.to_string(),
        };
        let _place = place(self)?;
        let record = FutureRecord::to(&self.intents_topic)
            .key(id.key.as_bytes())
            .payload(value);
        let delivered = self.producer.send(record, WRITE_TIMEOUT).await;
        let delivery = match delivered {
            Ok(d) => {
                self.broker.ok();
                d
            }
            Err((e, _)) => {
                self.broker.failed(&format_args!("writing an intent: {e}"));
                return Err(ApiError::later(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    &format!(
                        "the intent could not be written to Kafka ({e}); nothing was proposed"
                    ),
                    Duration::from_secs(1),
                ));
            }
        };
        self.cache().written(
            id.clone(),
            (delivery.partition, delivery.offset),
            Instant::now(),
        );
        let started = Instant::now();
        let answer = self
            .wait_for_source((delivery.partition, delivery.offset), wait)
            .await;
        let waited = started.elapsed();
        gateway_metrics().wait_seconds.observe(waited.as_secs_f64());
        Ok(Proposed { id, answer, waited })
    }

    async fn wait_for_source(&self, source: Source, wait: Duration) -> Option<Arc<Answer>> {
        self.wait_for(
            wait,
            |c| c.wait_for_source(source),
            |c, ticket| c.leave_source(source, ticket),
        )
        .await
    }

    async fn wait_for_id(&self, id: &Id, wait: Duration) -> Option<Arc<Answer>> {
        self.wait_for(
            wait,
            |c| c.wait_for_id(id),
            |c, ticket| c.leave_id(id, ticket),
        )
        .await
    }

    /// The answer `ask` finds in the cache now, or the one handed to its ticket within
    /// `wait`; a ticket whose wait runs out is given back with `leave`.
    async fn wait_for(
        &self,
        wait: Duration,
        ask: impl FnOnce(&mut Cache) -> Result<Arc<Answer>, Ticket>,
        leave: impl FnOnce(&mut Cache, u64),
    ) -> Option<Arc<Answer>> {
        let ticket = match ask(&mut self.cache()) {
            Ok(a) => return Some(a),
            Err(t) => t,
        };
        match tokio::time::timeout(wait, ticket.answer).await {
            Ok(Ok(a)) => Some(a),
            _ => {
                leave(&mut self.cache(), ticket.id);
                None
            }
        }
    }
}

/// Where the decision of `id` will be.
fn location(id: &Id) -> String {
    use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
    // Everything but RFC 3986's unreserved characters.
    const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    format!(
        "/v1/decisions/{}/{}",
        utf8_percent_encode(&id.key, SEGMENT),
        utf8_percent_encode(&id.intent_id, SEGMENT)
    )
}

fn count_answer(answer: &str) {
    gateway_metrics().answers.with_label_values(&[answer]).inc();
}

/// The answer to a request about `id`: 200 with the decision, 422 with a dead letter's
/// error, or 202 with where the decision will be.
fn answer(id: &Id, answer: Option<&Answer>, waited: Duration) -> Response {
    match answer {
        Some(Answer::Decision { body, outcome, .. }) => {
            count_answer(outcome);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body.clone(),
            )
                .into_response()
        }
        Some(Answer::DeadLetter { error }) => {
            count_answer("dead_letter");
            let error: Value = serde_json::from_slice(error).unwrap_or(Value::Null);
            let body = json!({"error": {
                "status": 422,
                "code": "dead_letter",
                "message": format!("the engine could not read the intent: {}", error["message"].as_str().unwrap_or("?")),
                "dead_letter": error,
            }});
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
        }
        None => {
            count_answer("pending");
            let at = location(id);
            let body = json!({
                "status": "pending",
                "key": id.key,
                "intent_id": id.intent_id,
                "location": at,
                "message": format!("no decision within {} ms; GET the location (with ?wait=) for it", waited.as_millis()),
            });
            let mut r = (StatusCode::ACCEPTED, Json(body)).into_response();
            if let Ok(v) = HeaderValue::from_str(&at) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            r
        }
    }
}

/// `POST /v1/intents`: proposes an intent and answers with its decision.
async fn propose(
    State(app): State<Arc<App>>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let caller = caller(&app, &headers)?;
    let body = body_of(body, &app)?;
    let wait = wait_of(&app, &q)?;
    let json: Cow<'_, [u8]> = match media(&headers)? {
        Media::Json => Cow::Borrowed(&body[..]),
        Media::Jose => Cow::Owned(jws_payload(&body)?),
    };
    let intent = parse_intent(&json, app.max_intent_bytes).map_err(|e| ApiError::invalid(&e))?;
    let p = app.propose(&caller, &intent, &body, wait).await?;
    Ok(answer(&p.id, p.answer.as_deref(), p.waited))
}

/// `GET /v1/decisions/{key}/{intent_id}`: an intent's decision, waiting for it up to `?wait=`.
async fn decision(
    State(app): State<Arc<App>>,
    Path((key, intent_id)): Path<(String, String)>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = caller(&app, &headers)?;
    let wait = wait_of(&app, &q)?;
    let id = Id { key, intent_id };
    let started = Instant::now();
    let found = if wait.is_zero() {
        app.wait_for_id(&id, wait).await
    } else {
        let _place = place(&app)?;
        app.wait_for_id(&id, wait).await
    };
    let waited = started.elapsed();
    match found.as_deref() {
        // Another agent's decision is not this caller's to read.
        Some(Answer::Decision { agent_id, .. }) if *agent_id != caller.agent => Err(not_known()),
        Some(a) => Ok(answer(&id, Some(a), waited)),
        None if app.cache().is_pending(&id) => Ok(answer(&id, None, waited)),
        None => Err(not_known()),
    }
}

fn not_known() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_known",
        "this gateway knows no decision of that intent: it was not proposed, not decided yet by an intent another instance wrote, or decided longer ago than the gateway keeps decisions (post it again: a duplicate gets its decision)",
    )
}

/// `POST /access/v1/evaluation`: an OpenID AuthZEN 1.0 Access Evaluation, as an intent.
async fn evaluation(
    State(app): State<Arc<App>>,
    Query(q): Query<WaitQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let result = evaluate(&app, &q, &headers, body, request_id.as_deref()).await;
    let mut r = match result {
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    // AuthZEN 10.1.3: the request's id comes back.
    if let Some(v) = request_id.and_then(|id| HeaderValue::from_str(&id).ok()) {
        r.headers_mut().insert("x-request-id", v);
    }
    Ok(r)
}

async fn evaluate(
    app: &App,
    q: &WaitQuery,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    request_id: Option<&str>,
) -> Result<Response, ApiError> {
    let caller = caller(app, headers)?;
    let body = body_of(body, app)?;
    let wait = wait_of(app, q)?;
    if media(headers)? != Media::Json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "an Access Evaluation request is application/json",
        ));
    }
    let request: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
    let intent_json = authzen::intent(&request, request_id, Utc::now(), fresh_id)
        .map_err(|e| ApiError::bad_request(e.0))?;
    let intent =
        parse_intent(&intent_json, app.max_intent_bytes).map_err(|e| ApiError::invalid(&e))?;
    let p = app.propose(&caller, &intent, &intent_json, wait).await?;
    let out = match p.answer.as_deref() {
        Some(Answer::Decision { body, outcome, .. }) => {
            count_answer(outcome);
            let decision: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            authzen::response(&decision)
        }
        Some(Answer::DeadLetter { error }) => {
            count_answer("dead_letter");
            let error: Value = serde_json::from_slice(error).unwrap_or(Value::Null);
            json!({"decision": false, "context": {"decision": "invalid", "dead_letter": error}})
        }
        None => {
            count_answer("pending");
            authzen::pending(&location(&p.id), &format!("{} ms", p.waited.as_millis()))
        }
    };
    Ok(Json(out).into_response())
}

/// A random intent id for an evaluation that names none.
fn fresh_id() -> String {
    let mut bytes = [0u8; 16];
    let _ = getrandom::fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("authzen-{hex}")
}

/// `GET /.well-known/authzen-configuration`: the PDP metadata of AuthZEN 1.0 (section 9),
/// for the host the request named.
async fn authzen_configuration(headers: HeaderMap) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let scheme = match headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
    {
        Some("https") => "https",
        _ => "http",
    };
    let base = format!("{scheme}://{host}");
    Json(json!({
        "policy_decision_point": base,
        "access_evaluation_endpoint": format!("{base}/access/v1/evaluation"),
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compact_jws_gives_its_payload_and_a_bad_one_says_why() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let head = b64.encode(br#"{"alg":"EdDSA","kid":"k1"}"#);
        let payload = b64.encode(br#"{"intent_id":"t"}"#);
        let jws = format!("{head}.{payload}.c2ln");
        assert_eq!(
            jws_payload(jws.as_bytes()).unwrap(),
            br#"{"intent_id":"t"}"#
        );
        let none = b64.encode(br#"{"alg":"none","kid":"k1"}"#);
        for (bad, says) in [
            (
                format!("{none}.{payload}.c2ln"),
                "`alg` must be EdDSA or ES256",
            ),
            (format!("{head}.{payload}"), "three parts"),
            (format!("{head}.{payload}."), "no signature"),
            (
                format!("{}.{payload}.c2ln", b64.encode(br#"{"alg":"ES256"}"#)),
                "`kid`",
            ),
        ] {
            let e = jws_payload(bad.as_bytes()).unwrap_err();
            assert!(e.message.contains(says), "{} for {bad}", e.message);
        }
    }

    #[test]
    fn a_location_names_the_key_and_the_id_percent_encoded() {
        let id = Id {
            key: "acct 1/x".into(),
            intent_id: "t-1.a_b~?".into(),
        };
        assert_eq!(location(&id), "/v1/decisions/acct%201%2Fx/t-1.a_b~%3F");
    }

    #[test]
    fn the_openapi_description_covers_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        assert_eq!(doc["openapi"], "3.1.0");
        let paths = doc["paths"].as_object().unwrap();
        let source = include_str!("api.rs").split("#[cfg(test)]").next().unwrap();
        // Every `.route(` call's path, however rustfmt wraps it.
        let routes: Vec<&str> = source
            .split(".route(")
            .skip(1)
            .filter_map(|call| call.trim_start().strip_prefix('"'))
            .filter_map(|call| call.split('"').next())
            .collect();
        assert!(routes.len() >= 7, "{routes:?}");
        for route in &routes {
            assert!(paths.contains_key(*route), "{route} is not in openapi.json");
        }
        for path in paths.keys() {
            assert!(
                routes.contains(&path.as_str()),
                "{path} is documented but not routed"
            );
        }
    }
}
