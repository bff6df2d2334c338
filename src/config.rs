//! The service's configuration (DESIGN section 5): a TOML file, then environment overrides
//! (`RISKGATE__KAFKA__BROKERS=...`), then validation that reports every problem at once.
//! Secrets (librdkafka properties such as `sasl.password`) never appear in output: the
//! `Display` of a [`Config`] redacts them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::TimeDelta;
use toml::{Table, Value};

use riskgate_core::expr::parse_duration;
use riskgate_core::intent::DEFAULT_MAX_BYTES;

/// The prefix of environment overrides; `__` separates the levels of a key.
pub const ENV_PREFIX: &str = "RISKGATE__";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub kafka: Kafka,
    pub rules: Rules,
    pub http: Http,
    pub engine: Engine,
    pub review: Review,
}

/// Which command reads the configuration: each requires the keys it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `riskgate run`: needs a `transactional_id`.
    Run,
    /// `riskgate review`: needs at least one reviewer.
    Review,
}

/// `riskgate review` (DESIGN section 6).
#[derive(Debug, Clone, PartialEq)]
pub struct Review {
    /// The review page, its API, `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
    /// A hold nobody reviews within this long (from its decision) is rejected by
    /// `system:expiry`.
    pub expire_after: TimeDelta,
    /// How long a browser session lasts after signing in.
    pub session_ttl: TimeDelta,
    /// Mark the session cookie `Secure` (set it when the page is served over HTTPS).
    pub secure_cookies: bool,
    pub reviewers: Vec<Reviewer>,
}

/// A person allowed to sign in to the review page.
#[derive(Clone, PartialEq)]
pub struct Reviewer {
    pub name: String,
    pub role: Role,
    /// An Argon2 hash in PHC format (`riskgate hash-secret` writes one); never the secret.
    pub secret_hash: String,
}

impl fmt::Debug for Reviewer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reviewer")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("secret_hash", &"<redacted>")
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

#[derive(Debug, Clone, PartialEq)]
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
    /// Passed to librdkafka as they are (security.protocol, SASL, TLS, timeouts...).
    pub librdkafka: BTreeMap<String, String>,
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
        for (var, value) in env {
            if let Some(path) = var.strip_prefix(ENV_PREFIX) {
                override_key(&mut table, path, &value, &var, &mut problems);
            }
        }
        let mut r = Reader {
            problems: &mut problems,
            purpose,
        };
        let config = r.config(table);
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(fail(problems))
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

/// Whether a librdkafka property holds a secret.
pub fn is_secret(property: &str) -> bool {
    let p = property.to_ascii_lowercase();
    ["password", "secret", "token", "key.pem", "ssl.key", "jaas"]
        .iter()
        .any(|s| p.contains(s))
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
        writeln!(
            f,
            "commit_interval = \"{}ms\"",
            k.commit_interval.as_millis()
        )?;
        writeln!(f, "commit_max_records = {}", k.commit_max_records)?;
        writeln!(f, "create_topics = {}", k.create_topics)?;
        writeln!(f, "partitions = {}", k.partitions)?;
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
            "duplicate_horizon = \"{}s\"",
            e.duplicate_horizon.num_seconds()
        )?;
        match e.max_future_skew {
            Some(s) => writeln!(f, "max_future_skew = \"{}s\"", s.num_seconds())?,
            None => writeln!(f, "max_future_skew = \"off\"")?,
        }
        let r = &self.review;
        writeln!(f, "\n[review]")?;
        writeln!(f, "listen = \"{}\"", r.listen)?;
        writeln!(f, "expire_after = \"{}s\"", r.expire_after.num_seconds())?;
        writeln!(f, "session_ttl = \"{}s\"", r.session_ttl.num_seconds())?;
        writeln!(f, "secure_cookies = {}", r.secure_cookies)?;
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
        Ok(())
    }
}

/// Sets `path` (levels separated by `__`, case-insensitive) in `table` to `value`, read as a
/// TOML value when it is one (`5000`, `true`) and as a string otherwise. Keys of the
/// librdkafka table keep dots: `RISKGATE__KAFKA__LIBRDKAFKA__SASL.PASSWORD`.
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

struct Reader<'p> {
    problems: &'p mut Vec<String>,
    purpose: Purpose,
}

impl Reader<'_> {
    fn config(&mut self, mut root: Table) -> Config {
        let mut kafka = self.section(&mut root, "kafka");
        let mut rules = self.section(&mut root, "rules");
        let mut http = self.section(&mut root, "http");
        let mut engine = self.section(&mut root, "engine");
        let review = self.section(&mut root, "review");
        self.unknown(&root, "");

        let librdkafka = match kafka.remove("librdkafka") {
            None => BTreeMap::new(),
            Some(Value::Table(t)) => t
                .into_iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k, s)),
                    Value::Integer(i) => Some((k, i.to_string())),
                    Value::Boolean(b) => Some((k, b.to_string())),
                    _ => {
                        self.problems.push(format!(
                            "kafka.librdkafka.{k}: must be a string, number or boolean"
                        ));
                        None
                    }
                })
                .collect(),
            Some(_) => {
                self.problems
                    .push("kafka.librdkafka: must be a table".to_owned());
                BTreeMap::new()
            }
        };
        let s = |r: &mut Self, t: &mut Table, key: &str, section: &str, default: &str| {
            r.string(t, key, section)
                .unwrap_or_else(|| default.to_owned())
        };
        let kafka_cfg = Kafka {
            brokers: s(self, &mut kafka, "brokers", "kafka", "127.0.0.1:9092"),
            group_id: s(self, &mut kafka, "group_id", "kafka", "riskgate"),
            intents_topic: s(self, &mut kafka, "intents_topic", "kafka", "intents"),
            decisions_topic: s(self, &mut kafka, "decisions_topic", "kafka", "decisions"),
            dead_letter_topic: s(
                self,
                &mut kafka,
                "dead_letter_topic",
                "kafka",
                "intents.dlq",
            ),
            transactional_id: s(self, &mut kafka, "transactional_id", "kafka", ""),
            commit_interval: self
                .duration(&mut kafka, "commit_interval", "kafka")
                .and_then(|d| d.to_std().ok())
                .unwrap_or(Duration::from_millis(100)),
            commit_max_records: self
                .positive(&mut kafka, "commit_max_records", "kafka")
                .unwrap_or(10_000) as usize,
            create_topics: self
                .boolean(&mut kafka, "create_topics", "kafka")
                .unwrap_or(false),
            partitions: self
                .positive(&mut kafka, "partitions", "kafka")
                .map_or(3, |p| p.min(i32::MAX as u64) as i32),
            replication_factor: self
                .positive(&mut kafka, "replication_factor", "kafka")
                .map_or(1, |p| p.min(i32::MAX as u64) as i32),
            librdkafka,
        };
        self.unknown(&kafka, "kafka");
        for (key, value) in [
            ("brokers", &kafka_cfg.brokers),
            ("group_id", &kafka_cfg.group_id),
            ("intents_topic", &kafka_cfg.intents_topic),
            ("decisions_topic", &kafka_cfg.decisions_topic),
            ("dead_letter_topic", &kafka_cfg.dead_letter_topic),
        ] {
            if value.trim().is_empty() {
                self.problems
                    .push(format!("kafka.{key}: must not be empty"));
            }
        }
        if self.purpose == Purpose::Run && kafka_cfg.transactional_id.trim().is_empty() {
            self.problems.push(
                "kafka.transactional_id: required, stable and unique per instance (e.g. \"riskgate-a\"), so that a restarted instance fences its previous self"
                    .to_owned(),
            );
        }
        let topics = [
            &kafka_cfg.intents_topic,
            &kafka_cfg.decisions_topic,
            &kafka_cfg.dead_letter_topic,
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
            if kafka_cfg.librdkafka.contains_key(reserved) {
                self.problems.push(format!(
                    "kafka.librdkafka.{reserved}: set by riskgate itself (use the [kafka] keys)"
                ));
            }
        }

        let rules_cfg = Rules {
            dir: self
                .string(&mut rules, "dir", "rules")
                .map_or_else(|| PathBuf::from("rules"), PathBuf::from),
            watch: self.boolean(&mut rules, "watch", "rules").unwrap_or(true),
        };
        self.unknown(&rules, "rules");

        let listen = self
            .string(&mut http, "listen", "http")
            .unwrap_or_else(|| "127.0.0.1:9464".to_owned());
        let http_cfg = Http {
            listen: listen.parse().unwrap_or_else(|_| {
                self.problems.push(format!(
                    "http.listen: `{listen}` is not an address with a port (e.g. \"127.0.0.1:9464\")"
                ));
                SocketAddr::from(([127, 0, 0, 1], 9464))
            }),
        };
        self.unknown(&http, "http");

        let engine_cfg = Engine {
            max_intent_bytes: self
                .positive(&mut engine, "max_intent_bytes", "engine")
                .map_or(DEFAULT_MAX_BYTES, |n| n as usize),
            duplicate_horizon: self
                .duration(&mut engine, "duplicate_horizon", "engine")
                .unwrap_or(TimeDelta::hours(24)),
            max_future_skew: match engine.get("max_future_skew") {
                Some(Value::String(s)) if s == "off" => {
                    engine.remove("max_future_skew");
                    None
                }
                _ => Some(
                    self.duration(&mut engine, "max_future_skew", "engine")
                        .unwrap_or(TimeDelta::minutes(5)),
                ),
            },
        };
        self.unknown(&engine, "engine");

        let review_cfg = self.review(review);
        Config {
            kafka: kafka_cfg,
            rules: rules_cfg,
            http: http_cfg,
            engine: engine_cfg,
            review: review_cfg,
        }
    }

    fn review(&mut self, mut t: Table) -> Review {
        let listen = self
            .string(&mut t, "listen", "review")
            .unwrap_or_else(|| "127.0.0.1:9465".to_owned());
        let listen = listen.parse().unwrap_or_else(|_| {
            self.problems.push(format!(
                "review.listen: `{listen}` is not an address with a port (e.g. \"127.0.0.1:9465\")"
            ));
            SocketAddr::from(([127, 0, 0, 1], 9465))
        });
        let expire_after = self
            .duration(&mut t, "expire_after", "review")
            .unwrap_or(TimeDelta::hours(24));
        let session_ttl = self
            .duration(&mut t, "session_ttl", "review")
            .unwrap_or(TimeDelta::hours(8));
        let secure_cookies = self
            .boolean(&mut t, "secure_cookies", "review")
            .unwrap_or(false);
        let mut reviewers: Vec<Reviewer> = Vec::new();
        match t.remove("reviewers") {
            None => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.into_iter().enumerate() {
                    let at = format!("review.reviewers[{i}]");
                    let Value::Table(mut r) = item else {
                        self.problems.push(format!(
                            "{at}: must be a table with `name`, `role` and `secret_hash`"
                        ));
                        continue;
                    };
                    if r.remove("secret").is_some() {
                        self.problems.push(format!(
                            "{at}.secret: secrets are never stored in plain text; put the output of `riskgate hash-secret` in `secret_hash`"
                        ));
                    }
                    let name = self.string(&mut r, "name", &at).unwrap_or_default();
                    if !is_reviewer_name(&name) {
                        self.problems.push(format!(
                            "{at}.name: `{name}` is not a reviewer name (1 to 64 letters, digits, `.`, `_`, `-` or `@`)"
                        ));
                    } else if reviewers.iter().any(|x| x.name == name) {
                        self.problems
                            .push(format!("{at}.name: `{name}` is configured twice"));
                    }
                    let role = match self.string(&mut r, "role", &at).as_deref() {
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
                    let secret_hash = self.string(&mut r, "secret_hash", &at).unwrap_or_default();
                    match argon2::PasswordHash::new(&secret_hash) {
                        Ok(h) if h.algorithm.as_str().starts_with("argon2") => {}
                        _ => self.problems.push(format!(
                            "{at}.secret_hash: not an Argon2 hash in PHC format (`$argon2id$v=19$...`); make one with `riskgate hash-secret`"
                        )),
                    }
                    self.unknown(&r, &at);
                    reviewers.push(Reviewer {
                        name,
                        role,
                        secret_hash,
                    });
                }
            }
            Some(_) => self.problems.push(
                "review.reviewers: must be an array of tables ([[review.reviewers]])".to_owned(),
            ),
        }
        if self.purpose == Purpose::Review && reviewers.is_empty() {
            self.problems.push(
                "review.reviewers: at least one reviewer is required; add a [[review.reviewers]] table with `name`, `role` and `secret_hash`"
                    .to_owned(),
            );
        }
        self.unknown(&t, "review");
        Review {
            listen,
            expire_after,
            session_ttl,
            secure_cookies,
            reviewers,
        }
    }

    fn section(&mut self, root: &mut Table, name: &str) -> Table {
        match root.remove(name) {
            None => Table::new(),
            Some(Value::Table(t)) => t,
            Some(_) => {
                self.problems.push(format!("{name}: must be a table"));
                Table::new()
            }
        }
    }

    fn unknown(&mut self, table: &Table, section: &str) {
        for key in table.keys() {
            let at = if section.is_empty() {
                key.clone()
            } else {
                format!("{section}.{key}")
            };
            self.problems.push(format!("{at}: unknown key"));
        }
    }

    fn string(&mut self, t: &mut Table, key: &str, section: &str) -> Option<String> {
        match t.remove(key)? {
            Value::String(s) => Some(s),
            other => {
                self.problems.push(format!(
                    "{section}.{key}: must be a string, not {}",
                    other.type_str()
                ));
                None
            }
        }
    }

    fn boolean(&mut self, t: &mut Table, key: &str, section: &str) -> Option<bool> {
        match t.remove(key)? {
            Value::Boolean(b) => Some(b),
            other => {
                self.problems.push(format!(
                    "{section}.{key}: must be true or false, not {}",
                    other.type_str()
                ));
                None
            }
        }
    }

    fn positive(&mut self, t: &mut Table, key: &str, section: &str) -> Option<u64> {
        match t.remove(key)? {
            Value::Integer(i) if i > 0 => Some(i as u64),
            other => {
                self.problems.push(format!(
                    "{section}.{key}: must be a positive integer, not {other}"
                ));
                None
            }
        }
    }

    fn duration(&mut self, t: &mut Table, key: &str, section: &str) -> Option<TimeDelta> {
        let text = self.string(t, key, section)?;
        match parse_duration(&text) {
            Ok(d) if d > TimeDelta::zero() => Some(d),
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

    #[test]
    fn the_example_file_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("riskgate.example.toml");
        let c = Config::load(&path, env(&[])).unwrap();
        assert_eq!(c.kafka.commit_interval, Duration::from_millis(100));
        assert_eq!(c.kafka.intents_topic, "intents");
        assert_eq!(c.http.listen.port(), 9464);
    }

    #[test]
    fn the_example_file_configures_a_reviewer() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("riskgate.example.toml");
        let c = Config::load_for(&path, env(&[]), Purpose::Review).unwrap();
        assert_eq!(c.review.listen.port(), 9465);
        assert_eq!(c.review.expire_after, TimeDelta::hours(24));
        assert_eq!(c.review.reviewers[0].name, "alice");
        assert_eq!(c.review.reviewers[0].role, Role::Approver);
        let shown = c.to_string();
        assert!(shown.contains("secret_hash = \"<redacted>\""), "{shown}");
        assert!(!shown.contains("$argon2id$"), "{shown}");
        assert!(!format!("{:?}", c.review.reviewers[0]).contains("$argon2id$"));
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
