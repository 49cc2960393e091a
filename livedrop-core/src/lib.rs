#![doc = include_str!("../README.md")]
#![warn(unreachable_pub)]

pub mod cache;
pub mod clock;
pub mod error;
pub mod event;
pub mod id;
pub mod model;
pub mod page;
pub mod ports;
pub mod text;

pub use clock::{Clock, ManualClock, SystemClock, Timestamp};
pub use error::{Error, Result, StoreError, StoreResult};
pub use event::{Event, EventPayload, EventType};
pub use id::{DropId, EventId, NotificationId, OrderId, ProductId, UserId};
pub use page::{Cursor, Page, PageRequest};
pub mod service;
pub use service::{Config, Ports};
#[cfg(any(test, feature = "testing"))]
pub mod testing;
