//! The decision engine: one intent in, one explained decision out (DESIGN section 3).
//!
//! [`Engine::decide`] is pure apart from the partition state it is given: the clock comes in
//! as an argument, nothing is read from the environment, nothing is logged, and bad data
//! never makes it fail: a rule that cannot be evaluated becomes an entry in `errors`.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use compact_str::CompactString;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use rust_decimal::Decimal;
use smallvec::SmallVec;

use crate::decision::{Decision, Reason, RuleFailure, Source};
use crate::expr::{Activation, Value};
use crate::intent::Intent;
use crate::rules::{Aggregate, CounterDef, FieldPath, OnError, Outcome, RuleAction, Ruleset};
use crate::velocity::{Contribution, CounterValue, Position, Slot, StateSize, Velocity};

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
        &self.decision.intent_id
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

/// A ruleset with the velocity and duplicate state of one partition.
pub struct Engine {
    ruleset: Arc<Ruleset>,
    options: EngineOptions,
    velocity: Velocity,
    remembered: DashMap<Remembered, (), ahash::RandomState>,
    watermark_ns: AtomicI64,
    decided: AtomicU64,
    /// The decision count at which the next sweep runs.
    next_sweep: AtomicU64,
    /// Intents remembered so far (decided or restored).
    remembers: AtomicU64,
    /// The `remembers` count at which the duplicate horizon is next swept on its own.
    next_forget: AtomicU64,
    /// Per counter: an earlier counter with the same `where`, whose answer it shares (counters
    /// often filter alike, e.g. on `action in lists.payment_actions`).
    same_filter: Vec<Option<usize>>,
    /// The counter ids, in the form a decision keeps them.
    counter_ids: Vec<CompactString>,
}

const KEY_SEPARATOR: char = '\u{1f}';

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
        Engine {
            same_filter,
            counter_ids: counters
                .iter()
                .map(|c| CompactString::from(&*c.id))
                .collect(),
            velocity: Velocity::new(&ruleset.counters),
            ruleset,
            options,
            remembered: DashMap::default(),
            watermark_ns: AtomicI64::new(i64::MIN),
            decided: AtomicU64::new(0),
            next_sweep: AtomicU64::new(options.sweep_every),
            remembers: AtomicU64::new(0),
            next_forget: AtomicU64::new(Engine::forget_every_min(&options)),
        }
    }

    /// Decides `intent` at `now`, then lets it contribute to the counters.
    pub fn decide(&self, intent: Intent, source: Source, now: DateTime<Utc>) -> Arc<Decision> {
        let rs = &*self.ruleset;
        let at_ns = intent.created_at.timestamp_nanos_opt().unwrap_or(0);
        if let Some(original) = self.duplicate_of(&intent.intent_id, at_ns) {
            let mut again = (*original).clone();
            again.source = source;
            again.duplicate = true;
            return Arc::new(again);
        }
        let watermark = self.advance_watermark(at_ns, now);

        let amount_base = match (intent.amount, &rs.fx) {
            (None, _) => Ok(Decimal::ZERO),
            (Some(a), None) => Ok(a),
            (Some(a), Some(fx)) => fx.convert(a, intent.currency.as_deref().unwrap_or("")),
        };
        // One locked slot per group of counters sharing a key: read now, contributed to after
        // deciding. A key path the intent lacks makes the group's counters unavailable.
        let mut key = CompactString::default();
        let mut slots: Vec<Result<Slot<'_>, usize>> =
            Vec::with_capacity(self.velocity.groups().len());
        for (g, group) in self.velocity.groups().iter().enumerate() {
            let paths = &rs.counters[group.counters[0]].key;
            slots.push(counter_key(paths, &intent, &mut key).map(|()| self.velocity.slot(g, &key)));
        }
        let mut positions = SmallVec::new();
        self.positions(at_ns, watermark, &mut positions);
        let values: Vec<Result<Value<'static>, &str>> = rs
            .counters
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let (g, m) = self.velocity.place(i);
                match &slots[g] {
                    // Fail closed: a backdated intent must not see a window already dropped.
                    Ok(_) if !self.velocity.answers(i, positions[i]) => Err(c.too_old.as_str()),
                    Ok(slot) => Ok(match slot.value(m, positions[i]) {
                        CounterValue::Int(n) => Value::Int(n),
                        CounterValue::Num(n) => Value::Num(n),
                    }),
                    Err(path) => Err(c.unavailable[*path].as_str()),
                }
            })
            .collect();
        let act = Activation {
            intent: &intent,
            amount_base: amount_base.as_ref().copied().map_err(String::as_str),
            counters: &values,
            lists: &rs.list_values,
            action_bit: rs.actions.bit(&intent.action),
        };

        let mut contributed = [false; 3];
        let mut mark = |o: Outcome| contributed[o as usize] = true;
        let mut score: i64 = 0;
        let mut reasons = Vec::new();
        let mut errors = Vec::new();
        for rule in &rs.rules {
            match rule.when.eval_bool(&act) {
                Ok(false) => {}
                Ok(true) => {
                    match rule.action.outcome() {
                        Some(o) => mark(o),
                        None => score = score.saturating_add(rule.score),
                    }
                    let message = match &rule.message {
                        Some(t) => Some(t.render(&act)),
                        None => rule.description.clone(),
                    };
                    reasons.push(Reason {
                        rule: rule.id.clone(),
                        action: rule.action,
                        score: (rule.action == RuleAction::Score).then_some(rule.score),
                        message,
                        approvals: rule.approvals,
                    });
                }
                Err(e) => {
                    match rs.on_error {
                        OnError::Hold => mark(Outcome::Hold),
                        OnError::Deny => mark(Outcome::Deny),
                        OnError::Ignore => {}
                    }
                    errors.push(RuleFailure {
                        rule: rule.id.clone(),
                        message: e.0.into_owned(),
                    });
                }
            }
        }
        if let Some(scoring) = rs.scoring {
            if scoring.hold_at.is_some_and(|h| score >= h) {
                mark(Outcome::Hold);
            }
            if scoring.deny_at.is_some_and(|d| score >= d) {
                mark(Outcome::Deny);
            }
        }
        let outcome = rs
            .precedence
            .into_iter()
            .find(|o| contributed[*o as usize])
            .unwrap_or(Outcome::Allow);

        // Contribute after deciding: the intent never counts towards its own decision.
        self.contribute(&act, outcome, &positions, &mut slots);
        drop(slots);

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
            intent_id: intent.intent_id,
            agent_id: intent.agent_id,
            account_id: intent.account_id,
            action: intent.action,
            amount: intent.amount,
            currency: intent.currency,
            created_at: intent.created_at,
            outcome,
            score,
            reasons,
            errors,
            counters,
            ruleset: rs.version.clone(),
            decided_at: now,
            source,
            duplicate: false,
        });
        self.remember(at_ns, decision.clone());
        let decided = self.decided.fetch_add(1, Ordering::Relaxed) + 1;
        if decided >= self.next_sweep.load(Ordering::Relaxed) {
            self.sweep();
            let entries = (self.velocity.keys() + self.remembered.len()) as u64;
            self.next_sweep.store(
                decided + self.options.sweep_every.max(entries),
                Ordering::Relaxed,
            );
        }
        decision
    }

    /// Lets `intent`, decided `decision.outcome` by an earlier run, count again: the step a
    /// restore takes for each decision read back from the decisions topic. Rules are not
    /// evaluated; the counters see exactly the contributions the original run made (under
    /// the counter definitions of this engine's ruleset), and the decision is remembered
    /// for the duplicate horizon. A duplicate contributes nothing, as when it was decided.
    pub fn restore(&self, intent: &Intent, decision: Decision) {
        if decision.duplicate {
            return;
        }
        let rs = &*self.ruleset;
        let at_ns = intent.created_at.timestamp_nanos_opt().unwrap_or(0);
        let watermark = self.advance_watermark(at_ns, decision.decided_at);
        let amount_base = match (intent.amount, &rs.fx) {
            (None, _) => Ok(Decimal::ZERO),
            (Some(a), None) => Ok(a),
            (Some(a), Some(fx)) => fx.convert(a, intent.currency.as_deref().unwrap_or("")),
        };
        let mut key = CompactString::default();
        let mut slots: Vec<Result<Slot<'_>, usize>> = self
            .velocity
            .groups()
            .iter()
            .enumerate()
            .map(|(g, group)| {
                let paths = &rs.counters[group.counters[0]].key;
                counter_key(paths, intent, &mut key).map(|()| self.velocity.slot(g, &key))
            })
            .collect();
        let mut positions = SmallVec::new();
        self.positions(at_ns, watermark, &mut positions);
        // A counter's `where` cannot read counters, so none are offered.
        let act = Activation {
            intent,
            amount_base: amount_base.as_ref().copied().map_err(String::as_str),
            counters: &[],
            lists: &rs.list_values,
            action_bit: rs.actions.bit(&intent.action),
        };
        self.contribute(&act, decision.outcome, &positions, &mut slots);
        drop(slots);
        self.remember(at_ns, Arc::new(decision));
    }

    /// Where an intent created at `at_ns` falls for each counter, written into `positions`
    /// (filled in place: returning the vector would copy it).
    fn positions(&self, at_ns: i64, watermark: i64, positions: &mut SmallVec<[Position; 16]>) {
        positions.extend(
            (0..self.ruleset.counters.len()).map(|i| self.velocity.position(i, at_ns, watermark)),
        );
    }

    /// Adds the intent of `act`, decided `outcome`, to every counter that takes it.
    fn contribute(
        &self,
        act: &Activation<'_>,
        outcome: Outcome,
        positions: &[Position],
        slots: &mut [Result<Slot<'_>, usize>],
    ) {
        // Each distinct `where` is evaluated at most once per intent.
        let mut passed: SmallVec<[Option<bool>; 16]> =
            SmallVec::from_elem(None, self.ruleset.counters.len());
        for (i, c) in self.ruleset.counters.iter().enumerate() {
            let (g, m) = self.velocity.place(i);
            let Ok(slot) = &mut slots[g] else { continue };
            if !c.contributes.admits(outcome) {
                continue;
            }
            if let Some(filter) = &c.filter {
                let first = self.same_filter[i].unwrap_or(i);
                let pass = *passed[first].get_or_insert_with(|| filter.eval_bool(act) == Ok(true));
                if !pass {
                    continue;
                }
            }
            if let Some(contribution) = contribution(c, act.intent, act.amount_base) {
                slot.add(m, positions[i], contribution);
            }
        }
    }

    fn remember(&self, at_ns: i64, decision: Arc<Decision>) {
        let remembered = Remembered {
            created_at_ns: at_ns,
            decision,
        };
        // An intent id seen before (beyond the horizon) now stands for this decision.
        match self.remembered.entry(remembered) {
            Entry::Occupied(old) => drop(old.replace_entry(())),
            Entry::Vacant(new) => drop(new.insert(())),
        }
        // The duplicate horizon is swept on its own, more often than the rest of the state,
        // here, so that a restore is bounded too (see `EngineOptions::sweep_every`).
        let remembers = self.remembers.fetch_add(1, Ordering::Relaxed) + 1;
        if remembers >= self.next_forget.load(Ordering::Relaxed) {
            let left = self.forget() as u64;
            self.next_forget.store(
                remembers + left.max(Engine::forget_every_min(&self.options)),
                Ordering::Relaxed,
            );
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
        self.watermark_ns
            .load(Ordering::Relaxed)
            .saturating_sub(self.horizon_ns())
    }

    /// The fewest intents remembered between two sweeps of the duplicate horizon alone.
    fn forget_every_min(options: &EngineOptions) -> u64 {
        options.sweep_every.min(FORGET_EVERY_MIN)
    }

    fn duplicate_of(&self, intent_id: &str, at_ns: i64) -> Option<Arc<Decision>> {
        let horizon = self.horizon_ns();
        let found = self.remembered.get(intent_id)?;
        let entry = found.key();
        // An entry past the horizon behind the watermark counts as forgotten whether or not a
        // sweep has dropped it yet: when sweeps run changes no decision.
        (entry.created_at_ns >= self.forget_floor()
            && entry.created_at_ns.abs_diff(at_ns) <= horizon.unsigned_abs())
        .then(|| entry.decision.clone())
    }

    fn advance_watermark(&self, at_ns: i64, now: DateTime<Utc>) -> i64 {
        let candidate = match self.options.max_future_skew {
            Some(skew) => at_ns.min((now + skew).timestamp_nanos_opt().unwrap_or(i64::MAX)),
            None => at_ns,
        };
        let previous = self.watermark_ns.fetch_max(candidate, Ordering::Relaxed);
        previous.max(candidate)
    }

    /// Drops expired buckets, idle keys and intents past the duplicate horizon.
    pub fn sweep(&self) {
        let watermark = self.watermark_ns.load(Ordering::Relaxed);
        if watermark == i64::MIN {
            return;
        }
        self.velocity.sweep(watermark);
        self.forget();
    }

    /// Drops intents past the duplicate horizon; says how many are left.
    fn forget(&self) -> usize {
        let floor = self.forget_floor();
        self.remembered.retain(|r, ()| r.created_at_ns >= floor);
        self.remembered.len()
    }

    pub fn size(&self) -> EngineSize {
        EngineSize {
            velocity: self.velocity.size(),
            remembered_intents: self.remembered.len(),
        }
    }
}

/// Writes the key made of `paths` for `intent` into `key`, or says which path the intent lacks.
fn counter_key(paths: &[FieldPath], intent: &Intent, key: &mut CompactString) -> Result<(), usize> {
    key.clear();
    for (i, path) in paths.iter().enumerate() {
        let part = path.text(intent).ok_or(i)?;
        if i > 0 {
            key.push(KEY_SEPARATOR);
        }
        key.push_str(&part);
    }
    Ok(())
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
                FieldPath::Amount => amount_base.ok()?,
                path => match path.json(intent)? {
                    serde_json::Value::Number(n) => crate::expr::json_decimal(n)?,
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
