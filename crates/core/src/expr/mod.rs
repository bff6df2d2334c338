//! CEL conditions: parsed by the `cel` crate, compiled here into a small typed tree and
//! evaluated with exact decimals.
//!
//! The `cel` crate's own interpreter works on `f64` doubles; riskgate's contract needs exact
//! decimal comparison and sums (`10000.01` must mean exactly 10000.01), and load-time checks
//! of names and types. So the parser's AST is compiled into [`Program`]: names are resolved
//! to slots once, types are checked once, literal regular expressions are compiled once, and
//! evaluation allocates nothing on the common paths.

mod value;

use std::borrow::Cow;
use std::rc::Rc;
use std::str::FromStr;

use cel::common::ast::{operators as op, EntryExpr, Expr, IdedExpr, LiteralValue, SourceInfo};
use chrono::{DateTime, Datelike, FixedOffset, TimeDelta, Timelike, Utc};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use smallvec::SmallVec;

pub use value::{
    compare, equals, json_decimal, ConstList, EvalError, EvalResult, List, MapValue, Scalar, Value,
};

use crate::intent::{Intent, COUNTERPARTY_FIELDS};

/// The static type of an expression, as far as load-time checks know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    /// Unknown until evaluation (attribute values, comprehension variables).
    Dyn,
    Null,
    Bool,
    Number,
    Str,
    Time,
    Dur,
    List(Elem),
    Map,
}

/// What a list holds, when known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Elem {
    Dyn,
    Str,
    Number,
}

impl Ty {
    fn name(self) -> &'static str {
        match self {
            Ty::Dyn => "dyn",
            Ty::Null => "null",
            Ty::Bool => "bool",
            Ty::Number => "number",
            Ty::Str => "string",
            Ty::Time => "timestamp",
            Ty::Dur => "duration",
            Ty::List(_) => "list",
            Ty::Map => "map",
        }
    }

    /// Whether a value of this type can be a `want` at run time.
    fn can_be(self, want: Ty) -> bool {
        self == Ty::Dyn || self == want || matches!((self, want), (Ty::List(_), Ty::List(_)))
    }
}

/// The names a condition can read (DESIGN section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    IntentId,
    AgentId,
    AccountId,
    Action,
    Amount,
    AmountBase,
    Currency,
    CreatedAt,
    Counterparty,
    Attributes,
}

impl Name {
    pub const ALL: [(&'static str, Name); 10] = [
        ("intent_id", Name::IntentId),
        ("agent_id", Name::AgentId),
        ("account_id", Name::AccountId),
        ("action", Name::Action),
        ("amount", Name::Amount),
        ("amount_base", Name::AmountBase),
        ("currency", Name::Currency),
        ("created_at", Name::CreatedAt),
        ("counterparty", Name::Counterparty),
        ("attributes", Name::Attributes),
    ];

    fn ty(self) -> Ty {
        match self {
            Name::IntentId | Name::AgentId | Name::AccountId | Name::Action | Name::Currency => {
                Ty::Str
            }
            Name::Amount | Name::AmountBase => Ty::Number,
            Name::CreatedAt => Ty::Time,
            Name::Counterparty | Name::Attributes => Ty::Map,
        }
    }
}

/// What a condition may refer to besides the intent's own fields.
pub struct Scope<'s> {
    /// Counter ids with their types; `None` where counters may not be read (a counter's
    /// `where`).
    pub counters: Option<&'s [(String, Ty)]>,
    /// List ids with their element types.
    pub lists: &'s [(String, Elem)],
}

/// A load-time problem, positioned by character offset inside the expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    pub offset: Option<usize>,
    pub message: String,
}

/// Everything a condition reads at evaluation time.
pub struct Activation<'a> {
    pub intent: &'a Intent,
    /// The amount in the base currency, or why there is none.
    pub amount_base: Result<Decimal, &'a str>,
    /// Counter values by counter index, or why the counter is unavailable to this intent.
    pub counters: &'a [Result<Value<'static>, &'a str>],
    pub lists: &'a [ConstList],
    /// The intent's action as a bit of the ruleset's [`Actions`] (0 when no guard names it),
    /// or [`Actions::UNKNOWN`], which makes every guard compare the action by name.
    pub action_bit: u64,
}

/// Every action the guards of a ruleset's conditions name (see
/// [`Program::with_action_guard`]), up to 64: an intent's action is then looked up once, and
/// each guard is one bit test instead of a comparison of names.
#[derive(Debug, Default)]
pub struct Actions {
    /// Sorted; empty when the guards name no action, or more than 64.
    names: Vec<Box<str>>,
}

impl Actions {
    /// The action bit that stands for "not looked up".
    pub const UNKNOWN: u64 = u64::MAX;

    /// Collects the actions the guards of `programs` name, and gives each guard its bits.
    pub fn assign(programs: &mut [&mut Program]) -> Actions {
        let mut names: Vec<Box<str>> = programs
            .iter()
            .filter_map(|p| p.guard.as_ref())
            .flat_map(|g| g.actions.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        if names.len() > 64 {
            return Actions::default();
        }
        let actions = Actions { names };
        for p in programs.iter_mut() {
            if let Some(g) = &mut p.guard {
                g.mask = Some(g.actions.iter().fold(0, |m, a| m | actions.bit(a)));
            }
        }
        actions
    }

    /// The bit of `action`: 0 when no guard names it, [`Actions::UNKNOWN`] when the guards
    /// named too many actions to have bits.
    pub fn bit(&self, action: &str) -> u64 {
        if self.names.is_empty() {
            return Actions::UNKNOWN;
        }
        match self.names.binary_search_by(|n| (**n).cmp(action)) {
            Ok(i) => 1 << i,
            Err(_) => 0,
        }
    }
}

/// The actions for which a condition can be true, as names and, once a ruleset has assigned
/// them (see [`Actions`]), as bits.
#[derive(Debug)]
struct Guard {
    actions: Vec<Box<str>>,
    mask: Option<u64>,
    cover: Cover,
}

/// What a guard that admits an action says about the rest of its condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cover {
    /// The condition is the action test: it is true.
    Whole,
    /// The action test is the first conjunct: the second decides.
    First,
    /// The action test is implied: the whole condition decides.
    Implied,
}

/// A compiled condition.
#[derive(Debug)]
pub struct Program {
    node: Node,
    ty: Ty,
    slots: usize,
    /// The actions for which the condition can be true, when it says so up front
    /// (`action == "transfer" && ...`): any other action is `false` without evaluating.
    guard: Option<Guard>,
}

impl Program {
    pub fn ty(&self) -> Ty {
        self.ty
    }

    pub fn eval<'a>(&'a self, act: &Activation<'a>) -> EvalResult<'a> {
        let mut locals = Vec::with_capacity(self.slots);
        eval(&self.node, act, &mut locals)
    }

    /// Evaluates a condition that must be true or false.
    pub fn eval_bool(&self, act: &Activation<'_>) -> Result<bool, EvalError> {
        let mut node = &self.node;
        if let Some(guard) = &self.guard {
            let admitted = match guard.mask {
                Some(mask) if act.action_bit != Actions::UNKNOWN => mask & act.action_bit != 0,
                _ => guard.actions.iter().any(|a| **a == *act.intent.action),
            };
            if !admitted {
                return Ok(false);
            }
            // Admitted, the action test is true: `true && x` is `x`.
            match (guard.cover, node) {
                (Cover::Whole, _) => return Ok(true),
                (Cover::First, Node::And(_, rest)) => node = rest,
                _ => {}
            }
        }
        let mut locals = Vec::with_capacity(self.slots);
        test(node, act, &mut locals)
    }

    /// Finds the actions this condition is limited to, so that [`Program::eval_bool`] can
    /// answer `false` for any other action without evaluating. Exact: a conjunct
    /// `action == "x"` or `action in <list>` that is false makes the whole `&&` chain false
    /// under CEL's rules, errors in other conjuncts included. `lists` are the ruleset's lists.
    pub fn with_action_guard(mut self, lists: &[ConstList]) -> Program {
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
                    (Node::Name(Name::Action), Node::Const(Scalar::Str(s)))
                    | (Node::Const(Scalar::Str(s)), Node::Name(Name::Action)) => {
                        Some(vec![s.clone()])
                    }
                    _ => None,
                },
                Node::InList(StrLeaf::Name(Name::Action), i) => {
                    lists.get(*i).map(|l| strings(&l.items))
                }
                Node::In(x, coll) if matches!(**x, Node::Name(Name::Action)) => match &**coll {
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
                },
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
                    Node::And(a, b) => {
                        first_conjunct_alone(Node::And(a, Box::new(Node::And(b, c))))
                    }
                    l => Node::And(Box::new(l), c),
                },
                other => other,
            }
        }
        self.node = first_conjunct_alone(self.node);
        // An action test alone (no `&&`, `||`) is exactly its guard.
        let pure =
            |n: &Node| !matches!(n, Node::And(..) | Node::Or(..)) && actions(n, lists).is_some();
        let cover = match &self.node {
            n if pure(n) => Cover::Whole,
            Node::And(l, _) if pure(l) => Cover::First,
            _ => Cover::Implied,
        };
        self.guard = actions(&self.node, lists).map(|actions| Guard {
            actions,
            mask: None,
            cover,
        });
        self
    }

    /// Whether this program is a plain name path (`counterparty.id`, `counters.x`), as a
    /// message placeholder must be.
    pub fn is_name_path(&self) -> bool {
        fn path(node: &Node) -> bool {
            match node {
                Node::Name(_) | Node::CpField(_) | Node::Counter(_) | Node::List(_) => true,
                Node::Select(inner, _) => path(inner),
                _ => false,
            }
        }
        path(&self.node)
    }
}

/// Parses and compiles `source`. With `want_bool`, the expression must be a condition.
pub fn compile(
    source: &str,
    scope: &Scope<'_>,
    want_bool: bool,
) -> Result<Program, Vec<CompileError>> {
    let parser = cel::parser::Parser::new();
    let (ast, info) = parser.parse_with_source_info(source).map_err(|errors| {
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
        Ok(Program {
            node,
            ty,
            slots: c.slots,
            guard: None,
        })
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// Whether `x <op> y`.
    fn holds(self, x: Decimal, y: Decimal) -> bool {
        match self {
            CmpOp::Eq => x == y,
            CmpOp::Ne => x != y,
            CmpOp::Lt => x < y,
            CmpOp::Le => x <= y,
            CmpOp::Gt => x > y,
            CmpOp::Ge => x >= y,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Func {
    Size,
    StartsWith,
    EndsWith,
    Contains,
    LowerAscii,
    UpperAscii,
    Int,
    Double,
    String,
    Timestamp,
    Duration,
    Dyn,
    TimePart(TimePart),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TimePart {
    FullYear,
    Month,
    Date,
    DayOfMonth,
    DayOfWeek,
    DayOfYear,
    Hours,
    Minutes,
    Seconds,
}

#[derive(Debug)]
enum Node {
    Const(Scalar),
    Name(Name),
    CpField(usize),
    Counter(usize),
    List(usize),
    Local(usize),
    Select(Box<Node>, String),
    Has(Box<Node>, String),
    Index(Box<Node>, Box<Node>),
    Not(Box<Node>),
    Neg(Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Cond(Box<(Node, Node, Node)>),
    Cmp(CmpOp, Box<Node>, Box<Node>),
    Arith(ArithOp, Box<Node>, Box<Node>),
    In(Box<Node>, Box<Node>),
    Call(Func, Vec<Node>),
    Matches(Box<Node>, Box<regex::Regex>),
    MakeList(Vec<Node>),
    MakeMap(Vec<(Node, Node)>),
    NotStrictlyFalse(Box<Node>),
    Comprehension(Box<Comprehension>),
    /// `number-name <op> literal`, fused so that no value is built (`amount_base > 10000`,
    /// `counters.x >= 10`).
    CmpNum(CmpOp, NumLeaf, Decimal),
    /// `string-name in lists.x`, fused likewise (`action in lists.payment_actions`).
    InList(StrLeaf, usize),
    /// `has(counterparty.<field>)`, the field by its index in [`COUNTERPARTY_FIELDS`].
    HasCp(usize),
    /// `number-name +/- number-name <op> literal` where a name is an amount, so that the
    /// arithmetic is on decimals anyway (`counters.outflow_24h + amount_base > 50000`).
    CmpArith(CmpOp, Box<(ArithOp, NumLeaf, NumLeaf, Decimal)>),
}

/// A name that holds a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumLeaf {
    Amount,
    AmountBase,
    Counter(usize),
}

/// A name that holds a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StrLeaf {
    Name(Name),
    Counterparty(usize),
}

impl NumLeaf {
    fn is_amount(self) -> bool {
        matches!(self, NumLeaf::Amount | NumLeaf::AmountBase)
    }

    fn of(node: &Node) -> Option<NumLeaf> {
        match node {
            Node::Name(Name::Amount) => Some(NumLeaf::Amount),
            Node::Name(Name::AmountBase) => Some(NumLeaf::AmountBase),
            Node::Counter(i) => Some(NumLeaf::Counter(*i)),
            _ => None,
        }
    }

    fn read(self, act: &Activation<'_>) -> Result<Decimal, EvalError> {
        match self {
            NumLeaf::Amount => Ok(act.intent.amount.unwrap_or(Decimal::ZERO)),
            NumLeaf::AmountBase => act
                .amount_base
                .map_err(|why| EvalError::new(why.to_owned())),
            NumLeaf::Counter(i) => match &act.counters[i] {
                Ok(v) => v
                    .as_decimal()
                    .ok_or_else(|| EvalError::new("counter is not a number")),
                Err(why) => Err(EvalError::new(why.to_string())),
            },
        }
    }
}

impl StrLeaf {
    fn of(node: &Node) -> Option<StrLeaf> {
        match node {
            Node::Name(
                n @ (Name::IntentId
                | Name::AgentId
                | Name::AccountId
                | Name::Action
                | Name::Currency),
            ) => Some(StrLeaf::Name(*n)),
            Node::CpField(i) => Some(StrLeaf::Counterparty(*i)),
            _ => None,
        }
    }

    fn read<'a>(self, act: &Activation<'a>) -> Result<&'a str, EvalError> {
        let i = act.intent;
        match self {
            StrLeaf::Name(Name::IntentId) => Ok(&i.intent_id),
            StrLeaf::Name(Name::AgentId) => Ok(&i.agent_id),
            StrLeaf::Name(Name::AccountId) => Ok(&i.account_id),
            StrLeaf::Name(Name::Action) => Ok(&i.action),
            StrLeaf::Name(_) => Ok(i.currency.as_deref().unwrap_or("")),
            StrLeaf::Counterparty(f) => i
                .counterparty
                .as_ref()
                .and_then(|cp| cp.field_at(f))
                .ok_or_else(|| {
                    let field = COUNTERPARTY_FIELDS[f];
                    EvalError::new(format!("the intent has no `counterparty.{field}`"))
                }),
        }
    }
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
        Node::Has(map, field) => {
            match (&*map, COUNTERPARTY_FIELDS.iter().position(|f| *f == field)) {
                (Node::Name(Name::Counterparty), Some(i)) => Node::HasCp(i),
                _ => Node::Has(map, field),
            }
        }
        other => other,
    }
}

#[derive(Debug)]
struct Comprehension {
    range: Node,
    iter: usize,
    iter2: Option<usize>,
    accu: usize,
    init: Node,
    cond: Node,
    step: Node,
    result: Node,
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
                    return (
                        fuse(Node::Has(Box::new(operand), sel.field.clone())),
                        Ty::Bool,
                    );
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
        if let Some((_, n)) = Name::ALL.iter().find(|(n, _)| *n == name) {
            return (Node::Name(*n), n.ty());
        }
        match name {
            "counters" | "lists" => self.bad(e, format!("use `{name}.<id>` to read one of the {name}")),
            _ => self.bad(
                e,
                format!(
                    "unknown name `{name}`; a condition can read {}, `counters.<id>` and `lists.<id>`",
                    names_list(Name::ALL.iter().map(|(n, _)| n))
                ),
            ),
        }
    }

    fn check_cp_field(&mut self, operand: &IdedExpr, field: &str) {
        if matches!(&operand.expr, Expr::Ident(n) if n == "counterparty" && !self.locals.iter().any(|(l, _)| l == n))
            && !COUNTERPARTY_FIELDS.contains(&field)
        {
            self.error(
                operand,
                format!(
                    "a counterparty has no field `{field}`; its fields are {}",
                    names_list(COUNTERPARTY_FIELDS.iter())
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
                        return match COUNTERPARTY_FIELDS.iter().position(|f| *f == field) {
                            Some(i) => (Node::CpField(i), Ty::Str),
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
                return (fuse(Node::Cmp(cmp, Box::new(l), Box::new(r))), Ty::Bool);
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
                    return (fuse(Node::In(Box::new(x), Box::new(coll))), Ty::Bool);
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
                    .map_err(EvalError::new)
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

fn arith_symbol(a: ArithOp) -> &'static str {
    match a {
        ArithOp::Add => "+",
        ArithOp::Sub => "-",
        ArithOp::Mul => "*",
        ArithOp::Div => "/",
        ArithOp::Rem => "%",
    }
}

fn time_part(name: &str) -> Option<TimePart> {
    Some(match name {
        "getFullYear" => TimePart::FullYear,
        "getMonth" => TimePart::Month,
        "getDate" => TimePart::Date,
        "getDayOfMonth" => TimePart::DayOfMonth,
        "getDayOfWeek" => TimePart::DayOfWeek,
        "getDayOfYear" => TimePart::DayOfYear,
        "getHours" => TimePart::Hours,
        "getMinutes" => TimePart::Minutes,
        "getSeconds" => TimePart::Seconds,
        _ => return None,
    })
}

/// Parses a duration: one or more `<number><unit>` with units `ns`, `us`, `ms`, `s`, `m`,
/// `h`, `d`, `w` (`1h30m`, `1.5h`, `100ms`, `30d`), optionally signed.
pub fn parse_duration(text: &str) -> Result<TimeDelta, String> {
    let bad = || {
        format!(
            "`{text}` is not a duration; write e.g. `100ms`, `30s`, `10m`, `1h30m`, `24h` or `30d`"
        )
    };
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest.is_empty() {
        return Err(bad());
    }
    let mut total = Decimal::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let number = Decimal::from_str(&rest[..digits]).map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let nanos_per: i64 = match &rest[..unit_len] {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "d" => 86_400_000_000_000,
            "w" => 604_800_000_000_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = number
            .checked_mul(Decimal::from(nanos_per))
            .and_then(|n| total.checked_add(n))
            .ok_or_else(bad)?;
    }
    let nanos = total.trunc().to_i64().ok_or_else(bad)?;
    let delta = TimeDelta::nanoseconds(nanos);
    Ok(if negative { -delta } else { delta })
}

fn parse_timestamp(text: &str) -> Result<DateTime<Utc>, EvalError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| EvalError::new(format!("`{text}` is not an RFC 3339 timestamp: {e}")))
}

fn parse_offset(text: &str) -> Result<FixedOffset, EvalError> {
    if text == "UTC" || text == "Z" {
        return FixedOffset::east_opt(0).ok_or_else(|| EvalError::new("bad offset"));
    }
    let bad = || {
        EvalError::new(format!(
            "`{text}` is not a time zone offset; write e.g. `+02:00` or `UTC`"
        ))
    };
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let h: i32 = h.parse().map_err(|_| bad())?;
    let m: i32 = m.parse().map_err(|_| bad())?;
    FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad)
}

// ---------------------------------------------------------------------------------------
// Evaluation

fn err<'a>(message: impl Into<Cow<'static, str>>) -> EvalResult<'a> {
    Err(EvalError::new(message))
}

fn eval<'a>(
    node: &'a Node,
    act: &Activation<'a>,
    locals: &mut Vec<EvalResult<'a>>,
) -> EvalResult<'a> {
    match node {
        Node::Const(v) => Ok(v.value()),
        Node::Name(name) => read_name(*name, act),
        Node::CpField(i) => {
            match act
                .intent
                .counterparty
                .as_ref()
                .and_then(|cp| cp.field_at(*i))
            {
                Some(s) => Ok(Value::Str(Cow::Borrowed(s))),
                None => err(format!(
                    "the intent has no `counterparty.{}`",
                    COUNTERPARTY_FIELDS[*i]
                )),
            }
        }
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
    let s = |v: &'a str| Ok(Value::Str(Cow::Borrowed(v)));
    match name {
        Name::IntentId => s(&i.intent_id),
        Name::AgentId => s(&i.agent_id),
        Name::AccountId => s(&i.account_id),
        Name::Action => s(&i.action),
        Name::Amount => Ok(Value::Num(i.amount.unwrap_or(Decimal::ZERO))),
        Name::AmountBase => match act.amount_base {
            Ok(d) => Ok(Value::Num(d)),
            Err(why) => err(why.to_owned()),
        },
        Name::Currency => s(i.currency.as_deref().unwrap_or("")),
        Name::CreatedAt => Ok(Value::Time(i.created_at)),
        Name::Counterparty => Ok(Value::Map(MapValue::Counterparty(i.counterparty.as_ref()))),
        Name::Attributes => match &i.attributes {
            Some(a) => Ok(Value::Map(MapValue::Json(a))),
            None => Ok(Value::Map(MapValue::Owned(Rc::new(Vec::new())))),
        },
    }
}

/// Evaluates a node that must give true or false, without building a [`Value`] for the
/// boolean structure (`&&`, `||`, `!`, comparisons, `in`): the hot path of every rule.
/// `&&` and `||` keep CEL's error absorption: `false && error` is `false`, `true || error`
/// is `true`, in either order.
fn test<'a>(
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
        Node::HasCp(i) => Ok(act
            .intent
            .counterparty
            .as_ref()
            .is_some_and(|cp| cp.field_at(*i).is_some())),
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

#[inline(never)]
fn call<'a>(f: Func, args: SmallVec<[Value<'a>; 2]>) -> EvalResult<'a> {
    let mut args = args.into_iter();
    let first = args.next().unwrap_or(Value::Null);
    let second = args.next();
    let str_arg = |v: Option<Value<'a>>| match v {
        Some(Value::Str(s)) => Ok(s),
        Some(other) => Err(EvalError::new(format!(
            "expected a string argument, not a {}",
            other.type_name()
        ))),
        None => Err(EvalError::new("missing argument")),
    };
    let recv_str = |v: Value<'a>| match v {
        Value::Str(s) => Ok(s),
        other => Err(EvalError::new(format!(
            "expected a string, not a {}",
            other.type_name()
        ))),
    };
    match f {
        Func::Size => match first {
            Value::Str(s) => Ok(Value::Int(s.chars().count() as i64)),
            Value::List(l) => Ok(Value::Int(l.len() as i64)),
            Value::Map(m) => Ok(Value::Int(m.len() as i64)),
            other => err(format!(
                "size() needs a string, list or map, not a {}",
                other.type_name()
            )),
        },
        Func::StartsWith => Ok(Value::Bool(
            recv_str(first)?.starts_with(str_arg(second)?.as_ref()),
        )),
        Func::EndsWith => Ok(Value::Bool(
            recv_str(first)?.ends_with(str_arg(second)?.as_ref()),
        )),
        Func::Contains => Ok(Value::Bool(
            recv_str(first)?.contains(str_arg(second)?.as_ref()),
        )),
        Func::LowerAscii => Ok(Value::Str(Cow::Owned(
            recv_str(first)?.to_ascii_lowercase(),
        ))),
        Func::UpperAscii => Ok(Value::Str(Cow::Owned(
            recv_str(first)?.to_ascii_uppercase(),
        ))),
        Func::Int => match first {
            Value::Int(i) => Ok(Value::Int(i)),
            Value::Num(n) => n
                .trunc()
                .to_i64()
                .map(Value::Int)
                .ok_or_else(|| EvalError::new(format!("{n} is out of the int range"))),
            Value::Str(s) => s
                .parse::<i64>()
                .map(Value::Int)
                .map_err(|_| EvalError::new(format!("`{s}` is not an integer"))),
            Value::Time(t) => Ok(Value::Int(t.timestamp())),
            other => err(format!("int() cannot convert a {}", other.type_name())),
        },
        Func::Double => match first {
            Value::Int(i) => Ok(Value::Num(Decimal::from(i))),
            Value::Num(n) => Ok(Value::Num(n)),
            Value::Str(s) => Decimal::from_str_exact(s.trim())
                .map(Value::Num)
                .map_err(|_| EvalError::new(format!("`{s}` is not a decimal number"))),
            other => err(format!("double() cannot convert a {}", other.type_name())),
        },
        Func::String => Ok(match first {
            Value::Str(s) => Value::Str(s),
            other => Value::Str(Cow::Owned(other.to_string())),
        }),
        Func::Timestamp => match first {
            Value::Str(s) => parse_timestamp(&s).map(Value::Time),
            Value::Time(t) => Ok(Value::Time(t)),
            other => err(format!(
                "timestamp() needs a string, not a {}",
                other.type_name()
            )),
        },
        Func::Duration => match first {
            Value::Str(s) => parse_duration(&s).map(Value::Dur).map_err(EvalError::new),
            Value::Dur(d) => Ok(Value::Dur(d)),
            other => err(format!(
                "duration() needs a string, not a {}",
                other.type_name()
            )),
        },
        Func::Dyn => Ok(first),
        Func::TimePart(part) => {
            let Value::Time(t) = first else {
                return err(format!("expected a timestamp, not a {}", first.type_name()));
            };
            let offset = match second {
                Some(Value::Str(tz)) => parse_offset(&tz)?,
                Some(other) => {
                    return err(format!(
                        "a time zone must be a string, not a {}",
                        other.type_name()
                    ))
                }
                None => FixedOffset::east_opt(0).ok_or_else(|| EvalError::new("bad offset"))?,
            };
            let local = t.with_timezone(&offset);
            let n = match part {
                TimePart::FullYear => local.year() as i64,
                TimePart::Month => local.month0() as i64,
                TimePart::Date => local.day() as i64,
                TimePart::DayOfMonth => local.day0() as i64,
                TimePart::DayOfWeek => local.weekday().num_days_from_sunday() as i64,
                TimePart::DayOfYear => local.ordinal0() as i64,
                TimePart::Hours => local.hour() as i64,
                TimePart::Minutes => local.minute() as i64,
                TimePart::Seconds => local.second() as i64,
            };
            Ok(Value::Int(n))
        }
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

#[cfg(test)]
mod tests;

/// Compiled programs are shared by every thread that decides.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<Program>();
    shareable::<ConstList>();
};
