//! riskgate: an action-authorization gate for non-human identities.
//!
//! The rules core ([`intent`], [`rules`], [`expr`], [`window`], [`engine`]) is pure and
//! synchronous: no async runtime, Kafka client, HTTP or metrics inside it. The command-line
//! front ends ([`replay`], [`testing`]) drive the same [`engine::Engine`] the service uses.

pub mod currency;
pub mod decision;
pub mod engine;
pub mod expr;
pub mod intent;
pub mod replay;
pub mod rules;
pub mod testing;
pub mod window;
