//! What each command does once its arguments are read: serving (with the signals that drain
//! it), inspecting a stopped store, topics, sending and tailing events, the load tool.

use super::{BenchArgs, TailArgs};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::event::{http, kafka};
use crate::sidecar::Sidecar;
use anyhow::{bail, Context};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

pub(super) fn quiet_broken_pipe_any(result: anyhow::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}

pub(super) fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// A stored record as `inspect --export` shows its event: the CloudEvent its Kafka message
/// binds, in JSON (null when the message does not read as one).
pub(super) fn describe_record(record: &crate::store::Record) -> serde_json::Value {
    kafka::from_message(&record.message.headers, &record.message.payload)
        .map(|event| http::to_json(&event))
        .unwrap_or(serde_json::Value::Null)
}

pub(super) fn inspect(
    dir: &std::path::Path,
    verify: bool,
    export: Option<&str>,
    output: Option<&PathBuf>,
) -> anyhow::Result<()> {
    if !dir.is_dir() {
        bail!("{} is not a directory: no store to inspect", dir.display());
    }
    // Held while inspecting: no sidecar starts on the store meanwhile.
    let _lock = match crate::store::lock::StoreLock::acquire(dir) {
        Err(e @ crate::store::lock::LockError::Held { .. }) => {
            bail!("{e}: inspect reads a stopped store (use `edge-outbox status` on a running one)")
        }
        other => other?,
    };
    let inspector = crate::store::inspect::Inspector::open(dir)?;
    let summary = inspector.summary()?;
    // The counters (and the checksum pass) are the result: one JSON object on stdout, unless
    // the export takes stdout. Progress bars go to stderr.
    let mut report = serde_json::to_value(&summary)?;
    let mut corrupt = 0;
    if verify {
        let bar = progress_bar(summary.backlog_events + summary.dead_letters, "verifying");
        let result = inspector.verify(|| bar.inc(1))?;
        bar.finish_and_clear();
        corrupt = result.corrupt.len();
        report["verification"] = serde_json::to_value(&result)?;
    }
    let report = serde_json::to_string_pretty(&report)?;
    if export.is_some() && output.is_none() {
        eprintln!("{report}");
    } else {
        println!("{report}");
    }
    if corrupt > 0 {
        bail!("{corrupt} corrupt values");
    }
    if let Some(which) = export {
        let dead = which == "dead";
        let total = if dead {
            summary.dead_letters
        } else {
            summary.backlog_events
        };
        let bar = progress_bar(total, "exporting");
        let written = match output {
            Some(path) => {
                let mut file = std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                );
                inspector.export(dead, &mut file, describe_record, || bar.inc(1))?
            }
            None => {
                inspector.export(dead, &mut std::io::stdout().lock(), describe_record, || {
                    bar.inc(1)
                })?
            }
        };
        bar.finish_and_clear();
        eprintln!(
            "exported {written} {}",
            if dead { "dead letters" } else { "events" }
        );
    }
    Ok(())
}

/// Creates `topics` (and, `with_checkpoints`, the exactly-once checkpoint topic).
pub(super) async fn create_topics(
    config: &Config,
    topics: &[String],
    with_checkpoints: bool,
    json: bool,
) -> anyhow::Result<()> {
    let auth = std::sync::Arc::new(crate::msk_iam::AuthStatus::default());
    let tokens = crate::kafka_client::token_source(&config.kafka.security, auth).await;
    let mut outcomes = crate::kafka_client::create_topics(
        &config.kafka,
        tokens.clone(),
        topics,
        config.kafka.topic_partitions,
        config.kafka.topic_replication,
    )
    .await
    .context("creating topics")?;
    if with_checkpoints {
        outcomes.extend(
            crate::kafka_client::create_checkpoint_topic(
                &config.kafka,
                tokens,
                &config.relay.checkpoint_topic,
                config.kafka.topic_replication,
            )
            .await
            .context("creating the checkpoint topic")?,
        );
    }
    let failed = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, crate::kafka_client::TopicOutcome::Failed(_)))
        .count();
    if json {
        println!("{}", serde_json::to_string_pretty(&outcomes)?);
    } else {
        for (topic, outcome) in &outcomes {
            match outcome {
                crate::kafka_client::TopicOutcome::Created => println!("created  {topic}"),
                crate::kafka_client::TopicOutcome::Exists => println!("exists   {topic}"),
                crate::kafka_client::TopicOutcome::Failed(e) => println!("FAILED   {topic}: {e}"),
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} topics could not be created", outcomes.len());
    }
    Ok(())
}

pub(super) async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let report = crate::loadgen::run(crate::loadgen::LoadSpec {
        url: args.url,
        clients: args.clients,
        batch: args.batch,
        events: args.events,
        payload_bytes: args.payload_bytes,
        tenants: args.tenants.max(1),
        pid: args.pid,
        rate: args.rate,
        drain: args.drain,
        baseline_brokers: args.baseline_brokers,
        baseline_fresh: args.baseline_fresh,
        baseline_events: args.baseline_events,
    })
    .await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.text());
    }
    Ok(())
}

/// Exit code of `serve` and `dev` when the shutdown left undelivered events in the store.
pub const EXIT_BACKLOG_LEFT: u8 = 3;
/// `serve`'s exit code when exactly-once delivery was fenced by another sidecar using the
/// same store's transactional id.
pub const EXIT_FENCED: u8 = 4;

/// A command's wish for a particular exit code, its reason already logged.
#[derive(Debug, thiserror::Error)]
#[error("exit code {0}")]
pub struct Exit(pub u8);

/// Runs the sidecar until SIGTERM or Ctrl-C, then drains it (a second signal cuts the drain
/// short). `banner` is printed once the sidecar serves.
pub(super) async fn serve(config: Config, banner: Option<String>) -> anyhow::Result<()> {
    let mut signals = Signals::new();
    let sidecar = Sidecar::start(config).await?;
    if let Some(banner) = banner {
        // A convenience: a closed stdout must not stop the sidecar.
        let _ = writeln!(std::io::stdout().lock(), "{banner}");
    }
    let mut sidecar = sidecar;
    tokio::select! {
        _ = signals.next() => {}
        reason = sidecar.relay_ended() => {
            tracing::error!(
                %reason,
                "the relay stopped: this sidecar no longer delivers; stopping (the store is kept)"
            );
            sidecar.shutdown().await?;
            return Err(Exit(EXIT_FENCED).into());
        }
    }
    let report = sidecar
        .drain(async {
            let signal = signals.next().await;
            tracing::warn!(signal, "a second signal: ending the drain now");
        })
        .await?;
    let took_ms = report.took.as_millis() as u64;
    if report.left.events == 0 {
        tracing::info!(
            took_ms,
            dead_letters = report.left.dead_letters,
            "drained: every stored event was delivered"
        );
        return Ok(());
    }
    tracing::error!(
        reason = ?report.end,
        took_ms,
        events_left = report.left.events,
        bytes_left = report.left.bytes,
        oldest_age_ms = report.left.oldest_age_ms.unwrap_or(0),
        per_topic = %report.left.per_topic_text(),
        "stopped with undelivered events in the store (kept intact; a restart on it, or \
         `edge-outbox adopt` on a node-local root, delivers them)"
    );
    Err(Exit(EXIT_BACKLOG_LEFT).into())
}

/// SIGTERM and SIGINT, registered once, so that a second one during the drain is seen.
pub(super) struct Signals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    pub(super) fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            interrupt: signal(SignalKind::interrupt()).expect("SIGINT handler"),
        }
    }

    /// The next signal's name.
    pub(super) async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// Writing to a closed pipe (`edge-outbox topics | head`) ends the command quietly.
pub(super) fn quiet_broken_pipe(result: std::io::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub(super) fn print_topics(catalog: &Catalog, json: bool) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let entries: Vec<_> = catalog.entries().collect();
        let text = serde_json::to_string_pretty(&entries).expect("entries serialise");
        return writeln!(out, "{text}");
    }
    let width = catalog
        .entries()
        .map(|e| e.event_type.len())
        .max()
        .unwrap_or(4);
    writeln!(
        out,
        "{:<28} {:<width$} DESCRIPTION",
        "CATEGORY", "TYPE (= TOPIC)"
    )?;
    for entry in catalog.entries() {
        let name = if entry.topic == entry.event_type {
            entry.event_type.clone()
        } else {
            format!("{} -> {}", entry.event_type, entry.topic)
        };
        writeln!(
            out,
            "{:<28} {:<width$} {}",
            entry.category, name, entry.description
        )?;
    }
    writeln!(
        out,
        "{} event types in {} categories",
        catalog.len(),
        catalog.categories().len()
    )
}

pub(super) async fn send(file: &PathBuf, url: &str) -> anyhow::Result<()> {
    let body = if file.as_os_str() == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        buf
    } else {
        std::fs::read(file).with_context(|| format!("reading {}", file.display()))?
    };
    let value: serde_json::Value =
        serde_json::from_slice(&body).with_context(|| format!("{} is not JSON", file.display()))?;
    let content_type = if value.is_array() {
        http::BATCH
    } else {
        http::STRUCTURED
    };
    let endpoint = format!("{}/v1/events", url.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&endpoint)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .with_context(|| format!("posting to {endpoint}"))?;
    let status = response.status();
    let duplicates: usize = response
        .headers()
        .get(crate::api::DUPLICATES_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let text = response.text().await.unwrap_or_default();
    println!("{status} {text}");
    if duplicates > 0 {
        eprintln!(
            "note: {duplicates} of these events were already stored (same source and id): \
             answered with their first sequence numbers, not stored again"
        );
    }
    if !status.is_success() {
        bail!("the sidecar refused the event ({status})");
    }
    Ok(())
}

pub(super) async fn tail(config: &Config, args: TailArgs) -> anyhow::Result<()> {
    let topics = if args.topics.is_empty() {
        Catalog::builtin().topics()
    } else {
        args.topics.clone()
    };
    let auth = std::sync::Arc::new(crate::msk_iam::AuthStatus::default());
    let tokens = crate::kafka_client::token_source(&config.kafka.security, auth).await;
    let consumer: StreamConsumer<crate::kafka_client::KafkaContext> =
        crate::kafka_client::client_config(&config.kafka)
            .set(
                "group.id",
                format!("edge-outbox-tail-{}", uuid::Uuid::new_v4()),
            )
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .create_with_context(crate::kafka_client::KafkaContext::new(tokens))
            .context("creating the consumer")?;
    // A topic the cluster lacks is named at once, instead of an error per poll.
    let metadata = {
        let consumer = &consumer;
        tokio::task::block_in_place(|| consumer.fetch_metadata(None, Duration::from_secs(15)))
            .with_context(|| format!("asking {} for its topics", config.kafka.brokers))?
    };
    let known: std::collections::BTreeSet<&str> =
        metadata.topics().iter().map(|t| t.name()).collect();
    let missing: Vec<&str> = topics
        .iter()
        .map(String::as_str)
        .filter(|t| !known.contains(t))
        .collect();
    if !missing.is_empty() {
        bail!(
            "the cluster at {} has no topic {} (create catalogue topics with `edge-outbox topics create`)",
            config.kafka.brokers,
            missing.join(", ")
        );
    }
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&names)?;
    let mut seen = 0u64;
    loop {
        if args.count.is_some_and(|n| seen >= n) {
            return Ok(());
        }
        let next = consumer.recv();
        let message = match args.idle_timeout {
            Some(idle) => match tokio::time::timeout(idle, next).await {
                Ok(m) => m,
                Err(_) => return Ok(()),
            },
            None => next.await,
        }?;
        let headers: Vec<(String, Vec<u8>)> = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        let payload = message.payload().unwrap_or_default();
        match kafka::from_message(&headers, payload) {
            Some(event) if args.meta => {
                let line = serde_json::json!({
                    "topic": message.topic(),
                    "partition": message.partition(),
                    "offset": message.offset(),
                    "key": message.key().map(String::from_utf8_lossy),
                    "event": http::to_json(&event),
                });
                writeln!(std::io::stdout().lock(), "{line}")?
            }
            Some(event) => writeln!(std::io::stdout().lock(), "{}", http::to_json(&event))?,
            None => eprintln!(
                "{}[{}]@{}: not a CloudEvent ({} bytes)",
                message.topic(),
                message.partition(),
                message.offset(),
                payload.len()
            ),
        }
        seen += 1;
    }
}
