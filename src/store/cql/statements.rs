//! How the store's CQL statements are prepared and counted. Each component
//! declares its own statements with [`statements!`], prepared once at
//! start-up (so partition keys are bound with `?` and routing stays
//! token-aware), each with its name and whether the driver may retry it.

use std::net::SocketAddr;
use std::sync::Arc;

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
/// `errata_cql_round_trips_total`, both labelled `kind`.
#[derive(Debug)]
struct Counted(&'static str);

impl HistoryListener for Counted {
    fn log_request_start(&self) -> RequestId {
        metrics::counter!("errata_cql_statements_total", "kind" => self.0).increment(1);
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
        metrics::counter!("errata_cql_round_trips_total", "kind" => self.0).increment(1);
        AttemptId(0)
    }

    fn log_attempt_success(&self, _: AttemptId) {}

    fn log_attempt_error(&self, _: AttemptId, _: &RequestAttemptError, _: &RetryDecision) {}
}

/// A batch counted as `kind` (see [`Counted`]).
pub fn batch(kind: &'static str, batch_type: BatchType, idempotent: bool) -> Batch {
    let mut batch = Batch::new(batch_type);
    batch.set_is_idempotent(idempotent);
    batch.set_history_listener(Arc::new(Counted(kind)));
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
    statement.set_history_listener(Arc::new(Counted(kind)));
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
