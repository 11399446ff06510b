//! Reading a store back from its files, one way for the sidecar and for `inspect`: the
//! generations `CURRENT` names, the chunks each one's sled names, the de-duplication packs and
//! the groups the active generation's log holds beyond sled's last checkpoint. [`open`] turns
//! them into the state the committer starts from and writes the restored part back to sled (a
//! checkpoint) before the store serves; `inspect` reads the same and writes nothing.

use super::chunk::{self, ChunkMeta};
use super::config::StoreConfig;
use super::dedup::{self, DedupGroup, DedupIndex};
use super::durable::Durability;
use super::error::StoreError;
use super::error::{read_error, unavailable};
use super::fingerprint::fingerprint;
use super::generation::{self, Generation};
use super::keys;
use super::live::{name_chunk, Live};
use super::record::{self, Record, RecordError};
use super::segment::{self, Location, ScannedGroup};
use super::shared::{ChunkEntry, Index, Stats};
use super::tenants::{self, Ledger};
use super::writes::Writes;
use crate::clock::now_ms;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

/// The schema version written into new stores (3: records in segment files, chunks of them
/// named in sled, generations); a store of another is refused.
pub const SCHEMA_VERSION: u64 = 3;

/// The state a store opens with.
pub(super) struct Recovered {
    pub active: Live,
    /// The previous generation while it still holds undelivered chunks.
    pub draining: Option<Live>,
    pub index: Index,
    pub dedup: DedupIndex,
    pub stats: Stats,
    /// The backlog per tenant, counted from the undelivered records.
    pub tenants: Ledger,
}

/// Opens (or creates) the store in `config.dir`: its generations, the index of undelivered
/// chunks (sled's, plus what the log holds beyond it), the de-duplication index, counters and
/// the backlog per tenant.
pub(super) fn open(config: &StoreConfig) -> Result<Recovered, StoreError> {
    let root = &config.dir;
    std::fs::create_dir_all(root).map_err(|e| unavailable("create data dir", e))?;
    if root.join("db").exists() {
        return Err(StoreError::Unavailable(format!(
            "{} holds a store of the pre-release layout (schema 1, one sled database); \
             drain it with the release that wrote it, or use a new data directory",
            root.display()
        )));
    }
    let ids = match generation::read_current(root).map_err(|e| unavailable("read CURRENT", e))? {
        Some(ids) => ids,
        None => create(root, config.cache_bytes)?,
    };
    generation::remove_unlisted(root, &ids).map_err(|e| unavailable("clean data dir", e))?;
    let mut lives = Vec::new();
    let count = ids.len();
    for (i, (generation, durability)) in open_generations(root, &ids, config.cache_bytes)?
        .into_iter()
        .enumerate()
    {
        let id = generation.id;
        lives.push(
            Live::new(generation, durability, i + 1 == count)
                .map_err(|e| unavailable(&format!("open generation {id}"), e))?,
        );
    }
    let mut active = lives.pop().expect("CURRENT names a generation");
    let draining = lives.pop();
    let moved = active
        .generation
        .move_dead_letters_out_of_the_main_tree()
        .map_err(|e| unavailable("move dead letters", e))?;
    if moved > 0 {
        active
            .durability
            .sync()
            .map_err(|e| unavailable("fdatasync failed", e))?;
        tracing::info!(moved, "moved dead letters into their own tree");
    }
    check_schema(&active.generation, root)?;

    let mut index = Index::default();
    for live in draining.iter().chain([&active]) {
        for named in named_chunks(&live.generation)? {
            let (first, entry) = repaired(&live.generation, named);
            index.chunks.insert(first, entry);
        }
        index.generations.push(live.generation.clone());
    }
    restore_log(&mut active, &mut index.chunks)?;
    let mut dedup = DedupIndex::default();
    for pack in dedup_packs(&active.generation)? {
        match pack.groups {
            Ok(groups) => {
                for group in &groups {
                    dedup.insert_group(pack.key, group);
                }
            }
            Err(e) => tracing::error!(
                group = pack.key, error = %e,
                "a de-duplication group is corrupt; its pairs are no longer recognised"
            ),
        }
    }
    let stats = counters(&active.generation, &index)?;
    let tenants = tenants::count_backlog(&mut index, config.max_tracked_tenants);
    Ok(Recovered {
        active,
        draining,
        index,
        dedup,
        stats,
        tenants,
    })
}

/// A new store: generation 1 with the schema version, named in `CURRENT`.
fn create(root: &Path, cache_bytes: u64) -> Result<Vec<u64>, StoreError> {
    generation::remove_unlisted(root, &[]).map_err(|e| unavailable("clean data dir", e))?;
    let (new, mut durability) =
        Generation::open(root, 1, cache_bytes).map_err(|e| unavailable("create generation", e))?;
    new.tree()
        .insert(keys::meta("schema_version"), &SCHEMA_VERSION.to_be_bytes())
        .map_err(read_error)?;
    new.flush().map_err(read_error)?;
    durability
        .sync()
        .map_err(|e| unavailable("fdatasync failed", e))?;
    drop((new, durability));
    generation::write_current(root, &[1]).map_err(|e| unavailable("write CURRENT", e))?;
    Ok(vec![1])
}

/// Opens the generations `ids` (from `CURRENT`) under `root`, oldest first.
pub(super) fn open_generations(
    root: &Path,
    ids: &[u64],
    cache_bytes: u64,
) -> Result<Vec<(Generation, Durability)>, StoreError> {
    if let Some(id) = ids
        .iter()
        .find(|id| !generation::dir_of(root, **id).exists())
    {
        // Opening it would create an empty database: an empty store is not the store.
        return Err(StoreError::Unavailable(format!(
            "generation {id} named in {}/CURRENT is missing; the data directory is damaged",
            root.display()
        )));
    }
    ids.iter()
        .map(|id| {
            Generation::open(root, *id, cache_bytes)
                .map_err(|e| unavailable(&format!("open generation {id}"), e))
        })
        .collect()
}

/// Refuses a store of another schema than this release's.
pub(super) fn check_schema(active: &Generation, root: &Path) -> Result<(), StoreError> {
    let version = meta_u64(&active.tree(), "schema_version")?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Unavailable(format!(
            "the store has schema version {version}, newer than this release's {SCHEMA_VERSION}"
        )));
    }
    if version < SCHEMA_VERSION {
        return Err(StoreError::Unavailable(format!(
            "{} holds a store of the pre-release schema {version} (records inside sled); \
             drain it with the release that wrote it, or use a new data directory",
            root.display()
        )));
    }
    Ok(())
}

/// A counter of the main tree (0 when unset).
pub(super) fn meta_u64(tree: &sled::Tree, name: &str) -> Result<u64, StoreError> {
    Ok(tree
        .get(keys::meta(name))
        .map_err(read_error)?
        .and_then(|v| keys::u64_value(&v))
        .unwrap_or(0))
}

/// A chunk as a generation's sled names it.
pub(super) struct NamedChunk {
    pub first: u64,
    /// Its metadata, or why it does not decode.
    pub meta: Result<ChunkMeta, RecordError>,
    /// Where its frames are (`None`: missing or corrupt).
    pub location: Option<Location>,
}

/// Every chunk the generation's sled names, in sequence order.
pub(super) fn named_chunks(generation: &Generation) -> Result<Vec<NamedChunk>, StoreError> {
    let tree = generation.tree();
    let mut chunks = Vec::new();
    for item in tree.scan_prefix([keys::CHUNK_META]) {
        let (key, value) = item.map_err(read_error)?;
        let first = keys::seq_of(&key);
        let location = tree
            .get(keys::chunk(first))
            .map_err(read_error)?
            .and_then(|v| Location::decode(&v));
        chunks.push(NamedChunk {
            first,
            meta: record::decode::<ChunkMeta>(&value),
            location,
        });
    }
    Ok(chunks)
}

/// The index entry of a named chunk, repaired where it is damaged: a chunk without a location
/// points nowhere (the relay quarantines its records as truncated); corrupt metadata is
/// rebuilt from the frames (its records are delivered again at worst).
fn repaired(generation: &Arc<Generation>, named: NamedChunk) -> (u64, ChunkEntry) {
    let first = named.first;
    let location = named.location.unwrap_or_else(|| {
        tracing::error!(chunk = first, "a chunk's location is missing or corrupt");
        Location {
            segment: 0,
            offset: 0,
            len: 0,
        }
    });
    let meta = named.meta.unwrap_or_else(|e| {
        tracing::error!(chunk = first, error = %e, "chunk metadata is corrupt; rebuilt from its frames");
        let lengths = generation
            .segments
            .read(&location)
            .ok()
            .and_then(|frames| segment::lengths_of(&frames).ok())
            .filter(|lengths| !lengths.is_empty())
            .unwrap_or_else(|| vec![0]);
        ChunkMeta::new(now_ms(), lengths)
    });
    let entry = ChunkEntry {
        generation: generation.clone(),
        meta,
        location,
        accounts: Arc::from([]),
    };
    (first, entry)
}

/// The groups the active generation's log holds beyond sled's `log_end` that no chunk in
/// `named` names yet (appended after the last checkpoint), and the bytes of a group at the end
/// that a crash cut short (never acknowledged).
pub(super) fn unnamed_log_groups<T>(
    active: &Generation,
    named: &BTreeMap<u64, T>,
) -> Result<(Vec<ScannedGroup>, u64), StoreError> {
    let tree = active.tree();
    let log_end = tree
        .get(keys::meta(keys::LOG_END))
        .map_err(read_error)?
        .and_then(|v| keys::decode_log_end(&v))
        .unwrap_or_default();
    let next_seq = meta_u64(&tree, "next_seq")?;
    drop(tree);
    let (mut groups, torn) = segment::scan(&active.segments_dir(), log_end)
        .map_err(|e| unavailable("read the segment files", e))?;
    // Already named in sled: a checkpoint raced the crash.
    groups.retain(|g| !(g.first_seq < next_seq.max(1) && named.contains_key(&g.first_seq)));
    Ok((groups, torn))
}

/// A stored de-duplication pack.
pub(super) struct Pack {
    pub key: u64,
    /// Its stored size.
    pub bytes: u64,
    /// Its groups, or why they do not decode.
    pub groups: Result<Vec<DedupGroup>, RecordError>,
}

/// The de-duplication packs of a generation: the window a rotation copied in, then those of
/// later commits.
pub(super) fn dedup_packs(generation: &Generation) -> Result<Vec<Pack>, StoreError> {
    let window = generation.window();
    let tree = generation.tree();
    window
        .iter()
        .chain(tree.scan_prefix([keys::DEDUP]))
        .map(|item| {
            let (key, value) = item.map_err(read_error)?;
            Ok(Pack {
                key: keys::seq_of(&key),
                bytes: value.len() as u64,
                groups: dedup::decode_pack(&value),
            })
        })
        .collect()
}

/// Restores what was appended after sled's last checkpoint: names the log's unnamed groups in
/// chunks, de-duplication entries and counters, and makes that durable (a checkpoint).
fn restore_log(
    active: &mut Live,
    chunks: &mut BTreeMap<u64, ChunkEntry>,
) -> Result<(), StoreError> {
    let (groups, torn) = unnamed_log_groups(&active.generation, chunks)?;
    if torn > 0 {
        tracing::warn!(
            bytes = torn,
            "the log ends in a group cut short by a crash (never acknowledged); ignored"
        );
    }
    let next_seq = meta_u64(&active.generation.tree(), "next_seq")?;
    let mut batch = Writes::default();
    let mut recovered = 0u64;
    let mut last_seq = 0;
    let now = now_ms();
    for group in groups {
        let dedup = dedup_group_of(&group);
        let appended_ms = match dedup.entries.is_empty() {
            true => now,
            false => dedup.appended_ms,
        };
        let frames = group.frames;
        for cut in chunk::cut(
            group.first_seq,
            &group.lengths,
            frames.segment,
            frames.offset,
        ) {
            let meta = ChunkMeta::new(appended_ms, cut.lengths);
            name_chunk(&mut batch, cut.first_seq, &meta, &cut.location);
            last_seq = cut.first_seq + meta.count() - 1;
            chunks.insert(
                cut.first_seq,
                ChunkEntry {
                    generation: active.generation.clone(),
                    meta,
                    location: cut.location,
                    accounts: Arc::from([]),
                },
            );
        }
        if !dedup.entries.is_empty() {
            batch.insert(
                &keys::dedup(dedup.first_seq()),
                dedup::encode_pack(std::slice::from_ref(&dedup)),
            );
        }
        recovered += group.lengths.len() as u64;
    }
    if recovered > 0 {
        batch.insert(
            keys::meta("next_seq"),
            &(last_seq + 1).max(next_seq).to_be_bytes(),
        );
        tracing::info!(
            events = recovered,
            "restored events appended after the last checkpoint from the segment files"
        );
    }
    batch.insert(
        keys::meta(keys::LOG_END),
        &keys::encode_log_end(active.log_position()),
    );
    active.write(batch, true).map_err(StoreError::Unavailable)
}

/// The de-duplication entries of a group read back from the log. A record that does not
/// decode is restored as it is (the relay quarantines it), without an entry.
fn dedup_group_of(group: &ScannedGroup) -> DedupGroup {
    let mut dedup = DedupGroup::default();
    for (i, raw) in segment::records(&group.bytes, &group.lengths)
        .iter()
        .enumerate()
    {
        let Ok(record) = raw
            .as_ref()
            .map_err(|e| e.to_string())
            .and_then(|raw| record::decode::<Record>(raw).map_err(|e| e.to_string()))
        else {
            continue;
        };
        dedup.appended_ms = match dedup.entries.is_empty() {
            true => record.appended_ms,
            false => dedup.appended_ms.min(record.appended_ms),
        };
        dedup.entries.push((
            fingerprint(&record.event_source, &record.event_id),
            group.first_seq + i as u64,
        ));
    }
    dedup
}

/// The counters, from sled's and from the index (the backlog is counted, not read).
fn counters(active: &Generation, index: &Index) -> Result<Stats, StoreError> {
    let tree = active.tree();
    let dead_tree = active.dead();
    let mut stats = Stats {
        cursor: meta_u64(&tree, "cursor")?,
        // Counted, not read: the dead-letter tree and the counter are written apart.
        dead_letters: dead_tree.len() as u64,
        ..Stats::default()
    };
    let mut last_seq = 0;
    for (first, entry) in &index.chunks {
        let (events, bytes) = entry.meta.undelivered();
        stats.backlog_events += events;
        stats.backlog_bytes += bytes;
        last_seq = last_seq.max(first + entry.meta.count() - 1);
    }
    if let Some(item) = dead_tree.iter().next_back() {
        last_seq = last_seq.max(keys::seq_of(&item.map_err(read_error)?.0));
    }
    stats.next_seq = meta_u64(&tree, "next_seq")?.max(last_seq + 1).max(1);
    Ok(stats)
}
