use super::*;
use std::path::PathBuf;

use riskgate_core::decision::Source;
use riskgate_core::engine::{Engine, EngineOptions};
use riskgate_core::intent::parse_intent;
use riskgate_core::rules::Ruleset;

const RULES: &str = r#"
[[rule]]
id = "large-transfer"
when = 'action == "transfer" && amount > 10000'
action = "hold"

[[rule]]
id = "large-payout"
when = 'action == "payout" && amount > 50000'
action = "hold"
approvals = 2
"#;

fn engine() -> Engine {
    let rs = Ruleset::load_sources(&[(PathBuf::from("r.toml"), RULES.to_owned())]).unwrap();
    Engine::new(Arc::new(rs), EngineOptions::default())
}

/// The id of the hold of intent `intent_id` of `acct-1`, the account of these tests.
fn held(intent_id: &str) -> HoldId {
    HoldId::new("acct-1", intent_id)
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// The record the engine writes for an intent, as it is on the decisions topic.
fn decided(
    e: &mut Engine,
    id: &str,
    agent: &str,
    action: &str,
    amount: &str,
    now: &str,
) -> Vec<u8> {
    decided_from(e, 0, id, agent, action, amount, now)
}

/// [`decided`] for the intent at `offset` of intents partition 0.
fn decided_from(
    e: &mut Engine,
    offset: i64,
    id: &str,
    agent: &str,
    action: &str,
    amount: &str,
    now: &str,
) -> Vec<u8> {
    let json = format!(
        r#"{{"intent_id":"{id}","agent_id":"{agent}","account_id":"acct-1","action":"{action}","amount":"{amount}","currency":"EUR","counterparty":{{"name":"<script>x</script>"}},"created_at":"{now}"}}"#
    );
    let intent = parse_intent(json.as_bytes(), 65536).unwrap();
    let d = e.decide(
        intent,
        Source::Kafka {
            topic: Arc::from("intents"),
            partition: 0,
            offset,
        },
        at(now),
    );
    let mut out = Vec::new();
    d.write_json(&mut out, Some(json.as_bytes()));
    out
}

struct Log {
    queue: Queue,
    offset: i64,
}

impl Log {
    fn new() -> Self {
        Log {
            queue: Queue::new(),
            offset: 0,
        }
    }

    /// Appends the engine's decision on an intent of `acct-1` (see [`decided`]).
    fn decide(
        &mut self,
        e: &mut Engine,
        id: &str,
        agent: &str,
        action: &str,
        amount: &str,
        now: &str,
    ) -> Applied {
        let payload = decided(e, id, agent, action, amount, now);
        self.push(&payload)
    }

    /// [`Log::decide`] of a transfer of 20,000 (a hold) by `agent`, dated `now`.
    fn hold(&mut self, e: &mut Engine, id: &str, agent: &str, now: &str) -> Applied {
        self.decide(e, id, agent, "transfer", "20000", now)
    }

    fn push(&mut self, payload: &[u8]) -> Applied {
        self.push_keyed("acct-1", payload)
    }

    /// Appends a record keyed `key` (the partition-key value of its intent).
    fn push_keyed(&mut self, key: &str, payload: &[u8]) -> Applied {
        self.offset += 1;
        self.queue
            .apply(0, self.offset, Some(key.as_bytes()), payload, 65536)
            .unwrap()
    }

    fn review(
        &mut self,
        id: &str,
        who: &str,
        verdict: Verdict,
        now: &str,
    ) -> Result<Applied, Refusal> {
        let r = self.record(id, who, verdict, "checked", now)?;
        Ok(self.push(&r.to_json()))
    }

    /// The record approver `who` asks to publish on the hold of `id` of `acct-1`, not yet
    /// on the topic.
    fn record(
        &self,
        id: &str,
        who: &str,
        verdict: Verdict,
        comment: &str,
        now: &str,
    ) -> Result<ReviewRecord, Refusal> {
        self.queue.review(
            &held(id),
            None,
            who,
            Role::Approver,
            verdict,
            comment,
            at(now),
        )
    }
}

const T0: &str = "2026-11-28T10:00:00Z";

/// What `who` (in `role`) asks the queue to publish on hold `id`, seen at `seen`.
#[allow(clippy::too_many_arguments)]
fn ask(
    q: &Queue,
    id: &HoldId,
    seen: Option<(i32, i64)>,
    who: &str,
    role: Role,
    verdict: Verdict,
    comment: &str,
    now: DateTime<Utc>,
) -> Result<ReviewRecord, Refusal> {
    q.review(id, seen, who, role, verdict, comment, now)
}

/// Alice, an approver, approves `id` (as seen at `seen`) without a comment.
fn alice_approves(
    q: &Queue,
    id: &HoldId,
    seen: Option<(i32, i64)>,
    now: DateTime<Utc>,
) -> Result<ReviewRecord, Refusal> {
    ask(
        q,
        id,
        seen,
        "alice",
        Role::Approver,
        Verdict::Approve,
        "",
        now,
    )
}

#[test]
fn holds_enter_the_queue_and_other_decisions_do_not() {
    let mut e = engine();
    let mut log = Log::new();
    assert_eq!(
        log.decide(&mut e, "small", "bot", "transfer", "5", T0),
        Applied::Ignored("not a hold")
    );
    assert_eq!(
        log.decide(&mut e, "big", "bot", "transfer", "20000", T0),
        Applied::Held
    );
    assert_eq!(log.queue.len(), 1);
    let h = log.queue.get(&held("big")).unwrap();
    assert_eq!(
        (h.required, h.decision.head.amount),
        (1, Some(Decimal::new(20000, 0)))
    );
    assert_eq!(
        h.counterparty.as_ref().and_then(|c| c.name.as_deref()),
        Some("<script>x</script>")
    );
    assert_eq!(h.key.as_deref(), Some(&b"acct-1"[..]));
    assert_eq!(log.queue.position(0), 3);
    assert_eq!(log.queue.position(1), 0);
}

#[test]
fn a_later_decision_for_the_same_intent_replaces_the_hold() {
    let mut e = engine();
    let mut log = Log::new();
    log.decide(&mut e, "i", "bot", "transfer", "20000", T0);
    // The same intent_id decided again, this time not held (e.g. the committed decision
    // after an aborted one): it leaves the queue.
    let allow = decided(&mut engine(), "i", "bot", "transfer", "1", T0);
    assert_eq!(log.push(&allow), Applied::Cleared);
    assert!(log.queue.is_empty());
}

#[test]
fn one_approval_releases_an_ordinary_hold() {
    let mut e = engine();
    let mut log = Log::new();
    log.decide(&mut e, "i", "bot", "transfer", "20000", T0);
    let r = log.record("i", "alice", Verdict::Approve, "", T0).unwrap();
    assert_eq!(
        (r.decision, r.is_final, r.stage.as_str()),
        (Outcome::Allow, true, "review")
    );
    assert_eq!(r.hold.offset, 1);
    assert_eq!(log.push(&r.to_json()), Applied::Finished(Verdict::Approve));
    assert!(log.queue.is_empty());
    let f = log.queue.finished(&held("i")).unwrap();
    assert_eq!((f.reviewer.as_str(), f.offset), ("alice", 2));
    // A duplicate of the decision arriving later does not bring the hold back.
    assert_eq!(
        log.push(&decided(&mut engine(), "i", "bot", "transfer", "20000", T0)),
        Applied::Ignored("the review of this intent has ended")
    );
    assert!(log.queue.is_empty());
}

#[test]
fn two_approval_holds_need_two_different_approvers() {
    let mut e = engine();
    let mut log = Log::new();
    log.decide(&mut e, "p", "bot", "payout", "60000", T0);
    assert_eq!(log.queue.get(&held("p")).unwrap().required, 2);
    let first = log.record("p", "alice", Verdict::Approve, "", T0).unwrap();
    assert_eq!((first.decision, first.is_final), (Outcome::Hold, false));
    assert_eq!(log.push(&first.to_json()), Applied::Approved);
    assert_eq!(log.queue.get(&held("p")).unwrap().approved_by, ["alice"]);
    // Alice again: refused before publishing, and a record of it changes nothing.
    assert_eq!(
        log.record("p", "alice", Verdict::Approve, "", T0),
        Err(Refusal::AlreadyApproved("alice".to_owned()))
    );
    assert_eq!(
        log.push(&first.to_json()),
        Applied::Ignored("this reviewer has already approved")
    );
    assert_eq!(log.queue.len(), 1);
    assert_eq!(
        log.review("p", "bob", Verdict::Approve, T0),
        Ok(Applied::Finished(Verdict::Approve))
    );
    assert!(log.queue.is_empty());
}

#[test]
fn two_instances_racing_each_with_one_approval_still_release() {
    // Alice and Bob approve on two instances that had both seen no approval: both records
    // say "hold, not final", yet together they are two approvals.
    let mut e = engine();
    let mut log = Log::new();
    log.decide(&mut e, "p", "bot", "payout", "60000", T0);
    let a = log.record("p", "alice", Verdict::Approve, "", T0).unwrap();
    let b = log.record("p", "bob", Verdict::Approve, "", T0).unwrap();
    assert!(!a.is_final && !b.is_final);
    assert_eq!(log.push(&a.to_json()), Applied::Approved);
    assert_eq!(log.push(&b.to_json()), Applied::Finished(Verdict::Approve));
}

#[test]
fn the_first_final_record_wins() {
    let mut e = engine();
    let mut log = Log::new();
    log.decide(&mut e, "i", "bot", "transfer", "20000", T0);
    let approve = log.record("i", "alice", Verdict::Approve, "", T0).unwrap();
    let reject = log.record("i", "bob", Verdict::Reject, "no", T0).unwrap();
    assert_eq!(
        log.push(&reject.to_json()),
        Applied::Finished(Verdict::Reject)
    );
    assert_eq!(
        log.push(&approve.to_json()),
        Applied::Ignored("the review of this intent has already ended")
    );
    assert_eq!(
        log.queue.finished(&held("i")).unwrap().verdict,
        Verdict::Reject
    );
}

#[test]
fn refusals_say_who_and_why() {
    let mut e = engine();
    let mut log = Log::new();
    log.decide(&mut e, "i", "procurement-bot", "transfer", "20000", T0);
    let q = &log.queue;
    let now = at(T0);
    assert_eq!(
        ask(
            q,
            &held("i"),
            None,
            "vera",
            Role::Viewer,
            Verdict::Approve,
            "",
            now
        ),
        Err(Refusal::Viewer)
    );
    assert_eq!(
        ask(
            q,
            &held("i"),
            None,
            "vera",
            Role::Viewer,
            Verdict::Reject,
            "x",
            now
        ),
        Err(Refusal::Viewer)
    );
    assert_eq!(
        ask(
            q,
            &held("i"),
            None,
            "procurement-bot",
            Role::Approver,
            Verdict::Approve,
            "",
            now
        ),
        Err(Refusal::Proposer("procurement-bot".to_owned()))
    );
    assert_eq!(
        alice_approves(q, &held("nope"), None, now),
        Err(Refusal::NotPending(held("nope")))
    );
    assert_eq!(
        ask(
            q,
            &held("i"),
            None,
            "alice",
            Role::Approver,
            Verdict::Reject,
            "  ",
            now
        ),
        Err(Refusal::NoComment)
    );
    // A proposer's approval written by some other means does not count either.
    let mut forged = alice_approves(q, &held("i"), None, now).unwrap();
    forged.reviewer = "procurement-bot".to_owned();
    assert_eq!(
        log.push(&forged.to_json()),
        Applied::Ignored("the proposer cannot approve")
    );
    assert_eq!(log.queue.len(), 1);
}

#[test]
fn holds_expire_to_a_reject_by_the_system() {
    let mut e = engine();
    let mut log = Log::new();
    log.hold(&mut e, "old", "bot", "2026-11-28T10:00:00Z");
    log.hold(&mut e, "new", "bot", "2026-11-28T11:00:00Z");
    let ttl = TimeDelta::minutes(90);
    assert!(log
        .queue
        .expired(at("2026-11-28T11:29:59Z"), ttl)
        .is_empty());
    let expired = log.queue.expired(at("2026-11-28T11:30:00Z"), ttl);
    assert_eq!(expired.len(), 1);
    let (id, r) = &expired[0];
    assert_eq!(id, &held("old"));
    assert_eq!(
        (
            r.intent_id.as_str(),
            r.reviewer.as_str(),
            r.review,
            r.decision,
            r.is_final
        ),
        ("old", EXPIRY_REVIEWER, Verdict::Reject, Outcome::Deny, true)
    );
    assert_eq!(r.comment, "not reviewed within 90m; rejected automatically");
    assert_eq!(log.push(&r.to_json()), Applied::Finished(Verdict::Reject));
    assert_eq!(log.queue.len(), 1);
}

#[test]
fn filters_combine() {
    let mut e = engine();
    let mut log = Log::new();
    log.hold(&mut e, "t", "bot-a", "2026-11-28T10:00:00Z");
    log.decide(
        &mut e,
        "p",
        "bot-b",
        "payout",
        "60000.50",
        "2026-11-28T10:30:00Z",
    );
    let now = at("2026-11-28T11:00:00Z");
    let ids = |f: Filter| -> Vec<String> {
        log.queue
            .list(&f, now)
            .iter()
            .map(|h| h.intent_id().to_owned())
            .collect()
    };
    assert_eq!(ids(Filter::default()), ["t", "p"], "oldest first");
    assert_eq!(
        ids(Filter {
            rule: Some("large-payout".into()),
            ..Filter::default()
        }),
        ["p"]
    );
    assert_eq!(
        ids(Filter {
            agent: Some("bot-a".into()),
            ..Filter::default()
        }),
        ["t"]
    );
    assert_eq!(
        ids(Filter {
            account: Some("acct-2".into()),
            ..Filter::default()
        }),
        Vec::<String>::new()
    );
    assert_eq!(
        ids(Filter {
            min_amount: Some(Decimal::new(6000050, 2)),
            ..Filter::default()
        }),
        ["p"]
    );
    assert_eq!(
        ids(Filter {
            max_amount: Some(Decimal::new(6000049, 2)),
            ..Filter::default()
        }),
        ["t"]
    );
    assert_eq!(
        ids(Filter {
            min_age: Some(TimeDelta::minutes(45)),
            ..Filter::default()
        }),
        ["t"]
    );
    assert_eq!(
        ids(Filter {
            max_age: Some(TimeDelta::minutes(30)),
            ..Filter::default()
        }),
        ["p"]
    );
}

#[test]
fn unreadable_records_are_errors_that_change_nothing() {
    let mut q = Queue::new();
    assert!(q.apply(0, 0, None, b"not json", 65536).is_err());
    assert!(q
        .apply(0, 1, None, br#"{"stage":"review","intent_id":"x"}"#, 65536)
        .unwrap_err()
        .to_string()
        .starts_with("a review record"));
    assert!(q.is_empty());
    assert_eq!(q.position(0), 2, "the position moves past them");
}

#[test]
fn an_ended_review_ignores_copies_and_duplicates_of_its_hold_but_not_a_new_proposal() {
    let mut e = engine();
    let mut log = Log::new();
    let hold = decided_from(&mut e, 3, "i", "bot", "transfer", "20000", T0);
    assert_eq!(log.push(&hold), Applied::Held);
    log.review("i", "alice", Verdict::Reject, T0).unwrap();
    assert!(log.queue.finished(&held("i")).is_some());
    // The same record again (an aborted transaction's copy, then the committed one), and a
    // decision of the id from an earlier source.
    assert!(matches!(log.push(&hold), Applied::Ignored(_)));
    let earlier = decided_from(&mut engine(), 2, "i", "bot", "transfer", "20000", T0);
    assert!(matches!(log.push(&earlier), Applied::Ignored(_)));
    // The engine re-emitting it for a duplicate, from another source offset.
    let duplicate = decided_from(&mut e, 9, "i", "bot", "transfer", "20000", T0);
    assert!(String::from_utf8_lossy(&duplicate).contains(r#""duplicate":true"#));
    assert!(matches!(log.push(&duplicate), Applied::Ignored(_)));
    assert!(log.queue.is_empty());
    // The same intent id proposed again after the duplicate horizon: the engine (here, one
    // that has forgotten it) decides it anew, from another source. Its review starts afresh.
    let again = decided_from(
        &mut engine(),
        12,
        "i",
        "bot",
        "transfer",
        "20000",
        "2026-11-30T10:00:00Z",
    );
    assert_eq!(log.push(&again), Applied::Held);
    assert!(log.queue.finished(&held("i")).is_none());
    assert_eq!(
        log.queue.get(&held("i")).map(|h| h.decision.source.clone()),
        Some(Source::Kafka {
            topic: Arc::from("intents"),
            partition: 0,
            offset: 12,
        })
    );
}

#[test]
fn ended_reviews_are_forgotten_two_duplicate_horizons_later() {
    let mut e = engine();
    let mut log = Log::new();
    // Holds `{prefix}0..count`, decided at `now` from offsets `first..`, each rejected.
    let mut end_reviews = |prefix: &str, first: i64, count: i64, now: &str| {
        for i in 0..count {
            let id = format!("{prefix}{i}");
            log.push(&decided_from(
                &mut e,
                first + i,
                &id,
                "bot",
                "transfer",
                "20000",
                now,
            ));
            log.review(&id, "alice", Verdict::Reject, now).unwrap();
        }
        log.queue.finished(&held("h0")).is_some()
    };
    // More ended reviews than are kept before a sweep, all on the first day.
    let n = 1_100;
    assert!(end_reviews("h", 0, n, T0), "kept: nothing has moved on yet");
    // The partition moves on by 47 hours: within two horizons, still kept.
    assert!(
        end_reviews("k", 10_000, n, "2026-11-30T09:00:00Z"),
        "47 hours on: kept"
    );
    // Past two horizons, the first day's reviews go at the next sweep.
    assert!(
        !end_reviews("m", 20_000, 2 * n, "2026-11-30T11:00:00Z"),
        "49 hours on: forgotten"
    );
    assert!(log.queue.finished(&held("k0")).is_some());
    assert!(log
        .queue
        .finished(&held(&format!("m{}", 2 * n - 1)))
        .is_some());
}

/// The record the engine writes for a 20,000 EUR transfer `id` of `account` (held by
/// `large-transfer`), through `Engine::process` as the service calls it, keyed by account.
fn processed(
    e: &mut Engine,
    offset: i64,
    id: &str,
    account: &str,
    amount: &str,
    now: &str,
) -> Vec<u8> {
    let json = format!(
        r#"{{"intent_id":"{id}","agent_id":"bot","account_id":"{account}","action":"transfer","amount":"{amount}","currency":"EUR","created_at":"{now}"}}"#
    );
    let source = Source::Kafka {
        topic: Arc::from("intents"),
        partition: 0,
        offset,
    };
    match e.process(
        json.as_bytes(),
        65536,
        riskgate_core::engine::RecordKey::Kafka(Some(account.as_bytes())),
        source,
        riskgate_core::engine::Clock::At(at(now)),
    ) {
        riskgate_core::engine::Processed::Decided(d) => {
            let mut out = Vec::new();
            d.write_json(&mut out, Some(json.as_bytes()));
            out
        }
        riskgate_core::engine::Processed::Invalid(l) => panic!("{l:?}"),
    }
}

#[test]
fn one_intent_id_in_two_accounts_is_two_holds_each_reviewed_on_its_own() {
    let mut e = engine();
    let mut log = Log::new();
    let a = processed(&mut e, 1, "inv-7", "acct-1", "20000", T0);
    let b = processed(&mut e, 2, "inv-7", "acct-2", "30000", T0);
    assert_eq!(log.push_keyed("acct-1", &a), Applied::Held);
    assert_eq!(log.push_keyed("acct-2", &b), Applied::Held);
    assert_eq!(log.queue.len(), 2, "two holds, not one replacing the other");
    let one = HoldId::new("acct-1", "inv-7");
    let two = HoldId::new("acct-2", "inv-7");
    assert_eq!(
        log.queue.get(&two).unwrap().decision.head.amount,
        Some(Decimal::new(30000, 0))
    );

    // Approving acct-2's releases acct-2's only, and the record says which.
    let r = alice_approves(&log.queue, &two, None, at(T0)).unwrap();
    assert_eq!(
        (r.key.as_str(), r.account_id.as_str(), r.amount.as_deref()),
        ("acct-2", "acct-2", Some("30000"))
    );
    assert_eq!(
        log.push_keyed("acct-2", &r.to_json()),
        Applied::Finished(Verdict::Approve)
    );
    assert!(log.queue.get(&two).is_none() && log.queue.finished(&two).is_some());
    assert!(log.queue.get(&one).is_some() && log.queue.finished(&one).is_none());

    // A review record of acct-1's hold that is keyed otherwise than it says is ignored.
    let mut misfiled = ask(
        &log.queue,
        &one,
        None,
        "bob",
        Role::Approver,
        Verdict::Approve,
        "",
        at(T0),
    )
    .unwrap();
    assert_eq!(
        log.push_keyed("acct-2", &misfiled.to_json()),
        Applied::Ignored("a review record whose `key` is not its record's key")
    );
    assert!(log.queue.get(&one).is_some());
    misfiled.key.clear();
    // Without the field (a record from before it existed), the record key says which hold.
    assert_eq!(
        log.push_keyed("acct-1", &misfiled.to_json()),
        Applied::Finished(Verdict::Approve)
    );
    assert!(log.queue.is_empty());
}

#[test]
fn system_decisions_for_a_held_id_leave_the_hold_alone() {
    let mut e = engine();
    let mut log = Log::new();
    assert_eq!(
        log.push_keyed("acct-1", &processed(&mut e, 1, "i", "acct-1", "20000", T0)),
        Applied::Held
    );
    // The same id with another amount: a conflict, denied; not the held intent.
    let conflict = processed(&mut e, 2, "i", "acct-1", "20001", T0);
    assert!(String::from_utf8_lossy(&conflict).contains("riskgate:conflict"));
    assert_eq!(
        log.push_keyed("acct-1", &conflict),
        Applied::Ignored("a system decision")
    );
    // A later intent moves the watermark on; the held one re-sent three days later is stale.
    processed(&mut e, 3, "later", "acct-9", "1", "2026-12-01T10:00:00Z");
    let stale = processed(&mut e, 4, "i", "acct-1", "20000", T0);
    assert!(String::from_utf8_lossy(&stale).contains("riskgate:stale"));
    assert_eq!(
        log.push_keyed("acct-1", &stale),
        Applied::Ignored("a system decision")
    );
    assert_eq!(log.queue.len(), 1);
    // The hold is still reviewable, by its record.
    let id = held("i");
    let h = log.queue.get(&id).unwrap();
    let seen = (h.partition, h.offset);
    assert!(alice_approves(&log.queue, &id, Some(seen), at(T0)).is_ok());
}

#[test]
fn a_review_of_a_hold_decided_again_since_it_was_seen_is_refused() {
    let mut e = engine();
    let mut log = Log::new();
    let first = processed(&mut e, 1, "i", "acct-1", "20000", T0);
    log.push(&first);
    let id = held("i");
    let seen = (0, log.queue.get(&id).unwrap().offset);
    // The same decision again at a later record (an aborted transaction's copy, then the
    // committed one, on a broker that shows aborted records): the hold is that record now.
    assert_eq!(log.push(&first), Applied::Held);
    let now = log.queue.get(&id).unwrap().offset;
    assert_ne!(now, seen.1);
    let approve = |seen| alice_approves(&log.queue, &id, Some(seen), at(T0));
    assert_eq!(
        approve(seen),
        Err(Refusal::Changed {
            id: id.clone(),
            partition: 0,
            offset: now
        })
    );
    assert!(approve((0, now)).is_ok());
}

#[test]
fn a_duplicate_re_emitting_a_hold_does_not_move_it() {
    let mut e = engine();
    let mut log = Log::new();
    log.push(&processed(&mut e, 1, "i", "acct-1", "20000", T0));
    let id = held("i");
    let hold = log.queue.get(&id).unwrap().offset;
    // The agent sends its intent again: a duplicate, re-emitting the hold.
    let again = processed(&mut e, 2, "i", "acct-1", "20000", T0);
    assert!(String::from_utf8_lossy(&again).contains(r#""duplicate":true"#));
    assert_eq!(
        log.push(&again),
        Applied::Ignored("a duplicate of a pending hold")
    );
    assert_eq!(
        log.queue.get(&id).unwrap().offset,
        hold,
        "reviews of it stand"
    );
    assert!(alice_approves(&log.queue, &id, Some((0, hold)), at(T0)).is_ok());
}

#[test]
fn review_records_must_name_a_reviewer_and_the_pending_hold() {
    let mut e = engine();
    let mut log = Log::new();
    let none: &[String] = &[];
    log.queue = Queue::new().with_reviewers([("alice", none), ("bob", none)]);
    log.push(&processed(&mut e, 1, "i", "acct-1", "20000", T0));
    let id = held("i");
    let good = log
        .record("i", "alice", Verdict::Approve, "ok", T0)
        .unwrap();
    // Written by no configured reviewer: refused like a forged record.
    let mut stranger = good.clone();
    stranger.reviewer = "mallory".to_owned();
    assert_eq!(
        log.push(&stranger.to_json()),
        Applied::Refused("unknown_reviewer")
    );
    // Answering another decision record than the pending hold: refused too.
    let mut elsewhere = good.clone();
    elsewhere.hold.offset += 100;
    assert_eq!(
        log.push(&elsewhere.to_json()),
        Applied::Refused("not_the_pending_hold")
    );
    assert!(log.queue.get(&id).is_some(), "neither changed the hold");
    // A configured reviewer, written in another case, on the right hold: counts.
    let mut alice = good;
    alice.reviewer = "Alice".to_owned();
    assert_eq!(
        log.push(&alice.to_json()),
        Applied::Finished(Verdict::Approve)
    );
    // The system's expiry is always a reviewer.
    log.push(&processed(&mut e, 2, "j", "acct-1", "20000", T0));
    let expiry = log
        .record("j", EXPIRY_REVIEWER, Verdict::Reject, "expired", T0)
        .unwrap();
    assert_eq!(
        log.push(&expiry.to_json()),
        Applied::Finished(Verdict::Reject)
    );
}

#[test]
fn one_person_one_name_after_case_spaces_compatibility_and_look_alikes() {
    for (a, b) in [
        ("payments-bot", "Payments-Bot"),
        ("payments-bot", "payments-bot "),
        ("payments-bot", "p\u{0430}yments-bot"), // a Cyrillic а
        ("payments-bot", "ｐａｙｍｅｎｔｓ-bot"), // full-width letters (NFKC)
        ("alice", "a1ice"),                      // a digit one for an l
        ("ALICE", "a1ice"),
        ("ok-bot", "0k-bot"), // a zero for an o
        ("Rn-bot", "m-bot"),  // r and n for an m
    ] {
        assert!(same_person(a, b), "{a:?} and {b:?} are one person");
    }
    for (a, b) in [("alice", "alicia"), ("payments-bot", "payouts-bot")] {
        assert!(!same_person(a, b), "{a:?} and {b:?} are two");
    }
    // The proposer rule uses it: the bot's own reviewer account, in any spelling.
    let mut e = engine();
    let mut log = Log::new();
    log.decide(&mut e, "i", "Payments-Bot ", "transfer", "20000", T0);
    assert_eq!(
        log.record("i", "payments-bot", Verdict::Approve, "", T0),
        Err(Refusal::Proposer("payments-bot".to_owned()))
    );
    // A reviewer mapped to the agents they operate never approves those agents' intents.
    let operated = ["PAYMENTS-BOT".to_owned()];
    let none: &[String] = &[];
    log.queue =
        std::mem::take(&mut log.queue).with_reviewers([("dana", &operated[..]), ("alice", none)]);
    assert_eq!(
        log.record("i", "dana", Verdict::Approve, "", T0),
        Err(Refusal::Proposer("dana".to_owned()))
    );
    assert!(log.record("i", "alice", Verdict::Approve, "", T0).is_ok());
}
