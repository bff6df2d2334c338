//! Operating riskgate: metrics that promtool accepts and a real Prometheus scrapes, health
//! probes, the alert rules' unit tests, and the docker-compose stack's files.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use riskgate_test_support as support;

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use riskgate::config::{Config, Purpose};

use support::*;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn intents(count: usize) -> Vec<(Option<i32>, String, Vec<u8>)> {
    let text = std::fs::read_to_string(root().join("examples/intents.jsonl")).unwrap();
    text.lines()
        .cycle()
        .take(count)
        .enumerate()
        .map(|(i, l)| {
            // Distinct intent ids, so that every line is decided (or dead-lettered) afresh.
            let line = l.replacen("\"intent_id\":\"", &format!("\"intent_id\":\"{i}-"), 1);
            // Keyed by account, as producers must; lines that are not intents get any key.
            let key = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["account_id"].as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("k{}", i % 17));
            (None, key, line.into_bytes())
        })
        .collect()
}

/// A Prometheus server on loopback scraping `target` every second.
struct Prometheus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: &str) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: riskgate\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={address}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (Debian package `prometheus`; .ci/run installs it)");
        Prometheus {
            child,
            address,
            _dir: dir,
        }
    }

    /// The value of an instant query returning one series, if any.
    fn query(&self, q: &str) -> Option<f64> {
        let path = format!(
            "/api/v1/query?query={}",
            q.replace(' ', "%20")
                .replace('(', "%28")
                .replace(')', "%29")
        );
        let (status, body) = http_get(&self.address, &path)?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[cfg_attr(
    not(all(feature = "kafka-tests", feature = "ops-tests")),
    ignore = "needs a Kafka broker and Prometheus: scripts/test runs it"
)]
fn promtool_accepts_the_metrics_and_prometheus_scrapes_the_decisions() {
    let (_serial, broker, topics) = topics_on_shared_broker("metrics", 2);
    // Two partitions keyed by account: the sample rules' account counters and policy (their
    // agent counters need one partition, and the service would refuse them here).
    let rules = account_rules();
    let mut s = Service::on(&broker, &topics, rules.path());
    let http = s.http_address();
    s.wait_ready();
    let prometheus = Prometheus::start(&http);
    broker.produce(&topics.intents, &intents(600));
    let decided = wait_for("600 outputs", Duration::from_secs(60), || {
        let d = broker.read_all(&topics.decisions).len();
        (d + broker.read_all(&topics.dead_letters).len() == 600).then_some(d)
    });

    let (status, text) = http_get(&http, "/metrics").unwrap();
    assert_eq!(status, 200);
    let out = output_with_input(
        Command::new("promtool").args(["check", "metrics"]),
        text.as_bytes(),
    );
    assert_success(&out, &format!("promtool check metrics of\n{text}\n"));
    for name in [
        "riskgate_decisions_total{outcome=\"hold\"}",
        "riskgate_rule_matches_total{rule=\"sanctioned-country\"}",
        "riskgate_invalid_intents_total{kind=\"invalid_json\"}",
        "riskgate_decision_evaluation_seconds_bucket",
        "riskgate_decision_latency_seconds_bucket",
        "riskgate_transactions_total{result=\"commit\"}",
        "riskgate_state_restore_seconds_count",
        "riskgate_ruleset_info{version=",
        "riskgate_ready 1",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }

    // Everything is consumed: no lag on either partition (librdkafka statistics, every second
    // in tests).
    wait_for(
        "consumer lag 0 on both partitions",
        Duration::from_secs(30),
        || {
            let (_, text) = http_get(&http, "/metrics")?;
            (text.contains("riskgate_consumer_lag{partition=\"0\"} 0\n")
                && text.contains("riskgate_consumer_lag{partition=\"1\"} 0\n"))
            .then_some(())
        },
    );

    // Prometheus, scraping for real, sees every decision.
    wait_for(
        "Prometheus to see every decision",
        Duration::from_secs(60),
        || {
            let seen = prometheus.query("sum(riskgate_decisions_total)")?;
            (seen as usize == decided).then_some(())
        },
    );
    let invalid = prometheus
        .query("sum(riskgate_invalid_intents_total)")
        .unwrap();
    assert_eq!(invalid as usize, 600 - decided);
    s.stop();
}

#[test]
#[cfg_attr(
    not(feature = "kafka-tests"),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn readyz_is_false_while_restoring_and_healthz_stays_true() {
    let (_serial, broker, topics) = topics_on_shared_broker("ready", 1);
    let rules = root().join("rules");
    let config = ServiceConfig::new(&broker, &topics, "ready-a", &rules);
    // A first run leaves many decisions, so that the second run's restore takes a while.
    let mut first = Service::start(&config);
    first.wait_ready();
    broker.produce(&topics.intents, &intents(60_000));
    wait_for("60,000 outputs", Duration::from_secs(120), || {
        let n =
            broker.read_all(&topics.decisions).len() + broker.read_all(&topics.dead_letters).len();
        (n == 60_000).then_some(())
    });
    first.stop();

    let mut second = Service::start(&config);
    let http = second.http_address();
    // Poll both probes from start until ready; record what they said.
    let mut ready_answers = Vec::new();
    loop {
        let (health, _) = http_get(&http, "/healthz").expect("healthz answers");
        assert_eq!(health, 200, "/healthz must stay true");
        let (status, body) = http_get(&http, "/readyz").expect("readyz answers");
        let restoring = body.contains("\"restoring\":1");
        ready_answers.push((status, restoring));
        if status == 200 {
            break;
        }
        assert!(ready_answers.len() < 20_000, "never ready");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        ready_answers
            .iter()
            .any(|(status, restoring)| *status == 503 && *restoring),
        "/readyz was never seen false during the restore: {:?}",
        &ready_answers[ready_answers.len().saturating_sub(5)..]
    );
    let restored = second.wait_event("state restored", Duration::from_secs(10), |_| true);
    assert!(
        restored["decisions"].as_u64().unwrap() > 50_000,
        "{restored}"
    );
    let (health, _) = http_get(&http, "/healthz").unwrap();
    assert_eq!(health, 200);
    second.stop();
}

#[test]
#[cfg_attr(
    not(feature = "ops-tests"),
    ignore = "needs promtool: scripts/test runs it"
)]
fn alert_rules_pass_their_unit_tests() {
    let dir = root().join("deploy/prometheus");
    let check = Command::new("promtool")
        .args(["check", "rules", "alerts.yml"])
        .current_dir(&dir)
        .output()
        .expect("promtool (Debian package `prometheus`)");
    assert_success(&check, "promtool check rules");
    let test = Command::new("promtool")
        .args(["test", "rules", "alerts_test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert_success(&test, "promtool test rules");
    // Every alert has a test.
    let alerts = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(dir.join("alerts_test.yml")).unwrap();
    for line in alerts
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
    {
        assert!(
            tests.contains(&format!("alertname: {line}")),
            "no test for {line}"
        );
    }
}

#[test]
#[cfg_attr(
    not(feature = "ops-tests"),
    ignore = "needs docker-compose: scripts/test runs it"
)]
fn the_compose_file_validates_and_the_dashboard_queries_exported_metrics() {
    let out = Command::new("docker-compose")
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .current_dir(root())
        .output()
        .expect("docker-compose (Debian package `docker-compose`)");
    assert_success(&out, "docker-compose config");
    // The stack runs the Kafka version the tests run (scripts/kafka/pom.xml).
    let compose = compose_file();
    let version = kafka_version();
    let images: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: apache/kafka:"))
        .collect();
    assert!(
        !images.is_empty(),
        "docker-compose.yml runs no apache/kafka image"
    );
    assert!(
        images.iter().all(|tag| *tag == version),
        "docker-compose.yml runs apache/kafka {images:?}, the tests run {version}"
    );
    for path in [
        "Dockerfile",
        "deploy/riskgate.toml",
        "deploy/prometheus/prometheus.yml",
        "deploy/grafana/provisioning/datasources/prometheus.yml",
        "deploy/grafana/provisioning/dashboards/riskgate.yml",
    ] {
        assert!(root().join(path).exists(), "{path}");
    }
    // The compose stack's own config is a valid riskgate configuration, with its key where
    // the stack mounts the keys volume: `secrets/` beside the config.
    assert!(
        compose.contains("./deploy/riskgate.toml:/etc/riskgate/riskgate.toml:ro")
            && compose.contains("riskgate-keys:/etc/riskgate/secrets:ro"),
        "the keys volume is not mounted beside the config"
    );
    let etc = tempfile::tempdir().unwrap();
    std::fs::copy(
        root().join("deploy/riskgate.toml"),
        etc.path().join("riskgate.toml"),
    )
    .unwrap();
    std::fs::create_dir(etc.path().join("secrets")).unwrap();
    std::fs::write(etc.path().join("secrets/k1"), [1u8; 32]).unwrap();
    let load = |purpose| Config::load_for(&etc.path().join("riskgate.toml"), Vec::new(), purpose);
    for purpose in [Purpose::Run, Purpose::Review, Purpose::Gateway] {
        let config = load(purpose);
        assert!(config.is_ok(), "{purpose:?}: {config:?}");
        assert!(
            config.unwrap().integrity.require,
            "the stack requires signed records"
        );
    }
    // The stack's topics and rules are a setup the partitioning check accepts.
    let partitions: i32 = compose
        .split("--partitions ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("docker-compose.yml creates its topics with --partitions N");
    let config = load(Purpose::Run).unwrap();
    let rules = riskgate_core::rules::Ruleset::load_dir(&root().join("rules")).unwrap();
    if let Err(e) = rules.check_partitioning(&config.kafka.partition_key, partitions) {
        panic!("docker-compose.yml's {partitions} partitions with the sample rules: {e}");
    }

    let exported: BTreeSet<String> = riskgate::telemetry::metrics()
        .names()
        .into_iter()
        .chain(riskgate::telemetry::review_metrics().names())
        .chain(riskgate::telemetry::gateway_metrics().names())
        .collect();
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/dashboards/riskgate.json")).unwrap(),
    )
    .unwrap();
    let re = regex::Regex::new(r"riskgate_[a-z_]+").unwrap();
    let mut used = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for m in re.find_iter(expr) {
                let name = m.as_str();
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name);
                assert!(
                    exported.contains(base),
                    "panel {:?} queries {name}, which riskgate does not export; exported: {exported:?}",
                    panel["title"]
                );
                used.insert(base.to_owned());
            }
        }
    }
    for wanted in [
        "riskgate_decisions_total",
        "riskgate_rule_matches_total",
        "riskgate_decision_evaluation_seconds",
        "riskgate_decision_latency_seconds",
        "riskgate_consumer_lag",
        "riskgate_invalid_intents_total",
        "riskgate_transactions_total",
        "riskgate_pending_holds",
        "riskgate_review_outcomes_total",
        "riskgate_review_time_seconds",
        "riskgate_gateway_requests_total",
        "riskgate_gateway_wait_seconds",
    ] {
        assert!(
            used.contains(wanted),
            "the dashboard does not show {wanted}"
        );
    }
}

/// The stack's docker-compose.yml.
fn compose_file() -> String {
    std::fs::read_to_string(root().join("docker-compose.yml")).unwrap()
}

/// The `CMD-SHELL` healthcheck command of each service of docker-compose.yml, by service.
fn compose_healthchecks(compose: &str) -> Vec<(String, String)> {
    let mut service = String::new();
    let mut out = Vec::new();
    for line in compose.lines() {
        // Services are the keys indented by two spaces under `services:`.
        if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':')) {
            if !name.starts_with(' ') && !name.starts_with('#') {
                service = name.to_owned();
            }
        }
        if let Some(test) = line.trim().strip_prefix("test: ") {
            let parts: Vec<String> = serde_json::from_str(test).unwrap();
            assert_eq!(parts[0], "CMD-SHELL", "{service}: {test}");
            out.push((service.clone(), parts[1].clone()));
        }
    }
    out
}

/// The producer's shell script (its `command: - |` block), as the container runs it.
fn compose_producer_script(compose: &str) -> String {
    let block = compose
        .split("\n  producer:\n")
        .nth(1)
        .and_then(|rest| rest.split("      - |\n").nth(1))
        .expect("a producer with a `command: - |` block");
    block
        .lines()
        .take_while(|l| l.starts_with("        ") || l.is_empty())
        .map(|l| l.get(8..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
        // Compose's escape for a literal `$`.
        .replace("$$", "$")
}

/// A directory with Kafka's `bin/` tools as this machine has them (scripts/kafka-tool.sh) and
/// `riskgate`, for running the compose file's commands here.
fn kafka_bin() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for tool in ["kafka-topics.sh", "kafka-console-producer.sh"] {
        let path = dir.path().join(tool);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nexec '{}' {tool} \"$@\"\n",
                root().join("scripts/kafka-tool.sh").display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::os::unix::fs::symlink(riskgate_binary(), dir.path().join("riskgate")).unwrap();
    dir
}

/// Runs `command` with dash (the `/bin/sh` of the riskgate image), `bin` first on the PATH.
fn dash(command: &str, bin: &Path) -> std::process::Output {
    Command::new("dash")
        .arg("-c")
        .arg(command)
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .output()
        .expect("dash (Debian package `dash`)")
}

#[test]
#[cfg_attr(
    not(all(feature = "ops-tests", feature = "kafka-tests")),
    ignore = "needs a Kafka broker and dash: scripts/test runs it"
)]
fn the_compose_healthchecks_pass_under_dash_against_a_broker_and_the_services() {
    let checks = compose_healthchecks(&compose_file());
    let services: Vec<&str> = checks.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(services, ["kafka", "riskgate", "review", "gateway"]);
    for (service, command) in &checks {
        assert!(
            !command.contains("/dev/tcp") && !command.contains("<<<"),
            "{service}: `{command}` needs bash, but the image's /bin/sh is dash"
        );
    }
    // The broker, this test's alone, from here on: the checks above read files only.
    let _serial = serial();
    let bin = kafka_bin();
    let mut stack = support::review::Stack::start("health");
    let engine_http = stack.engine.http_address();
    stack.engine.wait_ready();
    let review = stack.review("");
    let key = support::gateway::AgentKey::new("payments-bot");
    let gateway = support::gateway::Gateway::start(&support::gateway::config_text(
        &stack.config(),
        "",
        &[&key],
    ));
    let here = |command: &str, engine: &str, review: &str, gateway: &str| {
        command
            .replace("/opt/kafka/bin/", &format!("{}/", bin.path().display()))
            .replace("localhost:9092", &stack.broker.address)
            .replace("127.0.0.1:9464", engine)
            .replace("127.0.0.1:9465", review)
            .replace("127.0.0.1:9467", gateway)
    };
    for (service, command) in &checks {
        let command = here(command, &engine_http, &review.address, &gateway.address);
        let out = dash(&command, bin.path());
        assert_success(&out, &format!("{service}: `{command}` under dash"));
    }
    // Each fails when what it checks is not there: nothing listens on a fresh port.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    for (service, command) in &checks[1..] {
        let command = here(command, &closed, &closed, &closed);
        let out = dash(&command, bin.path());
        assert!(
            !out.status.success(),
            "{service}: `{command}` passed with nothing there"
        );
    }
}

#[test]
#[cfg_attr(
    not(all(feature = "ops-tests", feature = "kafka-tests")),
    ignore = "needs a Kafka broker: scripts/test runs it"
)]
fn the_compose_demo_producer_sends_fresh_intents_keyed_by_account() {
    let (_serial, broker, topics) = topics_on_shared_broker("demo", 1);
    let bin = kafka_bin();
    let script = compose_producer_script(&compose_file())
        .replace("/opt/kafka/bin/", &format!("{}/", bin.path().display()))
        .replace("kafka:9092", &broker.address)
        .replace("--topic intents", &format!("--topic {}", topics.intents))
        .replace(
            "/intents.jsonl",
            &root().join("examples/intents.jsonl").display().to_string(),
        )
        // Faster than in the stack: two passes in seconds.
        .replace("sleep 0.2", "sleep 0.001");
    let mut producer = Command::new("setsid")
        .args(["bash", "-c", &script])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let started = chrono::Utc::now();
    let records = wait_for_or(
        "two passes of the examples",
        Duration::from_secs(120),
        || {
            let r = broker.read_all(&topics.intents);
            (r.len() >= 450).then_some(r)
        },
    );
    // The whole process group: bash, its sed and sleep, the producer's JVM.
    let _ = Command::new("kill")
        .args(["-s", "TERM", "--", &format!("-{}", producer.id())])
        .status();
    let _ = producer.wait();
    let records = records.expect("the producer sent two passes");
    // The examples repeat some ids on purpose (duplicates to decide): within a pass an id
    // appears as often as in the file, and never again in the next pass.
    let examples = std::fs::read_to_string(root().join("examples/intents.jsonl")).unwrap();
    let in_file = |base: &str| {
        examples
            .matches(&format!("\"intent_id\":\"{base}\""))
            .count()
    };
    let mut ids: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for r in &records {
        let v = &r.value;
        // The examples include a line cut short (a dead letter on purpose): no JSON to read.
        if v.is_null() {
            assert!(
                r.key.as_deref().is_some_and(|k| !k.is_empty()),
                "keyed: {r:?}"
            );
            continue;
        }
        let id = v["intent_id"].as_str().unwrap();
        let base = id
            .strip_suffix("-p1")
            .or_else(|| id.strip_suffix("-p2"))
            .unwrap_or_else(|| panic!("{id} carries its pass"));
        let seen = ids.entry(id.to_owned()).or_default();
        *seen += 1;
        assert!(
            *seen <= in_file(base),
            "intent id {id} sent more often than the file has it"
        );
        assert_eq!(
            r.key.as_deref(),
            v["account_id"].as_str(),
            "keyed by account: {v}"
        );
        // An example without `created_at` (a dead letter on purpose) stays without.
        let Some(created) = v["created_at"].as_str() else {
            continue;
        };
        let created: chrono::DateTime<chrono::Utc> = created.parse().unwrap();
        assert!(
            created >= started - chrono::TimeDelta::seconds(2)
                && created <= chrono::Utc::now() + chrono::TimeDelta::seconds(2),
            "created_at is the time it was sent: {v}"
        );
    }
    assert!(
        ids.keys().any(|i| i.ends_with("-p2")),
        "a second pass with fresh ids"
    );
}
