//! File helpers shared by the integration tests and the store's unit tests (which include this
//! file by path): copying a stopped store, and damaging bytes behind its back.

use std::path::Path;

/// Copies a directory tree: what the disk holds if the process died at that moment (every
/// write before it was synced).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Flips two bytes of `file` at `offset`, durably.
pub fn flip_bytes(file: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut bytes = [0u8; 2];
    file.read_exact_at(&mut bytes, offset).unwrap();
    bytes[0] ^= 0xff;
    bytes[1] ^= 0x55;
    file.write_all_at(&bytes, offset).unwrap();
    file.sync_all().unwrap();
}
