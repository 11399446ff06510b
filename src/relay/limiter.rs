//! The relay's rate limits: events per second and bytes per second, each optional, built on
//! governor. governor's `until_n_ready` refuses more cells than the burst, so the byte
//! limiter's burst always covers the largest message the relay can send.

use crate::config::Limit;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

pub struct Limiter {
    events: Option<DefaultDirectRateLimiter>,
    bytes: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
}

impl Limiter {
    /// `largest_message` is the biggest message (in bytes) that will ever be asked for.
    pub fn new(events: Limit, bytes: Limit, largest_message: u64) -> Limiter {
        let events = match events {
            Limit::Unlimited => None,
            Limit::PerSecond(n) => Some(RateLimiter::direct(Quota::per_second(nonzero(n)))),
        };
        let bytes = match bytes {
            Limit::Unlimited => None,
            Limit::PerSecond(n) => {
                let burst = nonzero(n.max(largest_message.min(u32::MAX as u64) as u32));
                let quota = Quota::per_second(nonzero(n)).allow_burst(burst);
                Some((RateLimiter::direct(quota), burst))
            }
        };
        Limiter { events, bytes }
    }

    /// Waits until one message of `size` bytes may be sent; returns how long it waited.
    pub async fn wait(&self, size: usize) -> Duration {
        if self.events.is_none() && self.bytes.is_none() {
            return Duration::ZERO;
        }
        let start = Instant::now();
        if let Some(limiter) = &self.events {
            limiter.until_ready().await;
        }
        if let Some((limiter, burst)) = &self.bytes {
            // A message larger than the burst (only possible for records stored under an
            // older, larger limit) takes the whole burst rather than failing.
            let cells = nonzero((size.min(u32::MAX as usize) as u32).clamp(1, burst.get()));
            limiter
                .until_n_ready(cells)
                .await
                .expect("cells never exceed the burst");
        }
        start.elapsed()
    }
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("at least 1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unlimited_rate_never_waits() {
        let limiter = Limiter::new(Limit::Unlimited, Limit::Unlimited, 1 << 20);
        for _ in 0..10_000 {
            limiter.wait(1 << 20).await;
        }
    }

    #[tokio::test]
    async fn byte_burst_covers_the_largest_message() {
        // 100 bytes/s but 1 MiB messages: the first one passes at once instead of failing.
        let limiter = Limiter::new(Limit::Unlimited, Limit::PerSecond(100), 1 << 20);
        let waited = limiter.wait(1 << 20).await;
        assert!(waited < Duration::from_millis(500), "waited {waited:?}");
        // Bigger than the burst: clamped, still no panic.
        let limiter = Limiter::new(Limit::Unlimited, Limit::PerSecond(1_000_000), 10);
        limiter.wait(5_000_000).await;
    }

    #[tokio::test]
    async fn the_event_rate_is_enforced() {
        let limiter = Limiter::new(Limit::PerSecond(20), Limit::Unlimited, 0);
        let start = Instant::now();
        // The burst is 20; 30 events need at least 10 more cells at 20/s = 0.5 s.
        for _ in 0..30 {
            limiter.wait(1).await;
        }
        assert!(
            start.elapsed() >= Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
    }
}
