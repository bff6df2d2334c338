//! The rules' verdict on one intent: every rule evaluated, in ruleset order, each match a
//! reason and each failure an error, then the score against the thresholds and the
//! precedence (cedar's authorizer loop). Stateless: the counters come in the activation.

use crate::decision::{Outcome, Reason, RuleAction, RuleFailure};
use crate::expr::Activation;
use crate::rules::{OnError, Ruleset};

/// What the rules of a ruleset say about one intent.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub outcome: Outcome,
    pub score: i64,
    /// Every matched rule, in ruleset order.
    pub reasons: Vec<Reason>,
    /// Every rule that could not be evaluated, in ruleset order.
    pub errors: Vec<RuleFailure>,
}

/// Evaluates every rule of `rs` against `act` (no short-circuit between rules).
pub fn evaluate(rs: &Ruleset, act: &Activation<'_>) -> Evaluation {
    let mut contributed = [false; 3];
    let mut mark = |o: Outcome| contributed[o as usize] = true;
    let mut score: i64 = 0;
    let mut reasons = Vec::new();
    let mut errors = Vec::new();
    for rule in &rs.rules {
        match rule.when.eval_bool(act) {
            Ok(false) => {}
            Ok(true) => {
                match rule.action.outcome() {
                    Some(o) => mark(o),
                    None => score = score.saturating_add(rule.score),
                }
                let message = match &rule.message {
                    Some(t) => Some(t.render(act)),
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
    Evaluation {
        outcome,
        score,
        reasons,
        errors,
    }
}
