//! The store's owner lock: one process at a time owns a data directory. It is an `flock` on
//! `<data_dir>/edge-outbox.lock` (which names the owner's pid), taken before sled is opened so
//! that an adopter can try it cheaply. While held, its file's modification time is refreshed
//! every few seconds: a free lock that was refreshed a moment ago belongs to a container that
//! is restarting, one left alone for longer to a pod that is gone.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, SystemTime};

/// The lock file's name inside a data directory.
pub const LOCK_FILE: &str = "edge-outbox.lock";

/// How often a held lock's file is touched.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another edge-outbox (pid {}) holds the store in {}",
        pid.map_or("unknown".to_string(), |p| p.to_string()),
        dir.display()
    )]
    Held { dir: PathBuf, pid: Option<u32> },
    /// The directory was removed (by an adopter that drained it) while we waited.
    #[error("the store in {} was removed while its lock was taken", dir.display())]
    Gone { dir: PathBuf },
    #[error("locking the store in {}: {error}", dir.display())]
    Io { dir: PathBuf, error: io::Error },
}

/// A held lock; released when dropped (and by the kernel when the process dies).
#[derive(Debug)]
pub struct StoreLock {
    file: File,
    /// Dropping it stops the heartbeat thread.
    _heartbeat: mpsc::Sender<()>,
}

impl StoreLock {
    /// Takes the lock of the store in `dir` without waiting, creating the directory and the
    /// lock file when missing.
    pub fn acquire(dir: &Path) -> Result<StoreLock, LockError> {
        let io_error = |error| LockError::Io {
            dir: dir.to_path_buf(),
            error,
        };
        std::fs::create_dir_all(dir).map_err(io_error)?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error)?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    pid: read_pid(&mut file),
                });
            }
            return Err(io_error(error));
        }
        // The file may have been unlinked between open and flock by the adopter that held it.
        if !is_current(&file, &path) {
            return Err(LockError::Gone {
                dir: dir.to_path_buf(),
            });
        }
        file.set_len(0).map_err(io_error)?;
        file.rewind().map_err(io_error)?;
        writeln!(file, "{}", std::process::id()).map_err(io_error)?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("store-lock".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(HEARTBEAT) {
                    // A descriptor of its own: a copy of the locked one would keep the lock
                    // held after the drop until this thread noticed. (An flock belongs to the
                    // open file, so closing this one leaves the lock alone.)
                    if let Ok(file) = OpenOptions::new().write(true).open(&path) {
                        let _ = file.set_modified(SystemTime::now());
                    }
                }
            })
            .map_err(io_error)?;
        Ok(StoreLock {
            file,
            _heartbeat: stop,
        })
    }

    /// Whether a lock file exists in `dir` (a sidecar has run there).
    pub fn exists(dir: &Path) -> bool {
        dir.join(LOCK_FILE).is_file()
    }

    /// How long ago the lock of `dir` was last refreshed (held or not).
    pub fn idle_for(dir: &Path) -> Option<Duration> {
        let modified = std::fs::metadata(dir.join(LOCK_FILE))
            .and_then(|m| m.modified())
            .ok()?;
        Some(
            SystemTime::now()
                .duration_since(modified)
                .unwrap_or_default(),
        )
    }

    /// The pid of the process holding it (this one).
    pub fn pid(&self) -> Option<u32> {
        let mut file = self.file.try_clone().ok()?;
        read_pid(&mut file)
    }
}

/// Whether `file` is still the one at `path` (not unlinked or replaced).
fn is_current(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(ours), Ok(now)) => ours.ino() == now.ino() && ours.dev() == now.dev(),
        _ => false,
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_of_a_held_store_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let held = StoreLock::acquire(dir.path()).unwrap();
        assert_eq!(held.pid(), Some(std::process::id()));
        // flock locks belong to the open file: a second open in this process conflicts too.
        match StoreLock::acquire(dir.path()) {
            Err(LockError::Held { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Held, got {other:?}"),
        }
        drop(held);
        StoreLock::acquire(dir.path()).expect("free again once dropped");
    }

    #[test]
    fn a_lock_file_removed_under_a_waiting_locker_is_no_longer_the_store_lock() {
        let dir = tempfile::tempdir().unwrap();
        let held = StoreLock::acquire(dir.path()).unwrap();
        let path = dir.path().join(LOCK_FILE);
        let waiting = File::open(&path).unwrap();
        assert!(is_current(&waiting, &path));
        std::fs::remove_file(&path).unwrap();
        drop(held);
        assert!(
            !is_current(&waiting, &path),
            "the unlinked inode is not the lock"
        );
        let fresh = StoreLock::acquire(dir.path()).expect("a new lock file is created");
        assert!(StoreLock::exists(dir.path()));
        assert!(StoreLock::idle_for(dir.path()).unwrap() < HEARTBEAT);
        drop(fresh);
    }
}
