//! What the gateway has read from the decisions and dead-letter topics, kept for the answers
//! it gives: bounded by count and by age, with the requests waiting for what is not there yet.
//!
//! Two indexes over one set of answers:
//! * by **source** (the intents partition and offset an answer is for): a `POST` knows the
//!   offset its intent was written at, and waits for exactly that intent's answer, be it a
//!   decision, a duplicate's decision, a conflict's denial or a dead letter;
//! * by **id** (the partition-key value and `intent_id`): a `GET` asks for an intent's
//!   decision; the intent's own decision wins over a duplicate's copy of it, and either over a
//!   system decision (a conflict, a stale or future intent) made for another proposal under
//!   the same id.
//!
//! An answer older than the age, or beyond the count (the oldest go first), is forgotten:
//! a `GET` of it is a 404, and posting its intent again gets its decision again as a duplicate
//! (within the engine's duplicate horizon).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use tokio::sync::oneshot;

/// An intent's place on the intents topic: partition and offset.
pub type Source = (i32, i64);

/// An intent's identity: its partition-key value (the record key) and its `intent_id`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Id {
    pub key: String,
    pub intent_id: String,
}

/// What a decision is, as far as choosing the answer to a `GET` by id goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rank {
    /// A system decision (`riskgate:*`): made for a proposal, not the intent's decision.
    System,
    /// A duplicate: the intent's decision, answered again.
    Duplicate,
    /// The intent's decision.
    Original,
}

/// An answer the gateway can give.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// A decision record, as JSON without its embedded intent.
    Decision {
        body: Bytes,
        agent_id: String,
        outcome: String,
        rank: Rank,
    },
    /// A dead letter's `error`, as JSON: the engine could not read the intent.
    DeadLetter { error: Bytes },
}

impl Answer {
    fn bytes(&self) -> usize {
        match self {
            Answer::Decision {
                body,
                agent_id,
                outcome,
                ..
            } => body.len() + agent_id.len() + outcome.len(),
            Answer::DeadLetter { error } => error.len(),
        }
    }
}

/// Where a request waits: the sending half, and an id to take it back by.
type Waiter = (u64, oneshot::Sender<Arc<Answer>>);

/// One answer, as the age and count bound see it.
struct Entry {
    read_at: Instant,
    source: Source,
    id: Option<Id>,
    answer: Arc<Answer>,
}

/// Overhead per entry beyond its bytes, for the size gauge: two map slots (and their growth
/// room), the queue slot, the `Arc`, the strings and the allocator's rounding. Calibrated on
/// `examples/gateway_load.rs`: the gateway's RSS grew 1,470 bytes per answer over 97,500
/// answers whose bytes averaged 751 (docs/performance.md, "Gateway").
const ENTRY_OVERHEAD: usize = 720;

pub struct Cache {
    max_entries: usize,
    max_age: Duration,
    by_source: HashMap<Source, Arc<Answer>>,
    by_id: HashMap<Id, Arc<Answer>>,
    order: VecDeque<Entry>,
    wait_source: HashMap<Source, Vec<Waiter>>,
    wait_id: HashMap<Id, Vec<Waiter>>,
    /// Intents this gateway wrote that have no answer yet: when, and where they were written.
    pending: HashMap<Id, (Instant, Source)>,
    /// The same, by where they were written: a dead letter names only its source.
    pending_at: HashMap<Source, Id>,
    next_waiter: u64,
    bytes: usize,
}

/// A request's place in line for an answer ([`Cache::wait_for_source`]).
pub struct Ticket {
    pub id: u64,
    pub answer: oneshot::Receiver<Arc<Answer>>,
}

impl Cache {
    pub fn new(max_entries: usize, max_age: Duration) -> Cache {
        Cache {
            max_entries: max_entries.max(1),
            max_age,
            by_source: HashMap::new(),
            by_id: HashMap::new(),
            order: VecDeque::new(),
            wait_source: HashMap::new(),
            wait_id: HashMap::new(),
            pending: HashMap::new(),
            pending_at: HashMap::new(),
            next_waiter: 0,
            bytes: 0,
        }
    }

    /// Answers kept.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// About how many bytes the kept answers take.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keeps `answer` for the intent at `source` (with `id` when it is a decision), read at
    /// `now`, and hands it to every request waiting for it. A dead letter of an intent this
    /// gateway wrote is also its answer by id.
    pub fn insert(&mut self, now: Instant, source: Source, id: Option<Id>, answer: Answer) {
        let answer = Arc::new(answer);
        for (_, tx) in self.wait_source.remove(&source).unwrap_or_default() {
            let _ = tx.send(answer.clone());
        }
        let id = id.or_else(|| self.pending_at.get(&source).cloned());
        if let Some(id) = &id {
            if let Some((_, at)) = self.pending.remove(id) {
                self.pending_at.remove(&at);
            }
            let better = match (self.by_id.get(id).map(|a| a.as_ref()), answer.as_ref()) {
                (Some(Answer::Decision { rank: old, .. }), Answer::Decision { rank, .. }) => {
                    rank > old
                }
                (None, _) | (Some(Answer::DeadLetter { .. }), Answer::Decision { .. }) => true,
                _ => false,
            };
            if better {
                self.by_id.insert(id.clone(), answer.clone());
                for (_, tx) in self.wait_id.remove(id).unwrap_or_default() {
                    let _ = tx.send(answer.clone());
                }
            }
        }
        self.bytes += answer.bytes()
            + ENTRY_OVERHEAD
            + id.as_ref()
                .map_or(0, |i| 2 * (i.key.len() + i.intent_id.len()));
        self.by_source.insert(source, answer.clone());
        self.order.push_back(Entry {
            read_at: now,
            source,
            id,
            answer,
        });
        self.evict(now);
    }

    /// Forgets answers beyond the count or older than the age, and pending marks older
    /// than the age.
    pub fn evict(&mut self, now: Instant) {
        while let Some(front) = self.order.front() {
            let old = now.saturating_duration_since(front.read_at) > self.max_age;
            if !old && self.order.len() <= self.max_entries {
                break;
            }
            let Some(e) = self.order.pop_front() else {
                break;
            };
            if self
                .by_source
                .get(&e.source)
                .is_some_and(|a| Arc::ptr_eq(a, &e.answer))
            {
                self.by_source.remove(&e.source);
            }
            if let Some(id) = &e.id {
                if self
                    .by_id
                    .get(id)
                    .is_some_and(|a| Arc::ptr_eq(a, &e.answer))
                {
                    self.by_id.remove(id);
                }
            }
            self.bytes = self.bytes.saturating_sub(
                e.answer.bytes()
                    + ENTRY_OVERHEAD
                    + e.id
                        .as_ref()
                        .map_or(0, |i| 2 * (i.key.len() + i.intent_id.len())),
            );
        }
        let max_age = self.max_age;
        let pending_at = &mut self.pending_at;
        self.pending.retain(|_, (at, source)| {
            let keep = now.saturating_duration_since(*at) <= max_age;
            if !keep {
                pending_at.remove(source);
            }
            keep
        });
    }

    /// The answer for the intent at `source`, or a ticket to wait for it.
    pub fn wait_for_source(&mut self, source: Source) -> Result<Arc<Answer>, Ticket> {
        if let Some(a) = self.by_source.get(&source) {
            return Ok(a.clone());
        }
        let (tx, rx) = oneshot::channel();
        let id = self.next_waiter();
        self.wait_source.entry(source).or_default().push((id, tx));
        Err(Ticket { id, answer: rx })
    }

    /// The decision of `id`, or a ticket to wait for it.
    pub fn wait_for_id(&mut self, id: &Id) -> Result<Arc<Answer>, Ticket> {
        if let Some(a) = self.by_id.get(id) {
            return Ok(a.clone());
        }
        let (tx, rx) = oneshot::channel();
        let ticket = self.next_waiter();
        self.wait_id
            .entry(id.clone())
            .or_default()
            .push((ticket, tx));
        Err(Ticket {
            id: ticket,
            answer: rx,
        })
    }

    /// Takes a ticket back (its wait ran out).
    pub fn leave_source(&mut self, source: Source, ticket: u64) {
        if let Some(w) = self.wait_source.get_mut(&source) {
            w.retain(|(id, _)| *id != ticket);
            if w.is_empty() {
                self.wait_source.remove(&source);
            }
        }
    }

    /// Takes a ticket back (its wait ran out).
    pub fn leave_id(&mut self, id: &Id, ticket: u64) {
        if let Some(w) = self.wait_id.get_mut(id) {
            w.retain(|(t, _)| *t != ticket);
            if w.is_empty() {
                self.wait_id.remove(id);
            }
        }
    }

    /// Notes that this gateway wrote the intent `id` at `source` at `now`, not yet answered.
    pub fn written(&mut self, id: Id, source: Source, now: Instant) {
        if !self.by_id.contains_key(&id) && !self.by_source.contains_key(&source) {
            if let Some((_, before)) = self.pending.insert(id.clone(), (now, source)) {
                self.pending_at.remove(&before);
            }
            self.pending_at.insert(source, id);
        }
    }

    /// Whether this gateway wrote the intent `id` and has no answer for it yet.
    pub fn is_pending(&self, id: &Id) -> bool {
        self.pending.contains_key(id)
    }

    /// Requests waiting, for the tests of this module.
    #[cfg(test)]
    fn waiting(&self) -> usize {
        self.wait_source.values().map(Vec::len).sum::<usize>()
            + self.wait_id.values().map(Vec::len).sum::<usize>()
    }

    fn next_waiter(&mut self) -> u64 {
        self.next_waiter += 1;
        self.next_waiter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(intent_id: &str) -> Id {
        Id {
            key: "acct-1".into(),
            intent_id: intent_id.into(),
        }
    }

    fn decision(outcome: &str, rank: Rank) -> Answer {
        Answer::Decision {
            body: Bytes::from(format!("{{\"decision\":\"{outcome}\"}}")),
            agent_id: "bot".into(),
            outcome: outcome.into(),
            rank,
        }
    }

    fn outcome(a: &Answer) -> &str {
        match a {
            Answer::Decision { outcome, .. } => outcome,
            Answer::DeadLetter { .. } => "dead letter",
        }
    }

    #[test]
    fn a_waiting_request_gets_its_own_answer_and_a_late_one_finds_it_kept() {
        let mut c = Cache::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        let Err(mut ticket) = c.wait_for_source((0, 7)) else {
            panic!("an answer before any was read")
        };
        c.insert(t0, (0, 6), Some(id("a")), decision("deny", Rank::Original));
        assert!(ticket.answer.try_recv().is_err(), "another intent's answer");
        c.insert(t0, (0, 7), Some(id("b")), decision("allow", Rank::Original));
        assert_eq!(outcome(&ticket.answer.try_recv().unwrap()), "allow");
        assert_eq!(c.waiting(), 0);
        // Read before anyone asked: kept.
        assert_eq!(outcome(&c.wait_for_source((0, 6)).ok().unwrap()), "deny");
        // A dead letter answers its source too.
        c.insert(
            t0,
            (1, 0),
            None,
            Answer::DeadLetter {
                error: Bytes::from_static(b"{}"),
            },
        );
        assert_eq!(
            outcome(&c.wait_for_source((1, 0)).ok().unwrap()),
            "dead letter"
        );
    }

    #[test]
    fn by_id_the_intents_own_decision_wins() {
        let mut c = Cache::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        // A conflict first (the original is older than the cache), then a duplicate of the
        // original, then (on a replayed topic) the original itself.
        c.insert(t0, (0, 9), Some(id("i")), decision("deny", Rank::System));
        assert_eq!(outcome(&c.wait_for_id(&id("i")).ok().unwrap()), "deny");
        c.insert(
            t0,
            (0, 10),
            Some(id("i")),
            decision("hold", Rank::Duplicate),
        );
        assert_eq!(outcome(&c.wait_for_id(&id("i")).ok().unwrap()), "hold");
        c.insert(t0, (0, 11), Some(id("i")), decision("deny", Rank::System));
        assert_eq!(outcome(&c.wait_for_id(&id("i")).ok().unwrap()), "hold");
        // Each proposal still gets its own answer by source.
        assert_eq!(outcome(&c.wait_for_source((0, 11)).ok().unwrap()), "deny");
        // A GET waiting for an id is answered by the first decision that comes.
        let Err(mut ticket) = c.wait_for_id(&id("j")) else {
            panic!("j is unknown")
        };
        c.insert(
            t0,
            (0, 12),
            Some(id("j")),
            decision("allow", Rank::Original),
        );
        assert_eq!(outcome(&ticket.answer.try_recv().unwrap()), "allow");
    }

    #[test]
    fn answers_beyond_the_count_or_the_age_are_forgotten() {
        let mut c = Cache::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        for (i, name) in ["a", "b", "c"].iter().enumerate() {
            c.insert(
                t0,
                (0, i as i64),
                Some(id(name)),
                decision("allow", Rank::Original),
            );
        }
        assert_eq!(c.len(), 2);
        assert!(c.wait_for_id(&id("a")).is_err(), "the oldest went first");
        assert!(c.wait_for_id(&id("c")).is_ok());
        let before = c.bytes();
        assert!(before > 0);
        c.evict(t0 + Duration::from_secs(61));
        assert!(c.is_empty());
        assert_eq!(c.bytes(), 0);
        assert!(c.wait_for_source((0, 2)).is_err());
    }

    #[test]
    fn a_ticket_given_back_leaves_nothing_behind_and_pending_marks_end() {
        let mut c = Cache::new(10, Duration::from_secs(60));
        let t0 = Instant::now();
        let Err(t) = c.wait_for_source((3, 3)) else {
            panic!()
        };
        c.leave_source((3, 3), t.id);
        let Err(u) = c.wait_for_id(&id("x")) else {
            panic!()
        };
        c.leave_id(&id("x"), u.id);
        assert_eq!(c.waiting(), 0);
        c.written(id("x"), (3, 3), t0);
        assert!(c.is_pending(&id("x")));
        c.insert(t0, (3, 3), Some(id("x")), decision("allow", Rank::Original));
        assert!(!c.is_pending(&id("x")), "answered");
        c.written(id("y"), (3, 4), t0);
        c.evict(t0 + Duration::from_secs(61));
        assert!(!c.is_pending(&id("y")), "pending marks age out too");
        assert!(c.pending_at.is_empty());
        // A dead letter names only its place: for an intent this gateway wrote, it is the
        // answer by id too; a decision under that id later wins over it.
        c.written(id("z"), (3, 5), t0);
        let letter = Answer::DeadLetter {
            error: Bytes::from_static(br#"{"kind":"invalid_json"}"#),
        };
        c.insert(t0, (3, 5), None, letter);
        assert!(!c.is_pending(&id("z")));
        assert!(matches!(
            c.wait_for_id(&id("z")).ok().as_deref(),
            Some(Answer::DeadLetter { .. })
        ));
        c.insert(t0, (3, 6), Some(id("z")), decision("deny", Rank::Original));
        assert!(matches!(
            c.wait_for_id(&id("z")).ok().as_deref(),
            Some(Answer::Decision { .. })
        ));
    }
}
