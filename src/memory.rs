//! Allocator settings for a long-running sidecar. glibc's malloc raises its mmap threshold
//! after a large block is freed (up to 32 MiB, so that later large buffers land in the
//! per-thread arenas), and it keeps freed pages in those arenas: measured on a store holding
//! 1,000,000 events, that was 30-50 MiB of resident memory holding nothing. The threshold is
//! pinned at 4 MiB, and free pages are handed back when [`TrimPolicy`] says. Below the
//! threshold stay the buffers a drain allocates and frees for every batch (zlib's deflate
//! state, librdkafka's message sets, the store's chunk reads): each mapped afresh, their page
//! faults and unmaps would cost about 8 % of the sidecar's CPU in a drain. Above it, the
//! de-duplication table and other large, long-lived blocks get their own mapping, returned
//! when freed. sled's deferred frees are run before a trim ([`hand_over_deferred_frees`]). The
//! binary also turns transparent huge pages off for its process. (glibc's
//! allocator stays: mimalloc held 45 MiB more resident under load with a million events held,
//! against a 100 MiB target.)

use std::time::Duration;

/// Buffers at least this large get their own mapping, returned to the system when freed.
#[cfg(target_env = "gnu")]
const MMAP_THRESHOLD: libc::c_int = 4 * 1024 * 1024;

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

/// Hands free pages of every arena back to the system, once sled's deferred frees have run.
pub fn release_free_memory() {
    run_deferred_frees();
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases memory the allocator holds free.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// How many times [`run_deferred_frees`] pins and flushes: each time frees at most 8 bags.
const DEFERRED_FREE_ROUNDS: usize = 256;

/// sled frees what it replaces, its 512 KiB IO buffers above all, through crossbeam's
/// epoch-based reclamation: a thread's garbage waits in the thread's own bag until 64 items fill
/// it, then on a global queue until some thread pins again two epochs later, which frees 8
/// bags at a time. With nothing else done, up to 64 IO buffers (about 30 MiB, with a million
/// events held) stayed allocated after a burst until the store moved again. So each thread
/// that writes to sled hands its bag over after a write or a flush (this function), and a trim
/// runs the queue first ([`run_deferred_frees`]).
pub fn hand_over_deferred_frees() {
    sled::crossbeam_pin().flush();
}

/// Frees what waits on the collector's queue (see [`hand_over_deferred_frees`]).
fn run_deferred_frees() {
    for _ in 0..DEFERRED_FREE_ROUNDS {
        hand_over_deferred_frees();
    }
}

/// The process's resident memory in bytes, from `/proc/self/statm` (0 where that is missing).
/// Cheap, and takes no allocator lock (glibc's `mallinfo2` walks every free chunk under its
/// arena's lock: about 1 % of the sidecar's CPU in a drain when called once a second).
pub fn resident_bytes() -> usize {
    // SAFETY: sysconf only reads a system setting.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * page)
}

/// When to hand free memory back. A trim walks every arena under its lock (2-3 ms of wall
/// time at 2,000 events/s, measured) and the pages it returns fault back in at the next batch,
/// so at a steady rate, where freed buffers are soon reused, it is better left undone. It
/// runs once the store has been still for a check interval (nothing appended, nothing
/// delivered), then again every [`TrimPolicy::SPACING`] checks while it stays still (what is
/// freed then, such as librdkafka's queue given up after `relay.stall_timeout`, is handed back
/// too); and while the store is busy, once resident memory is [`TrimPolicy::GROWTH`] above its
/// lowest since the last trim (a burst), but no sooner than [`TrimPolicy::SPACING`] checks after
/// the last trim: a drain's buffers come and go by tens of MiB, and trimming them every second
/// only has them fault back in.
#[derive(Debug)]
pub struct TrimPolicy {
    /// The activity counter at the previous check.
    seen: u64,
    /// Whether the counter moved since the store was last trimmed while still.
    dirty: bool,
    /// The least resident memory seen since the last trim.
    resident_low: usize,
    /// Checks since the last trim.
    checks_since_trim: u32,
}

impl TrimPolicy {
    /// How far resident memory may grow above its lowest since the last trim before a trim.
    pub const GROWTH: usize = 16 << 20;
    /// The fewest checks between two trims, but for the first still check after activity.
    pub const SPACING: u32 = 10;

    pub fn new(activity: u64, resident: usize) -> TrimPolicy {
        TrimPolicy {
            seen: activity,
            dirty: true,
            resident_low: resident,
            checks_since_trim: 0,
        }
    }

    /// Called once per check interval with a counter that moves with every append and every
    /// delivery, and the resident bytes; says whether to trim now.
    pub fn due(&mut self, activity: u64, resident: usize) -> bool {
        let still = activity == self.seen;
        self.seen = activity;
        self.resident_low = self.resident_low.min(resident);
        self.checks_since_trim = self.checks_since_trim.saturating_add(1);
        let spaced = self.checks_since_trim >= Self::SPACING;
        if !still {
            self.dirty = true;
            return spaced && resident > self.resident_low + Self::GROWTH;
        }
        std::mem::replace(&mut self.dirty, false) || spaced
    }

    /// Records a trim, and the resident bytes after it.
    pub fn trimmed(&mut self, resident: usize) {
        self.resident_low = resident;
        self.checks_since_trim = 0;
    }
}

/// Checks every second whether to release free memory ([`TrimPolicy`]), until the runtime
/// stops. `activity` is a counter that moves with every append and every delivery.
pub fn spawn_release_task(
    activity: impl Fn() -> u64 + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut policy = TrimPolicy::new(activity(), resident_bytes());
        let mut every = tokio::time::interval(Duration::from_secs(1));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let before = resident_bytes();
            if policy.due(activity(), before) {
                let after = tokio::task::spawn_blocking(|| {
                    release_free_memory();
                    resident_bytes()
                })
                .await
                .unwrap_or(0);
                tracing::debug!(
                    resident_before = before,
                    resident_after = after,
                    "released free memory"
                );
                policy.trimmed(after);
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};

    const MIB: usize = 1 << 20;

    /// What a live thread deferred and handed over is freed by the trim's rounds; without the
    /// hand-over it would wait in the thread's bag for 63 more items.
    #[test]
    fn garbage_a_live_thread_hands_over_is_freed_before_a_trim() {
        let freed = Arc::new(AtomicBool::new(false));
        let flag = freed.clone();
        let (handed, was_handed) = mpsc::channel();
        let (end, ended) = mpsc::channel::<()>();
        let writer = std::thread::spawn(move || {
            sled::crossbeam_pin().defer(move || flag.store(true, Ordering::SeqCst));
            hand_over_deferred_frees();
            handed.send(()).unwrap();
            // Stays alive, as sled's writers do: a thread that ends hands its bag over anyway.
            let _ = ended.recv();
        });
        was_handed.recv().unwrap();
        // Other tests pin too, which can hold the epoch back for a moment.
        for _ in 0..1000 {
            run_deferred_frees();
            if freed.load(Ordering::SeqCst) {
                break;
            }
            std::thread::yield_now();
        }
        assert!(freed.load(Ordering::SeqCst));
        end.send(()).unwrap();
        writer.join().unwrap();
    }

    /// Calls `due` until it says yes, the store busy (`activity` moving) or still; how many
    /// calls it took.
    fn checks_until_due(
        policy: &mut TrimPolicy,
        activity: &mut u64,
        resident: usize,
        busy: bool,
    ) -> u32 {
        (1..=100)
            .find(|_| {
                *activity += u64::from(busy);
                policy.due(*activity, resident)
            })
            .expect("a trim within 100 checks")
    }

    #[test]
    fn a_still_store_is_trimmed_at_once_then_every_spacing_checks() {
        let mut policy = TrimPolicy::new(5, 0);
        assert!(policy.due(5, 0), "what start-up freed is released");
        policy.trimmed(0);
        assert!(!policy.due(9, 2 * MIB), "busy, resident memory low");
        assert!(policy.due(9, 2 * MIB), "still again after activity");
        policy.trimmed(2 * MIB);
        let mut activity = 9;
        assert_eq!(
            checks_until_due(&mut policy, &mut activity, 2 * MIB, false),
            TrimPolicy::SPACING,
            "still: trimmed again after the spacing (memory freed while still)"
        );
    }

    #[test]
    fn a_busy_store_is_trimmed_once_resident_memory_grew_enough_and_not_every_check() {
        let mut activity = 0;
        let mut policy = TrimPolicy::new(activity, 30 * MIB);
        let spacing = TrimPolicy::SPACING;
        for (resident, why) in [
            (30 * MIB, "resident memory at its low"),
            (10 * MIB, "handed back: the low mark falls"),
        ] {
            activity += 1;
            assert!(!policy.due(activity, resident), "{why}");
        }
        for _ in 0..spacing {
            activity += 1;
            assert!(
                !policy.due(activity, 26 * MIB),
                "16 MiB more, not more than that, before and after the spacing"
            );
        }
        activity += 1;
        assert!(policy.due(activity, 27 * MIB), "grown past 16 MiB");
        policy.trimmed(27 * MIB);
        assert_eq!(
            checks_until_due(&mut policy, &mut activity, 44 * MIB, true),
            spacing,
            "grown again from the resident bytes after the trim: not before {spacing} checks"
        );
        policy.trimmed(27 * MIB);
        for _ in 0..3 * spacing {
            activity += 1;
            assert!(
                !policy.due(activity, 40 * MIB),
                "13 MiB more than after the trim: left alone"
            );
        }
    }
}
