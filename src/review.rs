//! `riskgate review`: where finance operations see what is held, why, and approve or reject
//! it (DESIGN section 6).
//!
//! The pending holds are rebuilt from the decisions topic ([`queue`], pure), published
//! outcomes are review records on the same topic ([`kafka`]), and people reach them through
//! an HTTP API and a web page ([`api`]) after signing in ([`auth`]).

pub mod queue;
