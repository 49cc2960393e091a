//! The caller's notifications.

use axum::extract::State;
use livedrop_core::NotificationId;
use serde::Deserialize;
use uuid::Uuid;

use crate::auth::Auth;
use crate::body::{ListBody, MarkedBody, NotificationBody};
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{page_request, Json, Path, Query};
use crate::state::AppState;

/// `GET /notifications` parameters.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct NotificationQuery {
    /// `true`: only unread ones.
    pub(crate) unread: Option<bool>,
    /// Items per page, 1 to 100 (default 20).
    pub(crate) limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub(crate) cursor: Option<String>,
}

/// The caller's notifications, newest first.
#[utoipa::path(get, path = "/notifications", tag = "notifications", security(("bearer" = [])),
    params(NotificationQuery),
    responses(
        (status = 200, description = "A page", body = ListBody<NotificationBody>),
        (status = 401, description = "unauthenticated", body = ErrorBody),
    ))]
pub(crate) async fn list(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Query(query): Query<NotificationQuery>,
) -> ApiResult<Json<ListBody<NotificationBody>>> {
    let page = page_request(query.limit, query.cursor.as_deref())?;
    let page = state
        .livedrop()
        .notifications(&actor, query.unread.unwrap_or(false), page)
        .await?;
    Ok(Json(ListBody::from_page(page, NotificationBody::from)))
}

/// Marks one notification read.
#[utoipa::path(post, path = "/notifications/{id}/read", tag = "notifications", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Notification id")),
    responses(
        (status = 200, description = "The notification", body = NotificationBody),
        (status = 404, description = "not_found", body = ErrorBody),
    ))]
pub(crate) async fn mark_read(
    State(state): State<AppState>,
    Auth(actor): Auth,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<NotificationBody>> {
    let n = state
        .livedrop()
        .mark_notification_read(&actor, NotificationId(id))
        .await?;
    Ok(Json(n.into()))
}

/// Marks every notification read.
#[utoipa::path(post, path = "/notifications/read-all", tag = "notifications", security(("bearer" = [])),
    responses((status = 200, description = "How many were unread", body = MarkedBody)))]
pub(crate) async fn mark_all_read(
    State(state): State<AppState>,
    Auth(actor): Auth,
) -> ApiResult<Json<MarkedBody>> {
    let marked = state.livedrop().mark_all_notifications_read(&actor).await?;
    Ok(Json(MarkedBody { marked }))
}
