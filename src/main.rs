//! The `riskgate` command line: parses arguments, calls the library, maps errors to exit codes.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::{TimeDelta, Utc};
use clap::{Parser, Subcommand};

use riskgate::config::{Config, Purpose};
use riskgate_core::decision::Outcome;
use riskgate_core::engine::{Engine, EngineOptions};
use riskgate_core::expr::{parse_duration, DurationError};
use riskgate_core::intent::{FieldPath, InvalidKind, DEFAULT_MAX_BYTES};
use riskgate_core::replay::{replay, Summary};
use riskgate_core::rules::Ruleset;
use riskgate_core::testing;

/// riskgate: decides whether an AI agent or service account may perform a proposed
/// financial action now (allow / hold / deny, with every reason).
#[derive(Parser)]
#[command(version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a ruleset and print its version; every error is listed with file, line,
    /// column and rule.
    Check {
        /// The rules directory: every `*.toml` directly in it.
        #[arg(default_value = "rules")]
        rules_dir: PathBuf,
        /// The intent field the intents topic is keyed by (`[kafka] partition_key`).
        #[arg(long, default_value = "account_id", value_parser = field_path_arg)]
        partition_key: FieldPath,
        /// How many partitions the intents topic has: with more than one, every counter's key
        /// must contain the partition key, as the service checks at start.
        #[arg(long, default_value_t = 1)]
        partitions: i32,
    },
    /// Run the rule tests in RULES_DIR/tests/*.toml; a failing case shows expected vs actual.
    Test {
        /// The rules directory; its tests are in `tests/` below it.
        #[arg(default_value = "rules")]
        rules_dir: PathBuf,
    },
    /// Decide a JSON-lines stream of intents offline, with the same engine as the service:
    /// one decision line per valid intent, in input order.
    Replay(ReplayArgs),
    /// Run the Kafka service: consume intents, decide, produce decisions and dead letters
    /// exactly once. Stops cleanly on SIGTERM; reloads the rules on SIGHUP and on change.
    Run {
        /// The configuration file (see riskgate.example.toml); RISKGATE__SECTION__KEY
        /// environment variables override it.
        #[arg(long, default_value = "riskgate.toml")]
        config: PathBuf,
        /// Log format: `text` for people, `json` for log pipelines. RUST_LOG filters.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Run the review service: the page and API where people approve or reject held
    /// intents, publishing review records on the decisions topic. Reads `[kafka]` and
    /// `[review]` of the configuration file.
    Review {
        /// The configuration file (see riskgate.example.toml); RISKGATE__SECTION__KEY
        /// environment variables override it.
        #[arg(long, default_value = "riskgate.toml")]
        config: PathBuf,
        /// Log format: `text` for people, `json` for log pipelines. RUST_LOG filters.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Run the gateway: the HTTP API where agents propose intents and get their decisions
    /// (docs/gateway.md). Reads `[kafka]`, `[engine]`, `[integrity]` and `[gateway]`; the
    /// keys reload on SIGHUP and when the file changes.
    Gateway {
        /// The configuration file (see riskgate.example.toml); RISKGATE__SECTION__KEY
        /// environment variables override it.
        #[arg(long, default_value = "riskgate.toml")]
        config: PathBuf,
        /// Log format: `text` for people, `json` for log pipelines. RUST_LOG filters.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Make an API key for the gateway: prints the key (give it to the agent; it is not
    /// stored) and the `[[gateway.keys]]` entry with its SHA-256 for the configuration.
    GatewayKey {
        /// The agent_id the key speaks for.
        #[arg(long)]
        agent: String,
    },
    /// Check a health endpoint, for container healthchecks in images without curl: exits 0
    /// when `GET URL` answers 200 within the timeout, 1 otherwise (saying why).
    Probe {
        /// A plain-HTTP URL, e.g. `http://127.0.0.1:9464/readyz`.
        url: String,
        /// How long to wait for the answer.
        #[arg(long, default_value = "3s", value_parser = duration_arg)]
        timeout: TimeDelta,
    },
    /// Hash a reviewer's secret for `[[review.reviewers]]` `secret_hash`: reads the secret
    /// from the first line of standard input, prints an Argon2id hash (PHC format).
    HashSecret,
    /// Validate a service configuration and print it as it takes effect (environment
    /// overrides applied, secrets redacted).
    Config {
        #[arg(long, default_value = "riskgate.toml")]
        config: PathBuf,
    },
}

/// `riskgate replay`'s arguments.
#[derive(clap::Args)]
struct ReplayArgs {
    /// The rules directory.
    #[arg(long, default_value = "rules")]
    rules: PathBuf,
    /// Intents, one JSON object per line; `-` reads standard input. Blank lines are skipped.
    #[arg(long, default_value = "-")]
    input: String,
    /// Where decisions go; `-` is standard output.
    #[arg(long, default_value = "-")]
    output: String,
    /// Where dead letters (invalid lines, with the error and the original payload) go;
    /// standard error when not given.
    #[arg(long)]
    dlq: Option<PathBuf>,
    /// Largest accepted intent, in bytes; larger lines are dead letters of kind `too_large`.
    #[arg(long, default_value_t = DEFAULT_MAX_BYTES)]
    max_intent_bytes: usize,
    /// A repeated `intent_id` within this much event time is a duplicate.
    #[arg(long, default_value = "24h", value_parser = duration_arg)]
    duplicate_horizon: TimeDelta,
    /// Cap the watermark at the wall clock plus this much, as the service does, so that an
    /// intent dated far in the future cannot expire velocity state. Off by default: a
    /// replay's decisions then depend only on its input, not on when it runs.
    #[arg(long, value_parser = duration_arg)]
    max_future_skew: Option<TimeDelta>,
    /// The intent field intents are keyed by (`[kafka] partition_key`): an intent id is
    /// a duplicate within the intents of the same value of it.
    #[arg(long, default_value = "account_id", value_parser = field_path_arg)]
    partition_key: FieldPath,
    /// Print no summary on standard error.
    #[arg(long, short)]
    quiet: bool,
    /// Exit with status 2 when any line was invalid (a dead letter), after writing every
    /// decision and dead letter. Without it, dead letters do not change the exit status
    /// (0), as the service goes on after them.
    #[arg(long)]
    fail_on_dead_letters: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Deciding allocates many small, short-lived strings; mimalloc handles that pattern far
/// better than the system allocator (measured: docs/performance.md, the ledger).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn field_path_arg(s: &str) -> Result<FieldPath, String> {
    FieldPath::parse(s).ok_or_else(|| {
        format!("`{s}` is not an intent field; use `account_id`, `agent_id`, `intent_id`, `action`, `currency`, `counterparty.<field>` or `attributes.<path>`")
    })
}

fn duration_arg(s: &str) -> Result<TimeDelta, DurationError> {
    parse_duration(s)
}

fn main() -> ExitCode {
    riskgate::allocator::keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check {
            rules_dir,
            partition_key,
            partitions,
        } => check(&rules_dir, &partition_key, partitions),
        Command::Test { rules_dir } => test(&rules_dir),
        Command::Replay(args) => run_replay(&args),
        Command::Run { config, log_format } => run(&config, log_format),
        Command::Review { config, log_format } => review(&config, log_format),
        Command::Gateway { config, log_format } => gateway(&config, log_format),
        Command::GatewayKey { agent } => gateway_key(&agent),
        Command::Probe { url, timeout } => probe(&url, timeout),
        Command::HashSecret => hash_secret(),
        Command::Config { config } => Config::load(&config, std::env::vars())
            .map(|c| {
                print!("{c}");
                ExitCode::SUCCESS
            })
            .map_err(anyhow::Error::from),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            if e.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS; // The reader went away (`| head`): not an error.
            }
            eprintln!("riskgate: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads a ruleset, printing every load error; `None` when it does not load.
fn load(dir: &Path) -> Option<Arc<Ruleset>> {
    match Ruleset::load_dir(dir) {
        Ok(rs) => Some(Arc::new(rs)),
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("{e}");
            }
            let n = errors.0.len();
            eprintln!(
                "riskgate: error: the ruleset in `{}` has {n} problem{}; fix {} and run `riskgate check` again",
                dir.display(),
                if n == 1 { "" } else { "s" },
                if n == 1 { "it" } else { "them" },
            );
            None
        }
    }
}

fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let colors = io::stderr().is_terminal();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colors)
        // Every line is one event: control characters in what callers sent (a newline in an
        // intent id, a terminal escape) are escaped, in every format.
        .with_writer(move || riskgate::logs::OneLine::new(io::stderr(), colors));
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}

fn run(config: &Path, format: LogFormat) -> Result<ExitCode> {
    init_logs(format);
    let config = Config::load(config, std::env::vars())?;
    let Some(rs) = load(&config.rules.dir) else {
        return Ok(ExitCode::FAILURE);
    };
    tracing::info!(version = %rs.version, rules = rs.rules.len(), counters = rs.counters.len(), dir = %config.rules.dir.display(), "ruleset loaded");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(riskgate::service::run(config, rs))?;
    Ok(ExitCode::SUCCESS)
}

fn review(config: &Path, format: LogFormat) -> Result<ExitCode> {
    init_logs(format);
    let config = Config::load_for(config, std::env::vars(), Purpose::Review)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(riskgate::review::run(config))?;
    Ok(ExitCode::SUCCESS)
}

fn gateway(path: &Path, format: LogFormat) -> Result<ExitCode> {
    init_logs(format);
    let config = Config::load_for(path, std::env::vars(), Purpose::Gateway)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(riskgate::gateway::run(config, path.to_owned()))?;
    Ok(ExitCode::SUCCESS)
}

fn gateway_key(agent: &str) -> Result<ExitCode> {
    let agent = agent.trim();
    if agent.is_empty() {
        eprintln!("riskgate: error: --agent is empty; name the agent_id the key speaks for");
        return Ok(ExitCode::FAILURE);
    }
    let (key, sha256) = riskgate::gateway::keys::generate()
        .map_err(|e| anyhow::anyhow!("cannot draw random bytes for a key: {e}"))?;
    eprintln!("The key for `{agent}` (give it to the agent; riskgate keeps only its SHA-256):");
    println!("{key}");
    eprintln!("\nAdd this to the gateway's configuration (the keys reload without a restart):");
    let agent_toml = toml::Value::String(agent.to_owned());
    println!("\n[[gateway.keys]]\nagent = {agent_toml}\nsha256 = \"{sha256}\"");
    Ok(ExitCode::SUCCESS)
}

fn probe(url: &str, timeout: TimeDelta) -> Result<ExitCode> {
    let timeout = timeout
        .to_std()
        .unwrap_or(std::time::Duration::from_secs(3));
    match riskgate::http::probe(url, timeout) {
        Ok(200) => Ok(ExitCode::SUCCESS),
        Ok(status) => {
            eprintln!("riskgate: `{url}` answered {status}, not 200");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("riskgate: error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn hash_secret() -> Result<ExitCode> {
    if io::stdin().is_terminal() {
        eprintln!(
            "type the secret and press Enter (it is shown as you type; pipe it in to avoid that)"
        );
    }
    let mut line = String::new();
    io::stdin()
        .read_line(&mut line)
        .context("cannot read the secret from standard input")?;
    let secret = line.trim_end_matches(['\r', '\n']);
    if secret.chars().count() < 12 {
        eprintln!("riskgate: error: the secret is shorter than 12 characters; choose a longer one");
        return Ok(ExitCode::FAILURE);
    }
    let hash = riskgate::review::auth::hash_secret(secret)?;
    println!("{hash}");
    Ok(ExitCode::SUCCESS)
}

fn check(dir: &Path, partition_key: &FieldPath, partitions: i32) -> Result<ExitCode> {
    let Some(rs) = load(dir) else {
        return Ok(ExitCode::FAILURE);
    };
    if let Err(e) = rs.check_partitioning(partition_key, partitions) {
        eprintln!("riskgate: error: {e}");
        return Ok(ExitCode::FAILURE);
    }
    println!(
        "ruleset {} is valid: {} file{}, {} rules, {} counters, {} lists",
        rs.version,
        rs.files.len(),
        if rs.files.len() == 1 { "" } else { "s" },
        rs.rules.len(),
        rs.counters.len(),
        rs.list_values.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn test(dir: &Path) -> Result<ExitCode> {
    let Some(rs) = load(dir) else {
        return Ok(ExitCode::FAILURE);
    };
    let report = testing::run_dir(dir, rs);
    let mut current = None;
    for case in &report.cases {
        if current != Some(&case.file) {
            println!("{}", case.file.display());
            current = Some(&case.file);
        }
        if case.passed() {
            println!("  ok    {}", case.name);
        } else {
            println!("  FAIL  {}", case.name);
            for f in &case.failures {
                println!("        {f}");
            }
        }
    }
    for broken in &report.broken_files {
        println!("FAIL  {broken}");
    }
    if !report.uncovered.is_empty() {
        println!(
            "note: no passing case expects these rules to match: {}",
            report.uncovered.join(", ")
        );
    }
    println!(
        "ruleset {}: {} passed, {} failed",
        report.ruleset,
        report.passed(),
        report.failed()
    );
    Ok(if report.failed() == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn run_replay(args: &ReplayArgs) -> Result<ExitCode> {
    let ReplayArgs {
        rules,
        input,
        output,
        dlq,
        max_intent_bytes: max_bytes,
        duplicate_horizon,
        max_future_skew,
        partition_key,
        quiet,
        fail_on_dead_letters,
    } = args;
    let options = EngineOptions {
        duplicate_horizon: *duplicate_horizon,
        max_future_skew: *max_future_skew,
        partition_key: partition_key.clone(),
        ..EngineOptions::default()
    };
    let Some(rs) = load(rules) else {
        return Ok(ExitCode::FAILURE);
    };
    let version = rs.version.clone();
    let mut engine = Engine::new(rs, options);
    let (input, output) = (input.as_str(), output.as_str());
    let reader: Box<dyn Read> = if input == "-" {
        Box::new(io::stdin().lock())
    } else {
        Box::new(File::open(input).with_context(|| format!("cannot open the input `{input}`"))?)
    };
    let writer: Box<dyn Write> = if output == "-" {
        Box::new(BufWriter::with_capacity(1 << 16, io::stdout().lock()))
    } else {
        let f =
            File::create(output).with_context(|| format!("cannot create the output `{output}`"))?;
        Box::new(BufWriter::with_capacity(1 << 16, f))
    };
    let dead: Box<dyn Write> = match dlq {
        None => Box::new(io::stderr().lock()),
        Some(p) => {
            let f = File::create(p)
                .with_context(|| format!("cannot create the dead-letter file `{}`", p.display()))?;
            Box::new(BufWriter::new(f))
        }
    };
    let label = if input == "-" { "<stdin>" } else { input };
    let started = std::time::Instant::now();
    let summary = replay(
        &mut engine,
        reader,
        writer,
        dead,
        label,
        *max_bytes,
        Utc::now,
    )?;
    if !quiet {
        eprintln!("{}", describe(&summary, &version, started.elapsed()));
    }
    if *fail_on_dead_letters && summary.invalid > 0 {
        eprintln!(
            "riskgate: error: {} line{} of the input {} invalid (see the dead letters); exit status 2 as --fail-on-dead-letters asks",
            summary.invalid,
            if summary.invalid == 1 { "" } else { "s" },
            if summary.invalid == 1 { "was" } else { "were" },
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(s: &Summary, version: &str, elapsed: std::time::Duration) -> String {
    let mut text = format!(
        "riskgate: ruleset {version}: {} decisions ({} allow, {} hold, {} deny; {} duplicates), {} invalid",
        s.decisions,
        s.count(Outcome::Allow),
        s.count(Outcome::Hold),
        s.count(Outcome::Deny),
        s.duplicates,
        s.invalid
    );
    let kinds: Vec<String> = InvalidKind::ALL
        .iter()
        .zip(s.invalid_by_kind)
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{n} {}", k.as_str()))
        .collect();
    if !kinds.is_empty() {
        text.push_str(&format!(" ({})", kinds.join(", ")));
    }
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        text.push_str(&format!(
            " in {secs:.2} s ({:.0} lines/s)",
            s.lines as f64 / secs
        ));
    }
    if let Some(state) = s.state {
        text.push_str(&format!(
            "; state: {} counter keys, {} buckets, {} remembered intents",
            state.velocity.keys, state.velocity.buckets, state.remembered_intents
        ));
    }
    text
}
