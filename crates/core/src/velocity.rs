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

use std::collections::HashSet;

use hashbrown::HashMap;

use compact_str::CompactString;
use rust_decimal::Decimal;
use smallvec::SmallVec;

use crate::decision::CounterValue;
use crate::intent::{FieldPath, Intent};

/// A counter's aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Count,
    Sum,
    Max,
    Distinct,
}

/// A counter's window: what it aggregates, over how many buckets of what width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub aggregate: Aggregate,
    /// Bucket width in nanoseconds (at least 1).
    pub resolution_ns: i64,
    /// The window spans this many buckets: `ceil(window / resolution)`.
    pub buckets: i64,
}

/// One counter as velocity keeps it: the intent fields its key is made of, and its window.
#[derive(Debug, Clone, Copy)]
pub struct CounterSpec<'a> {
    pub key: &'a [FieldPath],
    pub window: WindowSpec,
}

/// Why a counter has no value for an intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// The intent lacks key path `n` of the counter: fail closed.
    Key(usize),
    /// The intent is dated so far back that its window reaches state no longer kept.
    TooOld,
}

/// What one intent adds to a counter.
#[derive(Debug, Clone, PartialEq)]
pub enum Contribution {
    One,
    Amount(Decimal),
    Item(CompactString),
}

/// What a bucket holds. Counts and sums are running totals of the series up to and including
/// this bucket, so a window's value is one subtraction; maxima and distinct items are per
/// bucket.
#[derive(Debug, Clone)]
enum Agg {
    Count(u64),
    Sum(Decimal),
    Max(Decimal),
    Distinct(Vec<CompactString>),
}

impl Agg {
    fn add(&mut self, c: &Contribution) {
        match (self, c) {
            (Agg::Count(n), _) => *n += 1,
            (Agg::Sum(s), Contribution::Amount(a)) => *s = s.saturating_add(*a),
            (Agg::Max(m), Contribution::Amount(a)) => *m = (*m).max(*a),
            (Agg::Distinct(items), Contribution::Item(i)) if !items.contains(i) => {
                items.push(i.clone())
            }
            // A contribution of the wrong shape is never built by the engine.
            _ => {}
        }
    }
}

/// The buckets of one key, sorted by bucket index.
#[derive(Debug, Default)]
struct Series {
    /// Most keys see few contributions: the first bucket lives inline, without a heap block.
    buckets: SmallVec<[(i64, Agg); 1]>,
    /// The running totals before the first kept bucket (counts, sums).
    base_count: u64,
    base_sum: Decimal,
}

impl Series {
    fn aggregate(&self, kind: Aggregate, from: i64, to: i64) -> CounterValue {
        // Usually the window reaches past the newest bucket, and often past the oldest too:
        // checking the ends first saves both searches.
        let start = match self.buckets.first() {
            Some((b, _)) if *b <= from => self.buckets.partition_point(|(b, _)| *b <= from),
            _ => 0,
        };
        let end = match self.buckets.last() {
            Some((b, _)) if *b > to => self.buckets.partition_point(|(b, _)| *b <= to),
            _ => self.buckets.len(),
        };
        let live = self.buckets[start..end.max(start)].iter().map(|(_, a)| a);
        match kind {
            Aggregate::Count | Aggregate::Sum => {
                let total = |i: usize| match self.buckets.get(i).map(|(_, a)| a) {
                    Some(Agg::Count(n)) => (*n, Decimal::ZERO),
                    Some(Agg::Sum(s)) => (0, *s),
                    _ => (self.base_count, self.base_sum),
                };
                let (hi_n, hi_s) = if end > start {
                    total(end - 1)
                } else {
                    (0, Decimal::ZERO)
                };
                let (lo_n, lo_s) = if end > start {
                    total(start.wrapping_sub(1))
                } else {
                    (0, Decimal::ZERO)
                };
                if kind == Aggregate::Count {
                    CounterValue::Int(hi_n.saturating_sub(lo_n) as i64)
                } else {
                    // A difference too large to hold fails closed, as the largest value.
                    CounterValue::Num(hi_s.checked_sub(lo_s).unwrap_or(Decimal::MAX))
                }
            }
            Aggregate::Max => CounterValue::Num(live.fold(Decimal::ZERO, |acc, a| match a {
                Agg::Max(m) => acc.max(*m),
                _ => acc,
            })),
            Aggregate::Distinct => {
                let mut buckets = live.filter_map(|a| {
                    if let Agg::Distinct(items) = a {
                        Some(items)
                    } else {
                        None
                    }
                });
                let (first, rest) = (buckets.next(), buckets.next());
                let n = match (first, rest) {
                    (None, _) => 0,
                    // Items are distinct within a bucket: one bucket needs no set.
                    (Some(items), None) => items.len(),
                    (Some(a), Some(b)) => {
                        let mut seen: HashSet<&str> = a.iter().chain(b).map(|i| &**i).collect();
                        for items in buckets {
                            seen.extend(items.iter().map(|i| &**i));
                        }
                        seen.len()
                    }
                };
                CounterValue::Int(n as i64)
            }
        }
    }

    fn add(&mut self, kind: Aggregate, bucket: i64, c: Contribution) {
        // Usually the newest bucket, or a new one after it.
        let at = match self.buckets.last() {
            Some((b, _)) if *b == bucket => self.buckets.len() - 1,
            Some((b, _)) if *b < bucket => self.buckets.len(),
            None => 0,
            Some(_) => self.buckets.partition_point(|(b, _)| *b < bucket),
        };
        if !matches!(self.buckets.get(at), Some((b, _)) if *b == bucket) {
            // A new bucket starts from the running total before it: the previous bucket's,
            // or, when every earlier bucket has been pruned, the base they left behind.
            let empty = match kind {
                Aggregate::Count | Aggregate::Sum => {
                    match at.checked_sub(1).and_then(|i| self.buckets.get(i)) {
                        Some((_, prev)) => prev.clone(),
                        None if kind == Aggregate::Count => Agg::Count(self.base_count),
                        None => Agg::Sum(self.base_sum),
                    }
                }
                Aggregate::Max => Agg::Max(Decimal::ZERO),
                Aggregate::Distinct => Agg::Distinct(Vec::new()),
            };
            self.buckets.insert(at, (bucket, empty));
        }
        let running = matches!(kind, Aggregate::Count | Aggregate::Sum);
        let last = if running { self.buckets.len() } else { at + 1 };
        for (_, agg) in self.buckets[at..last].iter_mut() {
            agg.add(&c);
        }
    }

    /// Drops buckets at or below `floor`.
    #[inline]
    fn prune(&mut self, floor: i64) {
        // Usually nothing is due: the oldest bucket says so without a search (and without a
        // call).
        if self.buckets.first().is_some_and(|(b, _)| *b <= floor) {
            self.drop_until(floor);
        }
    }

    /// [`Series::prune`], when some bucket is due.
    #[inline(never)]
    fn drop_until(&mut self, floor: i64) {
        let gone = self.buckets.partition_point(|(b, _)| *b <= floor);
        let last = self.buckets.drain(..gone).next_back();
        if self.buckets.spilled() && self.buckets.len() <= self.buckets.inline_size() {
            // Back inline: the key's next read finds its buckets in the map entry.
            self.buckets.shrink_to_fit();
        }
        match last {
            Some((_, Agg::Count(n))) => self.base_count = n,
            Some((_, Agg::Sum(s))) => self.base_sum = s,
            _ => return,
        }
        // Rebase the running totals once they grow large, so that they stay as small (and
        // as exact) as a window's sum; rarely, so that pruning stays cheap.
        if self.base_count > 1 << 40
            || self.base_sum.abs() > Decimal::from(1_000_000_000_000_000_i64)
        {
            for (_, a) in self.buckets.iter_mut() {
                match a {
                    Agg::Count(n) => *n -= self.base_count.min(*n),
                    Agg::Sum(s) => *s = s.checked_sub(self.base_sum).unwrap_or(Decimal::MAX),
                    _ => {}
                }
            }
            self.base_count = 0;
            self.base_sum = Decimal::ZERO;
        }
    }
}

/// The window settings of one counter, as the buckets use them.
#[derive(Debug, Clone, Copy)]
struct Window {
    kind: Aggregate,
    resolution_ns: i64,
    buckets: i64,
}

impl From<WindowSpec> for Window {
    fn from(w: WindowSpec) -> Window {
        Window {
            kind: w.aggregate,
            resolution_ns: w.resolution_ns.max(1),
            buckets: w.buckets,
        }
    }
}

impl Window {
    fn bucket(&self, at_ns: i64) -> i64 {
        at_ns.div_euclid(self.resolution_ns)
    }

    /// The value seen at bucket `b`: buckets `[b - n, b]` (fails closed, see the module doc).
    fn value(&self, series: &Series, b: i64) -> CounterValue {
        series.aggregate(self.kind, b - self.buckets - 1, b)
    }

    /// Buckets at or below this index can no longer matter: they are more than two windows
    /// behind the watermark (one window of history for intents up to one window late).
    fn floor(&self, watermark_ns: i64) -> i64 {
        self.floor_of(self.bucket(watermark_ns))
    }

    /// [`Window::floor`] for a watermark in bucket `b`.
    fn floor_of(&self, b: i64) -> i64 {
        b.saturating_sub(2 * self.buckets)
    }

    fn add(&self, series: &mut Series, at: Position, c: Contribution) {
        // Pruning first makes room: a key seen rarely (most are) has its old bucket dropped
        // before the new one arrives, which then fits inline again.
        series.prune(at.floor);
        if at.bucket > at.floor {
            series.add(self.kind, at.bucket, c);
        }
    }
}

/// The series of one group's keys. Keys up to 24 bytes (most: `acct-1234`, an account and a
/// payee) are stored inline.
type Keys = HashMap<CompactString, KeySeries, ahash::RandomState>;

/// One key's series: one per counter of its group (most groups have one counter).
type KeySeries = SmallVec<[Series; 1]>;

/// Sizes of the velocity state, for reporting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateSize {
    /// Map entries: one per key of each group of counters sharing key paths.
    pub keys: usize,
    pub buckets: usize,
}

/// Where an intent falls for one counter: its bucket, and the retention floor of the
/// watermark (buckets at or below it may be gone). Computed once per counter and intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    bucket: i64,
    floor: i64,
}

/// The velocity state of one partition: every counter's windows.
///
/// Counters that share a key (the same key paths) form a group and share one map entry per
/// key, so an intent costs one lookup per distinct key, not one per counter. Callers see
/// counters only; the groups are this module's business.
#[derive(Debug)]
pub struct Velocity {
    /// Per group: its key paths, its members' windows, and its keys' series.
    key_paths: Vec<Vec<FieldPath>>,
    windows: Vec<Vec<Window>>,
    keys: Vec<Keys>,
    /// Per counter: its group and its place in the group.
    place: Vec<(usize, usize)>,
}

/// Every counter's series for one intent, read before it is decided and contributed to after,
/// with one map lookup per group of counters sharing a key.
pub struct Open<'v> {
    windows: &'v [Vec<Window>],
    /// Per group: the key's series, or the key path the intent lacks.
    slots: SmallVec<[Result<&'v mut KeySeries, usize>; 8]>,
    place: &'v [(usize, usize)],
    positions: SmallVec<[Position; 16]>,
}

impl Open<'_> {
    /// The value counter `i` shows the intent, before the intent itself counts.
    pub fn value(&self, i: usize) -> Result<CounterValue, Missing> {
        let (g, m) = self.place[i];
        let series = self.slots[g].as_ref().map_err(|path| Missing::Key(*path))?;
        let w = &self.windows[g][m];
        let at = self.positions[i];
        // Fail closed: a backdated intent must not see a window already dropped.
        if at.bucket - w.buckets <= at.floor {
            return Err(Missing::TooOld);
        }
        Ok(w.value(&series[m], at.bucket))
    }

    /// Whether the intent has counter `i`'s key (it can contribute).
    pub fn has_key(&self, i: usize) -> bool {
        self.slots[self.place[i].0].is_ok()
    }

    /// Adds the intent's contribution to counter `i`; buckets behind the retention floor are
    /// dropped on the way. Nothing happens when the intent lacks the counter's key.
    pub fn add(&mut self, i: usize, c: Contribution) {
        let (g, m) = self.place[i];
        let at = self.positions[i];
        if let Ok(series) = &mut self.slots[g] {
            self.windows[g][m].add(&mut series[m], at, c);
        }
    }
}

impl Velocity {
    pub fn new(counters: &[CounterSpec<'_>]) -> Velocity {
        let mut v = Velocity {
            key_paths: Vec::new(),
            windows: Vec::new(),
            keys: Vec::new(),
            place: Vec::with_capacity(counters.len()),
        };
        for c in counters {
            let g = match v.key_paths.iter().position(|k| k.as_slice() == c.key) {
                Some(g) => g,
                None => {
                    v.key_paths.push(c.key.to_vec());
                    v.windows.push(Vec::new());
                    v.keys.push(Keys::default());
                    v.key_paths.len() - 1
                }
            };
            v.place.push((g, v.windows[g].len()));
            v.windows[g].push(Window::from(c.window));
        }
        v
    }

    /// Opens every counter for an intent created at `at_ns`, the watermark at `watermark_ns`.
    pub fn open(&mut self, intent: &Intent, at_ns: i64, watermark_ns: i64) -> Open<'_> {
        let positions = self
            .place
            .iter()
            .map(|&(g, m)| position(&self.windows[g][m], at_ns, watermark_ns))
            .collect();
        let mut key = CompactString::default();
        let slots = self
            .keys
            .iter_mut()
            .zip(&self.key_paths)
            .zip(&self.windows)
            .map(|((keys, paths), windows)| {
                counter_key(paths, intent, &mut key)?;
                Ok(slot(keys, &key, windows.len()))
            })
            .collect();
        Open {
            windows: &self.windows,
            slots,
            place: &self.place,
            positions,
        }
    }

    /// Drops every bucket behind the retention floor, and keys left empty.
    pub fn sweep(&mut self, watermark_ns: i64) {
        for (keys, windows) in self.keys.iter_mut().zip(&self.windows) {
            let floors: Vec<i64> = windows.iter().map(|w| w.floor(watermark_ns)).collect();
            keys.retain(|_, series| {
                for (s, floor) in series.iter_mut().zip(&floors) {
                    s.prune(*floor);
                }
                series.iter().any(|s| !s.buckets.is_empty())
            });
        }
    }

    /// The number of map entries (cheap: no bucket is visited).
    pub fn keys(&self) -> usize {
        self.keys.iter().map(HashMap::len).sum()
    }

    pub fn size(&self) -> StateSize {
        let mut size = StateSize::default();
        for keys in &self.keys {
            size.keys += keys.len();
            size.buckets += keys
                .values()
                .map(|s| s.iter().map(|s| s.buckets.len()).sum::<usize>())
                .sum::<usize>();
        }
        size
    }
}

/// Where an intent created at `at_ns` falls for window `w`, the watermark at `watermark_ns`.
fn position(w: &Window, at_ns: i64, watermark_ns: i64) -> Position {
    let bucket = w.bucket(at_ns);
    // In order, an intent is the watermark: one division instead of two.
    let watermark_bucket = if at_ns == watermark_ns {
        bucket
    } else {
        w.bucket(watermark_ns)
    };
    Position {
        bucket,
        floor: w.floor_of(watermark_bucket),
    }
}

/// The series of `key`, created empty (`n` of them) when the key is new: one lookup, and an
/// owned key (an allocation only past 24 bytes) only for a new one.
fn slot<'k>(keys: &'k mut Keys, key: &CompactString, n: usize) -> &'k mut KeySeries {
    keys.entry_ref(key)
        .or_insert_with(|| std::iter::repeat_with(Series::default).take(n).collect())
}

/// Writes the key made of `paths` for `intent` into `key`, or says which path the intent lacks.
///
/// A key of one field is its text. In a key of several, each part but the last is preceded by
/// its length in bytes and `:`, so no field value can run into the next one whatever it
/// contains (a separator character could be written by a producer: `a\u{1f}b` + `c` and `a` +
/// `b\u{1f}c` would be one key); the last part is the rest. Keys of one and of several parts
/// never meet: each counter key shape has its own map.
fn counter_key(paths: &[FieldPath], intent: &Intent, key: &mut CompactString) -> Result<(), usize> {
    key.clear();
    let last = paths.len().saturating_sub(1);
    for (i, path) in paths.iter().enumerate() {
        let part = path.text(intent).ok_or(i)?;
        if i < last {
            key.push_str(itoa::Buffer::new().format(part.len()));
            key.push(':');
        }
        key.push_str(&part);
    }
    Ok(())
}

/// The state read and written by key text, for the window tests (the engine goes through
/// [`Velocity::open`]).
#[cfg(test)]
impl Velocity {
    fn value(&self, counter: usize, key: &str, at_ns: i64) -> CounterValue {
        let (g, m) = self.place[counter];
        let w = &self.windows[g][m];
        match self.keys[g].get(key) {
            Some(series) => w.value(&series[m], w.bucket(at_ns)),
            None => w.value(&Series::default(), 0),
        }
    }

    /// Adds a contribution at `at_ns`; nothing is stored when it is already behind the
    /// retention floor of `watermark_ns`.
    fn add(&mut self, counter: usize, key: &str, at_ns: i64, c: Contribution, watermark_ns: i64) {
        let (g, m) = self.place[counter];
        let at = position(&self.windows[g][m], at_ns, watermark_ns);
        if at.bucket > at.floor {
            let n = self.windows[g].len();
            let series = slot(&mut self.keys[g], &CompactString::from(key), n);
            self.windows[g][m].add(&mut series[m], at, c);
        }
    }

    /// Whether an intent at `at_ns` is still answered with the watermark at `watermark_ns`.
    fn answers(&self, counter: usize, at_ns: i64, watermark_ns: i64) -> bool {
        let (g, m) = self.place[counter];
        let w = &self.windows[g][m];
        let at = position(w, at_ns, watermark_ns);
        at.bucket - w.buckets > at.floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Ruleset;
    use std::collections::HashSet;
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
        let specs: Vec<CounterSpec<'_>> = rs.counters.iter().map(|c| c.spec()).collect();
        Velocity::new(&specs)
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn the_parts_of_a_key_cannot_run_into_each_other() {
        let paths = [
            FieldPath::parse("account_id").unwrap(),
            FieldPath::parse("agent_id").unwrap(),
        ];
        let intent = |account: &str, agent: &str| {
            let json = serde_json::json!({
                "intent_id": "i", "agent_id": agent, "account_id": account,
                "action": "transfer", "created_at": "2026-11-28T10:00:00Z",
            });
            crate::intent::parse_intent(json.to_string().as_bytes(), 1 << 16).unwrap()
        };
        let key = |account: &str, agent: &str| {
            let mut k = CompactString::default();
            counter_key(&paths, &intent(account, agent), &mut k).unwrap();
            k
        };
        let pairs = [
            ("a\u{1f}b", "c"),
            ("a", "b\u{1f}c"),
            ("1:a", "b"),
            ("1", "a1:b"),
            ("ab:", "c"),
            ("ab", ":c"),
        ];
        let keys: HashSet<CompactString> = pairs.iter().map(|(a, b)| key(a, b)).collect();
        assert_eq!(keys.len(), pairs.len(), "{keys:?}");
        assert_eq!(key("acct-1", "bot"), key("acct-1", "bot"));
        let one = [FieldPath::parse("account_id").unwrap()];
        let mut k = CompactString::default();
        counter_key(&one, &intent("acct-1", "bot"), &mut k).unwrap();
        assert_eq!(k, "acct-1", "a key of one field is its text");
    }

    #[test]
    fn count_slides_with_event_time() {
        let mut v = velocity("count", "");
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
        let mut v = velocity("sum", "field = \"amount\"\n");
        for i in 0..10 {
            v.add(0, "a", i, Contribution::Amount(dec("0.10")), i);
        }
        assert_eq!(v.value(0, "a", 10), CounterValue::Num(dec("1.00")));
        assert_eq!(v.value(0, "a", 10), CounterValue::Num(dec("1")));
    }

    #[test]
    fn max_and_distinct() {
        let mut v = velocity("max", "field = \"amount\"\n");
        assert_eq!(
            v.value(0, "a", 0),
            CounterValue::Num(Decimal::ZERO),
            "max of nothing is 0"
        );
        v.add(0, "a", 0, Contribution::Amount(dec("5")), 0);
        v.add(0, "a", MIN, Contribution::Amount(dec("7.5")), MIN);
        v.add(0, "a", 2 * MIN, Contribution::Amount(dec("1")), 2 * MIN);
        assert_eq!(v.value(0, "a", 2 * MIN), CounterValue::Num(dec("7.5")));

        let mut v = velocity("distinct", "field = \"counterparty.id\"\n");
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
        let mut v = velocity("count", "");
        v.add(0, "a", 30 * MIN, Contribution::One, 30 * MIN);
        v.add(0, "a", 10 * MIN, Contribution::One, 30 * MIN);
        assert_eq!(v.value(0, "a", 15 * MIN), CounterValue::Int(1));
        assert_eq!(v.value(0, "a", 30 * MIN), CounterValue::Int(2));
    }

    #[test]
    fn memory_is_bounded_by_the_watermark() {
        let mut v = velocity("count", "");
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
    fn running_totals_survive_pruning_and_late_arrivals() {
        let mut v = velocity("sum", "field = \"amount\"\n");
        for i in 0..200 {
            v.add(0, "a", i * MIN, Contribution::Amount(dec("1.5")), i * MIN);
        }
        // Buckets 139..=199 are in the window of minute 199: 61 of them.
        assert_eq!(v.value(0, "a", 199 * MIN), CounterValue::Num(dec("91.5")));
        // A late contribution in the middle moves every later running total.
        v.add(
            0,
            "a",
            150 * MIN,
            Contribution::Amount(dec("0.25")),
            199 * MIN,
        );
        assert_eq!(v.value(0, "a", 199 * MIN), CounterValue::Num(dec("91.75")));
        assert_eq!(v.value(0, "a", 149 * MIN), CounterValue::Num(dec("91.5")));
        assert_eq!(v.value(0, "a", 150 * MIN), CounterValue::Num(dec("91.75")));
        // A new bucket between two existing ones starts from the total before it.
        let mut v = velocity("count", "");
        v.add(0, "a", 10 * MIN, Contribution::One, 10 * MIN);
        v.add(0, "a", 30 * MIN, Contribution::One, 30 * MIN);
        v.add(0, "a", 20 * MIN, Contribution::One, 30 * MIN);
        assert_eq!(v.value(0, "a", 20 * MIN), CounterValue::Int(2));
        assert_eq!(v.value(0, "a", 25 * MIN), CounterValue::Int(2));
        assert_eq!(v.value(0, "a", 30 * MIN), CounterValue::Int(3));
        assert_eq!(
            v.value(0, "a", 81 * MIN),
            CounterValue::Int(1),
            "only minute 30 is within buckets [21, 81]"
        );
    }

    #[test]
    fn large_running_totals_are_rebased_without_changing_values() {
        let mut v = velocity("sum", "field = \"amount\"\n");
        let big = dec("100000000000000000.25");
        for i in 0..300 {
            v.add(0, "a", i * MIN, Contribution::Amount(big), i * MIN);
        }
        // 61 buckets of minute 238..=299 are in the window of minute 299.
        assert_eq!(
            v.value(0, "a", 299 * MIN),
            CounterValue::Num(big * Decimal::from(61))
        );
        assert_eq!(
            v.value(0, "a", 250 * MIN),
            CounterValue::Num(big * Decimal::from(61))
        );
    }

    #[test]
    fn intents_dated_behind_the_kept_state_are_not_answered() {
        let v = velocity("count", "");
        let watermark = 200 * MIN;
        // The state keeps buckets above 200 - 2 * 60 = 80. The window of minute 141 is
        // buckets 81..=141: kept. That of minute 140 needs bucket 80: dropped.
        let answers = |t: i64| v.answers(0, t, watermark);
        assert!(answers(200 * MIN));
        assert!(answers(141 * MIN));
        assert!(!answers(140 * MIN));
        assert!(!answers(0));
    }

    #[test]
    fn adding_prunes_the_keys_own_old_buckets() {
        let mut v = velocity("count", "");
        for i in 0..1000 {
            v.add(0, "a", i * MIN, Contribution::One, i * MIN);
        }
        assert!(v.size().buckets <= 121, "{:?}", v.size());
        assert_eq!(v.value(0, "a", 999 * MIN), CounterValue::Int(61));
    }
}
