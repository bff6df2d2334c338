//! riskgate-core: the pure rules core of riskgate, an action-authorization gate for
//! non-human identities.
//!
//! AI agents and service accounts propose financial actions (intents); riskgate decides,
//! at the moment of use, whether each may happen now: `allow`, `hold` or `deny`, with every
//! reason. This crate ([`intent`], [`expr`], [`rules`], [`velocity`], [`engine`],
//! [`decision`]) is pure and synchronous: its dependencies reach no async runtime, Kafka
//! client, HTTP, metrics or logging. The offline front ends ([`replay`], [`testing`]) drive
//! the same [`engine::Engine`] the service (the `riskgate` crate) uses.
//!
//! ```
//! use std::path::PathBuf;
//! use std::sync::Arc;
//! use riskgate_core::decision::Source;
//! use riskgate_core::engine::{Engine, EngineOptions};
//! use riskgate_core::intent::parse_intent;
//! use riskgate_core::decision::Outcome;
//! use riskgate_core::rules::Ruleset;
//!
//! let rules = r#"
//! [[rule]]
//! id = "large-transfer"
//! when = 'action == "transfer" && amount > 10000'
//! action = "hold"
//! message = "{amount} {currency} is above 10000"
//! "#;
//! let ruleset = Ruleset::load_sources(&[(PathBuf::from("limits.toml"), rules.to_owned())])?;
//! let mut engine = Engine::new(Arc::new(ruleset), EngineOptions::default());
//!
//! let intent = parse_intent(br#"{"intent_id":"i-1","agent_id":"bot","account_id":"acct-7",
//!     "action":"transfer","amount":"10000.01","currency":"EUR",
//!     "created_at":"2026-11-28T10:00:00Z"}"#, 64 * 1024)?;
//! let source = Source::File { file: Arc::from("example"), line: 1 };
//! let decision = engine.decide(intent, source, "2026-11-28T10:00:00Z".parse()?);
//!
//! assert_eq!(decision.outcome, Outcome::Hold);
//! assert_eq!(decision.reasons[0].message.as_deref(), Some("10000.01 EUR is above 10000"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod currency;
pub mod decision;
pub mod engine;
pub mod expr;
pub mod intent;
pub mod replay;
pub mod rules;
pub mod testing;
pub mod velocity;
pub mod wire;
