//! The command line: the sidecar's commands (`serve`, `dev`, `adopt`), the operator's (`status`,
//! `dlq`, `inspect`, `check-config`, `topics`) and the developer's (`send`, `tail`, `bench`).
//! Where the configuration's layers come from is [`crate::config`]'s `layers.rs`.

use crate::catalog::Catalog;
use crate::config::{parse_duration, Config, ConfigSource, Delivery, Override};
use crate::kafka_client::DevBroker;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod commands;

pub use commands::Exit;
use commands::*;

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
        /// Print the status JSON (with `--watch`: one object per line).
        #[arg(long)]
        json: bool,
        /// Show the status again every `--interval` until interrupted.
        #[arg(long, short = 'w')]
        watch: bool,
        /// How often `--watch` refreshes, such as `2s` or `500ms`.
        #[arg(long, default_value = "2s", value_parser = parse_duration, requires = "watch")]
        interval: Duration,
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
    pub fn overrides(&self) -> anyhow::Result<Vec<Override>> {
        let mut flags = Vec::new();
        if let Some(listen) = self.listen {
            flags.push(Override::string("listen", listen.to_string(), "--listen"));
        }
        if let Some(dir) = &self.data_dir {
            let dir = dir
                .to_str()
                .with_context(|| format!("--data-dir {}: the path must be UTF-8", dir.display()))?;
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
        Ok(flags)
    }
}

/// Loads the configuration: defaults, then the file or preset, then environment and flags.
pub fn load_config(source: &ConfigSource, args: &ServeArgs) -> anyhow::Result<Config> {
    source.load(&args.overrides()?)
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
                    // The catalogue, and in exactly-once mode the checkpoint topic.
                    let everything = topics.is_empty();
                    let topics = if everything { catalog.topics() } else { topics };
                    let with_checkpoints =
                        everything && config.relay.delivery == Delivery::ExactlyOnce;
                    create_topics(&config, &topics, with_checkpoints, json).await
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
        Command::Status {
            url,
            json,
            watch,
            interval,
        } => match watch {
            true => crate::ops::watch_status(url.trim_end_matches('/'), json, interval).await,
            false => crate::ops::status(url.trim_end_matches('/'), json).await,
        },
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
