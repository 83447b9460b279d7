//! SQLite: the pool, per-connection pragmas, migrations, and one module per aggregate.
//!
//! Store functions are plain synchronous functions over `&Connection`; the async side reaches
//! them only through [`Db::read`] and [`Db::write`], which run them on tokio's blocking pool.

pub mod accounts;
pub mod activity;
pub mod audit;
pub mod audit_index;
mod checkpoint;
pub mod clients;
pub mod durability;
mod group_commit;
pub mod idempotency;
pub mod notes;
mod retry;
pub mod secret_history;
pub mod sso;
pub mod staff;
mod wal_file;
pub mod webhooks;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;
use group_commit::Ack;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, ErrorCode, OpenFlags, Transaction, TransactionBehavior};

use crate::domain::{FundType, Invalid, Money};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// What a store function can fail with. The HTTP layer maps each to one status code.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Invalid(String),
    #[error("insufficient {fund} funds")]
    InsufficientFunds {
        fund: FundType,
        required: Money,
        available: Money,
    },
    /// The database is locked or full: nothing was written, the caller may retry.
    #[error("the database is busy or full")]
    Unavailable,
    #[error(transparent)]
    Sqlite(rusqlite::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if is_unavailable(&e) {
            StoreError::Unavailable
        } else {
            StoreError::Sqlite(e)
        }
    }
}

/// A locked or full database: nothing was written, and trying again later may succeed.
fn is_unavailable(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked | ErrorCode::DiskFull)
    )
}

impl From<Invalid> for StoreError {
    fn from(e: Invalid) -> Self {
        StoreError::Invalid(e.0)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Turns a UNIQUE violation into a 409-style conflict with the given message.
pub fn unique_conflict(e: rusqlite::Error, message: &str) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::ConstraintViolation) if e.to_string().contains("UNIQUE") => {
            StoreError::Conflict(message.to_string())
        }
        _ => e.into(),
    }
}

/// A text column borrowed from its row, for the long scans that read every row and keep none.
fn text_column<'r>(row: &'r rusqlite::Row, column: usize) -> rusqlite::Result<&'r str> {
    Ok(row.get_ref(column)?.as_str()?)
}

/// The current time as stored everywhere: RFC 3339, UTC, milliseconds.
pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The database: a pool of readers and one writer connection.
///
/// SQLite allows one writer at a time anyway; holding the writer behind a mutex makes writers
/// queue in-process instead of spinning on SQLITE_BUSY, and every write runs inside
/// `BEGIN IMMEDIATE` so a read-modify-write of a balance can never interleave with another.
/// Async writes go through [`group_commit`], which shares one commit among the writes that queue
/// up meanwhile.
#[derive(Clone)]
pub struct Db {
    readers: r2d2::Pool<SqliteConnectionManager>,
    writer: Arc<Mutex<Connection>>,
    jobs: group_commit::Queue,
    checkpoint: checkpoint::Nudge,
    wal: Arc<wal_file::WalFile>,
    durability: Arc<durability::Durability>,
    path: Arc<PathBuf>,
    /// The writer, sync and checkpoint threads, for [`Db::close`].
    threads: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

/// Applied to every connection: enforced foreign keys, waiting on locks held by another process
/// (a backup, the CLI) instead of failing, and a full sync on commit so an acknowledged write
/// survives power loss (the writer connection then trades it for syncing the WAL itself, see
/// `wal_file`, with the same guarantee). Store functions prepare their statements through the connection's cache,
/// so the hot paths parse their SQL once per connection, not once per request. Temporary data
/// stays in memory: above all the statement and savepoint journals, which hold a copy of every
/// page a statement or a re-run batch's write touches first (as a temp file, that was a quarter
/// of the writer's time).
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(128);
    clients::register_casefold(conn)?;
    conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA synchronous = FULL; PRAGMA temp_store = MEMORY;")
}

/// Whether closing `conn` may fold the WAL into the database file (SQLite does when the last
/// connection to a database closes). Every connection is opened with `keep = true`: after a
/// failed write that fold would copy what may never have reached the disk and delete the WAL
/// (see [`durability`]). Only [`Db::close`] allows it, on the writer, when nothing has failed.
fn keep_wal_on_close(conn: &Connection, keep: bool) -> rusqlite::Result<()> {
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, keep)
        .map(drop)
}

impl Db {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub fn open(path: &Path) -> anyhow::Result<Db> {
        // Not while the system may show data that a failed write never put on the disk.
        durability::marker(path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            private_dir(dir).with_context(|| format!("cannot create the database folder {}", dir.display()))?;
        }
        // SQLite gives the WAL and shared-memory files the database file's mode.
        private_file(path).with_context(|| format!("cannot create the database {}", path.display()))?;
        let mut writer =
            Connection::open(path).with_context(|| format!("cannot open the database {}", path.display()))?;
        configure(&writer)?;
        keep_wal_on_close(&writer, true)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        let applied = migratable_schema(&writer, path)?;
        backup_before_migrating(&mut writer, path, applied)?;
        embedded::migrations::runner()
            .run(&mut writer)
            .context("applying database migrations failed")?;
        let manager = SqliteConnectionManager::file(path).with_init(|c| {
            configure(c)?;
            keep_wal_on_close(c, true)
        });
        let readers = r2d2::Pool::builder()
            .max_size(8)
            .connection_timeout(Duration::from_secs(10))
            .build(manager)
            .context("cannot open database connections")?;
        // Checkpoints run on their own thread (see `checkpoint`), not inside the writer's commits,
        // and the writer's commits are made durable by syncing the WAL after them (see `wal_file`).
        writer.pragma_update(None, "wal_autocheckpoint", 0)?;
        writer.pragma_update(None, "synchronous", "NORMAL")?;
        let durability = Arc::new(durability::Durability::new(path));
        let wal = Arc::new(
            wal_file::WalFile::open(&writer, path, durability.clone())
                .context("cannot open the database's WAL file")?,
        );
        writer.pragma_update(None, "journal_size_limit", checkpoint::WAL_SIZE_LIMIT)?;
        let writer = Arc::new(Mutex::new(writer));
        let (checkpoint, checkpointer) = checkpoint::spawn(path, writer.clone(), durability.clone())
            .context("cannot start the checkpoint thread")?;
        let (jobs, [writer_thread, sync_thread]) =
            group_commit::spawn(writer.clone(), wal.clone(), durability.clone(), checkpoint.clone())
                .context("cannot start the database writer")?;
        Ok(Db {
            readers,
            writer,
            jobs,
            checkpoint,
            wal,
            durability,
            path: Arc::new(path.to_path_buf()),
            threads: Arc::new(Mutex::new(vec![writer_thread, sync_thread, checkpointer])),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a write to the disk has failed since start-up: nothing is served from the database
    /// any more (see [`durability`]).
    pub fn sync_failed(&self) -> bool {
        self.durability.has_failed()
    }

    /// Reader pool size and idle connections, for `/metrics`.
    pub fn pool_state(&self) -> (u32, u32) {
        let state = self.readers.state();
        (state.connections, state.idle_connections)
    }

    /// Runs a read on a pooled connection, off the async runtime.
    pub async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let db = self.clone();
        run_blocking(move || db.read_sync(f)).await
    }

    /// Runs `f` inside a `BEGIN IMMEDIATE` transaction on the writer thread, off the async
    /// runtime. Its changes are kept when it returns `Ok` and rolled back otherwise, and this
    /// returns only once the commit is durable (see [`group_commit`]). `f` may be run a second
    /// time after its first run was rolled back, so it is `Fn`: it must not consume what it
    /// captured.
    pub async fn write<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Transaction) -> StoreResult<T> + Send + 'static,
    {
        self.queue(f, Ack::Synced).await
    }

    /// Like [`Db::write`], but returns as soon as the commit is done, before the WAL sync that
    /// makes it durable a moment later: for the audit entry of a read, which must be written
    /// before the answer goes out but may, unlike a change, be lost to a power cut in the
    /// following millisecond or so (see [`group_commit`]).
    pub async fn write_for_read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Transaction) -> StoreResult<T> + Send + 'static,
    {
        self.queue(f, Ack::Committed).await
    }

    /// Like [`Db::write_for_read`], for a thread of the CRM's own (not the async runtime): a
    /// write whose loss to a power cut right after its commit costs nothing but doing it again,
    /// such as indexing the audit log ([`audit_index`]).
    pub fn write_in_background<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Transaction) -> StoreResult<T> + Send + 'static,
    {
        self.submit(f, Ack::Committed)?
            .blocking_recv()
            .map_err(|_| writer_stopped())?
    }

    async fn queue<T, F>(&self, f: F, ack: Ack) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Transaction) -> StoreResult<T> + Send + 'static,
    {
        self.submit(f, ack)?.await.map_err(|_| writer_stopped())?
    }

    /// Queues a write for the writer thread; its result arrives on the receiver.
    fn submit<T, F>(&self, f: F, ack: Ack) -> StoreResult<tokio::sync::oneshot::Receiver<StoreResult<T>>>
    where
        T: Send + 'static,
        F: Fn(&Transaction) -> StoreResult<T> + Send + 'static,
    {
        let (job, result) = group_commit::job(f, ack);
        self.jobs.send(job).map_err(|_| writer_stopped())?;
        Ok(result)
    }

    pub fn read_sync<T>(&self, f: impl FnOnce(&Connection) -> StoreResult<T>) -> StoreResult<T> {
        // It could show commits whose callers were told they failed.
        if self.durability.has_failed() {
            return Err(self.durability.refusal());
        }
        let conn = self.readers.get().map_err(|e| StoreError::Other(e.into()))?;
        f(&conn)
    }

    /// Copies everything in the WAL into the database file and empties the WAL, so the file alone
    /// is the whole database: a copy of `crm.db` taken while the CRM is stopped is complete.
    /// Waits for a write in progress; run it when no more writes are coming.
    pub fn checkpoint_fully(&self) -> StoreResult<()> {
        // It would copy into the database file what may never have reached the disk.
        if self.durability.has_failed() {
            return Err(self.durability.refusal());
        }
        let conn = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            return Err(StoreError::Unavailable);
        }
        Ok(())
    }

    /// Ends the writer's threads and closes every connection, for a command that is done with the
    /// database. When these were the last connections to it (no server running), SQLite copies
    /// the WAL into the database file and deletes it, so `crm.db` alone is the whole database
    /// again; with a server running, the WAL stays the server's. Without this a command's writes
    /// could stay in the WAL, and a copy of `crm.db` alone could even be caught mid-checkpoint.
    /// Call it on the last handle: the threads end only when no clone can send them work.
    pub fn close(self) -> StoreResult<()> {
        let Db {
            readers,
            writer,
            jobs,
            checkpoint,
            wal,
            durability,
            path: _,
            threads,
        } = self;
        let threads = Arc::try_unwrap(threads)
            .map_err(|_| StoreError::Other(anyhow::anyhow!("another handle of the database is still open")))?;
        drop((readers, jobs, checkpoint, wal));
        for thread in threads.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner()) {
            thread
                .join()
                .map_err(|_| StoreError::Other(anyhow::anyhow!("a database thread panicked")))?;
        }
        let writer = Arc::try_unwrap(writer)
            .map_err(|_| StoreError::Other(anyhow::anyhow!("the writer connection is still in use")))?;
        let writer = writer.into_inner().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !durability.has_failed() {
            keep_wal_on_close(&writer, false)?;
        }
        writer.close().map_err(|(_, e)| e.into())
    }

    /// A write of its own (no batching), for the command line and start-up.
    pub fn write_sync<T>(&self, f: impl FnOnce(&Transaction) -> StoreResult<T>) -> StoreResult<T> {
        // A panic while holding the lock poisons it; the connection itself is still sound
        // because the unfinished transaction is rolled back when it is dropped.
        if self.durability.has_failed() {
            return Err(self.durability.refusal());
        }
        let mut conn = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        self.wal
            .sync()
            .map_err(|e| group_commit::failure_error(&group_commit::Failure::Sync(e)))?;
        self.checkpoint.committed();
        Ok(value)
    }
}

/// Writes a consistent snapshot of the database behind `conn` to `target`: first under a
/// temporary name, synced, then renamed (and the rename synced), so a half-written file never
/// looks like a backup.
/// `VACUUM INTO` reads inside one transaction, so concurrent writers do not tear the copy.
pub fn snapshot_into(conn: &Connection, target: &Path) -> anyhow::Result<()> {
    if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = target.with_extension("partial");
    let tmp_text = tmp.to_str().context("the backup path must be valid UTF-8")?;
    // A leftover from an interrupted run goes first. The copy is then written into a file this
    // run created empty (VACUUM INTO takes an empty file as it finds it), so it is private from
    // its first byte: a file someone else put there, which could not be removed, is an error
    // rather than a place to write the database into (create_new also refuses a symbolic link).
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove the leftover {}", tmp.display()));
        }
        _ => {}
    }
    create_private(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let written = (|| -> anyhow::Result<()> {
        conn.execute("VACUUM INTO ?1", [tmp_text])
            .with_context(|| format!("writing the snapshot to {} failed", tmp.display()))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, target).with_context(|| format!("cannot move the snapshot to {}", target.display()))
    })();
    if written.is_err() {
        // Not left behind as a full copy of the database under another name.
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    // The rename itself is durable only once its folder is synced: before that, a power cut
    // could leave the backup under its temporary name.
    let folder = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::File::open(folder)?.sync_all()?;
    Ok(())
}

/// Creates `dir` and the folders above it that are missing, readable by the CRM's user only: the
/// database and its backups hold staff password hashes and clients' personal data, and should be
/// private whatever the umask (as `secrets.env` is). An existing folder is left as it is.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// The database at `path` and the files SQLite keeps beside it (`-wal`, `-shm`, `-journal`).
pub fn database_files(path: &Path) -> [PathBuf; 4] {
    let beside = |suffix: &str| {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        PathBuf::from(file)
    };
    [path.to_path_buf(), beside("-wal"), beside("-shm"), beside("-journal")]
}

/// Creates `path` empty with mode 0600; an error if it exists (see [`private_dir`]).
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map(drop)
}

/// [`create_private`], leaving an existing file as it is.
fn private_file(path: &Path) -> std::io::Result<()> {
    match create_private(path) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// The schema version of the database at `path`, read without changing it: `None` for a file
/// that holds no CRM schema (empty, or another program's).
pub fn schema_version(path: &Path) -> anyhow::Result<Option<i32>> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match schema_of(&conn) {
        Ok(Schema::Crm(version)) => Ok(Some(version)),
        Ok(Schema::Empty | Schema::Foreign) => Ok(None),
        // Some other file altogether: not a CRM database either.
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The newest schema this build knows (its last migration).
pub fn newest_schema() -> i32 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .max()
        .unwrap_or(0)
}

/// Refuses a file that is not a CRM database at this build's schema, without changing it: for
/// the commands that check, copy or manage an existing database (`verify`, `backup`, `doctor`,
/// `user`). An empty file (a failed copy) or another program's database must not pass a check
/// as an empty CRM, and an older schema is migrated only on purpose (`crm migrate` or `serve`).
pub fn check_existing(path: &Path) -> anyhow::Result<()> {
    let shown = path.display();
    let hint = "check --database, CRM_DATABASE or crm.toml; `crm serve` and `crm migrate` create one";
    if !path.is_file() {
        anyhow::bail!("there is no database at {shown} ({hint})");
    }
    let Some(applied) = schema_version(path)? else {
        anyhow::bail!("{shown} is not a CRM database (it is empty, or another program's file); {hint}");
    };
    let newest = newest_schema();
    if applied < newest {
        anyhow::bail!(
            "{shown} has schema V{applied} and this build has V{newest}: `crm migrate` upgrades it (keeping a copy \
             of it as it was in backups/), or use the build that wrote it"
        );
    }
    refuse_newer(path, applied)
}

/// Refuses a database a newer build wrote: its schema is not this build's to read or change.
fn refuse_newer(path: &Path, applied: i32) -> anyhow::Result<()> {
    let newest = newest_schema();
    if applied > newest {
        anyhow::bail!(
            "{} has schema V{applied}, newer than this build's V{newest}: use the build that wrote it",
            path.display()
        );
    }
    Ok(())
}

/// The schema version of the database `Db::open` is about to migrate (`None` for a new one),
/// refusing, before anything is written, one this build must not migrate: another program's
/// (tables but no CRM schema history) or a newer build's.
fn migratable_schema(conn: &Connection, path: &Path) -> anyhow::Result<Option<i32>> {
    match schema_of(conn)? {
        Schema::Foreign => anyhow::bail!(
            "{} is not a CRM database (it holds another program's tables); give the CRM a path of its own",
            path.display()
        ),
        Schema::Crm(applied) => refuse_newer(path, applied).map(|()| Some(applied)),
        Schema::Empty => Ok(None),
    }
}

/// What a database file holds, as far as the CRM can tell.
enum Schema {
    Empty,
    /// Tables, but no CRM schema history.
    Foreign,
    /// The CRM's schema at this version.
    Crm(i32),
}

fn schema_of(conn: &Connection) -> rusqlite::Result<Schema> {
    let (tables, history): (i64, i64) = conn.query_row(
        "SELECT count(*), coalesce(sum(name = 'refinery_schema_history'), 0) FROM sqlite_schema WHERE type = 'table'",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(match (tables, history) {
        // A history with no migration in it (a first migration cut short) is a database not
        // begun yet.
        (_, 1..) => conn
            .query_row("SELECT max(version) FROM refinery_schema_history", [], |r| {
                r.get::<_, Option<i32>>(0)
            })?
            .map_or(Schema::Empty, Schema::Crm),
        (0, _) => Schema::Empty,
        _ => Schema::Foreign,
    })
}

/// Before a migration changes an existing database (at schema `applied`), keep a copy of it as
/// it was. A new database (`None`) has nothing worth keeping.
fn backup_before_migrating(conn: &mut Connection, path: &Path, applied: Option<i32>) -> anyhow::Result<()> {
    let newest = newest_schema();
    let Some(applied) = applied.filter(|applied| *applied < newest) else {
        return Ok(());
    };
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let target = path
        .parent()
        .unwrap_or(Path::new("."))
        .join("backups")
        .join(format!("crm-pre-migration-v{applied}-{stamp}.db"));
    snapshot_into(conn, &target)?;
    tracing::info!(backup = %target.display(), from = applied, to = newest, "backed up the database before migrating");
    Ok(())
}

fn writer_stopped() -> StoreError {
    StoreError::Other(anyhow::anyhow!("the database writer has stopped"))
}

/// Every database call from async code goes through here, so no handler blocks the runtime.
pub async fn run_blocking<T: Send + 'static>(f: impl FnOnce() -> StoreResult<T> + Send + 'static) -> StoreResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Other(anyhow::anyhow!("database task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `IN (...)` list of three values or more in the stored table definitions.
    fn in_lists(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT sql FROM sqlite_schema WHERE type = 'table'")
            .unwrap();
        let tables: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        let mut lists = Vec::new();
        for sql in tables {
            for (at, _) in sql.match_indices(" IN (") {
                let list = &sql[at..at + sql[at..].find(')').unwrap()];
                if list.matches(',').count() >= 2 {
                    lists.push(list.to_string());
                }
            }
        }
        lists
    }

    /// A database at `path` as a CRM of schema `version` left it.
    fn migrated_to(path: &Path, version: i32) -> Connection {
        let mut conn = Connection::open(path).unwrap();
        embedded::migrations::runner()
            .set_target(refinery::Target::Version(version))
            .run(&mut conn)
            .unwrap();
        conn
    }

    #[test]
    fn v6_indexes_every_audit_row_by_target_and_drops_sqlites_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crm.db");
        {
            let conn = migrated_to(&path, 5);
            for (id, target) in [("a1", "client:x"), ("a2", "account:y"), ("a3", "client:x"), ("a4", "")] {
                conn.execute(
                    "INSERT INTO audit_log (id, at, actor, action, target, outcome, prev_hash, hash)
                     VALUES (?1, 'x', 'cli', 'test', ?2, 'success', 'p', 'h')",
                    [id, target],
                )
                .unwrap();
            }
        }
        let db = Db::open(&path).unwrap();
        db.read_sync(|conn| {
            let entries: Vec<(String, i64)> = conn
                .prepare("SELECT target, seq FROM audit_targets")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            let expected = [("", 4), ("account:y", 2), ("client:x", 1), ("client:x", 3)];
            assert_eq!(entries, expected.map(|(t, s)| (t.to_string(), s)));
            let progress = audit_index::Progress::read(conn)?;
            assert_eq!(
                (progress.indexed_through, progress.epoch_end, progress.next),
                (4, 4, None)
            );
            let indexes: Vec<String> = conn
                .prepare(
                    "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'audit_log' ORDER BY name",
                )?
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            assert!(!indexes.iter().any(|name| name == "audit_by_target"), "{indexes:?}");
            assert!(indexes.iter().any(|name| name == "audit_kyc_by_target"), "{indexes:?}");
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn v11_indexes_the_phones_of_clients_registered_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crm.db");
        {
            let conn = migrated_to(&path, 10);
            conn.execute_batch(
                "INSERT INTO clients (id, email, phone, created_at, updated_at) VALUES
                     ('c1', 'early@example.com', '+44 (20) 7946-0958', 'x', 'x'),
                     ('c2', 'late@example.com', '', 'x', 'x')",
            )
            .unwrap();
        }
        let db = Db::open(&path).unwrap();
        db.read_sync(|conn| {
            let found = clients::search(conn, Some("2079 4609"), None, 50)?;
            assert_eq!(found.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), ["c1"]);
            let indexed: i64 = conn.query_row(
                "SELECT count(*) FROM clients_phone_search WHERE clients_phone_search MATCH '\"2079460958\"'",
                [],
                |r| r.get(0),
            )?;
            assert_eq!(indexed, 1);
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn v5_keeps_every_key_a_processed_webhook_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crm.db");
        {
            let conn = migrated_to(&path, 4);
            conn.execute_batch(
                "INSERT INTO webhook_events (id, received_at, signature, raw_body, body_size, status, http_status)
                 VALUES ('e1', 'x', 'current', x'', 0, 'processed', 200), ('e2', 'x', 'current', x'', 0, 'processed', 200),
                        ('e3', 'x', 'current', x'', 0, 'processed', 200);
                 INSERT INTO processed_webhooks (dedupe_key, transaction_id, content_hash, event_id, processed_at)
                 VALUES ('tx:T1', 'T1', 'h1', 'e1', 'at1'), ('id:E2', 'T2', 'h2', 'e2', 'at2'),
                        ('body:abc', NULL, 'h3', 'e3', 'at3');",
            )
            .unwrap();
        }
        let db = Db::open(&path).unwrap();
        db.write_sync(|tx| {
            let claims: Vec<(String, String, String, String)> = tx
                .prepare("SELECT claim, content_hash, event_id, processed_at FROM webhook_claims ORDER BY claim")?
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            let expected = [
                ("body:abc", "h3", "e3", "at3"),
                ("id:E2", "h2", "e2", "at2"),
                ("tx:T1", "h1", "e1", "at1"),
                ("tx:T2", "h2", "e2", "at2"),
            ];
            let expected: Vec<_> = expected
                .iter()
                .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
                .collect();
            assert_eq!(claims, expected);
            let old: i64 = tx.query_row(
                "SELECT COUNT(*) FROM sqlite_schema WHERE name = 'processed_webhooks'",
                [],
                |r| r.get(0),
            )?;
            assert_eq!(old, 0);
            assert!(
                tx.execute("INSERT INTO webhook_claims VALUES ('tx:T2', 'h9', 'e3', 'x')", [])
                    .is_err(),
                "a transaction claimed under an event id cannot be claimed again"
            );
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn v4_rewrites_the_check_lists_of_an_existing_database_and_they_still_refuse_what_they_did() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crm.db");
        {
            let conn = migrated_to(&path, 3);
            assert_eq!(in_lists(&conn).len(), 6, "V1 spells six constraints as lists");
            conn.execute(
                "INSERT INTO clients (id, email, kyc_status, created_at, updated_at)
                 VALUES ('c1', 'kept@example.com', 'approved', 'x', 'x')",
                [],
            )
            .unwrap();
        }
        let db = Db::open(&path).unwrap();
        db.write_sync(|tx| {
            assert_eq!(in_lists(tx), Vec::<String>::new());
            // The writer compiles the new constraints at once: no temporary index per insert.
            for table in ["ledger_entries", "webhook_events", "clients", "staff_users"] {
                let ops: Vec<String> = tx
                    .prepare(&format!("EXPLAIN INSERT INTO {table} DEFAULT VALUES"))?
                    .query_map([], |r| r.get(1))?
                    .collect::<Result<_, _>>()?;
                assert!(!ops.iter().any(|op| op == "OpenEphemeral"), "{table}");
            }
            tx.execute_batch(
                "INSERT INTO accounts (id, client_id, created_at, updated_at) VALUES ('a1', 'c1', 'x', 'x');
                 INSERT INTO ledger_entries (id, account_id, fund_type, amount, balance_after, reason, actor, created_at)
                 VALUES ('l1', 'a1', 'bonus', 1, 1, 'adjustment', 'x', 'x');
                 INSERT INTO webhook_events (id, received_at, signature, raw_body, body_size, status, http_status)
                 VALUES ('w1', 'x', 'previous', x'', 0, 'conflict', 409);
                 INSERT INTO staff_users (id, email, name, role, password_hash, password_changed_at, created_at, updated_at)
                 VALUES ('s1', 'm@example.com', 'M', 'manager', 'h', 'x', 'x', 'x');
                 UPDATE clients SET kyc_status = 'in_review' WHERE id = 'c1';",
            )?;
            let refused = [
                "UPDATE clients SET kyc_status = 'maybe'",
                "UPDATE ledger_entries SET fund_type = 'gold'",
                "UPDATE ledger_entries SET reason = 'gift'",
                "UPDATE webhook_events SET signature = 'none'",
                "UPDATE webhook_events SET status = 'lost'",
                "UPDATE staff_users SET role = 'owner'",
            ];
            for sql in refused {
                assert!(tx.execute(sql, []).is_err(), "{sql}");
            }
            let check: String = tx.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
            assert_eq!(check, "ok");
            Ok(())
        })
        .unwrap();
    }
}
