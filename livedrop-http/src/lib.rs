#![doc = include_str!("../README.md")]
#![warn(unreachable_pub)]

pub mod auth;
mod body;
mod demo;
mod error;
mod extract;
mod handlers;
mod idempotency;
mod openapi;
mod rate_limit;
mod routes;
pub mod server;
mod settings;
pub mod state;
mod storefront;
mod telemetry;
mod wiring;

pub use error::{ApiError, ErrorBody};
pub use routes::{router, REQUEST_ID};
pub use state::{AppState, HttpOptions};
