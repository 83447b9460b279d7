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
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::durability::Durability;

pub struct WalFile {
    path: PathBuf,
    file: Mutex<File>,
    /// Failed by the first sync that failed: every sync after it fails too (see [`WalFile::sync`]).
    durability: Arc<Durability>,
}

impl WalFile {
    /// The WAL of the database `conn` has open (from `opened`) in WAL mode, found where SQLite
    /// itself put it: by the database's path as SQLite resolved it, so a database reached through
    /// a symbolic link has its WAL beside the real file, not beside the link. SQLite's path is
    /// text; for a path that is not UTF-8 the one given is resolved the same way instead.
    pub fn open(conn: &Connection, opened: &Path, durability: Arc<Durability>) -> io::Result<WalFile> {
        let database = match conn.path().filter(|p| !p.is_empty()) {
            Some(resolved) => PathBuf::from(resolved),
            None => opened.canonicalize()?,
        };
        let mut path = database.into_os_string();
        path.push("-wal");
        let path = PathBuf::from(path);
        let file = File::open(&path)?;
        Ok(WalFile {
            path,
            file: Mutex::new(file),
            durability,
        })
    }

    /// Makes everything written to the WAL so far durable.
    ///
    /// Once a sync has failed, every later one fails too: the kernel may have kept the pages it
    /// could not write in its cache, and reports that only once, so a later sync that succeeds
    /// would prove nothing about those commits, nor about the ones after them (see
    /// [`super::durability`]: what then). The writes waiting on it are answered with an error. A
    /// WAL file replaced or deleted under the running CRM fails the same way: SQLite goes on
    /// writing to the file it opened, so syncing another one would prove nothing either.
    pub fn sync(&self) -> io::Result<()> {
        if self.durability.has_failed() {
            return Err(io::Error::other("an earlier write to the disk failed"));
        }
        let file = self.file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let synced = same_file(&file, &self.path).and_then(|()| file.sync_data());
        if let Err(e) = &synced {
            self.durability.fail("syncing the WAL", e);
        }
        synced
    }
}

/// Fails unless `path` still names the file `file` has open.
fn same_file(file: &File, path: &Path) -> io::Result<()> {
    let (ours, current) = (file.metadata()?, std::fs::metadata(path)?);
    if (ours.dev(), ours.ino()) == (current.dev(), current.ino()) {
        Ok(())
    } else {
        Err(io::Error::other("the WAL file was replaced while the CRM was running"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn durability(dir: &Path) -> Arc<Durability> {
        Arc::new(Durability::new(&dir.join("crm.db")))
    }

    fn wal_mode(path: &std::path::Path) -> Connection {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        conn
    }

    /// SQLite puts the WAL of a database reached through a symbolic link beside the real file;
    /// that is the one synced, even when a stray file sits beside the link.
    #[test]
    fn the_wal_synced_is_the_one_sqlite_writes_through_a_symbolic_link() {
        let dir = tempfile::tempdir().unwrap();
        let (real, link) = (dir.path().join("real"), dir.path().join("link"));
        std::fs::create_dir_all(&real).unwrap();
        std::fs::create_dir_all(&link).unwrap();
        std::fs::write(real.join("crm.db"), b"").unwrap();
        std::os::unix::fs::symlink(real.join("crm.db"), link.join("crm.db")).unwrap();
        std::fs::write(link.join("crm.db-wal"), b"stray").unwrap();
        let conn = wal_mode(&link.join("crm.db"));
        let wal = WalFile::open(&conn, &link.join("crm.db"), durability(&link)).unwrap();
        let synced = std::fs::metadata(&wal.path).unwrap().ino();
        assert_eq!(synced, std::fs::metadata(real.join("crm.db-wal")).unwrap().ino());
        wal.sync().unwrap();
    }

    /// SQLite gives no path for a database whose path is not UTF-8; the one given is used.
    #[test]
    fn a_database_path_that_is_not_utf8_still_finds_its_wal() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9.db"));
        let conn = wal_mode(&db);
        let wal = WalFile::open(&conn, &db, durability(dir.path())).unwrap();
        wal.sync().unwrap();
    }

    /// A WAL replaced under the running CRM fails the sync, and so does every sync after a
    /// failure, even once the file is back.
    #[test]
    fn after_a_failed_sync_every_sync_fails() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("t.db");
        let conn = wal_mode(&db);
        let durability = durability(dir.path());
        let wal = WalFile::open(&conn, &db, durability.clone()).unwrap();
        wal.sync().unwrap();
        let wal_path = dir.path().join("t.db-wal");
        let moved = dir.path().join("moved");
        std::fs::rename(&wal_path, &moved).unwrap();
        std::fs::write(&wal_path, b"another file").unwrap();
        assert!(wal.sync().is_err(), "a replaced WAL");
        assert!(durability.has_failed());
        std::fs::rename(&moved, &wal_path).unwrap();
        assert!(wal.sync().is_err(), "still failed once the file is back");
    }
}
