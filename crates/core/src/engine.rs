//! The decision engine: one intent in, one explained decision out
//! ([docs/design.md](../../../docs/design.md#3-rules-semantics)).
//!
//! [`Engine::decide`] is pure apart from the partition state it owns: the clock comes in as an
//! argument, nothing is read from the environment, nothing is logged, and bad data never
//! makes it fail: a rule that cannot be evaluated becomes an entry in `errors`. The rules
//! themselves are evaluated by one stateless step, [`evaluate`]; the engine adds the state
//! around it (velocity counters, the duplicate horizon, the watermark).

mod evaluate;

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use compact_str::CompactString;
use hashbrown::HashSet;
use rust_decimal::Decimal;
use smallvec::SmallVec;

pub use evaluate::{evaluate, Evaluation};

use crate::decision::{CounterValue, DeadLetter, Decision, Outcome, Source};
use crate::expr::{Activation, Value};
use crate::intent::{json_decimal, parse_intent, Field, FieldPath, Intent};
use crate::rules::{Aggregate, CounterDef, Ruleset};
use crate::velocity::{Contribution, CounterSpec, Missing, Open, StateSize, Velocity};

/// Engine settings that are not part of the ruleset.
#[derive(Debug, Clone, Copy)]
pub struct EngineOptions {
    /// A repeated `intent_id` within this much event time is a duplicate.
    pub duplicate_horizon: TimeDelta,
    /// When set, the watermark never runs further ahead of the clock than this, so an intent
    /// dated far in the future cannot expire everyone's velocity state. The service sets it;
    /// offline replay leaves it unset by default so that its decisions depend only on its
    /// input, never on when it runs.
    pub max_future_skew: Option<TimeDelta>,
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

/// A decision remembered for the duplicate horizon. It is its own key: found by its intent id
/// (hashing and comparing as that string), it costs no copy of the id.
struct Remembered {
    created_at_ns: i64,
    decision: Arc<Decision>,
}

impl Remembered {
    fn intent_id(&self) -> &str {
        &self.decision.head.intent_id
    }
}

impl Hash for Remembered {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.intent_id().hash(state)
    }
}

impl PartialEq for Remembered {
    fn eq(&self, other: &Remembered) -> bool {
        self.intent_id() == other.intent_id()
    }
}

impl Eq for Remembered {}

impl Borrow<str> for Remembered {
    fn borrow(&self) -> &str {
        self.intent_id()
    }
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
            options,
            remembered: HashSet::default(),
            watermark_ns: i64::MIN,
            decided: 0,
            next_sweep: options.sweep_every,
            remembers: 0,
            next_forget: Engine::forget_every_min(&options),
            ruleset,
        }
    }

    /// Decides `intent` at `now`, then lets it contribute to the counters.
    pub fn decide(&mut self, intent: Intent, source: Source, now: DateTime<Utc>) -> Arc<Decision> {
        let at_ns = intent.head.created_at.timestamp_nanos_opt().unwrap_or(0);
        if let Some(original) = self.duplicate_of(&intent.head.intent_id, at_ns) {
            let mut again = (*original).clone();
            again.source = source;
            again.duplicate = true;
            return Arc::new(again);
        }
        let rs = &*self.ruleset;
        let watermark = advance(&mut self.watermark_ns, &self.options, at_ns, now);
        let amount_base = amount_base(rs, &intent);
        let mut open = self.velocity.open(&intent, at_ns, watermark);
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
        contribute(rs, &self.same_filter, &act, verdict.outcome, &mut open);
        drop(open);
        let ruleset = rs.version.clone();

        let counters = values
            .iter()
            .zip(&self.counter_ids)
            .filter_map(|(v, id)| match v {
                Ok(Value::Int(n)) => Some((id.clone(), CounterValue::Int(*n))),
                Ok(Value::Num(n)) => Some((id.clone(), CounterValue::Num(*n))),
                _ => None,
            })
            .collect();
        let decision = Arc::new(Decision {
            head: intent.head,
            outcome: verdict.outcome,
            score: verdict.score,
            reasons: verdict.reasons,
            errors: verdict.errors,
            counters,
            ruleset,
            decided_at: now,
            source,
            duplicate: false,
        });
        self.remember(at_ns, decision.clone());
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
    /// for the duplicate horizon. A duplicate contributes nothing, as when it was decided.
    pub fn restore(&mut self, intent: &Intent, decision: Decision) {
        if decision.duplicate {
            return;
        }
        let at_ns = intent.head.created_at.timestamp_nanos_opt().unwrap_or(0);
        let rs = &*self.ruleset;
        let watermark = advance(
            &mut self.watermark_ns,
            &self.options,
            at_ns,
            decision.decided_at,
        );
        let amount_base = amount_base(rs, intent);
        let mut open = self.velocity.open(intent, at_ns, watermark);
        // A counter's `where` cannot read counters, so none are offered.
        let act = Activation {
            intent,
            amount_base: amount_base.as_ref().copied().map_err(String::as_str),
            counters: &[],
            lists: &rs.list_values,
            action: rs.actions.id(&intent.head.action),
        };
        contribute(rs, &self.same_filter, &act, decision.outcome, &mut open);
        drop(open);
        self.remember(at_ns, Arc::new(decision));
    }

    fn remember(&mut self, at_ns: i64, decision: Arc<Decision>) {
        // An intent id seen before (beyond the horizon) now stands for this decision.
        self.remembered.replace(Remembered {
            created_at_ns: at_ns,
            decision,
        });
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

    fn duplicate_of(&self, intent_id: &str, at_ns: i64) -> Option<Arc<Decision>> {
        let horizon = self.horizon_ns();
        let entry = self.remembered.get(intent_id)?;
        // An entry past the horizon behind the watermark counts as forgotten whether or not a
        // sweep has dropped it yet: when sweeps run changes no decision.
        (entry.created_at_ns >= self.forget_floor()
            && entry.created_at_ns.abs_diff(at_ns) <= horizon.unsigned_abs())
        .then(|| entry.decision.clone())
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

/// What deciding and restoring share, first: the watermark moves to an intent created at
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
/// none.
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
    /// Not a valid intent: its dead letter.
    Invalid(DeadLetter),
}

impl Engine {
    /// The step every front end takes for one record (replay, the service, the rule tests):
    /// the payload is parsed and validated, then decided at the `clock`'s time, or becomes a
    /// dead letter that says what was wrong and keeps the payload.
    pub fn process(
        &mut self,
        payload: &[u8],
        max_bytes: usize,
        source: Source,
        clock: Clock,
    ) -> Processed {
        match parse_intent(payload, max_bytes) {
            Ok(intent) => {
                let now = match clock {
                    Clock::At(now) => now,
                    Clock::EventTime => intent.head.created_at,
                };
                Processed::Decided(self.decide(intent, source, now))
            }
            Err(error) => Processed::Invalid(DeadLetter {
                error,
                payload: payload.to_vec(),
                source,
                at: match clock {
                    Clock::At(now) => now,
                    Clock::EventTime => DateTime::UNIX_EPOCH,
                },
            }),
        }
    }
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
