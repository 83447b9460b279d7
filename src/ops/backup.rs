//! `crm backup`: a consistent single-file snapshot, safe while `serve` is writing.
//!
//! `VACUUM INTO` reads inside one read transaction, so the copy is a point-in-time snapshot even
//! under concurrent writes. It is written under a temporary name and renamed, so a half-written
//! file never looks like a backup.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::store::Db;

pub fn run(db: &Db, out: Option<&Path>) -> anyhow::Result<PathBuf> {
    let target = match out {
        Some(p) => p.to_path_buf(),
        None => {
            let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
            db.path()
                .parent()
                .unwrap_or(Path::new("."))
                .join(format!("crm-backup-{stamp}.db"))
        }
    };
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = target.with_extension("db.partial");
    let _ = std::fs::remove_file(&tmp);
    let tmp_text = tmp.to_str().context("the backup path must be valid UTF-8")?.to_string();
    db.read_sync(|conn| Ok(conn.execute("VACUUM INTO ?1", [&tmp_text])?))
        .with_context(|| format!("writing the snapshot to {} failed", tmp.display()))?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, &target).with_context(|| format!("cannot move the snapshot to {}", target.display()))?;
    Ok(target)
}
