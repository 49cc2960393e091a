//! The OpenAPI document's frame: title, shared schemas, security schemes and tags.
//! The paths come from the routes themselves (`crate::routes`), each declared once.

use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::body::*;
use crate::error::ErrorBody;

/// The contract of the reference server, without its paths.
#[derive(OpenApi)]
#[openapi(
    info(title = "livedrop", description = "Limited-inventory live drops: the reference HTTP server."),
    components(schemas(
        ErrorBody, RegisterRequest, RegisterRole, UserBody, ProfileBody, LoginRequest, SessionBody, FollowBody,
        NewProductRequest, ProductPatchRequest, ProductBody, NewDropRequest, NewVariantRequest,
        StockBody, VariantBody, DropBody, WaitlistRequest, WaitlistBody, NewOrderRequest, OrderBody, NotificationBody, MarkedBody, AdjustRequest, LedgerEntryBody,
        InvalidateRequest, InvalidatedBody, HealthBody, CheckBody, WaitingRoomBody, DrawBody,
        EntryRequest, EntryBody, RankedEntryBody, QueueBody,
    )),
    modifiers(&Security),
    tags(
        (name = "users", description = "Registration, sessions, follows"),
        (name = "catalog", description = "Products"),
        (name = "drops", description = "Drops, their variants and live stock, waitlists"),
        (name = "draws", description = "Draw drops: entries, the verifiable draw and its results"),
        (name = "waiting rooms", description = "A first-come drop's waiting room: queue, admission tokens"),
        (name = "orders", description = "Orders (Idempotency-Key required on POST /orders)"),
        (name = "notifications", description = "The caller's notifications"),
        (name = "internal", description = "Operator API, guarded by LIVEDROP_INTERNAL_TOKEN"),
        (name = "operations", description = "Health, readiness, metrics, this document"),
    )
)]
pub(crate) struct ApiDoc;

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
