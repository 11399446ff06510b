//! Allocator settings for a long-running sidecar. glibc's malloc raises its mmap threshold
//! after a large block is freed (so later large buffers land in the per-thread arenas), and
//! it keeps freed pages in those arenas: measured on a store holding 1,000,000 events, that
//! was 30-50 MiB of resident memory holding nothing. The threshold is pinned, and free pages
//! are handed back once a second. The binary also turns transparent huge pages off for its
//! process. (glibc's allocator stays: mimalloc held 45 MiB more resident under load with a
//! million events held, against a 100 MiB target.)

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

/// Turns transparent huge pages off for this process. Where the kernel backs every anonymous
/// mapping with 2 MiB pages (`enabled = always`, as on the machine the figures come from), a
/// partly used region of the heap becomes a whole huge page (seen with mimalloc: 64 MiB
/// resident at idle instead of 17). The binary calls this first thing; a program embedding the
/// library decides for its own process.
pub fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process's memory map.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
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
