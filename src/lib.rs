//! edge-outbox: a sidecar that keeps CloudEvents durably in an embedded sled outbox and relays
//! them to Kafka in rate-limited batches. See DESIGN.md (shared) and README.md.

pub mod catalog;
pub mod event;
pub mod store;
