//! The brokers tests run against.
//!
//! By default Apache Kafka (KRaft), the version pinned in `scripts/kafka/pom.xml`, installed by
//! `scripts/install-broker.sh` and started by `scripts/kafka-broker.sh`. `RISKGATE_TEST_BROKER`
//! chooses otherwise: `kafka` (the default), `tansu` (the old test broker, installed by
//! `scripts/install-broker.sh --tansu`), or the `host:port` of a broker of your own.
//!
//! * [`Broker::shared`]: the broker every test of one test process shares, started on first
//!   use; tests keep apart by unique topic and group names ([`super::unique`]). It stops when
//!   the process exits (`--watch-pid`) and its data directory goes with it (`--ephemeral`).
//! * [`KafkaNode::start`] / [`KafkaCluster::start`]: brokers of one test's own, for tests that
//!   stop, kill -9 or restart them. Always Apache Kafka, on data directories that survive a
//!   restart.

use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaResult;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::types::RDKafkaErrorCode;

use super::{exited, tool, tools, wait_for};

/// Waits for the answers to an admin request; panics, saying what it could not `verb`, unless
/// every part of it succeeded.
fn wait_admin<R, T: std::fmt::Debug>(
    verb: &str,
    request: impl std::future::Future<Output = KafkaResult<Vec<Result<R, (T, RDKafkaErrorCode)>>>>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for result in rt.block_on(request).unwrap() {
        if let Err((what, e)) = result {
            panic!("cannot {verb} {what:?}: {e}");
        }
    }
}

/// A broker's (or a cluster's) bootstrap address, and how to make clients for it.
#[derive(Debug, Clone)]
pub struct Broker {
    pub address: String,
}

/// What `RISKGATE_TEST_BROKER` asks for.
enum Choice {
    Kafka,
    Tansu,
    Own(String),
}

fn choice() -> Choice {
    match std::env::var("RISKGATE_TEST_BROKER").ok().as_deref() {
        None | Some("") | Some("kafka") => Choice::Kafka,
        Some("tansu") => Choice::Tansu,
        Some(address) => Choice::Own(address.to_owned()),
    }
}

/// librdkafka properties the chosen broker needs in the service's `[kafka.librdkafka]`.
pub fn client_tuning() -> &'static str {
    match choice() {
        // Tansu answers a fetch only when its wait is over, even if records arrived meanwhile.
        Choice::Tansu => "\"fetch.wait.max.ms\" = \"50\"",
        Choice::Kafka | Choice::Own(_) => "",
    }
}

/// The repository's scripts directory.
fn scripts() -> PathBuf {
    super::repo().join("scripts")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// The Kafka version the scripts run (`scripts/kafka-broker.sh --version`).
pub fn kafka_version() -> String {
    let out = Command::new(scripts().join("kafka-broker.sh"))
        .arg("--version")
        .output()
        .expect("run scripts/kafka-broker.sh --version");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl Broker {
    /// The broker the tests of this process share, started on first use (see the module
    /// documentation for the choice).
    pub fn shared() -> Broker {
        static SHARED: OnceLock<Broker> = OnceLock::new();
        SHARED
            .get_or_init(|| match choice() {
                Choice::Kafka => {
                    let node = KafkaNode::spawn_shared();
                    let broker = node.broker();
                    // Lives as long as the process; the script stops with it.
                    std::mem::forget(node);
                    broker
                }
                Choice::Tansu => start_tansu(),
                Choice::Own(address) => Broker { address },
            })
            .clone()
    }

    /// A broker this harness did not start (rdkafka's in-process mock cluster).
    pub fn external(address: String) -> Broker {
        Broker { address }
    }

    pub fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.address);
        c
    }

    fn admin(&self) -> AdminClient<DefaultClientContext> {
        self.client().create().unwrap()
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        self.create_topic_with(name, partitions, 1, &[]);
    }

    /// Creates `name` with `partitions` partitions replicated `replicas` times, with topic
    /// `configs` (e.g. `min.insync.replicas`), and waits until its metadata shows them all
    /// with a leader.
    pub fn create_topic_with(
        &self,
        name: &str,
        partitions: i32,
        replicas: i32,
        configs: &[(&str, &str)],
    ) {
        let admin = self.admin();
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replicas));
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        wait_admin(
            "create",
            admin.create_topics([&topic], &AdminOptions::new()),
        );
        let probe: BaseProducer = self.client().create().unwrap();
        wait_for("the topic to appear", Duration::from_secs(30), || {
            let md = probe
                .client()
                .fetch_metadata(Some(name), Duration::from_secs(5))
                .ok()?;
            let t = md.topics().first()?;
            (t.partitions().len() as i32 == partitions
                && t.partitions().iter().all(|p| p.leader() >= 0))
            .then_some(())
        });
    }

    /// Replaces the dynamic topic configs of `name` with `configs` (e.g. `max.message.bytes`;
    /// Kafka's AlterConfigs: a config not given goes back to its default).
    pub fn alter_topic(&self, name: &str, configs: &[(&str, &str)]) {
        use rdkafka::admin::{AlterConfig, ResourceSpecifier};
        let admin = self.admin();
        let mut alter = AlterConfig::new(ResourceSpecifier::Topic(name));
        for (k, v) in configs {
            alter = alter.set(k, v);
        }
        wait_admin("alter", admin.alter_configs([&alter], &AdminOptions::new()));
    }

    /// How many partitions `topic` has (0 when it does not exist).
    pub fn partitions(&self, topic: &str) -> usize {
        let probe: BaseProducer = self.client().create().unwrap();
        probe
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .ok()
            .and_then(|md| md.topics().first().map(|t| t.partitions().len()))
            .unwrap_or(0)
    }

    /// The leader of every partition of `topic` (-1: none), as the metadata says now.
    pub fn leaders(&self, topic: &str) -> Vec<i32> {
        let probe: BaseProducer = self.client().create().unwrap();
        let Ok(md) = probe
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(5))
        else {
            return Vec::new();
        };
        let mut out: Vec<(i32, i32)> = md
            .topics()
            .first()
            .map(|t| {
                t.partitions()
                    .iter()
                    .map(|p| (p.id(), p.leader()))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out.into_iter().map(|(_, l)| l).collect()
    }
}

/// Tansu with memory storage, the old test broker (an explicit choice).
fn start_tansu() -> Broker {
    let address = format!("127.0.0.1:{}", free_port());
    let url = format!("tcp://{address}");
    let child = Command::new(tool("tansu"))
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
            "--storage-engine",
            "memory://tansu/",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start tansu (scripts/install-broker.sh --tansu installs it)");
    // Tansu has no watch of its own: it lives as long as this process.
    std::mem::forget(child);
    wait_for(
        "tansu to accept connections",
        Duration::from_secs(20),
        || TcpStream::connect(&address).ok(),
    );
    Broker { address }
}

/// One Apache Kafka node (broker and controller in one process) run by
/// `scripts/kafka-broker.sh` in a process group of its own, so that [`KafkaNode::kill`] is a
/// real kill -9 of the JVM.
pub struct KafkaNode {
    pub id: u32,
    pub port: u16,
    pub data: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    log: PathBuf,
}

impl KafkaNode {
    /// A single-node Kafka of this test's own, on a fresh data directory under `dir`.
    pub fn start(dir: &Path) -> KafkaNode {
        let mut node = KafkaNode::new(1, free_port(), dir.join("kafka-1"), Vec::new());
        node.resume();
        node.wait_serving(1);
        node
    }

    /// Starts the process again on its data directory and waits until it serves metadata.
    pub fn restart(&mut self) {
        self.resume();
        self.wait_serving(1);
    }

    fn spawn_shared() -> KafkaNode {
        let data = std::env::temp_dir().join(super::unique("riskgate-test-kafka"));
        let args = vec![
            "--watch-pid".to_owned(),
            std::process::id().to_string(),
            "--ephemeral".to_owned(),
        ];
        let mut node = KafkaNode::new(1, free_port(), data, args);
        node.resume();
        node.wait_serving(1);
        node
    }

    fn new(id: u32, port: u16, data: PathBuf, args: Vec<String>) -> KafkaNode {
        std::fs::create_dir_all(&data).unwrap();
        let log = data.with_extension("log");
        KafkaNode {
            id,
            port,
            data,
            args,
            child: None,
            log,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn broker(&self) -> Broker {
        Broker {
            address: self.address(),
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the process (again, on the same data directory) and waits for its port.
    pub fn resume(&mut self) {
        let started = Instant::now();
        self.spawn();
        self.wait_listening(started);
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "node {} is running", self.id);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(scripts().join("kafka-broker.sh"))
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--data")
            .arg(&self.data)
            .arg("--node-id")
            .arg(self.id.to_string())
            .args(&self.args)
            .env("RISKGATE_TOOLS", tools())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("start scripts/kafka-broker.sh");
        self.child = Some(child);
    }

    fn wait_listening(&mut self, started: Instant) {
        let address = self.address();
        let what = format!("Kafka node {} to listen on {address}", self.id);
        let deadline = Instant::now() + Duration::from_secs(90);
        while TcpStream::connect(&address).is_err() {
            if let Some(status) = exited(&mut self.child) {
                panic!(
                    "Kafka node {} exited ({status}) before listening; its output:\n{}",
                    self.id,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "Kafka node {} listening on {address} after {:.1} s",
            self.id,
            started.elapsed().as_secs_f64()
        );
    }

    /// Waits until the metadata this node serves lists `brokers` brokers and a controller.
    fn wait_serving(&self, brokers: usize) {
        let probe: BaseProducer = self.broker().client().create().unwrap();
        wait_for(
            &format!("Kafka node {} to serve metadata", self.id),
            Duration::from_secs(90),
            || {
                let md = probe
                    .client()
                    .fetch_metadata(None, Duration::from_secs(2))
                    .ok()?;
                (md.brokers().len() >= brokers).then_some(())
            },
        );
    }

    fn group_signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args([signal, "--", &format!("-{}", child.id())])
                .status();
        }
    }

    /// kill -9 of the JVM (and its wrapper): no controlled shutdown, nothing flushed.
    pub fn kill(&mut self) {
        self.group_signal("-KILL");
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }

    /// SIGTERM: a controlled shutdown; the script exits 0.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                self.child = Some(child);
                self.kill();
                panic!("Kafka node did not stop within 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for KafkaNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three (or more) Kafka nodes on loopback, each broker and controller, one quorum.
pub struct KafkaCluster {
    pub nodes: Vec<KafkaNode>,
    _dir: tempfile::TempDir,
}

impl KafkaCluster {
    /// `size` nodes, each with the broker `properties` (`key=value`) on top of the script's.
    pub fn start(size: u32, properties: &[&str]) -> KafkaCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let voters = ports
            .iter()
            .enumerate()
            .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        // One cluster id for all: a Kafka Uuid (16 bytes, base64url without padding).
        let cluster_id = "AQIDBAUGBwgJCgsMDQ4PEA".to_owned();
        let mut nodes: Vec<KafkaNode> = ports
            .iter()
            .enumerate()
            .map(|(i, (port, _))| {
                let id = i as u32 + 1;
                let mut args = vec![
                    "--voters".to_owned(),
                    voters.clone(),
                    "--cluster-id".to_owned(),
                    cluster_id.clone(),
                    "--heap".to_owned(),
                    "384m".to_owned(),
                ];
                for p in properties {
                    args.push("--property".to_owned());
                    args.push((*p).to_owned());
                }
                KafkaNode::new(id, *port, dir.path().join(format!("kafka-{id}")), args)
            })
            .collect();
        // Started together: a controller quorum needs a majority before anyone serves.
        let started = Instant::now();
        for node in &mut nodes {
            node.spawn();
        }
        for node in &mut nodes {
            node.wait_listening(started);
        }
        for node in &nodes {
            node.wait_serving(size as usize);
        }
        KafkaCluster { nodes, _dir: dir }
    }

    /// Every node's address: clients bootstrap from any that is up.
    pub fn broker(&self) -> Broker {
        Broker {
            address: self
                .nodes
                .iter()
                .map(KafkaNode::address)
                .collect::<Vec<_>>()
                .join(","),
        }
    }

    pub fn node(&mut self, id: i32) -> &mut KafkaNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id as i32 == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }
}
