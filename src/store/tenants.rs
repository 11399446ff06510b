//! The backlog per tenant (the Kafka message key): how many undelivered events and bytes each
//! tenant holds. The committer keeps it exact (appends add, confirmations and dead letters take
//! away) so that one tenant can be held to its share of the backlog
//! (`store.max_backlog_*_per_tenant`), and the relay reads it to drain tenants fairly
//! (`Ledger::fair_shares`).
//!
//! Memory is bounded: each undelivered record costs a 4-byte account number (kept with its
//! chunk in the index), and at most `store.max_tracked_tenants` tenants holding backlog have an
//! account of their own. Tenants beyond that share one account, [`OTHERS`], which is limited and
//! drained as if it were one tenant. An account whose backlog drops to zero is forgotten.

use super::record::{self, RecordView};
use super::segment;
use super::shared::Index;
use std::collections::HashMap;
use std::sync::Arc;

/// An account number, kept for every undelivered record.
pub type Account = u32;

/// The account of every tenant beyond `store.max_tracked_tenants`.
pub const OTHERS: Account = 0;

/// What the ledger says one tenant holds.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TenantBacklog {
    /// The tenant key; empty for the shared account of untracked tenants.
    pub tenant: String,
    pub events: u64,
    pub bytes: u64,
}

#[derive(Debug, Default, Clone)]
struct Holding {
    name: Arc<str>,
    events: u64,
    bytes: u64,
}

/// The backlog by account.
#[derive(Debug)]
pub(crate) struct Ledger {
    /// By account number; [`OTHERS`] first.
    holdings: Vec<Holding>,
    by_name: HashMap<Arc<str>, Account>,
    /// Account numbers whose tenant holds nothing any more.
    free: Vec<Account>,
    max_tracked: usize,
}

/// How much of one batch each tenant may take while several hold backlog (see
/// `Ledger::fair_shares`): each account at most `events` records and `bytes` bytes (and at
/// least its first record).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FairShare {
    pub events: u64,
    pub bytes: u64,
}

impl Ledger {
    pub fn new(max_tracked: usize) -> Ledger {
        Ledger {
            holdings: vec![Holding::default()],
            by_name: HashMap::new(),
            free: Vec::new(),
            max_tracked,
        }
    }

    /// The account of `tenant`, opened if it has none (or [`OTHERS`] when
    /// `store.max_tracked_tenants` tenants already hold backlog).
    pub fn account(&mut self, tenant: &str) -> Account {
        if let Some(&account) = self.by_name.get(tenant) {
            return account;
        }
        if self.by_name.len() >= self.max_tracked {
            return OTHERS;
        }
        let name: Arc<str> = Arc::from(tenant);
        let holding = Holding {
            name: name.clone(),
            events: 0,
            bytes: 0,
        };
        let account = match self.free.pop() {
            Some(account) => {
                self.holdings[account as usize] = holding;
                account
            }
            None => {
                self.holdings.push(holding);
                (self.holdings.len() - 1) as Account
            }
        };
        self.by_name.insert(name, account);
        account
    }

    /// `(events, bytes)` held by the account `tenant` has, or would get.
    pub fn held_by(&self, tenant: &str) -> (u64, u64) {
        match self.by_name.get(tenant) {
            Some(&account) => self.holds(account),
            None if self.by_name.len() >= self.max_tracked => self.holds(OTHERS),
            None => (0, 0),
        }
    }

    /// The name of the account `tenant` has, or would get (empty: the shared one).
    pub fn account_name_for<'a>(&self, tenant: &'a str) -> &'a str {
        match self.by_name.contains_key(tenant) || self.by_name.len() < self.max_tracked {
            true => tenant,
            false => "",
        }
    }

    /// `(events, bytes)` the account holds.
    pub fn holds(&self, account: Account) -> (u64, u64) {
        let holding = &self.holdings[account as usize];
        (holding.events, holding.bytes)
    }

    pub fn add(&mut self, account: Account, bytes: u64) {
        let holding = &mut self.holdings[account as usize];
        holding.events += 1;
        holding.bytes += bytes;
    }

    /// Takes a delivered or parked record away; an account left empty is forgotten.
    pub fn take(&mut self, account: Account, bytes: u64) {
        let Some(holding) = self.holdings.get_mut(account as usize) else {
            return;
        };
        holding.events = holding.events.saturating_sub(1);
        holding.bytes = holding.bytes.saturating_sub(bytes);
        if holding.events == 0 && account != OTHERS {
            self.by_name.remove(&holding.name);
            *holding = Holding::default();
            self.free.push(account);
        }
    }

    /// How many tenants hold backlog (the shared account counting as one).
    pub fn tenants(&self) -> usize {
        self.by_name.len() + usize::from(self.holdings[OTHERS as usize].events > 0)
    }

    /// The `n` tenants holding the most events, largest first.
    pub fn largest(&self, n: usize) -> Vec<TenantBacklog> {
        let mut held: Vec<&Holding> = self.holdings.iter().filter(|h| h.events > 0).collect();
        held.sort_by(|a, b| b.events.cmp(&a.events).then_with(|| a.name.cmp(&b.name)));
        held.into_iter()
            .take(n)
            .map(|h| TenantBacklog {
                tenant: h.name.to_string(),
                events: h.events,
                bytes: h.bytes,
            })
            .collect()
    }

    /// The share of a batch of `max_events` / `max_bytes` each tenant may take so that every
    /// tenant holding backlog gets into it (water filling: tenants holding less than the share
    /// take all they hold, the others the share, and the shares add up to the batch). `None`
    /// when the batch holds everything anyway, or only one tenant waits: then the batch simply
    /// follows append order.
    pub fn fair_shares(&self, max_events: u64, max_bytes: u64) -> Option<FairShare> {
        let held: Vec<&Holding> = self.holdings.iter().filter(|h| h.events > 0).collect();
        if held.len() < 2 {
            return None;
        }
        let events = water_level(held.iter().map(|h| h.events).collect(), max_events);
        let bytes = water_level(held.iter().map(|h| h.bytes).collect(), max_bytes);
        let capped = held.iter().any(|h| h.events > events || h.bytes > bytes);
        capped.then_some(FairShare { events, bytes })
    }
}

/// The largest level such that the amounts, each cut to it, add up to at most `total` (at least
/// 1); the largest amount when they all fit.
fn water_level(mut amounts: Vec<u64>, total: u64) -> u64 {
    amounts.sort_unstable();
    let mut left = total;
    let count = amounts.len() as u64;
    for (i, amount) in amounts.iter().enumerate() {
        let sharing = count - i as u64;
        if amount.saturating_mul(sharing) > left {
            return (left / sharing).max(1);
        }
        left -= amount;
    }
    amounts.last().copied().unwrap_or(0)
}

/// Counts the backlog of an index just opened: gives each chunk its records' accounts and
/// returns the ledger. It reads every undelivered chunk once (about a second per GiB held).
pub(super) fn count_backlog(index: &mut Index, max_tracked: usize) -> Ledger {
    let mut ledger = Ledger::new(max_tracked);
    for entry in index.chunks.values_mut() {
        let frames = entry
            .generation
            .segments
            .read(&entry.location)
            .unwrap_or_default();
        let records = segment::records(&frames, &entry.meta.lengths);
        let accounts: Vec<Account> = (0..entry.meta.lengths.len())
            .map(|i| {
                let tenant = records
                    .get(i)
                    .and_then(|raw| raw.as_ref().ok())
                    .and_then(|raw| record::decode_in_place::<RecordView>(raw).ok())
                    .map(|view| view.message.key);
                // A record that cannot be read is quarantined by the relay; its account is
                // the shared one.
                let account = tenant.map_or(OTHERS, |tenant| ledger.account(tenant));
                if !entry.meta.is_delivered(i) {
                    ledger.add(account, u64::from(entry.meta.lengths[i]));
                }
                account
            })
            .collect();
        entry.accounts = accounts.into();
    }
    ledger
}

/// What a fair read has taken so far from each account, and which accounts are done for this
/// batch (a tenant's records are taken in order: once one is left out, so are the later ones).
#[derive(Default)]
pub(super) struct Taken {
    /// Events and bytes taken, and whether the account is done, by account number (accounts
    /// are small numbers handed out by the [`Ledger`]; a hash map cost 6 % of the drain).
    by_account: Vec<(u64, u64, bool)>,
}

impl Taken {
    /// Whether the account's next record, of `size` bytes, fits its share (its first always
    /// does); once one does not, none of the account's later records do.
    pub fn admits(&mut self, share: &FairShare, account: Account, size: u64) -> bool {
        let (events, bytes, done) = self.entry(account);
        if *done {
            return false;
        }
        if *events > 0 && (*events >= share.events || *bytes + size > share.bytes) {
            *done = true;
            return false;
        }
        true
    }

    /// Counts a record taken into the batch.
    pub fn take(&mut self, account: Account, size: u64) {
        let (events, bytes, _) = self.entry(account);
        *events += 1;
        *bytes += size;
    }

    fn entry(&mut self, account: Account) -> &mut (u64, u64, bool) {
        let at = account as usize;
        if at >= self.by_account.len() {
            self.by_account.resize(at + 1, (0, 0, false));
        }
        &mut self.by_account[at]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_opened_counted_and_forgotten_when_empty() {
        let mut ledger = Ledger::new(2);
        let a = ledger.account("a");
        let b = ledger.account("b");
        assert_ne!(a, b);
        assert_eq!(ledger.account("c"), OTHERS, "beyond the tracked tenants");
        ledger.add(a, 10);
        ledger.add(a, 5);
        ledger.add(b, 7);
        assert_eq!(ledger.holds(a), (2, 15));
        assert_eq!(ledger.tenants(), 2);
        ledger.take(a, 10);
        ledger.take(a, 5);
        assert_eq!(ledger.holds(a), (0, 0));
        assert_eq!(ledger.tenants(), 1);
        let c = ledger.account("c");
        assert_eq!(c, a, "the emptied account is reused");
        assert_eq!(
            ledger.largest(5),
            vec![TenantBacklog {
                tenant: "b".into(),
                events: 1,
                bytes: 7
            }]
        );
    }

    #[test]
    fn fair_shares_fill_the_batch_and_leave_room_for_every_tenant() {
        let mut ledger = Ledger::new(100);
        let noisy = ledger.account("noisy");
        for _ in 0..500 {
            ledger.add(noisy, 1000);
        }
        for t in 0..10 {
            let quiet = ledger.account(&format!("quiet-{t}"));
            for _ in 0..10 {
                ledger.add(quiet, 1000);
            }
        }
        let share = ledger.fair_shares(200, u64::MAX).unwrap();
        // The quiet ten take their 100, the noisy one the other 100.
        assert_eq!(share.events, 100);
        assert_eq!(ledger.fair_shares(10_000, u64::MAX), None, "all of it fits");
        let share = ledger.fair_shares(10_000, 150_000).unwrap();
        assert_eq!(share.bytes, 50_000);
    }

    #[test]
    fn the_water_level_is_at_least_one() {
        assert_eq!(water_level(vec![5, 5, 5], 2), 1);
        assert_eq!(water_level(vec![1, 2, 30], 12), 9);
        assert_eq!(water_level(vec![1, 2, 3], 100), 3);
    }
}
