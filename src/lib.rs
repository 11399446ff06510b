//! edge-outbox: a sidecar that keeps CloudEvents durably in an embedded sled outbox and relays
//! them to Kafka in rate-limited batches. See DESIGN.md (shared) and README.md.

pub mod adopt;
pub mod api;
pub mod broker_health;
pub mod catalog;
pub mod config;
pub mod connect_check;
pub mod event;
pub mod kafka;
pub mod memory;
pub mod msk_iam;
pub mod relay;
pub mod shutdown;
pub mod sidecar;
pub mod store;

pub use sidecar::Sidecar;
pub mod cli;
pub mod fuzzing;
pub mod loadgen;
pub mod metrics;
pub mod ops;
