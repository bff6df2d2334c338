//! riskgate: an action-authorization gate for non-human identities.
//!
//! The rules core ([`intent`], [`rules`], [`expr`], [`window`], [`engine`]) is pure and
//! synchronous: no async runtime, Kafka client, HTTP or metrics inside it.

pub mod currency;
pub mod intent;
pub mod expr;
