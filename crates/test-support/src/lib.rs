//! The harness shared by riskgate's integration tests, benchmarks and examples: a real broker
//! process ([`broker`]), the real `riskgate` binary as a child process ([`Service`]), the
//! offline oracle ([`oracle`]), the review stack ([`review`]) and the deterministic intent
//! generator ([`generator`]).
//!
//! The broker is Apache Kafka, installed by `scripts/install-broker.sh` and shared by the
//! tests of one process (see [`broker`] for the choices); tests that stop or kill brokers
//! start their own.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // A harness fails loudly.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Message, Offset, TopicPartitionList};

pub mod broker;
pub mod gateway;
pub mod generator;
pub mod oracle;
pub mod review;

pub use broker::{free_port, kafka_version, Broker, KafkaCluster, KafkaNode};

/// The repository's root directory.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The target directory of the running test, benchmark or example
/// (`target/<profile>/deps/<test>` or `target/<profile>/examples/<example>`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("a target directory")
}

/// The `riskgate` binary: `$RISKGATE_BINARY`, or the one cargo built beside the running test
/// (`target/<profile>/riskgate`, where `CARGO_BIN_EXE_riskgate` points).
pub fn riskgate_binary() -> PathBuf {
    std::env::var_os("RISKGATE_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| profile_dir().join("riskgate"))
}

/// `count` generated intents (2% invalid unless `valid_only`), keyed by account (so the
/// default partitioner places them), ready for [`Broker::produce`].
pub fn generated(
    count: u64,
    seed: u64,
    accounts: u32,
    valid_only: bool,
) -> Vec<(Option<i32>, String, Vec<u8>)> {
    let mut out = Vec::new();
    let args = generator::Args {
        count,
        seed,
        accounts,
        valid_only,
    };
    generator::generate(&args, &mut out).expect("generate intents");
    String::from_utf8(out)
        .expect("the generator writes ASCII")
        .lines()
        .map(|line| {
            let key = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["account_id"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "unparseable".to_owned());
            (None, key, line.as_bytes().to_vec())
        })
        .collect()
}

/// Broker tests run one at a time: each starts a broker and services, and the machine has
/// two cores.
static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The installed tools: `$RISKGATE_TOOLS` or `~/.cache/riskgate/tools`.
pub fn tools() -> PathBuf {
    std::env::var_os("RISKGATE_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set"))
                .join(".cache/riskgate/tools")
        })
}

pub(crate) fn tool(name: &str) -> PathBuf {
    let path = tools().join("bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-broker.sh first (.ci/run does)",
        path.display()
    );
    path
}

pub fn python() -> PathBuf {
    tool("python")
}

/// Panics unless the command that gave `out` succeeded, with `what` it was and all it printed.
pub fn assert_success(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `command` with `input` on its standard input: its output, once it has exited.
pub fn output_with_input(command: &mut Command, input: &[u8]) -> Output {
    use std::io::Write;
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// The exit status of `child` (when there is one) if it has exited.
pub(crate) fn exited(child: &mut Option<Child>) -> Option<ExitStatus> {
    child.as_mut().and_then(|c| c.try_wait().ok().flatten())
}

/// Polls `f` until it returns `Some`, or gives up after `timeout` with `None`.
pub fn wait_for_or<T>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            eprintln!("gave up after {timeout:?} waiting for {what}");
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Broker {
    /// Produces `(key, payload)` records, keyed (so the default partitioner places them), or
    /// to an explicit partition when given.
    pub fn produce(&self, topic: &str, records: &[(Option<i32>, String, Vec<u8>)]) {
        let producer = self.producer();
        for record in records {
            send(&producer, topic, record);
        }
        producer.flush(Duration::from_secs(60)).unwrap();
    }

    /// An idempotent producer (acks from every in-sync replica).
    pub fn producer(&self) -> BaseProducer {
        self.client()
            .set("linger.ms", "5")
            .set("enable.idempotence", "true")
            .create()
            .unwrap()
    }

    /// Every committed record of `topic` now, in partition and offset order.
    pub fn read_all(&self, topic: &str) -> Vec<Record> {
        let consumer: BaseConsumer = self
            .client()
            .set("group.id", format!("reader-{}", unique("r")))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("isolation.level", "read_committed")
            .create()
            .unwrap();
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let partitions = md.topics()[0].partitions().len();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let mut at_end = std::collections::HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while at_end.len() < partitions {
            assert!(Instant::now() < deadline, "reading {topic} took too long");
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => out.push(Record {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: serde_json::from_slice(m.payload().unwrap_or_default())
                        .unwrap_or(serde_json::Value::Null),
                    mac: {
                        use rdkafka::message::Headers;
                        m.headers().and_then(|h| {
                            h.iter()
                                .find(|h| h.key == "riskgate-mac")
                                .and_then(|h| h.value)
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                        })
                    },
                }),
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        out.sort_by_key(|r| (r.partition, r.offset));
        out
    }

    /// The group's committed offsets of `topic`, by partition (`None`: nothing committed).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<Option<i64>> {
        let consumer: BaseConsumer = self.client().set("group.id", group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        // Retried: right after a broker (re)starts, the group coordinator may still be loading.
        let got = wait_for(
            &format!("the committed offsets of {group}"),
            Duration::from_secs(60),
            || match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
                Ok(got) => Some(got),
                Err(e) => {
                    eprintln!("committed offsets of {group}: {e}; retrying");
                    None
                }
            },
        );
        (0..partitions)
            .map(|p| match got.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            })
            .collect()
    }

    /// The end (last offset + 1, 0 when empty) of every partition of `topic`, found by
    /// reading it: this broker's watermark query is not reliable.
    pub fn ends(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let mut ends = vec![0; partitions as usize];
        for r in self.read_all(topic) {
            let e = &mut ends[r.partition as usize];
            *e = (*e).max(r.offset + 1);
        }
        ends
    }
}

#[derive(Debug, Clone)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: serde_json::Value,
    /// The record's `riskgate-mac` header, if it has one.
    pub mac: Option<String>,
}

impl Record {
    pub fn source_offset(&self) -> (i64, i64) {
        let s = &self.value["source"];
        (
            s["partition"].as_i64().unwrap_or(-1),
            s["offset"].as_i64().unwrap_or(-1),
        )
    }
}

/// A name no other test uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Names of one deployment's topics and group.
#[derive(Debug, Clone)]
pub struct Topics {
    pub intents: String,
    pub decisions: String,
    pub dead_letters: String,
    pub group: String,
}

impl Topics {
    pub fn new(prefix: &str) -> Topics {
        let base = unique(prefix);
        Topics {
            intents: format!("{base}.intents"),
            decisions: format!("{base}.decisions"),
            dead_letters: format!("{base}.dlq"),
            group: format!("{base}.group"),
        }
    }

    pub fn create(&self, broker: &Broker, partitions: i32) {
        broker.create_topic(&self.intents, partitions);
        broker.create_topic(&self.decisions, partitions);
        broker.create_topic(&self.dead_letters, partitions);
    }
}

/// Where most broker tests start: the shared broker, this test's alone while the guard lives
/// (see [`serial`]), with fresh topics of `partitions` partitions each, named after `prefix`.
pub fn topics_on_shared_broker(
    prefix: &str,
    partitions: i32,
) -> (MutexGuard<'static, ()>, Broker, Topics) {
    let serial = serial();
    let broker = Broker::shared();
    let topics = Topics::new(prefix);
    topics.create(&broker, partitions);
    (serial, broker, topics)
}

/// A running `riskgate run`, its log (JSON lines) kept in a file.
pub struct Service {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

pub struct ServiceConfig<'a> {
    pub broker: &'a Broker,
    pub topics: &'a Topics,
    pub transactional_id: &'a str,
    pub rules: &'a Path,
    pub extra: &'a str,
}

/// The secret of the `[integrity]` key (id `test`) of a deployment whose group is `group`: the
/// same for its engine and its review instances, 32 bytes derived from the name.
pub fn integrity_secret(group: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    let mut state: u64 = 0xcbf2_9ce4_8422_2325;
    for b in group.bytes() {
        state = (state ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    while out.len() < 32 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1);
        out.extend_from_slice(&state.to_le_bytes());
    }
    out
}

/// A file holding [`integrity_secret`] of `group`, for `[integrity] keys`.
pub fn integrity_key(group: &str) -> PathBuf {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| tempfile::tempdir().unwrap());
    let path = dir.path().join(group);
    fs::write(&path, integrity_secret(group)).unwrap();
    path
}

impl<'a> ServiceConfig<'a> {
    /// `riskgate run` on `topics` of `broker` as `transactional_id`, with the rules in `rules`
    /// and nothing `extra`.
    pub fn new(
        broker: &'a Broker,
        topics: &'a Topics,
        transactional_id: &'a str,
        rules: &'a Path,
    ) -> ServiceConfig<'a> {
        ServiceConfig {
            broker,
            topics,
            transactional_id,
            rules,
            extra: "",
        }
    }
}

impl Service {
    /// `riskgate run` on `topics` of `broker` with the rules in `rules`, under a
    /// transactional id of its own (its group's name).
    pub fn on(broker: &Broker, topics: &Topics, rules: &Path) -> Service {
        Service::start(&ServiceConfig::new(broker, topics, &topics.group, rules))
    }

    pub fn config_text(c: &ServiceConfig<'_>) -> String {
        format!(
            r#"[kafka]
brokers = "{broker}"
group_id = "{group}"
intents_topic = "{intents}"
decisions_topic = "{decisions}"
dead_letter_topic = "{dlq}"
transactional_id = "{tid}"
commit_interval = "100ms"
{extra}
[kafka.librdkafka]
"session.timeout.ms" = "6000"
"max.poll.interval.ms" = "7000"
"heartbeat.interval.ms" = "500"
"transaction.timeout.ms" = "10000"
"statistics.interval.ms" = "1000"
{broker_tuning}
[rules]
dir = "{rules}"
[http]
listen = "127.0.0.1:0"
[engine]
max_future_skew = "off"
[integrity]
keys = [{{ id = "test", secret_file = "{key}" }}]
current = "test"
require = true
"#,
            key = integrity_key(&c.topics.group).display(),
            broker = c.broker.address,
            group = c.topics.group,
            intents = c.topics.intents,
            decisions = c.topics.decisions,
            dlq = c.topics.dead_letters,
            tid = c.transactional_id,
            rules = c.rules.display(),
            extra = c.extra,
            broker_tuning = broker::client_tuning(),
        )
    }

    pub fn start(c: &ServiceConfig<'_>) -> Service {
        Service::spawn("run", &Service::config_text(c))
    }

    /// `riskgate review` with the same `[kafka]` and this `[review]` section text.
    pub fn review(c: &ServiceConfig<'_>, review: &str) -> Service {
        Service::spawn("review", &format!("{}\n{review}", Service::config_text(c)))
    }

    /// Runs `riskgate <command> --config <file with config_text>`, logging at info level
    /// except librdkafka's own lines below error (`RISKGATE_TEST_LOG` overrides).
    pub fn spawn(command: &str, config_text: &str) -> Service {
        let filter = std::env::var("RISKGATE_TEST_LOG")
            .unwrap_or_else(|_| "info,librdkafka=error,rdkafka=error".to_owned());
        Service::spawn_logging(command, config_text, &filter)
    }

    /// [`Service::spawn`] with this `RUST_LOG` filter.
    pub fn spawn_logging(command: &str, config_text: &str, filter: &str) -> Service {
        Service::spawn_with(command, config_text, filter, "json")
    }

    /// [`Service::spawn`] with this `RUST_LOG` filter and `--log-format`.
    pub fn spawn_with(command: &str, config_text: &str, filter: &str, format: &str) -> Service {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("riskgate.toml");
        fs::write(&config, config_text).unwrap();
        let log = dir.path().join("riskgate.log");
        let child = Command::new(riskgate_binary())
            .args([command, "--config"])
            .arg(&config)
            .args(["--log-format", format])
            .env("RUST_LOG", filter)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Service {
            child: Some(child),
            dir,
            log,
        }
    }

    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The log's events, parsed.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits for a log event whose message contains `message` and that `pred` accepts.
    pub fn wait_event(
        &mut self,
        message: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let what = format!("log event {message:?}");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self
                .events()
                .into_iter()
                .find(|e| e["message"].as_str().is_some_and(|m| m.contains(message)) && pred(e))
            {
                return e;
            }
            if let Some(status) = exited(&mut self.child) {
                panic!(
                    "riskgate exited ({status}) while waiting for {what}; log:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; log:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until every assigned partition is restored and deciding.
    pub fn wait_ready(&mut self) -> Vec<i64> {
        let assigned = self.wait_event("partitions assigned", Duration::from_secs(60), |_| true);
        let partitions: Vec<i64> = assigned["partitions"]
            .as_str()
            .map(|s| {
                s.trim_matches(['[', ']'])
                    .split(',')
                    .filter_map(|x| x.trim().parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        for p in &partitions {
            self.wait_event("state restored", Duration::from_secs(60), |e| {
                e["partition"].as_i64() == Some(*p)
            });
        }
        partitions
    }

    /// Every thread's stack of the running process, through gdb when it is installed: what a
    /// stuck service was doing, for the message of a failing test.
    pub fn stacks(&self) -> String {
        Command::new("gdb")
            .args([
                "-p",
                &self.pid().to_string(),
                "-batch",
                "-ex",
                "thread apply all bt",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_else(|e| format!("(no stacks: gdb: {e})"))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} failed");
    }

    /// SIGKILL: no chance to commit or leave the group.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(timeout)
    }

    /// SIGTERM; panics unless the service exits 0 within 30 seconds.
    pub fn stop(&mut self) {
        let status = self.terminate(Duration::from_secs(30));
        assert!(status.success(), "riskgate exited with {status}");
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "riskgate did not stop within {timeout:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
        // A failing test shows what the service said (the harness prints a failed test's
        // output): the last lines of its log.
        if std::thread::panicking() {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(60)..];
            // The whole log is kept where the build keeps test output.
            let kept = profile_dir().parent().map(|target| {
                let dir = target.join("tmp").join("logs");
                let _ = fs::create_dir_all(&dir);
                let path = dir.join(format!("{}.log", unique("service")));
                let _ = fs::write(&path, &log);
                path
            });
            eprintln!(
                "--- last {} lines of {} (all of it in {}) ---\n{}",
                tail.len(),
                self.log.display(),
                kept.map_or("nowhere".into(), |p| p.display().to_string()),
                tail.join("\n")
            );
        }
    }
}

/// An HTTP response as [`http`] reads it.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.body))
    }
}

/// A plain HTTP/1.0 request with `headers` and an optional JSON `body`.
pub fn http(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Response {
    try_http(address, method, path, headers, body)
        .unwrap_or_else(|e| panic!("{method} http://{address}{path}: {e}"))
}

/// [`http`], with a connection that fails (refused, reset, timed out) as an error.
pub fn try_http(
    address: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<Response> {
    use std::io::Write;
    let mut stream = TcpStream::connect(address)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut request = format!("{method} {path} HTTP/1.0\r\n");
    if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("host")) {
        request.push_str(&format!("Host: {address}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(b) = body {
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        {
            request.push_str("Content-Type: application/json\r\n");
        }
        request.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    request.push_str("\r\n");
    request.push_str(body.unwrap_or(""));
    stream.write_all(request.as_bytes())?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok(Response {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// A plain HTTP/1.0 GET: the status code and the body, if the connection worked.
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    let r = try_http(address, "GET", path, &[], None).ok()?;
    (r.status != 0).then_some((r.status, r.body))
}

impl Service {
    /// The address the HTTP endpoints listen on, from the start-up log.
    pub fn http_address(&mut self) -> String {
        let e = self.wait_event("serving /metrics", Duration::from_secs(30), |_| true);
        e["address"].as_str().expect("an address").to_owned()
    }
}

/// Waits until the group has committed every intent of every partition.
pub fn wait_all_committed(broker: &Broker, topics: &Topics, partitions: i32, timeout: Duration) {
    let ends = broker.ends(&topics.intents, partitions);
    let mut last = Vec::new();
    let what = || format!("offsets committed to the end {ends:?}");
    wait_for(&what(), timeout, || {
        let committed = broker.committed(&topics.group, &topics.intents, partitions);
        if committed != last {
            eprintln!("committed {committed:?} of {ends:?}");
            last = committed.clone();
        }
        (committed
            .iter()
            .zip(&ends)
            .all(|(c, e)| *e == 0 || *c == Some(*e)))
        .then_some(())
    });
}

/// The group's committed offsets of `topic`, summed over its partitions.
pub fn committed_total(broker: &Broker, group: &str, topic: &str, partitions: i32) -> i64 {
    broker
        .committed(group, topic, partitions)
        .iter()
        .map(|c| c.unwrap_or(0))
        .sum()
}

/// A ruleset whose counters are all keyed by `account_id`: the sample policy and payments
/// rules, and account-keyed counts, distinct payees and a score. For tests that compare the
/// service on several partitions keyed by account with one offline replay.
pub fn account_rules() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let sample = repo().join("rules");
    for file in ["00-policy.toml", "payments.toml"] {
        fs::copy(sample.join(file), dir.path().join(file)).unwrap();
    }
    fs::write(
        dir.path().join("accounts.toml"),
        r#"
[[counter]]
id = "acct_actions_10m"
key = ["account_id"]
aggregate = "count"
window = "10m"
contributes = "all"

[[counter]]
id = "acct_payees_1h"
key = ["account_id"]
aggregate = "distinct"
field = "counterparty.id"
window = "1h"
where = 'action in lists.payment_actions && has(counterparty.id)'

[[rule]]
id = "acct-burst"
when = 'counters.acct_actions_10m >= 6'
action = "score"
score = 30
message = "{counters.acct_actions_10m} actions on {account_id} in 10 minutes"

[[rule]]
id = "acct-fan-out"
when = 'action in lists.payment_actions && counters.acct_payees_1h >= 4'
action = "hold"
message = "{account_id} paid {counters.acct_payees_1h} different counterparties in the last hour"
"#,
    )
    .unwrap();
    dir
}

/// Sends one `(partition, key, payload)` record, waiting while the producer's queue is full.
pub fn send(
    producer: &BaseProducer,
    topic: &str,
    (partition, key, payload): &(Option<i32>, String, Vec<u8>),
) {
    let mut r = BaseRecord::to(topic)
        .key(key.as_bytes())
        .payload(&payload[..]);
    if let Some(p) = partition {
        r = r.partition(*p);
    }
    loop {
        match producer.send(r) {
            Ok(()) => return,
            Err((KafkaError::MessageProduction(_), back)) => {
                r = back;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => panic!("produce: {e}"),
        }
    }
}

/// Produces `records` from a background thread at about `per_second`; join it to wait until
/// all are acknowledged.
pub fn produce_at(
    broker: &Broker,
    topic: &str,
    records: Vec<(Option<i32>, String, Vec<u8>)>,
    per_second: u64,
) -> std::thread::JoinHandle<()> {
    let broker = broker.clone();
    let topic = topic.to_owned();
    std::thread::spawn(move || {
        let producer = broker.producer();
        let started = Instant::now();
        for (i, record) in records.iter().enumerate() {
            // Paced in steps of 50 records.
            if i % 50 == 0 {
                let due = Duration::from_secs_f64(i as f64 / per_second as f64);
                if let Some(wait) = due.checked_sub(started.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            send(&producer, &topic, record);
            producer.poll(Duration::ZERO);
        }
        // Through a broker outage, the idempotent producer keeps retrying.
        producer.flush(Duration::from_secs(300)).unwrap();
    })
}

/// Decisions by `intent_id`.
pub fn by_intent(records: &[Record]) -> HashMap<String, Vec<&Record>> {
    let mut out: HashMap<String, Vec<&Record>> = HashMap::new();
    for r in records {
        if let Some(id) = r.value["intent_id"].as_str() {
            out.entry(id.to_owned()).or_default().push(r);
        }
    }
    out
}

/// What must agree between two decisions on the same intent.
pub fn verdict(r: &Record) -> (String, i64, String) {
    (
        r.value["decision"].as_str().unwrap_or_default().to_owned(),
        r.value["score"].as_i64().unwrap_or_default(),
        r.value["reasons"].to_string(),
    )
}
