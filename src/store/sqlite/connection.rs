//! Opening the database: the data-directory lock, what every connection is
//! set up with, and the WAL's limits.

use std::path::Path;
use std::time::Duration;

use r2d2::Pool;
use r2d2_sqlite::rusqlite::{self, Connection, OpenFlags};
use r2d2_sqlite::SqliteConnectionManager;

use crate::store::{Backend, BoxError, StoreError};

pub(super) const DATABASE_FILE: &str = "errata.db";
const LOCK_FILE: &str = "errata.lock";
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How large the write-ahead log may grow.
#[derive(Debug, Clone, Copy)]
pub struct WalLimits {
    /// Once the WAL holds this many frames, the writer makes it start over
    /// from the beginning of the file.
    pub restart_frames: i64,
    /// What a restarted WAL file is cut back to, in bytes (its first frames
    /// are rewritten in place, which is cheaper than growing a new file).
    pub size_limit: i64,
}

impl Default for WalLimits {
    fn default() -> Self {
        // About 64 MiB of 4 KiB pages. The limit is above that, so that a
        // restarted WAL is rewritten in place rather than cut back and grown
        // again (growing a file costs block allocation and zeroing).
        Self {
            restart_frames: 16_384,
            size_limit: 128 << 20,
        }
    }
}

/// Takes the data directory for this process, or says which one holds it.
pub(super) fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, StoreError> {
    let path = data_dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::internal(format!("opening {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::busy(
            Backend::Sqlite,
            format!(
                "{} is in use by another errata process (one process per data directory)",
                data_dir.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::internal(
            format!("locking {}", path.display()),
            e,
        )),
    }
}

/// The writer's connection, with the schema created: the database is in
/// WAL mode and every commit is synced.
pub(super) fn open_writer(path: &Path, wal: WalLimits) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path).map_err(internal)?;
    configure(&conn).map_err(internal)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(internal)?;
    // FULL: the WAL is synced at every commit, so an acknowledged write
    // survives power loss too, not only a process crash.
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(internal)?;
    super::migrate::migrate(&mut conn).map_err(internal)?;
    // The writer no longer checkpoints inside its commits (a checkpoint
    // copies and syncs up to 1,000 pages while callers wait): the
    // checkpointer thread does that beside it.
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(internal)?;
    conn.pragma_update(None, "journal_size_limit", wal.size_limit)
        .map_err(internal)?;
    Ok(conn)
}

/// The checkpointer's connection; it syncs what it copies.
pub(super) fn open_checkpointer(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(internal)?;
    configure(&conn).map_err(internal)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(internal)?;
    Ok(conn)
}

/// Read-only connections, at most `max` open at once.
pub(super) fn open_readers(
    path: &Path,
    max: usize,
) -> Result<Pool<SqliteConnectionManager>, StoreError> {
    let manager = SqliteConnectionManager::file(path)
        .with_flags(OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .with_init(|c| configure(c));
    Pool::builder()
        .max_size(max as u32)
        .min_idle(Some(1))
        .test_on_check_out(false)
        .build(manager)
        .map_err(internal)
}

/// What every connection is opened with.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Plans stay as prepared. Without this, a statement whose LIMIT is a
    // bound parameter (or whose plan could depend on a bound value) is
    // compiled again every time it is bound to a new value, which made
    // SQL parsing a tenth of a practice request's CPU.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

pub(super) fn internal(e: impl Into<BoxError>) -> StoreError {
    StoreError::internal("sqlite", e)
}
