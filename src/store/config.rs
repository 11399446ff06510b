//! How a store is opened and bounded: [`StoreConfig`], every setting documented and defaulted
//! here once. It is also the `[store]` section of the sidecar's configuration file (the
//! directory comes from `data_dir`).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// How the store is opened and bounded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The data directory (in the sidecar's file: `data_dir`, not a `[store]` setting).
    #[serde(skip)]
    pub dir: PathBuf,
    /// sled's page cache, in bytes (sled's own default is 1 GiB, too much for a sidecar).
    pub cache_bytes: u64,
    /// Appends beyond this many undelivered events are refused (503).
    pub max_backlog_events: u64,
    /// Appends beyond this many undelivered bytes are refused (503).
    pub max_backlog_bytes: u64,
    /// A tenant's appends beyond this many of its own undelivered events are refused (429),
    /// while other tenants keep appending: a number of events, or a fraction of
    /// `max_backlog_events` written as a decimal (`0.1`). `0` (the default): no per-tenant
    /// limit.
    pub max_backlog_events_per_tenant: TenantShare,
    /// The same in bytes: a number of bytes, or a fraction of `max_backlog_bytes`.
    pub max_backlog_bytes_per_tenant: TenantShare,
    /// At most this many tenants holding backlog are counted one by one (about 100 bytes of
    /// memory each); beyond them, the others share one account, limited and drained as one
    /// tenant. Each undelivered event also costs 4 bytes for its account.
    pub max_tracked_tenants: usize,
    /// How long a `source` + `id` pair is remembered for idempotent appends.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// At most this many `source` + `id` pairs are remembered for de-duplication (about 30
    /// bytes of memory each); beyond it the oldest are forgotten before the window ends.
    pub dedup_max_entries: usize,
    /// Appends are refused (503) while the data volume has less free space than this.
    pub min_free_bytes: u64,
    /// Appends are refused (503) while the store's files take more than this (0: no limit).
    pub max_disk_bytes: u64,
    /// The store moves to a fresh generation (sled database and segment files) once its files
    /// exceed this and twice the backlog, so that disk space comes back after a drain.
    pub rotate_min_bytes: u64,
    /// A new segment file is started once the current one holds this much, so that files whose
    /// records are all delivered can be deleted while the generation lives on.
    pub segment_bytes: u64,
    /// sled is made durable at least this often while only appends come in; appends are
    /// durable in the segment files regardless, and restored from there on open (a longer
    /// interval: fewer syncs, more to restore after a crash).
    #[serde(with = "humantime_serde")]
    pub checkpoint_every: Duration,
    /// While appends arrive more often than this, a group of appends waits this
    /// long for more before its `fdatasync`, so that one sync serves several requests: less CPU
    /// per event at a steady rate, for at most this much more latency. Appends that arrive
    /// less often sync at once, and so, after a few waits that gathered nothing, do those of
    /// a lone client waiting for each answer. `0s`: every group syncs at once.
    #[serde(with = "humantime_serde")]
    pub commit_delay: Duration,
    /// Called at each step of a rotation (the tests copy the directory there to get crash
    /// images).
    #[cfg(test)]
    #[serde(skip)]
    pub(crate) rotation_observer: Option<RotationObserver>,
}

impl Default for StoreConfig {
    /// The defaults, for a store in `./data`.
    fn default() -> StoreConfig {
        StoreConfig::new("./data")
    }
}

impl StoreConfig {
    /// The defaults, for a store in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            dir: dir.into(),
            cache_bytes: 4 * 1024 * 1024,
            max_backlog_events: 1_000_000,
            max_backlog_bytes: 2 * 1024 * 1024 * 1024,
            max_backlog_events_per_tenant: TenantShare::Amount(0),
            max_backlog_bytes_per_tenant: TenantShare::Amount(0),
            max_tracked_tenants: 10_000,
            dedup_window: Duration::from_secs(24 * 3600),
            dedup_max_entries: 1_000_000,
            min_free_bytes: 64 * 1024 * 1024,
            max_disk_bytes: 8 * 1024 * 1024 * 1024,
            rotate_min_bytes: 64 * 1024 * 1024,
            segment_bytes: 64 * 1024 * 1024,
            checkpoint_every: Duration::from_millis(200),
            commit_delay: Duration::from_millis(1),
            #[cfg(test)]
            rotation_observer: None,
        }
    }
}

/// A tenant's share of a backlog limit: an amount, or a fraction of the store's limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TenantShare {
    /// Events or bytes; `0` is no limit.
    Amount(u64),
    /// A fraction of the store's limit, above 0 and at most 1.
    Fraction(f64),
}

impl TenantShare {
    /// The limit this share gives of the store's `limit`; `None` when there is none.
    pub fn of(self, limit: u64) -> Option<u64> {
        match self {
            TenantShare::Amount(0) => None,
            TenantShare::Amount(amount) => Some(amount),
            TenantShare::Fraction(fraction) => Some(((limit as f64) * fraction).max(1.0) as u64),
        }
    }

    /// Why the share cannot be used, if it cannot.
    pub fn check(self) -> Result<(), String> {
        match self {
            TenantShare::Fraction(f) if !(f > 0.0 && f <= 1.0) => Err(format!(
                "{f} is not a fraction above 0 and at most 1 (write a whole number for an amount)"
            )),
            _ => Ok(()),
        }
    }
}

/// The steps of a generation rotation, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationStep {
    /// The new generation holds the copied state; `CURRENT` does not name it yet.
    NewGenerationWritten,
    /// `CURRENT` names both generations.
    Switched,
    /// The draining generation's last chunk is delivered; `CURRENT` names only the new one.
    OldGenerationDropped,
    /// The old generation's directory is gone.
    OldGenerationRemoved,
}

/// A callback told each rotation step with the store's directory.
#[cfg(test)]
#[derive(Clone)]
pub(crate) struct RotationObserver(pub std::sync::Arc<RotationCallback>);

#[cfg(test)]
pub(crate) type RotationCallback = dyn Fn(&std::path::Path, RotationStep) + Send + Sync;

#[cfg(test)]
impl std::fmt::Debug for RotationObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RotationObserver")
    }
}
