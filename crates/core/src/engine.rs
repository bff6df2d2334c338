//! The decision engine: one intent in, one explained decision out
//! ([docs/design.md](../../../docs/design.md#3-rules-semantics)).
//!
//! [`Engine::decide`] is pure apart from the partition state it owns: the clock comes in as an
//! argument, nothing is read from the environment, nothing is logged, and bad data never
//! makes it fail: a rule that cannot be evaluated becomes an entry in `errors`. The rules
//! themselves are evaluated by one stateless step, [`evaluate`]; the engine adds the state
//! around it (velocity counters, the duplicate horizon, the watermark).

mod evaluate;

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use compact_str::CompactString;
use hashbrown::HashSet;
use rust_decimal::Decimal;
use smallvec::SmallVec;

pub use evaluate::{evaluate, Evaluation};

use crate::decision::{
    CounterValue, DeadLetter, Decision, Outcome, Reason, RuleAction, Source, Thresholds,
};
pub use crate::decision::{SystemReason, SYSTEM_RULE_PREFIX};
use crate::expr::{format_duration, Activation, Value};
use crate::intent::{
    json_decimal, parse_intent, Counterparty, Field, FieldPath, Intent, IntentHead,
};
use crate::rules::{Aggregate, CounterDef, Ruleset};
use crate::velocity::{Contribution, CounterSpec, Missing, Open, StateSize, Velocity};
use crate::wire::text;

/// Engine settings that are not part of the ruleset.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// A repeated intent (the same partition-key value and `intent_id`) within this much event
    /// time is a duplicate; an intent dated more than this before the watermark is stale.
    pub duplicate_horizon: TimeDelta,
    /// When set, an intent dated more than this after the clock is refused
    /// (`riskgate:future`), so a far-future date can neither expire velocity state nor sit in
    /// the duplicate horizon. The service sets it; offline replay leaves it unset by default
    /// so that its decisions depend only on its input, never on when it runs.
    pub max_future_skew: Option<TimeDelta>,
    /// The intent field producers key intents by (`[kafka] partition_key`): the scope of
    /// an intent id (duplicates are per value of it and `intent_id`), and what a record's
    /// Kafka key must be.
    pub partition_key: FieldPath,
    /// Expired buckets and keys are swept after at least this many decisions, and never
    /// more often than once per entry of state left by the last sweep, so that sweeping
    /// costs at most about one entry visited per decision. Intents past the duplicate
    /// horizon are swept with them, and also on their own, more often: whenever as many
    /// intents as were left by their last sweep (at least [`FORGET_EVERY_MIN`], or this
    /// setting if smaller) have been remembered since, by deciding or by a restore. That
    /// keeps the duplicate state, whose remembered decisions are most of the memory, within
    /// about twice its live size for about two entries visited per intent.
    pub sweep_every: u64,
}

/// The fewest intents remembered between two sweeps of the duplicate horizon alone.
pub const FORGET_EVERY_MIN: u64 = 1_024;

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            duplicate_horizon: TimeDelta::hours(24),
            max_future_skew: Some(TimeDelta::minutes(5)),
            partition_key: FieldPath::Field(Field::AccountId),
            sweep_every: 65_536,
        }
    }
}

/// Sizes of a partition's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineSize {
    pub velocity: StateSize,
    pub remembered_intents: usize,
}

/// A decision remembered for the duplicate horizon, with what its decision does not repeat of
/// its intent (so that a conflicting reuse of its id can be told from a duplicate). It is its
/// own key: found by its partition-key value and intent id, it costs no copy of the id.
struct Remembered {
    created_at_ns: i64,
    /// The intent's partition-key value: an intent id's scope.
    scope: CompactString,
    decision: Arc<Decision>,
    /// The intent's counterparty and attributes, boxed so that the table of remembered
    /// intents stays at 48 bytes an entry (the two are 128 bytes); `None` when it has neither.
    rest: Option<Box<Rest>>,
}

struct Rest {
    counterparty: Option<Counterparty>,
    attributes: Option<serde_json::Map<String, serde_json::Value>>,
}

impl Rest {
    fn of(
        counterparty: Option<Counterparty>,
        attributes: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Option<Box<Rest>> {
        (counterparty.is_some() || attributes.is_some()).then(|| {
            Box::new(Rest {
                counterparty,
                attributes,
            })
        })
    }
}

/// What a remembered decision is found by.
#[derive(Hash)]
struct Key<'a> {
    scope: &'a str,
    intent_id: &'a str,
}

impl Remembered {
    fn key(&self) -> Key<'_> {
        Key {
            scope: &self.scope,
            intent_id: &self.decision.head.intent_id,
        }
    }

    /// Whether `intent` is this intent again: every field equal after parsing (formatting,
    /// key order and the offset of a timestamp do not count).
    fn same_intent(&self, intent: &Intent) -> bool {
        let (counterparty, attributes) = match &self.rest {
            Some(rest) => (rest.counterparty.as_ref(), rest.attributes.as_ref()),
            None => (None, None),
        };
        self.decision.head == intent.head
            && counterparty == intent.counterparty.as_ref()
            && match (attributes, &intent.attributes) {
                (None, None) => true,
                (Some(a), Some(b)) => same_json_map(a, b),
                _ => false,
            }
    }
}

impl Hash for Remembered {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state)
    }
}

impl PartialEq for Remembered {
    fn eq(&self, other: &Remembered) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Remembered {}

impl PartialEq for Key<'_> {
    fn eq(&self, other: &Key<'_>) -> bool {
        self.scope == other.scope && self.intent_id == other.intent_id
    }
}

impl hashbrown::Equivalent<Remembered> for Key<'_> {
    fn equivalent(&self, r: &Remembered) -> bool {
        *self == r.key()
    }
}

/// JSON objects equal as values: numbers by their exact decimal (`1.0` is `1`).
fn same_json_map(
    a: &serde_json::Map<String, serde_json::Value>,
    b: &serde_json::Map<String, serde_json::Value>,
) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(k, v)| b.get(k).is_some_and(|w| same_json(v, w)))
}

fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => match (json_decimal(x), json_decimal(y)) {
            (Some(x), Some(y)) => x == y,
            _ => x == y,
        },
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(v, w)| same_json(v, w))
        }
        (J::Object(x), J::Object(y)) => same_json_map(x, y),
        _ => a == b,
    }
}

/// The Kafka key a record came with, for [`Engine::process`] to check against the intent's
/// partition-key value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordKey<'a> {
    /// Not a Kafka record (replay, rule tests): nothing to check.
    Unchecked,
    Kafka(Option<&'a [u8]>),
}

/// A ruleset with the velocity and duplicate state of one partition. One thread owns it
/// (`&mut self`): a partition's intents are decided in order.
pub struct Engine {
    ruleset: Arc<Ruleset>,
    options: EngineOptions,
    velocity: Velocity,
    remembered: HashSet<Remembered, ahash::RandomState>,
    /// The highest `created_at` decided so far (capped, see [`EngineOptions`]).
    watermark_ns: i64,
    decided: u64,
    /// The decision count at which the next sweep runs.
    next_sweep: u64,
    /// Intents remembered so far (decided or restored).
    remembers: u64,
    /// The `remembers` count at which the duplicate horizon is next swept on its own.
    next_forget: u64,
    /// Per counter: an earlier counter with the same `where`, whose answer it shares (counters
    /// often filter alike, e.g. on `action in lists.payment_actions`).
    same_filter: Vec<Option<usize>>,
    /// The counter ids, in the form a decision keeps them.
    counter_ids: Vec<CompactString>,
}

impl Engine {
    pub fn new(ruleset: Arc<Ruleset>, options: EngineOptions) -> Engine {
        let counters = &ruleset.counters;
        let same_filter = counters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let text = c.filter_text.as_ref()?;
                counters[..i]
                    .iter()
                    .position(|earlier| earlier.filter_text.as_ref() == Some(text))
            })
            .collect();
        let specs: Vec<CounterSpec<'_>> = counters.iter().map(CounterDef::spec).collect();
        Engine {
            same_filter,
            counter_ids: counters
                .iter()
                .map(|c| CompactString::from(&*c.id))
                .collect(),
            velocity: Velocity::new(&specs),
            remembered: HashSet::default(),
            watermark_ns: i64::MIN,
            decided: 0,
            next_sweep: options.sweep_every,
            remembers: 0,
            next_forget: Engine::forget_every_min(&options),
            options,
            ruleset,
        }
    }

    /// Decides `intent` at `now`, then lets it contribute to the counters. Checks run in this
    /// order: stale, future, duplicate or conflict, then the rules
    /// ([docs/design.md](../../../docs/design.md#3-rules-semantics)).
    pub fn decide(&mut self, intent: Intent, source: Source, now: DateTime<Utc>) -> Arc<Decision> {
        let at_ns = intent.head.created_at.timestamp_nanos_opt().unwrap_or(0);
        // A stale intent cannot be checked against the intents the engine has forgotten.
        // "More than the horizon" is strict: exactly one horizon behind is still checked.
        if at_ns < self.forget_floor() {
            let message = format!(
                "`created_at` {} is more than the duplicate horizon ({}) before the newest intent of its partition ({}): it cannot be checked against the intents decided then",
                text::timestamp(&intent.head.created_at),
                format_duration(self.options.duplicate_horizon),
                text::timestamp(&DateTime::from_timestamp_nanos(self.watermark_ns)),
            );
            return self.system(
                intent.head,
                SystemReason::Stale,
                message,
                source,
                now,
                false,
            );
        }
        if let Some(skew) = self.options.max_future_skew {
            if at_ns > (now + skew).timestamp_nanos_opt().unwrap_or(i64::MAX) {
                let message = format!(
                    "`created_at` {} is more than {} after the clock ({})",
                    text::timestamp(&intent.head.created_at),
                    format_duration(skew),
                    text::timestamp(&now),
                );
                return self.system(
                    intent.head,
                    SystemReason::Future,
                    message,
                    source,
                    now,
                    false,
                );
            }
        }
        let scope = self.options.partition_key.text(&intent).unwrap_or_default();
        if let Some(original) =
            self.remembered_within_horizon(&scope, &intent.head.intent_id, at_ns)
        {
            if original.same_intent(&intent) {
                let mut again = (*original.decision).clone();
                again.source = source;
                again.duplicate = true;
                return Arc::new(again);
            }
            let message = format!(
                "intent id `{}` was used within the duplicate horizon for a different intent, created at {}; an intent id stands for one intent",
                intent.head.intent_id,
                text::timestamp(&original.decision.head.created_at),
            );
            return self.system(
                intent.head,
                SystemReason::Conflict,
                message,
                source,
                now,
                true,
            );
        }
        let scope = CompactString::from(scope.as_ref());
        let Opened {
            rs,
            same_filter,
            counter_ids,
            amount_base,
            mut open,
        } = self.open(&intent, at_ns, now);
        let values: Vec<Result<Value<'static>, &str>> = rs
            .counters
            .iter()
            .enumerate()
            .map(|(i, c)| match open.value(i) {
                Ok(CounterValue::Int(n)) => Ok(Value::Int(n)),
                Ok(CounterValue::Num(n)) => Ok(Value::Num(n)),
                Err(Missing::Key(path)) => Err(c.unavailable[path].as_str()),
                Err(Missing::TooOld) => Err(c.too_old.as_str()),
            })
            .collect();
        let act = Activation {
            intent: &intent,
            amount_base: amount_base.as_ref().copied().map_err(String::as_str),
            counters: &values,
            lists: &rs.list_values,
            action: rs.actions.id(&intent.head.action),
        };
        let verdict = evaluate(rs, &act);
        // Contribute after deciding: the intent never counts towards its own decision.
        contribute(rs, same_filter, &act, verdict.outcome, &mut open);
        drop(open);
        let ruleset = rs.version.clone();
        let thresholds = rs
            .scoring
            .as_ref()
            .filter(|_| verdict.score != 0)
            .map(|s| Thresholds {
                hold_at: s.hold_at,
                deny_at: s.deny_at,
            });
        let (amount_base, base_currency) = match (&rs.fx, intent.head.amount) {
            (Some(fx), Some(_)) => (amount_base.ok(), Some(CompactString::from(&*fx.base))),
            _ => (None, None),
        };

        let counters = values
            .iter()
            .zip(counter_ids)
            .filter_map(|(v, id)| match v {
                Ok(Value::Int(n)) => Some((id.clone(), CounterValue::Int(*n))),
                Ok(Value::Num(n)) => Some((id.clone(), CounterValue::Num(*n))),
                _ => None,
            })
            .collect();
        let Intent {
            head,
            counterparty,
            attributes,
        } = intent;
        let decision = Arc::new(Decision {
            head,
            outcome: verdict.outcome,
            score: verdict.score,
            thresholds,
            amount_base,
            base_currency,
            reasons: verdict.reasons,
            errors: verdict.errors,
            counters,
            ruleset,
            decided_at: now,
            source,
            duplicate: false,
        });
        self.remember(Remembered {
            created_at_ns: at_ns,
            scope,
            decision: decision.clone(),
            rest: Rest::of(counterparty, attributes),
        });
        self.decided += 1;
        if self.decided >= self.next_sweep {
            self.sweep();
            let entries = (self.velocity.keys() + self.remembered.len()) as u64;
            self.next_sweep = self.decided + self.options.sweep_every.max(entries);
        }
        decision
    }

    /// Lets `intent`, decided `decision.outcome` by an earlier run, count again: the step a
    /// restore takes for each decision read back from the decisions topic. Rules are not
    /// evaluated; the counters see exactly the contributions the original run made (under
    /// the counter definitions of this engine's ruleset), and the decision is remembered
    /// for the duplicate horizon. A duplicate or a system decision contributes nothing and
    /// is not remembered, as when it was decided.
    pub fn restore(&mut self, intent: Intent, decision: Decision) {
        if decision.duplicate || decision.is_system() {
            return;
        }
        let at_ns = intent.head.created_at.timestamp_nanos_opt().unwrap_or(0);
        let scope = CompactString::from(
            self.options
                .partition_key
                .text(&intent)
                .unwrap_or_default()
                .as_ref(),
        );
        let Opened {
            rs,
            same_filter,
            amount_base,
            mut open,
            ..
        } = self.open(&intent, at_ns, decision.decided_at);
        // A counter's `where` cannot read counters, so none are offered.
        let act = Activation {
            intent: &intent,
            amount_base: amount_base.as_ref().copied().map_err(String::as_str),
            counters: &[],
            lists: &rs.list_values,
            action: rs.actions.id(&intent.head.action),
        };
        contribute(rs, same_filter, &act, decision.outcome, &mut open);
        drop(open);
        self.remember(Remembered {
            created_at_ns: at_ns,
            scope,
            decision: Arc::new(decision),
            rest: Rest::of(intent.counterparty, intent.attributes),
        });
    }

    /// What deciding and restoring share before the rules: the watermark moves to `intent`
    /// (created at `at_ns`, decided at `now`), its amount is converted to the base currency,
    /// and the counters its key reaches are opened.
    fn open<'e>(&'e mut self, intent: &Intent, at_ns: i64, now: DateTime<Utc>) -> Opened<'e> {
        let rs = &*self.ruleset;
        let watermark = advance(&mut self.watermark_ns, &self.options, at_ns, now);
        Opened {
            rs,
            same_filter: &self.same_filter,
            counter_ids: &self.counter_ids,
            amount_base: amount_base(rs, intent),
            open: self.velocity.open(intent, at_ns, watermark),
        }
    }

    /// A system decision: deny, one reason that says what happened, score 0, no counters, no
    /// errors; it contributes to nothing, is not remembered and does not move the watermark.
    fn system(
        &self,
        head: IntentHead,
        reason: SystemReason,
        message: String,
        source: Source,
        now: DateTime<Utc>,
        duplicate: bool,
    ) -> Arc<Decision> {
        Arc::new(Decision {
            head,
            outcome: Outcome::Deny,
            score: 0,
            thresholds: None,
            amount_base: None,
            base_currency: None,
            reasons: vec![Reason {
                rule: Arc::from(reason.rule()),
                action: RuleAction::Deny,
                score: None,
                message: Some(message),
                approvals: 1,
            }],
            errors: Vec::new(),
            counters: Vec::new(),
            ruleset: self.ruleset.version.clone(),
            decided_at: now,
            source,
            duplicate,
        })
    }

    fn remember(&mut self, remembered: Remembered) {
        // An intent id seen before (beyond the horizon) now stands for this decision.
        self.remembered.replace(remembered);
        // The duplicate horizon is swept on its own, more often than the rest of the state,
        // here, so that a restore is bounded too (see `EngineOptions::sweep_every`).
        self.remembers += 1;
        if self.remembers >= self.next_forget {
            let left = self.forget() as u64;
            self.next_forget = self.remembers + left.max(Engine::forget_every_min(&self.options));
        }
    }

    /// The ruleset this engine decides with.
    pub fn ruleset(&self) -> &Arc<Ruleset> {
        &self.ruleset
    }

    /// The duplicate horizon in nanoseconds.
    fn horizon_ns(&self) -> i64 {
        self.options
            .duplicate_horizon
            .num_nanoseconds()
            .unwrap_or(i64::MAX)
    }

    /// Remembered intents created before this are forgotten, swept or not.
    fn forget_floor(&self) -> i64 {
        self.watermark_ns.saturating_sub(self.horizon_ns())
    }

    /// The fewest intents remembered between two sweeps of the duplicate horizon alone.
    fn forget_every_min(options: &EngineOptions) -> u64 {
        options.sweep_every.min(FORGET_EVERY_MIN)
    }

    /// The remembered intent with this scope and id, if it is within the horizon of `at_ns`.
    fn remembered_within_horizon(
        &self,
        scope: &str,
        intent_id: &str,
        at_ns: i64,
    ) -> Option<&Remembered> {
        let horizon = self.horizon_ns();
        let entry = self.remembered.get(&Key { scope, intent_id })?;
        // An entry past the horizon behind the watermark counts as forgotten whether or not a
        // sweep has dropped it yet: when sweeps run changes no decision.
        (entry.created_at_ns >= self.forget_floor()
            && entry.created_at_ns.abs_diff(at_ns) <= horizon.unsigned_abs())
        .then_some(entry)
    }

    /// Drops expired buckets, idle keys and intents past the duplicate horizon.
    pub fn sweep(&mut self) {
        if self.watermark_ns == i64::MIN {
            return;
        }
        self.velocity.sweep(self.watermark_ns);
        self.forget();
    }

    /// Drops intents past the duplicate horizon; says how many are left.
    fn forget(&mut self) -> usize {
        let floor = self.forget_floor();
        self.remembered.retain(|r| r.created_at_ns >= floor);
        self.remembered.len()
    }

    pub fn size(&self) -> EngineSize {
        EngineSize {
            velocity: self.velocity.size(),
            remembered_intents: self.remembered.len(),
        }
    }
}

/// An intent's state, opened by [`Engine::open`], with the parts of the engine deciding reads
/// beside it.
struct Opened<'e> {
    rs: &'e Ruleset,
    same_filter: &'e [Option<usize>],
    counter_ids: &'e [CompactString],
    /// The amount in the base currency, or the message rules that read it fail with.
    amount_base: Result<Decimal, String>,
    open: Open<'e>,
}

/// The watermark moves to an intent created at
/// `at_ns` (decided at `now`), never further ahead of the clock than `max_future_skew`.
fn advance(watermark_ns: &mut i64, options: &EngineOptions, at_ns: i64, now: DateTime<Utc>) -> i64 {
    let candidate = match options.max_future_skew {
        Some(skew) => at_ns.min((now + skew).timestamp_nanos_opt().unwrap_or(i64::MAX)),
        None => at_ns,
    };
    *watermark_ns = (*watermark_ns).max(candidate);
    *watermark_ns
}

/// The intent's amount in the ruleset's base currency (0 without an amount), or why there is
/// none, as the message a rule that reads `amount_base` fails with.
fn amount_base(rs: &Ruleset, intent: &Intent) -> Result<Decimal, String> {
    match (intent.head.amount, &rs.fx) {
        (None, _) => Ok(Decimal::ZERO),
        (Some(a), None) => Ok(a),
        (Some(a), Some(fx)) => fx
            .convert(a, intent.head.currency.as_deref().unwrap_or(""))
            .map_err(|e| e.to_string()),
    }
}

/// The time a record is processed at: the core never reads a clock of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// This time: the wall clock of the service or of a replay.
    At(DateTime<Utc>),
    /// Each intent's own `created_at`, as the rule tests decide (a dead letter then carries
    /// the Unix epoch).
    EventTime,
}

/// What one record became.
#[derive(Debug)]
pub enum Processed {
    Decided(Arc<Decision>),
    /// Not a valid intent: its dead letter (boxed: rare, and larger than a decision's `Arc`).
    Invalid(Box<DeadLetter>),
}

impl Engine {
    /// The step every front end takes for one record (replay, the service, the rule tests):
    /// the payload is parsed and validated, then decided at the `clock`'s time, or becomes a
    /// dead letter that says what was wrong and keeps the payload.
    ///
    /// A Kafka record's key must be the intent's partition-key value: a record without a key,
    /// or with another, is answered `riskgate:misrouted` (its partition's state is not the
    /// one its counters and duplicates live in) before anything else.
    pub fn process(
        &mut self,
        payload: &[u8],
        max_bytes: usize,
        key: RecordKey<'_>,
        source: Source,
        clock: Clock,
    ) -> Processed {
        match parse_intent(payload, max_bytes) {
            Ok(intent) => {
                let now = match clock {
                    Clock::At(now) => now,
                    Clock::EventTime => intent.head.created_at,
                };
                if let RecordKey::Kafka(key) = key {
                    if let Some(message) = self.misrouted(&intent, key) {
                        let d = self.system(
                            intent.head,
                            SystemReason::Misrouted,
                            message,
                            source,
                            now,
                            false,
                        );
                        return Processed::Decided(d);
                    }
                }
                Processed::Decided(self.decide(intent, source, now))
            }
            Err(error) => Processed::Invalid(Box::new(DeadLetter::new(
                error,
                payload,
                max_bytes,
                source,
                match clock {
                    Clock::At(now) => now,
                    Clock::EventTime => DateTime::UNIX_EPOCH,
                },
            ))),
        }
    }

    /// Why a record keyed `key` is not where `intent` belongs, if it is not.
    fn misrouted(&self, intent: &Intent, key: Option<&[u8]>) -> Option<String> {
        let path = &self.options.partition_key;
        let value = path.text(intent);
        match (key, &value) {
            (Some(k), Some(v)) if k == v.as_bytes() => None,
            (None, Some(v)) => Some(format!(
                "the record has no key, but intents must be keyed by `{path}` (`{v}` here): produce it with that key"
            )),
            (Some(k), Some(v)) => Some(format!(
                "the record is keyed {}, but intents must be keyed by `{path}`, which is `{v}` here: produce it with that key",
                quote_key(k)
            )),
            (_, None) => Some(format!(
                "the intent has no `{path}`, the field intents are keyed by"
            )),
        }
    }
}

/// The most bytes of a record's key a message quotes.
const QUOTED_KEY_MAX: usize = 128;

/// A record key as a message quotes it: in backticks, its first [`QUOTED_KEY_MAX`] bytes and
/// its size when it is longer, so that no key can make a decision too large to publish.
fn quote_key(key: &[u8]) -> String {
    if key.len() <= QUOTED_KEY_MAX {
        return format!("`{}`", String::from_utf8_lossy(key));
    }
    format!(
        "`{}…` ({} bytes)",
        String::from_utf8_lossy(&key[..QUOTED_KEY_MAX]),
        key.len()
    )
}

/// Adds the intent of `act`, decided `outcome`, to every counter that takes it.
fn contribute(
    rs: &Ruleset,
    same_filter: &[Option<usize>],
    act: &Activation<'_>,
    outcome: Outcome,
    open: &mut Open<'_>,
) {
    // Each distinct `where` is evaluated at most once per intent.
    let mut passed: SmallVec<[Option<bool>; 16]> = SmallVec::from_elem(None, rs.counters.len());
    for (i, c) in rs.counters.iter().enumerate() {
        if !open.has_key(i) || !c.contributes.admits(outcome) {
            continue;
        }
        if let Some(filter) = &c.filter {
            let first = same_filter[i].unwrap_or(i);
            let pass = *passed[first].get_or_insert_with(|| filter.eval_bool(act) == Ok(true));
            if !pass {
                continue;
            }
        }
        if let Some(contribution) = contribution(c, act.intent, act.amount_base) {
            open.add(i, contribution);
        }
    }
}

/// What `intent` adds to `counter`, if anything.
fn contribution(
    counter: &CounterDef,
    intent: &Intent,
    amount_base: Result<Decimal, &str>,
) -> Option<Contribution> {
    match counter.aggregate {
        Aggregate::Count => Some(Contribution::One),
        Aggregate::Sum | Aggregate::Max => {
            let amount = match counter.field.as_ref()? {
                // Amounts add up in the base currency, so mixed currencies sum correctly.
                FieldPath::Field(Field::Amount) => amount_base.ok()?,
                path => match path.json(intent)? {
                    serde_json::Value::Number(n) => json_decimal(n)?,
                    serde_json::Value::String(s) => Decimal::from_str_exact(s).ok()?,
                    _ => return None,
                },
            };
            Some(Contribution::Amount(amount))
        }
        Aggregate::Distinct => {
            let item = counter.field.as_ref()?.text(intent)?;
            Some(Contribution::Item(CompactString::from(item.as_ref())))
        }
    }
}

#[cfg(test)]
mod tests;
