//! The one error type of the HTTP layer: every failure, from the core or from a
//! rejected request, leaves as `{"code", "message", "details"}` with its status.
//! Conversions into it have no side effects; a 5xx carries its cause to
//! [`ApiError::into_response`], the one place it is logged, inside the request's span.

use std::borrow::Cow;
use std::sync::Arc;

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

/// The fault behind a 5xx answer, for the log line only.
type Cause = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A failure answered to the client: status plus [`ErrorBody`]. Built from a core
/// [`Error`], from a transport-level rejection, or by the HTTP layer itself (a
/// missing or wrong token, a rate limit, an unknown route).
///
/// 5xx answers carry no internal text; their cause rides along and is logged once,
/// when the answer is made.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    code: Cow<'static, str>,
    message: String,
    details: Value,
    retry_after: Option<u64>,
    cause: Option<Cause>,
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
            cause: None,
        }
    }

    /// 500 `internal`, logged with `cause` when answered.
    pub fn internal(cause: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        let mut error = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        );
        error.cause = Some(Arc::from(cause.into()));
        error
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

    /// 429 `rate_limited`: retry in `retry_after_secs` (also sent as `Retry-After`).
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many requests; retry in {retry_after_secs} s"),
        )
        .with_details(json!({ "retry_after_secs": retry_after_secs }));
        error.retry_after = Some(retry_after_secs);
        error
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
pub(crate) fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::InvalidInput { .. } | Error::IdempotencyKeyMissing => StatusCode::BAD_REQUEST,
        Error::InvalidCredentials => StatusCode::UNAUTHORIZED,
        Error::Forbidden { .. } | Error::AdmissionRequired => StatusCode::FORBIDDEN,
        Error::NotFound { .. } => StatusCode::NOT_FOUND,
        Error::OutOfStock { .. }
        | Error::DropNotLive { .. }
        | Error::PerUserLimitExceeded { .. }
        | Error::OrderNotReserved { .. }
        | Error::HoldExpired
        | Error::AlreadyExtended { .. }
        | Error::VariantAvailable { .. }
        | Error::DropIsDraw
        | Error::EntriesClosed
        | Error::EmailTaken
        | Error::VersionConflict { .. }
        | Error::Conflict { .. }
        | Error::InsufficientStock { .. }
        | Error::IdempotencyKeyInFlight => StatusCode::CONFLICT,
        Error::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
        Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        let status = status_of(&error);
        let retry_after = matches!(error, Error::Unavailable { .. }).then_some(1);
        let (message, details) = if status == StatusCode::INTERNAL_SERVER_ERROR {
            // The client learns nothing internal; the cause goes to the log.
            ("internal error".to_owned(), json!({}))
        } else {
            (error.to_string(), error.details())
        };
        let cause = error.cause();
        Self {
            status,
            code: Cow::Borrowed(error.code()),
            message,
            details,
            retry_after,
            cause,
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
            _ if status.is_server_error() => "internal error".to_owned(),
            _ => rejection.body_text(),
        };
        // The contract answers every malformed body with 400 (axum says 422 for a
        // well-formed body of the wrong shape); 422 is reserved for reused keys.
        let status = if status.is_server_error() || status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        let mut error = Self::new(status, code, message).with_details(json!({ "field": "body" }));
        if rejection.status().is_server_error() {
            error.cause = Some(Arc::new(rejection));
        }
        error
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        if rejection.status().is_server_error() {
            // A route whose path parameters do not fit its extractor: our fault.
            return Self::internal(rejection);
        }
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            rejection.body_text(),
        )
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
    /// Answers with the status and the body; a 5xx (or any answer with a cause, such
    /// as a body that could not be read) is logged here, once, with its cause (this
    /// runs inside the request's span).
    fn into_response(self) -> Response {
        if self.status.is_server_error() || self.cause.is_some() {
            // `{:#}` shows the cause and each of its sources on one line.
            let cause = match &self.cause {
                Some(c) => format!("{:#}", anyhow::Error::new(c.clone())),
                None => "unknown".to_owned(),
            };
            if self.status == StatusCode::INTERNAL_SERVER_ERROR {
                tracing::error!(status = self.status.as_u16(), code = %self.code, %cause, "answering with a server error");
            } else {
                tracing::warn!(status = self.status.as_u16(), code = %self.code, %cause, "answering with a server error");
            }
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
pub(crate) type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;
    use livedrop_core::StoreError;

    #[test]
    fn a_store_fault_keeps_its_cause_for_the_log_and_out_of_the_body() {
        let error = ApiError::from(Error::from(StoreError::backend(
            "syntax error at or near SELECT",
        )));
        assert_eq!(error.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(error.body().message, "internal error");
        let cause = error
            .cause
            .as_ref()
            .map(|c| format!("{:#}", anyhow::Error::new(c.clone())));
        assert_eq!(
            cause.as_deref(),
            Some("backend error: syntax error at or near SELECT")
        );
    }

    #[test]
    fn http_only_refusals_keep_their_status_and_code() {
        let limited = ApiError::rate_limited(3);
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(limited.code(), "rate_limited");
        assert_eq!(limited.body().details, json!({ "retry_after_secs": 3 }));
        let response = limited.into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let missing = ApiError::unauthenticated("send a token");
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(missing.code(), "unauthenticated");
    }
}
