//! Keeping the WAL short: the checkpointer thread copies committed frames
//! back into the database beside the writer; the writer restarts the WAL
//! when it has grown; and when the store stops, the WAL is folded in.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use r2d2_sqlite::rusqlite::Connection;

use crate::store::closer::Closer;

/// How often the checkpointer folds the WAL back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// The checkpointer catches up until at most this many frames are left for
/// the writer to copy when it restarts the WAL.
const WAL_RESTART_LEFT: i64 = 256;

/// Copies committed WAL frames back into the database file, beside the
/// writer (a passive checkpoint never blocks it), so the WAL stays short and
/// commits never pay for a checkpoint. Once the WAL holds `restart_frames`,
/// it catches up and raises `wal_full` for the writer.
pub(super) struct Checkpointer {
    pub conn: Connection,
    /// Raised for the writer when the WAL should start over.
    pub wal_full: Arc<AtomicBool>,
    pub restart_frames: i64,
    /// The checkpointer stops when this closes.
    pub closer: Closer,
}

impl Checkpointer {
    /// Checkpoints every `CHECKPOINT_EVERY` until the store closes.
    pub fn run(self) {
        let Self {
            conn,
            wal_full,
            restart_frames,
            closer,
        } = self;
        let checkpoint = || {
            conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
            })
        };
        while !closer.wait_timeout(CHECKPOINT_EVERY) {
            match checkpoint() {
                Ok((frames, _)) if frames >= restart_frames => {
                    // Catch up with the writer first, so that what is left for
                    // it to copy when it restarts the WAL is a few frames.
                    for _ in 0..4 {
                        match checkpoint() {
                            Ok((frames, copied)) if frames - copied > WAL_RESTART_LEFT => continue,
                            _ => break,
                        }
                    }
                    wal_full.store(true, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
            }
        }
    }
}

/// The WAL only starts over from the beginning of its file when a
/// checkpoint has copied every frame and no commit has appended since.
/// Under steady writes the checkpointer's passive checkpoints never get
/// there, and the file grows without bound (gigabytes a minute). So when
/// it has grown, the writer itself, between two groups, copies what the
/// checkpointer left (a few frames); its next commit then starts the WAL
/// over, unless a reader still reads old frames (then a later round does).
/// A passive checkpoint never sleeps waiting for locks, so a commit waits
/// for the copy and nothing else.
pub(super) fn restart_wal(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
        tracing::warn!(error = %e, "WAL checkpoint failed");
    }
}

/// The last act on the writer's connection, once every worker has stopped:
/// copies every frame left into the database and truncates the WAL to
/// nothing, so that a clean shutdown leaves the data in the database file
/// alone. It waits (up to the busy timeout) for readers still in a
/// transaction; it must not overlap the checkpointer's work (a checkpoint
/// fails at once while another runs), hence after the checkpointer stopped.
pub(super) fn fold_wal_in(conn: &Connection) {
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(0) => {}
        Ok(_) => tracing::warn!("the WAL was not folded in: the database stayed busy"),
        Err(e) => tracing::warn!(error = %e, "the last WAL checkpoint failed"),
    }
}
