//! Wiring: opens the store, starts the relay and the HTTP server from one configuration, and
//! takes them down in order: at a shutdown signal the backlog is drained (intake open for its
//! grace, then closed; the relay sends until the store is empty or the deadline passes), then
//! the server stops, the store closes and what is left is reported.

use crate::api::tenant_rate::TenantRates;
use crate::api::{self, App, Intake};
use crate::catalog::Catalog;
use crate::clock::now_ms;
use crate::config::{Config, ShutdownConfig};
use crate::relay::{Relay, RelayExit, StatusHandle};
use crate::shutdown::{self, Shutdown, ShutdownSender};
use crate::store::Store;
use anyhow::Context;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Creates the missing catalogue topics, retrying while the cluster cannot be reached.
async fn provision_topics(
    kafka: crate::config::KafkaConfig,
    tokens: Option<Arc<crate::msk_iam::TokenSource>>,
    topics: Vec<String>,
    checkpoint_topic: Option<String>,
    mut shutdown: Shutdown,
) {
    loop {
        let mut created = crate::kafka_client::create_topics(
            &kafka,
            tokens.clone(),
            &topics,
            kafka.topic_partitions,
            kafka.topic_replication,
        )
        .await;
        if let (Ok(outcomes), Some(topic)) = (&mut created, &checkpoint_topic) {
            let replication = kafka.topic_replication;
            match crate::kafka_client::create_checkpoint_topic(
                &kafka,
                tokens.clone(),
                topic,
                replication,
            )
            .await
            {
                Ok(more) => outcomes.extend(more),
                Err(e) => created = Err(e),
            }
        }
        match created {
            Ok(outcomes) => {
                for (topic, outcome) in outcomes {
                    match outcome {
                        crate::kafka_client::TopicOutcome::Created => {
                            tracing::info!(%topic, "created topic")
                        }
                        crate::kafka_client::TopicOutcome::Exists => {}
                        crate::kafka_client::TopicOutcome::Failed(e) => {
                            tracing::error!(%topic, error = %e, "could not create topic")
                        }
                    }
                }
                return;
            }
            Err(e) => tracing::warn!(error = %e, "creating topics failed; retrying in 10s"),
        }
        tokio::select! {
            _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
            _ = shutdown.stopping() => return,
        }
    }
}

/// A running sidecar.
pub struct Sidecar {
    addr: SocketAddr,
    store: Store,
    relay_status: StatusHandle,
    shutdown: ShutdownSender,
    intake: Arc<Intake>,
    settings: ShutdownConfig,
    server: JoinHandle<std::io::Result<()>>,
    relay: JoinHandle<RelayExit>,
    /// Hands free memory back to the system (see [`crate::memory`]).
    memory: JoinHandle<()>,
    /// Flushed at the end.
    telemetry: Arc<crate::telemetry::Telemetry>,
}

/// How a drain at shutdown ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DrainEnd {
    /// Intake closed and the store emptied.
    Drained,
    /// `shutdown.drain_timeout` passed first.
    DeadlinePassed,
    /// A second signal stopped it.
    Interrupted,
}

/// What was still stored when the sidecar stopped.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Leftover {
    pub events: u64,
    pub bytes: u64,
    pub oldest_age_ms: Option<u64>,
    /// Events and stored bytes per topic.
    pub per_topic: BTreeMap<String, (u64, u64)>,
    pub dead_letters: u64,
}

impl Leftover {
    /// Reads the store's backlog, topic by topic, in batches.
    pub(crate) fn of(store: &Store) -> Leftover {
        let stats = store.stats();
        let mut left = Leftover {
            events: stats.backlog_events,
            bytes: stats.backlog_bytes,
            oldest_age_ms: store
                .oldest_appended_ms()
                .map(|ms| now_ms().saturating_sub(ms)),
            per_topic: BTreeMap::new(),
            dead_letters: stats.dead_letters,
        };
        let mut from = 0;
        while left.events > 0 {
            let Ok(batch) = store.read_batch(from, 10_000, 64 << 20, |_, _| false) else {
                break;
            };
            let Some(last) = batch.records.last().map(|r| r.seq) else {
                break;
            };
            for record in &batch.records {
                let topic = left
                    .per_topic
                    .entry(record.topic().to_string())
                    .or_default();
                topic.0 += 1;
                topic.1 += record.size;
            }
            from = last + 1;
        }
        left
    }

    /// `topic=events/bytes` pairs, for one log line.
    pub fn per_topic_text(&self) -> String {
        self.per_topic
            .iter()
            .map(|(topic, (events, bytes))| format!("{topic}={events}/{bytes}B"))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// The end of [`Sidecar::drain`].
#[derive(Debug, Clone, Serialize)]
pub struct DrainReport {
    pub end: DrainEnd,
    pub took: Duration,
    pub left: Leftover,
}

impl Sidecar {
    /// Validates the configuration and starts everything; returns once the API listens.
    pub async fn start(config: Config) -> anyhow::Result<Sidecar> {
        config.validate(true)?;
        crate::memory::tune_allocator();
        let store_config = config.store_config();
        let store = tokio::task::spawn_blocking(move || Store::open(store_config))
            .await?
            .with_context(|| format!("opening the store in {}", config.data_dir.display()))?;
        let catalog = Catalog::with_extra(&config.ingest.extra_types);
        let metrics = crate::metrics::Metrics::new();
        metrics.set_limits(
            config.store.max_disk_bytes,
            config.readiness.max_backlog_age,
        );
        let flush_metrics = metrics.clone();
        store.set_flush_observer(Arc::new(move |took| {
            flush_metrics
                .flush_duration_seconds
                .observe(took.as_secs_f64())
        }));
        let auth = Arc::new(crate::msk_iam::AuthStatus::default());
        let tokens = crate::kafka_client::token_source(&config.kafka.security, auth.clone()).await;
        let (event_limit, event_limit_source) = config.event_limit();
        let mut ingest = config.ingest.clone();
        ingest.max_event_bytes = event_limit;
        let telemetry = Arc::new(
            crate::telemetry::Telemetry::from_config(&config.telemetry)
                .context("setting up the OTLP span exporter (telemetry)")?,
        );
        let relay = Relay::for_config(store.clone(), &config, tokens.clone(), metrics.clone())
            .context("creating the Kafka producer")?
            .with_telemetry(telemetry.clone());
        let relay_status = relay.status();
        let broker = relay.broker_health();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let (shutdown, watcher) = shutdown::channel();
        let intake = Arc::new(Intake::default());
        let app = Arc::new(App {
            store: store.clone(),
            catalog,
            ingest,
            event_limit_source,
            mode: config.relay.mode,
            relay: relay_status.clone(),
            started: Instant::now(),
            retry_after_secs: config.relay.flush_interval.as_secs().max(1),
            max_backlog_age: config.readiness.max_backlog_age,
            metrics,
            auth: config.kafka.security.uses_msk_iam().then_some(auth),
            intake: intake.clone(),
            shutdown: watcher.clone(),
            broker,
            admin_token: config.admin.token()?,
            max_broker_outage: config.readiness.max_broker_outage,
            tenant_rates: TenantRates::new(
                config.ingest.max_events_per_second_per_tenant,
                config.store.max_tracked_tenants,
            ),
            telemetry: telemetry.clone(),
        });
        let ops = match config.ops_listen {
            Some(ops_addr) => {
                let ops_listener = tokio::net::TcpListener::bind(ops_addr)
                    .await
                    .with_context(|| format!("listening on {ops_addr} (ops_listen)"))?;
                let mut ops_watch = watcher.clone();
                let router = api::ops_router(app.clone());
                Some(tokio::spawn(async move {
                    axum::serve(ops_listener, router)
                        .with_graceful_shutdown(async move { ops_watch.stopping().await })
                        .await
                }))
            }
            None => None,
        };
        let mut server_watch = watcher.clone();
        let server = tokio::spawn(async move {
            let served = axum::serve(listener, api::router(app))
                .with_graceful_shutdown(async move { server_watch.stopping().await })
                .await;
            if let Some(ops) = ops {
                ops.await.map_err(std::io::Error::other)??;
            }
            served
        });
        if config.kafka.create_topics {
            tokio::spawn(provision_topics(
                config.kafka.clone(),
                tokens.clone(),
                Catalog::with_extra(&config.ingest.extra_types).topics(),
                (config.relay.delivery == crate::config::Delivery::ExactlyOnce)
                    .then(|| config.relay.checkpoint_topic.clone()),
                watcher.clone(),
            ));
        }
        let relay = tokio::spawn(relay.run(watcher));
        let memory = crate::memory::spawn_release_task({
            let store = store.clone();
            move || {
                let stats = store.stats();
                stats.next_seq.wrapping_add(stats.cursor)
            }
        });
        tracing::info!(
            %addr,
            ops = ?config.ops_listen,
            data_dir = %config.data_dir.display(),
            brokers = %config.kafka.brokers,
            "edge-outbox is serving"
        );
        Ok(Sidecar {
            addr,
            store,
            relay_status,
            shutdown,
            intake,
            settings: config.shutdown.clone(),
            server,
            relay,
            memory,
            telemetry,
        })
    }

    /// The address the API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn relay_status(&self) -> StatusHandle {
        self.relay_status.clone()
    }

    /// Resolves if the relay ends on its own, which only a fence does (exactly-once: another
    /// sidecar took over this store's transactional id), with the reason.
    pub async fn relay_ended(&mut self) -> String {
        let exit = (&mut self.relay).await;
        self.relay = tokio::spawn(async { RelayExit::Stopped });
        match exit {
            Ok(RelayExit::Fenced(reason)) => reason,
            Ok(other) => format!("the relay ended: {other:?}"),
            Err(e) => format!("the relay failed: {e}"),
        }
    }

    /// Stops at once: requests in progress are answered, in-flight produce is abandoned (its
    /// records stay stored and are sent again on the next start), the store is closed.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.stop();
        self.close().await.map(|_| ())
    }

    /// The shutdown of a pod: delivers the whole backlog before stopping. Readiness fails at
    /// once; appends are still taken for `shutdown.intake_grace`, then refused with `503`; the
    /// relay sends batch after batch until the store is empty, `shutdown.drain_timeout` passes
    /// or `interrupt` resolves (a second signal). The store is left consistent in every case.
    pub async fn drain(
        mut self,
        interrupt: impl Future<Output = ()>,
    ) -> anyhow::Result<DrainReport> {
        let started = tokio::time::Instant::now();
        let deadline = started + self.settings.drain_timeout;
        self.shutdown.drain(deadline);
        let stats = self.store.stats();
        tracing::info!(
            backlog_events = stats.backlog_events,
            backlog_bytes = stats.backlog_bytes,
            intake_grace_ms = self.settings.intake_grace.as_millis() as u64,
            drain_timeout_ms = self.settings.drain_timeout.as_millis() as u64,
            "shutting down: delivering the backlog before exiting"
        );
        tokio::pin!(interrupt);
        let mut end = None;
        tokio::select! {
            _ = tokio::time::sleep(self.settings.intake_grace) => {}
            _ = &mut interrupt => end = Some(DrainEnd::Interrupted),
        }
        if end.is_none() {
            tokio::select! {
                _ = self.intake.close() => self.shutdown.intake_closed(),
                _ = tokio::time::sleep_until(deadline) => end = Some(DrainEnd::DeadlinePassed),
                _ = &mut interrupt => end = Some(DrainEnd::Interrupted),
            }
        }
        let mut relay_done = false;
        if end.is_none() {
            end = Some(tokio::select! {
                _ = &mut self.relay => {
                    relay_done = true;
                    DrainEnd::Drained
                }
                _ = tokio::time::sleep_until(deadline) => DrainEnd::DeadlinePassed,
                _ = &mut interrupt => DrainEnd::Interrupted,
            });
        }
        self.shutdown.stop();
        if relay_done {
            self.relay = tokio::spawn(async { RelayExit::Drained });
        }
        let left = self.close().await?;
        let end = match end.expect("set above") {
            // The relay said so, but the store has the last word.
            DrainEnd::Drained if left.events > 0 => DrainEnd::DeadlinePassed,
            end => end,
        };
        Ok(DrainReport {
            end,
            took: started.elapsed(),
            left,
        })
    }

    /// With the phase at `Stopping`: waits for the server and the relay, reads what is left
    /// and closes the store.
    async fn close(self) -> anyhow::Result<Leftover> {
        self.server.await??;
        self.relay.await?;
        self.memory.abort();
        let store = self.store.clone();
        let left = tokio::task::spawn_blocking(move || Leftover::of(&store)).await?;
        self.store.close().await;
        let telemetry = self.telemetry.clone();
        tokio::task::spawn_blocking(move || telemetry.shutdown()).await?;
        tracing::info!("edge-outbox stopped");
        Ok(left)
    }
}
