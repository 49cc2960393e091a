//! The OpenAPI document, generated from the handlers' annotations.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::body::*;
use crate::error::ErrorBody;
use crate::handlers;

/// The contract of the reference server.
#[derive(OpenApi)]
#[openapi(
    info(title = "livedrop", description = "Limited-inventory live drops: the reference HTTP server."),
    paths(
        handlers::users::register,
        handlers::users::login,
        handlers::users::me,
        handlers::users::get_user,
        handlers::users::follow,
        handlers::users::unfollow,
        handlers::users::followers,
        handlers::users::following,
        handlers::catalog::create_product,
        handlers::catalog::list_products,
        handlers::catalog::get_product,
        handlers::catalog::patch_product,
        handlers::catalog::create_drop,
        handlers::catalog::list_drops,
        handlers::catalog::get_drop,
        handlers::catalog::cancel_drop,
        handlers::events::drop_events,
        handlers::orders::place_order,
        handlers::orders::my_orders,
        handlers::orders::get_order,
        handlers::orders::confirm_order,
        handlers::orders::cancel_order,
        handlers::notifications::list,
        handlers::notifications::mark_read,
        handlers::notifications::mark_all_read,
        handlers::internal::adjust,
        handlers::internal::ledger,
        handlers::internal::invalidate,
        handlers::ops::healthz,
        handlers::ops::readyz,
        handlers::ops::metrics,
        handlers::ops::openapi,
    ),
    components(schemas(
        ErrorBody, RegisterRequest, RegisterRole, UserBody, ProfileBody, LoginRequest, SessionBody, FollowBody,
        NewProductRequest, ProductPatchRequest, ProductBody, NewDropRequest, StockBody, DropBody,
        NewOrderRequest, OrderBody, NotificationBody, MarkedBody, AdjustRequest, LedgerEntryBody,
        InvalidateRequest, InvalidatedBody, HealthBody, CheckBody,
    )),
    modifiers(&Security),
    tags(
        (name = "users", description = "Registration, sessions, follows"),
        (name = "catalog", description = "Products"),
        (name = "drops", description = "Drops and their live stock"),
        (name = "orders", description = "Orders (Idempotency-Key required on POST /orders)"),
        (name = "notifications", description = "The caller's notifications"),
        (name = "internal", description = "Operator API, guarded by LIVEDROP_INTERNAL_TOKEN"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "internal",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Internal-Token"))),
        );
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
