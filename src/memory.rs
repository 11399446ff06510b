//! Allocator settings for a long-running sidecar. glibc's malloc raises its mmap threshold
//! after a large block is freed (so later large buffers, such as the relay's batch reads, land
//! in the per-thread arenas), and it keeps freed pages in those arenas. Measured on a store
//! holding 1,000,000 events, that was 30-50 MiB of resident memory holding nothing. The
//! threshold is pinned, and free pages are handed back once a second.

use std::time::Duration;

/// Buffers at least this large get their own mapping, returned to the system when freed.
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: libc::c_int = 128 * 1024;

/// Pins the mmap threshold; call once at start.
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes malloc's parameters; M_MMAP_THRESHOLD takes a size.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Hands free pages of every arena back to the system.
pub fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Releases free memory every second until the runtime stops.
pub fn spawn_release_task() -> tokio::task::JoinHandle<()> {
    tokio::spawn(async {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let _ = tokio::task::spawn_blocking(release_free_memory).await;
        }
    })
}
