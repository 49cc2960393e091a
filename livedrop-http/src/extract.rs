//! Extractors whose rejections answer in the error shape, and list paging.

use axum::extract::FromRequest;
use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use livedrop_core::page::{Cursor, PageRequest, DEFAULT_LIMIT, MAX_LIMIT};
use serde::Deserialize;

use crate::error::ApiError;

/// `axum::Json` whose rejections (bad JSON, wrong types, unknown fields, missing
/// content type, oversized body) are [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(crate) struct Json<T>(pub(crate) T);

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` whose rejections (a malformed UUID …) are [`ApiError`]s.
#[derive(Debug, Clone, Copy, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(crate) struct Path<T>(pub(crate) T);

/// `axum::extract::Query` whose rejections (an unknown `status`, a non-number
/// `limit` …) are [`ApiError`]s.
#[derive(Debug, Clone, Copy, Default, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub(crate) struct Query<T>(pub(crate) T);

/// `?limit=&cursor=` of every list. `limit` defaults to 20; 0 or more than 100 is
/// refused with 400 (never silently clamped); `cursor` must be one this server issued.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct PageParams {
    /// Items per page, 1 to 100 (default 20).
    pub(crate) limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub(crate) cursor: Option<String>,
}

impl PageParams {
    /// The page request these parameters describe.
    pub(crate) fn page(&self) -> Result<PageRequest, ApiError> {
        page_request(self.limit, self.cursor.as_deref())
    }
}

/// A page request from a raw limit and cursor, validated as [`PageParams`] documents.
pub(crate) fn page_request(
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<PageRequest, ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::invalid(
            "limit",
            format!("limit must be 1 to {MAX_LIMIT}"),
        ));
    }
    let after = match cursor {
        None | Some("") => None,
        Some(c) => Some(
            c.parse::<Cursor>()
                .map_err(|_| ApiError::invalid("cursor", "cursor is not one this server issued"))?,
        ),
    };
    Ok(PageRequest::first(limit).after(after))
}
