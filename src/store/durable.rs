//! Making sled's writes durable: sled 0.34.7's `Db::flush` ends in `sync_file_range`, which does
//! not survive a power cut (sled #1452), so a flush is followed by a real `fdatasync` of the
//! database file and an `fsync` of new blob files (which sled never syncs) and their directory.

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

/// The files that hold sled's log, kept open for syncing.
pub struct Durability {
    db_file: File,
    blobs_dir: PathBuf,
    synced_blobs: HashSet<PathBuf>,
}

impl Durability {
    /// Opens the database file of the sled store at `dir` and makes its directory entries
    /// durable.
    pub fn open(dir: &Path) -> io::Result<Durability> {
        let db_file = File::open(dir.join("db"))?;
        sync_dir(dir)?;
        Ok(Durability {
            db_file,
            blobs_dir: dir.join("blobs"),
            synced_blobs: HashSet::new(),
        })
    }

    /// `fdatasync` of the log, then of blob files written since the last call.
    pub fn sync(&mut self) -> io::Result<()> {
        self.db_file.sync_data()?;
        self.sync_new_blobs()
    }

    fn sync_new_blobs(&mut self) -> io::Result<()> {
        let entries = match std::fs::read_dir(&self.blobs_dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut present = HashSet::new();
        let mut synced_any = false;
        for entry in entries {
            let path = entry?.path();
            if !self.synced_blobs.contains(&path) {
                match File::open(&path) {
                    Ok(file) => file.sync_all()?,
                    // Removed by sled between listing and opening: nothing to keep.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                synced_any = true;
            }
            present.insert(path);
        }
        if synced_any {
            sync_dir(&self.blobs_dir)?;
        }
        self.synced_blobs = present;
        Ok(())
    }
}

/// `fsync` of a directory, so that the names in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
