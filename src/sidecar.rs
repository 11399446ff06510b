//! Wiring: opens the store, starts the relay and the HTTP server from one configuration, and
//! shuts them down in the right order (stop intake, settle or abandon in-flight produce,
//! persist the cursor and close the store).

use crate::api::{self, App};
use crate::catalog::Catalog;
use crate::config::Config;
use crate::relay::{Relay, StatusHandle};
use crate::store::Store;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Creates the missing catalogue topics, retrying while the cluster cannot be reached.
async fn provision_topics(
    kafka: crate::config::KafkaConfig,
    tokens: Option<Arc<crate::msk_iam::TokenSource>>,
    topics: Vec<String>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        match crate::kafka::create_topics(
            &kafka,
            tokens.clone(),
            &topics,
            kafka.topic_partitions,
            kafka.topic_replication,
        )
        .await
        {
            Ok(outcomes) => {
                for (topic, outcome) in outcomes {
                    match outcome {
                        crate::kafka::TopicOutcome::Created => {
                            tracing::info!(%topic, "created topic")
                        }
                        crate::kafka::TopicOutcome::Exists => {}
                        crate::kafka::TopicOutcome::Failed(e) => {
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
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
    }
}

/// A running sidecar.
pub struct Sidecar {
    addr: SocketAddr,
    store: Store,
    relay_status: StatusHandle,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    relay: JoinHandle<()>,
    /// Hands free memory back to the system (see [`crate::memory`]).
    memory: JoinHandle<()>,
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
        let flush_metrics = metrics.clone();
        store.set_flush_observer(Arc::new(move |took| {
            flush_metrics
                .flush_duration_seconds
                .observe(took.as_secs_f64())
        }));
        let auth = Arc::new(crate::msk_iam::AuthStatus::default());
        let tokens = crate::kafka::token_source(&config.kafka.security, auth.clone()).await;
        let relay = Relay::new(
            store.clone(),
            config.kafka.clone(),
            tokens.clone(),
            config.relay.clone(),
            config.ingest.max_event_bytes as u64,
            metrics.clone(),
        )
        .context("creating the Kafka producer")?;
        let relay_status = relay.status();
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let app = Arc::new(App {
            store: store.clone(),
            catalog,
            ingest: config.ingest.clone(),
            mode: config.relay.mode,
            relay: relay_status.clone(),
            started: Instant::now(),
            retry_after_secs: config.relay.flush_interval.as_secs().max(1),
            max_backlog_age: config.readiness.max_backlog_age,
            metrics,
            auth: config.kafka.security.uses_msk_iam().then_some(auth),
        });
        let (shutdown, watcher) = watch::channel(false);
        let mut server_watch = watcher.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, api::router(app))
                .with_graceful_shutdown(async move {
                    let _ = server_watch.wait_for(|stop| *stop).await;
                })
                .await
        });
        if config.kafka.create_topics {
            tokio::spawn(provision_topics(
                config.kafka.clone(),
                tokens.clone(),
                Catalog::with_extra(&config.ingest.extra_types).topics(),
                watcher.clone(),
            ));
        }
        let relay = tokio::spawn(relay.run(watcher));
        let memory = crate::memory::spawn_release_task();
        tracing::info!(%addr, data_dir = %config.data_dir.display(), brokers = %config.kafka.brokers, "edge-outbox is serving");
        Ok(Sidecar {
            addr,
            store,
            relay_status,
            shutdown,
            server,
            relay,
            memory,
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

    /// Graceful shutdown: stop intake and answer requests in progress, stop the relay, close
    /// the store.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.server.await??;
        self.relay.await?;
        self.memory.abort();
        self.store.close().await;
        tracing::info!("edge-outbox stopped");
        Ok(())
    }
}
