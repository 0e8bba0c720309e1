//! Operations endpoints: liveness, readiness, metrics and the API document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use utoipa::OpenApi;

use super::openapi::{Links, Rules, SharedResponses};
use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs))
        .route("/docs/swagger-ui-bundle.js", get(docs_script))
        .route("/docs/swagger-ui.css", get(docs_style))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200)))]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Readiness: every backend answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200), (status = 503, body = super::error::Detail)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match state.store.check_ready().await {
        Ok(()) => Json(json!({ "status": "ready" })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e.chain(), "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "detail": format!("Not ready: {}", e.public_reason()) })),
            )
                .into_response()
        }
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, content_type = "text/plain")))]
pub async fn metrics_text() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        crate::telemetry::render(),
    )
}

/// The API document; with bearer tokens configured it says where they
/// are needed.
pub async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    Json(super::openapi::document(!state.tokens.is_empty()))
}

/// The API page. Its viewer (Swagger UI, vendored in `docs/`) is served
/// from the binary itself, so the page renders with no network.
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("docs/index.html"))
}

/// The viewer's files change only with the binary: cached for a day.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

pub async fn docs_script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("docs/swagger-ui-bundle.js"),
    )
}

pub async fn docs_style() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("docs/swagger-ui.css"),
    )
}

#[derive(OpenApi)]
#[openapi(
    info(title = "errata", description = "Records learners' spoken-English error points and serves targeted practice."),
    paths(
        super::users::create_user,
        super::users::get_user,
        super::lifecycle::delete_user,
        super::lifecycle::export_user,
        super::conversations::create_conversation,
        super::utterances::create_utterance,
        super::error_points::record_errors,
        super::error_points::record_utterance_errors,
        super::error_points::list_errors,
        super::error_points::recent_errors,
        super::progress::progress,
        super::exercises::generate_exercise,
        healthz,
        readyz,
        metrics_text,
    ),
    components(schemas(
        super::error::FieldError,
        super::error::LocItem,
        super::exercises::RankParam
    )),
    modifiers(&BearerAuth, &Rules, &SharedResponses, &Links),
)]
pub struct ApiDoc;

/// Documents the optional bearer-token scheme.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}
