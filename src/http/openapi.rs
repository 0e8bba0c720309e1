//! The API document and where it is served (`/openapi.json`, and the
//! `/docs` page with its vendored viewer).
//!
//! [`ApiDoc`] is the registry of documented operations: a new endpoint is
//! its handler's annotation plus one line there. Beyond the handlers' own
//! annotations the document says the input rules written as patterns, the
//! responses every operation shares (413, 503, and 401 when tokens are
//! configured) and the links from the create operations to those that take
//! the ids they return, so that a generated client, or a fuzzer following
//! links, is never surprised.

use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use utoipa::openapi::link::Link;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{
    header::Header, Content, OpenApi, Ref, RefOr, Response, ResponseBuilder, Schema,
};
use utoipa::Modify;

use super::AppState;
use crate::domain::patterns;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(openapi_json))
        .route("/docs", get(docs))
        .route("/docs/swagger-ui-bundle.js", get(docs_script))
        .route("/docs/swagger-ui.css", get(docs_style))
}

/// The registry of documented operations: each handler's `utoipa::path`
/// annotation says what it takes and answers; listing it here puts it in
/// the document.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "errata", description = "Records learners' spoken-English error points and serves targeted practice."),
    paths(
        super::users::create_user,
        super::users::get_user,
        super::users::update_user,
        super::erasure::delete_user,
        super::export::export_user,
        super::conversations::create_conversation,
        super::utterances::create_utterance,
        super::error_points::record_errors,
        super::error_points::record_utterance_errors,
        super::error_points::list_errors,
        super::error_points::recent_errors,
        super::progress::progress,
        super::exercises::generate_exercise,
        super::answers::record_answer,
        super::answers::list_answers,
        super::answers::undo_answer,
        super::answers::schedule,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics_text,
    ),
    components(schemas(
        super::error::FieldError,
        super::error::LocItem,
        super::exercises::RankParam
    )),
    modifiers(&BearerAuth, &Rules, &AnswerRules, &SharedResponses, &Links),
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

/// The API document; with bearer tokens configured it says where they
/// are needed.
pub async fn openapi_json(State(state): State<AppState>) -> impl IntoResponse {
    Json(document(!state.tokens.is_empty()))
}

/// The API page. Its viewer (Swagger UI, vendored in `docs/`) is served
/// from the binary itself, so the page renders with no network.
pub async fn docs() -> Html<&'static str> {
    Html(include_str!("docs/index.html"))
}

/// The viewer's files change only with the binary: cached for a day.
fn asset(content_type: &'static str, body: &'static str) -> axum::response::Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        body,
    )
        .into_response()
}

pub async fn docs_script() -> axum::response::Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("docs/swagger-ui-bundle.js"),
    )
}

pub async fn docs_style() -> axum::response::Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("docs/swagger-ui.css"),
    )
}

/// The input rules that are more than a type, length or range: the
/// patterns of the domain's validated strings.
struct Rules;

impl Modify for Rules {
    fn modify(&self, openapi: &mut OpenApi) {
        for (schema, property, pattern) in [
            ("CreateUser", "username", patterns::USERNAME),
            ("CreateUser", "email", patterns::EMAIL),
            ("ErrorPointBody", "errorCategory", patterns::ERROR_NAME),
            ("ErrorPointBody", "errorSubCategory", patterns::ERROR_NAME),
            ("AnswerRequest", "errorCategory", patterns::ERROR_NAME),
            ("AnswerRequest", "errorSubCategory", patterns::ERROR_NAME),
        ] {
            let target = openapi
                .components
                .as_mut()
                .and_then(|c| c.schemas.get_mut(schema))
                .and_then(|s| match s {
                    RefOr::T(Schema::Object(object)) => object.properties.get_mut(property),
                    _ => None,
                });
            // (The unit tests check every rule lands.)
            if let Some(RefOr::T(Schema::Object(field))) = target {
                field.pattern = Some(pattern.to_owned());
            }
        }
    }
}

/// The rules of the memory model's bodies that are more than a field's
/// type: a time zone is one of the IANA names this build knows, and an
/// answer has exactly one of `response` and `grade` (two alternatives,
/// each requiring one; a body with both matches both, so neither).
struct AnswerRules;

impl Modify for AnswerRules {
    fn modify(&self, openapi: &mut OpenApi) {
        use utoipa::openapi::schema::OneOf;
        let Some(schemas) = openapi.components.as_mut().map(|c| &mut c.schemas) else {
            return;
        };
        if let Some(RefOr::T(Schema::Object(zone))) = schemas.get_mut("TimezoneName") {
            let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
            zone.enum_values = Some(names.map(serde_json::Value::from).collect());
        }
        if let Some(RefOr::T(Schema::Object(answer))) = schemas.get("AnswerRequest").cloned() {
            let null: RefOr<Schema> =
                serde_json::from_value(json!({"type": "null"})).expect("a null schema is a schema");
            let response: RefOr<Schema> =
                serde_json::from_value(json!({"type": "string", "maxLength": 10000}))
                    .expect("a string schema is a schema");
            let grade = RefOr::Ref(utoipa::openapi::Ref::from_schema_name("Grade"));
            // One alternative requires `response` and leaves `grade` null
            // or out; the other the reverse.
            let requiring = |field: &str| {
                let mut alternative = answer.clone();
                alternative.required.push(field.to_owned());
                let (given, other, other_name) = if field == "response" {
                    (response.clone(), null.clone(), "grade")
                } else {
                    (grade.clone(), null.clone(), "response")
                };
                alternative.properties.insert(field.to_owned(), given);
                alternative.properties.insert(other_name.to_owned(), other);
                alternative
            };
            let one_of = OneOf::builder()
                .item(requiring("response"))
                .item(requiring("grade"))
                .build();
            schemas.insert("AnswerRequest".into(), RefOr::T(Schema::OneOf(one_of)));
        }
    }
}

/// Paths whose operations never touch a store (so never answer 503).
const STORELESS: [&str; 2] = ["/healthz", "/metrics"];

/// The responses any operation may give besides its own: 413 for a body
/// over the limit, 503 when a backend does not answer.
struct SharedResponses;

impl Modify for SharedResponses {
    fn modify(&self, openapi: &mut OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let storeless = STORELESS.contains(&path.as_str());
            for operation in operations(item) {
                let responses = &mut operation.responses.responses;
                if operation.request_body.is_some() {
                    responses
                        .entry("413".into())
                        .or_insert_with(|| detail("Request body over 64 KiB"));
                }
                if !storeless {
                    responses.entry("503".into()).or_insert_with(unavailable);
                }
            }
        }
    }
}

/// The document as served: with bearer tokens configured, every operation
/// but `/healthz` requires one and may answer 401.
pub fn document(tokens_configured: bool) -> serde_json::Value {
    use utoipa::OpenApi as _;
    let openapi = with_auth(ApiDoc::openapi(), tokens_configured);
    let mut document = serde_json::to_value(openapi).unwrap_or_default();
    camel_case_links(&mut document);
    document
}

/// utoipa writes a link's `operationId` and `requestBody` in snake case;
/// OpenAPI spells them in camel case.
fn camel_case_links(document: &mut serde_json::Value) {
    let Some(paths) = document.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let responses = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| operation.get_mut("responses")?.as_object_mut())
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        let Some(links) = response.get_mut("links").and_then(|l| l.as_object_mut()) else {
            continue;
        };
        for link in links.values_mut().filter_map(|l| l.as_object_mut()) {
            for (snake, camel) in [
                ("operation_id", "operationId"),
                ("request_body", "requestBody"),
            ] {
                if let Some(value) = link.remove(snake) {
                    link.insert(camel.to_owned(), value);
                }
            }
        }
    }
}

fn with_auth(mut openapi: OpenApi, tokens_configured: bool) -> OpenApi {
    if !tokens_configured {
        return openapi;
    }
    for (path, item) in openapi.paths.paths.iter_mut() {
        if path == "/healthz" {
            continue;
        }
        for operation in operations(item) {
            operation
                .security
                .get_or_insert_with(Vec::new)
                .push(SecurityRequirement::new("bearer", Vec::<String>::new()));
            operation
                .responses
                .responses
                .entry("401".into())
                .or_insert_with(|| detail("Not authenticated"));
        }
    }
    openapi
}

/// From each create operation to the operations taking the ids it returns.
struct Links;

impl Modify for Links {
    fn modify(&self, openapi: &mut OpenApi) {
        let user = "$response.body#/user_id";
        let conversation = "$response.body#/conversation_id";
        let utterance = "$response.body#/utterance_id";
        let by_user = |operation_id: &str| link(operation_id).parameter("user_id", user).build();
        let from_user = [
            ("GetUser", by_user("get_user")),
            ("ListErrors", by_user("list_errors")),
            ("RecentErrors", by_user("recent_errors")),
            ("GenerateExercise", by_user("generate_exercise")),
            ("ExportUser", by_user("export_user")),
            ("DeleteUser", by_user("delete_user")),
            ("UpdateUser", by_user("update_user")),
            ("RecordAnswer", by_user("record_answer")),
            ("ListAnswers", by_user("list_answers")),
            ("Schedule", by_user("schedule")),
            (
                "CreateConversation",
                link("create_conversation")
                    .request_body(Some(json!({ "user_id": user })))
                    .build(),
            ),
        ];
        let from_conversation = [(
            "CreateUtterance",
            link("create_utterance")
                .request_body(Some(
                    json!({ "user_id": user, "conversation_id": conversation }),
                ))
                .build(),
        )];
        let from_utterance = [
            (
                "RecordErrors",
                link("record_errors")
                    .request_body(Some(json!({
                        "user_id": user,
                        "conversation_id": conversation,
                        "utterance_id": utterance,
                    })))
                    .build(),
            ),
            (
                "RecordUtteranceErrors",
                link("record_utterance_errors")
                    .parameter("utterance_id", utterance)
                    .request_body(Some(
                        json!({ "user_id": user, "conversation_id": conversation }),
                    ))
                    .build(),
            ),
        ];
        add_links(openapi, "/users/", Vec::from(from_user));
        add_links(openapi, "/conversations/", Vec::from(from_conversation));
        add_links(openapi, "/utterances/", Vec::from(from_utterance));
    }
}

fn link(operation_id: &str) -> utoipa::openapi::link::LinkBuilder {
    utoipa::openapi::link::LinkBuilder::new().operation_id(operation_id)
}

/// Adds `links` to the 201 of `POST path`.
fn add_links(openapi: &mut OpenApi, path: &str, links: Vec<(&str, Link)>) {
    let created = openapi
        .paths
        .paths
        .get_mut(path)
        .and_then(|item| item.post.as_mut())
        .and_then(|post| post.responses.responses.get_mut("201"));
    if let Some(RefOr::T(response)) = created {
        for (name, link) in links {
            response.links.insert(name.to_owned(), RefOr::T(link));
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
        item.head.as_mut(),
        item.options.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// A response with a `{"detail": "..."}` body.
fn detail(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("Detail"))),
            )
            .build(),
    )
}

/// 503: a backend did not answer; retry after the header's seconds.
fn unavailable() -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description("A backend is unavailable; the request may be retried")
            .content(
                "application/json",
                Content::new(Some(Ref::from_schema_name("Detail"))),
            )
            .header(
                "Retry-After",
                Header::new(utoipa::openapi::ObjectBuilder::new().schema_type(
                    utoipa::openapi::schema::SchemaType::Type(utoipa::openapi::Type::Integer),
                )),
            )
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> serde_json::Value {
        super::document(false)
    }

    #[test]
    fn every_rule_has_its_pattern() {
        let doc = document();
        let schemas = &doc["components"]["schemas"];
        assert_eq!(
            schemas["CreateUser"]["properties"]["email"]["pattern"],
            patterns::EMAIL
        );
        assert_eq!(
            schemas["CreateUser"]["properties"]["username"]["pattern"],
            patterns::USERNAME
        );
        for field in ["errorCategory", "errorSubCategory"] {
            assert_eq!(
                schemas["ErrorPointBody"]["properties"][field]["pattern"],
                patterns::ERROR_NAME
            );
        }
    }

    #[test]
    fn the_create_operations_link_to_what_takes_their_ids() {
        let doc = document();
        let links = |path: &str| doc["paths"][path]["post"]["responses"]["201"]["links"].clone();
        let operation_ids: Vec<String> = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .flat_map(|item| item.as_object().unwrap().values())
            .filter_map(|op| op["operationId"].as_str().map(str::to_owned))
            .collect();
        for path in ["/users/", "/conversations/", "/utterances/"] {
            let links = links(path);
            let links = links.as_object().unwrap();
            assert!(!links.is_empty(), "{path}");
            for link in links.values() {
                let target = link["operationId"].as_str().unwrap();
                assert!(link.get("operation_id").is_none());
                assert!(operation_ids.iter().any(|id| id == target), "{target}");
            }
        }
    }

    #[test]
    fn tokens_add_401_everywhere_but_healthz() {
        let doc = super::document(true);
        assert!(doc["paths"]["/healthz"]["get"]["responses"]["401"].is_null());
        assert!(doc["paths"]["/users/"]["post"]["responses"]["401"].is_object());
        let open = document();
        assert!(open["paths"]["/users/"]["post"]["responses"]["401"].is_null());
    }
}
