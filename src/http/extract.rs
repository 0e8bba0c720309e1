//! Extractors that turn malformed input into FastAPI-shaped 422s (and
//! oversized bodies into 413s) instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use super::error::{ApiError, FieldError};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON request body. Unknown fields are ignored; the content type is not
/// insisted on, as FastAPI clients often omit it.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge {
                    limit: MAX_BODY_BYTES,
                }
            } else {
                ApiError::BadRequest(rejection.body_text())
            }
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::invalid(["body"], "Field required", "missing"));
        }
        let mut deserializer = serde_json::Deserializer::from_slice(&bytes);
        let value = serde_path_to_error::deserialize(&mut deserializer)
            .map_err(|e| json_error(path_loc(e.path()), e.inner()))?;
        deserializer.end().map_err(|e| json_error(Vec::new(), &e))?;
        Ok(Self(value))
    }
}

fn json_error(path: Vec<Value>, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    if matches!(
        e.classify(),
        Category::Syntax | Category::Eof | Category::Io
    ) {
        return ApiError::invalid(
            [Value::from("body"), Value::from(e.column())],
            format!("JSON decode error: {e}"),
            "json_invalid",
        );
    }
    let mut loc = vec![Value::from("body")];
    loc.extend(path);
    ApiError::Validation(vec![data_error(loc, &e.to_string())])
}

fn path_loc(path: &serde_path_to_error::Path) -> Vec<Value> {
    use serde_path_to_error::Segment;
    path.iter()
        .filter_map(|segment| match segment {
            Segment::Seq { index } => Some(Value::from(*index)),
            Segment::Map { key } => Some(Value::from(key.as_str())),
            Segment::Enum { variant } => Some(Value::from(variant.as_str())),
            Segment::Unknown => None,
        })
        .collect()
}

/// Maps serde's message for a value that does not fit the expected shape.
fn data_error(mut loc: Vec<Value>, message: &str) -> FieldError {
    let message = message.split(" at line ").next().unwrap_or(message);
    if let Some(field) = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        loc.push(Value::from(field));
        return FieldError::new(loc, "Field required", "missing");
    }
    let kind = if message.starts_with("UUID parsing failed") || message.contains("UUID") {
        "uuid_parsing"
    } else if message.starts_with("invalid type") {
        "type_error"
    } else {
        "value_error"
    };
    FieldError::new(loc, message, kind)
}

/// Query-string parameters, with 422s that name the parameter.
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let query = parts.uri.query().unwrap_or_default();
        let deserializer =
            serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(deserializer)
            .map(Self)
            .map_err(|e| {
                let mut loc = vec![Value::from("query")];
                loc.extend(path_loc(e.path()));
                ApiError::Validation(vec![data_error(loc, &e.inner().to_string())])
            })
    }
}

/// Parses a UUID path segment, naming it in the 422 when it is not one.
pub fn path_uuid(name: &str, raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|e| {
        ApiError::invalid(
            ["path", name],
            format!("Input should be a valid UUID, {e}"),
            "uuid_parsing",
        )
    })
}

/// Checks an integer parameter against its inclusive range.
pub fn in_range(loc: [&str; 2], value: i64, min: i64, max: i64) -> Result<i64, ApiError> {
    if value < min {
        Err(ApiError::invalid(
            loc,
            format!("Input should be greater than or equal to {min}"),
            "greater_than_equal",
        ))
    } else if value > max {
        Err(ApiError::invalid(
            loc,
            format!("Input should be less than or equal to {max}"),
            "less_than_equal",
        ))
    } else {
        Ok(value)
    }
}
