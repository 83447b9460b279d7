//! Backups: `crm backup`, and the schedule `serve` runs. A backup is one SQLite file; restoring
//! is stopping the CRM and copying that file back over the database.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::{snapshot_into, Db, StoreError};

const PREFIX: &str = "crm-backup-";

/// Writes a snapshot to `out`, or to `crm-backup-<time>.db` in `dir`. A file already at `out`
/// is replaced once the snapshot is complete, unless it is the database itself or one of its
/// WAL, shared-memory or journal files: moving a snapshot over the live database would leave a
/// running server writing to a file nobody reads any more, and what it acknowledged meanwhile
/// would be lost.
pub fn run(db: &Db, out: Option<&Path>, dir: &Path) -> anyhow::Result<PathBuf> {
    let target = match out {
        Some(p) => p.to_path_buf(),
        None => dir.join(format!(
            "{PREFIX}{}.db",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ")
        )),
    };
    if is_part_of(&target, db.path()) {
        anyhow::bail!(
            "{} is the database itself (or one of its files); give the backup another path",
            target.display()
        );
    }
    db.read_sync(|conn| snapshot_into(conn, &target).map_err(StoreError::Other))?;
    Ok(target)
}

/// Whether `target` names the database at `database` or its `-wal`, `-shm` or `-journal` file,
/// however either path is spelled (relative, through a symbolic link, with `..`).
fn is_part_of(target: &Path, database: &Path) -> bool {
    let (Some(target), Some(database)) = (resolved(target), resolved(database)) else {
        return false;
    };
    let mut files = vec![database.clone()];
    for suffix in ["-wal", "-shm", "-journal"] {
        let mut name = database.clone().into_os_string();
        name.push(suffix);
        files.push(PathBuf::from(name));
    }
    files.contains(&target)
}

/// The path with its folder resolved (the file itself need not exist yet).
fn resolved(path: &Path) -> Option<PathBuf> {
    if let Ok(full) = path.canonicalize() {
        return Some(full);
    }
    let name = path.file_name()?;
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.canonicalize().ok()?,
        _ => std::env::current_dir().ok()?,
    };
    Some(folder.join(name))
}

/// The scheduled backups in `dir`, newest first.
pub fn list(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.starts_with(PREFIX) && name.ends_with(".db")
        })
        .collect();
    // The timestamp in the name sorts chronologically.
    files.sort();
    files.reverse();
    files
}

/// Deletes all but the newest `keep` scheduled backups.
pub fn prune(dir: &Path, keep: usize) -> anyhow::Result<()> {
    for old in list(dir).into_iter().skip(keep) {
        std::fs::remove_file(&old)?;
    }
    Ok(())
}

/// `serve`'s schedule: a backup every `interval`, keeping the newest `keep`. The first one is
/// taken one interval after start-up. Failures are logged and retried at the next tick.
pub async fn schedule(db: Db, dir: PathBuf, interval: Duration, keep: usize) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    loop {
        ticker.tick().await;
        let (db, dir) = (db.clone(), dir.clone());
        let result = tokio::task::spawn_blocking(move || -> anyhow::Result<PathBuf> {
            let path = run(&db, None, &dir)?;
            prune(&dir, keep)?;
            Ok(path)
        })
        .await;
        match result {
            Ok(Ok(path)) => tracing::info!(backup = %path.display(), "scheduled backup written"),
            Ok(Err(e)) => tracing::error!(error = format!("{e:#}"), "scheduled backup failed"),
            Err(e) => tracing::error!(error = %e, "scheduled backup task failed"),
        }
    }
}
