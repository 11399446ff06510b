//! How long a commit group waits for more appends before it syncs (`store.commit_delay`), like
//! PostgreSQL's `commit_delay`: one `fdatasync` costs about as much CPU as answering a request,
//! so while appends arrive faster than the delay, a group that waits for the next few shares
//! one sync among them. While they arrive slower, waiting would gather nothing, and a group
//! syncs at once.

use std::time::{Duration, Instant};

/// The weight of the newest gap in the running mean of the gaps between appends.
const NEWEST_GAP_WEIGHT: f64 = 1.0 / 16.0;

/// Watches when appends arrive and says how long a group may wait for more.
pub(super) struct Pacer {
    delay: Duration,
    /// The running mean of the gaps between consecutive appends, in seconds.
    mean_gap: Option<f64>,
    last_arrival: Option<Instant>,
}

impl Pacer {
    /// A pacer that lets a group wait at most `delay` (zero: never).
    pub(super) fn new(delay: Duration) -> Pacer {
        Pacer {
            delay,
            mean_gap: None,
            last_arrival: None,
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
    /// it syncs; `None` when it syncs at once: no delay is set, or appends arrive so seldom
    /// that not even one more is expected within it.
    pub(super) fn gather_until(&self, first: Instant) -> Option<Instant> {
        let mean_gap = self.mean_gap?;
        (!self.delay.is_zero() && mean_gap <= self.delay.as_secs_f64()).then(|| first + self.delay)
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
        let (pacer, now) = paced(2, 500, 100);
        assert_eq!(
            pacer.gather_until(now),
            Some(now + Duration::from_millis(2))
        );
    }

    #[test]
    fn seldom_appends_sync_at_once() {
        let (pacer, now) = paced(2, 5_000, 100);
        assert_eq!(pacer.gather_until(now), None);
        // The first append of all has no gap to judge by.
        let (pacer, now) = paced(2, 500, 1);
        assert_eq!(pacer.gather_until(now), None);
    }

    #[test]
    fn no_delay_never_waits() {
        let (pacer, now) = paced(0, 10, 100);
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
}
