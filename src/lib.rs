//! edge-outbox: a sidecar that keeps CloudEvents durably in an embedded outbox and relays them
//! to Kafka in rate-limited batches. README.md says how to run it; docs/GUARANTEES.md which
//! test shows each promise.
//!
//! # Layout
//!
//! | concept | where |
//! |---|---|
//! | an event is validated (CloudEvents attributes, binary/structured/batched HTTP modes) | [`event`], [`event::http`] |
//! | ... against the catalogue and the size limit, then appended | [`api`] (`ingest.rs`), [`catalog`] |
//! | the durable append: group commit, when the store fsyncs | [`store`] (its top doc), `store/committer.rs`, `store/durable.rs` |
//! | one process per store (the owner lock) | `store/lock.rs` |
//! | where a batch is cut (size, probes, held tenants) and when it is sent | [`relay`] (`read_from`, `run`) |
//! | how a produce error is classified (retriable, permanent, configuration, fatal) | [`kafka_client::classify`] |
//! | what the cluster's client errors say (unreachable, refused) | [`broker_health`] |
//! | the Kafka message of an event (binary or structured binding, headers, key) | [`event::kafka`] |
//! | the shutdown phases and the drain at SIGTERM | [`shutdown`], [`sidecar`] |
//! | stores left by pods that are gone | [`adopt`] |
//! | configuration, every setting documented where it is declared | [`config`] |
//! | the command line and the operator commands | [`cli`], [`ops`], [`connect_check`] |
//! | MSK IAM tokens | [`msk_iam`] |
//! | metrics, memory settings, the load tool, fuzz properties | [`metrics`], [`memory`], [`loadgen`], [`fuzzing`] |

pub mod adopt;
pub mod api;
pub mod broker_health;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connect_check;
pub mod event;
pub mod fuzzing;
pub mod kafka_client;
pub mod loadgen;
pub mod memory;
pub mod message;
pub mod metrics;
pub mod msk_iam;
pub mod ops;
pub mod relay;
pub mod shutdown;
pub mod sidecar;
pub mod store;

pub use sidecar::Sidecar;
