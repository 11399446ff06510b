//! The adopter (`edge-outbox adopt --root DIR`, a DaemonSet beside node-local stores): finishes
//! the work of stores whose sidecar is gone. It scans the root for per-pod store folders whose
//! lock is free and has not been refreshed for `min_idle`, takes the lock, drains the store with
//! the sidecar's own relay and removes the folder once it is empty. A store that keeps dead
//! letters is kept and reported. A held lock is never touched, so two adopters on one root, or
//! an adopter and a restarting sidecar, never work on one store at once.

use crate::config::Config;
use crate::relay::{Relay, RelayExit};
use crate::shutdown::{Shutdown, ShutdownSender};
use crate::store::lock::StoreLock;
use crate::store::{Store, StoreError};
use anyhow::Context;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where and how often to look.
#[derive(Debug, Clone)]
pub struct AdoptSettings {
    /// The node-local folder whose subfolders are per-pod stores.
    pub root: PathBuf,
    pub scan_interval: Duration,
    /// A free lock refreshed more recently than this belongs to a container that is only
    /// restarting: its store is left for it.
    pub min_idle: Duration,
}

/// What the adopter has done, for `/v1/status` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AdopterStatus {
    /// Distinct store folders seen under the root.
    pub stores_seen: u64,
    /// Stores whose lock this adopter took.
    pub adopted: u64,
    /// Adopted stores delivered whole and removed.
    pub drained: u64,
    /// Adopted stores kept because of their dead letters: folder → dead letters.
    pub kept: BTreeMap<String, u64>,
    /// Stores being drained now: folder → events left.
    pub draining: BTreeMap<String, u64>,
    /// The last error per folder (could not open, could not remove).
    pub errors: BTreeMap<String, String>,
}

type SharedStatus = Arc<Mutex<AdopterStatus>>;

/// Runs until `shutdown` stops: scans, adopts, drains. Relays of stores not yet drained are
/// stopped with it; their stores stay as they are, for the next adopter.
pub async fn run(
    config: Config,
    settings: AdoptSettings,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.root)
        .with_context(|| format!("creating the adopter's root {}", settings.root.display()))?;
    let status = SharedStatus::default();
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let router = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/status", get(status_json))
        .route("/metrics", get(metrics_text))
        .with_state(status.clone());
    let mut server_shutdown = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move { server_shutdown.stopping().await })
            .await
    });
    tracing::info!(%addr, root = %settings.root.display(), "edge-outbox adopter is scanning");
    let mut seen = BTreeSet::new();
    let mut relays: BTreeMap<String, (ShutdownSender, tokio::task::JoinHandle<()>)> =
        BTreeMap::new();
    loop {
        relays.retain(|_, (_, task)| !task.is_finished());
        for (name, dir) in store_folders(&settings.root) {
            if seen.insert(name.clone()) {
                status.lock().expect("lock").stores_seen += 1;
            }
            let skip = relays.contains_key(&name)
                || status.lock().expect("lock").kept.contains_key(&name)
                || StoreLock::idle_for(&dir).is_none_or(|idle| idle < settings.min_idle);
            if skip {
                continue;
            }
            let mut store_config = config.store_config();
            store_config.dir = dir.clone();
            let opened = tokio::task::spawn_blocking(move || Store::open(store_config)).await?;
            let store = match opened {
                Ok(store) => store,
                // Its sidecar (or another adopter) holds it, or took it a moment ago.
                Err(StoreError::Locked(_)) => continue,
                Err(e) => {
                    tracing::warn!(store = %name, error = %e, "could not open a store to adopt");
                    status
                        .lock()
                        .expect("lock")
                        .errors
                        .insert(name, e.to_string());
                    continue;
                }
            };
            let stats = store.stats();
            tracing::info!(store = %name, backlog_events = stats.backlog_events, "adopted a store");
            {
                let mut status = status.lock().expect("lock");
                status.adopted += 1;
                status.draining.insert(name.clone(), stats.backlog_events);
            }
            let (sender, drain_only) = Shutdown::drain_only();
            let task = tokio::spawn(drain_store(
                config.clone(),
                name.clone(),
                dir,
                store,
                drain_only,
                status.clone(),
            ));
            relays.insert(name, (sender, task));
        }
        tokio::select! {
            _ = tokio::time::sleep(settings.scan_interval) => {}
            _ = shutdown.stopping() => break,
        }
    }
    for (_, (sender, task)) in relays {
        sender.stop();
        let _ = task.await;
    }
    server.await??;
    Ok(())
}

/// The subfolders of `root` that hold a store (a lock file), by name. Names starting with a
/// dot are folders being removed.
fn store_folders(root: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut folders: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .filter(|(name, dir)| !name.starts_with('.') && StoreLock::exists(dir))
        .collect();
    folders.sort();
    folders
}

/// Delivers an adopted store with the relay, then removes it (or keeps it for its dead
/// letters). The folder is renamed out of the scan while its lock is still held, so that no
/// other adopter takes the emptied store between the close and the removal.
async fn drain_store(
    config: Config,
    name: String,
    dir: PathBuf,
    store: Store,
    shutdown: Shutdown,
    status: SharedStatus,
) {
    let tokens = crate::kafka_client::token_source(
        &config.kafka.security,
        Arc::new(crate::msk_iam::AuthStatus::default()),
    )
    .await;
    let relay = match Relay::for_config(
        store.clone(),
        &config,
        tokens,
        crate::metrics::Metrics::new(),
    ) {
        Ok(relay) => relay,
        Err(e) => {
            status
                .lock()
                .expect("lock")
                .errors
                .insert(name.clone(), format!("creating the producer: {e}"));
            store.close().await;
            return;
        }
    };
    let progress = {
        let store = store.clone();
        let status = status.clone();
        let name = name.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let left = store.stats().backlog_events;
                if let Some(entry) = status.lock().expect("lock").draining.get_mut(&name) {
                    *entry = left;
                }
            }
        })
    };
    let exit = relay.run(shutdown).await;
    progress.abort();
    let dead_letters = store.stats().dead_letters;
    status.lock().expect("lock").draining.remove(&name);
    if exit != RelayExit::Drained {
        store.close().await;
        return;
    }
    if dead_letters > 0 {
        tracing::warn!(store = %name, dead_letters, "adopted store delivered, kept for its dead letters");
        store.close().await;
        status.lock().expect("lock").kept.insert(name, dead_letters);
        return;
    }
    let hidden = dir.with_file_name(format!(".{name}.drained-{}", std::process::id()));
    let renamed = std::fs::rename(&dir, &hidden);
    store.close().await;
    let removed = renamed.and_then(|()| std::fs::remove_dir_all(&hidden));
    let mut status = status.lock().expect("lock");
    match removed {
        Ok(()) => {
            tracing::info!(store = %name, "adopted store delivered whole and removed");
            status.drained += 1;
        }
        Err(e) => {
            status
                .errors
                .insert(name, format!("removing the drained store: {e}"));
        }
    }
}

async fn status_json(State(status): State<SharedStatus>) -> Response {
    Json(status.lock().expect("lock").clone()).into_response()
}

async fn metrics_text(State(status): State<SharedStatus>) -> Response {
    let status = status.lock().expect("lock").clone();
    let mut out = String::new();
    let draining_events: u64 = status.draining.values().sum();
    for (name, help, kind, value) in [
        (
            "edge_outbox_adopter_stores_seen",
            "Store folders seen under the root",
            "counter",
            status.stores_seen,
        ),
        (
            "edge_outbox_adopter_stores_adopted",
            "Stores whose lock the adopter took",
            "counter",
            status.adopted,
        ),
        (
            "edge_outbox_adopter_stores_drained",
            "Adopted stores delivered whole and removed",
            "counter",
            status.drained,
        ),
        (
            "edge_outbox_adopter_stores_kept",
            "Adopted stores kept for their dead letters",
            "gauge",
            status.kept.len() as u64,
        ),
        (
            "edge_outbox_adopter_stores_draining",
            "Stores being drained now",
            "gauge",
            status.draining.len() as u64,
        ),
        (
            "edge_outbox_adopter_backlog_events",
            "Events left in the stores being drained",
            "gauge",
            draining_events,
        ),
    ] {
        let sample = if kind == "counter" {
            format!("{name}_total")
        } else {
            name.to_string()
        };
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{sample} {value}\n"
        ));
    }
    out.push_str("# EOF\n");
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
