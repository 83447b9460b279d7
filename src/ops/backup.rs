//! Backups: `crm backup`, and the schedule `serve` runs. A backup is one SQLite file; restoring
//! is stopping the CRM and copying that file back over the database.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;

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
    // The snapshot is written beside the target first (see `snapshot_into`): neither may be the
    // database's.
    for path in [&target, &target.with_extension("partial")] {
        refuse_database_file(path, db.path())?;
    }
    db.read_sync(|conn| snapshot_into(conn, &target).map_err(StoreError::Other))?;
    Ok(target)
}

/// Fails if `path` names the database at `database` or its `-wal`, `-shm` or `-journal` file,
/// however it is spelled (relative, through a symbolic link or a folder mounted twice, with
/// `..`), or if its folder cannot be made and resolved to tell.
fn refuse_database_file(path: &Path, database: &Path) -> anyhow::Result<()> {
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    crate::store::private_dir(&folder).with_context(|| format!("cannot create {}", folder.display()))?;
    let name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let resolved = folder
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", folder.display()))?
        .join(name);
    let database = database
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", database.display()))?;
    let files = crate::store::database_files(&database);
    // The same name, or the same file under another name (the folder mounted a second time).
    let same_file = |a: &Path, b: &Path| match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    };
    if files.iter().any(|f| *f == resolved || same_file(f, &resolved)) {
        anyhow::bail!(
            "{} is the database itself (or one of its files); give the backup another path",
            path.display()
        );
    }
    Ok(())
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

/// How long after start-up the first scheduled backup is due: one interval after the newest one
/// in `dir`, at once when there is none or it is older than that. Counting from start-up instead
/// put the backup off for ever on a server restarted more often than the interval (a daily
/// deploy with the default `24h`).
fn first_due(dir: &Path, interval: Duration) -> Duration {
    let age = list(dir)
        .first()
        .and_then(|newest| newest.metadata().ok())
        .and_then(|m| m.modified().ok())
        .and_then(|at| std::time::SystemTime::now().duration_since(at).ok());
    age.map_or(Duration::ZERO, |age| interval.saturating_sub(age))
}

/// `serve`'s schedule: a backup every `interval`, keeping the newest `keep`; the first one when
/// [`first_due`]. Failures are logged and retried at the next tick.
///
/// Ends when `stop` changes (or its sender is gone), after the backup in progress, if any: the
/// server folds its WAL into the database file on the way out, which a snapshot still reading
/// would hold up.
pub async fn schedule(
    db: Db,
    dir: PathBuf,
    interval: Duration,
    keep: usize,
    mut stop: tokio::sync::watch::Receiver<()>,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + first_due(&dir, interval), interval);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
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
