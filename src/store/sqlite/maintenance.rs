//! Work beside the writer: the checkpointer keeps the WAL short, the
//! expirer forgets old request fingerprints, and the writer restarts the WAL
//! when it has grown and folds it in when it stops. Both threads run at a
//! lower priority than requests, and stop when the store's closer closes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use r2d2_sqlite::rusqlite::Connection;

use super::writer::{WeakWriteQueue, WriteRequest};
use super::writes::{Expiry, FingerprintCursor};
use crate::store::closer::Closer;
use crate::store::{now, DEDUP_WINDOW};

/// How often the checkpointer folds the WAL back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// The checkpointer catches up until at most this many frames are left for
/// the writer to copy when it restarts the WAL.
const WAL_RESTART_LEFT: i64 = 256;
/// Pause between two chunks of a fingerprint pass, and between two passes.
const EXPIRE_CHUNK_EVERY: Duration = Duration::from_millis(200);
const EXPIRE_PASS_EVERY: Duration = Duration::from_secs(60);

/// Copies committed WAL frames back into the database file, beside the
/// writer (a passive checkpoint never blocks it), so the WAL stays short and
/// commits never pay for a checkpoint. Once the WAL holds `restart_frames`,
/// it catches up and raises `wal_full` for the writer.
pub(super) fn run_checkpointer(
    conn: Connection,
    closer: &Closer,
    wal_full: &AtomicBool,
    restart_frames: i64,
) {
    let checkpoint = || {
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
    };
    lower_this_threads_priority();
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

/// The writer's last act: copies every frame left into the database and
/// truncates the WAL to nothing, so that a clean shutdown leaves the data in
/// the database file alone. It waits (up to the busy timeout) for readers
/// still in a transaction; it must not overlap the checkpointer's work (a
/// checkpoint fails at once while another runs).
pub(super) fn fold_wal_in(conn: &Connection) {
    match conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
        r.get::<_, i64>(0)
    }) {
        Ok(0) => {}
        Ok(_) => tracing::warn!("the WAL was not folded in: the database stayed busy"),
        Err(e) => tracing::warn!(error = %e, "the last WAL checkpoint failed"),
    }
}

/// Forgets old request fingerprints in the background, so that
/// `ingest_requests` holds about a day of requests rather than every request
/// ever made: passes over the table in key order, a chunk at a time through
/// the writer, one pass a minute. It holds the writer's queue weakly, so it
/// never keeps the writer alive.
pub(super) fn run_expirer(writer: &WeakWriteQueue, closer: &Closer) {
    lower_this_threads_priority();
    let mut after: Option<FingerprintCursor> = None;
    loop {
        let pause = if after.is_some() {
            EXPIRE_CHUNK_EVERY
        } else {
            EXPIRE_PASS_EVERY
        };
        if closer.wait_timeout(pause) {
            return;
        }
        let expiry = Expiry {
            after: after.take(),
            before: now() - chrono::Duration::from_std(DEDUP_WINDOW).unwrap_or_default(),
        };
        let Some(answer) =
            writer.blocking_send(|reply| WriteRequest::ExpireFingerprints(expiry, reply))
        else {
            return;
        };
        match answer {
            Ok(chunk) => {
                if chunk.removed > 0 {
                    tracing::debug!(removed = chunk.removed, "expired request fingerprints");
                }
                after = chunk.next;
            }
            Err(e) => tracing::warn!(error = %e, "expiring request fingerprints failed"),
        }
    }
}

/// For the background threads (checkpointer, expirer). Checkpoints copy
/// pages (and sync the file); at the same priority as the writer and the
/// request handlers that took CPU slices from them on a busy machine, and
/// showed as their latency. With a lower priority, background work runs on
/// what they leave; it still catches up, since requests wait on I/O part of
/// the time. (Ingest at 32 connections on 2 cores, five runs each: p99
/// 8.2-12.0 ms, median 9.2, against 10.1-16.6 ms, median 12.3.)
fn lower_this_threads_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread's own id; on
        // Linux, PRIO_PROCESS with a thread id sets that thread's nice value
        // only.
        let failed = unsafe {
            let tid = libc::gettid();
            libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10) != 0
        };
        if failed {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "could not lower a background thread's priority"
            );
        }
    }
}
