//! Velocity state: bucketed sliding windows in event time, per counter and key.
//!
//! A counter with window `W` and resolution `R` keeps, per key, one bucket per `R`-wide slice
//! of event time that saw a contribution (buckets are aligned to the Unix epoch). The value
//! seen by an intent created at `t` aggregates the buckets whose index lies in
//! `[bucket(t) - n, bucket(t)]` with `n = ceil(W / R)`. That span covers the whole window
//! `(t - W, t]`, so a counter never misses a contribution inside its window: it fails closed,
//! and may also count contributions up to one resolution older than the window, or later
//! than `t` within `t`'s own bucket. Memory is bounded: buckets that fell more than two
//! windows behind the partition's watermark are dropped, and so are keys left with no bucket.

use std::collections::{HashSet, VecDeque};

use dashmap::mapref::one::RefMut;
use dashmap::DashMap;
use rust_decimal::Decimal;

use crate::rules::{Aggregate, CounterDef};

/// What one intent adds to a counter.
#[derive(Debug, Clone, PartialEq)]
pub enum Contribution {
    One,
    Amount(Decimal),
    Item(Box<str>),
}

/// A counter's value as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterValue {
    Int(i64),
    Num(Decimal),
}

#[derive(Debug, Clone)]
enum Agg {
    Count(u64),
    Sum(Decimal),
    Max(Decimal),
    Distinct(Vec<Box<str>>),
}

impl Agg {
    fn empty(kind: Aggregate) -> Agg {
        match kind {
            Aggregate::Count => Agg::Count(0),
            Aggregate::Sum => Agg::Sum(Decimal::ZERO),
            Aggregate::Max => Agg::Max(Decimal::ZERO),
            Aggregate::Distinct => Agg::Distinct(Vec::new()),
        }
    }

    fn add(&mut self, c: Contribution) {
        match (self, c) {
            (Agg::Count(n), _) => *n += 1,
            (Agg::Sum(s), Contribution::Amount(a)) => *s = s.saturating_add(a),
            (Agg::Max(m), Contribution::Amount(a)) => *m = (*m).max(a),
            (Agg::Distinct(items), Contribution::Item(i)) if !items.contains(&i) => items.push(i),
            // A contribution of the wrong shape is never built by the engine.
            _ => {}
        }
    }
}

/// The buckets of one key, sorted by bucket index.
#[derive(Debug, Default)]
struct Series {
    buckets: VecDeque<(i64, Agg)>,
}

impl Series {
    fn aggregate(&self, kind: Aggregate, from: i64, to: i64) -> CounterValue {
        let start = self.buckets.partition_point(|(b, _)| *b <= from);
        let live = self
            .buckets
            .range(start..)
            .take_while(|(b, _)| *b <= to)
            .map(|(_, a)| a);
        match kind {
            Aggregate::Count => CounterValue::Int(
                live.map(|a| if let Agg::Count(n) = a { *n as i64 } else { 0 })
                    .sum(),
            ),
            Aggregate::Sum => CounterValue::Num(live.fold(Decimal::ZERO, |acc, a| match a {
                Agg::Sum(s) => acc.saturating_add(*s),
                _ => acc,
            })),
            Aggregate::Max => CounterValue::Num(live.fold(Decimal::ZERO, |acc, a| match a {
                Agg::Max(m) => acc.max(*m),
                _ => acc,
            })),
            Aggregate::Distinct => {
                let mut seen: HashSet<&str> = HashSet::new();
                for a in live {
                    if let Agg::Distinct(items) = a {
                        seen.extend(items.iter().map(|i| &**i));
                    }
                }
                CounterValue::Int(seen.len() as i64)
            }
        }
    }

    fn add(&mut self, kind: Aggregate, bucket: i64, c: Contribution) {
        // Usually the newest bucket, or a new one after it.
        let at = match self.buckets.back_mut() {
            Some((b, agg)) if *b == bucket => return agg.add(c),
            Some((b, _)) if *b < bucket => self.buckets.len(),
            None => 0,
            Some(_) => self.buckets.partition_point(|(b, _)| *b < bucket),
        };
        match self.buckets.get_mut(at) {
            Some((b, agg)) if *b == bucket => agg.add(c),
            _ => {
                let mut agg = Agg::empty(kind);
                agg.add(c);
                self.buckets.insert(at, (bucket, agg));
            }
        }
    }

    /// Drops buckets at or below `floor`.
    fn prune(&mut self, floor: i64) {
        while self.buckets.front().is_some_and(|(b, _)| *b <= floor) {
            self.buckets.pop_front();
        }
    }
}

/// The windows of one counter.
#[derive(Debug)]
struct Windows {
    kind: Aggregate,
    resolution_ns: i64,
    buckets: i64,
    keys: DashMap<Box<str>, Series, ahash::RandomState>,
}

/// Sizes of the velocity state, for reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSize {
    pub keys: usize,
    pub buckets: usize,
}

/// One key of one counter, held while one intent is decided.
pub struct Slot<'v> {
    window: &'v Windows,
    series: RefMut<'v, Box<str>, Series>,
    bucket: i64,
}

impl Slot<'_> {
    /// The value the intent sees: contributions before it, in its window.
    pub fn value(&self) -> CounterValue {
        let w = self.window;
        self.series
            .aggregate(w.kind, self.bucket - w.buckets - 1, self.bucket)
    }

    /// Adds the intent's contribution; buckets behind the retention floor of `watermark_ns`
    /// are dropped on the way.
    pub fn add(&mut self, c: Contribution, watermark_ns: i64) {
        let floor = self.window.floor(watermark_ns);
        if self.bucket > floor {
            self.series.add(self.window.kind, self.bucket, c);
        }
        self.series.prune(floor);
    }
}

/// The velocity state of one partition: every counter's windows.
#[derive(Debug)]
pub struct Velocity {
    counters: Vec<Windows>,
}

impl Velocity {
    pub fn new(defs: &[CounterDef]) -> Velocity {
        Velocity {
            counters: defs
                .iter()
                .map(|d| Windows {
                    kind: d.aggregate,
                    resolution_ns: d.resolution.num_nanoseconds().unwrap_or(i64::MAX).max(1),
                    buckets: d.buckets,
                    keys: DashMap::default(),
                })
                .collect(),
        }
    }

    /// The series of `counter` for `key`, locked for one intent created at `at_ns`: read it
    /// before deciding, contribute to it after, with one map lookup.
    pub fn slot(&self, counter: usize, key: String, at_ns: i64) -> Slot<'_> {
        let window = &self.counters[counter];
        let series = match window.keys.get_mut(key.as_str()) {
            Some(s) => s,
            None => window.keys.entry(key.into_boxed_str()).or_default(),
        };
        Slot {
            window,
            series,
            bucket: at_ns.div_euclid(window.resolution_ns),
        }
    }

    /// The value of `counter` for `key` as seen by an intent created at `at_ns`.
    pub fn value(&self, counter: usize, key: &str, at_ns: i64) -> CounterValue {
        let w = &self.counters[counter];
        let b = at_ns.div_euclid(w.resolution_ns);
        match w.keys.get(key) {
            Some(series) => series.aggregate(w.kind, b - w.buckets - 1, b),
            None => Series::default().aggregate(w.kind, 0, 0),
        }
    }

    /// Adds a contribution at `at_ns`; buckets behind the retention floor of
    /// `watermark_ns` are dropped on the way.
    pub fn add(&self, counter: usize, key: &str, at_ns: i64, c: Contribution, watermark_ns: i64) {
        let w = &self.counters[counter];
        let b = at_ns.div_euclid(w.resolution_ns);
        let floor = w.floor(watermark_ns);
        if b <= floor {
            return; // Too old to be seen by any intent the state still answers for.
        }
        let mut series = match w.keys.get_mut(key) {
            Some(s) => s,
            None => w.keys.entry(Box::from(key)).or_default(),
        };
        series.add(w.kind, b, c);
        series.prune(floor);
    }

    /// Drops every bucket behind the retention floor, and keys left empty.
    pub fn sweep(&self, watermark_ns: i64) {
        for w in &self.counters {
            let floor = w.floor(watermark_ns);
            w.keys.retain(|_, s| {
                s.prune(floor);
                !s.buckets.is_empty()
            });
        }
    }

    pub fn size(&self) -> StateSize {
        let mut size = StateSize::default();
        for w in &self.counters {
            size.keys += w.keys.len();
            size.buckets += w.keys.iter().map(|s| s.buckets.len()).sum::<usize>();
        }
        size
    }
}

impl Windows {
    /// Buckets at or below this index can no longer matter: they are more than two windows
    /// behind the watermark (one window of history for intents up to one window late).
    fn floor(&self, watermark_ns: i64) -> i64 {
        watermark_ns
            .div_euclid(self.resolution_ns)
            .saturating_sub(2 * self.buckets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Ruleset;
    use std::path::PathBuf;
    use std::str::FromStr;

    const MIN: i64 = 60_000_000_000;

    fn velocity(aggregate: &str, field: &str) -> Velocity {
        let text = format!(
            "[[counter]]\nid = \"c\"\nkey = [\"account_id\"]\naggregate = \"{aggregate}\"\n{field}window = \"1h\"\n\n[[rule]]\nid = \"r\"\nwhen = 'counters.c > 0'\naction = \"hold\"\n"
        );
        let rs = Ruleset::load_sources(&[(PathBuf::from("t.toml"), text)]).unwrap();
        assert_eq!(
            rs.counters[0].buckets, 60,
            "default resolution is window/60"
        );
        Velocity::new(&rs.counters)
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn count_slides_with_event_time() {
        let v = velocity("count", "");
        for i in 0..10 {
            v.add(0, "a", i * MIN, Contribution::One, i * MIN);
        }
        assert_eq!(v.value(0, "a", 9 * MIN), CounterValue::Int(10));
        assert_eq!(
            v.value(0, "b", 9 * MIN),
            CounterValue::Int(0),
            "keys are separate"
        );
        // At 60 min, minute 0 is exactly one window old: its bucket still counts (fail closed).
        assert_eq!(v.value(0, "a", 60 * MIN), CounterValue::Int(10));
        assert_eq!(
            v.value(0, "a", 60 * MIN + 59_999_999_999),
            CounterValue::Int(10)
        );
        // One bucket later it has left.
        assert_eq!(v.value(0, "a", 61 * MIN), CounterValue::Int(9));
        assert_eq!(v.value(0, "a", 70 * MIN), CounterValue::Int(0));
        // An intent earlier than all contributions sees none of them.
        assert_eq!(v.value(0, "a", -MIN), CounterValue::Int(0));
    }

    #[test]
    fn sums_are_exact() {
        let v = velocity("sum", "field = \"amount\"\n");
        for i in 0..10 {
            v.add(0, "a", i, Contribution::Amount(dec("0.10")), i);
        }
        assert_eq!(v.value(0, "a", 10), CounterValue::Num(dec("1.00")));
        assert_eq!(v.value(0, "a", 10), CounterValue::Num(dec("1")));
    }

    #[test]
    fn max_and_distinct() {
        let v = velocity("max", "field = \"amount\"\n");
        assert_eq!(
            v.value(0, "a", 0),
            CounterValue::Num(Decimal::ZERO),
            "max of nothing is 0"
        );
        v.add(0, "a", 0, Contribution::Amount(dec("5")), 0);
        v.add(0, "a", MIN, Contribution::Amount(dec("7.5")), MIN);
        v.add(0, "a", 2 * MIN, Contribution::Amount(dec("1")), 2 * MIN);
        assert_eq!(v.value(0, "a", 2 * MIN), CounterValue::Num(dec("7.5")));

        let v = velocity("distinct", "field = \"counterparty.id\"\n");
        for (i, cp) in ["x", "y", "x", "z", "y"].iter().enumerate() {
            v.add(
                0,
                "a",
                i as i64 * MIN,
                Contribution::Item((*cp).into()),
                i as i64 * MIN,
            );
        }
        assert_eq!(v.value(0, "a", 4 * MIN), CounterValue::Int(3));
    }

    #[test]
    fn late_contributions_land_in_their_own_bucket() {
        let v = velocity("count", "");
        v.add(0, "a", 30 * MIN, Contribution::One, 30 * MIN);
        v.add(0, "a", 10 * MIN, Contribution::One, 30 * MIN);
        assert_eq!(v.value(0, "a", 15 * MIN), CounterValue::Int(1));
        assert_eq!(v.value(0, "a", 30 * MIN), CounterValue::Int(2));
    }

    #[test]
    fn memory_is_bounded_by_the_watermark() {
        let v = velocity("count", "");
        for k in 0..100 {
            v.add(0, &format!("k{k}"), 0, Contribution::One, 0);
        }
        assert_eq!(
            v.size(),
            StateSize {
                keys: 100,
                buckets: 100
            }
        );
        // One window later everything is still kept, for intents up to a window late.
        v.sweep(60 * MIN);
        assert_eq!(v.size().keys, 100);
        // Two windows and a bucket later, all of it is gone.
        v.sweep(121 * MIN);
        assert_eq!(v.size(), StateSize::default());
        // Contributions behind the retention floor are not stored at all.
        v.add(0, "old", 0, Contribution::One, 500 * MIN);
        assert_eq!(v.size().keys, 0);
    }

    #[test]
    fn adding_prunes_the_keys_own_old_buckets() {
        let v = velocity("count", "");
        for i in 0..1000 {
            v.add(0, "a", i * MIN, Contribution::One, i * MIN);
        }
        assert!(v.size().buckets <= 121, "{:?}", v.size());
        assert_eq!(v.value(0, "a", 999 * MIN), CounterValue::Int(61));
    }
}
