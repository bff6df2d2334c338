//! riskgate: an action-authorization gate for non-human identities.
//!
//! AI agents and service accounts propose financial actions (intents); riskgate decides,
//! at the moment of use, whether each may happen now: `allow`, `hold` or `deny`, with every
//! reason. The decisions themselves are made by the pure core, [`riskgate_core`]; this crate
//! holds the I/O around it: the configuration, the Kafka service ([`pipeline`]), the review
//! service ([`review`]), HTTP ([`http`]), metrics ([`telemetry`]) and the allocator.

pub mod allocator;
pub mod config;
pub mod gateway;
pub mod http;
pub mod integrity;
pub mod kafka;
pub mod logs;
pub mod pipeline;
pub mod review;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod telemetry;
