//! Building librdkafka clients from the configuration: the idempotent producer and the admin
//! client (with TLS, SASL and MSK IAM and the context that watches their errors), topic
//! creation, the embedded development broker (librdkafka's mock cluster) and the Java
//! client's partitioner (murmur2). What the relay does with the producer is in
//! `relay/service.rs`.

use crate::broker_health::BrokerHealth;
use crate::config::{is_secret_key, KafkaConfig, SecurityConfig};
use crate::msk_iam::TokenSource;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, OAuthToken};
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{DefaultProducerContext, FutureProducer};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The producer type of the sidecar.
pub type Producer = FutureProducer<KafkaContext>;

/// The context of every client of the sidecar's cluster: signs MSK IAM tokens when librdkafka
/// asks for one (on librdkafka's own thread), and remembers the last client-level errors so
/// that `check-config --connect` can say what failed.
#[derive(Clone, Default)]
pub struct KafkaContext {
    tokens: Option<Arc<TokenSource>>,
    errors: Arc<Mutex<Vec<String>>>,
    /// Reachability and authentication as the client errors tell; logs them once, then
    /// summarised.
    health: Arc<BrokerHealth>,
}

impl KafkaContext {
    pub fn new(tokens: Option<Arc<TokenSource>>) -> KafkaContext {
        KafkaContext::with_health(tokens, Arc::default())
    }

    /// A context whose client errors feed a health shared with other clients (the relay's
    /// successive producers, `/v1/status`).
    pub fn with_health(
        tokens: Option<Arc<TokenSource>>,
        health: Arc<BrokerHealth>,
    ) -> KafkaContext {
        KafkaContext {
            tokens,
            errors: Arc::default(),
            health,
        }
    }

    fn remember(&self, error: String) {
        let mut errors = self.errors.lock().expect("lock");
        if errors.len() < 100 {
            errors.push(error);
        }
    }

    /// Client-level errors and warnings seen so far (transport, TLS, SASL), oldest first.
    pub fn errors(&self) -> Vec<String> {
        self.errors.lock().expect("lock").clone()
    }
}

impl ClientContext for KafkaContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                // The same failure reaches `error` below, which logs it (once, then summarised).
                tracing::debug!(target: "librdkafka", "librdkafka: {facility} {message}");
                self.remember(format!("{facility} {message}"));
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", "librdkafka: {facility} {message}");
                self.remember(format!("{facility} {message}"));
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "librdkafka: {facility} {message}")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", "librdkafka: {facility} {message}")
            }
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            // A consumer with enable.partition.eof (the checkpoints' reader) at the end.
            return;
        }
        self.health.error(&error, reason);
        self.remember(format!("{error}: {reason}"));
    }

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<OAuthToken, Box<dyn std::error::Error>> {
        let source = self.tokens.as_ref().ok_or(
            "SASL/OAUTHBEARER is only supported as kafka.security.sasl_mechanism = aws_msk_iam",
        )?;
        let token = source.token()?;
        Ok(OAuthToken {
            token: token.token,
            // MSK takes the identity from the signature; librdkafka wants a name all the same.
            principal_name: "edge-outbox".into(),
            lifetime_ms: token.expiry_ms,
        })
    }
}

/// `tail`'s consumer uses the same context (its default rebalance handling).
impl rdkafka::consumer::ConsumerContext for KafkaContext {}

/// The librdkafka properties of the producer: idempotent, `acks=all`, the Java client's
/// partitioner, then the user's own properties (which may override any of these).
pub fn producer_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("compression.type", &config.compression)
        .set(
            "delivery.timeout.ms",
            config.delivery_timeout.as_millis().to_string(),
        )
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "200000")
        .set("queue.buffering.max.kbytes", "262144");
    // Connection settings last, so that the user's properties override the defaults above.
    // Applied directly: `ClientConfig::config_map` hands out passwords as
    // "[sanitized for safety]", so copying through it sent that as the SASL password.
    connection_settings(config, &mut client);
    client
}

/// The headers of a stored message in librdkafka's form.
pub fn owned_headers<N: AsRef<str>, V: AsRef<[u8]>>(headers: &[(N, V)]) -> OwnedHeaders {
    headers.iter().fold(
        OwnedHeaders::new_with_capacity(headers.len()),
        |all, (name, value)| {
            all.insert(Header {
                key: name.as_ref(),
                value: Some(value.as_ref()),
            })
        },
    )
}

/// Creates the producer; `tokens` signs MSK IAM tokens when the configuration asks for them.
pub fn create_producer(
    config: &KafkaConfig,
    tokens: Option<Arc<TokenSource>>,
) -> Result<Producer, KafkaError> {
    create_producer_with(config, KafkaContext::new(tokens))
}

/// librdkafka's default `transaction.timeout.ms`.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// `transaction.timeout.ms` of `config`'s producer.
pub fn transaction_timeout(config: &KafkaConfig) -> Duration {
    (config.properties.get("transaction.timeout.ms"))
        .and_then(|ms| ms.parse().ok())
        .map_or(TRANSACTION_TIMEOUT, Duration::from_millis)
}

/// `config` for a transactional producer with `transactional_id`. A transaction the
/// coordinator times out (`transaction.timeout.ms`, librdkafka's default 60 s unless set in
/// `kafka.properties`) ends with the producer fenced: `kafka.delivery_timeout` is cut to half of
/// it, so that a message the cluster does not take aborts its transaction well before that.
pub fn transactional(mut config: KafkaConfig, transactional_id: &str) -> KafkaConfig {
    config.delivery_timeout = config
        .delivery_timeout
        .min(transaction_timeout(&config) / 2);
    config
        .properties
        .insert("transactional.id".into(), transactional_id.into());
    config
}

/// Creates the producer with a given context (whose error list the caller keeps).
pub fn create_producer_with(
    config: &KafkaConfig,
    context: KafkaContext,
) -> Result<Producer, KafkaError> {
    let properties: Vec<String> = config
        .properties
        .iter()
        .map(|(k, v)| {
            if is_secret_key(k) {
                format!("{k}=<redacted>")
            } else {
                format!("{k}={v}")
            }
        })
        .collect();
    tracing::info!(
        brokers = %config.brokers,
        protocol = %config.security.protocol,
        sasl = %config.security.sasl_mechanism,
        extra = ?properties,
        "creating the Kafka producer"
    );
    producer_config(config).create_with_context(context)
}

/// What happened to one topic of a [`create_topics`] call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TopicOutcome {
    Created,
    /// The topic was there already and was left alone.
    Exists,
    Failed(String),
}

/// Client settings shared by every client of the sidecar's cluster (connection, TLS, SASL).
/// The connection settings every client of the cluster shares (brokers, TLS, SASL, the
/// user's properties): the producer's, the admin client's and `tail`'s consumer's.
pub fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    connection_settings(config, &mut client);
    client
}

/// Sets [`client_config`]'s settings on `client`.
fn connection_settings(config: &KafkaConfig, client: &mut ClientConfig) {
    client
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", &config.client_id);
    // Warnings and errors always reach the context (which keeps them for `check-config
    // --connect`), whatever the log filter prints.
    client.set_log_level(
        if tracing::enabled!(target: "librdkafka", tracing::Level::DEBUG) {
            RDKafkaLogLevel::Debug
        } else if tracing::enabled!(target: "librdkafka", tracing::Level::INFO) {
            RDKafkaLogLevel::Info
        } else {
            RDKafkaLogLevel::Warning
        },
    );
    security_properties(&config.security, client);
    for (key, value) in &config.properties {
        client.set(key, value);
    }
}

/// The librdkafka properties for TLS and SASL.
fn security_properties(security: &SecurityConfig, client: &mut ClientConfig) {
    client.set("security.protocol", &security.protocol);
    if security.protocol.ends_with("ssl") {
        if security.ca_file.is_empty() {
            // The system's trusted roots, wherever this distribution keeps them.
            client.set("ssl.ca.location", "probe");
        } else {
            client.set("ssl.ca.location", &security.ca_file);
        }
        if !security.client_cert_file.is_empty() {
            client
                .set("ssl.certificate.location", &security.client_cert_file)
                .set("ssl.key.location", &security.client_key_file);
            if !security.client_key_password.is_empty() {
                client.set("ssl.key.password", &security.client_key_password);
            }
        }
    }
    let mechanism = match security.sasl_mechanism.as_str() {
        "aws_msk_iam" => "OAUTHBEARER",
        "plain" => "PLAIN",
        "scram-sha-256" => "SCRAM-SHA-256",
        "scram-sha-512" => "SCRAM-SHA-512",
        _ => return,
    };
    client.set("sasl.mechanism", mechanism);
    if mechanism != "OAUTHBEARER" {
        client
            .set("sasl.username", &security.sasl_username)
            .set("sasl.password", &security.sasl_password);
    }
}

/// The token source for MSK IAM, when the configuration uses it: the AWS SDK's credential
/// chain for the configured region, profile and role.
pub async fn token_source(
    security: &SecurityConfig,
    status: Arc<crate::msk_iam::AuthStatus>,
) -> Option<Arc<TokenSource>> {
    if !security.uses_msk_iam() {
        return None;
    }
    let non_empty = |s: &String| (!s.is_empty()).then(|| s.clone());
    let credentials = crate::msk_iam::sdk_credentials(
        &security.aws_region,
        non_empty(&security.aws_profile).as_deref(),
        non_empty(&security.aws_role_arn).as_deref(),
        &security.aws_role_session_name,
    )
    .await;
    Some(Arc::new(TokenSource {
        region: security.aws_region.clone(),
        credentials: Arc::new(credentials),
        runtime: tokio::runtime::Handle::current(),
        timeout: security.token_timeout,
        status,
        user_agent: concat!("edge-outbox/", env!("CARGO_PKG_VERSION")).into(),
    }))
}

/// Creates the `topics` that do not exist yet through the Kafka admin API; existing topics are
/// left alone. `replication` -1 means the cluster's default (what MSK Serverless needs).
pub async fn create_topics(
    config: &KafkaConfig,
    tokens: Option<Arc<TokenSource>>,
    topics: &[String],
    partitions: i32,
    replication: i32,
) -> Result<Vec<(String, TopicOutcome)>, KafkaError> {
    create_topics_with(config, tokens, topics, partitions, replication, &[]).await
}

/// The exactly-once relay's checkpoint topic, created if missing: compacted (the last
/// checkpoint of each store is what counts), one partition.
pub async fn create_checkpoint_topic(
    config: &KafkaConfig,
    tokens: Option<Arc<TokenSource>>,
    topic: &str,
    replication: i32,
) -> Result<Vec<(String, TopicOutcome)>, KafkaError> {
    let compacted = [("cleanup.policy", "compact")];
    create_topics_with(
        config,
        tokens,
        &[topic.to_string()],
        1,
        replication,
        &compacted,
    )
    .await
}

/// [`create_topics`], with the topic `configs` set on the topics it creates.
pub async fn create_topics_with(
    config: &KafkaConfig,
    tokens: Option<Arc<TokenSource>>,
    topics: &[String],
    partitions: i32,
    replication: i32,
    configs: &[(&str, &str)],
) -> Result<Vec<(String, TopicOutcome)>, KafkaError> {
    let admin: Arc<AdminClient<KafkaContext>> =
        Arc::new(client_config(config).create_with_context(KafkaContext::new(tokens))?);
    // Topics the cluster has are not asked for again: a cluster that cannot create topics
    // (the embedded dev broker, which has the catalogue already) then answers at once.
    let existing: std::collections::BTreeSet<String> = {
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || {
            admin.inner().fetch_metadata(None, Duration::from_secs(15))
        })
        .await
        .expect("the metadata task does not panic")?
        .topics()
        .iter()
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.name().to_string())
        .collect()
    };
    let mut outcomes: Vec<(String, TopicOutcome)> = topics
        .iter()
        .filter(|t| existing.contains(*t))
        .map(|t| (t.clone(), TopicOutcome::Exists))
        .collect();
    let new_topics: Vec<NewTopic> = topics
        .iter()
        .filter(|t| !existing.contains(*t))
        .map(|t| {
            let topic = NewTopic::new(t, partitions, TopicReplication::Fixed(replication));
            configs
                .iter()
                .fold(topic, |topic, (key, value)| topic.set(key, value))
        })
        .collect();
    if new_topics.is_empty() {
        return Ok(outcomes);
    }
    let options = AdminOptions::new()
        .operation_timeout(Some(std::time::Duration::from_secs(30)))
        .request_timeout(Some(std::time::Duration::from_secs(30)));
    let results = admin.create_topics(&new_topics, &options).await?;
    outcomes.extend(results.into_iter().map(|result| match result {
        Ok(topic) => (topic, TopicOutcome::Created),
        Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => (topic, TopicOutcome::Exists),
        Err((topic, code)) => (topic, TopicOutcome::Failed(code.to_string())),
    }));
    // In the order asked for.
    outcomes.sort_by_key(|(topic, _)| topics.iter().position(|t| t == topic));
    Ok(outcomes)
}

/// The embedded development broker: librdkafka's in-process mock cluster with the given topics
/// created. It speaks the Kafka protocol on loopback, so any Kafka client can consume from it.
/// It lives as long as this value.
pub struct DevBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl DevBroker {
    /// Starts a mock cluster of `brokers` brokers with `topics`, each with `partitions`.
    pub fn start(
        brokers: i32,
        topics: &[String],
        partitions: i32,
    ) -> Result<DevBroker, KafkaError> {
        let cluster = MockCluster::new(brokers)?;
        for topic in topics {
            cluster.create_topic(topic, partitions, brokers.min(3))?;
        }
        Ok(DevBroker { cluster })
    }

    /// The bootstrap address, for example `127.0.0.1:41234`.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// The mock cluster itself, for fault injection in tests.
    pub fn cluster(&self) -> &MockCluster<'static, DefaultProducerContext> {
        &self.cluster
    }
}

/// The Java client's murmur2 partitioner (`Utils.toPositive(Utils.murmur2(key)) % n`), which
/// librdkafka's `murmur2_random` matches for non-empty keys.
pub fn murmur2_partition(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions
}

fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = SEED ^ length as u32;
    let chunks = data.chunks_exact(4);
    let tail = chunks.remainder();
    for chunk in chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    match tail.len() {
        3 => {
            h ^= (tail[2] as u32) << 16;
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_producer_gets_the_real_secrets_not_their_sanitized_stand_ins() {
        let mut config = KafkaConfig::default();
        config.security.protocol = "sasl_ssl".into();
        config.security.sasl_mechanism = "scram-sha-512".into();
        config.security.sasl_username = "outbox".into();
        config.security.sasl_password = "the-real-password".into();
        config.security.client_key_password = "the-key-password".into();
        config.security.client_cert_file = "client.crt".into();
        config.security.client_key_file = "client.key".into();
        let producer = producer_config(&config);
        assert_eq!(producer.get("sasl.password"), Some("the-real-password"));
        assert_eq!(producer.get("ssl.key.password"), Some("the-key-password"));
        assert_eq!(producer.get("enable.idempotence"), Some("true"));
    }

    #[test]
    fn murmur2_matches_the_java_client() {
        // Vectors from Kafka's own partitioner tests (org.apache.kafka.common.utils.UtilsTest).
        assert_eq!(murmur2(b"21") as i32, -973932308);
        assert_eq!(murmur2(b"foobar") as i32, -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string") as i32, -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58897971
        );
        assert_eq!(murmur2(b"abc") as i32, 479470107);
    }
}
