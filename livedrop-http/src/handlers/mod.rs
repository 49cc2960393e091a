//! The handlers: extract, call the core with the actor, map the result.

pub mod catalog;
pub mod events;
pub mod internal;
pub mod notifications;
pub mod ops;
pub mod orders;
pub mod users;
