//! How the store's CQL statements are prepared and counted. Each component
//! declares its own statements with [`statements!`], prepared once at
//! start-up (so partition keys are bound with `?` and routing stays
//! token-aware), each with its name and whether the driver may retry it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use scylla::client::session::Session;
use scylla::errors::{RequestAttemptError, RequestError};
use scylla::observability::history::{AttemptId, HistoryListener, RequestId, SpeculativeId};
use scylla::policies::retry::RetryDecision;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;

use crate::store::StoreError;

/// Safe to retry: running it twice leaves what running it once leaves.
pub const IDEMPOTENT: bool = true;
/// Never retried by the driver (counter updates, lightweight transactions).
pub const ONCE: bool = false;

/// Counts one kind of statement for `/metrics`: every execution in
/// `errata_cql_statements_total` and every attempt (a round trip to a node,
/// retries and speculative executions included) in
/// `errata_cql_round_trips_total`, both labelled `kind`; each attempt that
/// ends is timed in `errata_cql_round_trip_seconds`.
#[derive(Debug)]
struct Counted {
    kind: &'static str,
    next_attempt: AtomicUsize,
    /// When each attempt under way started.
    attempts: Mutex<HashMap<usize, Instant>>,
}

/// Attempts whose end the driver never reports (a request cancelled by
/// its timeout) are forgotten past this many, so the map stays small.
const ATTEMPTS_TRACKED: usize = 4096;

impl Counted {
    fn new(kind: &'static str) -> Self {
        Self {
            kind,
            next_attempt: AtomicUsize::new(0),
            attempts: Mutex::new(HashMap::new()),
        }
    }

    fn attempts(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Instant>> {
        self.attempts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn attempt_ended(&self, AttemptId(id): AttemptId) {
        if let Some(started) = self.attempts().remove(&id) {
            metrics::histogram!("errata_cql_round_trip_seconds", "kind" => self.kind)
                .record(started.elapsed().as_secs_f64());
        }
    }
}

impl HistoryListener for Counted {
    fn log_request_start(&self) -> RequestId {
        metrics::counter!("errata_cql_statements_total", "kind" => self.kind).increment(1);
        RequestId(0)
    }

    fn log_request_success(&self, _: RequestId) {}

    fn log_request_error(&self, _: RequestId, _: &RequestError) {}

    fn log_new_speculative_fiber(&self, _: RequestId) -> SpeculativeId {
        SpeculativeId(0)
    }

    fn log_attempt_start(
        &self,
        _: RequestId,
        _: Option<SpeculativeId>,
        _: SocketAddr,
    ) -> AttemptId {
        metrics::counter!("errata_cql_round_trips_total", "kind" => self.kind).increment(1);
        let id = self.next_attempt.fetch_add(1, Ordering::Relaxed);
        let mut attempts = self.attempts();
        if attempts.len() >= ATTEMPTS_TRACKED {
            attempts.clear();
        }
        attempts.insert(id, Instant::now());
        AttemptId(id)
    }

    fn log_attempt_success(&self, attempt: AttemptId) {
        self.attempt_ended(attempt);
    }

    fn log_attempt_error(&self, attempt: AttemptId, _: &RequestAttemptError, _: &RetryDecision) {
        self.attempt_ended(attempt);
    }
}

/// A batch counted as `kind` (see [`Counted`]).
pub fn batch(kind: &'static str, batch_type: BatchType, idempotent: bool) -> Batch {
    let mut batch = Batch::new(batch_type);
    batch.set_is_idempotent(idempotent);
    batch.set_history_listener(Arc::new(Counted::new(kind)));
    batch
}

/// Prepares `cql` counted as `kind` (see [`Counted`]).
pub async fn prepare(
    session: &Session,
    kind: &'static str,
    cql: &'static str,
    idempotent: bool,
) -> Result<PreparedStatement, StoreError> {
    let mut statement = session
        .prepare(cql)
        .await
        .map_err(|e| StoreError::internal(format!("preparing {cql}"), e))?;
    statement.set_is_idempotent(idempotent);
    statement.set_history_listener(Arc::new(Counted::new(kind)));
    Ok(statement)
}

/// Declares one component's statements as a struct of prepared
/// statements, each with its name (the `kind` it is counted as) and
/// whether the driver may retry it, and its `prepare`.
macro_rules! statements {
    (
        $(#[$meta:meta])* $vis:vis struct $set:ident {
            $($(#[$doc:meta])* $name:ident: $idempotent:ident => $cql:expr,)*
        }
    ) => {
        $(#[$meta])* $vis struct $set {
            $($(#[$doc])* pub $name: ::scylla::statement::prepared::PreparedStatement,)*
        }

        impl $set {
            pub async fn prepare(
                session: &::scylla::client::session::Session,
            ) -> Result<Self, $crate::store::StoreError> {
                Ok(Self {
                    $($name: $crate::store::cql::statements::prepare(
                        session,
                        stringify!($name),
                        $cql,
                        $crate::store::cql::statements::$idempotent,
                    )
                    .await?,)*
                })
            }
        }
    };
}
pub(super) use statements;
