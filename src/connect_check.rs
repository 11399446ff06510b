//! `check-config --connect`: tries the configured cluster one step at a time (name resolution,
//! TCP, AWS credentials for MSK IAM, then TLS and authentication through a metadata request, the
//! catalogue's topics, and in exactly-once mode the checkpoint topic and the right to use
//! transactions) and reports exactly which step failed and why, so that a deployment problem is
//! found before the first event waits for it.

use crate::catalog::Catalog;
use crate::config::{Config, Delivery};
use crate::kafka_client::{client_config, create_producer_with, token_source, KafkaContext};
use crate::msk_iam::AuthStatus;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::producer::{FutureRecord, Producer as _};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::Arc;
use std::time::Duration;

/// One step of the check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// The steps taken, in order; the check stops at the first failure.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    pub steps: Vec<Step>,
}

impl Report {
    fn pass(&mut self, name: &'static str, detail: impl Into<String>) {
        self.steps.push(Step {
            name,
            ok: true,
            detail: detail.into(),
        });
    }

    /// Records the failed step; the check ends with it.
    fn fail(mut self, name: &'static str, detail: impl Into<String>) -> Report {
        self.steps.push(Step {
            name,
            ok: false,
            detail: detail.into(),
        });
        self
    }

    pub fn ok(&self) -> bool {
        self.steps.iter().all(|s| s.ok)
    }

    /// `step: detail` of the failed step.
    pub fn failure(&self) -> Option<String> {
        self.steps
            .iter()
            .find(|s| !s.ok)
            .map(|s| format!("{}: {}", s.name, s.detail))
    }

    pub fn render(&self) -> String {
        self.steps
            .iter()
            .map(|s| {
                format!(
                    "{:<5} {:<14} {}\n",
                    if s.ok { "ok" } else { "FAIL" },
                    s.name,
                    s.detail
                )
            })
            .collect()
    }
}

/// Runs the check against `config`'s cluster.
pub async fn run(config: &Config, timeout: Duration) -> Report {
    let mut report = Report::default();
    let brokers: Vec<String> = config
        .kafka
        .brokers
        .split(',')
        .map(|b| b.trim().to_string())
        .filter(|b| !b.is_empty())
        .collect();
    let mut addresses = Vec::new();
    for broker in &brokers {
        let broker = broker.rsplit("://").next().unwrap_or(broker).to_string();
        let lookup = tokio::time::timeout(timeout, tokio::net::lookup_host(broker.clone())).await;
        match lookup {
            Ok(Ok(mut found)) => match found.next() {
                Some(addr) => {
                    report.pass("dns", format!("{broker} -> {}", addr.ip()));
                    addresses.push((broker, addr));
                }
                None => return report.fail("dns", format!("{broker}: no address")),
            },
            Ok(Err(e)) => return report.fail("dns", format!("cannot resolve {broker}: {e}")),
            Err(_) => return report.fail("dns", format!("resolving {broker} timed out")),
        }
    }
    for (broker, addr) in &addresses {
        match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => report.pass("tcp", format!("{broker} accepts connections")),
            Ok(Err(e)) => {
                return report.fail("tcp", format!("cannot connect to {broker} ({addr}): {e}"))
            }
            Err(_) => {
                return report.fail("tcp", format!("connecting to {broker} ({addr}) timed out"))
            }
        }
    }
    let security = &config.kafka.security;
    let status = Arc::new(AuthStatus::default());
    let tokens = token_source(security, status.clone()).await;
    if let Some(source) = &tokens {
        let source = source.clone();
        match tokio::task::spawn_blocking(move || source.token()).await {
            Ok(Ok(token)) => report.pass(
                "credentials",
                format!(
                    "signed an MSK IAM token for {} (valid {}s)",
                    security.aws_region,
                    (token.expiry_ms - crate::clock::now_ms() as i64) / 1000
                ),
            ),
            Ok(Err(e)) => return report.fail("credentials", e),
            Err(e) => return report.fail("credentials", e.to_string()),
        }
    }
    let context = KafkaContext::new(tokens);
    let producer = match create_producer_with(&config.kafka, context.clone()) {
        Ok(p) => p,
        Err(e) => return report.fail("client", e.to_string()),
    };
    let client = producer.clone();
    let metadata =
        tokio::task::spawn_blocking(move || client.client().fetch_metadata(None, timeout)).await;
    let metadata = match metadata {
        Ok(Ok(metadata)) => metadata,
        Ok(Err(e)) => {
            // librdkafka hands its errors to the client's polling thread: give them a moment.
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while context.errors().is_empty() && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // The same error comes once per broker and retry: say each one once, the first few.
            let mut errors = context.errors();
            let mut seen = std::collections::HashSet::new();
            errors.retain(|e| seen.insert(e.clone()));
            errors.truncate(3);
            let errors = errors.join("; ");
            let (step, what) = classify_connect_error(&errors, security.protocol.ends_with("ssl"));
            return report.fail(step, format!("{what}: {e}; {errors}"));
        }
        Err(e) => return report.fail("metadata", e.to_string()),
    };
    if security.protocol.ends_with("ssl") {
        report.pass("tls", "handshake completed");
    }
    if security.protocol.starts_with("sasl_") {
        report.pass(
            "authentication",
            format!("accepted ({})", security.sasl_mechanism),
        );
    }
    report.pass(
        "metadata",
        format!(
            "{} brokers, {} topics visible",
            metadata.brokers().len(),
            metadata.topics().len()
        ),
    );
    let catalog = Catalog::with_extra(&config.ingest.extra_types);
    let mut missing = Vec::new();
    let mut denied = Vec::new();
    for topic in catalog.topics() {
        match metadata.topics().iter().find(|t| t.name() == topic) {
            None => missing.push(topic),
            Some(t) => match t.error() {
                Some(e)
                    if rdkafka::types::RDKafkaErrorCode::from(e)
                        == rdkafka::types::RDKafkaErrorCode::TopicAuthorizationFailed =>
                {
                    denied.push(topic)
                }
                Some(_) => missing.push(topic),
                None => {}
            },
        }
    }
    if !denied.is_empty() {
        return report.fail(
            "authorization",
            format!(
                "not allowed to use {} topics: {}",
                denied.len(),
                denied.join(", ")
            ),
        );
    }
    if !missing.is_empty() {
        return report.fail(
            "topics",
            format!(
                "{} of {} catalogue topics missing: {} (create them with `edge-outbox topics create`)",
                missing.len(),
                catalog.topics().len(),
                missing.join(", ")
            ),
        );
    }
    report.pass(
        "topics",
        format!("all {} catalogue topics exist", catalog.topics().len()),
    );
    if config.relay.delivery == Delivery::ExactlyOnce {
        return check_exactly_once(report, config, &metadata, context, timeout).await;
    }
    report
}

/// Exactly-once's two needs: the checkpoint topic (present, readable, compacted) and the
/// right to use transactions, proved by a transaction of a probe transactional id of our
/// prefix that writes to the checkpoint topic and is aborted (invisible to `read_committed`
/// readers, and keyed apart from every store's checkpoints).
async fn check_exactly_once(
    mut report: Report,
    config: &Config,
    metadata: &rdkafka::metadata::Metadata,
    context: KafkaContext,
    timeout: Duration,
) -> Report {
    let topic = config.relay.checkpoint_topic.clone();
    let found = metadata.topics().iter().find(|t| t.name() == topic);
    match found.map(|t| (t.error(), t.partitions().len())) {
        Some((None, partitions)) if partitions > 0 => {}
        Some((Some(e), _))
            if RDKafkaErrorCode::from(e) == RDKafkaErrorCode::TopicAuthorizationFailed =>
        {
            return report.fail(
                "checkpoints",
                format!("not allowed to use the checkpoint topic {topic}"),
            )
        }
        _ => {
            return report.fail(
                "checkpoints",
                format!(
                    "the checkpoint topic {topic} is missing (create it with \
                     `edge-outbox topics create` in exactly-once mode)"
                ),
            )
        }
    }
    let admin: AdminClient<KafkaContext> =
        match client_config(&config.kafka).create_with_context(context.clone()) {
            Ok(admin) => admin,
            Err(e) => return report.fail("checkpoints", e.to_string()),
        };
    let options = AdminOptions::new().request_timeout(Some(timeout));
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(&topic)], &options)
        .await;
    let policy = match described.as_deref() {
        Ok([Ok(resource)]) => resource
            .get("cleanup.policy")
            .and_then(|entry| entry.value.clone()),
        Ok(_) => None,
        Err(e) => {
            return report.fail(
                "checkpoints",
                format!("cannot read the configuration of {topic}: {e}"),
            )
        }
    };
    if !policy.as_deref().is_some_and(|p| p.contains("compact")) {
        return report.fail(
            "checkpoints",
            format!(
                "{topic} has cleanup.policy={}: it must be compacted, or retention can delete \
                 the checkpoint of a store that was down longer than it (its events would then \
                 be sent twice)",
                policy.unwrap_or_else(|| "?".into())
            ),
        );
    }
    report.pass("checkpoints", format!("{topic} exists and is compacted"));
    let transactional_id = format!("{}-check-config", config.relay.transactional_id_prefix);
    let kafka = crate::kafka_client::transactional(config.kafka.clone(), &transactional_id);
    let producer = match create_producer_with(&kafka, context) {
        Ok(producer) => producer,
        Err(e) => return report.fail("transactions", e.to_string()),
    };
    let probe = topic.clone();
    let tried = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let step = |what: &str, e: rdkafka::error::KafkaError| format!("{what}: {e}");
        (producer.init_transactions(timeout)).map_err(|e| step("init_transactions", e))?;
        (producer.begin_transaction()).map_err(|e| step("begin_transaction", e))?;
        let record = FutureRecord::to(&probe)
            .key("edge-outbox check-config")
            .payload("");
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| step("producing to the checkpoint topic", e))?;
        match futures::executor::block_on(delivery) {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(step("producing to the checkpoint topic", e)),
            Err(_) => return Err("producing to the checkpoint topic: cancelled".into()),
        }
        (producer.abort_transaction(timeout)).map_err(|e| step("abort_transaction", e))
    })
    .await;
    match tried {
        Ok(Ok(())) => report.pass(
            "transactions",
            format!("ran and aborted a transaction as {transactional_id}, writing to {topic}"),
        ),
        Ok(Err(e)) => {
            return report.fail(
                "transactions",
                format!(
                    "{e} (the principal needs Write and Describe on transactional ids \
                     {}-*, and Write on {topic})",
                    config.relay.transactional_id_prefix
                ),
            )
        }
        Err(e) => return report.fail("transactions", e.to_string()),
    }
    report
}

/// Which step a failed metadata request points at, from librdkafka's client errors.
fn classify_connect_error(errors: &str, tls: bool) -> (&'static str, &'static str) {
    let lower = errors.to_ascii_lowercase();
    // Broker names read `sasl_ssl://host:port`: look for what failed, not for the protocol.
    if tls
        && ["ssl handshake", "ssl routines", "certificate", "tls"]
            .iter()
            .any(|m| lower.contains(m))
    {
        ("tls", "the TLS handshake failed")
    } else if [
        "sasl authentication",
        "authentication failed",
        "authentication error",
        "oauthbearer",
        "access denied",
    ]
    .iter()
    .any(|m| lower.contains(m))
    {
        ("authentication", "the cluster refused the credentials")
    } else if tls {
        (
            "metadata",
            "the cluster did not answer a metadata request (TLS is on: is this a TLS listener?)",
        )
    } else {
        ("metadata", "the cluster did not answer a metadata request")
    }
}

#[cfg(test)]
mod tests {
    use super::classify_connect_error;

    #[test]
    fn client_errors_point_at_the_failed_step() {
        assert_eq!(
            classify_connect_error(
                "sasl_ssl://b-1:9098/bootstrap: SASL authentication error: Access denied",
                true
            )
            .0,
            "authentication"
        );
        assert_eq!(
            classify_connect_error(
                "sasl_ssl://b-1:9098/bootstrap: SSL handshake failed: wrong version number",
                true
            )
            .0,
            "tls"
        );
        assert_eq!(
            classify_connect_error("SSL handshake failed: certificate verify failed", true).0,
            "tls"
        );
        assert_eq!(
            classify_connect_error("Connection refused", false).0,
            "metadata"
        );
    }
}
