//! Bearer tokens (HS256 JWTs), the extractor producing the acting user, and the
//! guard of the internal API. The extractors and the guard take what they need from
//! the router's state through `FromRef` ([`TokenKeys`], `InternalToken`), so this
//! module knows nothing of the state type.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use livedrop_core::model::{Actor, Role};
use livedrop_core::UserId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::error::ApiError;

/// What a token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Claims {
    /// The user id.
    pub sub: Uuid,
    /// The user's role when the token was issued.
    pub role: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Expires at (seconds since the epoch).
    pub exp: i64,
}

/// Signs and checks bearer tokens. Cheap to clone.
#[derive(Clone)]
pub struct TokenKeys {
    keys: Arc<Keys>,
}

struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("ttl", &self.keys.ttl)
            .finish_non_exhaustive()
    }
}

impl TokenKeys {
    /// Keys from a shared secret; tokens live `ttl`.
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            keys: Arc::new(Keys {
                encoding: EncodingKey::from_secret(secret),
                decoding: DecodingKey::from_secret(secret),
                validation,
                ttl,
            }),
        }
    }

    /// Keys from a fresh random secret: tokens do not survive the process.
    pub fn random(ttl: Duration) -> Self {
        let secret: [u8; 32] = rand::random();
        Self::new(&secret, ttl)
    }

    /// How long issued tokens live.
    pub fn ttl(&self) -> Duration {
        self.keys.ttl
    }

    /// A token for `actor`, valid from now for the configured lifetime.
    pub fn issue(
        &self,
        actor: &Actor,
    ) -> Result<(String, DateTime<Utc>), jsonwebtoken::errors::Error> {
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(self.keys.ttl).unwrap_or(chrono::Duration::hours(24));
        let expires = now + ttl;
        let token = self.issue_expiring_at(actor, now, expires)?;
        Ok((token, expires))
    }

    /// A token for `actor` issued at `iat` expiring at `exp` (tests craft expired ones).
    pub fn issue_expiring_at(
        &self,
        actor: &Actor,
        iat: DateTime<Utc>,
        exp: DateTime<Utc>,
    ) -> Result<String, jsonwebtoken::errors::Error> {
        let claims = Claims {
            sub: actor.id.0,
            role: actor.role.as_str().to_owned(),
            iat: iat.timestamp(),
            exp: exp.timestamp(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.keys.encoding)
    }

    /// The actor a token stands for, or 401 `unauthenticated`.
    pub fn verify(&self, token: &str) -> Result<Actor, ApiError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.keys.decoding, &self.keys.validation)
                .map_err(|e| match e.kind() {
                    jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                        ApiError::unauthenticated("the bearer token has expired; log in again")
                    }
                    _ => ApiError::unauthenticated("the bearer token is invalid"),
                })?;
        let role = Role::parse(&data.claims.role)
            .ok_or_else(|| ApiError::unauthenticated("the bearer token is invalid"))?;
        Ok(Actor::new(UserId(data.claims.sub), role))
    }
}

/// The bearer token of a request, if it sends one.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The authenticated actor of a request; 401 `unauthenticated` in the error shape
/// when the bearer token is missing, invalid or expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auth(pub Actor);

impl<S> FromRequestParts<S> for Auth
where
    TokenKeys: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if let Some(actor) = parts.extensions.get::<Actor>() {
            return Ok(Auth(*actor));
        }
        let token = bearer(&parts.headers).ok_or_else(|| {
            ApiError::unauthenticated("send Authorization: Bearer <token> (POST /sessions)")
        })?;
        let actor = TokenKeys::from_ref(state).verify(token)?;
        parts.extensions.insert(actor);
        Ok(Auth(actor))
    }
}

/// The actor of a request if it sends a bearer token, `None` when it sends none;
/// an invalid or expired token is still 401 `unauthenticated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaybeAuth(pub Option<Actor>);

impl<S> FromRequestParts<S> for MaybeAuth
where
    TokenKeys: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        if parts.extensions.get::<Actor>().is_none() && bearer(&parts.headers).is_none() {
            return Ok(MaybeAuth(None));
        }
        let Auth(actor) = Auth::from_request_parts(parts, state).await?;
        Ok(MaybeAuth(Some(actor)))
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Whether `presented` is the internal token, comparing digests (equal lengths
/// whatever the token's) in constant time.
fn token_matches(expected: &str, presented: &str) -> bool {
    digest(expected)[..].ct_eq(&digest(presented)[..]).into()
}

/// The token guarding the internal API; `None` disables it.
#[derive(Debug, Clone)]
pub(crate) struct InternalToken(pub(crate) Option<Arc<str>>);

/// Guards `/internal/*`: refused with 403 when no internal token is configured,
/// 401 unless the request presents it (`Authorization: Bearer <token>` or
/// `X-Internal-Token: <token>`).
pub(crate) async fn require_internal(
    State(InternalToken(expected)): State<InternalToken>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = expected.as_deref() else {
        return ApiError::from(livedrop_core::Error::forbidden(
            "the internal API is disabled: set LIVEDROP_INTERNAL_TOKEN to enable it",
        ))
        .into_response();
    };
    let headers = request.headers();
    let presented = headers
        .get("x-internal-token")
        .and_then(|v| v.to_str().ok())
        .or_else(|| bearer(headers));
    match presented {
        Some(p) if token_matches(expected, p) => next.run(request).await,
        Some(_) => ApiError::unauthenticated("the internal token is wrong").into_response(),
        None => ApiError::unauthenticated(
            "the internal API needs X-Internal-Token or Authorization: Bearer <internal token>",
        )
        .into_response(),
    }
}
