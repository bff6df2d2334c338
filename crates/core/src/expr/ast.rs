//! The compiled form of a condition: a small typed tree over resolved names. [`super::check`]
//! builds it, [`super::optimize`] may rewrite it, [`super::eval`] runs it.

use rust_decimal::Decimal;

use super::value::{EvalError, Scalar};
use super::{Activation, Name};
use crate::intent::{CpField, Field};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    /// Whether `x <op> y`.
    pub(super) fn holds(self, x: Decimal, y: Decimal) -> bool {
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
pub(super) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Func {
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
pub(super) enum TimePart {
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
pub(super) enum Node {
    Const(Scalar),
    Name(Name),
    CpField(CpField),
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
    /// `has(counterparty.<field>)`.
    HasCp(CpField),
    /// `number-name +/- number-name <op> literal` where a name is an amount, so that the
    /// arithmetic is on decimals anyway (`counters.outflow_24h + amount_base > 50000`).
    CmpArith(CmpOp, Box<(ArithOp, NumLeaf, NumLeaf, Decimal)>),
}

/// A name that holds a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NumLeaf {
    Amount,
    AmountBase,
    Counter(usize),
}

/// A name that holds a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StrLeaf {
    /// A string field of the intent (a currency reads `""` when absent).
    Field(Field),
    Counterparty(CpField),
}

impl NumLeaf {
    pub(super) fn is_amount(self) -> bool {
        matches!(self, NumLeaf::Amount | NumLeaf::AmountBase)
    }

    pub(super) fn of(node: &Node) -> Option<NumLeaf> {
        match node {
            Node::Name(Name::Field(Field::Amount)) => Some(NumLeaf::Amount),
            Node::Name(Name::AmountBase) => Some(NumLeaf::AmountBase),
            Node::Counter(i) => Some(NumLeaf::Counter(*i)),
            _ => None,
        }
    }

    pub(super) fn read(self, act: &Activation<'_>) -> Result<Decimal, EvalError> {
        match self {
            NumLeaf::Amount => Ok(act.intent.head.amount.unwrap_or(Decimal::ZERO)),
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
    pub(super) fn of(node: &Node) -> Option<StrLeaf> {
        match node {
            Node::Name(Name::Field(
                f @ (Field::IntentId
                | Field::AgentId
                | Field::AccountId
                | Field::Action
                | Field::Currency),
            )) => Some(StrLeaf::Field(*f)),
            Node::CpField(i) => Some(StrLeaf::Counterparty(*i)),
            _ => None,
        }
    }

    pub(super) fn read<'a>(self, act: &Activation<'a>) -> Result<&'a str, EvalError> {
        match self {
            StrLeaf::Field(f) => Ok(f.text(act.intent).unwrap_or("")),
            StrLeaf::Counterparty(f) => act
                .intent
                .counterparty
                .as_ref()
                .and_then(|cp| cp.get(f))
                .ok_or_else(|| EvalError::new(format!("the intent has no `{}`", f.path()))),
        }
    }
}

#[derive(Debug)]
pub(super) struct Comprehension {
    pub(super) range: Node,
    pub(super) iter: usize,
    pub(super) iter2: Option<usize>,
    pub(super) accu: usize,
    pub(super) init: Node,
    pub(super) cond: Node,
    pub(super) step: Node,
    pub(super) result: Node,
}

pub(super) fn arith_symbol(a: ArithOp) -> &'static str {
    match a {
        ArithOp::Add => "+",
        ArithOp::Sub => "-",
        ArithOp::Mul => "*",
        ArithOp::Div => "/",
        ArithOp::Rem => "%",
    }
}

pub(super) fn time_part(name: &str) -> Option<TimePart> {
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
