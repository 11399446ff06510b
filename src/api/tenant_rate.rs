//! The ingest rate per tenant (`ingest.max_events_per_second_per_tenant`), on governor's keyed
//! limiter: a tenant over its rate is answered 429 with `Retry-After`, never dropped, and other
//! tenants are not affected. Memory is bounded: at most `store.max_tracked_tenants` tenants
//! have a limiter state of their own (states indistinguishable from a fresh one are cleared
//! when that many are reached); beyond them, the others share one.

use crate::config::Limit;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The key under which untracked tenants share one rate.
const OTHERS: &str = "";

/// How often, at most, stale states are cleared while the limiter is at its bound.
const CLEAR_EVERY: Duration = Duration::from_secs(1);

pub struct TenantRates {
    limiter: DefaultKeyedRateLimiter<String>,
    per_second: NonZeroU32,
    max_tracked: usize,
    last_cleared: Mutex<Instant>,
}

/// Why a tenant's events were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Over its rate: retry after this long.
    OverRate(Duration),
    /// More events in one request than the rate lets through at once: they never fit.
    TooMany,
}

impl TenantRates {
    /// The limiter for `limit`; `None` when it is unlimited.
    pub fn new(limit: Limit, max_tracked: usize) -> Option<TenantRates> {
        let Limit::PerSecond(n) = limit else {
            return None;
        };
        let per_second = NonZeroU32::new(n)?;
        Some(TenantRates {
            limiter: RateLimiter::keyed(Quota::per_second(per_second)),
            per_second,
            max_tracked: max_tracked.max(1),
            last_cleared: Mutex::new(Instant::now()),
        })
    }

    /// The rate, events per second.
    pub fn per_second(&self) -> u32 {
        self.per_second.get()
    }

    /// Takes `events` events of `tenant` from its rate, or says why not.
    pub fn check(&self, tenant: &str, events: u32) -> Result<(), Refusal> {
        let Some(events) = NonZeroU32::new(events) else {
            return Ok(());
        };
        let key = self.key(tenant).to_string();
        match self.limiter.check_key_n(&key, events) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => Err(Refusal::OverRate(
                not_until.wait_time_from(governor::clock::Clock::now(self.limiter.clock())),
            )),
            Err(_) => Err(Refusal::TooMany),
        }
    }

    /// The key `tenant` is limited under: its own while fewer than `max_tracked` tenants have
    /// been limited within the last second, else the shared one.
    fn key<'a>(&self, tenant: &'a str) -> &'a str {
        if self.limiter.len() < self.max_tracked {
            return tenant;
        }
        let mut last = self.last_cleared.lock().expect("rates lock");
        if last.elapsed() >= CLEAR_EVERY {
            self.limiter.retain_recent();
            *last = Instant::now();
        }
        match self.limiter.len() < self.max_tracked {
            true => tenant,
            false => OTHERS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_tenant_has_its_own_rate() {
        let rates = TenantRates::new(Limit::PerSecond(5), 100).unwrap();
        assert_eq!(rates.check("noisy", 5), Ok(()));
        let Err(Refusal::OverRate(wait)) = rates.check("noisy", 1) else {
            panic!("the sixth event within the second is refused");
        };
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert_eq!(rates.check("quiet", 5), Ok(()), "others are not affected");
        assert_eq!(rates.check("quiet", 6), Err(Refusal::TooMany));
        assert!(TenantRates::new(Limit::Unlimited, 100).is_none());
    }

    #[test]
    fn tenants_beyond_the_bound_share_one_rate() {
        let rates = TenantRates::new(Limit::PerSecond(2), 2).unwrap();
        rates.check("a", 1).unwrap();
        rates.check("b", 1).unwrap();
        // Two tenants are being limited: the third and fourth share the untracked rate.
        rates.check("c", 1).unwrap();
        rates.check("d", 1).unwrap();
        assert!(matches!(rates.check("e", 1), Err(Refusal::OverRate(_))));
    }
}
