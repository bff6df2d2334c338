//! CEL conditions: parsed by the `cel` crate, compiled here into a small typed tree and
//! evaluated with exact decimals.
//!
//! The `cel` crate's own interpreter works on `f64` doubles; riskgate's contract needs exact
//! decimal comparison and sums (`10000.01` must mean exactly 10000.01), and load-time checks
//! of names and types. So a condition goes through passes, one module each:
//!
//! * [`check`]: the parser's AST becomes an [`ast::Node`] tree; names are resolved to slots,
//!   types checked and literal regular expressions compiled, once;
//! * [`optimize`]: the common shapes are fused and action guards found (switchable, see
//!   [`CompileOptions`]);
//! * [`eval`] and [`functions`]: evaluation, which allocates nothing on the common paths;
//! * [`value`]: the values, their equality and order.

mod ast;
mod check;
mod eval;
mod functions;
mod optimize;
mod syntax;
mod value;

use rust_decimal::Decimal;
use smallvec::SmallVec;

pub use functions::{format_duration, parse_duration, DurationError};
pub use value::{compare, equals, ConstList, EvalError, EvalResult, List, MapValue, Scalar, Value};

use crate::intent::{Field, Intent};

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
    pub(crate) fn name(self) -> &'static str {
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
    pub(crate) fn can_be(self, want: Ty) -> bool {
        self == Ty::Dyn || self == want || matches!((self, want), (Ty::List(_), Ty::List(_)))
    }
}

/// The names a condition can read ([docs/design.md](../../../../docs/design.md#3-rules-semantics)):
/// the intent's fields, and `amount_base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    Field(Field),
    /// The amount in the ruleset's base currency.
    AmountBase,
}

impl Name {
    /// In the order the documentation lists them.
    pub const ALL: [Name; 10] = [
        Name::Field(Field::IntentId),
        Name::Field(Field::AgentId),
        Name::Field(Field::AccountId),
        Name::Field(Field::Action),
        Name::Field(Field::Amount),
        Name::AmountBase,
        Name::Field(Field::Currency),
        Name::Field(Field::CreatedAt),
        Name::Field(Field::Counterparty),
        Name::Field(Field::Attributes),
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Name::Field(f) => f.name(),
            Name::AmountBase => "amount_base",
        }
    }

    pub fn named(name: &str) -> Option<Name> {
        match name {
            "amount_base" => Some(Name::AmountBase),
            _ => Field::named(name).map(Name::Field),
        }
    }

    fn ty(self) -> Ty {
        match self {
            Name::Field(Field::Amount) | Name::AmountBase => Ty::Number,
            Name::Field(Field::CreatedAt) => Ty::Time,
            Name::Field(Field::Counterparty | Field::Attributes) => Ty::Map,
            Name::Field(_) => Ty::Str,
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
    /// The intent's action in the ruleset's [`ActionIndex`], or [`ActionId::UNKNOWN`], which
    /// makes every guard compare the action by name.
    pub action: ActionId,
}

/// An action's number in an [`ActionIndex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActionId(u32);

impl ActionId {
    /// Not looked up: guards compare the action by name.
    pub const UNKNOWN: ActionId = ActionId(u32::MAX);
    /// Looked up, and named by no guard.
    pub const OTHER: ActionId = ActionId(u32::MAX - 1);
}

/// Every action the guards of a ruleset's conditions name, numbered when the ruleset is
/// loaded: an intent's action is looked up once, and each guard is then one bit test, for any
/// number of actions.
#[derive(Debug, Default)]
pub struct ActionIndex {
    /// Sorted.
    names: Vec<Box<str>>,
}

impl ActionIndex {
    /// Numbers the actions the guards of `programs` name, and gives each guard its set.
    pub fn build(programs: &mut [&mut Program]) -> ActionIndex {
        let mut names: Vec<Box<str>> = programs
            .iter()
            .filter_map(|p| p.guard.as_ref())
            .flat_map(|g| g.actions.iter().cloned())
            .collect();
        names.sort();
        names.dedup();
        let index = ActionIndex { names };
        for p in programs.iter_mut() {
            if let Some(g) = &mut p.guard {
                let mut set: SmallVec<[u64; 1]> = SmallVec::new();
                for a in &g.actions {
                    let ActionId(i) = index.id(a);
                    let (word, bit) = (i as usize / 64, i % 64);
                    if set.len() <= word {
                        set.resize(word + 1, 0);
                    }
                    set[word] |= 1 << bit;
                }
                g.set = Some(set);
            }
        }
        index
    }

    /// The number of `action`, or [`ActionId::OTHER`] when no guard names it.
    pub fn id(&self, action: &str) -> ActionId {
        match self.names.binary_search_by(|n| (**n).cmp(action)) {
            Ok(i) => ActionId(i as u32),
            Err(_) => ActionId::OTHER,
        }
    }
}

/// The actions for which a condition can be true, as names and, once a ruleset has numbered
/// them (see [`ActionIndex`]), as a set of numbers.
#[derive(Debug)]
struct Guard {
    actions: Vec<Box<str>>,
    set: Option<SmallVec<[u64; 1]>>,
    cover: Cover,
}

impl Guard {
    fn admits(&self, act: &Activation<'_>) -> bool {
        match (&self.set, act.action) {
            (Some(_), ActionId::OTHER) => false,
            (Some(set), ActionId(i)) if act.action != ActionId::UNKNOWN => set
                .get(i as usize / 64)
                .is_some_and(|word| word >> (i % 64) & 1 == 1),
            _ => self.actions.iter().any(|a| **a == *act.intent.head.action),
        }
    }
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

/// How conditions are compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileOptions {
    /// Run the [`optimize`] pass (fusion and action guards). Off, a condition is evaluated
    /// as checked: the same answers and errors, with more work.
    pub optimize: bool,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions { optimize: true }
    }
}

/// A compiled condition.
#[derive(Debug)]
pub struct Program {
    node: ast::Node,
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
        eval::eval(&self.node, act, &mut locals)
    }

    /// Evaluates a condition that must be true or false.
    pub fn eval_bool(&self, act: &Activation<'_>) -> Result<bool, EvalError> {
        let mut node = &self.node;
        if let Some(guard) = &self.guard {
            if !guard.admits(act) {
                return Ok(false);
            }
            // Admitted, the action test is true: `true && x` is `x`.
            match (guard.cover, node) {
                (Cover::Whole, _) => return Ok(true),
                (Cover::First, ast::Node::And(_, rest)) => node = rest,
                _ => {}
            }
        }
        let mut locals = Vec::with_capacity(self.slots);
        eval::test(node, act, &mut locals)
    }

    /// Whether this program is a plain name path (`counterparty.id`, `counters.x`), as a
    /// message placeholder must be.
    pub fn is_name_path(&self) -> bool {
        fn path(node: &ast::Node) -> bool {
            match node {
                ast::Node::Name(_)
                | ast::Node::CpField(_)
                | ast::Node::Counter(_)
                | ast::Node::List(_) => true,
                ast::Node::Select(inner, _) => path(inner),
                _ => false,
            }
        }
        path(&self.node)
    }
}

/// Parses and compiles `source` against `scope`. With `want_bool`, the expression must be a
/// condition. With the optimizer on, `lists` (the ruleset's list values) let action guards
/// see through `action in lists.x`.
pub fn compile(
    source: &str,
    scope: &Scope<'_>,
    want_bool: bool,
    lists: &[ConstList],
    options: CompileOptions,
) -> Result<Program, Vec<CompileError>> {
    let (node, ty, slots) = check::check(source, scope, want_bool)?;
    let (node, guard) = if options.optimize {
        let node = optimize::optimize(node);
        if want_bool {
            optimize::guard(node, lists)
        } else {
            (node, None)
        }
    } else {
        (node, None)
    };
    Ok(Program {
        node,
        ty,
        slots,
        guard,
    })
}

#[cfg(test)]
mod tests;

/// Compiled programs are shared by every thread that decides.
const _: fn() = || {
    fn shareable<T: Send + Sync>() {}
    shareable::<Program>();
    shareable::<ConstList>();
};
