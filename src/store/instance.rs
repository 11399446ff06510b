//! The store's instance id: a random id written once, in `INSTANCE` at the root of the data
//! directory, when a store is first opened. It names the store in Kafka (the exactly-once
//! relay's transactional id and checkpoint key): stable across restarts, unique per store, and
//! shared by copies of the directory, so that a copy started beside its original fences it.

use std::io::{self, Write};
use std::path::Path;

const FILE: &str = "INSTANCE";

/// The instance id of the store in `root`, created (and made durable) if it has none.
pub fn read_or_create(root: &Path) -> io::Result<String> {
    let path = root.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = uuid::Uuid::new_v4().to_string();
    let temporary = root.join(format!("{FILE}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(id.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, &path)?;
    std::fs::File::open(root)?.sync_all()?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_instance_id_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let id = super::read_or_create(dir.path()).unwrap();
        assert_eq!(id.len(), 36);
        assert_eq!(super::read_or_create(dir.path()).unwrap(), id);
        let other = tempfile::tempdir().unwrap();
        assert_ne!(super::read_or_create(other.path()).unwrap(), id);
    }
}
