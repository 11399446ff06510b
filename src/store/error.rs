//! Why the store refused or failed a request.

/// Why the store refused or failed a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("backlog limit reached ({events} events, {bytes} bytes stored); retry later")]
    BacklogFull { events: u64, bytes: u64 },
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
