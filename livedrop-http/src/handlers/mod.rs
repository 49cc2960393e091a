//! The handlers: extract, call the core with the actor, map the result.

pub(crate) mod catalog;
pub(crate) mod events;
pub(crate) mod fair;
pub(crate) mod internal;
pub(crate) mod notifications;
pub(crate) mod ops;
pub(crate) mod orders;
pub(crate) mod users;
pub(crate) mod waitlist;
