//! Why the store refused or failed a request.

/// Why the store refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("backlog limit reached ({events} events, {bytes} bytes stored); retry later")]
    BacklogFull { events: u64, bytes: u64 },
    /// One tenant holds its whole share of the backlog (`store.max_backlog_*_per_tenant`).
    /// `tenant` is empty for the shared account of tenants beyond `store.max_tracked_tenants`.
    #[error("tenant {tenant:?} holds {events} events ({bytes} bytes) of the backlog; its share is {limit} {unit} (store.max_backlog_{unit}_per_tenant); other tenants are not held back; retry later")]
    TenantBacklogFull {
        tenant: String,
        events: u64,
        bytes: u64,
        limit: u64,
        /// `events` or `bytes`: which limit was reached.
        unit: &'static str,
    },
    #[error("the data volume is nearly full ({free} bytes free, {reserve} kept in reserve); retry later")]
    DiskFull { free: u64, reserve: u64 },
    #[error("the store's files take {used} bytes, at the limit of {limit} (store.max_disk_bytes); retry later")]
    DiskLimit { used: u64, limit: u64 },
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("no record with sequence number {0}")]
    NotFound(u64),
    /// Another process owns the data directory (see [`super::lock`]): what the lock said.
    #[error("{0}")]
    Locked(String),
}

/// [`StoreError::Unavailable`] naming what failed.
pub(super) fn unavailable(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what}: {error}"))
}

/// A failed read of sled or of a segment file.
pub(super) fn read_error(e: impl std::fmt::Display) -> StoreError {
    unavailable("read failed", e)
}
