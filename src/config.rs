//! The service's configuration ([docs/design.md](../docs/design.md#5-kafka-guarantees)): a TOML file, then environment overrides
//! (`RISKGATE__KAFKA__BROKERS=...`), then validation that reports every problem at once.
//! The file is read the way rules are: a serde shape of it (every key optional and of any
//! type, so that one wrong key does not hide the others), then validation into [`Config`].
//! Secrets (librdkafka properties such as `sasl.password`, reviewers' secret hashes) never
//! appear in output: the `Display` and `Debug` of a [`Config`] redact them, and no problem
//! shows their value.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::TimeDelta;
use serde::de::{self, DeserializeOwned, IgnoredAny, Visitor};
use serde::Deserialize;
use toml::value::Datetime;
use toml::{Table, Value};

use crate::integrity::{Integrity, Keys, Secret, MIN_SECRET_BYTES};
use riskgate_core::expr::{format_duration, parse_duration};
use riskgate_core::intent::{Field, FieldPath, DEFAULT_MAX_BYTES};

/// The prefix of environment overrides; `__` separates the levels of a key.
pub const ENV_PREFIX: &str = "RISKGATE__";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub kafka: Kafka,
    pub rules: Rules,
    pub http: Http,
    pub engine: Engine,
    pub review: Review,
    pub gateway: Gateway,
    /// How riskgate's own records are signed and checked ([`crate::integrity`]).
    pub integrity: Integrity,
    /// The key files of `[integrity]`, by key id, as configured (printed, never read back).
    integrity_files: Vec<(String, PathBuf)>,
    /// Durations as they were written (`section.key` -> `24h`), so that the configuration
    /// prints back as its author wrote it; the defaults print in their largest whole unit.
    written: BTreeMap<String, String>,
}

/// Which command reads the configuration: each requires the keys it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `riskgate run`: needs a `transactional_id`.
    Run,
    /// `riskgate review`: needs at least one reviewer.
    Review,
    /// `riskgate gateway`: needs at least one API key.
    Gateway,
}

/// `riskgate review` ([docs/design.md](../docs/design.md#6-review-of-held-intents)).
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    /// The review page, its API, `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
    /// A hold nobody reviews within this long (from its decision) is rejected by
    /// `system:expiry`.
    pub expire_after: TimeDelta,
    /// How long a browser session lasts after signing in.
    pub session_ttl: TimeDelta,
    /// The session cookie is `__Host-` prefixed and `Secure` (the default: the page is
    /// served over HTTPS, by a TLS proxy). `false` is allowed only on a loopback `listen`.
    pub secure_cookies: bool,
    pub reviewers: Vec<Reviewer>,
    /// `/metrics` on a listener of its own, away from the reviewers' port, when set.
    pub metrics_listen: Option<SocketAddr>,
    /// The host names requests may name in `Host`, compared without a port (any, when
    /// empty); `/healthz` and `/readyz` answer whatever the host.
    pub allowed_hosts: Vec<String>,
    /// Connection limits and the proxies whose `X-Forwarded-For` names the client.
    pub limits: crate::server::Limits,
}

/// `riskgate gateway` ([docs/gateway.md](../docs/gateway.md)): the HTTP API agents propose
/// intents to and read their decisions from.
#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    /// The API, `/healthz`, `/readyz` and (unless `metrics_listen`) `/metrics`.
    pub listen: SocketAddr,
    /// `/metrics` on a listener of its own, when set.
    pub metrics_listen: Option<SocketAddr>,
    /// How long a request waits for its decision unless it says (`?wait=`).
    pub default_wait: TimeDelta,
    /// The longest a request may wait (a longer `?wait=` waits this long).
    pub max_wait: TimeDelta,
    /// The largest request body.
    pub max_body_bytes: usize,
    /// Decisions kept for answers and `GET`s: at most this many ...
    pub cache_entries: usize,
    /// ... and none older than this (by when the gateway read it).
    pub cache_age: TimeDelta,
    /// Requests per second each key may make, on average ...
    pub rate: u32,
    /// ... and at once.
    pub burst: u32,
    /// Requests waiting for their decision at once, at most (503 beyond).
    pub max_waiting: usize,
    /// Connection limits and the proxies whose `X-Forwarded-For` names the client.
    pub limits: crate::server::Limits,
    /// Who may call: each key speaks for one agent.
    pub keys: Vec<ApiKey>,
}

/// A caller's API key, as configured: the SHA-256 of the key, never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The `agent_id` the key speaks for: intents for any other are refused.
    pub agent: String,
    pub sha256: [u8; 32],
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("agent", &self.agent)
            .field("sha256", &"<redacted>")
            .finish()
    }
}

/// A person allowed to sign in to the review page.
#[derive(Clone, PartialEq)]
pub struct Reviewer {
    pub name: String,
    pub role: Role,
    /// An Argon2 hash in PHC format (`riskgate hash-secret` writes one); never the secret.
    pub secret_hash: String,
    /// The agent ids this person operates: they may never approve those agents' intents.
    pub agents: Vec<String>,
}

impl fmt::Debug for Reviewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reviewer")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("secret_hash", &"<redacted>")
            .field("agents", &self.agents)
            .finish()
    }
}

/// What a reviewer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees the held intents.
    Viewer,
    /// Sees, approves and rejects them.
    Approver,
}

/// Whether `name` may name a reviewer: 1 to 64 letters, digits, `.`, `_`, `-` or `@` (no
/// `:`, which marks system reviewers such as `system:expiry`).
pub fn is_reviewer_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

#[derive(Clone, PartialEq)]
pub struct Kafka {
    pub brokers: String,
    pub group_id: String,
    pub intents_topic: String,
    pub decisions_topic: String,
    pub dead_letter_topic: String,
    /// Stable and unique per instance: a restarted instance fences its own zombie.
    pub transactional_id: String,
    /// A transaction closes after this long...
    pub commit_interval: Duration,
    /// ...or after this many intents, whichever comes first.
    pub commit_max_records: usize,
    /// Create missing topics at start (otherwise a missing topic is an error).
    pub create_topics: bool,
    /// Partitions of topics created at start when the intents topic does not exist yet.
    pub partitions: i32,
    pub replication_factor: i32,
    /// The intent field producers key intents by: the record key riskgate checks, and the
    /// scope of an intent id. Every counter's key must contain it when the intents topic has
    /// more than one partition (docs/kafka.md, "Partitioning").
    pub partition_key: FieldPath,
    /// Passed to librdkafka as they are (security.protocol, SASL, TLS, timeouts...).
    pub librdkafka: BTreeMap<String, String>,
}

/// The values of secret librdkafka properties are `"<redacted>"`.
impl fmt::Debug for Kafka {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Kafka {
            brokers,
            group_id,
            intents_topic,
            decisions_topic,
            dead_letter_topic,
            transactional_id,
            commit_interval,
            commit_max_records,
            create_topics,
            partitions,
            replication_factor,
            partition_key,
            librdkafka,
        } = self;
        let librdkafka: BTreeMap<&str, &str> = librdkafka
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret(k) { "<redacted>" } else { v }))
            .collect();
        f.debug_struct("Kafka")
            .field("brokers", brokers)
            .field("group_id", group_id)
            .field("intents_topic", intents_topic)
            .field("decisions_topic", decisions_topic)
            .field("dead_letter_topic", dead_letter_topic)
            .field("transactional_id", transactional_id)
            .field("commit_interval", commit_interval)
            .field("commit_max_records", commit_max_records)
            .field("create_topics", create_topics)
            .field("partition_key", partition_key)
            .field("partitions", partitions)
            .field("replication_factor", replication_factor)
            .field("librdkafka", &librdkafka)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub dir: PathBuf,
    /// Reload when a file in `dir` changes (SIGHUP always reloads).
    pub watch: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Http {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Engine {
    pub max_intent_bytes: usize,
    pub duplicate_horizon: TimeDelta,
    pub max_future_skew: Option<TimeDelta>,
}

/// Every problem found in a configuration, one per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration in {source_name}:\n  {}", problems.join("\n  "))]
pub struct ConfigError {
    pub source_name: String,
    pub problems: Vec<String>,
}

impl Config {
    /// Reads `path`, applies the `RISKGATE__*` variables of `env`, and validates it for
    /// `riskgate run`.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Config::load_for(path, env, Purpose::Run)
    }

    /// Like [`Config::load`], validated for `purpose`.
    pub fn load_for(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
        purpose: Purpose,
    ) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: name.clone(),
            problems: vec![format!("cannot read the file: {e}")],
        })?;
        Config::parse_for(&text, &name, env, purpose)
    }

    /// Like [`Config::load`], from text; `name` names it in errors.
    pub fn parse(
        text: &str,
        name: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        Config::parse_for(text, name, env, Purpose::Run)
    }

    /// Like [`Config::parse`], validated for `purpose`.
    pub fn parse_for(
        text: &str,
        name: &str,
        env: impl IntoIterator<Item = (String, String)>,
        purpose: Purpose,
    ) -> Result<Config, ConfigError> {
        let fail = |problems| ConfigError {
            source_name: name.to_owned(),
            problems,
        };
        let mut table: Table = text.parse().map_err(|e: toml::de::Error| {
            fail(vec![e.to_string().trim_end().replace('\n', "\n  ")])
        })?;
        let mut problems = Vec::new();
        // `section.key` -> the variable that set it, so that a problem with it names the
        // variable, not the file.
        let mut from_env: Vec<(String, String)> = Vec::new();
        for (var, value) in env {
            if let Some(path) = var.strip_prefix(ENV_PREFIX) {
                override_key(&mut table, path, &value, &var, &mut problems);
                let dotted = path
                    .split("__")
                    .map(str::to_ascii_lowercase)
                    .collect::<Vec<_>>()
                    .join(".");
                from_env.push((dotted, var));
            }
        }
        // Cannot fail (every key of the raw shape is optional and takes any value); were it
        // to, serde's message names keys, never values.
        let raw = Section::<RawConfig>::deserialize(mark_datetimes(Value::Table(table)))
            .map_err(|e| fail(vec![e.message().to_owned()]))?;
        let mut check = Check {
            problems: &mut problems,
            purpose,
            written: BTreeMap::new(),
            // Key files are found beside the configuration file.
            base: Path::new(name)
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        let config = check.config(raw);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(fail(
                problems
                    .into_iter()
                    .map(|p| name_the_variable(p, &from_env))
                    .collect(),
            ))
        }
    }

    /// The librdkafka properties, with riskgate's `brokers` first so that the pass-through
    /// table may override anything.
    pub fn client_properties(&self) -> Vec<(String, String)> {
        let mut out = vec![("bootstrap.servers".to_owned(), self.kafka.brokers.clone())];
        out.extend(
            self.kafka
                .librdkafka
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        out
    }
}

/// The 32 bytes of 64 hex digits.
fn hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Whether a librdkafka property holds a secret.
pub fn is_secret(property: &str) -> bool {
    let p = property.to_ascii_lowercase();
    ["password", "secret", "token", "key.pem", "ssl.key", "jaas"]
        .iter()
        .any(|s| p.contains(s))
}

impl Config {
    /// A duration of the configuration as its author wrote it, or `value` in its largest
    /// whole unit when it was not written (a default).
    fn duration_text(&self, key: &str, value: TimeDelta) -> String {
        self.written
            .get(key)
            .cloned()
            .unwrap_or_else(|| format_duration(value))
    }
}

impl fmt::Display for Config {
    /// The effective configuration as TOML, secrets replaced by `"<redacted>"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = &self.kafka;
        writeln!(f, "[kafka]")?;
        writeln!(f, "brokers = {:?}", k.brokers)?;
        writeln!(f, "group_id = {:?}", k.group_id)?;
        writeln!(f, "intents_topic = {:?}", k.intents_topic)?;
        writeln!(f, "decisions_topic = {:?}", k.decisions_topic)?;
        writeln!(f, "dead_letter_topic = {:?}", k.dead_letter_topic)?;
        writeln!(f, "transactional_id = {:?}", k.transactional_id)?;
        let commit_interval = TimeDelta::from_std(k.commit_interval).unwrap_or(TimeDelta::MAX);
        writeln!(
            f,
            "commit_interval = \"{}\"",
            self.duration_text("kafka.commit_interval", commit_interval)
        )?;
        writeln!(f, "commit_max_records = {}", k.commit_max_records)?;
        writeln!(f, "create_topics = {}", k.create_topics)?;
        writeln!(f, "partitions = {}", k.partitions)?;
        writeln!(f, "partition_key = \"{}\"", k.partition_key)?;
        writeln!(f, "replication_factor = {}", k.replication_factor)?;
        writeln!(f, "\n[kafka.librdkafka]")?;
        for (key, value) in &k.librdkafka {
            let shown = if is_secret(key) { "<redacted>" } else { value };
            writeln!(f, "{key:?} = {shown:?}")?;
        }
        writeln!(f, "\n[rules]")?;
        writeln!(f, "dir = {:?}", self.rules.dir.display().to_string())?;
        writeln!(f, "watch = {}", self.rules.watch)?;
        writeln!(f, "\n[http]")?;
        writeln!(f, "listen = \"{}\"", self.http.listen)?;
        let e = &self.engine;
        writeln!(f, "\n[engine]")?;
        writeln!(f, "max_intent_bytes = {}", e.max_intent_bytes)?;
        writeln!(
            f,
            "duplicate_horizon = \"{}\"",
            self.duration_text("engine.duplicate_horizon", e.duplicate_horizon)
        )?;
        match e.max_future_skew {
            Some(s) => writeln!(
                f,
                "max_future_skew = \"{}\"",
                self.duration_text("engine.max_future_skew", s)
            )?,
            None => writeln!(f, "max_future_skew = \"off\"")?,
        }
        writeln!(f, "\n[integrity]")?;
        if !self.integrity_files.is_empty() {
            writeln!(f, "keys = [")?;
            for (id, file) in &self.integrity_files {
                writeln!(
                    f,
                    "  {{ id = {id:?}, secret_file = {:?} }},",
                    file.display().to_string()
                )?;
            }
            writeln!(f, "]")?;
        }
        if let Some(keys) = &self.integrity.keys {
            writeln!(f, "current = {:?}", keys.current())?;
        }
        writeln!(f, "require = {}", self.integrity.require)?;
        let r = &self.review;
        writeln!(f, "\n[review]")?;
        writeln!(f, "listen = \"{}\"", r.listen)?;
        writeln!(
            f,
            "expire_after = \"{}\"",
            self.duration_text("review.expire_after", r.expire_after)
        )?;
        writeln!(
            f,
            "session_ttl = \"{}\"",
            self.duration_text("review.session_ttl", r.session_ttl)
        )?;
        writeln!(f, "secure_cookies = {}", r.secure_cookies)?;
        if let Some(m) = r.metrics_listen {
            writeln!(f, "metrics_listen = \"{m}\"")?;
        }
        writeln!(f, "allowed_hosts = {:?}", r.allowed_hosts)?;
        self.write_limits(f, "review", &r.limits)?;
        for reviewer in &r.reviewers {
            writeln!(f, "\n[[review.reviewers]]")?;
            writeln!(f, "name = {:?}", reviewer.name)?;
            let role = match reviewer.role {
                Role::Viewer => "viewer",
                Role::Approver => "approver",
            };
            writeln!(f, "role = \"{role}\"")?;
            writeln!(f, "secret_hash = \"<redacted>\"")?;
        }
        let g = &self.gateway;
        writeln!(f, "\n[gateway]")?;
        writeln!(f, "listen = \"{}\"", g.listen)?;
        if let Some(m) = g.metrics_listen {
            writeln!(f, "metrics_listen = \"{m}\"")?;
        }
        for (key, value) in [
            ("default_wait", g.default_wait),
            ("max_wait", g.max_wait),
            ("cache_age", g.cache_age),
        ] {
            let text = self.duration_text(&format!("gateway.{key}"), value);
            writeln!(f, "{key} = \"{text}\"")?;
        }
        writeln!(f, "max_body_bytes = {}", g.max_body_bytes)?;
        writeln!(f, "cache_entries = {}", g.cache_entries)?;
        writeln!(f, "rate = {}", g.rate)?;
        writeln!(f, "burst = {}", g.burst)?;
        writeln!(f, "max_waiting = {}", g.max_waiting)?;
        self.write_limits(f, "gateway", &g.limits)?;
        for key in &g.keys {
            writeln!(f, "\n[[gateway.keys]]")?;
            writeln!(f, "agent = {:?}", key.agent)?;
            writeln!(f, "sha256 = \"<redacted>\"")?;
        }
        Ok(())
    }
}

impl Config {
    /// The connection limits of `section`, as its keys.
    fn write_limits(
        &self,
        f: &mut fmt::Formatter<'_>,
        section: &str,
        l: &crate::server::Limits,
    ) -> fmt::Result {
        let proxies: Vec<String> = l.trusted_proxies.iter().map(ToString::to_string).collect();
        writeln!(f, "trusted_proxies = {proxies:?}")?;
        writeln!(f, "max_connections = {}", l.max_connections)?;
        writeln!(f, "max_connections_per_client = {}", l.per_client)?;
        let timeout = TimeDelta::from_std(l.header_timeout).unwrap_or(TimeDelta::MAX);
        let key = format!("{section}.header_timeout");
        writeln!(
            f,
            "header_timeout = \"{}\"",
            self.duration_text(&key, timeout)
        )
    }
}

/// Sets `path` (levels separated by `__`, case-insensitive) in `table` to `value`, read as a
/// TOML value when it is one (`5000`, `true`) and as a string otherwise. Keys of the
/// librdkafka table keep dots: `RISKGATE__KAFKA__LIBRDKAFKA__SASL.PASSWORD`.
/// A problem with a key an environment variable set names that variable: the file is not
/// where to look.
fn name_the_variable(problem: String, from_env: &[(String, String)]) -> String {
    for (dotted, var) in from_env {
        if let Some(rest) = problem.strip_prefix(dotted.as_str()) {
            if let Some(rest) = rest.strip_prefix(':') {
                return format!("{dotted} (set by the environment variable `{var}`):{rest}");
            }
        }
    }
    problem
}

fn override_key(table: &mut Table, path: &str, value: &str, var: &str, problems: &mut Vec<String>) {
    let parts: Vec<String> = path.split("__").map(str::to_ascii_lowercase).collect();
    let Some((last, parents)) = parts.split_last() else {
        return;
    };
    let mut at = table;
    for p in parents {
        let entry = at
            .entry(p.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        let Value::Table(t) = entry else {
            problems.push(format!("{var}: `{p}` is not a table"));
            return;
        };
        at = t;
    }
    let in_passthrough = parents.last().is_some_and(|p| p == "librdkafka");
    let parsed = if in_passthrough {
        Value::String(value.to_owned())
    } else {
        format!("v = {value}")
            .parse::<Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| Value::String(value.to_owned()))
    };
    at.insert(last.clone(), parsed);
}

// ---------------------------------------------------------------------------------------
// The file format, as written: every key optional and of any type, so that deserializing
// never stops at the first problem; `Check` then reports them all.

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    kafka: Option<Typed<Section<RawKafka>>>,
    rules: Option<Typed<Section<RawRules>>>,
    http: Option<Typed<Section<RawHttp>>>,
    engine: Option<Typed<Section<RawEngine>>>,
    review: Option<Typed<Section<RawReview>>>,
    gateway: Option<Typed<Section<RawGateway>>>,
    integrity: Option<Typed<Section<RawIntegrity>>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    listen: Option<Typed<String>>,
    metrics_listen: Option<Typed<String>>,
    default_wait: Option<Typed<String>>,
    max_wait: Option<Typed<String>>,
    max_body_bytes: Option<Typed<i64>>,
    cache_entries: Option<Typed<i64>>,
    cache_age: Option<Typed<String>>,
    rate: Option<Typed<i64>>,
    burst: Option<Typed<i64>>,
    max_waiting: Option<Typed<i64>>,
    trusted_proxies: Option<Typed<Vec<String>>>,
    max_connections: Option<Typed<i64>>,
    max_connections_per_client: Option<Typed<i64>>,
    header_timeout: Option<Typed<String>>,
    keys: Option<Typed<Vec<Typed<Section<RawApiKey>>>>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApiKey {
    agent: Option<Typed<String>>,
    sha256: Option<Typed<String>>,
    /// A plain-text key: known only to be refused, and never kept.
    key: Option<IgnoredAny>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntegrity {
    keys: Option<Typed<Vec<Typed<Section<RawIntegrityKey>>>>>,
    current: Option<Typed<String>>,
    require: Option<Typed<bool>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntegrityKey {
    id: Option<Typed<String>>,
    secret_file: Option<Typed<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafka {
    brokers: Option<Typed<String>>,
    group_id: Option<Typed<String>>,
    intents_topic: Option<Typed<String>>,
    decisions_topic: Option<Typed<String>>,
    dead_letter_topic: Option<Typed<String>>,
    transactional_id: Option<Typed<String>>,
    commit_interval: Option<Typed<String>>,
    commit_max_records: Option<Typed<i64>>,
    create_topics: Option<Typed<bool>>,
    partitions: Option<Typed<i64>>,
    replication_factor: Option<Typed<i64>>,
    partition_key: Option<Typed<String>>,
    /// Any property name: not a [`Section`].
    librdkafka: Option<Typed<BTreeMap<String, Typed<Property>>>>,
}

/// A librdkafka property as written; numbers and booleans are passed on as their text.
#[derive(Deserialize)]
#[serde(untagged)]
enum Property {
    Text(String),
    Integer(i64),
    Boolean(bool),
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    dir: Option<Typed<String>>,
    watch: Option<Typed<bool>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<Typed<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    max_intent_bytes: Option<Typed<i64>>,
    duplicate_horizon: Option<Typed<String>>,
    max_future_skew: Option<Typed<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReview {
    listen: Option<Typed<String>>,
    expire_after: Option<Typed<String>>,
    session_ttl: Option<Typed<String>>,
    secure_cookies: Option<Typed<bool>>,
    metrics_listen: Option<Typed<String>>,
    allowed_hosts: Option<Typed<Vec<String>>>,
    trusted_proxies: Option<Typed<Vec<String>>>,
    max_connections: Option<Typed<i64>>,
    max_connections_per_client: Option<Typed<i64>>,
    header_timeout: Option<Typed<String>>,
    reviewers: Option<Typed<Vec<Typed<Section<RawReviewer>>>>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReviewer {
    name: Option<Typed<String>>,
    role: Option<Typed<String>>,
    secret_hash: Option<Typed<String>>,
    agents: Option<Typed<Vec<String>>>,
    /// A plain-text secret: known only to be refused, and never kept.
    secret: Option<IgnoredAny>,
}

/// A value as written: of the type `T` reads, or not, and then kept for the message.
/// (Serde's own type error would end the deserializing.)
enum Typed<T> {
    Ok(T),
    Wrong(Value),
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Typed<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        let datetime = matches!(&value, Value::Table(t) if marked_datetime(t).is_some());
        if !datetime {
            if let Ok(v) = T::deserialize(value.clone()) {
                return Ok(Typed::Ok(v));
            }
        }
        Ok(Typed::Wrong(unmark_datetimes(value)))
    }
}

/// A table as written: its keys that `T` declares, read by serde, and the others, each a
/// problem. `deny_unknown_fields` would report only the first, so they are taken out first.
#[derive(Default)]
struct Section<T> {
    known: T,
    unknown: Vec<String>,
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Section<T> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut table = Table::deserialize(deserializer)?;
        let keys = declared_keys::<T>();
        let unknown: Vec<String> = table
            .keys()
            .filter(|k| !keys.contains(&k.as_str()))
            .cloned()
            .collect();
        for key in &unknown {
            table.remove(key);
        }
        let known = T::deserialize(Value::Table(table)).map_err(de::Error::custom)?;
        Ok(Section { known, unknown })
    }
}

/// The keys of the struct `T`, as its derived `Deserialize` hands them to
/// `deserialize_struct`: the raw shape is the one list of them.
fn declared_keys<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Keys<'k>(&'k mut &'static [&'static str]);

    impl<'de> de::Deserializer<'de> for Keys<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("only its keys are wanted"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }

    let mut keys: &'static [&'static str] = &[];
    let _ = T::deserialize(Keys(&mut keys));
    keys
}

/// `toml::Value` hands serde a datetime as its text, which a string key would take; no key
/// takes a datetime. So before deserializing, each datetime becomes a table holding its text
/// under this key, which no raw type takes, and [`Typed`] turns it back for the message.
const DATETIME_MARK: &str = "\u{0}datetime";

fn mark_datetimes(value: Value) -> Value {
    match value {
        Value::Datetime(d) => Value::Table(Table::from_iter([(
            DATETIME_MARK.to_owned(),
            Value::String(d.to_string()),
        )])),
        Value::Array(items) => Value::Array(items.into_iter().map(mark_datetimes).collect()),
        Value::Table(t) => {
            Value::Table(t.into_iter().map(|(k, v)| (k, mark_datetimes(v))).collect())
        }
        other => other,
    }
}

fn unmark_datetimes(value: Value) -> Value {
    match value {
        Value::Table(t) => match marked_datetime(&t) {
            Some(d) => Value::Datetime(d),
            None => Value::Table(
                t.into_iter()
                    .map(|(k, v)| (k, unmark_datetimes(v)))
                    .collect(),
            ),
        },
        Value::Array(items) => Value::Array(items.into_iter().map(unmark_datetimes).collect()),
        other => other,
    }
}

fn marked_datetime(table: &Table) -> Option<Datetime> {
    match table.get(DATETIME_MARK) {
        Some(Value::String(text)) if table.len() == 1 => text.parse().ok(),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Validation: the raw shape to a `Config`, with defaults, every problem in the order of the
// keys above.

struct Check<'p> {
    problems: &'p mut Vec<String>,
    purpose: Purpose,
    /// Durations as written, by `section.key`.
    written: BTreeMap<String, String>,
    /// The configuration file's directory: relative key files are found there.
    base: PathBuf,
}

impl Check<'_> {
    fn config(&mut self, root: Section<RawConfig>) -> Config {
        let raw = root.known;
        let kafka = self.section(raw.kafka, "kafka");
        let rules = self.section(raw.rules, "rules");
        let http = self.section(raw.http, "http");
        let engine = self.section(raw.engine, "engine");
        let review = self.section(raw.review, "review");
        let gateway = self.section(raw.gateway, "gateway");
        let integrity = self.section(raw.integrity, "integrity");
        self.unknown(root.unknown, "");
        let (integrity, integrity_files) = self.integrity(integrity);
        let kafka = self.kafka(kafka);
        let rules = self.rules(rules);
        let http = self.http(http);
        let engine = self.engine(engine);
        let review = self.review(review);
        let gateway = self.gateway(gateway, &engine);
        Config {
            kafka,
            rules,
            http,
            engine,
            review,
            gateway,
            written: std::mem::take(&mut self.written),
            integrity,
            integrity_files,
        }
    }

    /// `[integrity]`: the keys (read from their files), which one signs, and whether
    /// readers require a MAC; and the key files by id.
    fn integrity(&mut self, section: Section<RawIntegrity>) -> (Integrity, Vec<(String, PathBuf)>) {
        let r = section.known;
        let items = self
            .typed(r.keys, "integrity.keys", |_| {
                "must be an array of tables such as [{ id = \"k1\", secret_file = \"secrets/k1\" }]"
                    .to_owned()
            })
            .unwrap_or_default();
        let mut keys = BTreeMap::new();
        let mut declared = std::collections::BTreeSet::new();
        let mut files = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let at = format!("integrity.keys[{i}]");
            let Some(item) = self.typed(Some(item), &at, |_| {
                "must be a table with `id` and `secret_file`".to_owned()
            }) else {
                continue;
            };
            let k = item.known;
            self.unknown(item.unknown, &at);
            let id = self.string(k.id, &at, "id").unwrap_or_default();
            let valid_id = !id.is_empty()
                && id.len() <= 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !valid_id {
                self.problems.push(format!(
                    "{at}.id: `{id}` is not a key id (1 to 32 letters, digits, `-`, `_` or `.`)"
                ));
                continue;
            }
            if !declared.insert(id.clone()) {
                self.problems
                    .push(format!("{at}.id: `{id}` is configured twice"));
                continue;
            }
            let Some(file) = self.string(k.secret_file, &at, "secret_file") else {
                self.problems.push(format!(
                    "{at}.secret_file: required: a file of at least {MIN_SECRET_BYTES} random bytes (e.g. `head -c 32 /dev/urandom > secrets/{id}`)"
                ));
                continue;
            };
            let path = self.base.join(&file);
            match std::fs::read(&path) {
                Ok(mut bytes) => {
                    // A secret written with a trailing newline means the line.
                    if bytes.last() == Some(&b'\n') {
                        bytes.pop();
                    }
                    if bytes.len() < MIN_SECRET_BYTES {
                        self.problems.push(format!(
                            "{at}.secret_file: `{file}` holds {} bytes; a key needs at least {MIN_SECRET_BYTES} random bytes",
                            bytes.len()
                        ));
                        continue;
                    }
                    keys.insert(id.clone(), Secret::new(&bytes));
                    files.push((id, path));
                }
                Err(e) => self.problems.push(format!(
                    "{at}.secret_file: cannot read `{}`: {e}",
                    path.display()
                )),
            }
        }
        let current = self.string(r.current, "integrity", "current");
        let require = self
            .boolean(r.require, "integrity", "require")
            .unwrap_or(false);
        let keys = match current {
            Some(c) if keys.contains_key(&c) => Some(Keys::new(keys, c)),
            // Its file is unusable: said above.
            Some(c) if declared.contains(&c) => None,
            Some(c) => {
                self.problems.push(format!(
                    "integrity.current: `{c}` is not among integrity.keys"
                ));
                None
            }
            None if keys.is_empty() => None,
            None => {
                self.problems.push(
                    "integrity.current: required with integrity.keys: the id of the key that signs"
                        .to_owned(),
                );
                None
            }
        };
        if require && keys.is_none() && self.problems.is_empty() {
            self.problems.push(
                "integrity.require: true needs integrity.keys and integrity.current to check records with"
                    .to_owned(),
            );
        }
        self.unknown(section.unknown, "integrity");
        (Integrity { keys, require }, files)
    }

    fn kafka(&mut self, section: Section<RawKafka>) -> Kafka {
        let k = section.known;
        let librdkafka = self
            .typed(k.librdkafka, "kafka.librdkafka", |_| {
                "must be a table".to_owned()
            })
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(key, value)| {
                let value = match value {
                    Typed::Ok(Property::Text(s)) => s,
                    Typed::Ok(Property::Integer(i)) => i.to_string(),
                    Typed::Ok(Property::Boolean(b)) => b.to_string(),
                    Typed::Wrong(_) => {
                        self.problems.push(format!(
                            "kafka.librdkafka.{key}: must be a string, number or boolean"
                        ));
                        return None;
                    }
                };
                Some((key, value))
            })
            .collect();
        let s = |c: &mut Self, value: Option<Typed<String>>, key: &str, default: &str| {
            c.string(value, "kafka", key)
                .unwrap_or_else(|| default.to_owned())
        };
        let kafka = Kafka {
            brokers: s(self, k.brokers, "brokers", "127.0.0.1:9092"),
            group_id: s(self, k.group_id, "group_id", "riskgate"),
            intents_topic: s(self, k.intents_topic, "intents_topic", "intents"),
            decisions_topic: s(self, k.decisions_topic, "decisions_topic", "decisions"),
            dead_letter_topic: s(
                self,
                k.dead_letter_topic,
                "dead_letter_topic",
                "intents.dlq",
            ),
            transactional_id: s(self, k.transactional_id, "transactional_id", ""),
            commit_interval: self
                .duration(k.commit_interval, "kafka", "commit_interval")
                .and_then(|d| d.to_std().ok())
                .unwrap_or(Duration::from_millis(100)),
            commit_max_records: self
                .positive(k.commit_max_records, "kafka", "commit_max_records")
                .unwrap_or(10_000) as usize,
            create_topics: self
                .boolean(k.create_topics, "kafka", "create_topics")
                .unwrap_or(false),
            partitions: self
                .positive(k.partitions, "kafka", "partitions")
                .map_or(3, |p| p.min(i32::MAX as u64) as i32),
            replication_factor: self
                .positive(k.replication_factor, "kafka", "replication_factor")
                .map_or(1, |p| p.min(i32::MAX as u64) as i32),
            partition_key: self
                .string(k.partition_key, "kafka", "partition_key")
                .and_then(|text| {
                    let path = FieldPath::parse(&text);
                    if path.is_none() {
                        self.problems.push(format!(
                            "kafka.partition_key: `{text}` is not an intent field; use `account_id`, `agent_id`, `intent_id`, `action`, `currency`, `counterparty.<field>` or `attributes.<path>`"
                        ));
                    }
                    path
                })
                .unwrap_or(FieldPath::Field(Field::AccountId)),
            librdkafka,
        };
        self.unknown(section.unknown, "kafka");
        for (key, value) in [
            ("brokers", &kafka.brokers),
            ("group_id", &kafka.group_id),
            ("intents_topic", &kafka.intents_topic),
            ("decisions_topic", &kafka.decisions_topic),
            ("dead_letter_topic", &kafka.dead_letter_topic),
        ] {
            if value.trim().is_empty() {
                self.problems
                    .push(format!("kafka.{key}: must not be empty"));
            }
        }
        if self.purpose == Purpose::Run && kafka.transactional_id.trim().is_empty() {
            self.problems.push(
                "kafka.transactional_id: required, stable and unique per instance (e.g. \"riskgate-a\"), so that a restarted instance fences its previous self"
                    .to_owned(),
            );
        }
        let topics = [
            &kafka.intents_topic,
            &kafka.decisions_topic,
            &kafka.dead_letter_topic,
        ];
        if topics[0] == topics[1] || topics[0] == topics[2] || topics[1] == topics[2] {
            self.problems.push(
                "kafka: intents_topic, decisions_topic and dead_letter_topic must be three different topics"
                    .to_owned(),
            );
        }
        for reserved in [
            "bootstrap.servers",
            "group.id",
            "transactional.id",
            "enable.auto.commit",
            "isolation.level",
        ] {
            if kafka.librdkafka.contains_key(reserved) {
                self.problems.push(format!(
                    "kafka.librdkafka.{reserved}: set by riskgate itself (use the [kafka] keys)"
                ));
            }
        }
        kafka
    }

    fn rules(&mut self, section: Section<RawRules>) -> Rules {
        let r = section.known;
        let rules = Rules {
            dir: self
                .string(r.dir, "rules", "dir")
                .map_or_else(|| PathBuf::from("rules"), PathBuf::from),
            watch: self.boolean(r.watch, "rules", "watch").unwrap_or(true),
        };
        self.unknown(section.unknown, "rules");
        rules
    }

    fn http(&mut self, section: Section<RawHttp>) -> Http {
        let listen = self
            .string(section.known.listen, "http", "listen")
            .unwrap_or_else(|| "127.0.0.1:9464".to_owned());
        let http = Http {
            listen: listen.parse().unwrap_or_else(|_| {
                self.problems.push(format!(
                    "http.listen: `{listen}` is not an address with a port (e.g. \"127.0.0.1:9464\")"
                ));
                SocketAddr::from(([127, 0, 0, 1], 9464))
            }),
        };
        self.unknown(section.unknown, "http");
        http
    }

    fn engine(&mut self, section: Section<RawEngine>) -> Engine {
        let e = section.known;
        let engine = Engine {
            max_intent_bytes: self
                .positive(e.max_intent_bytes, "engine", "max_intent_bytes")
                .map_or(DEFAULT_MAX_BYTES, |n| n as usize),
            duplicate_horizon: self
                .duration(e.duplicate_horizon, "engine", "duplicate_horizon")
                .unwrap_or(TimeDelta::hours(24)),
            max_future_skew: match e.max_future_skew {
                Some(Typed::Ok(s)) if s == "off" => None,
                other => Some(
                    self.duration(other, "engine", "max_future_skew")
                        .unwrap_or(TimeDelta::minutes(5)),
                ),
            },
        };
        self.unknown(section.unknown, "engine");
        engine
    }

    fn review(&mut self, section: Section<RawReview>) -> Review {
        let r = section.known;
        let listen = self.address(r.listen, "review", "listen", ([127, 0, 0, 1], 9465));
        let expire_after = self
            .duration(r.expire_after, "review", "expire_after")
            .unwrap_or(TimeDelta::hours(24));
        let session_ttl = self
            .duration(r.session_ttl, "review", "session_ttl")
            .unwrap_or(TimeDelta::hours(8));
        let secure_cookies = self
            .boolean(r.secure_cookies, "review", "secure_cookies")
            .unwrap_or(true);
        if !secure_cookies && !listen.ip().is_loopback() {
            self.problems.push(format!(
                "review.secure_cookies: false sends the session cookie over plain HTTP, allowed only on a loopback address, not `{listen}`: serve the page over HTTPS (a TLS proxy) and keep it true"
            ));
        }
        let metrics_listen = self.optional_address(r.metrics_listen, "review", "metrics_listen");
        let allowed_hosts = self
            .typed(r.allowed_hosts, "review.allowed_hosts", |_| {
                "must be an array of host names".to_owned()
            })
            .unwrap_or_default()
            .into_iter()
            // Compared without a port, as the Host header is.
            .map(|h| crate::server::host_name(&h).to_ascii_lowercase())
            .collect();
        let limits = self.limits(
            "review",
            r.trusted_proxies,
            r.max_connections,
            r.max_connections_per_client,
            r.header_timeout,
        );
        let items = self
            .typed(r.reviewers, "review.reviewers", |_| {
                "must be an array of tables ([[review.reviewers]])".to_owned()
            })
            .unwrap_or_default();
        let mut reviewers: Vec<Reviewer> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let at = format!("review.reviewers[{i}]");
            let Some(reviewer) = self.typed(Some(item), &at, |_| {
                "must be a table with `name`, `role` and `secret_hash`".to_owned()
            }) else {
                continue;
            };
            let reviewer = self.reviewer(reviewer, &at, &reviewers);
            reviewers.push(reviewer);
        }
        if self.purpose == Purpose::Review && reviewers.is_empty() {
            self.problems.push(
                "review.reviewers: at least one reviewer is required; add a [[review.reviewers]] table with `name`, `role` and `secret_hash`"
                    .to_owned(),
            );
        }
        self.unknown(section.unknown, "review");
        Review {
            listen,
            expire_after,
            session_ttl,
            secure_cookies,
            reviewers,
            metrics_listen,
            allowed_hosts,
            limits,
        }
    }

    /// An address with a port, `default` when not given.
    fn address(
        &mut self,
        value: Option<Typed<String>>,
        section: &str,
        key: &str,
        default: ([u8; 4], u16),
    ) -> SocketAddr {
        self.optional_address(value, section, key)
            .unwrap_or_else(|| SocketAddr::from(default))
    }

    /// An address with a port, if given (and valid: else a problem).
    fn optional_address(
        &mut self,
        value: Option<Typed<String>>,
        section: &str,
        key: &str,
    ) -> Option<SocketAddr> {
        let text = self.string(value, section, key)?;
        match text.parse() {
            Ok(a) => Some(a),
            Err(_) => {
                self.problems.push(format!(
                    "{section}.{key}: `{text}` is not an address with a port (e.g. \"127.0.0.1:9465\")"
                ));
                None
            }
        }
    }

    /// The connection limits of a listener's section, and its trusted proxies.
    fn limits(
        &mut self,
        section: &str,
        trusted_proxies: Option<Typed<Vec<String>>>,
        max_connections: Option<Typed<i64>>,
        per_client: Option<Typed<i64>>,
        header_timeout: Option<Typed<String>>,
    ) -> crate::server::Limits {
        let trusted_proxies = self
            .typed(
                trusted_proxies,
                &format!("{section}.trusted_proxies"),
                |_| "must be an array of IP addresses".to_owned(),
            )
            .unwrap_or_default()
            .into_iter()
            .filter_map(|p| match p.parse() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    self.problems.push(format!(
                        "{section}.trusted_proxies: `{p}` is not an IP address"
                    ));
                    None
                }
            })
            .collect();
        let defaults = crate::server::Limits::default();
        crate::server::Limits {
            max_connections: self
                .positive(max_connections, section, "max_connections")
                .map_or(defaults.max_connections, |n| n as usize),
            per_client: self
                .positive(per_client, section, "max_connections_per_client")
                .map_or(defaults.per_client, |n| n as usize),
            header_timeout: self
                .duration(header_timeout, section, "header_timeout")
                .and_then(|d| d.to_std().ok())
                .unwrap_or(defaults.header_timeout),
            trusted_proxies,
        }
    }

    fn gateway(&mut self, section: Section<RawGateway>, engine: &Engine) -> Gateway {
        let g = section.known;
        let listen = self.address(g.listen, "gateway", "listen", ([127, 0, 0, 1], 9467));
        let metrics_listen = self.optional_address(g.metrics_listen, "gateway", "metrics_listen");
        let default_wait = self
            .duration(g.default_wait, "gateway", "default_wait")
            .unwrap_or(TimeDelta::seconds(2));
        let max_wait = self
            .duration(g.max_wait, "gateway", "max_wait")
            .unwrap_or(TimeDelta::seconds(30));
        if default_wait > max_wait {
            self.problems.push(format!(
                "gateway.default_wait: {} is longer than gateway.max_wait ({})",
                format_duration(default_wait),
                format_duration(max_wait)
            ));
        }
        let count = |c: &mut Self, v, key, default: usize| {
            c.positive(v, "gateway", key)
                .map_or(default, |n| usize::try_from(n).unwrap_or(usize::MAX))
        };
        // A signed intent (a JWS) is about a third larger than the intent it carries.
        let max_body_bytes = count(
            self,
            g.max_body_bytes,
            "max_body_bytes",
            engine.max_intent_bytes * 2,
        );
        let cache_entries = count(self, g.cache_entries, "cache_entries", 100_000);
        let cache_age = self
            .duration(g.cache_age, "gateway", "cache_age")
            .unwrap_or(TimeDelta::minutes(10));
        let rate = count(self, g.rate, "rate", 200);
        let burst = count(self, g.burst, "burst", rate.saturating_mul(2));
        let max_waiting = count(self, g.max_waiting, "max_waiting", 4096);
        let limits = self.limits(
            "gateway",
            g.trusted_proxies,
            g.max_connections,
            g.max_connections_per_client,
            g.header_timeout,
        );
        let items = self
            .typed(g.keys, "gateway.keys", |_| {
                "must be an array of tables ([[gateway.keys]])".to_owned()
            })
            .unwrap_or_default();
        let mut keys: Vec<ApiKey> = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let at = format!("gateway.keys[{i}]");
            let Some(item) = self.typed(Some(item), &at, |_| {
                "must be a table with `agent` and `sha256`".to_owned()
            }) else {
                continue;
            };
            let k = item.known;
            self.unknown(item.unknown, &at);
            if k.key.is_some() {
                self.problems.push(format!(
                    "{at}.key: keys are never stored in plain text; put the `sha256` that `riskgate gateway-key` printed"
                ));
            }
            let agent = self.string(k.agent, &at, "agent").unwrap_or_default();
            if agent.trim().is_empty() || agent.chars().any(char::is_control) {
                self.problems.push(format!(
                    "{at}.agent: {agent:?} is not an agent id (not blank, no control characters)"
                ));
            }
            let hash = self.string(k.sha256, &at, "sha256").unwrap_or_default();
            let Some(sha256) = hex32(&hash) else {
                self.problems.push(format!(
                    "{at}.sha256: not the 64 hex digits of a SHA-256; make a key with `riskgate gateway-key --agent {agent}`"
                ));
                continue;
            };
            if keys.iter().any(|k| k.sha256 == sha256) {
                self.problems.push(format!(
                    "{at}.sha256: the same key is configured twice; a key speaks for one agent"
                ));
                continue;
            }
            keys.push(ApiKey { agent, sha256 });
        }
        if self.purpose == Purpose::Gateway && keys.is_empty() {
            self.problems.push(
                "gateway.keys: at least one key is required; make one with `riskgate gateway-key --agent AGENT_ID` and add the [[gateway.keys]] table it prints"
                    .to_owned(),
            );
        }
        self.unknown(section.unknown, "gateway");
        Gateway {
            listen,
            metrics_listen,
            default_wait,
            max_wait,
            max_body_bytes,
            cache_entries,
            cache_age,
            rate: u32::try_from(rate).unwrap_or(u32::MAX),
            burst: u32::try_from(burst).unwrap_or(u32::MAX),
            max_waiting,
            limits,
            keys,
        }
    }

    /// One `[[review.reviewers]]` table, at `at`; `before` are the ones above it.
    fn reviewer(
        &mut self,
        section: Section<RawReviewer>,
        at: &str,
        before: &[Reviewer],
    ) -> Reviewer {
        let r = section.known;
        if r.secret.is_some() {
            self.problems.push(format!(
                "{at}.secret: secrets are never stored in plain text; put the output of `riskgate hash-secret` in `secret_hash`"
            ));
        }
        let name = self.string(r.name, at, "name").unwrap_or_default();
        if !is_reviewer_name(&name) {
            self.problems.push(format!(
                "{at}.name: `{name}` is not a reviewer name (1 to 64 letters, digits, `.`, `_`, `-` or `@`)"
            ));
        } else if let Some(x) = before
            .iter()
            .find(|x| crate::review::queue::same_person(&x.name, &name))
        {
            self.problems.push(if x.name == name {
                format!("{at}.name: `{name}` is configured twice")
            } else {
                format!(
                    "{at}.name: `{name}` and `{}` are one name to riskgate (names compare ignoring case and look-alike characters, such as 1 and l): give each person a distinct name",
                    x.name
                )
            });
        }
        let role = match self.string(r.role, at, "role").as_deref() {
            Some("viewer") => Role::Viewer,
            Some("approver") => Role::Approver,
            other => {
                self.problems.push(format!(
                    "{at}.role: must be \"viewer\" or \"approver\", not {}",
                    other.map_or("missing".to_owned(), |o| format!("`{o}`"))
                ));
                Role::Viewer
            }
        };
        let secret_hash = self
            .string(r.secret_hash, at, "secret_hash")
            .unwrap_or_default();
        match argon2::PasswordHash::new(&secret_hash) {
            Ok(h) if h.algorithm.as_str().starts_with("argon2") => {}
            _ => self.problems.push(format!(
                "{at}.secret_hash: not an Argon2 hash in PHC format (`$argon2id$v=19$...`); make one with `riskgate hash-secret`"
            )),
        }
        let agents = self
            .typed(r.agents, &format!("{at}.agents"), |_| {
                "must be an array of agent ids".to_owned()
            })
            .unwrap_or_default();
        for (i, agent) in agents.iter().enumerate() {
            if agent.trim().is_empty() || agent.chars().any(char::is_control) {
                self.problems.push(format!(
                    "{at}.agents[{i}]: {agent:?} is not an agent id (not blank, no control characters)"
                ));
            }
        }
        self.unknown(section.unknown, at);
        Reviewer {
            name,
            role,
            secret_hash,
            agents,
        }
    }

    /// The value of a key, or `None` when it is missing, or wrong: then `must` says what it
    /// must be (from the value, which must not be shown if it may be a secret).
    fn typed<T>(
        &mut self,
        value: Option<Typed<T>>,
        at: &str,
        must: impl FnOnce(&Value) -> String,
    ) -> Option<T> {
        match value? {
            Typed::Ok(v) => Some(v),
            Typed::Wrong(other) => {
                self.problems.push(format!("{at}: {}", must(&other)));
                None
            }
        }
    }

    /// A section (an empty one when it is missing, or not a table: a problem).
    fn section<T: Default>(&mut self, value: Option<Typed<Section<T>>>, at: &str) -> Section<T> {
        self.typed(value, at, |_| "must be a table".to_owned())
            .unwrap_or_default()
    }

    fn unknown(&mut self, keys: Vec<String>, section: &str) {
        for key in keys {
            let at = if section.is_empty() {
                key
            } else {
                format!("{section}.{key}")
            };
            self.problems.push(format!("{at}: unknown key"));
        }
    }

    fn string(&mut self, value: Option<Typed<String>>, section: &str, key: &str) -> Option<String> {
        self.typed(value, &format!("{section}.{key}"), |v| {
            format!("must be a string, not {}", v.type_str())
        })
    }

    fn boolean(&mut self, value: Option<Typed<bool>>, section: &str, key: &str) -> Option<bool> {
        self.typed(value, &format!("{section}.{key}"), |v| {
            format!("must be true or false, not {}", v.type_str())
        })
    }

    fn positive(&mut self, value: Option<Typed<i64>>, section: &str, key: &str) -> Option<u64> {
        let must = |v: &Value| format!("must be a positive integer, not {v}");
        match self.typed(value, &format!("{section}.{key}"), must)? {
            i if i > 0 => Some(i as u64),
            i => {
                self.problems
                    .push(format!("{section}.{key}: {}", must(&Value::Integer(i))));
                None
            }
        }
    }

    fn duration(
        &mut self,
        value: Option<Typed<String>>,
        section: &str,
        key: &str,
    ) -> Option<TimeDelta> {
        let text = self.string(value, section, key)?;
        match parse_duration(&text) {
            Ok(d) if d > TimeDelta::zero() => {
                self.written.insert(format!("{section}.{key}"), text);
                Some(d)
            }
            Ok(_) => {
                self.problems
                    .push(format!("{section}.{key}: must be longer than zero"));
                None
            }
            Err(e) => {
                self.problems.push(format!("{section}.{key}: {e}"));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// The example file, beside the key file it names (`secrets/k1`, as its comment says to
    /// make one).
    fn example() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("riskgate.toml");
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("riskgate.example.toml"),
            &path,
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/k1"), [7u8; 32]).unwrap();
        (dir, path)
    }

    #[test]
    fn the_example_file_loads() {
        let (_dir, path) = example();
        let c = Config::load(&path, env(&[])).unwrap();
        assert!(c.integrity.require, "the example requires signed records");
        assert_eq!(c.integrity.keys.as_ref().map(|k| k.current()), Some("k1"));
        assert_eq!(c.kafka.commit_interval, Duration::from_millis(100));
        assert_eq!(c.kafka.intents_topic, "intents");
        assert_eq!(c.http.listen.port(), 9464);
    }

    #[test]
    fn the_partition_key_is_an_intent_field_account_id_by_default() {
        let base = "[kafka]\nbrokers = \"a:1\"\ntransactional_id = \"t\"\n";
        let c = Config::parse(base, "x.toml", env(&[])).unwrap();
        assert_eq!(c.kafka.partition_key, FieldPath::Field(Field::AccountId));
        let c = Config::parse(
            &format!("{base}partition_key = \"counterparty.id\"\n"),
            "x.toml",
            env(&[]),
        )
        .unwrap();
        assert_eq!(c.kafka.partition_key.to_string(), "counterparty.id");
        let c = Config::parse(
            base,
            "x.toml",
            env(&[("RISKGATE__KAFKA__PARTITION_KEY", "agent_id")]),
        )
        .unwrap();
        assert_eq!(c.kafka.partition_key, FieldPath::Field(Field::AgentId));
        let e = Config::parse(
            &format!("{base}partition_key = \"colour\"\n"),
            "x.toml",
            env(&[]),
        )
        .unwrap_err();
        assert!(
            e.problems[0].starts_with("kafka.partition_key: `colour` is not an intent field"),
            "{:?}",
            e.problems
        );
    }

    #[test]
    fn durations_print_as_written_and_read_back_the_same() {
        let text = "[kafka]\ntransactional_id = \"t\"\ncommit_interval = \"250ms\"\n[engine]\nduplicate_horizon = \"24h\"\n";
        let c = Config::parse(
            text,
            "d.toml",
            env(&[("RISKGATE__REVIEW__EXPIRE_AFTER", "90m")]),
        )
        .unwrap();
        let shown = c.to_string();
        for line in [
            "commit_interval = \"250ms\"",
            "duplicate_horizon = \"24h\"",
            "expire_after = \"90m\"",
            // Not written: the default, in its largest whole unit.
            "max_future_skew = \"5m\"",
        ] {
            assert!(shown.contains(line), "no `{line}` in:\n{shown}");
        }
        let again = Config::parse(&shown, "shown.toml", env(&[])).unwrap();
        assert_eq!(again.to_string(), shown);
        assert_eq!(again.engine, c.engine);
    }

    #[test]
    fn integrity_keys_are_read_checked_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("k1"),
            "a line of text that is long enough\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("short"), "too short").unwrap();
        let name = dir.path().join("c.toml").display().to_string();
        let base = "[kafka]\ntransactional_id = \"t\"\n";
        let c = Config::parse(
            &format!("{base}[integrity]\nkeys = [{{ id = \"k1\", secret_file = \"k1\" }}]\ncurrent = \"k1\"\nrequire = true\n"),
            &name,
            env(&[]),
        )
        .unwrap();
        assert_eq!(c.integrity.keys.as_ref().map(|k| k.current()), Some("k1"));
        let shown = c.to_string();
        assert!(shown.contains("current = \"k1\""), "{shown}");
        assert!(!shown.contains("long enough"), "{shown}");
        assert!(!format!("{c:?}").contains("long enough"));
        let e = Config::parse(
            &format!("{base}[integrity]\nkeys = [{{ id = \"k1\", secret_file = \"short\" }}, {{ id = \"k 2\", secret_file = \"k1\" }}, {{ id = \"k3\", secret_file = \"nowhere\" }}]\ncurrent = \"k9\"\n"),
            &name,
            env(&[]),
        )
        .unwrap_err();
        let all = e.problems.join("\n");
        for want in [
            "integrity.keys[0].secret_file: `short` holds 9 bytes; a key needs at least 32 random bytes",
            "integrity.keys[1].id: `k 2` is not a key id",
            "integrity.keys[2].secret_file: cannot read",
            "integrity.current: `k9` is not among integrity.keys",
        ] {
            assert!(all.contains(want), "no {want:?} in:\n{all}");
        }
        // The current key's file missing is said once, not again as an unknown id.
        let e = Config::parse(
            &format!("{base}[integrity]\nkeys = [{{ id = \"k3\", secret_file = \"nowhere\" }}]\ncurrent = \"k3\"\nrequire = true\n"),
            &name,
            env(&[]),
        )
        .unwrap_err();
        assert_eq!(e.problems.len(), 1, "{:?}", e.problems);
        let e = Config::parse(
            &format!("{base}[integrity]\nrequire = true\n"),
            &name,
            env(&[]),
        )
        .unwrap_err();
        assert!(e.problems[0].starts_with("integrity.require: true needs integrity.keys"));
        // Without the section: nothing signed, nothing required.
        let c = Config::parse(base, &name, env(&[])).unwrap();
        assert_eq!(c.integrity, Integrity::default());
    }

    #[test]
    fn the_example_file_configures_a_reviewer() {
        let (_dir, path) = example();
        let c = Config::load_for(&path, env(&[]), Purpose::Review).unwrap();
        assert_eq!(c.review.listen.port(), 9465);
        assert_eq!(c.review.expire_after, TimeDelta::hours(24));
        assert_eq!(c.review.reviewers[0].name, "alice");
        assert_eq!(c.review.reviewers[0].role, Role::Approver);
        let shown = c.to_string();
        assert!(shown.contains("secret_hash = \"<redacted>\""), "{shown}");
        assert!(!shown.contains("$argon2id$"), "{shown}");
        assert!(!format!("{:?}", c.review.reviewers[0]).contains("$argon2id$"));
        // The secret README.md and docs/review.md use signs the example reviewer in.
        let auth = crate::review::auth::Auth::new(
            &c.review.reviewers,
            std::time::Duration::from_secs(60),
            false,
        )
        .unwrap();
        assert!(auth.verify("alice", "a-long-secret-for-alice").is_some());
        assert!(auth.verify("alice", "a-long-secret-for-bob").is_none());
    }

    #[test]
    fn review_configuration_is_checked() {
        let text = r#"
[kafka]
brokers = "b:1"
[review]
listen = "nowhere"
expire_after = "soon"
colour = "blue"
[[review.reviewers]]
name = "bad name"
role = "boss"
secret = "hunter2"
secret_hash = "plain"
[[review.reviewers]]
name = "ok"
role = "viewer"
secret_hash = "$argon2id$v=19$m=19456,t=2,p=1$TYsaou2V1mJRInm7tCpEhA$T8mTjWOewGUZqRpO6a/eP6jhwYNMck3qrEqZeVKLdrY"
[[review.reviewers]]
name = "ok"
role = "viewer"
secret_hash = "$argon2id$v=19$m=19456,t=2,p=1$TYsaou2V1mJRInm7tCpEhA$T8mTjWOewGUZqRpO6a/eP6jhwYNMck3qrEqZeVKLdrY"
[[review.reviewers]]
name = "0K"
role = "viewer"
agents = ["bot", " "]
secret_hash = "$argon2id$v=19$m=19456,t=2,p=1$TYsaou2V1mJRInm7tCpEhA$T8mTjWOewGUZqRpO6a/eP6jhwYNMck3qrEqZeVKLdrY"
"#;
        let e = Config::parse_for(text, "r.toml", env(&[]), Purpose::Review).unwrap_err();
        assert_eq!(
            e.problems,
            [
                "review.listen: `nowhere` is not an address with a port (e.g. \"127.0.0.1:9465\")",
                "review.expire_after: `soon` is not a duration; write e.g. `100ms`, `30s`, `10m`, `1h30m`, `24h` or `30d`",
                "review.reviewers[0].secret: secrets are never stored in plain text; put the output of `riskgate hash-secret` in `secret_hash`",
                "review.reviewers[0].name: `bad name` is not a reviewer name (1 to 64 letters, digits, `.`, `_`, `-` or `@`)",
                "review.reviewers[0].role: must be \"viewer\" or \"approver\", not `boss`",
                "review.reviewers[0].secret_hash: not an Argon2 hash in PHC format (`$argon2id$v=19$...`); make one with `riskgate hash-secret`",
                "review.reviewers[2].name: `ok` is configured twice",
                "review.reviewers[3].name: `0K` and `ok` are one name to riskgate (names compare ignoring case and look-alike characters, such as 1 and l): give each person a distinct name",
                "review.reviewers[3].agents[1]: \" \" is not an agent id (not blank, no control characters)",
                "review.colour: unknown key",
            ]
        );
        // Review needs no transactional_id but at least one reviewer; run is the other way round.
        let e = Config::parse_for("", "e.toml", env(&[]), Purpose::Review).unwrap_err();
        assert_eq!(e.problems.len(), 1);
        assert!(e.problems[0].starts_with("review.reviewers: at least one reviewer is required"));
        let e = Config::parse("", "e.toml", env(&[])).unwrap_err();
        assert!(e.problems[0].starts_with("kafka.transactional_id: required"));
    }

    #[test]
    fn environment_overrides_win_and_are_typed() {
        let text = "[kafka]\nbrokers = \"a:1\"\ntransactional_id = \"t\"\n";
        let c = Config::parse(
            text,
            "x.toml",
            env(&[
                ("RISKGATE__KAFKA__BROKERS", "b:2,c:3"),
                ("RISKGATE__KAFKA__COMMIT_MAX_RECORDS", "500"),
                ("RISKGATE__KAFKA__LIBRDKAFKA__SASL.PASSWORD", "hunter2"),
                ("UNRELATED", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, "b:2,c:3");
        assert_eq!(c.kafka.commit_max_records, 500);
        assert_eq!(c.kafka.librdkafka["sasl.password"], "hunter2");
        let shown = c.to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("\"sasl.password\" = \"<redacted>\""),
            "{shown}"
        );
    }

    #[test]
    fn every_problem_is_reported() {
        let text = r#"
[kafka]
brokers = 9092
commit_interval = "soon"
partitions = 0
colour = "blue"
[kafka.librdkafka]
"group.id" = "x"
[http]
listen = "nowhere"
[engine]
duplicate_horizon = "0s"
"#;
        let e = Config::parse(text, "bad.toml", env(&[])).unwrap_err();
        assert_eq!(e.source_name, "bad.toml");
        let all = e.problems.join("\n");
        for expected in [
            "kafka.brokers: must be a string, not integer",
            "kafka.commit_interval:",
            "kafka.partitions: must be a positive integer",
            "kafka.colour: unknown key",
            "kafka.transactional_id: required",
            "kafka.librdkafka.group.id: set by riskgate itself",
            "http.listen: `nowhere` is not an address",
            "engine.duplicate_horizon: must be longer than zero",
        ] {
            assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
        }
        assert_eq!(e.problems.len(), 8, "{all}");
    }

    #[test]
    fn wrong_types_and_unknown_keys_are_named_where_they_are() {
        let text = r#"
colour = 1
rules = "rules"
[kafka]
transactional_id = "t"
brokers = 1979-05-27
partitions = 1.5
replication_factor = "2"
create_topics = "yes"
[kafka.librdkafka]
"linger.ms" = 5
"enable.idempotence" = true
"socket.timeout.ms" = 1.5
"sasl.password" = ["hunter2"]
[engine]
max_future_skew = 300
[review]
reviewers = [1, { name = "a", role = "viewer", secret_hash = 7, size = 1 }]
"#;
        let e = Config::parse(text, "w.toml", env(&[])).unwrap_err();
        assert_eq!(
            e.problems,
            [
                "rules: must be a table",
                "colour: unknown key",
                "kafka.librdkafka.sasl.password: must be a string, number or boolean",
                "kafka.librdkafka.socket.timeout.ms: must be a string, number or boolean",
                "kafka.brokers: must be a string, not datetime",
                "kafka.create_topics: must be true or false, not string",
                "kafka.partitions: must be a positive integer, not 1.5",
                "kafka.replication_factor: must be a positive integer, not \"2\"",
                "engine.max_future_skew: must be a string, not integer",
                "review.reviewers[0]: must be a table with `name`, `role` and `secret_hash`",
                "review.reviewers[1].secret_hash: must be a string, not integer",
                "review.reviewers[1].secret_hash: not an Argon2 hash in PHC format (`$argon2id$v=19$...`); make one with `riskgate hash-secret`",
                "review.reviewers[1].size: unknown key",
            ]
        );
        assert!(!e.to_string().contains("hunter2"), "{e}");
        // The same checks apply to what the environment sets.
        let e = Config::parse(
            "",
            "e.toml",
            env(&[
                ("RISKGATE__KAFKA__TRANSACTIONAL_ID", "1979-05-27"),
                ("RISKGATE__KAFKA__PARTITIONS", "-1"),
                ("RISKGATE__KAFKA__PARTITIONS__MAX", "2"),
                ("RISKGATE__ENGINE__COLOUR", "blue"),
            ]),
        )
        .unwrap_err();
        assert_eq!(
            e.problems,
            [
                "RISKGATE__KAFKA__PARTITIONS__MAX: `partitions` is not a table",
                "kafka.transactional_id (set by the environment variable `RISKGATE__KAFKA__TRANSACTIONAL_ID`): must be a string, not datetime",
                "kafka.partitions (set by the environment variable `RISKGATE__KAFKA__PARTITIONS`): must be a positive integer, not -1",
                "kafka.transactional_id (set by the environment variable `RISKGATE__KAFKA__TRANSACTIONAL_ID`): required, stable and unique per instance (e.g. \"riskgate-a\"), so that a restarted instance fences its previous self",
                "engine.colour (set by the environment variable `RISKGATE__ENGINE__COLOUR`): unknown key",
            ]
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output_and_errors() {
        let text = "[kafka]\ntransactional_id = \"t\"\n[kafka.librdkafka]\n\"sasl.password\" = \"hunter2\"\n\"sasl.username\" = \"u\"\n";
        let c = Config::parse(text, "s.toml", env(&[])).unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("\"sasl.password\": \"<redacted>\""),
            "{shown}"
        );
        assert!(shown.contains("\"sasl.username\": \"u\""), "{shown}");
        let text = "[[review.reviewers]]\nname = \"a\"\nrole = \"viewer\"\nsecret = \"hunter2\"\nsecret_hash = \"hunter2\"\n";
        let e = Config::parse_for(text, "s.toml", env(&[]), Purpose::Review).unwrap_err();
        assert_eq!(e.problems.len(), 2, "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(!format!("{e:?}").contains("hunter2"), "{e:?}");
    }

    #[test]
    fn secrets_are_recognised() {
        for p in [
            "sasl.password",
            "ssl.key.password",
            "sasl.oauthbearer.client.secret",
            "ssl.key.pem",
        ] {
            assert!(is_secret(p), "{p}");
        }
        for p in ["session.timeout.ms", "security.protocol", "sasl.username"] {
            assert!(!is_secret(p), "{p}");
        }
    }
}
