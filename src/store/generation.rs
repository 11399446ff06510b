//! Store generations: how disk space comes back, since sled does not shrink its files and
//! segment files are append-only. `CURRENT` names the live generations (`gen-<id>/`: a sled
//! database and its `segments/`), oldest first; the active one takes every write, an older one
//! only drains. `CURRENT` is replaced atomically, so a crash leaves the old or the new list, and a
//! directory it does not name is removed on open.

use super::durable::{sync_dir, Durability};
use super::segment::SegmentReader;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard};

const CURRENT: &str = "CURRENT";

/// One sled database of the store. The handle sits behind a lock so that the committer can
/// close and reopen it: sled keeps every page it wrote in memory whatever its cache size says
/// (sled #986, #1093), and a reopened database loads pages only as they are read.
pub struct Generation {
    pub id: u64,
    pub dir: PathBuf,
    cache_bytes: u64,
    handle: RwLock<Option<Handle>>,
    /// The records' segment files (`segments/` inside the generation's directory).
    pub segments: SegmentReader,
}

struct Handle {
    db: sled::Db,
    tree: sled::Tree,
    /// The de-duplication window a rotation copied in, as one value: kept apart from the main
    /// tree so that its leaf is never rewritten by the inserts of later commits (sled rewrites a
    /// leaf whole, and this value is a blob file of many megabytes).
    window: sled::Tree,
    /// The dead letters (`d` keys), kept apart from the main tree for the same reason: a
    /// parked record can be a megabyte, and in the main tree its leaf was rewritten (a new blob
    /// file each time) by the chunk and de-duplication writes of every later commit.
    dead: sled::Tree,
}

/// The generation's tree, held open while this lives.
pub struct TreeRef<'a>(RwLockReadGuard<'a, Option<Handle>>);

impl std::ops::Deref for TreeRef<'_> {
    type Target = sled::Tree;
    fn deref(&self) -> &sled::Tree {
        &self
            .0
            .as_ref()
            .expect("a generation is open between reopens")
            .tree
    }
}

fn open_handle(dir: &Path, cache_bytes: u64) -> io::Result<Handle> {
    let db = open_sled(
        sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .flush_every_ms(None),
    )?;
    let tree = db.open_tree("outbox").map_err(io::Error::other)?;
    let window = db.open_tree(WINDOW_TREE).map_err(io::Error::other)?;
    let dead = db.open_tree(DEAD_TREE).map_err(io::Error::other)?;
    Ok(Handle {
        db,
        tree,
        window,
        dead,
    })
}

impl Generation {
    /// Opens (or creates) generation `id` under `root`, with the files it needs for syncing.
    pub fn open(root: &Path, id: u64, cache_bytes: u64) -> io::Result<(Generation, Durability)> {
        let dir = dir_of(root, id);
        let handle = open_handle(&dir, cache_bytes)?;
        std::fs::create_dir_all(segments_dir(&dir))?;
        let durability = Durability::open(&dir)?;
        sync_dir(root)?;
        let generation = Generation {
            id,
            segments: SegmentReader::new(segments_dir(&dir)),
            dir,
            cache_bytes,
            handle: RwLock::new(Some(handle)),
        };
        Ok((generation, durability))
    }

    /// The tree; readers of the generation hold this while they read.
    pub fn tree(&self) -> TreeRef<'_> {
        TreeRef(self.handle.read().expect("generation lock"))
    }

    /// The tree holding the de-duplication window copied in by a rotation (same keys as the
    /// main tree's `h` values). Written only by a rotation; its values are deleted as they expire.
    pub fn window(&self) -> sled::Tree {
        self.handle
            .read()
            .expect("generation lock")
            .as_ref()
            .expect("a generation is open between reopens")
            .window
            .clone()
    }

    /// The tree of dead letters (keys and values as the main tree's `d` entries had them).
    /// Written by parks, replays and purges, in order with the main tree (see the committer).
    pub fn dead(&self) -> sled::Tree {
        self.handle
            .read()
            .expect("generation lock")
            .as_ref()
            .expect("a generation is open between reopens")
            .dead
            .clone()
    }

    /// Moves dead letters that an earlier release kept in the main tree into the dead-letter
    /// tree (one flush; a crash midway leaves copies in both, moved again on the next open).
    /// The caller syncs. Returns how many moved.
    pub fn move_dead_letters_out_of_the_main_tree(&self) -> io::Result<usize> {
        let dead = self.dead();
        let tree = self.tree();
        let mut removes = sled::Batch::default();
        let mut moved = 0;
        for item in tree.scan_prefix([super::keys::DEAD]) {
            let (key, value) = item.map_err(io::Error::other)?;
            dead.insert(&key, value).map_err(io::Error::other)?;
            removes.remove(key);
            moved += 1;
        }
        if moved > 0 {
            tree.apply_batch(removes).map_err(io::Error::other)?;
            tree.flush().map_err(io::Error::other)?;
        }
        Ok(moved)
    }

    /// Drops the dead-letter tree once it is empty and opens a fresh one: sled then frees its
    /// pages, and with them the blob files of the letters it held (removing keys only appends
    /// to the leaf, which keeps its old blob until sled rewrites it). Not durable by itself.
    pub fn drop_dead_tree_if_empty(&self) -> io::Result<bool> {
        let mut guard = self.handle.write().expect("generation lock");
        let handle = guard
            .as_mut()
            .expect("a generation is open between reopens");
        if !handle.dead.is_empty() {
            return Ok(false);
        }
        handle.db.drop_tree(DEAD_TREE).map_err(io::Error::other)?;
        handle.dead = handle.db.open_tree(DEAD_TREE).map_err(io::Error::other)?;
        Ok(true)
    }

    /// sled's flush (not an fsync: see [`Durability`]); hands the IO buffers it replaced to
    /// the collector ([`crate::memory::hand_over_deferred_frees`]).
    pub fn flush(&self) -> sled::Result<usize> {
        let flushed = self.tree().flush();
        crate::memory::hand_over_deferred_frees();
        flushed
    }

    /// Closes the database and opens it again, dropping the pages sled kept in memory. Waits
    /// for readers; everything written must have been flushed and synced before.
    pub fn reopen(&self) -> io::Result<Durability> {
        let mut handle = self.handle.write().expect("generation lock");
        if let Some(old) = handle.take() {
            old.db.flush().map_err(io::Error::other)?;
            drop(old);
        }
        *handle = Some(open_handle(&self.dir, self.cache_bytes)?);
        Durability::open(&self.dir)
    }

    /// Where this generation keeps its segment files.
    pub fn segments_dir(&self) -> PathBuf {
        segments_dir(&self.dir)
    }

    /// Bytes this generation's files take on disk.
    pub fn disk_bytes(&self) -> u64 {
        disk_usage(&self.dir)
    }
}

/// Opens a sled database. A handle dropped a moment ago (a store closed and opened again in
/// one process) may still hold sled's file lock while its IO threads finish: wait for it a
/// little. A lock held by another process stays an error.
pub fn open_sled(config: sled::Config) -> io::Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        match config.open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => return Err(io::Error::other(e)),
        }
    }
}

/// The name of the tree that [`Generation::window`] opens.
pub const WINDOW_TREE: &str = "window";

/// The name of the dead-letter tree.
pub const DEAD_TREE: &str = "dead_letters";

pub fn dir_of(root: &Path, id: u64) -> PathBuf {
    root.join(format!("gen-{id:06}"))
}

/// Where a generation (at `dir`) keeps its segment files.
pub fn segments_dir(dir: &Path) -> PathBuf {
    dir.join("segments")
}

/// The live generations named in `CURRENT`, oldest first; `None` for a new store.
pub fn read_current(root: &Path) -> io::Result<Option<Vec<u64>>> {
    let text = match std::fs::read_to_string(root.join(CURRENT)) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let ids = text
        .split_whitespace()
        .map(|id| id.parse::<u64>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| io::Error::other(format!("{CURRENT} is unreadable: {text:?}")))?;
    if ids.is_empty() || ids.len() > 2 || ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(io::Error::other(format!(
            "{CURRENT} names no valid generations: {text:?}"
        )));
    }
    Ok(Some(ids))
}

/// Replaces `CURRENT` atomically and durably.
pub fn write_current(root: &Path, ids: &[u64]) -> io::Result<()> {
    let tmp = root.join(format!("{CURRENT}.tmp"));
    let text: Vec<String> = ids.iter().map(u64::to_string).collect();
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(format!("{}\n", text.join(" ")).as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&tmp, root.join(CURRENT))?;
    sync_dir(root)
}

/// Removes generation directories `CURRENT` does not name (an unfinished rotation or a retired
/// generation whose deletion was cut short).
pub fn remove_unlisted(root: &Path, live: &[u64]) -> io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_prefix("gen-"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if !live.contains(&id) {
            tracing::info!(
                generation = id,
                "removing a store generation no longer in use"
            );
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

/// Bytes allocated on disk to the files under `path`.
pub fn disk_usage(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&entry.path()),
            Ok(m) => m.blocks() * 512,
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn current_round_trips_and_rejects_garbage() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_current(dir.path()).unwrap(), None);
        write_current(dir.path(), &[3, 4]).unwrap();
        assert_eq!(read_current(dir.path()).unwrap(), Some(vec![3, 4]));
        for bad in ["", "x", "4 3", "1 2 3"] {
            std::fs::write(dir.path().join(CURRENT), bad).unwrap();
            assert!(read_current(dir.path()).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn reopening_keeps_the_data_and_waits_for_readers() {
        let dir = tempfile::tempdir().unwrap();
        let (generation, _) = Generation::open(dir.path(), 1, 1 << 20).unwrap();
        generation.tree().insert(b"k", b"v".to_vec()).unwrap();
        generation.flush().unwrap();
        let generation = std::sync::Arc::new(generation);
        let reader = {
            let generation = generation.clone();
            std::thread::spawn(move || {
                for _ in 0..200 {
                    assert_eq!(generation.tree().get(b"k").unwrap().unwrap(), b"v".to_vec());
                }
            })
        };
        for _ in 0..3 {
            generation.reopen().unwrap();
        }
        reader.join().unwrap();
        assert_eq!(generation.tree().get(b"k").unwrap().unwrap(), b"v".to_vec());
    }

    #[test]
    fn generations_current_does_not_name_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        for id in [1, 2, 3] {
            std::fs::create_dir(dir_of(dir.path(), id)).unwrap();
        }
        std::fs::write(dir.path().join("other"), "kept").unwrap();
        remove_unlisted(dir.path(), &[2]).unwrap();
        assert!(!dir_of(dir.path(), 1).exists() && !dir_of(dir.path(), 3).exists());
        assert!(dir_of(dir.path(), 2).exists() && dir.path().join("other").exists());
    }
}
