//! The one error type of the HTTP layer: every failure, from the core or from a
//! rejected request, leaves as `{"code", "message", "details"}` with its status.

use std::borrow::Cow;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use livedrop_core::Error;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

/// The error body every failing request receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable snake_case code, e.g. `out_of_stock`.
    pub code: String,
    /// A human sentence.
    pub message: String,
    /// Code-specific fields (an object, possibly empty).
    #[schema(value_type = Object)]
    pub details: Value,
}

/// A failure answered to the client: status plus [`ErrorBody`]. Built from a core
/// [`Error`] or from a transport-level rejection.
///
/// 5xx answers carry no internal text; their cause is logged where it happens.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
    details: Value,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with an explicit status, code and message, and empty details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: Cow::Borrowed(code),
            message: message.into(),
            details: json!({}),
            retry_after: None,
        }
    }

    /// Replaces the details object.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// 400 `invalid_input` about `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Error::invalid(field, message).into()
    }

    /// 401 `unauthenticated`.
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    /// 404 `not_found` for a route nobody serves.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {path}"),
        )
        .with_details(json!({ "resource": "route" }))
    }

    /// 405 `method_not_allowed`.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this method is not allowed on this path",
        )
    }

    /// 408 `request_timeout`.
    pub fn timeout() -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            "the request took too long and was abandoned; retry later",
        )
    }

    /// 413 `payload_too_large`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body exceeds {limit} bytes"),
        )
        .with_details(json!({ "limit_bytes": limit }))
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The stable code.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The body this error answers with.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code.to_string(),
            message: self.message.clone(),
            details: self.details.clone(),
        }
    }

    /// An error for a response some layer produced without our body (a bare 405,
    /// 408, 413 …), keeping its status.
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            StatusCode::NOT_FOUND => Self::new(status, "not_found", "not found"),
            StatusCode::METHOD_NOT_ALLOWED => Self::method_not_allowed(),
            StatusCode::REQUEST_TIMEOUT => Self::timeout(),
            StatusCode::PAYLOAD_TOO_LARGE => {
                Self::new(status, "payload_too_large", "the request body is too large")
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                status,
                "unsupported_media_type",
                "the request body must be application/json",
            ),
            StatusCode::TOO_MANY_REQUESTS => {
                Self::new(status, "rate_limited", "too many requests; retry later")
            }
            StatusCode::SERVICE_UNAVAILABLE => Self::new(
                status,
                "unavailable",
                "the service is unavailable; retry later",
            ),
            s if s.is_server_error() => Self::new(status, "internal", "internal error"),
            s => Self::new(
                s,
                "invalid_request",
                s.canonical_reason().unwrap_or("the request was refused"),
            ),
        }
    }
}

/// The status the reference server answers a core error with (see each variant's doc).
pub fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::InvalidInput { .. } | Error::IdempotencyKeyMissing => StatusCode::BAD_REQUEST,
        Error::Unauthenticated | Error::InvalidCredentials => StatusCode::UNAUTHORIZED,
        Error::Forbidden { .. } => StatusCode::FORBIDDEN,
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::OutOfStock { .. }
        | Error::DropNotLive { .. }
        | Error::PerUserLimitExceeded { .. }
        | Error::OrderNotReserved { .. }
        | Error::HoldExpired
        | Error::EmailTaken
        | Error::VersionConflict { .. }
        | Error::Conflict { .. }
        | Error::InsufficientStock { .. }
        | Error::IdempotencyKeyInFlight => StatusCode::CONFLICT,
        Error::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
        Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let status = status_of(&error);
        let retry_after = match &error {
            Error::RateLimited { retry_after_secs } => Some(*retry_after_secs),
            Error::Unavailable { .. } => Some(1),
            _ => None,
        };
        let (message, details) = if status == StatusCode::INTERNAL_SERVER_ERROR {
            // The core logged the cause; the client learns nothing internal.
            tracing::error!(code = error.code(), "request failed with an internal error");
            ("internal error".to_owned(), json!({}))
        } else {
            (error.to_string(), error.details())
        };
        Self {
            status,
            code: Cow::Borrowed(error.code()),
            message,
            details,
            retry_after,
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let code = match status {
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            s if s.is_server_error() => "internal",
            _ => "invalid_input",
        };
        let message = match &rejection {
            JsonRejection::MissingJsonContentType(_) => {
                "the request body must be JSON with Content-Type: application/json".to_owned()
            }
            JsonRejection::JsonSyntaxError(_) => {
                format!("the body is not valid JSON: {}", rejection.body_text())
            }
            _ if status.is_server_error() => {
                tracing::error!(error = %rejection.body_text(), "reading a request body failed");
                "internal error".to_owned()
            }
            _ => rejection.body_text(),
        };
        // The contract answers every malformed body with 400 (axum says 422 for a
        // well-formed body of the wrong shape); 422 is reserved for reused keys.
        let status = if status.is_server_error() || status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        Self::new(status, code, message).with_details(json!({ "field": "body" }))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        let status = if rejection.status().is_server_error() {
            tracing::error!(error = %rejection.body_text(), "path extraction misconfigured");
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_REQUEST
        };
        if status.is_server_error() {
            return Self::new(status, "internal", "internal error");
        }
        Self::new(status, "invalid_input", rejection.body_text())
            .with_details(json!({ "field": "path" }))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            rejection.body_text(),
        )
        .with_details(json!({ "field": "query" }))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), code = %self.code, "answering with a server error");
        }
        let body = axum::Json(self.body());
        let mut response = (self.status, body).into_response();
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response.extensions_mut().insert(ShapedError);
        response
    }
}

/// Marks a response whose body is already an [`ErrorBody`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ShapedError;

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
