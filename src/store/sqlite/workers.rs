//! The store's threads, owned in one place: [`Workers`] starts the writer,
//! the checkpointer and the expirer, stops them all by one [`Closer`], and
//! joins them on `shutdown` or, failing that, when it is dropped (a drop
//! guard: a store that goes away without `shutdown` still leaves no thread
//! behind, and its WAL folded in). No thread joins another.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};

use r2d2_sqlite::rusqlite::Connection;

use super::connection::internal;
use super::expirer::Expirer;
use super::wal::{fold_wal_in, Checkpointer};
use super::writer::Writer;
use crate::store::closer::Closer;
use crate::store::StoreError;

/// What a worker thread runs at.
#[derive(Clone, Copy)]
enum Priority {
    /// As requests: the writer answers them.
    Requests,
    /// Below requests: upkeep that can wait for them.
    Background,
}

/// The running workers. Dropping it stops and joins them.
pub(super) struct Workers {
    closer: Closer,
    /// Taken by the first stop, which joins them.
    running: Mutex<Option<Running>>,
}

#[derive(Default)]
struct Running {
    /// Gives its connection back when it stops, for the WAL's last fold.
    writer: Option<JoinHandle<Connection>>,
    /// The checkpointer and the expirer, by name.
    background: Vec<(&'static str, JoinHandle<()>)>,
}

impl Workers {
    /// Starts the workers; they run until `closer` closes. If one cannot
    /// start, those that did are stopped and joined.
    pub fn start(
        closer: Closer,
        writer: Writer,
        checkpointer: Checkpointer,
        expirer: Expirer,
    ) -> Result<Self, StoreError> {
        let workers = Self {
            closer,
            running: Mutex::new(Some(Running::default())),
        };
        // On an early return, `workers` is dropped: what started stops.
        let checkpointer = spawn("checkpointer", Priority::Background, move || {
            checkpointer.run()
        })?;
        workers.add_background("checkpointer", checkpointer);
        let expirer = spawn("expirer", Priority::Background, move || expirer.run())?;
        workers.add_background("expirer", expirer);
        let writer = spawn("writer", Priority::Requests, move || writer.run())?;
        if let Some(running) = workers.lock().as_mut() {
            running.writer = Some(writer);
        }
        Ok(workers)
    }

    fn add_background(&self, name: &'static str, handle: JoinHandle<()>) {
        if let Some(running) = self.lock().as_mut() {
            running.background.push((name, handle));
        }
    }

    /// The workers whose threads are still running, by name.
    pub fn alive(&self) -> Vec<&'static str> {
        let running = self.lock();
        let Some(running) = running.as_ref() else {
            return Vec::new();
        };
        let writer = running
            .writer
            .iter()
            .filter(|handle| !handle.is_finished())
            .map(|_| "writer");
        let background = running
            .background
            .iter()
            .filter(|(_, handle)| !handle.is_finished())
            .map(|(name, _)| *name);
        writer.chain(background).collect()
    }

    /// Tells every worker to stop; the first call gets their handles, to
    /// join with [`Running::join`].
    fn stop(&self) -> Option<Running> {
        self.closer.close();
        self.lock().take()
    }

    /// Stops the workers and waits for them, off the runtime's threads.
    /// A second call has nothing left to wait for.
    pub async fn shutdown(&self) -> Result<(), StoreError> {
        match self.stop() {
            Some(running) => tokio::task::spawn_blocking(move || running.join())
                .await
                .map_err(internal)?,
            None => Ok(()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Running>> {
        // The handles are only ever taken whole: a panic elsewhere while
        // the lock was held cannot leave them half-changed.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Workers {
    /// The store went away without `shutdown`: the workers still stop, and
    /// are waited for here. That is short (the writer answers what is
    /// queued, then the WAL is folded in) and needs nothing from the async
    /// runtime, so it may block a runtime thread.
    fn drop(&mut self) {
        if let Some(running) = self.stop() {
            if let Err(e) = running.join() {
                tracing::error!(error = %e, "stopping the database workers");
            }
        }
    }
}

impl Running {
    /// Waits for every worker (they must have been told to stop), the
    /// checkpointer first: the WAL's last fold must not overlap its work.
    /// Then folds the WAL in on the writer's connection.
    fn join(self) -> Result<(), StoreError> {
        let mut panicked = Vec::new();
        for (name, handle) in self.background {
            if handle.join().is_err() {
                panicked.push(name);
            }
        }
        match self.writer.map(JoinHandle::join) {
            Some(Ok(conn)) => fold_wal_in(&conn),
            Some(Err(_)) => panicked.push("writer"),
            None => {}
        }
        match panicked.as_slice() {
            [] => Ok(()),
            names => Err(StoreError::bug(format!(
                "the database {} thread panicked",
                names.join(" and ")
            ))),
        }
    }
}

fn spawn<T: Send + 'static>(
    name: &str,
    priority: Priority,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>, StoreError> {
    thread::Builder::new()
        .name(format!("errata-sqlite-{name}"))
        .spawn(move || {
            if let Priority::Background = priority {
                lower_this_threads_priority();
            }
            work()
        })
        .map_err(internal)
}

/// For the background workers (checkpointer, expirer). Checkpoints copy
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
