//! What one output record costs the service's thread, without Kafka: parse, decide and write
//! each generated intent as the service writes its decision record (the intent embedded),
//! and with `--mac` also sign it as the service does and verify it as restore does. Made to
//! run under callgrind, whose instruction counts repeat exactly (docs/performance.md):
//!
//! ```sh
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.mac.20k \
//!     target/release/examples/record_cost --count 20000 --mac
//! ```
//!
//! The difference of two counts over the difference of their `--count` is the cost of one
//! record; with and without `--mac`, the MAC's.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // A measurement fails loudly.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::Parser;

use riskgate::integrity::{Integrity, Keys, Secret};
use riskgate_core::decision::Source;
use riskgate_core::engine::{Clock, Engine, EngineOptions, Processed, RecordKey};
use riskgate_core::intent::DEFAULT_MAX_BYTES;
use riskgate_core::rules::Ruleset;
use riskgate_test_support::generator as gen;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Intents to decide (generated: seed 5, 2,000 accounts, valid only).
    #[arg(long, default_value_t = 20_000)]
    count: u64,
    /// Sign each record and verify it, as the service and restore do.
    #[arg(long)]
    mac: bool,
}

fn main() {
    let args = Args::parse();
    riskgate::allocator::keep_freed_memory();
    let mut raw = Vec::new();
    gen::generate(
        &gen::Args {
            count: args.count,
            seed: 5,
            accounts: 2_000,
            valid_only: true,
        },
        &mut raw,
    )
    .unwrap();
    let rules = Ruleset::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("rules")).unwrap();
    let mut engine = Engine::new(
        Arc::new(rules),
        EngineOptions {
            max_future_skew: None,
            ..EngineOptions::default()
        },
    );
    let integrity = Integrity {
        keys: Some(Keys::new(
            BTreeMap::from([("k1".to_owned(), Secret::new(&[7; 32]))]),
            "k1".to_owned(),
        )),
        require: true,
    };
    let topic: Arc<str> = Arc::from("intents");
    let now: DateTime<Utc> = "2026-11-28T00:00:00Z".parse().unwrap();
    let (mut out, mut key) = (Vec::with_capacity(4096), Vec::with_capacity(64));
    let (mut bytes, mut signed) = (0usize, 0usize);
    for (i, payload) in raw
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
    {
        let source = Source::Kafka {
            topic: topic.clone(),
            partition: 0,
            offset: i as i64,
        };
        out.clear();
        match engine.process(
            payload,
            DEFAULT_MAX_BYTES,
            RecordKey::Unchecked,
            source,
            Clock::At(now),
        ) {
            Processed::Decided(d) => {
                d.write_json(&mut out, Some(payload));
                // The record key the service keeps: the intent's, its account id.
                key.clear();
                key.extend_from_slice(d.head.account_id.as_bytes());
            }
            Processed::Invalid(letter) => panic!("a generated intent is invalid: {letter:?}"),
        }
        bytes += out.len();
        if args.mac {
            let mac = integrity.sign("decisions", Some(&key), &out).unwrap();
            integrity
                .check("decisions", Some(&key), &out, Some(mac.as_bytes()))
                .unwrap();
            signed += 1;
        }
    }
    println!(
        "{} records, {bytes} bytes, {signed} signed and verified",
        args.count
    );
}
