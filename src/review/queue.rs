//! The pending holds, as the decisions topic tells them: pure state, no I/O.
//!
//! Every review instance reads the whole decisions topic and applies each record here, in
//! partition order. A hold is identified by a [`HoldId`]: its partition-key value (the
//! record's key, which the engine checked against the intent) and its `intent_id`, the scope
//! in which the engine remembers intent ids; two accounts may use the same id, and their
//! holds are two holds. A decision of the engine (`"stage":"decision"`, or no stage) that
//! holds an intent puts it in the queue; a later decision for the same hold id replaces it (a
//! decision that does not hold takes it out). System decisions (`riskgate:*`: a misrouted,
//! stale, future or conflicting intent) answer another intent than the one held and change
//! nothing. A review record (`"stage":"review"`) approves or rejects it. Because every record
//! about one intent is on one partition, every instance that has read as far sees the same
//! queue, whoever wrote the records:
//!
//! * an approval counts once per reviewer; the intent is released (final, `allow`) when as
//!   many different reviewers as its hold asks for have approved it;
//! * a rejection (by a reviewer or by `system:expiry`) is final at once (`deny`);
//! * the first final record for an intent wins; anything later about it is ignored, except a
//!   new hold of the same intent id proposed again after the duplicate horizon (a later
//!   source, not a duplicate), whose review starts afresh;
//! * an ended review is forgotten once its partition's decisions are two duplicate horizons
//!   past its intent: no copy of its hold can come after that.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use rust_decimal::Decimal;

use crate::config::Role;
use riskgate_core::decision::{Decision, Outcome, RuleAction, Source};
use riskgate_core::intent::Counterparty;
use riskgate_core::wire::{self, parse_record, Approvals, HoldRef, ReviewRecord, Verdict};

/// The reviewer name of holds that expired unreviewed.
pub const EXPIRY_REVIEWER: &str = "system:expiry";

/// What identifies a hold: the intent's partition-key value (the key of its records on the
/// decisions topic) and its `intent_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HoldId {
    pub key: String,
    pub intent_id: String,
}

impl HoldId {
    pub fn new(key: impl Into<String>, intent_id: impl Into<String>) -> Self {
        HoldId {
            key: key.into(),
            intent_id: intent_id.into(),
        }
    }

    /// The id of the hold a record keyed `key` is about.
    fn of_record(key: Option<&[u8]>, intent_id: &str) -> Self {
        HoldId::new(
            key.map(String::from_utf8_lossy).unwrap_or_default(),
            intent_id,
        )
    }
}

impl std::fmt::Display for HoldId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` of `{}`", self.intent_id, self.key)
    }
}

/// A held intent waiting for reviewers.
#[derive(Debug, Clone)]
pub struct Hold {
    pub id: HoldId,
    /// The hold decision, as the engine made it.
    pub decision: Decision,
    pub counterparty: Option<Counterparty>,
    /// How many different reviewers must approve.
    pub required: u8,
    /// Who approved so far, in order.
    pub approved_by: Vec<String>,
    /// Where the hold decision is: the decisions topic's partition and offset, and the
    /// record's key (a review record goes to the same partition with the same key).
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    /// The decision record as the engine wrote it.
    pub record: Arc<str>,
    /// The amount as the rules compared it, in the base currency: the decision's
    /// `amount_base` when its ruleset had `[fx]`, else the amount itself; `None` without an
    /// amount, or when its currency had no rate.
    pub base_amount: Option<Decimal>,
}

/// The amount of `d` as its rules compared it (see [`Hold::base_amount`]).
fn base_amount(d: &Decision) -> Option<Decimal> {
    match &d.base_currency {
        Some(_) => d.amount_base,
        None => d.head.amount,
    }
}

/// Who a name (a reviewer's, an agent id) stands for: trimmed, NFKC-normalized, in lower
/// case, then reduced to its UTS #39 skeleton and put in lower case again (a skeleton may
/// have capitals: `0` is `O`), so that `Payments-Bot`, `payments-bot ` and `pаyments-bot` (a
/// Cyrillic `а`) are one person, as are `a1ice` and `alice`, `0k` and `ok`.
pub fn person(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let folded: String = name.trim().nfkc().collect::<String>().to_lowercase();
    unicode_security::skeleton(&folded)
        .collect::<String>()
        .to_lowercase()
}

/// Whether two names (reviewers, agent ids) are one person's (see [`person`]).
pub fn same_person(a: &str, b: &str) -> bool {
    a == b || person(a) == person(b)
}

/// Trims filter texts and puts them in lower case, as [`contains`] compares them.
fn lower<const N: usize>(texts: [&mut Option<String>; N]) {
    for t in texts {
        *t = t.take().map(|t| t.trim().to_lowercase());
    }
}

/// Whether `haystack` contains `needle` (already lower case), ignoring case.
fn contains(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(needle)
}

impl Hold {
    /// Whether the amount has no known base amount: its currency had no rate.
    pub fn base_unknown(&self) -> bool {
        self.decision.head.amount.is_some() && self.base_amount.is_none()
    }

    /// When an unreviewed hold is rejected by [`EXPIRY_REVIEWER`].
    pub fn expires_at(&self, expire_after: TimeDelta) -> DateTime<Utc> {
        self.decision.decided_at + expire_after
    }

    /// Whether a reason or a rule error names a rule whose id contains `needle` (lower
    /// case).
    pub fn names_rule(&self, needle: &str) -> bool {
        let d = &self.decision;
        d.reasons.iter().any(|r| contains(&r.rule, needle))
            || d.errors.iter().any(|e| contains(&e.rule, needle))
    }

    /// Whether any of the hold's identifying texts contains `needle` (lower case): intent
    /// id, key, agent, account, action, counterparty name and id, rule ids.
    pub fn mentions(&self, needle: &str) -> bool {
        let h = &self.decision.head;
        [
            &self.id.intent_id,
            &self.id.key,
            h.agent_id.as_str(),
            h.account_id.as_str(),
            h.action.as_str(),
        ]
        .iter()
        .any(|t| contains(t, needle))
            || self.counterparty.as_ref().is_some_and(|cp| {
                [&cp.name, &cp.id]
                    .iter()
                    .any(|t| t.as_deref().is_some_and(|t| contains(t, needle)))
            })
            || self.names_rule(needle)
    }

    pub fn intent_id(&self) -> &str {
        &self.id.intent_id
    }
}

/// How a review ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Final {
    pub verdict: Verdict,
    pub reviewer: String,
    pub partition: i32,
    pub offset: i64,
    /// The intent the hold decided, as its `source` names it (partition and offset), when
    /// the hold was seen: a later decision of the same intent id from a later source (not a
    /// duplicate) is a new proposal.
    hold_source: Option<(i32, i64)>,
    /// The held intent's `created_at` (its hold's `decided_at` when the hold was not seen):
    /// the ended review is forgotten once its partition has moved on well past it.
    created_at: Option<DateTime<Utc>>,
}

/// Why a review is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0} is not held: it was never held, is already reviewed, or is not read yet")]
    NotPending(HoldId),
    #[error("the role `viewer` may look at holds but not approve or reject them")]
    Viewer,
    #[error("`{0}` proposed this intent and can never approve it")]
    Proposer(String),
    #[error(
        "`{0}` has already approved this intent; a second approval must come from someone else"
    )]
    AlreadyApproved(String),
    #[error("a rejection needs a comment saying why")]
    NoComment,
    #[error("{id} was decided again since you looked at it: its hold is now the record at partition {partition}, offset {offset}; look at it again")]
    Changed {
        id: HoldId,
        partition: i32,
        offset: i64,
    },
    #[error("your review of {0} is being published already; wait for its answer")]
    InProgress(HoldId),
}

impl Refusal {
    /// A short, stable label (metrics, logs).
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::NotPending(_) => "not_pending",
            Refusal::Viewer => "viewer",
            Refusal::Proposer(_) => "proposer",
            Refusal::AlreadyApproved(_) => "already_approved",
            Refusal::NoComment => "no_comment",
            Refusal::Changed { .. } => "hold_changed",
            Refusal::InProgress(_) => "in_progress",
        }
    }
}

/// What applying a record did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A hold entered (or was replaced in) the queue.
    Held,
    /// A decision that does not hold took a pending intent out of the queue.
    Cleared,
    /// An approval that still needs more.
    Approved,
    /// The review of this intent ended with this record.
    Finished(Verdict),
    /// Nothing changed, and why (logged at debug).
    Ignored(&'static str),
    /// A review record riskgate cannot have written, ignored like a forged record (counted
    /// in `riskgate_unverified_records_total`): `unknown_reviewer` (it names no configured
    /// reviewer) or `not_the_pending_hold` (it answers another decision record than the
    /// pending hold).
    Refused(&'static str),
}

/// The reasons of [`Applied::Refused`]: a review record that names no configured reviewer,
/// and one that answers another decision record than the pending hold.
pub const REFUSED_RECORDS: [&str; 2] = ["unknown_reviewer", "not_the_pending_hold"];

/// A filter of the pending list; every given field must match. Texts match as substrings,
/// ignoring case; amounts are base amounts (a hold whose currency had no rate passes an
/// amount filter, flagged as such, so that nothing large hides behind a missing rate); ages
/// count from the intent's `created_at`.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub rule: Option<String>,
    pub agent: Option<String>,
    pub account: Option<String>,
    /// Any identifying text (see [`Hold::mentions`]).
    pub text: Option<String>,
    pub min_amount: Option<Decimal>,
    pub max_amount: Option<Decimal>,
    pub min_age: Option<TimeDelta>,
    pub max_age: Option<TimeDelta>,
}

impl Filter {
    /// The filter with its texts in lower case, as [`Filter::accepts`] compares them.
    pub fn normalized(mut self) -> Filter {
        lower([
            &mut self.rule,
            &mut self.agent,
            &mut self.account,
            &mut self.text,
        ]);
        self
    }

    /// Whether `hold` passes; the filter's texts must be [`normalized`](Filter::normalized).
    pub fn accepts(&self, hold: &Hold, now: DateTime<Utc>) -> bool {
        let h = &hold.decision;
        let age = now - h.head.created_at;
        let amount = |pass: &dyn Fn(Decimal) -> bool| {
            h.head.amount.is_some() && hold.base_amount.is_none_or(pass)
        };
        self.rule.as_deref().is_none_or(|r| hold.names_rule(r))
            && self
                .agent
                .as_deref()
                .is_none_or(|a| contains(&h.head.agent_id, a))
            && self
                .account
                .as_deref()
                .is_none_or(|a| contains(&h.head.account_id, a))
            && self.text.as_deref().is_none_or(|t| hold.mentions(t))
            && self.min_amount.is_none_or(|m| amount(&|a| a >= m))
            && self.max_amount.is_none_or(|m| amount(&|a| a <= m))
            && self.min_age.is_none_or(|m| age >= m)
            && self.max_age.is_none_or(|m| age <= m)
    }
}

/// A review that ended, as the history shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub id: HoldId,
    pub agent_id: String,
    pub account_id: String,
    pub action: String,
    pub amount: Option<Decimal>,
    pub currency: Option<String>,
    pub base_amount: Option<Decimal>,
    pub base_currency: Option<String>,
    pub created_at: DateTime<Utc>,
    pub decided_at: DateTime<Utc>,
    /// The rules that held it (reasons and errors).
    pub rules: Vec<String>,
    pub verdict: Verdict,
    /// Who ended it (`system:expiry` for an expiry), and when.
    pub reviewer: String,
    pub reviewed_at: Option<DateTime<Utc>>,
    pub comment: String,
    pub approved_by: Vec<String>,
    /// The review record that ended it.
    pub partition: i32,
    pub offset: i64,
}

impl Ended {
    /// `approve`, `reject` or `expire`.
    pub fn outcome(&self) -> &'static str {
        match self.verdict {
            Verdict::Approve => "approve",
            Verdict::Reject if self.reviewer == EXPIRY_REVIEWER => "expire",
            Verdict::Reject => "reject",
        }
    }
}

/// A filter of the history; texts match as substrings, ignoring case.
#[derive(Debug, Clone, Default)]
pub struct HistoryFilter {
    pub reviewer: Option<String>,
    /// `approve`, `reject` or `expire`.
    pub outcome: Option<String>,
    pub agent: Option<String>,
    pub account: Option<String>,
    pub text: Option<String>,
}

impl HistoryFilter {
    pub fn normalized(mut self) -> HistoryFilter {
        lower([
            &mut self.reviewer,
            &mut self.outcome,
            &mut self.agent,
            &mut self.account,
            &mut self.text,
        ]);
        self
    }

    pub fn accepts(&self, e: &Ended) -> bool {
        self.reviewer
            .as_deref()
            .is_none_or(|r| contains(&e.reviewer, r))
            && self.outcome.as_deref().is_none_or(|o| e.outcome() == o)
            && self
                .agent
                .as_deref()
                .is_none_or(|a| contains(&e.agent_id, a))
            && self
                .account
                .as_deref()
                .is_none_or(|a| contains(&e.account_id, a))
            && self.text.as_deref().is_none_or(|t| {
                [
                    &e.id.intent_id,
                    &e.id.key,
                    &e.agent_id,
                    &e.account_id,
                    &e.action,
                    &e.reviewer,
                    &e.comment,
                ]
                .iter()
                .any(|x| contains(x, t))
                    || e.rules.iter().any(|r| contains(r, t))
            })
    }
}

/// How many ended reviews the history keeps (the newest).
pub const HISTORY_MAX: usize = 10_000;

/// The pending holds, and how the reviews that ended ended.
#[derive(Debug)]
pub struct Queue {
    pending: HashMap<HoldId, Hold>,
    finished: HashMap<HoldId, Final>,
    /// The newest ended reviews, oldest first, at most [`HISTORY_MAX`].
    history: std::collections::VecDeque<Ended>,
    /// Next offset to read, per decisions partition.
    positions: HashMap<i32, i64>,
    /// The latest `created_at` of a decision read, per decisions partition.
    watermarks: HashMap<i32, DateTime<Utc>>,
    /// An ended review is forgotten once its partition's watermark is this far past its
    /// intent: twice the engine's duplicate horizon, after which no copy of its hold can come.
    forget_after: TimeDelta,
    /// `finished` is swept of forgotten reviews when it reaches this size.
    next_forget: usize,
    /// The configured reviewers, as [`person`] names them, with the agents each operates (as
    /// [`person`] names them): a review record by anyone else (but `system:expiry`) is
    /// refused, and nobody approves an intent of an agent they operate. `None` accepts any
    /// name (unit tests).
    reviewers: Option<HashMap<String, Vec<String>>>,
}

/// The fewest ended reviews kept before they are swept.
const FORGET_MIN: usize = 1_024;

/// A queue for decisions made with the engine's default duplicate horizon.
impl Default for Queue {
    fn default() -> Self {
        Queue::with_duplicate_horizon(
            riskgate_core::engine::EngineOptions::default().duplicate_horizon,
        )
    }
}

impl Queue {
    /// A queue for decisions made with the engine's duplicate horizon `horizon`.
    pub fn with_duplicate_horizon(horizon: TimeDelta) -> Self {
        Queue {
            pending: HashMap::new(),
            finished: HashMap::new(),
            history: std::collections::VecDeque::new(),
            positions: HashMap::new(),
            watermarks: HashMap::new(),
            forget_after: horizon * 2,
            next_forget: FORGET_MIN,
            reviewers: None,
        }
    }

    /// Only review records by these reviewers (or `system:expiry`) count; each never approves
    /// an intent of the agents it names.
    pub fn with_reviewers<'a>(
        mut self,
        reviewers: impl IntoIterator<Item = (&'a str, &'a [String])>,
    ) -> Self {
        self.reviewers = Some(
            reviewers
                .into_iter()
                .map(|(name, agents)| (person(name), agents.iter().map(|a| person(a)).collect()))
                .collect(),
        );
        self
    }

    /// Whether `reviewer` proposed intents of `agent`: it is that agent, or operates it.
    fn is_proposer(&self, reviewer: &str, agent: &str) -> bool {
        same_person(reviewer, agent)
            || self.reviewers.as_ref().is_some_and(|r| {
                r.get(&person(reviewer))
                    .is_some_and(|agents| agents.contains(&person(agent)))
            })
    }

    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn get(&self, id: &HoldId) -> Option<&Hold> {
        self.pending.get(id)
    }

    /// How the review of `id` ended, if it has.
    pub fn finished(&self, id: &HoldId) -> Option<&Final> {
        self.finished.get(id)
    }

    /// The next offset to read on `partition` (0 before anything was read).
    pub fn position(&self, partition: i32) -> i64 {
        self.positions.get(&partition).copied().unwrap_or(0)
    }

    /// The pending holds that `filter` accepts, oldest intent first.
    pub fn list(&self, filter: &Filter, now: DateTime<Utc>) -> Vec<&Hold> {
        let mut out: Vec<&Hold> = self
            .pending
            .values()
            .filter(|h| filter.accepts(h, now))
            .collect();
        out.sort_by(|a, b| {
            (a.decision.head.created_at, &a.id).cmp(&(b.decision.head.created_at, &b.id))
        });
        out
    }

    /// The ended reviews that `filter` accepts, newest first.
    pub fn history(&self, filter: &HistoryFilter) -> Vec<&Ended> {
        self.history
            .iter()
            .rev()
            .filter(|e| filter.accepts(e))
            .collect()
    }

    /// Passes over the record at `partition` / `offset` (one no reader may use).
    pub fn skip(&mut self, partition: i32, offset: i64) {
        let next = self.positions.entry(partition).or_insert(0);
        *next = (*next).max(offset + 1);
    }

    /// Applies the record at `partition` / `offset` of the decisions topic. Records that are
    /// not readable as a decision or a review are an error, for the caller to log; they
    /// change nothing.
    pub fn apply(
        &mut self,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: &[u8],
        max_intent_bytes: usize,
    ) -> Result<Applied, wire::ReadError> {
        let next = self.positions.entry(partition).or_insert(0);
        *next = (*next).max(offset + 1);
        // Most records are decisions that do not hold: a light look tells them apart.
        let head = wire::read_head(payload)?;
        match head.stage.as_deref() {
            Some("review") => {
                let record = wire::read_review(payload)?;
                return Ok(self.apply_review(record, key, partition, offset));
            }
            None | Some("decision") => {}
            Some(_) => return Ok(Applied::Ignored("a record of an unknown stage")),
        }
        if head.is_system() {
            // It answers another intent than the one held (a conflicting one, a stale copy,
            // a misrouted one): the hold and its review stand.
            return Ok(Applied::Ignored("a system decision"));
        }
        if let Some(at) = head.created_at {
            let w = self.watermarks.entry(partition).or_insert(at);
            *w = (*w).max(at);
        }
        let id = HoldId::of_record(key, &head.intent_id);
        if let Some(ended) = self.finished.get(&id) {
            // A duplicate re-emits the hold; a decision from the same source, or an earlier
            // one, is a copy (an aborted transaction's record, then the committed one).
            // Either way that review has ended. Only a decision of the same intent id
            // proposed again after the duplicate horizon (a later source, not a duplicate)
            // starts afresh.
            let later = match (head.source_position(), ended.hold_source) {
                (Some((p, o)), Some((held_p, held_o))) => p != held_p || o > held_o,
                _ => false,
            };
            if head.duplicate || !later {
                return Ok(Applied::Ignored("the review of this intent has ended"));
            }
            self.finished.remove(&id);
        }
        if head.duplicate && self.pending.contains_key(&id) {
            // A duplicate re-emits the pending hold: the hold stays the record it was, so that
            // reviews of it stand (an agent re-sending its intent cannot move its hold).
            return Ok(Applied::Ignored("a duplicate of a pending hold"));
        }
        if head.decision != Some(Outcome::Hold) {
            return Ok(match self.pending.remove(&id) {
                Some(_) => Applied::Cleared,
                None => Applied::Ignored("not a hold"),
            });
        }
        let Some((decision, intent)) = parse_record(payload, max_intent_bytes)? else {
            return Ok(Applied::Ignored("a record of an unknown stage"));
        };
        let base = base_amount(&decision);
        let required = decision
            .reasons
            .iter()
            .filter(|r| r.action == RuleAction::Hold)
            .map(|r| r.approvals)
            .max()
            .unwrap_or(1)
            .max(1);
        // A later decision for the same intent (a duplicate, or the committed decision after
        // an aborted one on a broker that shows aborted records) replaces the earlier one but
        // keeps the approvals already given.
        let approved_by = self
            .pending
            .remove(&id)
            .map(|h| h.approved_by)
            .unwrap_or_default();
        let hold = Hold {
            id: id.clone(),
            decision,
            counterparty: intent.counterparty,
            required,
            approved_by,
            partition,
            offset,
            key: key.map(<[u8]>::to_vec),
            record: Arc::from(String::from_utf8_lossy(payload)),
            base_amount: base,
        };
        let released = hold
            .approved_by
            .last()
            .cloned()
            .filter(|_| hold.approved_by.len() >= usize::from(hold.required));
        self.pending.insert(id.clone(), hold);
        Ok(match released {
            // Approvals given while an earlier record held it already suffice.
            Some(last) => self.finish(&id, Verdict::Approve, last, (partition, offset), None),
            None => Applied::Held,
        })
    }

    fn apply_review(
        &mut self,
        r: ReviewRecord,
        key: Option<&[u8]>,
        partition: i32,
        offset: i64,
    ) -> Applied {
        let id = HoldId::of_record(key, &r.intent_id);
        if !r.key.is_empty() && r.key != id.key {
            return Applied::Ignored("a review record whose `key` is not its record's key");
        }
        if r.reviewer != EXPIRY_REVIEWER
            && self
                .reviewers
                .as_ref()
                .is_some_and(|known| !known.contains_key(&person(&r.reviewer)))
        {
            return Applied::Refused(REFUSED_RECORDS[0]);
        }
        if self.finished.contains_key(&id) {
            return Applied::Ignored("the review of this intent has already ended");
        }
        if self
            .pending
            .get(&id)
            .is_some_and(|h| (h.partition, h.offset) != (r.hold.partition, r.hold.offset))
        {
            return Applied::Refused(REFUSED_RECORDS[1]);
        }
        let proposer = self
            .pending
            .get(&id)
            .is_some_and(|h| self.is_proposer(&r.reviewer, &h.decision.head.agent_id));
        let Some(hold) = self.pending.get_mut(&id) else {
            // A review of a hold this queue never saw (its decision record was unreadable,
            // or is gone with retention): the review still ends it, so that a late copy of
            // the decision cannot bring it back.
            if r.review == Verdict::Reject || r.is_final {
                let created_at = r.hold.decided_at.parse().ok();
                self.end(
                    id,
                    Final {
                        verdict: r.review,
                        reviewer: r.reviewer,
                        partition,
                        offset,
                        hold_source: None,
                        created_at,
                    },
                );
                return Applied::Ignored("a review of an intent that is not pending");
            }
            return Applied::Ignored("an approval of an intent that is not pending");
        };
        match r.review {
            Verdict::Reject => {
                let reviewer = r.reviewer.clone();
                self.finish(
                    &id,
                    Verdict::Reject,
                    reviewer,
                    (partition, offset),
                    Some(&r),
                )
            }
            Verdict::Approve => {
                if hold.approved_by.iter().any(|a| same_person(a, &r.reviewer)) {
                    return Applied::Ignored("this reviewer has already approved");
                }
                if proposer {
                    return Applied::Ignored("the proposer cannot approve");
                }
                hold.approved_by.push(r.reviewer.clone());
                if hold.approved_by.len() >= usize::from(hold.required) {
                    let reviewer = r.reviewer.clone();
                    self.finish(
                        &id,
                        Verdict::Approve,
                        reviewer,
                        (partition, offset),
                        Some(&r),
                    )
                } else {
                    Applied::Approved
                }
            }
        }
    }

    fn finish(
        &mut self,
        id: &HoldId,
        verdict: Verdict,
        reviewer: String,
        (partition, offset): (i32, i64),
        review: Option<&ReviewRecord>,
    ) -> Applied {
        let hold = self.pending.remove(id);
        if let Some(h) = &hold {
            self.remember_ended(h, verdict, &reviewer, (partition, offset), review);
        }
        let hold_source = hold.as_ref().and_then(|h| match h.decision.source {
            Source::Kafka {
                partition, offset, ..
            } => Some((partition, offset)),
            Source::File { .. } => None,
        });
        self.end(
            id.clone(),
            Final {
                verdict,
                reviewer,
                partition,
                offset,
                hold_source,
                created_at: hold.map(|h| h.decision.head.created_at),
            },
        );
        Applied::Finished(verdict)
    }

    /// Adds the review of `hold` that just ended to the history, dropping the oldest beyond
    /// [`HISTORY_MAX`].
    fn remember_ended(
        &mut self,
        hold: &Hold,
        verdict: Verdict,
        reviewer: &str,
        (partition, offset): (i32, i64),
        review: Option<&ReviewRecord>,
    ) {
        let d = &hold.decision;
        let mut approved_by = hold.approved_by.clone();
        if verdict == Verdict::Approve && !approved_by.iter().any(|a| a == reviewer) {
            approved_by.push(reviewer.to_owned());
        }
        self.history.push_back(Ended {
            id: hold.id.clone(),
            agent_id: d.head.agent_id.to_string(),
            account_id: d.head.account_id.to_string(),
            action: d.head.action.to_string(),
            amount: d.head.amount,
            currency: d.head.currency.as_ref().map(ToString::to_string),
            base_amount: hold.base_amount,
            base_currency: d.base_currency.as_ref().map(ToString::to_string),
            created_at: d.head.created_at,
            decided_at: d.decided_at,
            rules: d
                .reasons
                .iter()
                .map(|r| r.rule.to_string())
                .chain(d.errors.iter().map(|e| e.rule.to_string()))
                .collect(),
            verdict,
            reviewer: reviewer.to_owned(),
            reviewed_at: review.and_then(|r| r.reviewed_at.parse().ok()),
            comment: review.map(|r| r.comment.clone()).unwrap_or_default(),
            approved_by,
            partition,
            offset,
        });
        while self.history.len() > HISTORY_MAX {
            self.history.pop_front();
        }
    }

    /// Records how the review of `id` ended; now and then, forgets reviews whose partition
    /// has moved on past them (see `forget_after`): the map stays within about twice what is
    /// live, for about two entries visited per review.
    fn end(&mut self, id: HoldId, ended: Final) {
        self.finished.insert(id, ended);
        if self.finished.len() >= self.next_forget {
            let (watermarks, after) = (&self.watermarks, self.forget_after);
            self.finished
                .retain(|_, f| match (f.created_at, watermarks.get(&f.partition)) {
                    (Some(at), Some(w)) => at >= *w - after,
                    _ => true,
                });
            self.next_forget = (2 * self.finished.len()).max(FORGET_MIN);
        }
    }

    /// The review record `reviewer` asks to publish, or why they may not. `seen`, when
    /// given, is the hold decision record (partition, offset) the reviewer looked at: a hold
    /// decided again since is refused, so that nobody approves what they did not see.
    #[allow(clippy::too_many_arguments)]
    pub fn review(
        &self,
        id: &HoldId,
        seen: Option<(i32, i64)>,
        reviewer: &str,
        role: Role,
        verdict: Verdict,
        comment: &str,
        now: DateTime<Utc>,
    ) -> Result<ReviewRecord, Refusal> {
        if role != Role::Approver {
            return Err(Refusal::Viewer);
        }
        let hold = self
            .pending
            .get(id)
            .ok_or_else(|| Refusal::NotPending(id.clone()))?;
        if seen.is_some_and(|s| s != (hold.partition, hold.offset)) {
            return Err(Refusal::Changed {
                id: id.clone(),
                partition: hold.partition,
                offset: hold.offset,
            });
        }
        if verdict == Verdict::Approve {
            if self.is_proposer(reviewer, &hold.decision.head.agent_id) {
                return Err(Refusal::Proposer(reviewer.to_owned()));
            }
            if hold.approved_by.iter().any(|a| same_person(a, reviewer)) {
                return Err(Refusal::AlreadyApproved(reviewer.to_owned()));
            }
        } else if comment.trim().is_empty() {
            return Err(Refusal::NoComment);
        }
        Ok(record(hold, reviewer, verdict, comment, now))
    }

    /// Reject records for every hold decided more than `expire_after` before `now`, with the
    /// hold each is for.
    pub fn expired(
        &self,
        now: DateTime<Utc>,
        expire_after: TimeDelta,
    ) -> Vec<(HoldId, ReviewRecord)> {
        let mut out: Vec<(HoldId, ReviewRecord)> = self
            .pending
            .values()
            .filter(|h| h.expires_at(expire_after) <= now)
            .map(|h| {
                let comment = format!(
                    "not reviewed within {}; rejected automatically",
                    human(expire_after)
                );
                (
                    h.id.clone(),
                    record(h, EXPIRY_REVIEWER, Verdict::Reject, &comment, now),
                )
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// The record of `reviewer`'s `verdict` on `hold`.
fn record(
    hold: &Hold,
    reviewer: &str,
    verdict: Verdict,
    comment: &str,
    now: DateTime<Utc>,
) -> ReviewRecord {
    let d = &hold.decision;
    let mut approved_by = hold.approved_by.clone();
    let decision = match verdict {
        Verdict::Reject => Outcome::Deny,
        Verdict::Approve => {
            approved_by.push(reviewer.to_owned());
            if approved_by.len() >= usize::from(hold.required) {
                Outcome::Allow
            } else {
                Outcome::Hold
            }
        }
    };
    ReviewRecord {
        stage: "review".to_owned(),
        intent_id: hold.id.intent_id.clone(),
        key: hold.id.key.clone(),
        agent_id: d.head.agent_id.to_string(),
        account_id: d.head.account_id.to_string(),
        action: d.head.action.to_string(),
        amount: d.head.amount.as_ref().map(wire::text::decimal_string),
        currency: d.head.currency.as_ref().map(ToString::to_string),
        decision,
        review: verdict,
        is_final: decision != Outcome::Hold,
        reviewer: reviewer.to_owned(),
        comment: comment.to_owned(),
        reviewed_at: wire::text::timestamp(&now),
        approvals: Approvals {
            required: hold.required,
            approved_by,
        },
        hold: HoldRef {
            partition: hold.partition,
            offset: hold.offset,
            decided_at: wire::text::timestamp(&d.decided_at),
            ruleset: d.ruleset.to_string(),
        },
    }
}

/// `90s`, `15m`, `24h`, `2d`: the largest unit that divides the duration.
fn human(d: TimeDelta) -> String {
    let s = d.num_seconds();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if s >= size && s % size == 0 {
            return format!("{}{unit}", s / size);
        }
    }
    format!("{s}s")
}

#[cfg(test)]
mod tests;
