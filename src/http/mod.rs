//! The HTTP API: one module per resource, merged here with the middleware
//! every route shares (body limit, auth, metrics, request ids, tracing).
//!
//! | file | its one job |
//! | --- | --- |
//! | `users` | signing up, reading an account |
//! | `erasure` | erasing a learner and everything of theirs |
//! | `export` | a learner's data as one streamed JSON document |
//! | `conversations` | starting a conversation |
//! | `utterances` | recording what a learner said |
//! | `error_points` | recording error points; frequencies and latest errors |
//! | `progress` | a learner's errors week by week |
//! | `exercises` | personalised practice |
//! | `answers` | answers to exercises, their undo, the memory schedule |
//! | `ops` | liveness, readiness, metrics |
//! | `openapi` | the API document: its registry of paths, what it adds, its page |
//! | `extract` | extractors answering malformed input with 422s and 413s |
//! | `error` | the one error type and its response bodies |
//!
//! A resource's module depends on `error`, `extract` and the bodies of the
//! resources it shows; `openapi` depends on every handler it documents, and
//! nothing depends on it but this router.

pub mod answers;
pub mod conversations;
pub mod erasure;
pub mod error;
pub mod error_points;
pub mod exercises;
pub mod export;
pub mod extract;
pub mod openapi;
pub mod ops;
pub mod progress;
pub mod users;
pub mod utterances;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderName, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use subtle::ConstantTimeEq;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::clock::Clock;
use crate::domain::ExerciseBank;
use crate::store::Store;
use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub bank: Arc<ExerciseBank>,
    /// Accepted bearer tokens; empty means no authentication.
    pub tokens: Arc<Vec<String>>,
    /// The time requests are recorded at and "this week" is read by.
    pub clock: Clock,
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .merge(users::router())
        .merge(conversations::router())
        .merge(utterances::router())
        .merge(error_points::router())
        .merge(exercises::router())
        .merge(answers::router())
        .merge(export::router())
        .merge(progress::router())
        .merge(ops::router())
        .merge(openapi::router())
        // A route layer sees the matched route, so metrics are labelled by
        // route template, not by raw path (which carries ids).
        .route_layer(middleware::from_fn(record_metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .with_state(state);
    api.layer(
        TraceLayer::new_for_http().make_span_with(|request: &Request| {
            let request_id = request
                .headers()
                .get(&REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            // The path only: query strings may carry identifiers.
            tracing::info_span!("request", method = %request.method(),
                    path = %request.uri().path(), request_id)
        }),
    )
    .layer(PropagateRequestIdLayer::new(REQUEST_ID))
    .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("Not Found".into())
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(error::Detail {
            detail: "Method Not Allowed".into(),
        }),
    )
        .into_response()
}

/// Bearer-token check for every route but `/healthz`, when tokens are set.
async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if state.tokens.is_empty() || request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let accepted = presented.is_some_and(|presented| {
        // Every token is compared, in constant time, so timing tells nothing
        // about which one came close.
        state.tokens.iter().fold(false, |ok, token| {
            ok | bool::from(token.as_bytes().ct_eq(presented.as_bytes()))
        })
    });
    if accepted {
        next.run(request).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

/// Request count and latency per route and status.
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().to_string();
    let response = next.run(request).await;
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("errata_http_requests_total", &labels).increment(1);
    metrics::histogram!("errata_http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
