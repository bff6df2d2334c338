//! The checking pass: parses a condition with the `cel` crate and turns its AST into a
//! [`Node`] tree, resolving names to slots, checking types and compiling literal regular
//! expressions once. Every problem found is reported, with its position.

use cel::common::ast::{operators as op, EntryExpr, Expr, IdedExpr, LiteralValue, SourceInfo};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use super::ast::{arith_symbol, time_part, ArithOp, CmpOp, Comprehension, Func, Node, TimePart};
use super::functions::{parse_duration, parse_timestamp};
use super::value::{EvalError, Scalar};
use super::{CompileError, Elem, Name, Scope, Ty};
use crate::intent::CpField;

/// Parses and checks `source`: the tree, its type and how many comprehension slots it uses.
/// With `want_bool`, the expression must be a condition.
pub(super) fn check(
    source: &str,
    scope: &Scope<'_>,
    want_bool: bool,
) -> Result<(Node, Ty, usize), Vec<CompileError>> {
    let parser = cel::parser::Parser::new();
    let (ast, info) = parser.parse_with_source_info(source).map_err(|errors| {
        // A common mistake is said in words; anything else keeps the parser's message.
        if let Some((offset, message)) = super::syntax::explain(source) {
            return vec![CompileError {
                offset: Some(offset),
                message,
            }];
        }
        errors
            .errors
            .iter()
            .map(|e| CompileError {
                offset: char_offset(source, e.pos.0, e.pos.1),
                message: tidy_parse_message(&e.msg),
            })
            .collect::<Vec<_>>()
    })?;
    let mut c = Compiler {
        scope,
        info: &info,
        source,
        errors: Vec::new(),
        locals: Vec::new(),
        slots: 0,
    };
    let (node, ty) = c.expr(&ast);
    if want_bool && !ty.can_be(Ty::Bool) {
        c.error(
            &ast,
            format!(
                "a condition must be true or false, but this is a {}",
                ty.name()
            ),
        );
    }
    if c.errors.is_empty() {
        Ok((node, ty, c.slots))
    } else {
        Err(c.errors)
    }
}

fn tidy_parse_message(msg: &str) -> String {
    msg.strip_prefix("Syntax error: ").unwrap_or(msg).to_owned()
}

fn char_offset(source: &str, line: isize, column: isize) -> Option<usize> {
    if line < 1 || column < 1 {
        return None;
    }
    let mut offset = 0usize;
    for (i, l) in source.split_inclusive('\n').enumerate() {
        if i + 1 == line as usize {
            return Some(offset + column as usize - 1);
        }
        offset += l.chars().count();
    }
    None
}

struct Compiler<'c> {
    scope: &'c Scope<'c>,
    info: &'c SourceInfo,
    source: &'c str,
    errors: Vec<CompileError>,
    /// Comprehension variables in scope, innermost last, with their slots.
    locals: Vec<(String, usize)>,
    slots: usize,
}

fn names_list(names: impl Iterator<Item = impl AsRef<str>>) -> String {
    let names: Vec<String> = names.map(|n| format!("`{}`", n.as_ref())).collect();
    if names.is_empty() {
        "none are defined".to_owned()
    } else {
        names.join(", ")
    }
}

impl Compiler<'_> {
    fn error(&mut self, at: &IdedExpr, message: String) {
        let offset = self.info.offset_for(at.id).map(|(start, _)| start as usize);
        self.errors.push(CompileError { offset, message });
    }

    fn bad(&mut self, at: &IdedExpr, message: String) -> (Node, Ty) {
        self.error(at, message);
        (Node::Const(Scalar::Null), Ty::Dyn)
    }

    fn expr(&mut self, e: &IdedExpr) -> (Node, Ty) {
        match &e.expr {
            Expr::Literal(lit) => self.literal(e, lit),
            Expr::Ident(name) => self.ident(e, name),
            Expr::Select(sel) => {
                if sel.test {
                    let (operand, ty) = self.expr(&sel.operand);
                    if !ty.can_be(Ty::Map) {
                        return self.bad(
                            e,
                            format!(
                                "has() needs a map field like `attributes.x`, not a {}",
                                ty.name()
                            ),
                        );
                    }
                    self.check_cp_field(&sel.operand, &sel.field);
                    return (Node::Has(Box::new(operand), sel.field.clone()), Ty::Bool);
                }
                self.select(e, &sel.operand, &sel.field)
            }
            Expr::Call(call) => self.call(e, &call.func_name, call.target.as_deref(), &call.args),
            Expr::List(list) => {
                let items = list
                    .elements
                    .iter()
                    .map(|el| self.expr(el))
                    .collect::<Vec<_>>();
                let elem = common_elem(items.iter().map(|(_, t)| *t));
                (
                    Node::MakeList(items.into_iter().map(|(n, _)| n).collect()),
                    Ty::List(elem),
                )
            }
            Expr::Map(map) => {
                let mut entries = Vec::new();
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        let (k, _) = self.expr(&me.key);
                        let (v, _) = self.expr(&me.value);
                        entries.push((k, v));
                    }
                }
                (Node::MakeMap(entries), Ty::Map)
            }
            Expr::Comprehension(comp) => {
                let (range, range_ty) = self.expr(&comp.iter_range);
                if !range_ty.can_be(Ty::List(Elem::Dyn)) && !range_ty.can_be(Ty::Map) {
                    return self.bad(
                        &comp.iter_range,
                        format!("cannot iterate over a {}", range_ty.name()),
                    );
                }
                let (init, _) = self.expr(&comp.accu_init);
                let accu = self.push_local(&comp.accu_var);
                let iter = self.push_local(&comp.iter_var);
                let iter2 = comp.iter_var2.as_ref().map(|v| self.push_local(v));
                let (cond, _) = self.expr(&comp.loop_cond);
                let (step, _) = self.expr(&comp.loop_step);
                if iter2.is_some() {
                    self.locals.pop();
                }
                self.locals.pop();
                // The result sees the accumulator but not the iteration variables.
                let (result, result_ty) = self.expr(&comp.result);
                self.locals.pop();
                let node = Comprehension {
                    range,
                    iter,
                    iter2,
                    accu,
                    init,
                    cond,
                    step,
                    result,
                };
                (Node::Comprehension(Box::new(node)), result_ty)
            }
            Expr::Struct(_) => self.bad(
                e,
                "message construction is not supported in conditions".to_owned(),
            ),
            Expr::Unspecified => self.bad(e, "incomplete expression".to_owned()),
        }
    }

    fn push_local(&mut self, name: &str) -> usize {
        let slot = self.slots;
        self.slots += 1;
        self.locals.push((name.to_owned(), slot));
        slot
    }

    fn literal(&mut self, e: &IdedExpr, lit: &LiteralValue) -> (Node, Ty) {
        match lit {
            LiteralValue::Boolean(b) => (Node::Const(Scalar::Bool(*b.inner())), Ty::Bool),
            LiteralValue::Int(i) => (Node::Const(Scalar::Int(*i.inner())), Ty::Number),
            LiteralValue::UInt(u) => match i64::try_from(*u.inner()) {
                Ok(i) => (Node::Const(Scalar::Int(i)), Ty::Number),
                Err(_) => self.bad(e, format!("{} is too large", u.inner())),
            },
            LiteralValue::Double(d) => {
                let value = *d.inner();
                match self.double_text(e, value) {
                    Some(dec) => (Node::Const(Scalar::Num(dec)), Ty::Number),
                    None => self.bad(
                        e,
                        format!("{value} cannot be represented as an exact decimal"),
                    ),
                }
            }
            LiteralValue::String(s) => (Node::Const(Scalar::Str(s.inner().into())), Ty::Str),
            LiteralValue::Null => (Node::Const(Scalar::Null), Ty::Null),
            LiteralValue::Bytes(_) => self.bad(e, "bytes literals are not supported".to_owned()),
        }
    }

    /// A double literal means its decimal text: take the text from the source.
    fn double_text(&self, e: &IdedExpr, value: f64) -> Option<Decimal> {
        let from_source = self.info.offset_for(e.id).and_then(|(start, stop)| {
            let text: String = self
                .source
                .chars()
                .skip(start as usize)
                .take((stop - start + 1) as usize)
                .collect();
            let text = if value < 0.0 && !text.starts_with('-') {
                format!("-{text}")
            } else {
                text
            };
            let dec = if text.contains(['e', 'E']) {
                Decimal::from_scientific(&text).ok()
            } else {
                Decimal::from_str_exact(&text).ok()
            }?;
            // Only trust the slice if it really is this literal.
            (dec.to_f64() == Some(value)).then_some(dec)
        });
        // Rust prints the shortest text that reads back as the same double.
        from_source.or_else(|| Decimal::from_str_exact(&value.to_string()).ok())
    }

    fn ident(&mut self, e: &IdedExpr, name: &str) -> (Node, Ty) {
        if let Some((_, slot)) = self.locals.iter().rev().find(|(n, _)| n == name) {
            return (Node::Local(*slot), Ty::Dyn);
        }
        if let Some(n) = Name::named(name) {
            return (Node::Name(n), n.ty());
        }
        match name {
            "counters" | "lists" => self.bad(e, format!("use `{name}.<id>` to read one of the {name}")),
            _ => self.bad(
                e,
                format!(
                    "unknown name `{name}`; a condition can read {}, `counters.<id>` and `lists.<id>`",
                    names_list(Name::ALL.iter().map(|n| n.as_str()))
                ),
            ),
        }
    }

    fn check_cp_field(&mut self, operand: &IdedExpr, field: &str) {
        if matches!(&operand.expr, Expr::Ident(n) if n == "counterparty" && !self.locals.iter().any(|(l, _)| l == n))
            && CpField::named(field).is_none()
        {
            self.error(
                operand,
                format!(
                    "a counterparty has no field `{field}`; its fields are {}",
                    names_list(CpField::ALL.iter().map(|f| f.name()))
                ),
            );
        }
    }

    fn select(&mut self, e: &IdedExpr, operand: &IdedExpr, field: &str) -> (Node, Ty) {
        if let Expr::Ident(root) = &operand.expr {
            if !self.locals.iter().any(|(l, _)| l == root) {
                match root.as_str() {
                    "counters" => {
                        let Some(counters) = self.scope.counters else {
                            return self.bad(
                                operand,
                                "a counter's `where` cannot read counters".to_owned(),
                            );
                        };
                        return match counters.iter().position(|(id, _)| id == field) {
                            Some(i) => (Node::Counter(i), counters[i].1),
                            None => self.bad(
                                operand,
                                format!(
                                    "unknown counter `{field}`; defined counters: {}",
                                    names_list(counters.iter().map(|c| &c.0))
                                ),
                            ),
                        };
                    }
                    "lists" => {
                        return match self.scope.lists.iter().position(|(id, _)| id == field) {
                            Some(i) => (Node::List(i), Ty::List(self.scope.lists[i].1)),
                            None => self.bad(
                                operand,
                                format!(
                                    "unknown list `{field}`; defined lists: {}",
                                    names_list(self.scope.lists.iter().map(|l| &l.0))
                                ),
                            ),
                        };
                    }
                    "counterparty" => {
                        return match CpField::named(field) {
                            Some(f) => (Node::CpField(f), Ty::Str),
                            None => {
                                self.check_cp_field(operand, field);
                                (Node::Const(Scalar::Null), Ty::Dyn)
                            }
                        };
                    }
                    _ => {}
                }
            }
        }
        let (node, ty) = self.expr(operand);
        if !ty.can_be(Ty::Map) {
            return self.bad(e, format!("cannot read field `{field}` of a {}", ty.name()));
        }
        (Node::Select(Box::new(node), field.to_owned()), Ty::Dyn)
    }

    fn call(
        &mut self,
        e: &IdedExpr,
        func: &str,
        target: Option<&IdedExpr>,
        args: &[IdedExpr],
    ) -> (Node, Ty) {
        // Operators first: they come as calls with no target.
        let binary = |f: &str| match f {
            op::EQUALS => Some(CmpOp::Eq),
            op::NOT_EQUALS => Some(CmpOp::Ne),
            op::LESS => Some(CmpOp::Lt),
            op::LESS_EQUALS => Some(CmpOp::Le),
            op::GREATER => Some(CmpOp::Gt),
            op::GREATER_EQUALS => Some(CmpOp::Ge),
            _ => None,
        };
        let arith = |f: &str| match f {
            op::ADD => Some(ArithOp::Add),
            op::SUBSTRACT => Some(ArithOp::Sub),
            op::MULTIPLY => Some(ArithOp::Mul),
            op::DIVIDE => Some(ArithOp::Div),
            op::MODULO => Some(ArithOp::Rem),
            _ => None,
        };
        if target.is_none() {
            if let Some(cmp) = binary(func) {
                let (l, lt) = self.expr(&args[0]);
                let (r, rt) = self.expr(&args[1]);
                self.check_cmp(e, cmp, lt, rt);
                return (Node::Cmp(cmp, Box::new(l), Box::new(r)), Ty::Bool);
            }
            if let Some(a) = arith(func) {
                let (l, lt) = self.expr(&args[0]);
                let (r, rt) = self.expr(&args[1]);
                let ty = self.check_arith(e, a, lt, rt);
                return (Node::Arith(a, Box::new(l), Box::new(r)), ty);
            }
            match func {
                op::LOGICAL_AND | op::LOGICAL_OR => {
                    let (l, lt) = self.expr(&args[0]);
                    let (r, rt) = self.expr(&args[1]);
                    for (t, arg) in [(lt, &args[0]), (rt, &args[1])] {
                        if !t.can_be(Ty::Bool) {
                            self.error(
                                arg,
                                format!("`&&` and `||` need true or false, not a {}", t.name()),
                            );
                        }
                    }
                    let node = if func == op::LOGICAL_AND {
                        Node::And(Box::new(l), Box::new(r))
                    } else {
                        Node::Or(Box::new(l), Box::new(r))
                    };
                    return (node, Ty::Bool);
                }
                op::LOGICAL_NOT => {
                    let (x, t) = self.expr(&args[0]);
                    if !t.can_be(Ty::Bool) {
                        self.error(
                            &args[0],
                            format!("`!` needs true or false, not a {}", t.name()),
                        );
                    }
                    return (Node::Not(Box::new(x)), Ty::Bool);
                }
                op::NEGATE => {
                    let (x, t) = self.expr(&args[0]);
                    if !t.can_be(Ty::Number) && !t.can_be(Ty::Dur) {
                        self.error(&args[0], format!("cannot negate a {}", t.name()));
                    }
                    return (Node::Neg(Box::new(x)), t);
                }
                op::CONDITIONAL => {
                    let (c, ct) = self.expr(&args[0]);
                    if !ct.can_be(Ty::Bool) {
                        self.error(
                            &args[0],
                            format!(
                                "the condition of `? :` must be true or false, not a {}",
                                ct.name()
                            ),
                        );
                    }
                    let (a, at) = self.expr(&args[1]);
                    let (b, bt) = self.expr(&args[2]);
                    let ty = if at == bt { at } else { Ty::Dyn };
                    return (Node::Cond(Box::new((c, a, b))), ty);
                }
                op::IN => {
                    let (x, xt) = self.expr(&args[0]);
                    let (coll, ct) = self.expr(&args[1]);
                    match ct {
                        Ty::List(elem) => {
                            let clash = match elem {
                                Elem::Str => !xt.can_be(Ty::Str),
                                Elem::Number => !xt.can_be(Ty::Number),
                                Elem::Dyn => false,
                            };
                            if clash {
                                self.error(
                                    e,
                                    format!(
                                        "a {} is never in a list of {}",
                                        xt.name(),
                                        elem_name(elem)
                                    ),
                                );
                            }
                        }
                        Ty::Map | Ty::Dyn => {}
                        other => self.error(
                            &args[1],
                            format!("`in` needs a list or a map, not a {}", other.name()),
                        ),
                    }
                    return (Node::In(Box::new(x), Box::new(coll)), Ty::Bool);
                }
                op::INDEX => {
                    let (x, xt) = self.expr(&args[0]);
                    let (i, _) = self.expr(&args[1]);
                    if !xt.can_be(Ty::Map) && !xt.can_be(Ty::List(Elem::Dyn)) {
                        self.error(&args[0], format!("cannot index a {}", xt.name()));
                    }
                    return (Node::Index(Box::new(x), Box::new(i)), Ty::Dyn);
                }
                op::NOT_STRICTLY_FALSE => {
                    let (x, _) = self.expr(&args[0]);
                    return (Node::NotStrictlyFalse(Box::new(x)), Ty::Bool);
                }
                _ => {}
            }
        }
        // Functions and methods: the receiver, if any, is the first argument.
        let mut all: Vec<&IdedExpr> = target.into_iter().collect();
        all.extend(args.iter());
        let compiled: Vec<(Node, Ty)> = all.iter().map(|a| self.expr(a)).collect();
        let tys: Vec<Ty> = compiled.iter().map(|(_, t)| *t).collect();
        let method = target.is_some();
        let (f, params, ret): (Func, &[Ty], Ty) = match (func, method, tys.len()) {
            ("size", _, 1) => (Func::Size, &[Ty::Dyn], Ty::Number),
            ("startsWith", true, 2) => (Func::StartsWith, &[Ty::Str, Ty::Str], Ty::Bool),
            ("endsWith", true, 2) => (Func::EndsWith, &[Ty::Str, Ty::Str], Ty::Bool),
            ("contains", true, 2) => (Func::Contains, &[Ty::Str, Ty::Str], Ty::Bool),
            ("lowerAscii", true, 1) => (Func::LowerAscii, &[Ty::Str], Ty::Str),
            ("upperAscii", true, 1) => (Func::UpperAscii, &[Ty::Str], Ty::Str),
            ("int", false, 1) => (Func::Int, &[Ty::Dyn], Ty::Number),
            ("double", false, 1) => (Func::Double, &[Ty::Dyn], Ty::Number),
            ("string", false, 1) => (Func::String, &[Ty::Dyn], Ty::Str),
            ("timestamp", false, 1) => (Func::Timestamp, &[Ty::Str], Ty::Time),
            ("duration", false, 1) => (Func::Duration, &[Ty::Str], Ty::Dur),
            ("dyn", false, 1) => (Func::Dyn, &[Ty::Dyn], Ty::Dyn),
            ("matches", _, 2) => {
                let pattern = match &all[1].expr {
                    Expr::Literal(LiteralValue::String(s)) => s.inner().to_owned(),
                    _ => {
                        return self.bad(
                            all[1],
                            "the pattern of matches() must be a string literal".to_owned(),
                        )
                    }
                };
                if !tys[0].can_be(Ty::Str) {
                    return self.bad(
                        all[0],
                        format!("matches() needs a string, not a {}", tys[0].name()),
                    );
                }
                return match regex::Regex::new(&pattern) {
                    Ok(re) => {
                        let subject = compiled
                            .into_iter()
                            .next()
                            .map_or(Node::Const(Scalar::Null), |(n, _)| n);
                        (Node::Matches(Box::new(subject), Box::new(re)), Ty::Bool)
                    }
                    Err(err) => self.bad(all[1], format!("invalid regular expression: {err}")),
                };
            }
            (name, true, 1 | 2) if time_part(name).is_some() => {
                let part = time_part(name).unwrap_or(TimePart::Hours);
                (
                    Func::TimePart(part),
                    &[Ty::Time, Ty::Str][..tys.len()],
                    Ty::Number,
                )
            }
            _ => {
                let shape = if method {
                    format!("x.{func}(…)")
                } else {
                    format!("{func}(…)")
                };
                return self.bad(
                    e,
                    format!(
                        "unknown function `{shape}` with {} argument(s); see docs/rules.md for the functions conditions can use",
                        args.len()
                    ),
                );
            }
        };
        for ((t, want), arg) in tys.iter().zip(params).zip(&all) {
            if *want != Ty::Dyn && !t.can_be(*want) {
                self.error(
                    arg,
                    format!("{func}() needs a {} here, not a {}", want.name(), t.name()),
                );
            }
        }
        // Fold constant timestamp / duration literals now, so a bad one is a load error.
        if let (Func::Timestamp | Func::Duration, Expr::Literal(LiteralValue::String(s))) =
            (f, &all[0].expr)
        {
            let folded = if f == Func::Timestamp {
                parse_timestamp(s.inner()).map(Scalar::Time)
            } else {
                parse_duration(s.inner())
                    .map(Scalar::Dur)
                    .map_err(|e| EvalError::new(e.to_string()))
            };
            return match folded {
                Ok(v) => (Node::Const(v), ret),
                Err(err) => self.bad(all[0], err.0.into_owned()),
            };
        }
        (
            Node::Call(f, compiled.into_iter().map(|(n, _)| n).collect()),
            ret,
        )
    }

    fn check_cmp(&mut self, e: &IdedExpr, cmp: CmpOp, l: Ty, r: Ty) {
        if l == Ty::Dyn || r == Ty::Dyn {
            return;
        }
        let same_kind = l == r || matches!((l, r), (Ty::List(_), Ty::List(_)));
        let ordered = matches!(l, Ty::Number | Ty::Str | Ty::Time | Ty::Dur | Ty::Bool);
        match cmp {
            CmpOp::Eq | CmpOp::Ne => {
                if !same_kind && l != Ty::Null && r != Ty::Null {
                    self.error(
                        e,
                        format!(
                            "comparing a {} with a {} is always unequal",
                            l.name(),
                            r.name()
                        ),
                    );
                }
            }
            _ => {
                if !same_kind || !ordered {
                    self.error(
                        e,
                        format!("cannot order a {} against a {}", l.name(), r.name()),
                    );
                }
            }
        }
    }

    fn check_arith(&mut self, e: &IdedExpr, a: ArithOp, l: Ty, r: Ty) -> Ty {
        use Ty::*;
        let result = match (a, l, r) {
            (_, Dyn, _) | (_, _, Dyn) => Some(Dyn),
            (_, Number, Number) => Some(Number),
            (ArithOp::Add, Str, Str) => Some(Str),
            (ArithOp::Add, List(_), List(_)) => Some(List(Elem::Dyn)),
            (ArithOp::Add, Time, Dur) | (ArithOp::Add, Dur, Time) | (ArithOp::Sub, Time, Dur) => {
                Some(Time)
            }
            (ArithOp::Sub, Time, Time) | (ArithOp::Add | ArithOp::Sub, Dur, Dur) => Some(Dur),
            _ => None,
        };
        result.unwrap_or_else(|| {
            self.error(
                e,
                format!(
                    "cannot apply `{}` to a {} and a {}",
                    arith_symbol(a),
                    l.name(),
                    r.name()
                ),
            );
            Dyn
        })
    }
}

fn elem_name(e: Elem) -> &'static str {
    match e {
        Elem::Dyn => "values",
        Elem::Str => "strings",
        Elem::Number => "numbers",
    }
}

fn common_elem(tys: impl Iterator<Item = Ty>) -> Elem {
    let mut elem = None;
    for t in tys {
        let e = match t {
            Ty::Str => Elem::Str,
            Ty::Number => Elem::Number,
            _ => return Elem::Dyn,
        };
        if elem.is_some_and(|x| x != e) {
            return Elem::Dyn;
        }
        elem = Some(e);
    }
    elem.unwrap_or(Elem::Dyn)
}
