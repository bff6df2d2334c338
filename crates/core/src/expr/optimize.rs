//! The optimizing pass: rewrites a checked tree into one that gives the same answers and the
//! same errors with less work. It can be switched off ([`super::CompileOptions`]); the
//! expression tests run with it on and off.
//!
//! * **Fusion**: the common shapes of conditions (`amount_base > 10000`,
//!   `counters.x + amount_base > 50000`, `action in lists.payment_actions`,
//!   `has(counterparty.id)`) become single nodes that build no values.
//! * **Action guards**: a condition whose `&&` chain tests the action up front
//!   (`action == "transfer" && ...`) gets a [`Guard`]: any other action is `false` without
//!   evaluating. The guards of a ruleset are numbered by an [`super::ActionIndex`].

use rust_decimal::Decimal;

use super::ast::{ArithOp, CmpOp, Comprehension, Node, NumLeaf, StrLeaf};
use super::value::{ConstList, Scalar};
use super::{Cover, Guard, Name};
use crate::intent::{CpField, Field};

/// Rewrites `node` bottom up, fusing every node that has a fused form.
pub(super) fn optimize(node: Node) -> Node {
    let node = match node {
        Node::Select(x, f) => Node::Select(Box::new(optimize(*x)), f),
        Node::Has(x, f) => Node::Has(Box::new(optimize(*x)), f),
        Node::Index(x, i) => Node::Index(Box::new(optimize(*x)), Box::new(optimize(*i))),
        Node::Not(x) => Node::Not(Box::new(optimize(*x))),
        Node::Neg(x) => Node::Neg(Box::new(optimize(*x))),
        Node::And(l, r) => Node::And(Box::new(optimize(*l)), Box::new(optimize(*r))),
        Node::Or(l, r) => Node::Or(Box::new(optimize(*l)), Box::new(optimize(*r))),
        Node::Cond(parts) => {
            let (c, a, b) = *parts;
            Node::Cond(Box::new((optimize(c), optimize(a), optimize(b))))
        }
        Node::Cmp(op, l, r) => Node::Cmp(op, Box::new(optimize(*l)), Box::new(optimize(*r))),
        Node::Arith(op, l, r) => Node::Arith(op, Box::new(optimize(*l)), Box::new(optimize(*r))),
        Node::In(x, c) => Node::In(Box::new(optimize(*x)), Box::new(optimize(*c))),
        Node::Call(f, args) => Node::Call(f, args.into_iter().map(optimize).collect()),
        Node::Matches(x, re) => Node::Matches(Box::new(optimize(*x)), re),
        Node::MakeList(items) => Node::MakeList(items.into_iter().map(optimize).collect()),
        Node::MakeMap(entries) => Node::MakeMap(
            entries
                .into_iter()
                .map(|(k, v)| (optimize(k), optimize(v)))
                .collect(),
        ),
        Node::NotStrictlyFalse(x) => Node::NotStrictlyFalse(Box::new(optimize(*x))),
        Node::Comprehension(c) => {
            let c = *c;
            Node::Comprehension(Box::new(Comprehension {
                range: optimize(c.range),
                init: optimize(c.init),
                cond: optimize(c.cond),
                step: optimize(c.step),
                result: optimize(c.result),
                ..c
            }))
        }
        leaf => leaf,
    };
    fuse(node)
}

/// Fuses the common shapes into [`Node::CmpNum`], [`Node::CmpArith`], [`Node::InList`] and
/// [`Node::HasCp`]: the same answers and errors, without building values.
fn fuse(node: Node) -> Node {
    let flipped = |op| match op {
        CmpOp::Lt => CmpOp::Gt,
        CmpOp::Le => CmpOp::Ge,
        CmpOp::Gt => CmpOp::Lt,
        CmpOp::Ge => CmpOp::Le,
        other => other,
    };
    let number = |n: &Node| match n {
        Node::Const(Scalar::Int(i)) => Some(Decimal::from(*i)),
        Node::Const(Scalar::Num(d)) => Some(*d),
        _ => None,
    };
    // Two number names added or subtracted, one of them an amount: decimal arithmetic.
    let decimal_arith = |n: &Node| match n {
        Node::Arith(a @ (ArithOp::Add | ArithOp::Sub), x, y) => {
            match (NumLeaf::of(x), NumLeaf::of(y)) {
                (Some(p), Some(q)) if p.is_amount() || q.is_amount() => Some((*a, p, q)),
                _ => None,
            }
        }
        _ => None,
    };
    match node {
        Node::Cmp(op, l, r) => match (NumLeaf::of(&l), number(&r), NumLeaf::of(&r), number(&l)) {
            (Some(leaf), Some(d), _, _) => Node::CmpNum(op, leaf, d),
            (_, _, Some(leaf), Some(d)) => Node::CmpNum(flipped(op), leaf, d),
            _ => match (decimal_arith(&l), number(&r), decimal_arith(&r), number(&l)) {
                (Some((a, p, q)), Some(d), _, _) => Node::CmpArith(op, Box::new((a, p, q, d))),
                (_, _, Some((a, p, q)), Some(d)) => {
                    Node::CmpArith(flipped(op), Box::new((a, p, q, d)))
                }
                _ => Node::Cmp(op, l, r),
            },
        },
        Node::In(x, coll) => match (StrLeaf::of(&x), &*coll) {
            (Some(leaf), Node::List(i)) => Node::InList(leaf, *i),
            _ => Node::In(x, coll),
        },
        Node::Has(map, field) => match (&*map, CpField::named(&field)) {
            (Node::Name(Name::Field(Field::Counterparty)), Some(f)) => Node::HasCp(f),
            _ => Node::Has(map, field),
        },
        other => other,
    }
}

/// The guard of a condition over the ruleset's `lists`, and the condition rewritten so that
/// the guard can stand in for its first conjunct.
pub(super) fn guard(node: Node, lists: &[ConstList]) -> (Node, Option<Guard>) {
    fn actions(node: &Node, lists: &[ConstList]) -> Option<Vec<Box<str>>> {
        let strings = |items: &[Scalar]| -> Vec<Box<str>> {
            items
                .iter()
                .filter_map(|i| {
                    if let Scalar::Str(s) = i {
                        Some(s.clone())
                    } else {
                        None
                    }
                })
                .collect()
        };
        match node {
            Node::Cmp(CmpOp::Eq, l, r) => match (&**l, &**r) {
                (Node::Name(Name::Field(Field::Action)), Node::Const(Scalar::Str(s)))
                | (Node::Const(Scalar::Str(s)), Node::Name(Name::Field(Field::Action))) => {
                    Some(vec![s.clone()])
                }
                _ => None,
            },
            Node::InList(StrLeaf::Field(Field::Action), i) => {
                lists.get(*i).map(|l| strings(&l.items))
            }
            Node::In(x, coll) if matches!(**x, Node::Name(Name::Field(Field::Action))) => {
                match &**coll {
                    Node::List(i) => lists.get(*i).map(|l| strings(&l.items)),
                    Node::MakeList(items) => items
                        .iter()
                        .map(|i| {
                            if let Node::Const(Scalar::Str(s)) = i {
                                Some(s.clone())
                            } else {
                                None
                            }
                        })
                        .collect(),
                    _ => None,
                }
            }
            Node::And(l, r) => actions(l, lists).or_else(|| actions(r, lists)),
            Node::Or(l, r) => {
                let mut both = actions(l, lists)?;
                both.extend(actions(r, lists)?);
                Some(both)
            }
            _ => None,
        }
    }
    /// `(a && b) && c` is `a && (b && c)` (same value, same first error): with the first
    /// conjunct alone on the left, a guard taken from it can stand in for it.
    fn first_conjunct_alone(node: Node) -> Node {
        match node {
            Node::And(l, c) => match *l {
                Node::And(a, b) => first_conjunct_alone(Node::And(a, Box::new(Node::And(b, c)))),
                l => Node::And(Box::new(l), c),
            },
            other => other,
        }
    }
    let node = first_conjunct_alone(node);
    // An action test alone (no `&&`, `||`) is exactly its guard.
    let pure = |n: &Node| !matches!(n, Node::And(..) | Node::Or(..)) && actions(n, lists).is_some();
    let cover = match &node {
        n if pure(n) => Cover::Whole,
        Node::And(l, _) if pure(l) => Cover::First,
        _ => Cover::Implied,
    };
    let guard = actions(&node, lists).map(|actions| Guard {
        actions,
        set: None,
        cover,
    });
    (node, guard)
}
