//! Raw intent bytes in, decision bytes out, with the sample ruleset and velocity state for
//! 10,000 accounts warmed up; plus the cost split (parse, counters, rules, serialize), and the
//! service's record with and without its MAC (`record`, `record_mac`).
//!
//! Run: `cargo bench --bench decide`. Throughput is reported in decisions per second.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // A benchmark fails loudly.

use std::path::Path;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use riskgate_core::decision::Source;
use riskgate_core::engine::{Engine, EngineOptions};
use riskgate_core::intent::{parse_intent, Intent, DEFAULT_MAX_BYTES};
use riskgate_core::rules::Ruleset;

use riskgate_test_support::generator as gen;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ACCOUNTS: u32 = 10_000;
/// Enough intents (about 69 days of event time) to fill the longest retention of the sample
/// ruleset (two 30-day windows): the state is at its steady size when measuring starts.
const WARM: usize = 200_000;
const MEASURED: usize = 200_000;

fn intents() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let args = gen::Args {
        count: (WARM + MEASURED) as u64,
        seed: 7,
        accounts: std::env::var("BENCH_ACCOUNTS")
            .ok()
            .and_then(|a| a.parse().ok())
            .unwrap_or(ACCOUNTS),
        valid_only: true,
    };
    gen::generate(&args, &mut out).unwrap();
    out.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// The sample ruleset, or a part of it: `keep` says which `[[...]]` tables stay.
fn ruleset(keep: impl Fn(&str) -> bool) -> Arc<Ruleset> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("rules");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let kept: Vec<&str> = text
                .split("\n[[")
                .enumerate()
                .filter(|(i, t)| *i == 0 || keep(t))
                .map(|(_, t)| t)
                .collect();
            files.push((path, kept.join("\n[[")));
        }
    }
    files.sort();
    Arc::new(Ruleset::load_sources(&files).unwrap())
}

/// The decision time: fixed, and read once (the service reads its clock once per intent,
/// which costs less than parsing a timestamp would).
fn now() -> DateTime<Utc> {
    static NOW: LazyLock<DateTime<Utc>> = LazyLock::new(|| "2026-11-28T00:00:00Z".parse().unwrap());
    *NOW
}

/// A fresh engine that has decided the first `WARM` intents.
fn warmed(rs: &Arc<Ruleset>, parsed: &[Intent]) -> Engine {
    let mut engine = Engine::new(
        rs.clone(),
        EngineOptions {
            max_future_skew: None,
            ..EngineOptions::default()
        },
    );
    for (i, intent) in parsed[..WARM].iter().enumerate() {
        engine.decide(intent.clone(), source(i), now());
    }
    engine
}

/// Where intent `i` came from; the topic name is shared, as the service shares it.
fn source(i: usize) -> Source {
    static TOPIC: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("intents"));
    Source::Kafka {
        topic: TOPIC.clone(),
        partition: 0,
        offset: i as i64,
    }
}

/// Times `run` over `iters` measured intents, continuing where the last sample stopped and
/// starting over on a freshly warmed engine (untimed) when the measured intents run out.
struct Cursor {
    next: usize,
    engine: Option<Engine>,
}

impl Cursor {
    fn time(
        &mut self,
        iters: u64,
        rs: &Arc<Ruleset>,
        parsed: &[Intent],
        mut run: impl FnMut(&mut Engine, usize),
    ) -> Duration {
        let mut total = Duration::ZERO;
        let mut left = iters as usize;
        while left > 0 {
            if self.engine.is_none() || self.next == parsed.len() {
                self.engine = Some(warmed(rs, parsed));
                self.next = WARM;
            }
            let engine = self.engine.as_mut().unwrap();
            let n = left.min(parsed.len() - self.next);
            let start = Instant::now();
            for i in self.next..self.next + n {
                run(engine, i);
            }
            total += start.elapsed();
            self.next += n;
            left -= n;
        }
        total
    }
}

fn bench(c: &mut Criterion) {
    // As the `riskgate` binary does (src/allocator.rs).
    riskgate::allocator::keep_freed_memory();
    let raw = intents();
    let parsed: Vec<Intent> = raw
        .iter()
        .map(|b| parse_intent(b, DEFAULT_MAX_BYTES).unwrap())
        .collect();
    let full = ruleset(|_| true);
    let counters_only = ruleset(|table| table.starts_with("counter]]"));
    let nothing = ruleset(|_| false);
    assert!(counters_only.rules.is_empty() && counters_only.counters.len() == full.counters.len());
    assert!(nothing.rules.is_empty() && nothing.counters.is_empty());

    let mut group = c.benchmark_group("decide");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));

    // The whole path: bytes in, parse, decide, serialize, bytes out.
    let mut cursor = Cursor {
        next: 0,
        engine: None,
    };
    let mut out = Vec::with_capacity(4096);
    group.bench_function("pipeline", |b| {
        b.iter_custom(|iters| {
            cursor.time(iters, &full, &parsed, |engine, i| {
                let intent = parse_intent(&raw[i], DEFAULT_MAX_BYTES).unwrap();
                let d = engine.decide(intent, source(i), now());
                out.clear();
                d.write_json_line(&mut out);
            })
        })
    });

    // The service's record: the decision with its intent embedded, then also signed as the
    // service signs it ([integrity]); the difference is what the MAC costs (native: the
    // SHA-256 instructions of the CPU when it has them, which callgrind does not show).
    let integrity = riskgate::integrity::Integrity {
        keys: Some(riskgate::integrity::Keys::new(
            std::collections::BTreeMap::from([(
                "k1".to_owned(),
                riskgate::integrity::Secret::new(&[7; 32]),
            )]),
            "k1".to_owned(),
        )),
        require: true,
    };
    for (name, mac) in [("record", false), ("record_mac", true)] {
        let mut cursor = Cursor {
            next: 0,
            engine: None,
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                cursor.time(iters, &full, &parsed, |engine, i| {
                    let intent = parse_intent(&raw[i], DEFAULT_MAX_BYTES).unwrap();
                    let d = engine.decide(intent, source(i), now());
                    out.clear();
                    d.write_json(&mut out, Some(&raw[i]));
                    if mac {
                        let key = d.head.account_id.as_bytes();
                        std::hint::black_box(integrity.sign("decisions", Some(key), &out));
                    }
                })
            })
        });
    }

    // The split. Parsing alone (no state).
    let mut i = 0;
    group.bench_function("parse", |b| {
        b.iter(|| {
            i = (i + 1) % raw.len();
            parse_intent(&raw[i], DEFAULT_MAX_BYTES).unwrap()
        })
    });

    // The engine alone, on pre-parsed intents (cloning one is part of each figure):
    // `baseline` has no counters and no rules (build and remember the decision), `counters`
    // reads and contributes to every counter, `rules` adds every rule. The differences are what
    // counters and rules cost.
    for (name, rules) in [
        ("baseline", &nothing),
        ("counters", &counters_only),
        ("rules", &full),
    ] {
        let mut cursor = Cursor {
            next: 0,
            engine: None,
        };
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                cursor.time(iters, rules, &parsed, |engine, i| {
                    engine.decide(parsed[i].clone(), source(i), now());
                })
            })
        });
    }

    // Serializing a decision.
    let mut engine = warmed(&full, &parsed);
    let decisions: Vec<_> = parsed[WARM..WARM + 10_000]
        .iter()
        .enumerate()
        .map(|(i, p)| engine.decide(p.clone(), source(i), now()))
        .collect();
    let mut i = 0;
    group.bench_function("serialize", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(4096),
            |buf| {
                i = (i + 1) % decisions.len();
                decisions[i].write_json_line(buf);
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
