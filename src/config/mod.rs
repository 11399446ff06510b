//! One typed configuration for the sidecar: every setting declared, documented and defaulted
//! here (the store's own in [`crate::store::StoreConfig`]), and validated once at start with
//! errors that name the setting. Where the values come from (file, environment, flags) is
//! `layers.rs`.

mod layers;

pub use layers::{env_overrides, preset, ConfigSource, Override, PRESETS};

use crate::catalog::EventType;
use crate::event::kafka::KafkaMode;
use crate::event::{KeySource, DEFAULT_KEY_ORDER};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// librdkafka's default `message.max.bytes`: the largest message the producer sends.
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// What a record batch adds around one message (batch header, record framing, header
/// lengths), kept free below `message.max.bytes`.
pub const RECORD_OVERHEAD_BYTES: usize = 512;

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address of the HTTP API (ingest, status, dead-letter administration). Loopback by
    /// default: only the pod's own containers reach it. Any other address needs
    /// `admin.token_file`.
    pub listen: SocketAddr,
    /// A second listener serving only `/metrics`, `/healthz` and `/readyz` (say `0.0.0.0:9090`,
    /// for Prometheus and kubelet on the pod's address); off by default.
    pub ops_listen: Option<SocketAddr>,
    pub admin: AdminConfig,
    /// The store's directory (its generations: sled databases and segment files).
    pub data_dir: PathBuf,
    pub ingest: IngestConfig,
    pub store: crate::store::StoreConfig,
    pub relay: RelayConfig,
    pub kafka: KafkaConfig,
    pub readiness: ReadinessConfig,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
}

/// Who may use the dead-letter administration routes (`/v1/dlq`: list, show, replay, purge).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// A file holding the bearer token those routes then require (`Authorization: Bearer
    /// TOKEN`; `edge-outbox dlq --token-file`). Required when `listen` is not a loopback
    /// address; optional, and then enforced, on loopback.
    pub token_file: Option<PathBuf>,
}

impl AdminConfig {
    /// The token, read from its file (surrounding whitespace dropped); `None` without a file.
    pub fn token(&self) -> Result<Option<String>, ConfigError> {
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            bad(
                "admin.token_file",
                format!("cannot read {}: {e}", path.display()),
            )
        })?;
        let token = text.trim().to_string();
        if token.len() < 16 {
            return Err(bad(
                "admin.token_file",
                format!(
                    "{} holds no token of at least 16 characters",
                    path.display()
                ),
            ));
        }
        Ok(Some(token))
    }
}

/// What SIGTERM (or Ctrl-C) does: the relay delivers the whole backlog at once, batch after
/// batch, while intake stays open for `intake_grace`; the process exits 0 once the store is
/// empty, or with exit code 3 when `drain_timeout` passes first (the store is left intact).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long appends are still accepted after the signal (the app beside a classic sidecar
    /// gets SIGTERM at the same moment and may still post). 0 for a native sidecar, which
    /// Kubernetes stops only after the app has exited. Later appends get `503`.
    #[serde(with = "humantime_serde")]
    pub intake_grace: Duration,
    /// The drain's deadline, counted from the signal: it must end before Kubernetes' SIGKILL
    /// (`terminationGracePeriodSeconds`, 30 s by default), with a margin for closing the store.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Drain without the relay's rate limits (`relay.max_*_per_second`).
    pub drain_unlimited: bool,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            intake_grace: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(25),
            drain_unlimited: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReadinessConfig {
    /// `/readyz` fails while the oldest undelivered event is older than this.
    #[serde(with = "humantime_serde")]
    pub max_backlog_age: Duration,
    /// `/readyz` fails once the cluster has been unreachable, or refusing our credentials, for
    /// longer than this (whether or not events wait).
    #[serde(with = "humantime_serde")]
    pub max_broker_outage: Duration,
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        ReadinessConfig {
            max_backlog_age: Duration::from_secs(300),
            max_broker_outage: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    /// Largest accepted event (its Kafka message: key, headers and value), in bytes.
    pub max_event_bytes: usize,
    /// Largest accepted request body (a batch), in bytes.
    pub max_request_bytes: usize,
    /// Accept types missing from the catalogue (published to a topic named after the type).
    pub allow_unknown_types: bool,
    /// Where the tenant key comes from, first match wins.
    pub key_order: Vec<KeySource>,
    /// Event types added to the built-in catalogue.
    pub extra_types: Vec<EventType>,
    /// Events per second one tenant may append, or "unlimited" (the default). A tenant over
    /// it gets 429 with `Retry-After`; other tenants are not affected. At most
    /// `store.max_tracked_tenants` tenants are rate limited one by one; the others share one
    /// limit.
    pub max_events_per_second_per_tenant: Limit,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// How often the backlog is sent (sooner when a full batch is waiting).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    pub batch_max_events: usize,
    pub batch_max_bytes: u64,
    /// Events per second to Kafka, or "unlimited".
    pub max_events_per_second: Limit,
    /// Bytes per second to Kafka, or "unlimited".
    pub max_bytes_per_second: Limit,
    /// First wait after a retriable failure; doubles up to `retry_backoff_max`.
    #[serde(with = "humantime_serde")]
    pub retry_backoff_min: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_backoff_max: Duration,
    /// At-least-once: after this long with messages handed to librdkafka and no delivery
    /// report for any of them (the broker is away or hung), they are taken back (purged) and
    /// sent again later, in the small batches of a probe, by a new producer. What librdkafka
    /// holds during an outage is then at most a probe's worth instead of two full batches
    /// (about 60 MiB with the defaults). A broker that was only slow may then write some of
    /// them twice (at most the two batches in flight). Reports that merely trickle in (quotas,
    /// a slow link) do not count as silence. The default, 2 minutes, is well beyond Kafka's
    /// own waits (30 s request and replica-fetch timeouts, librdkafka's 60 s socket timeout):
    /// a cluster healing itself after a paused broker was seen to answer only after 30 s, and
    /// taking its writes back then wrote 120 events twice.
    #[serde(with = "humantime_serde")]
    pub stall_timeout: Duration,
    /// How long a topic stays paused after a configuration error before it is tried again.
    #[serde(with = "humantime_serde")]
    pub pause_retry: Duration,
    /// Emit an `outbox.published.v1` summary per tenant after each delivered batch.
    pub publish_summaries: bool,
    /// The `source` of those summaries.
    pub summary_source: String,
    /// CloudEvents Kafka binding mode.
    pub mode: KafkaMode,
    /// `at-least-once` (the default: a crash can send up to two batches again, consumers
    /// de-duplicate on `source` + `id`) or `exactly-once`: each batch is one Kafka transaction
    /// that also writes a checkpoint to `checkpoint_topic`; consumers reading with
    /// `isolation.level=read_committed` see every event once, across crashes.
    pub delivery: Delivery,
    /// Exactly-once: the producer's `transactional.id` is this, `-`, and the store's instance
    /// id (stable across restarts, unique per store).
    pub transactional_id_prefix: String,
    /// Exactly-once: the compacted topic (one partition is enough) of the checkpoints, keyed
    /// by the store's instance id; `edge-outbox topics create` provisions it.
    pub checkpoint_topic: String,
    /// While several tenants hold more backlog than one batch takes, give each a fair share of
    /// every batch (the quiet ones all they hold) instead of strict append order; each
    /// tenant's own order is kept either way. `false`: append order.
    pub fair_drain: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Comma-separated bootstrap servers.
    pub brokers: String,
    pub client_id: String,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd`. gzip by default: every client reads it
    /// without plug-ins (kafkajs, the most used Node client, needs one for snappy, lz4, zstd).
    pub compression: String,
    /// How long librdkafka keeps retrying one message before reporting it as timed out.
    /// Very large by default: a timed-out run of messages could land behind its successors.
    #[serde(with = "humantime_serde")]
    pub delivery_timeout: Duration,
    /// Create missing catalogue topics at start through the admin API (MSK Serverless does
    /// not auto-create topics). Existing topics are left alone.
    pub create_topics: bool,
    /// Partitions of topics the sidecar creates.
    pub topic_partitions: i32,
    /// Replication factor of topics the sidecar creates; -1 is the cluster's default.
    pub topic_replication: i32,
    /// TLS and SASL (including MSK IAM).
    pub security: SecurityConfig,
    /// Further librdkafka properties, passed as they are; they win over everything above.
    /// Values of keys that look secret are never logged.
    pub properties: BTreeMap<String, String>,
}

/// How the sidecar authenticates to the cluster and protects the connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl`.
    pub protocol: String,
    /// `none`, `aws_msk_iam` (SASL/OAUTHBEARER with a SigV4-signed token), `plain`,
    /// `scram-sha-256` or `scram-sha-512`.
    pub sasl_mechanism: String,
    /// For `plain` and `scram-*`.
    pub sasl_username: String,
    pub sasl_password: String,
    /// A PEM file of CA certificates; empty: the system's trusted roots.
    pub ca_file: String,
    /// A client certificate and its key (PEM), for clusters that want mutual TLS.
    pub client_cert_file: String,
    pub client_key_file: String,
    pub client_key_password: String,
    /// The AWS region of the MSK cluster (`aws_msk_iam`).
    pub aws_region: String,
    /// A named profile of the shared AWS config; empty: the standard chain.
    pub aws_profile: String,
    /// A role to assume with the chain's credentials; empty: use them directly.
    pub aws_role_arn: String,
    pub aws_role_session_name: String,
    /// How long one token signing may wait for credentials.
    #[serde(with = "humantime_serde")]
    pub token_timeout: Duration,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            protocol: "plaintext".into(),
            sasl_mechanism: "none".into(),
            sasl_username: String::new(),
            sasl_password: String::new(),
            ca_file: String::new(),
            client_cert_file: String::new(),
            client_key_file: String::new(),
            client_key_password: String::new(),
            aws_region: String::new(),
            aws_profile: String::new(),
            aws_role_arn: String::new(),
            aws_role_session_name: "edge-outbox".into(),
            token_timeout: Duration::from_secs(10),
        }
    }
}

impl SecurityConfig {
    pub fn uses_msk_iam(&self) -> bool {
        self.sasl_mechanism == "aws_msk_iam"
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let protocols = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"];
        if !protocols.contains(&self.protocol.as_str()) {
            return Err(bad(
                "kafka.security.protocol",
                format!("{:?} is not one of {}", self.protocol, protocols.join(", ")),
            ));
        }
        let mechanisms = [
            "none",
            "aws_msk_iam",
            "plain",
            "scram-sha-256",
            "scram-sha-512",
        ];
        if !mechanisms.contains(&self.sasl_mechanism.as_str()) {
            return Err(bad(
                "kafka.security.sasl_mechanism",
                format!(
                    "{:?} is not one of {}",
                    self.sasl_mechanism,
                    mechanisms.join(", ")
                ),
            ));
        }
        let sasl = self.protocol.starts_with("sasl_");
        if sasl != (self.sasl_mechanism != "none") {
            return Err(bad(
                "kafka.security.sasl_mechanism",
                "a sasl_* protocol needs a SASL mechanism, and a mechanism needs a sasl_* protocol",
            ));
        }
        if self.uses_msk_iam() {
            if self.aws_region.is_empty() {
                return Err(bad(
                    "kafka.security.aws_region",
                    "aws_msk_iam needs the cluster's region",
                ));
            }
            if self.protocol != "sasl_ssl" {
                return Err(bad(
                    "kafka.security.protocol",
                    "MSK IAM authentication needs sasl_ssl",
                ));
            }
        }
        if ["plain", "scram-sha-256", "scram-sha-512"].contains(&self.sasl_mechanism.as_str())
            && self.sasl_username.is_empty()
        {
            return Err(bad(
                "kafka.security.sasl_username",
                "the SASL mechanism needs a username",
            ));
        }
        if self.client_cert_file.is_empty() != self.client_key_file.is_empty() {
            return Err(bad(
                "kafka.security.client_key_file",
                "a client certificate and its key go together",
            ));
        }
        for (setting, path) in [
            ("kafka.security.ca_file", &self.ca_file),
            ("kafka.security.client_cert_file", &self.client_cert_file),
            ("kafka.security.client_key_file", &self.client_key_file),
        ] {
            if !path.is_empty() && !Path::new(path).is_file() {
                return Err(bad(setting, format!("{path} is not a readable file")));
            }
        }
        if self.token_timeout.is_zero() {
            return Err(bad(
                "kafka.security.token_timeout",
                "must be longer than zero",
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: String,
    /// A tracing filter such as `info` or `edge_outbox=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

/// The sidecar's own spans (see [`crate::telemetry`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The base URL of an OTLP/HTTP receiver (an OpenTelemetry Collector's `http://host:4318`);
    /// spans go to `/v1/traces` below it, as protobuf. Unset (the default): no spans are made.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the spans.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            otlp_endpoint: None,
            service_name: "edge-outbox".into(),
        }
    }
}

/// How often each event reaches Kafka.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// At least once: after a crash, up to two batches may be sent again.
    AtLeastOnce,
    /// Exactly once for `read_committed` consumers: one transaction per batch.
    ExactlyOnce,
}

/// A rate: a positive number per second, or unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Unlimited,
    PerSecond(u32),
}

impl Serialize for Limit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Limit::Unlimited => s.serialize_str("unlimited"),
            Limit::PerSecond(n) => s.serialize_u32(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Limit, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(0) => Err(serde::de::Error::custom(
                "a rate must be positive, or \"unlimited\"",
            )),
            Raw::Number(n) => Ok(Limit::PerSecond(n)),
            Raw::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

impl std::str::FromStr for Limit {
    type Err = String;
    fn from_str(s: &str) -> Result<Limit, String> {
        if s.eq_ignore_ascii_case("unlimited") {
            return Ok(Limit::Unlimited);
        }
        match s.parse::<u32>() {
            Ok(n) if n > 0 => Ok(Limit::PerSecond(n)),
            _ => Err(format!(
                "{s:?} is not a rate: give a positive number or \"unlimited\""
            )),
        }
    }
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: "127.0.0.1:8080".parse().expect("valid address"),
            ops_listen: None,
            admin: AdminConfig::default(),
            data_dir: PathBuf::from("./data"),
            ingest: IngestConfig::default(),
            store: crate::store::StoreConfig::default(),
            relay: RelayConfig::default(),
            kafka: KafkaConfig::default(),
            readiness: ReadinessConfig::default(),
            shutdown: ShutdownConfig::default(),
            log: LogConfig::default(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_event_bytes: 1024 * 1024,
            max_request_bytes: 16 * 1024 * 1024,
            allow_unknown_types: false,
            key_order: DEFAULT_KEY_ORDER.to_vec(),
            extra_types: Vec::new(),
            max_events_per_second_per_tenant: Limit::Unlimited,
        }
    }
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            flush_interval: Duration::from_secs(10),
            batch_max_events: 10_000,
            batch_max_bytes: 16 * 1024 * 1024,
            max_events_per_second: Limit::Unlimited,
            max_bytes_per_second: Limit::Unlimited,
            retry_backoff_min: Duration::from_millis(200),
            retry_backoff_max: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(120),
            pause_retry: Duration::from_secs(30),
            publish_summaries: true,
            summary_source: "edge-outbox".into(),
            mode: KafkaMode::Binary,
            fair_drain: true,
            delivery: Delivery::AtLeastOnce,
            transactional_id_prefix: "edge-outbox".into(),
            checkpoint_topic: "edge-outbox.checkpoints".into(),
        }
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: String::new(),
            client_id: "edge-outbox".into(),
            compression: "gzip".into(),
            // librdkafka's maximum: in effect, retry forever.
            delivery_timeout: Duration::from_millis(i32::MAX as u64),
            create_topics: false,
            topic_partitions: 3,
            topic_replication: -1,
            security: SecurityConfig::default(),
            properties: BTreeMap::new(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: "text".into(),
            level: "info".into(),
        }
    }
}

/// A configuration problem, naming the setting.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {setting}: {reason}")]
pub struct ConfigError {
    pub setting: String,
    pub reason: String,
}

fn bad(setting: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        setting: setting.into(),
        reason: reason.into(),
    }
}

impl Config {
    /// Parses TOML over the defaults.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| bad("file", e.to_string()))
    }
}

impl Config {
    /// Checks the settings that cannot be expressed by types; `need_brokers` for commands
    /// that talk to Kafka.
    pub fn validate(&self, need_brokers: bool) -> Result<(), ConfigError> {
        if need_brokers && self.kafka.brokers.trim().is_empty() {
            return Err(bad(
                "kafka.brokers",
                "no bootstrap servers: set --brokers, EDGE_OUTBOX_BROKERS or kafka.brokers (or use `edge-outbox dev`)",
            ));
        }
        if self.store.segment_bytes < 1024 * 1024 {
            return Err(bad(
                "store.segment_bytes",
                "must be at least 1 MiB (1048576), or every commit starts a new file",
            ));
        }
        for (name, share) in [
            (
                "store.max_backlog_events_per_tenant",
                self.store.max_backlog_events_per_tenant,
            ),
            (
                "store.max_backlog_bytes_per_tenant",
                self.store.max_backlog_bytes_per_tenant,
            ),
        ] {
            share.check().map_err(|reason| bad(name, reason))?;
        }
        if self.store.max_tracked_tenants == 0 {
            return Err(bad("store.max_tracked_tenants", "must be at least 1"));
        }
        if self.store.checkpoint_every.is_zero() {
            return Err(bad("store.checkpoint_every", "must be longer than zero"));
        }
        if self.store.commit_delay > Duration::from_millis(100) {
            // Every request may wait this long: beyond it the answer is late for no gain.
            return Err(bad("store.commit_delay", "must be at most 100ms"));
        }
        if self.relay.flush_interval.is_zero() {
            return Err(bad("relay.flush_interval", "must be longer than zero"));
        }
        if self.relay.batch_max_events == 0 {
            return Err(bad("relay.batch_max_events", "must be at least 1"));
        }
        if self.relay.batch_max_bytes < self.ingest.max_event_bytes as u64 {
            return Err(bad(
                "relay.batch_max_bytes",
                "must be at least ingest.max_event_bytes, or the largest event never fits a batch",
            ));
        }
        if self.relay.delivery == Delivery::ExactlyOnce {
            self.check_exactly_once()?;
        }
        if self.ingest.max_event_bytes == 0 || self.ingest.max_request_bytes == 0 {
            return Err(bad("ingest", "size limits must be positive"));
        }
        if self.ingest.key_order.is_empty() {
            return Err(bad("ingest.key_order", "name at least one key source"));
        }
        if self.relay.retry_backoff_min.is_zero()
            || self.relay.retry_backoff_max < self.relay.retry_backoff_min
        {
            return Err(bad(
                "relay.retry_backoff_min",
                "must be positive and not above relay.retry_backoff_max",
            ));
        }
        if self.relay.stall_timeout < Duration::from_secs(1) {
            return Err(bad(
                "relay.stall_timeout",
                "must be at least 1s: a busy broker can take that long to answer",
            ));
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&self.kafka.compression.as_str()) {
            return Err(bad(
                "kafka.compression",
                format!(
                    "{:?} is not one of none, gzip, snappy, lz4, zstd",
                    self.kafka.compression
                ),
            ));
        }
        self.kafka.security.validate()?;
        let timeout = self.kafka.delivery_timeout.as_millis();
        if timeout == 0 || timeout > i32::MAX as u128 {
            return Err(bad(
                "kafka.delivery_timeout",
                "must be between 1ms and 2147483647ms (about 24 days)",
            ));
        }
        if self.kafka.topic_partitions < 1 {
            return Err(bad("kafka.topic_partitions", "must be at least 1"));
        }
        if self.kafka.topic_replication < -1 || self.kafka.topic_replication == 0 {
            return Err(bad(
                "kafka.topic_replication",
                "must be -1 (the cluster default) or at least 1",
            ));
        }
        if !self.listen.ip().is_loopback() && self.admin.token_file.is_none() {
            return Err(bad(
                "admin.token_file",
                format!(
                    "listen is {}, not a loopback address: the dead-letter routes (replay, purge) \
                     would be open to every pod of the cluster; set admin.token_file, or keep \
                     listen on 127.0.0.1 and use ops_listen for metrics and probes",
                    self.listen
                ),
            ));
        }
        self.admin.token()?;
        if self.ops_listen.is_some_and(|ops| ops == self.listen) {
            return Err(bad("ops_listen", "must differ from listen"));
        }
        if self.shutdown.intake_grace > self.shutdown.drain_timeout {
            return Err(bad(
                "shutdown.intake_grace",
                "must not be longer than shutdown.drain_timeout (intake would outlive the drain)",
            ));
        }
        if let Some(endpoint) = &self.telemetry.otlp_endpoint {
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(bad(
                    "telemetry.otlp_endpoint",
                    format!(
                        "{endpoint:?} is not an http:// or https:// URL of an OTLP/HTTP receiver"
                    ),
                ));
            }
        }
        if !["text", "json"].contains(&self.log.format.as_str()) {
            return Err(bad("log.format", "must be \"text\" or \"json\""));
        }
        for entry in &self.ingest.extra_types {
            if entry.event_type.is_empty() || entry.topic.is_empty() {
                return Err(bad(
                    "ingest.extra_types",
                    "every entry needs a type and a topic",
                ));
            }
        }
        Ok(())
    }

    /// The store's configuration: the `[store]` section in `data_dir`.
    pub fn store_config(&self) -> crate::store::StoreConfig {
        crate::store::StoreConfig {
            dir: self.data_dir.clone(),
            ..self.store.clone()
        }
    }

    /// The largest event ingest accepts, and what sets it: `ingest.max_event_bytes`, or less
    /// when the producer would refuse such a message (its `message.max.bytes`, librdkafka's
    /// default 1,000,000, less [`RECORD_OVERHEAD_BYTES`]). An event above it would be answered
    /// 202 and then parked for ever.
    pub fn event_limit(&self) -> (usize, String) {
        let message_max = self
            .kafka
            .properties
            .get("message.max.bytes")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES);
        let producer_limit = message_max.saturating_sub(RECORD_OVERHEAD_BYTES);
        if producer_limit < self.ingest.max_event_bytes {
            (
                producer_limit,
                format!(
                    "the producer's message.max.bytes ({message_max}) less {RECORD_OVERHEAD_BYTES} \
                     bytes of record overhead; ingest.max_event_bytes is {}",
                    self.ingest.max_event_bytes
                ),
            )
        } else {
            (self.ingest.max_event_bytes, "ingest.max_event_bytes".into())
        }
    }

    /// The effective configuration as TOML, with secret-looking values redacted.
    pub fn redacted_toml(&self) -> String {
        let mut copy = self.clone();
        let security = &mut copy.kafka.security;
        for secret in [
            &mut security.sasl_password,
            &mut security.client_key_password,
        ] {
            if !secret.is_empty() {
                *secret = "<redacted>".into();
            }
        }
        for (key, value) in copy.kafka.properties.iter_mut() {
            if is_secret_key(key) {
                *value = "<redacted>".into();
            }
        }
        toml::to_string_pretty(&copy).unwrap_or_default()
    }
}

/// Whether a librdkafka property holds a secret (passwords, keys, tokens).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "key.pem",
        "private",
        "sasl.oauthbearer.config",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// Parses durations like `10s`, `250ms`, `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?} is not a duration ({e})"))
}

impl Config {
    /// The settings of `relay.delivery = "exactly-once"`: names Kafka accepts, and no
    /// `kafka.properties` that would undo the transactional producer.
    fn check_exactly_once(&self) -> Result<(), ConfigError> {
        let legal = |name: &str| {
            !name.is_empty()
                && name.len() <= 200
                && (name.chars()).all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        };
        if !legal(&self.relay.transactional_id_prefix) {
            return Err(bad(
                "relay.transactional_id_prefix",
                "must be 1 to 200 characters of letters, digits, '.', '_' and '-'",
            ));
        }
        if !legal(&self.relay.checkpoint_topic) || self.relay.checkpoint_topic.len() > 249 {
            return Err(bad(
                "relay.checkpoint_topic",
                "must be a Kafka topic name: letters, digits, '.', '_' and '-'",
            ));
        }
        for (key, refused) in [
            ("transactional.id", None),
            ("enable.idempotence", Some("true")),
        ] {
            match (self.kafka.properties.get(key), refused) {
                (Some(_), None) => {
                    return Err(bad(
                        "kafka.properties",
                        format!(
                            "{key} is set from relay.transactional_id_prefix and the store's \
                             instance id in exactly-once mode; remove it"
                        ),
                    ))
                }
                (Some(value), Some(required)) if value != required => {
                    return Err(bad(
                        "kafka.properties",
                        format!("{key} = {value:?}: exactly-once needs the idempotent producer"),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_loopback() {
        let config = Config::default();
        assert!(config.listen.ip().is_loopback());
        assert_eq!(config.relay.flush_interval, Duration::from_secs(10));
        config.validate(false).unwrap();
        let err = config.validate(true).unwrap_err();
        assert_eq!(err.setting, "kafka.brokers");
    }

    #[test]
    fn a_file_overrides_the_defaults_it_names_and_keeps_the_rest() {
        let config = Config::from_toml(
            r#"
            listen = "127.0.0.2:9090"
            [relay]
            flush_interval = "250ms"
            max_events_per_second = 500
            max_bytes_per_second = "unlimited"
            [kafka]
            brokers = "b1:9092,b2:9092"
            properties = { "sasl.password" = "hunter2", "linger.ms" = "5" }
            [[ingest.extra_types]]
            type = "com.example.v1"
            topic = "example"
            category = "Custom"
            "#,
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9090);
        assert_eq!(config.relay.flush_interval, Duration::from_millis(250));
        assert_eq!(config.relay.max_events_per_second, Limit::PerSecond(500));
        assert_eq!(config.relay.max_bytes_per_second, Limit::Unlimited);
        assert_eq!(config.ingest.extra_types.len(), 1);
        config.validate(true).unwrap();
        let shown = config.redacted_toml();
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("<redacted>"));
        assert!(shown.contains("linger.ms"));
    }

    #[test]
    fn the_store_section_sets_every_store_setting_and_the_directory_comes_from_data_dir() {
        let config = Config::from_toml(
            "data_dir = \"/var/lib/outbox\"\n[store]\nsegment_bytes = 2097152\n\
             checkpoint_every = \"1s\"\nmax_backlog_events = 7",
        )
        .unwrap();
        let store = config.store_config();
        assert_eq!(store.dir, PathBuf::from("/var/lib/outbox"));
        assert_eq!(store.segment_bytes, 2 * 1024 * 1024);
        assert_eq!(store.checkpoint_every, Duration::from_secs(1));
        assert_eq!(store.max_backlog_events, 7);
        let defaults = crate::store::StoreConfig::new("x");
        assert_eq!(store.max_disk_bytes, defaults.max_disk_bytes);
        assert!(Config::from_toml("[store]\ndir = \"/elsewhere\"").is_err());
        for (setting, toml) in [
            ("store.segment_bytes", "[store]\nsegment_bytes = 4096"),
            (
                "store.checkpoint_every",
                "[store]\ncheckpoint_every = \"0s\"",
            ),
            ("store.commit_delay", "[store]\ncommit_delay = \"1s\""),
        ] {
            let config = Config::from_toml(toml).unwrap();
            assert_eq!(config.validate(false).unwrap_err().setting, setting);
        }
    }

    #[test]
    fn errors_name_the_setting() {
        let err = Config::from_toml("[relay]\nflush_intervl = \"1s\"").unwrap_err();
        assert!(err.reason.contains("flush_intervl"), "{err}");
        let err = Config::from_toml("[relay]\nmax_events_per_second = 0").unwrap_err();
        assert!(err.reason.contains("positive"), "{err}");
        let mut config = Config::default();
        config.kafka.compression = "brotli".into();
        assert_eq!(
            config.validate(false).unwrap_err().setting,
            "kafka.compression"
        );
        let mut config = Config::default();
        config.relay.flush_interval = Duration::ZERO;
        assert_eq!(
            config.validate(false).unwrap_err().setting,
            "relay.flush_interval"
        );
        let mut config = Config::default();
        config.relay.batch_max_bytes = 10;
        assert_eq!(
            config.validate(false).unwrap_err().setting,
            "relay.batch_max_bytes"
        );
        let mut config = Config::default();
        config.relay.stall_timeout = Duration::from_millis(500);
        assert_eq!(
            config.validate(false).unwrap_err().setting,
            "relay.stall_timeout"
        );
    }

    #[test]
    fn durations_and_rate_limits_parse_from_their_text_forms() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10s").unwrap(), Duration::from_secs(10));
        assert!(parse_duration("soon").is_err());
        assert_eq!("unlimited".parse::<Limit>().unwrap(), Limit::Unlimited);
        assert!("0".parse::<Limit>().is_err());
    }
}
