//! Registration, sessions and the follow graph.

use axum::extract::State;
use axum::http::StatusCode;
use livedrop_core::service::Registration;
use livedrop_core::UserId;
use uuid::Uuid;

use crate::auth::{Auth, MaybeAuth};
use crate::body::{
    FollowBody, ListBody, LoginRequest, ProfileBody, RegisterRequest, SessionBody, UserBody,
};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, PageParams, Path, Query};
use crate::state::AppState;

/// Registers a customer or creator.
#[utoipa::path(post, path = "/users", tag = "users", request_body = RegisterRequest,
    params(("Idempotency-Key" = Option<String>, Header, description = "Optional; replays the first response")),
    responses(
        (status = 201, description = "Registered", body = UserBody),
        (status = 400, description = "invalid_input", body = ErrorBody),
        (status = 409, description = "email_taken", body = ErrorBody),
    ))]
pub(crate) async fn register(
    State(state): State<AppState>,
    Json(body): Json<RegisterRequest>,
) -> ApiResult<(StatusCode, Json<UserBody>)> {
    let user = state
        .livedrop()
        .register(Registration {
            email: body.email,
            password: body.password,
            display_name: body.display_name,
            role: body.role.into(),
        })
        .await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// Logs in: a bearer token for `Authorization: Bearer <token>`.
#[utoipa::path(post, path = "/sessions", tag = "users", request_body = LoginRequest,
    responses(
        (status = 200, description = "Logged in", body = SessionBody),
        (status = 401, description = "invalid_credentials", body = ErrorBody),
    ))]
pub(crate) async fn login(
    State(state): State<AppState>,
    Json(body): Json<LoginRequest>,
) -> ApiResult<Json<SessionBody>> {
    let user = state
        .livedrop()
        .authenticate(&body.email, &body.password)
        .await?;
    let (token, expires_at) = state
        .tokens()
        .issue(&user.actor())
        .map_err(ApiError::internal)?;
    Ok(Json(SessionBody {
        token,
        expires_at,
        user: user.into(),
    }))
}

/// The authenticated user.
#[utoipa::path(get, path = "/users/me", tag = "users", security(("bearer" = [])),
    responses(
        (status = 200, description = "The user", body = UserBody),
        (status = 401, description = "unauthenticated", body = ErrorBody),
    ))]
pub(crate) async fn me(
    State(state): State<AppState>,
    Auth(actor): Auth,
) -> ApiResult<Json<UserBody>> {
    let user = state.livedrop().user(actor.id).await?;
    Ok(Json(user.into()))
}

/// A user by id: the public profile; the email only to the user themself and admins.
#[utoipa::path(get, path = "/users/{id}", tag = "users", security((), ("bearer" = [])),
    params(("id" = Uuid, Path, description = "User id")),
    responses(
        (status = 200, description = "The profile", body = ProfileBody),
        (status = 401, description = "unauthenticated (a bearer token that is not valid)", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
    ))]
pub(crate) async fn get_user(
    State(state): State<AppState>,
    MaybeAuth(viewer): MaybeAuth,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<ProfileBody>> {
    let profile = state
        .livedrop()
        .profile(viewer.as_ref(), UserId(id))
        .await?;
    Ok(Json(profile.into()))
}

/// Follows a creator (idempotent).
#[utoipa::path(put, path = "/users/{id}/followers/me", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The creator to follow")),
    responses(
        (status = 204, description = "Following"),
        (status = 400, description = "invalid_input (yourself, a customer)", body = ErrorBody),
        (status = 404, description = "not_found", body = ErrorBody),
    ))]
pub(crate) async fn follow(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(creator): Path<Uuid>,
) -> ApiResult<StatusCode> {
    state.livedrop().follow(&actor, UserId(creator)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stops following a creator (idempotent).
#[utoipa::path(delete, path = "/users/{id}/followers/me", tag = "users", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "The creator")),
    responses((status = 204, description = "Not following")))]
pub(crate) async fn unfollow(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(creator): Path<Uuid>,
) -> ApiResult<StatusCode> {
    state.livedrop().unfollow(&actor, UserId(creator)).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Followers of a user, newest first.
#[utoipa::path(get, path = "/users/{id}/followers", tag = "users",
    params(("id" = Uuid, Path, description = "User id"), PageParams),
    responses(
        (status = 200, description = "A page", body = ListBody<FollowBody>),
        (status = 404, description = "not_found", body = ErrorBody),
    ))]
pub(crate) async fn followers(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<ListBody<FollowBody>>> {
    let page = state
        .livedrop()
        .followers(UserId(id), params.page()?)
        .await?;
    Ok(Json(ListBody::from_page(page, FollowBody::from)))
}

/// Creators a user follows, newest first.
#[utoipa::path(get, path = "/users/{id}/following", tag = "users",
    params(("id" = Uuid, Path, description = "User id"), PageParams),
    responses(
        (status = 200, description = "A page", body = ListBody<FollowBody>),
        (status = 404, description = "not_found", body = ErrorBody),
    ))]
pub(crate) async fn following(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(params): Query<PageParams>,
) -> ApiResult<Json<ListBody<FollowBody>>> {
    let page = state
        .livedrop()
        .following(UserId(id), params.page()?)
        .await?;
    Ok(Json(ListBody::from_page(page, FollowBody::from)))
}
