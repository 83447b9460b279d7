//! Making the writer's commits durable ourselves, off the writer thread.
//!
//! The writer connection runs with `synchronous = NORMAL`: a commit writes its frames to the WAL
//! file and returns without syncing it. [`WalFile::sync`] then `fdatasync`s the WAL, which makes
//! every commit written before the call durable; callers hear back only after that. Meanwhile the
//! writer is already running the next batch, so the disk's sync latency no longer stops it.
//!
//! Why this is as safe as `synchronous = FULL`: SQLite syncs the WAL before every checkpoint and
//! the database file after it, so frames leave the WAL only once they are durable in the database;
//! a commit that power loss takes out of the WAL was never acknowledged, because its sync had not
//! returned. Readers may see a commit a few milliseconds before it is durable, never a write that
//! was rolled back.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub struct WalFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl WalFile {
    /// The WAL of the database at `db_path`, which must already be open in WAL mode.
    pub fn open(db_path: &Path) -> io::Result<WalFile> {
        let mut path = db_path.as_os_str().to_owned();
        path.push("-wal");
        let path = PathBuf::from(path);
        let file = File::open(&path)?;
        Ok(WalFile {
            path,
            file: Mutex::new(file),
        })
    }

    /// Makes everything written to the WAL so far durable.
    pub fn sync(&self) -> io::Result<()> {
        let mut file = self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        // SQLite deletes the WAL only when the last connection closes, and the writer's stays open
        // as long as this does; should the file ever have been replaced anyway, sync the new one.
        let (ours, current) = (file.metadata()?, std::fs::metadata(&self.path)?);
        if (ours.dev(), ours.ino()) != (current.dev(), current.ino()) {
            *file = File::open(&self.path)?;
        }
        file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_wal_is_reopened_rather_than_syncing_a_deleted_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let wal_path = dir.path().join("t.db-wal");
        std::fs::write(&wal_path, b"old").unwrap();
        let wal = WalFile::open(&db).unwrap();
        wal.sync().unwrap();
        std::fs::remove_file(&wal_path).unwrap();
        std::fs::write(&wal_path, b"new").unwrap();
        wal.sync().unwrap();
        let held = wal.file.lock().unwrap().metadata().unwrap();
        assert_eq!(held.ino(), std::fs::metadata(&wal_path).unwrap().ino());
    }
}
