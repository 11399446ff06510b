//! edge-outbox: a sidecar that keeps CloudEvents durably in an embedded outbox and relays them
//! to Kafka in rate-limited batches. README.md says how to run it; docs/GUARANTEES.md which
//! test shows each promise.
//!
//! # Layout
//!
//! The data path runs downwards: `api` -> `event`, `catalog` -> `store`; `relay` -> `store`,
//! `relay/service.rs` -> librdkafka. The store and the event model import nothing above them
//! (only `clock` and `message`).
//!
//! | concept | where |
//! |---|---|
//! | an event is validated (CloudEvents attributes; binary, structured, batched HTTP modes) | [`event`], `event/http.rs` |
//! | ... against the catalogue and the size limit, then appended and answered 202 | `api/ingest.rs`, [`records`], [`catalog`] |
//! | the W3C trace context a Kafka message carries | `event/trace.rs` |
//! | the outbox in-process, for Rust services (no HTTP) | [`embedded`] |
//! | when the store fsyncs (the durability protocol, told once) | [`store`]'s top doc; `store/committer/mod.rs` (`write_group`) |
//! | what a commit group changes, and what is refused | `store/committer/plan.rs` |
//! | opening a store and restoring it after a crash (also for `inspect`) | `store/recovery.rs` |
//! | one process per store (the owner lock) | `store/lock.rs` |
//! | tenant isolation: the backlog per tenant and its shares, fair reads, ingest rates per tenant | `store/tenants.rs`, `store/read.rs`, `api/tenant_rate.rs` |
//! | where a batch is cut (sequence order or fair shares, size, probes, paused and held records) and when it is sent | `relay/mod.rs` (`run`, `drain`, `read_from`) |
//! | exactly-once: a transaction per batch, the checkpoints that confirm the store after a crash | `relay/exactly_once.rs`, `relay/checkpoint.rs`, `store/instance.rs` |
//! | how a produce error is classified (retriable, permanent, configuration, fatal) | `relay/service.rs` (`classify`, `Outcome::failed`) |
//! | what the relay does about each outcome (confirm, park, pause, hold, back off) | `relay/policy.rs` |
//! | the producer built from the configuration (TLS, SASL, MSK IAM), topics, the dev broker | [`kafka_client`], [`msk_iam`] |
//! | what the cluster's client errors say (unreachable, refused) | [`broker_health`] |
//! | the Kafka message of an event (binary or structured binding, headers, key) | `event/kafka.rs`, [`message`] |
//! | the shutdown phases and the drain at SIGTERM | [`shutdown`], [`sidecar`] |
//! | stores left by pods that are gone | [`adopt`] |
//! | every setting, its default and its check; where values come from | [`config`], `config/layers.rs`, `store/config.rs` |
//! | the command line and the operator commands | [`cli`], [`ops`], [`connect_check`] |
//! | the HTTP API's OpenAPI document | `api/openapi.json` |
//! | metrics, memory settings, the load tool, fuzz properties, the clock | [`metrics`], [`memory`], [`loadgen`], [`fuzzing`], [`clock`] |
//! | the sidecar's own spans over OTLP (off by default) | [`telemetry`] |

pub mod adopt;
pub mod api;
pub mod broker_health;
pub mod catalog;
pub mod cli;
pub mod clock;
pub mod config;
pub mod connect_check;
pub mod embedded;
pub mod event;
pub mod fuzzing;
pub mod kafka_client;
pub mod loadgen;
pub mod memory;
pub mod message;
pub mod metrics;
pub mod msk_iam;
pub mod ops;
pub mod records;
pub mod relay;
pub mod shutdown;
pub mod sidecar;
pub mod store;
pub mod telemetry;

pub use config::Config;
pub use sidecar::Sidecar;
