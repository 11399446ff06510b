//! Planning a commit group: what each command changes (new records and their sequence
//! numbers, delivered bits, dead letters, counters, de-duplication entries), decided against the
//! limits and gathered in a [`Group`] before anything is written. A refused command changes
//! nothing.

use super::Committer;
use crate::clock::now_ms;
use crate::store::chunk::{self, ChunkMeta};
use crate::store::commands::{Appended, Prepared};
use crate::store::dedup::DedupGroup;
use crate::store::error::read_error;
use crate::store::error::StoreError;
use crate::store::fingerprint::Fingerprint;
use crate::store::keys;
use crate::store::live::name_chunk;
use crate::store::record::{self, DeadLetter, Record};
use crate::store::segment::{self, Location};
use crate::store::shared::{ChunkEntry, Stats};
use crate::store::tenants::Account;
use crate::store::writes::Writes;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// What one commit group changes, built before anything is written.
#[derive(Default)]
pub(super) struct Group {
    pub stats: Stats,
    pub active: Writes,
    pub draining: Writes,
    pub draining_touched: bool,
    /// Existing chunks changed in this group (delivered bits), by first sequence number.
    pub touched: BTreeMap<u64, ChunkEntry>,
    /// Encoded records appended in this group; the first has sequence number `pending_first`.
    pub pending: Vec<Vec<u8>>,
    pub pending_first: u64,
    /// The tenant account of each pending record.
    pub pending_accounts: Vec<Account>,
    /// The frames of the new records, to be appended to the active segment file.
    pub frames: Vec<u8>,
    /// De-duplication entries of this group, in order (persisted as they are) and by
    /// fingerprint; `appended_ms` is the earliest append time: the entries expire with it.
    pub new_dedup: DedupGroup,
    pub new_dedup_seq: HashMap<Fingerprint, u64>,
    pub dead_gone: HashSet<u64>,
    /// Dead letters parked in this group: applied to the dead-letter tree before the main
    /// tree's writes (a crash between leaves a letter whose record is also still undelivered:
    /// sent twice at worst, never lost).
    pub dead_inserts: Writes,
    /// Dead letters replayed or purged: applied after the main tree's writes (a replayed
    /// record is stored before its letter goes).
    pub dead_removes: Writes,
    /// Chunks written in this group, with their records' tenant accounts.
    pub written: Vec<(u64, ChunkMeta, Location, Arc<[Account]>)>,
    pub bytes_in_group: u64,
    /// Free space on the volume and the store's disk use, read once per group.
    pub free_bytes: Option<u64>,
    pub disk_bytes: Option<u64>,
    /// Bytes of sled values written in this group.
    pub bytes_written: u64,
    /// sled must be durable before the answers (a confirmation, a dead letter): appends alone
    /// are durable in the segment file.
    pub checkpoint: bool,
}

impl Group {
    pub fn new(stats: Stats) -> Group {
        Group {
            stats,
            pending_first: stats.next_seq,
            ..Group::default()
        }
    }

    /// Whether the group appends records.
    pub fn appends(&self) -> bool {
        !self.pending.is_empty()
    }
}

impl Committer {
    pub(super) fn append(
        &self,
        group: &mut Group,
        events: Vec<Prepared>,
    ) -> Result<Vec<Appended>, StoreError> {
        // First decide, without changing anything, which events are new.
        let mut outcomes: Vec<Appended> = Vec::with_capacity(events.len());
        let mut fresh: Vec<(usize, Prepared)> = Vec::new();
        let mut first_in_request: HashMap<Fingerprint, usize> = HashMap::new();
        // Later copies of a pair new in this request -> the index of its first copy.
        let mut repeat_of: Vec<(usize, usize)> = Vec::new();
        let mut new_bytes = 0u64;
        for (i, event) in events.into_iter().enumerate() {
            let print = event.print;
            let known = group
                .new_dedup_seq
                .get(&print)
                .copied()
                .or_else(|| self.dedup.get(print));
            if let Some(seq) = known {
                outcomes.push(Appended {
                    seq,
                    duplicate: true,
                });
                continue;
            }
            if let Some(&first) = first_in_request.get(&print) {
                repeat_of.push((i, first));
                outcomes.push(Appended {
                    seq: 0,
                    duplicate: true,
                });
                continue;
            }
            new_bytes += event.encoded.len() as u64;
            first_in_request.insert(print, i);
            fresh.push((i, event));
            outcomes.push(Appended {
                seq: 0,
                duplicate: false,
            });
        }
        let new_events = fresh.len() as u64;
        if new_events > 0 {
            self.check_room(group, new_bytes)?;
            self.check_tenant_shares(&fresh)?;
        }
        if new_events > 0
            && (group.stats.backlog_events + new_events > self.config.max_backlog_events
                || group.stats.backlog_bytes + new_bytes > self.config.max_backlog_bytes)
        {
            return Err(StoreError::BacklogFull {
                events: group.stats.backlog_events,
                bytes: group.stats.backlog_bytes,
            });
        }
        let accounts: Vec<Account> = {
            let mut tenants = self.shared.tenants.lock().expect("tenants lock");
            (fresh.iter())
                .map(|(_, e)| {
                    let account = tenants.account(&e.tenant);
                    tenants.add(account, e.encoded.len() as u64);
                    account
                })
                .collect()
        };
        for ((i, event), account) in fresh.into_iter().zip(accounts) {
            let print = event.print;
            let seq = self.push_record(group, event.encoded, account);
            let dedup = &mut group.new_dedup;
            dedup.appended_ms = match dedup.entries.is_empty() {
                true => event.appended_ms,
                false => dedup.appended_ms.min(event.appended_ms),
            };
            dedup.entries.push((print, seq));
            group.new_dedup_seq.insert(print, seq);
            outcomes[i].seq = seq;
        }
        group.bytes_in_group += new_bytes;
        // Repeats inside the request answer with the sequence number of their first copy.
        for (i, first) in repeat_of {
            outcomes[i].seq = outcomes[first].seq;
        }
        Ok(outcomes)
    }

    /// Refuses an append that would take one of its tenants beyond its share of the backlog
    /// (`store.max_backlog_*_per_tenant`), naming the first such tenant.
    fn check_tenant_shares(&self, fresh: &[(usize, Prepared)]) -> Result<(), StoreError> {
        let max_events =
            (self.config.max_backlog_events_per_tenant).of(self.config.max_backlog_events);
        let max_bytes =
            (self.config.max_backlog_bytes_per_tenant).of(self.config.max_backlog_bytes);
        if max_events.is_none() && max_bytes.is_none() {
            return Ok(());
        }
        let mut wanted: Vec<(&str, u64, u64)> = Vec::new();
        for (_, event) in fresh {
            let size = event.encoded.len() as u64;
            match wanted.iter_mut().find(|(t, _, _)| *t == event.tenant) {
                Some((_, events, bytes)) => {
                    *events += 1;
                    *bytes += size;
                }
                None => wanted.push((&event.tenant, 1, size)),
            }
        }
        let tenants = self.shared.tenants.lock().expect("tenants lock");
        for (tenant, events, bytes) in wanted {
            let (held_events, held_bytes) = tenants.held_by(tenant);
            let over =
                |held: u64, new: u64, limit: Option<u64>| limit.filter(|limit| held + new > *limit);
            let refused = over(held_events, events, max_events)
                .map(|limit| (limit, "events"))
                .or_else(|| over(held_bytes, bytes, max_bytes).map(|limit| (limit, "bytes")));
            if let Some((limit, unit)) = refused {
                return Err(StoreError::TenantBacklogFull {
                    tenant: tenants.account_name_for(tenant).to_string(),
                    events: held_events,
                    bytes: held_bytes,
                    limit,
                    unit,
                });
            }
        }
        Ok(())
    }

    /// Refuses an append that would take the volume below its reserve or the store beyond its
    /// disk limit.
    fn check_room(&self, group: &mut Group, new_bytes: u64) -> Result<(), StoreError> {
        let free = match group.free_bytes {
            Some(free) => free,
            None => {
                let free = crate::store::disk::free_bytes(&self.config.dir)
                    .map_err(|e| StoreError::Unavailable(format!("cannot read free space: {e}")))?;
                *group.free_bytes.insert(free)
            }
        };
        // Room for what this group writes, several times over (its records, then sled's log).
        let needed = 4 * (group.bytes_in_group + new_bytes);
        if free < self.config.min_free_bytes + needed {
            return Err(StoreError::DiskFull {
                free,
                reserve: self.config.min_free_bytes,
            });
        }
        if self.config.max_disk_bytes > 0 {
            let used = *group
                .disk_bytes
                .get_or_insert_with(|| self.shared.disk_usage(&self.config.dir));
            if used + needed > self.config.max_disk_bytes {
                return Err(StoreError::DiskLimit {
                    used,
                    limit: self.config.max_disk_bytes,
                });
            }
        }
        Ok(())
    }

    /// Gives an encoded record the next sequence number and queues it for this group's chunks
    /// (the caller has counted it in its tenant's `account`).
    fn push_record(&self, group: &mut Group, encoded: Vec<u8>, account: Account) -> u64 {
        let seq = group.stats.next_seq;
        group.stats.next_seq += 1;
        group.stats.backlog_events += 1;
        group.stats.backlog_bytes += encoded.len() as u64;
        group.pending.push(encoded);
        group.pending_accounts.push(account);
        seq
    }

    /// The chunk holding `seq`, as changed so far in this group.
    fn chunk_of(&self, group: &mut Group, seq: u64) -> Option<u64> {
        if let Some((first, entry)) = group.touched.range(..=seq).next_back() {
            if first + entry.meta.count() > seq {
                return Some(*first);
            }
        }
        let index = self.shared.index.read().expect("index lock");
        let (first, entry) = index.chunks.range(..=seq).next_back()?;
        if first + entry.meta.count() <= seq {
            return None;
        }
        group.touched.insert(*first, entry.clone());
        Some(*first)
    }

    /// Marks `seq` delivered; returns its stored length if it was undelivered.
    fn take_record(&self, group: &mut Group, seq: u64) -> Option<u64> {
        let first = self.chunk_of(group, seq)?;
        let entry = group.touched.get_mut(&first).expect("just touched");
        let index = (seq - first) as usize;
        let len = entry.meta.mark_delivered(index)?;
        if let Some(&account) = entry.accounts.get(index) {
            (self.shared.tenants.lock().expect("tenants lock")).take(account, len);
        }
        group.stats.backlog_events -= 1;
        group.stats.backlog_bytes = group.stats.backlog_bytes.saturating_sub(len);
        Some(len)
    }

    pub(super) fn confirm(&self, group: &mut Group, seqs: &[u64]) -> Result<(), StoreError> {
        for &seq in seqs {
            if self.take_record(group, seq).is_some() {
                group.stats.cursor = group.stats.cursor.max(seq);
            }
        }
        Ok(())
    }

    /// The stored bytes of an undelivered record (empty when its frames cannot be read).
    fn raw_record(&self, group: &mut Group, seq: u64) -> Result<Vec<u8>, StoreError> {
        let first = self.chunk_of(group, seq).ok_or(StoreError::NotFound(seq))?;
        let entry = &group.touched[&first];
        let index = (seq - first) as usize;
        if entry.meta.is_delivered(index) {
            return Err(StoreError::NotFound(seq));
        }
        let frames = match entry.generation.segments.read(&entry.location) {
            Ok(frames) => frames,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Vec::new(),
            Err(e) => return Err(read_error(e)),
        };
        Ok(segment::records(&frames, &entry.meta.lengths)
            .swap_remove(index)
            .map(<[u8]>::to_vec)
            .unwrap_or_default())
    }

    pub(super) fn park(
        &self,
        group: &mut Group,
        seq: u64,
        error: String,
    ) -> Result<(), StoreError> {
        let raw = self.raw_record(group, seq)?;
        self.take_record(group, seq);
        let already = self
            .active
            .generation
            .dead()
            .contains_key(keys::dead(seq))
            .map_err(read_error)?;
        let dead = DeadLetter {
            seq,
            raw,
            error,
            parked_ms: now_ms(),
        };
        group
            .dead_inserts
            .insert(&keys::dead(seq), record::encode(&dead));
        // A crash between the two generations' syncs can leave it parked and undelivered;
        // parking it again then replaces the letter instead of counting it twice.
        if !already {
            group.stats.dead_letters += 1;
        }
        Ok(())
    }

    fn dead_letter(&self, group: &Group, seq: u64) -> Result<DeadLetter, StoreError> {
        if group.dead_gone.contains(&seq) {
            return Err(StoreError::NotFound(seq));
        }
        let value = self
            .active
            .generation
            .dead()
            .get(keys::dead(seq))
            .map_err(read_error)?
            .ok_or(StoreError::NotFound(seq))?;
        record::decode::<DeadLetter>(&value)
            .map_err(|e| StoreError::Unavailable(format!("dead letter {seq} is corrupt: {e}")))
    }

    pub(super) fn replay(&self, group: &mut Group, seq: u64) -> Result<u64, StoreError> {
        // Check before taking, so that a refused replay changes nothing.
        let dead = self.dead_letter(group, seq)?;
        let record = record::decode::<Record>(&dead.raw).map_err(|e| {
            StoreError::Unavailable(format!(
                "dead letter {seq} holds a corrupt record ({e}); it can only be purged"
            ))
        })?;
        self.remove_dead(group, seq);
        let account = {
            let mut tenants = self.shared.tenants.lock().expect("tenants lock");
            let account = tenants.account(&record.message.key);
            tenants.add(account, dead.raw.len() as u64);
            account
        };
        Ok(self.push_record(group, dead.raw, account))
    }

    pub(super) fn purge(&self, group: &mut Group, seq: u64) -> Result<(), StoreError> {
        if group.dead_gone.contains(&seq)
            || !self
                .active
                .generation
                .dead()
                .contains_key(keys::dead(seq))
                .map_err(read_error)?
        {
            return Err(StoreError::NotFound(seq));
        }
        self.remove_dead(group, seq);
        Ok(())
    }

    fn remove_dead(&self, group: &mut Group, seq: u64) {
        group.dead_removes.remove(&keys::dead(seq));
        group.dead_gone.insert(seq);
        group.stats.dead_letters = group.stats.dead_letters.saturating_sub(1);
    }

    /// Lays out the group's new records for the active segment file, in `group.frames`: a
    /// group header, then the records as frames, named in chunks of about
    /// [`chunk::CHUNK_TARGET_BYTES`]; `log_end` moves past them in the same sled batch.
    pub(super) fn build_chunks(&self, group: &mut Group) {
        if group.pending.is_empty() {
            return;
        }
        let now = now_ms();
        let (segment, end) = self.active.log_position();
        let records = std::mem::take(&mut group.pending);
        let accounts = std::mem::take(&mut group.pending_accounts);
        let lengths: Vec<u32> = records.iter().map(|r| r.len() as u32).collect();
        segment::begin_group(&mut group.frames);
        for record in &records {
            segment::frame_into(&mut group.frames, record);
        }
        segment::seal_group(&mut group.frames, group.pending_first, lengths.len() as u32);
        let frames_at = end + segment::GROUP_HEADER;
        for cut in chunk::cut(group.pending_first, &lengths, segment, frames_at) {
            let from = (cut.first_seq - group.pending_first) as usize;
            let of_chunk = Arc::from(&accounts[from..from + cut.lengths.len()]);
            let meta = ChunkMeta::new(now, cut.lengths);
            put_chunk(group, cut.first_seq, meta, cut.location, of_chunk);
        }
        let log_end = (segment, end + group.frames.len() as u64);
        group
            .active
            .insert(keys::meta(keys::LOG_END), &keys::encode_log_end(log_end));
    }
}

/// Names a new chunk of the active generation: where its frames are, and its metadata.
fn put_chunk(
    group: &mut Group,
    first: u64,
    meta: ChunkMeta,
    location: Location,
    accounts: Arc<[Account]>,
) {
    group.bytes_written += name_chunk(&mut group.active, first, &meta, &location);
    group.written.push((first, meta, location, accounts));
}
