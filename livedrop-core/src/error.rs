//! Errors by layer: [`StoreError`] is what a port reports; [`Error`] is what a
//! command reports to its caller, with a stable snake_case code.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::model::{DropStatus, OrderStatus};

/// A boxed error source.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The underlying fault behind an [`Error::Internal`] or [`Error::Unavailable`]
/// (a driver's error, a failed encoding …), carried to the one place that logs it.
/// It is never serialized (clients and idempotent replays never see it) and never
/// compared: two errors differing only in their cause are equal.
#[derive(Clone, Default)]
pub struct Cause(Option<Arc<dyn std::error::Error + Send + Sync + 'static>>);

impl Cause {
    /// A cause wrapping `error`.
    pub fn new(error: impl Into<BoxError>) -> Self {
        Self(Some(Arc::from(error.into())))
    }

    /// No known cause.
    pub fn none() -> Self {
        Self(None)
    }

    /// The error, if known (shared, cheap to clone).
    pub fn error(&self) -> Option<Arc<dyn std::error::Error + Send + Sync + 'static>> {
        self.0.clone()
    }
}

impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            None => f.write_str("None"),
            Some(e) => write!(f, "{e:?}"),
        }
    }
}

impl PartialEq for Cause {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Cause {}

/// What a repository, cache or bus reports. Adapters sort their driver's errors
/// into these (a unique violation is a conflict, a refused connection is unavailable).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The addressed record does not exist.
    #[error("not found")]
    NotFound,
    /// A uniqueness or version constraint refused the write.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend cannot be reached now (refused connection, pool timeout, shutdown).
    /// Retrying later may succeed.
    #[error("{what} unavailable")]
    Unavailable {
        /// Which dependency: "database", "cache", "event bus".
        what: &'static str,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// Anything else the backend reported.
    #[error("backend error")]
    Backend(#[source] BoxError),
}

impl StoreError {
    /// An unavailable dependency.
    pub fn unavailable(what: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Unavailable {
            what,
            source: source.into(),
        }
    }

    /// Any other backend failure.
    pub fn backend(source: impl Into<BoxError>) -> Self {
        Self::Backend(source.into())
    }

    /// Whether retrying later may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

/// Result of a port call.
pub type StoreResult<T> = Result<T, StoreError>;

/// What a command reports. Serializable (tagged by `code`) so an idempotent replay
/// returns exactly the first response; [`Error::details`] gives the fields.
///
/// Each variant's doc names the HTTP status the reference server answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Error {
    /// 400: the input breaks a rule.
    #[error("{message}")]
    InvalidInput {
        /// What is wrong, as a sentence.
        message: String,
        /// The offending field, when there is one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        field: Option<String>,
    },
    /// 401: email or password wrong.
    #[error("email or password is wrong")]
    InvalidCredentials,
    /// 403: the actor may not do this.
    #[error("{message}")]
    Forbidden {
        /// Why, as a sentence.
        message: String,
    },
    /// 404: no such resource (or not visible to the actor).
    #[error("{resource} not found")]
    NotFound {
        /// What was looked for: "drop", "order", …
        resource: String,
    },
    /// 409: fewer units available than requested.
    #[error("only {available} unit(s) available, {requested} requested")]
    OutOfStock {
        /// Units available when checked.
        available: u32,
        /// Units requested.
        requested: u32,
    },
    /// 409: the drop does not take orders now.
    #[error("the drop is {}, not live", status.as_str())]
    DropNotLive {
        /// The drop's status when checked.
        status: DropStatus,
    },
    /// 409: the order would take the buyer past the drop's per-user limit.
    #[error("the per-user limit is {limit}; {held} already held, {requested} requested")]
    PerUserLimitExceeded {
        /// The limit.
        limit: u32,
        /// Units the buyer already holds (reserved plus confirmed).
        held: u32,
        /// Units requested.
        requested: u32,
    },
    /// 409: the order is not reserved any more.
    #[error("the order is {}; only a reserved order can be {action}", status.as_str())]
    OrderNotReserved {
        /// The order's status.
        status: OrderStatus,
        /// What was attempted: "confirmed", "cancelled" or "extended".
        action: String,
    },
    /// 409: the hold ran out (before confirmation or extension); the stock returned
    /// or is about to.
    #[error("the hold on this order expired")]
    HoldExpired,
    /// 409: the order's hold was extended before; a hold is extended once.
    #[error(
        "the hold on this order was already extended; it runs until {}",
        reserved_until.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
    )]
    AlreadyExtended {
        /// When the (extended) hold runs out.
        reserved_until: crate::clock::Timestamp,
    },
    /// 409: a waitlist join for a variant anyone may still buy.
    #[error("{available} unit(s) of {sku} are available; order them instead of waiting")]
    VariantAvailable {
        /// The variant.
        sku: String,
        /// Units available when checked.
        available: u32,
    },
    /// 409: orders of a draw drop come only from its draw.
    #[error("this drop allocates by draw: enter the draw instead of ordering")]
    DropIsDraw,
    /// 409: the draw takes no entries now (not open yet, closed, or drawn).
    #[error("entries to this draw are closed")]
    EntriesClosed,
    /// 403: the drop is behind a waiting room and the request carries no valid
    /// admission token for this buyer and drop.
    #[error("this drop admits buyers from its waiting room: join the queue and order with its admission token")]
    AdmissionRequired,
    /// 409: the email is taken.
    #[error("that email is already registered")]
    EmailTaken,
    /// 409: the resource changed since the version the caller read.
    #[error("the resource changed; current version is {current}")]
    VersionConflict {
        /// The current version.
        current: i64,
    },
    /// 409: the request conflicts with the resource's current state.
    #[error("{message}")]
    Conflict {
        /// What conflicts, as a sentence.
        message: String,
    },
    /// 409: a stock shrink larger than what is available.
    #[error("cannot remove {requested} unit(s); {available} available")]
    InsufficientStock {
        /// Units available.
        available: u32,
        /// Units asked to remove.
        requested: u32,
    },
    /// 400: `POST /orders` without an idempotency key.
    #[error("an Idempotency-Key header is required")]
    IdempotencyKeyMissing,
    /// 422: the key was used before with a different request.
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    /// 409: the first request with this key is still running.
    #[error("a request with this Idempotency-Key is still in progress")]
    IdempotencyKeyInFlight,
    /// 503: a dependency is down; retry later.
    #[error("{dependency} is unavailable; retry later")]
    Unavailable {
        /// Which dependency.
        dependency: String,
        /// Why, for the log (never in the message).
        #[serde(skip)]
        cause: Cause,
    },
    /// 500: a fault on our side. The message never carries backend text.
    #[error("internal error")]
    Internal {
        /// What failed, for the log (never in the message).
        #[serde(skip)]
        cause: Cause,
    },
}

impl Error {
    /// The stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidInput { .. } => "invalid_input",
            Error::InvalidCredentials => "invalid_credentials",
            Error::Forbidden { .. } => "forbidden",
            Error::NotFound { .. } => "not_found",
            Error::OutOfStock { .. } => "out_of_stock",
            Error::DropNotLive { .. } => "drop_not_live",
            Error::PerUserLimitExceeded { .. } => "per_user_limit_exceeded",
            Error::OrderNotReserved { .. } => "order_not_reserved",
            Error::HoldExpired => "hold_expired",
            Error::AlreadyExtended { .. } => "already_extended",
            Error::VariantAvailable { .. } => "variant_available",
            Error::DropIsDraw => "drop_is_draw",
            Error::EntriesClosed => "entries_closed",
            Error::AdmissionRequired => "admission_required",
            Error::EmailTaken => "email_taken",
            Error::VersionConflict { .. } => "version_conflict",
            Error::Conflict { .. } => "conflict",
            Error::InsufficientStock { .. } => "insufficient_stock",
            Error::IdempotencyKeyMissing => "idempotency_key_missing",
            Error::IdempotencyKeyReused => "idempotency_key_reused",
            Error::IdempotencyKeyInFlight => "idempotency_key_in_flight",
            Error::Unavailable { .. } => "unavailable",
            Error::Internal { .. } => "internal",
        }
    }

    /// The variant's fields as a JSON object (everything but the code).
    pub fn details(&self) -> serde_json::Value {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(mut map)) => {
                map.remove("code");
                map.remove("message");
                serde_json::Value::Object(map)
            }
            _ => serde_json::Value::Object(Default::default()),
        }
    }

    /// An [`Error::InvalidInput`] about `field`.
    pub fn invalid(field: &str, message: impl Into<String>) -> Self {
        Error::InvalidInput {
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    /// An [`Error::Forbidden`].
    pub fn forbidden(message: impl Into<String>) -> Self {
        Error::Forbidden {
            message: message.into(),
        }
    }

    /// An [`Error::Internal`] caused by `cause`.
    pub fn internal(cause: impl Into<BoxError>) -> Self {
        Error::Internal {
            cause: Cause::new(cause),
        }
    }

    /// An [`Error::Unavailable`] of `dependency`, with no known cause (add one with
    /// [`Error::with_cause`]).
    pub fn unavailable(dependency: &str) -> Self {
        Error::Unavailable {
            dependency: dependency.to_owned(),
            cause: Cause::none(),
        }
    }

    /// The same error with `cause` attached, if it is one that carries a cause
    /// ([`Error::Internal`], [`Error::Unavailable`]).
    pub fn with_cause(mut self, cause: impl Into<BoxError>) -> Self {
        if let Error::Internal { cause: slot } | Error::Unavailable { cause: slot, .. } = &mut self
        {
            *slot = Cause::new(cause);
        }
        self
    }

    /// The error for a log line: its message, then its cause and the cause's sources
    /// (`internal error: connection refused`). Never for a response body.
    pub fn detailed(&self) -> impl std::fmt::Display + '_ {
        Detailed(self)
    }

    /// The fault behind a 5xx error, when known: what the one log line reporting it
    /// shows.
    pub fn cause(&self) -> Option<Arc<dyn std::error::Error + Send + Sync + 'static>> {
        match self {
            Error::Internal { cause } | Error::Unavailable { cause, .. } => cause.error(),
            _ => None,
        }
    }

    /// An [`Error::NotFound`] for `resource`.
    pub fn not_found(resource: &str) -> Self {
        Error::NotFound {
            resource: resource.to_owned(),
        }
    }

    /// Whether the outcome depends on a transient condition and must not be replayed
    /// to a retry (the retry should run again instead).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Unavailable { .. } | Error::Internal { .. } | Error::IdempotencyKeyInFlight
        )
    }
}

/// Sorts a port's error into what a command reports, keeping the port's error as
/// the cause of a 5xx. No side effects: whoever handles the error logs it, once.
impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Error::not_found("resource"),
            StoreError::Unavailable { what, .. } => Error::unavailable(what).with_cause(e),
            StoreError::Conflict(_) | StoreError::Backend(_) => Error::internal(e),
        }
    }
}

/// Result of a command.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// See [`Error::detailed`].
struct Detailed<'a>(&'a Error);

impl std::fmt::Display for Detailed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        if let Some(cause) = self.0.cause() {
            write!(f, ": {cause}")?;
            let mut source = cause.source();
            while let Some(s) = source {
                write!(f, ": {s}")?;
                source = s.source();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_carry_the_fields_and_errors_round_trip() {
        let e = Error::OutOfStock {
            available: 2,
            requested: 5,
        };
        assert_eq!(e.code(), "out_of_stock");
        assert_eq!(
            e.details(),
            serde_json::json!({ "available": 2, "requested": 5 })
        );
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["code"], "out_of_stock");
        assert_eq!(serde_json::from_value::<Error>(json).unwrap(), e);
        assert_eq!(Error::IdempotencyKeyReused.details(), serde_json::json!({}));
    }

    #[test]
    fn a_time_in_a_message_reads_as_its_details_do() {
        let until = chrono::DateTime::from_timestamp(1_893_456_000, 893_573_000).expect("a time");
        let e = Error::AlreadyExtended {
            reserved_until: until,
        };
        let details = e.details();
        let shown = details["reserved_until"]
            .as_str()
            .expect("an RFC 3339 string");
        assert_eq!(shown, "2030-01-01T00:00:00.893573Z");
        assert_eq!(
            e.to_string(),
            format!("the hold on this order was already extended; it runs until {shown}")
        );
    }

    #[test]
    fn store_errors_become_codes_without_backend_text() {
        let e: Error = StoreError::unavailable("database", "connection refused").into();
        assert_eq!(e.code(), "unavailable");
        assert!(!e.to_string().contains("refused"));
        assert!(
            e.detailed().to_string().contains("refused"),
            "the log line has the cause"
        );
        let e: Error = StoreError::backend("syntax error at or near SELECT").into();
        assert!(matches!(e, Error::Internal { .. }));
        assert!(!e.to_string().contains("SELECT"));
        assert!(e.detailed().to_string().starts_with("internal error: "));
        assert!(e.detailed().to_string().contains("SELECT"));
    }
}
