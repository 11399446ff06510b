//! The command line: the sidecar's commands (`serve`, `dev`, `adopt`), the operator's (`status`,
//! `dlq`, `inspect`, `check-config`, `topics`) and the developer's (`send`, `tail`, `bench`).
//! Where the configuration's layers come from is [`crate::config`]'s `layers.rs`.

use crate::catalog::Catalog;
use crate::config::{parse_duration, Config, ConfigSource, Override};
use crate::event::{http, kafka};
use crate::kafka_client::DevBroker;
use crate::sidecar::Sidecar;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "edge-outbox",
    version,
    about = "A durable CloudEvents outbox sidecar for Kafka"
)]
pub struct Cli {
    /// A TOML configuration file.
    #[arg(
        long,
        global = true,
        env = "EDGE_OUTBOX_CONFIG",
        conflicts_with = "preset"
    )]
    pub config: Option<PathBuf>,
    /// A shipped configuration (`staging`, `production`) or the path of a configuration file.
    #[arg(long, global = true, env = "EDGE_OUTBOX_PRESET")]
    pub preset: Option<String>,
    /// Override any setting: `--set relay.flush_interval=5s` (repeatable; wins over the file
    /// and the environment, including `EDGE_OUTBOX__SECTION__KEY` variables).
    #[arg(long = "set", global = true, value_name = "PATH=VALUE")]
    pub set: Vec<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the sidecar against a Kafka cluster.
    Serve(ServeArgs),
    /// Run the sidecar with an embedded Kafka-protocol broker (no external service needed).
    Dev(DevArgs),
    /// Deliver and remove the stores left behind under a node-local root by sidecars that are
    /// gone (their lock is free): intended as a DaemonSet, also usable by hand.
    Adopt(AdoptArgs),
    /// List the topic catalogue, or create its topics on a cluster.
    Topics {
        #[command(subcommand)]
        action: Option<TopicsAction>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Post an event file (one event, or a JSON array for a batch) to a running sidecar.
    Send {
        /// The file, or `-` for standard input.
        file: PathBuf,
        /// The sidecar's address.
        #[arg(long, env = "EDGE_OUTBOX_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
    },
    /// Consume catalogue topics from any broker and print the events as CloudEvents JSON.
    Tail(TailArgs),
    /// Exit 0 when URL answers 2xx within two seconds, else 1: a health probe for container
    /// runtimes whose own HTTP probes cannot reach the loopback-only API.
    Probe {
        #[arg(default_value = "http://127.0.0.1:8080/healthz")]
        url: String,
    },
    /// Show a running sidecar's state: backlog, oldest event, last delivery, errors.
    Status {
        #[arg(long, env = "EDGE_OUTBOX_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Print the status JSON.
        #[arg(long)]
        json: bool,
    },
    /// Inspect and act on parked (dead-letter) events of a running sidecar.
    Dlq {
        #[arg(
            long,
            global = true,
            env = "EDGE_OUTBOX_URL",
            default_value = "http://127.0.0.1:8080"
        )]
        url: String,
        /// The file with the sidecar's admin token (admin.token_file), sent as a bearer token.
        #[arg(long, global = true, env = "EDGE_OUTBOX_ADMIN_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        #[command(subcommand)]
        action: crate::ops::DlqAction,
    },
    /// Inspect a stopped store: counters, a checksum pass, or JSON-lines export.
    Inspect {
        /// The store's directory.
        #[arg(long, env = "EDGE_OUTBOX_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// Decode every record and dead letter and report corrupt ones.
        #[arg(long)]
        verify: bool,
        /// Export the backlog (`backlog`) or the dead letters (`dead`) as JSON lines.
        #[arg(long, value_parser = ["backlog", "dead"])]
        export: Option<String>,
        /// Where to export to [default: standard output].
        #[arg(long, requires = "export")]
        output: Option<PathBuf>,
    },
    /// Validate a configuration and print the effective settings (secrets redacted).
    CheckConfig {
        #[command(flatten)]
        serve: ServeArgs,
        /// Also connect: resolve the brokers, open TCP (and TLS), authenticate, fetch metadata
        /// and check the catalogue topics, reporting the first step that fails.
        #[arg(long)]
        connect: bool,
        /// How long each step may take.
        #[arg(long, default_value = "15s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Load a running sidecar over HTTP and report throughput, latency, memory and drain time.
    Bench(BenchArgs),
}

#[derive(Subcommand, Debug)]
pub enum TopicsAction {
    /// Create the catalogue topics (or the named ones) that the cluster does not have yet.
    Create {
        /// Comma-separated bootstrap servers.
        #[arg(long, env = "EDGE_OUTBOX_BROKERS")]
        brokers: Option<String>,
        /// Partitions per topic [default: kafka.topic_partitions, 3].
        #[arg(long)]
        partitions: Option<i32>,
        /// Replication factor; -1 is the cluster default (MSK Serverless needs it)
        /// [default: kafka.topic_replication, -1].
        #[arg(long, allow_hyphen_values = true)]
        replication: Option<i32>,
        /// Topics to create [default: every catalogue topic].
        topics: Vec<String>,
    },
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The sidecar's address.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,
    /// Events per request (1: single-event structured mode; more: batched mode).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Events in all; 0 posts nothing and only times the drain of the existing backlog.
    #[arg(long, default_value_t = 100_000)]
    pub events: u64,
    /// Approximate size of each event, in bytes.
    #[arg(long, default_value_t = 1024)]
    pub payload_bytes: usize,
    /// Distinct tenants.
    #[arg(long, default_value_t = 1000)]
    pub tenants: u64,
    /// The sidecar's pid, to report its RSS and CPU.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Send at most this many events per second in all (0: as fast as the sidecar answers),
    /// for steady-load runs such as the memory soak.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Wait until the relay has drained the backlog, and report its rate.
    #[arg(long)]
    pub drain: bool,
    /// Also produce the same messages with a plain rdkafka producer to these brokers.
    #[arg(long)]
    pub baseline_brokers: Option<String>,
    /// Also produce them to a fresh embedded broker (3 partitions per topic) started by the load
    /// tool: the plain producer's rate without the messages the relay left in the broker.
    #[arg(long)]
    pub baseline_fresh: bool,
    /// Messages the plain producer sends [default: as many as were posted, or delivered by the
    /// relay in a drain-only run]; with `--events 0` and no `--drain`, the run is the plain
    /// producer alone.
    #[arg(long)]
    pub baseline_events: Option<u64>,
    /// Print one JSON object instead of a line per measure.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Default)]
pub struct ServeArgs {
    /// Address of the HTTP API [default: 127.0.0.1:8080].
    #[arg(long, env = "EDGE_OUTBOX_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Directory of the store [default: ./data].
    #[arg(long, env = "EDGE_OUTBOX_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Comma-separated Kafka bootstrap servers.
    #[arg(long, env = "EDGE_OUTBOX_BROKERS")]
    pub brokers: Option<String>,
    /// How often the relay sends the backlog, such as `10s` or `250ms` [default: 10s].
    #[arg(long, env = "EDGE_OUTBOX_FLUSH_INTERVAL", value_parser = parse_duration)]
    pub flush_interval: Option<Duration>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "EDGE_OUTBOX_LOG_FORMAT")]
    pub log_format: Option<String>,
}

#[derive(Args, Debug)]
pub struct AdoptArgs {
    /// Kafka, listen address (status and metrics only) and the rest as for `serve`.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// The node-local folder whose subfolders are per-pod stores.
    #[arg(long, env = "EDGE_OUTBOX_ADOPT_ROOT")]
    pub root: PathBuf,
    /// How often the root is scanned.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub scan_interval: Duration,
    /// A free lock refreshed more recently than this belongs to a restarting container, not a
    /// gone pod: its store is left alone.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub min_idle: Duration,
}

#[derive(Args, Debug)]
pub struct DevArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Partitions of each catalogue topic on the embedded broker.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
}

#[derive(Args, Debug)]
pub struct TailArgs {
    /// Comma-separated bootstrap servers.
    #[arg(long, env = "EDGE_OUTBOX_BROKERS")]
    pub brokers: String,
    /// Topics to follow [default: every catalogue topic].
    #[arg(long = "topic")]
    pub topics: Vec<String>,
    /// Stop after this many events.
    #[arg(long)]
    pub count: Option<u64>,
    /// Stop after this long without a new event, such as `5s`.
    #[arg(long, value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,
    /// Print each event inside `{"topic", "partition", "offset", "key", "event"}` instead of
    /// the bare CloudEvent.
    #[arg(long)]
    pub meta: bool,
}

/// Where the configuration comes from, below the named flags.
fn config_source(cli: &Cli) -> ConfigSource {
    ConfigSource {
        file: cli.config.clone(),
        preset: cli.preset.clone(),
        set: cli.set.clone(),
    }
}

impl ServeArgs {
    /// The named flags given, as the last layer of the configuration.
    pub fn overrides(&self) -> Vec<Override> {
        let mut flags = Vec::new();
        if let Some(listen) = self.listen {
            flags.push(Override::string("listen", listen.to_string(), "--listen"));
        }
        if let Some(dir) = &self.data_dir {
            let dir = dir.to_string_lossy();
            flags.push(Override::string("data_dir", dir, "--data-dir"));
        }
        if let Some(brokers) = &self.brokers {
            flags.push(Override::string("kafka.brokers", brokers, "--brokers"));
        }
        if let Some(interval) = self.flush_interval {
            let interval = humantime::format_duration(interval).to_string();
            flags.push(Override::string(
                "relay.flush_interval",
                interval,
                "--flush-interval",
            ));
        }
        if let Some(format) = &self.log_format {
            flags.push(Override::string("log.format", format, "--log-format"));
        }
        flags
    }
}

/// Loads the configuration: defaults, then the file or preset, then environment and flags.
pub fn load_config(source: &ConfigSource, args: &ServeArgs) -> anyhow::Result<Config> {
    source.load(&args.overrides())
}

/// Logging for one-shot commands: only errors of our own, never librdkafka's chatter.
fn init_logging_quiet() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("off"))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Sets up `tracing` on standard error; colours only when it is a terminal (and `NO_COLOR`
/// is not set), so that a log file or pipe carries no escape codes.
pub fn init_logging(config: &Config) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    let _ = if config.log.format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let source = config_source(&cli);
    match cli.command {
        Command::Serve(args) => {
            let config = load_config(&source, &args)?;
            init_logging(&config);
            serve(config, None).await
        }
        Command::Adopt(args) => {
            let config = load_config(&source, &args.serve)?;
            init_logging(&config);
            config.validate(true)?;
            let settings = crate::adopt::AdoptSettings {
                root: args.root,
                scan_interval: args.scan_interval,
                min_idle: args.min_idle,
            };
            let (sender, shutdown) = crate::shutdown::channel();
            let mut signals = Signals::new();
            let mut adopter = tokio::spawn(crate::adopt::run(config, settings, shutdown));
            tokio::select! {
                _ = signals.next() => {
                    sender.stop();
                    adopter.await?
                }
                result = &mut adopter => result?,
            }
        }
        Command::Dev(args) => {
            let mut config = load_config(&source, &args.serve)?;
            init_logging(&config);
            let catalog = Catalog::with_extra(&config.ingest.extra_types);
            let broker = DevBroker::start(1, &catalog.topics(), args.partitions)
                .context("starting the embedded Kafka broker")?;
            config.kafka.brokers = broker.bootstrap_servers();
            // After `cargo run` the binary is not on the PATH: suggest what works from here.
            let command = if std::env::current_exe()
                .is_ok_and(|p| p.components().any(|c| c.as_os_str() == "target"))
            {
                "cargo run --"
            } else {
                "edge-outbox"
            };
            let banner = format!(
                "edge-outbox dev: embedded Kafka broker at {} ({} topics); ingest at http://{}/v1/events\n  \
                 watch events arrive: {command} tail --brokers {}",
                config.kafka.brokers,
                catalog.topics().len(),
                config.listen,
                config.kafka.brokers
            );
            let result = serve(config, Some(banner)).await;
            drop(broker);
            result
        }
        Command::Topics { action, json } => {
            let mut config = source.load(&[])?;
            let catalog = Catalog::with_extra(&config.ingest.extra_types);
            match action {
                None => quiet_broken_pipe(print_topics(&catalog, json)),
                Some(TopicsAction::Create {
                    brokers,
                    partitions,
                    replication,
                    topics,
                }) => {
                    if let Some(brokers) = brokers {
                        config.kafka.brokers = brokers;
                    }
                    config.kafka.topic_partitions =
                        partitions.unwrap_or(config.kafka.topic_partitions);
                    config.kafka.topic_replication =
                        replication.unwrap_or(config.kafka.topic_replication);
                    config.validate(true)?;
                    let topics = if topics.is_empty() {
                        catalog.topics()
                    } else {
                        topics
                    };
                    create_topics(&config, &topics, json).await
                }
            }
        }
        Command::Send { file, url } => send(&file, &url).await,
        Command::Tail(args) => {
            // The configuration's security settings (TLS, SASL, MSK IAM) apply to tail too.
            let mut config = source.load(&[])?;
            config.kafka.brokers = args.brokers.clone();
            quiet_broken_pipe_any(tail(&config, args).await)
        }
        Command::Bench(args) => bench(args).await,
        Command::Status { url, json } => crate::ops::status(url.trim_end_matches('/'), json).await,
        Command::Dlq {
            url,
            token_file,
            action,
        } => {
            let token = crate::config::AdminConfig { token_file }.token()?;
            crate::ops::dlq(url.trim_end_matches('/'), token.as_deref(), action).await
        }
        Command::Inspect {
            data_dir,
            verify,
            export,
            output,
        } => inspect(&data_dir, verify, export.as_deref(), output.as_ref()),
        Command::Probe { url } => {
            let response = reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?
                .get(&url)
                .send()
                .await
                .with_context(|| format!("probing {url}"))?;
            if !response.status().is_success() {
                bail!("{url} answered {}", response.status());
            }
            Ok(())
        }
        Command::CheckConfig {
            serve,
            connect,
            timeout,
        } => {
            let config = load_config(&source, &serve)?;
            config.validate(connect)?;
            print!("{}", config.redacted_toml());
            let (limit, source) = config.event_limit();
            eprintln!("note: events up to {limit} bytes are accepted ({source})");
            if config.kafka.brokers.trim().is_empty() {
                eprintln!("note: kafka.brokers is empty; `serve` needs it (`dev` does not)");
            }
            if connect {
                init_logging_quiet();
                let report = crate::connect_check::run(&config, timeout).await;
                eprint!("{}", report.render());
                if !report.ok() {
                    bail!(
                        "the connection check failed: {}",
                        report.failure().unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
    }
}

fn quiet_broken_pipe_any(result: anyhow::Result<()>) -> anyhow::Result<()> {
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

fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
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
fn describe_record(record: &crate::store::Record) -> serde_json::Value {
    kafka::from_message(&record.message.headers, &record.message.payload)
        .map(|event| http::to_json(&event))
        .unwrap_or(serde_json::Value::Null)
}

fn inspect(
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

async fn create_topics(config: &Config, topics: &[String], json: bool) -> anyhow::Result<()> {
    let auth = std::sync::Arc::new(crate::msk_iam::AuthStatus::default());
    let tokens = crate::kafka_client::token_source(&config.kafka.security, auth).await;
    let outcomes = crate::kafka_client::create_topics(
        &config.kafka,
        tokens,
        topics,
        config.kafka.topic_partitions,
        config.kafka.topic_replication,
    )
    .await
    .context("creating topics")?;
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

async fn bench(args: BenchArgs) -> anyhow::Result<()> {
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

/// A command's wish for a particular exit code, its reason already logged.
#[derive(Debug, thiserror::Error)]
#[error("exit code {0}")]
pub struct Exit(pub u8);

/// Runs the sidecar until SIGTERM or Ctrl-C, then drains it (a second signal cuts the drain
/// short). `banner` is printed once the sidecar serves.
async fn serve(config: Config, banner: Option<String>) -> anyhow::Result<()> {
    let mut signals = Signals::new();
    let sidecar = Sidecar::start(config).await?;
    if let Some(banner) = banner {
        // A convenience: a closed stdout must not stop the sidecar.
        let _ = writeln!(std::io::stdout().lock(), "{banner}");
    }
    signals.next().await;
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
struct Signals {
    term: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{signal, SignalKind};
        Signals {
            term: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            interrupt: signal(SignalKind::interrupt()).expect("SIGINT handler"),
        }
    }

    /// The next signal's name.
    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}

/// Writing to a closed pipe (`edge-outbox topics | head`) ends the command quietly.
fn quiet_broken_pipe(result: std::io::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn print_topics(catalog: &Catalog, json: bool) -> std::io::Result<()> {
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

async fn send(file: &PathBuf, url: &str) -> anyhow::Result<()> {
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

async fn tail(config: &Config, args: TailArgs) -> anyhow::Result<()> {
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
