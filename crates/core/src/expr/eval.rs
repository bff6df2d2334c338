//! Evaluation of a compiled tree against an [`Activation`]: exact decimals, CEL's error
//! absorption in `&&` and `||`, and nothing allocated on the common paths.

use std::borrow::Cow;
use std::rc::Rc;

use rust_decimal::Decimal;
use smallvec::SmallVec;

use super::ast::{arith_symbol, ArithOp, CmpOp, Comprehension, Node};
use super::functions::call;
use super::value::{compare, equals, EvalError, EvalResult, List, MapValue, Scalar, Value};
use super::{Activation, Name};
use crate::intent::Field;

pub(super) fn err<'a>(message: impl Into<Cow<'static, str>>) -> EvalResult<'a> {
    Err(EvalError::new(message))
}

pub(super) fn eval<'a>(
    node: &'a Node,
    act: &Activation<'a>,
    locals: &mut Vec<EvalResult<'a>>,
) -> EvalResult<'a> {
    match node {
        Node::Const(v) => Ok(v.value()),
        Node::Name(name) => read_name(*name, act),
        Node::CpField(f) => match act.intent.counterparty.as_ref().and_then(|cp| cp.get(*f)) {
            Some(s) => Ok(Value::Str(Cow::Borrowed(s))),
            None => err(format!("the intent has no `{}`", f.path())),
        },
        Node::Counter(i) => match &act.counters[*i] {
            Ok(v) => Ok(v.borrowed()),
            Err(why) => err(why.to_string()),
        },
        Node::List(i) => Ok(Value::List(List::Const(&act.lists[*i]))),
        Node::Select(inner, field) => match eval(inner, act, locals)? {
            Value::Map(m) => match m.get(&Value::Str(Cow::Borrowed(field)))? {
                Some(v) => Ok(v),
                None => err(format!("no field `{field}`")),
            },
            other => err(format!(
                "cannot read field `{field}` of a {}",
                other.type_name()
            )),
        },
        Node::Has(inner, field) => match eval(inner, act, locals)? {
            Value::Map(m) => Ok(Value::Bool(
                m.get(&Value::Str(Cow::Borrowed(field)))?.is_some(),
            )),
            other => err(format!("has() needs a map, not a {}", other.type_name())),
        },
        Node::Not(_)
        | Node::And(..)
        | Node::Or(..)
        | Node::Cmp(..)
        | Node::In(..)
        | Node::CmpNum(..)
        | Node::InList(..)
        | Node::HasCp(_)
        | Node::CmpArith(..) => test(node, act, locals).map(Value::Bool),
        _ => eval_cold(node, act, locals),
    }
}

/// The node kinds conditions use less often, kept out of [`eval`] so that its frame stays
/// small on the hot path.
#[inline(never)]
fn eval_cold<'a>(
    node: &'a Node,
    act: &Activation<'a>,
    locals: &mut Vec<EvalResult<'a>>,
) -> EvalResult<'a> {
    match node {
        Node::Local(slot) => locals
            .get(*slot)
            .cloned()
            .unwrap_or_else(|| err("comprehension variable out of scope")),
        Node::Index(inner, index) => {
            let coll = eval(inner, act, locals)?;
            let key = eval(index, act, locals)?;
            match (&coll, &key) {
                (Value::Map(m), _) => match m.get(&key)? {
                    Some(v) => Ok(v),
                    None => err(format!("no key `{key}`")),
                },
                (Value::List(l), Value::Int(i)) => {
                    match usize::try_from(*i).ok().and_then(|i| l.get(i)) {
                        Some(v) => v,
                        None => err(format!(
                            "index {i} is out of range for a list of {}",
                            l.len()
                        )),
                    }
                }
                _ => err(format!(
                    "cannot index a {} with a {}",
                    coll.type_name(),
                    key.type_name()
                )),
            }
        }
        Node::Neg(x) => match eval(x, act, locals)? {
            Value::Int(i) => i
                .checked_neg()
                .map(Value::Int)
                .ok_or_else(|| EvalError::new("integer overflow")),
            Value::Num(n) => Ok(Value::Num(-n)),
            Value::Dur(d) => Ok(Value::Dur(-d)),
            other => err(format!("cannot negate a {}", other.type_name())),
        },
        Node::Cond(parts) => match eval(&parts.0, act, locals)? {
            Value::Bool(true) => eval(&parts.1, act, locals),
            Value::Bool(false) => eval(&parts.2, act, locals),
            other => err(format!(
                "the condition of `? :` must be true or false, not a {}",
                other.type_name()
            )),
        },
        Node::Arith(a, l, r) => {
            let x = eval(l, act, locals)?;
            let y = eval(r, act, locals)?;
            arith(*a, x, y)
        }
        Node::Call(f, args) => {
            // Functions take at most two arguments (receiver included): no heap needed.
            let mut values: SmallVec<[Value<'a>; 2]> = SmallVec::new();
            for a in args {
                values.push(eval(a, act, locals)?);
            }
            call(*f, values)
        }
        Node::Matches(x, re) => match eval(x, act, locals)? {
            Value::Str(s) => Ok(Value::Bool(re.is_match(&s))),
            other => err(format!(
                "matches() needs a string, not a {}",
                other.type_name()
            )),
        },
        Node::MakeList(items) => {
            let mut values = Vec::with_capacity(items.len());
            for i in items {
                values.push(eval(i, act, locals)?);
            }
            Ok(Value::List(List::Owned(Rc::new(values))))
        }
        Node::MakeMap(entries) => {
            let mut values = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                values.push((eval(k, act, locals)?, eval(v, act, locals)?));
            }
            Ok(Value::Map(MapValue::Owned(Rc::new(values))))
        }
        Node::NotStrictlyFalse(x) => Ok(Value::Bool(!matches!(
            eval(x, act, locals),
            Ok(Value::Bool(false))
        ))),
        Node::Comprehension(c) => comprehension(c, act, locals),
        _ => err("internal error: node evaluated out of place"),
    }
}

fn read_name<'a>(name: Name, act: &Activation<'a>) -> EvalResult<'a> {
    let i = act.intent;
    match name {
        Name::AmountBase => match act.amount_base {
            Ok(d) => Ok(Value::Num(d)),
            Err(why) => err(why.to_owned()),
        },
        Name::Field(Field::Amount) => Ok(Value::Num(i.head.amount.unwrap_or(Decimal::ZERO))),
        Name::Field(Field::CreatedAt) => Ok(Value::Time(i.head.created_at)),
        Name::Field(Field::Counterparty) => {
            Ok(Value::Map(MapValue::Counterparty(i.counterparty.as_ref())))
        }
        Name::Field(Field::Attributes) => match &i.attributes {
            Some(a) => Ok(Value::Map(MapValue::Json(a))),
            None => Ok(Value::Map(MapValue::Owned(Rc::new(Vec::new())))),
        },
        // The string fields; an absent currency reads `""`.
        Name::Field(f) => Ok(Value::Str(Cow::Borrowed(f.text(i).unwrap_or("")))),
    }
}

/// Evaluates a node that must give true or false, without building a [`Value`] for the
/// boolean structure (`&&`, `||`, `!`, comparisons, `in`): the hot path of every rule.
/// `&&` and `||` keep CEL's error absorption: `false && error` is `false`, `true || error`
/// is `true`, in either order.
pub(super) fn test<'a>(
    node: &'a Node,
    act: &Activation<'a>,
    locals: &mut Vec<EvalResult<'a>>,
) -> Result<bool, EvalError> {
    match node {
        Node::And(l, r) | Node::Or(l, r) => {
            let or = matches!(node, Node::Or(..));
            let left = test(l, act, locals);
            if left == Ok(or) {
                return left;
            }
            let right = test(r, act, locals);
            if right == Ok(or) {
                return right;
            }
            left.and(right)
        }
        Node::Not(x) => test(x, act, locals).map(|b| !b),
        Node::Cmp(cmp, l, r) => {
            let a = eval(l, act, locals)?;
            let b = eval(r, act, locals)?;
            Ok(match cmp {
                CmpOp::Eq => equals(&a, &b),
                CmpOp::Ne => !equals(&a, &b),
                CmpOp::Lt => compare(&a, &b)?.is_lt(),
                CmpOp::Le => compare(&a, &b)?.is_le(),
                CmpOp::Gt => compare(&a, &b)?.is_gt(),
                CmpOp::Ge => compare(&a, &b)?.is_ge(),
            })
        }
        Node::In(x, coll) => {
            let needle = eval(x, act, locals)?;
            match eval(coll, act, locals)? {
                Value::List(l) => Ok(l.contains(&needle)),
                Value::Map(m) => Ok(m.get(&needle)?.is_some()),
                other => Err(EvalError::new(format!(
                    "`in` needs a list or a map, not a {}",
                    other.type_name()
                ))),
            }
        }
        Node::CmpNum(cmp, leaf, d) => Ok(cmp.holds(leaf.read(act)?, *d)),
        Node::CmpArith(cmp, parts) => {
            let (a, p, q, d) = **parts;
            let (x, y) = (p.read(act)?, q.read(act)?);
            let v = match a {
                ArithOp::Sub => x.checked_sub(y),
                _ => x.checked_add(y),
            };
            let v = v.ok_or_else(|| EvalError::new(format!("`{}` overflowed", arith_symbol(a))))?;
            Ok(cmp.holds(v, d))
        }
        Node::InList(leaf, i) => {
            Ok(act.lists[*i].contains(&Value::Str(Cow::Borrowed(leaf.read(act)?))))
        }
        Node::HasCp(f) => Ok(act
            .intent
            .counterparty
            .as_ref()
            .is_some_and(|cp| cp.get(*f).is_some())),
        Node::Const(Scalar::Bool(b)) => Ok(*b),
        other => match eval(other, act, locals)? {
            Value::Bool(b) => Ok(b),
            v => Err(EvalError::new(format!(
                "expected true or false, not a {}",
                v.type_name()
            ))),
        },
    }
}

fn arith<'a>(a: ArithOp, x: Value<'a>, y: Value<'a>) -> EvalResult<'a> {
    let overflow = || EvalError::new(format!("`{}` overflowed", arith_symbol(a)));
    match (x, y) {
        (Value::Int(p), Value::Int(q)) => {
            let r = match a {
                ArithOp::Add => p.checked_add(q),
                ArithOp::Sub => p.checked_sub(q),
                ArithOp::Mul => p.checked_mul(q),
                ArithOp::Div if q == 0 => return err("division by zero"),
                ArithOp::Div => p.checked_div(q),
                ArithOp::Rem if q == 0 => return err("modulus by zero"),
                ArithOp::Rem => p.checked_rem(q),
            };
            r.map(Value::Int).ok_or_else(overflow)
        }
        (x @ (Value::Int(_) | Value::Num(_)), y @ (Value::Int(_) | Value::Num(_))) => {
            let (p, q) = (
                x.as_decimal().unwrap_or_default(),
                y.as_decimal().unwrap_or_default(),
            );
            if matches!(a, ArithOp::Div | ArithOp::Rem) && q.is_zero() {
                return err("division by zero");
            }
            let r = match a {
                ArithOp::Add => p.checked_add(q),
                ArithOp::Sub => p.checked_sub(q),
                ArithOp::Mul => p.checked_mul(q),
                ArithOp::Div => p.checked_div(q),
                ArithOp::Rem => p.checked_rem(q),
            };
            r.map(Value::Num).ok_or_else(overflow)
        }
        (Value::Str(p), Value::Str(q)) if a == ArithOp::Add => {
            Ok(Value::Str(Cow::Owned(format!("{p}{q}"))))
        }
        (Value::List(p), Value::List(q)) if a == ArithOp::Add => {
            let mut items = Vec::with_capacity(p.len() + q.len());
            for l in [&p, &q] {
                for i in 0..l.len() {
                    if let Some(v) = l.get(i) {
                        items.push(v?);
                    }
                }
            }
            Ok(Value::List(List::Owned(Rc::new(items))))
        }
        (Value::Time(t), Value::Dur(d)) | (Value::Dur(d), Value::Time(t)) if a == ArithOp::Add => t
            .checked_add_signed(d)
            .map(Value::Time)
            .ok_or_else(overflow),
        (Value::Time(t), Value::Dur(d)) if a == ArithOp::Sub => t
            .checked_sub_signed(d)
            .map(Value::Time)
            .ok_or_else(overflow),
        (Value::Time(t), Value::Time(u)) if a == ArithOp::Sub => Ok(Value::Dur(t - u)),
        (Value::Dur(d), Value::Dur(e)) if a == ArithOp::Add => {
            d.checked_add(&e).map(Value::Dur).ok_or_else(overflow)
        }
        (Value::Dur(d), Value::Dur(e)) if a == ArithOp::Sub => {
            d.checked_sub(&e).map(Value::Dur).ok_or_else(overflow)
        }
        (x, y) => err(format!(
            "cannot apply `{}` to a {} and a {}",
            arith_symbol(a),
            x.type_name(),
            y.type_name()
        )),
    }
}

fn comprehension<'a>(
    c: &'a Comprehension,
    act: &Activation<'a>,
    locals: &mut Vec<EvalResult<'a>>,
) -> EvalResult<'a> {
    let items: Vec<(Value<'a>, Option<Value<'a>>)> = match eval(&c.range, act, locals)? {
        Value::List(l) => {
            let mut items = Vec::with_capacity(l.len());
            for i in 0..l.len() {
                let v = l.get(i).unwrap_or(Ok(Value::Null))?;
                items.push(if c.iter2.is_some() {
                    (Value::Int(i as i64), Some(v))
                } else {
                    (v, None)
                });
            }
            items
        }
        Value::Map(m) => {
            let mut items = Vec::new();
            for k in m.keys() {
                let v = if c.iter2.is_some() { m.get(&k)? } else { None };
                items.push((k, v));
            }
            items
        }
        other => return err(format!("cannot iterate over a {}", other.type_name())),
    };
    let needed = [Some(c.accu), Some(c.iter), c.iter2]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(0)
        + 1;
    if locals.len() < needed {
        locals.resize_with(needed, || Ok(Value::Null));
    }
    locals[c.accu] = eval(&c.init, act, locals);
    for (item, second) in items {
        locals[c.iter] = Ok(item);
        if let (Some(slot), Some(v)) = (c.iter2, second) {
            locals[slot] = Ok(v);
        }
        if !matches!(eval(&c.cond, act, locals), Ok(Value::Bool(true))) {
            break;
        }
        locals[c.accu] = eval(&c.step, act, locals);
    }
    eval(&c.result, act, locals)
}
