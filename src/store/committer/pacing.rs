//! How long a commit group waits for more appends before it syncs (`store.commit_delay`), like
//! PostgreSQL's `commit_delay`: one `fdatasync` costs about as much CPU as answering a request,
//! so while appends arrive faster than the delay, a group that waits for the next few shares
//! one sync among them. While they arrive slower, waiting would gather nothing, and a group
//! syncs at once. A lone client that waits for each answer sends nothing while its group
//! waits: once waits keep gathering nothing, a group waits only now and then, to see whether
//! others came.

use std::time::{Duration, Instant};

/// The weight of the newest gap in the running mean of the gaps between appends.
const NEWEST_GAP_WEIGHT: f64 = 1.0 / 16.0;
/// After this many waits in a row that gathered no append...
const FRUITLESS_WAITS: u32 = 4;
/// ...only one group in this many waits.
const PROBE_EVERY: u32 = 32;

/// Watches when appends arrive and says how long a group may wait for more.
pub(super) struct Pacer {
    delay: Duration,
    /// The running mean of the gaps between consecutive appends, in seconds.
    mean_gap: Option<f64>,
    last_arrival: Option<Instant>,
    /// Waits in a row that gathered no append.
    fruitless: u32,
    /// Groups that did not wait since the last fruitless streak's probe.
    skipped: u32,
}

impl Pacer {
    /// A pacer that lets a group wait at most `delay` (zero: never).
    pub(super) fn new(delay: Duration) -> Pacer {
        Pacer {
            delay,
            mean_gap: None,
            last_arrival: None,
            fruitless: 0,
            skipped: 0,
        }
    }

    /// An append was queued at `now` (appends queued by several threads may come a little out
    /// of order: such a gap counts as zero).
    pub(super) fn arrived(&mut self, now: Instant) {
        if let Some(last) = self.last_arrival {
            let gap = now.saturating_duration_since(last).as_secs_f64();
            self.mean_gap = Some(match self.mean_gap {
                None => gap,
                Some(mean) => mean + (gap - mean) * NEWEST_GAP_WEIGHT,
            });
        }
        self.last_arrival = Some(self.last_arrival.map_or(now, |last| last.max(now)));
    }

    /// Until when a group whose first append arrived at `first` gathers more appends before
    /// it syncs; `None` when it syncs at once: no delay is set, appends arrive so seldom that
    /// not even one more is expected within it, or the last waits gathered nothing (then one
    /// group in [`PROBE_EVERY`] still waits).
    pub(super) fn gather_until(&mut self, first: Instant) -> Option<Instant> {
        let mean_gap = self.mean_gap?;
        if self.delay.is_zero() || mean_gap > self.delay.as_secs_f64() {
            return None;
        }
        if self.fruitless >= FRUITLESS_WAITS {
            self.skipped += 1;
            if self.skipped < PROBE_EVERY {
                return None;
            }
            self.skipped = 0;
        }
        Some(first + self.delay)
    }

    /// A wait is over, and gathered `appends` more.
    pub(super) fn waited(&mut self, appends: usize) {
        self.fruitless = match appends {
            0 => self.fruitless.saturating_add(1),
            _ => 0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paced(delay_ms: u64, gap_us: u64, appends: usize) -> (Pacer, Instant) {
        let mut pacer = Pacer::new(Duration::from_millis(delay_ms));
        let mut now = Instant::now();
        for _ in 0..appends {
            pacer.arrived(now);
            now += Duration::from_micros(gap_us);
        }
        (pacer, now)
    }

    #[test]
    fn frequent_appends_wait_for_the_delay() {
        let (mut pacer, now) = paced(2, 500, 100);
        assert_eq!(
            pacer.gather_until(now),
            Some(now + Duration::from_millis(2))
        );
    }

    #[test]
    fn seldom_appends_sync_at_once() {
        let (mut pacer, now) = paced(2, 5_000, 100);
        assert_eq!(pacer.gather_until(now), None);
        // The first append of all has no gap to judge by.
        let (mut pacer, now) = paced(2, 500, 1);
        assert_eq!(pacer.gather_until(now), None);
    }

    #[test]
    fn no_delay_never_waits() {
        let (mut pacer, now) = paced(0, 10, 100);
        assert_eq!(pacer.gather_until(now), None);
    }

    #[test]
    fn the_mean_follows_a_change_of_rate() {
        let (mut pacer, mut now) = paced(2, 500, 100);
        for _ in 0..100 {
            pacer.arrived(now);
            now += Duration::from_millis(10);
        }
        assert_eq!(pacer.gather_until(now), None, "the load fell");
    }

    #[test]
    fn waits_that_gather_nothing_stop_but_for_a_probe_now_and_then() {
        let (mut pacer, now) = paced(2, 500, 100);
        for _ in 0..FRUITLESS_WAITS {
            assert!(pacer.gather_until(now).is_some());
            pacer.waited(0);
        }
        let waits: Vec<bool> = (0..2 * PROBE_EVERY)
            .map(|_| pacer.gather_until(now).is_some())
            .collect();
        assert_eq!(waits.iter().filter(|w| **w).count(), 2, "{waits:?}");
        assert!(waits[PROBE_EVERY as usize - 1]);
        // A probe that gathers something: every group waits again.
        pacer.waited(3);
        assert!((0..10).all(|_| pacer.gather_until(now).is_some()));
    }
}
