//! The CQL session: connecting (for serving and for `errata migrate`),
//! mapping driver errors to store errors, and the row helpers every query
//! shares.

use std::ops::ControlFlow;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::deserialize::row::DeserializeRow;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::response::query_result::QueryRowsResult;
use scylla::response::PagingState;
use scylla::serialize::row::SerializeRow;
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::{Consistency, SerialConsistency};
use scylla::value::{CqlDate, CqlTimestamp, CqlValue, Row};

use crate::config::Config;
use crate::store::policy::{CQL_CONNECTION_TIMEOUT, CQL_REQUEST_TIMEOUT};
use crate::store::{Backend, BoxError, StoreError};

pub type StoreResult<T> = Result<T, StoreError>;

/// Connects to the configured contact points; with `keyspace`, every
/// statement runs in it.
pub async fn connect(config: &Config, keyspace: Option<&str>) -> StoreResult<Session> {
    let mut policy = DefaultPolicy::builder().token_aware(true);
    if let Some(dc) = &config.cql_local_dc {
        policy = policy
            .prefer_datacenter(dc.clone())
            .permit_dc_failover(true);
    }
    let profile = ExecutionProfile::builder()
        .request_timeout(Some(CQL_REQUEST_TIMEOUT))
        .consistency(consistency(&config.cql_consistency)?)
        .serial_consistency(Some(SerialConsistency::LocalSerial))
        .load_balancing_policy(policy.build())
        .build();
    let mut builder = SessionBuilder::new()
        .known_nodes(&config.cql_nodes)
        .connection_timeout(CQL_CONNECTION_TIMEOUT)
        .default_execution_profile_handle(profile.into_handle());
    if let Some(keyspace) = keyspace {
        builder = builder.use_keyspace(keyspace, false);
    }
    builder.build().await.map_err(|e| {
        let context = match keyspace {
            Some(k) => format!("connecting to keyspace {k} (did `errata migrate` run?)"),
            None => "connecting".to_owned(),
        };
        StoreError::unavailable(Backend::Cql, context, e)
    })
}

/// A consistency level by its CQL name (any case).
pub fn consistency(name: &str) -> StoreResult<Consistency> {
    Ok(match name.trim().to_ascii_uppercase().as_str() {
        "ONE" => Consistency::One,
        "LOCAL_ONE" => Consistency::LocalOne,
        "QUORUM" => Consistency::Quorum,
        "LOCAL_QUORUM" => Consistency::LocalQuorum,
        "EACH_QUORUM" => Consistency::EachQuorum,
        "ALL" => Consistency::All,
        other => {
            return Err(StoreError::Config(format!(
                "consistency {other:?}: expected ONE, LOCAL_ONE, QUORUM, LOCAL_QUORUM, EACH_QUORUM or ALL"
            )))
        }
    })
}

pub fn internal(e: impl Into<BoxError>) -> StoreError {
    StoreError::internal("cql", e)
}

/// Unreachable or overloaded nodes are 503s; anything else is a bug (500).
pub fn cql_error(e: ExecutionError) -> StoreError {
    let unavailable = match &e {
        ExecutionError::ConnectionPoolError(_)
        | ExecutionError::RequestTimeout(_)
        | ExecutionError::EmptyPlan => true,
        ExecutionError::LastAttemptError(attempt) => match attempt {
            RequestAttemptError::BrokenConnectionError(_)
            | RequestAttemptError::UnableToAllocStreamId => true,
            RequestAttemptError::DbError(db, _) => matches!(
                db,
                DbError::Unavailable { .. }
                    | DbError::Overloaded
                    | DbError::IsBootstrapping
                    | DbError::ReadTimeout { .. }
                    | DbError::WriteTimeout { .. }
                    | DbError::ReadFailure { .. }
                    | DbError::WriteFailure { .. }
            ),
            _ => false,
        },
        _ => false,
    };
    if unavailable {
        StoreError::unavailable(Backend::Cql, "a request failed", e)
    } else {
        StoreError::internal("cql", e)
    }
}

pub fn timestamp(t: DateTime<Utc>) -> CqlTimestamp {
    CqlTimestamp(t.timestamp_millis())
}

pub fn from_timestamp(t: CqlTimestamp) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(t.0).unwrap_or_default()
}

/// A CQL `date` counts days from 2^31 = 1970-01-01.
const CQL_EPOCH_DAY: i64 = 1 << 31;

pub fn date(day: NaiveDate) -> CqlDate {
    let days = (day - NaiveDate::default()).num_days();
    CqlDate((CQL_EPOCH_DAY + days) as u32)
}

pub fn from_date(day: CqlDate) -> NaiveDate {
    NaiveDate::default() + TimeDelta::days(i64::from(day.0) - CQL_EPOCH_DAY)
}

/// The `[applied]` column of a lightweight transaction's answer.
pub fn first_column_true(row: Option<Row>) -> bool {
    matches!(
        row.and_then(|r| r.columns.into_iter().next().flatten()),
        Some(CqlValue::Boolean(true))
    )
}

/// Runs a statement that answers with rows, in one page.
pub async fn select(
    session: &Session,
    statement: &PreparedStatement,
    values: impl SerializeRow,
) -> StoreResult<QueryRowsResult> {
    session
        .execute_unpaged(statement, values)
        .await
        .map_err(cql_error)?
        .into_rows_result()
        .map_err(internal)
}

/// Runs a statement page by page and hands every row to `each`: for scans
/// that may be long (a learner's whole event log, every learner).
pub async fn for_each_row<R, V>(
    session: &Session,
    statement: &PreparedStatement,
    values: V,
    mut each: impl FnMut(R),
) -> StoreResult<()>
where
    R: for<'frame, 'metadata> DeserializeRow<'frame, 'metadata>,
    V: SerializeRow,
{
    let mut paging = PagingState::start();
    loop {
        let (result, next) = session
            .execute_single_page(statement, &values, paging)
            .await
            .map_err(cql_error)?;
        let rows = result.into_rows_result().map_err(internal)?;
        for row in rows.rows::<R>().map_err(internal)? {
            each(row.map_err(internal)?);
        }
        match next.into_paging_control_flow() {
            ControlFlow::Break(()) => return Ok(()),
            ControlFlow::Continue(state) => paging = state,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_levels_are_read_by_name() {
        assert_eq!(
            consistency("local_quorum").unwrap(),
            Consistency::LocalQuorum
        );
        assert_eq!(consistency(" ONE ").unwrap(), Consistency::One);
        assert!(consistency("SERIAL").is_err());
        assert!(consistency("quorum!").is_err());
    }
}
