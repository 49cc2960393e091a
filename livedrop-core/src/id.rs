//! Typed identifiers. Every id is a UUID; new ids are version 7 (time-ordered),
//! which keeps database indexes append-mostly.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A fresh, time-ordered id.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            /// The underlying UUID.
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

id_type!(
    /// Identifies a [`User`](crate::model::User).
    UserId
);
id_type!(
    /// Identifies a [`Product`](crate::model::Product).
    ProductId
);
id_type!(
    /// Identifies a [`Drop`](crate::model::Drop).
    DropId
);
id_type!(
    /// Identifies an [`Order`](crate::model::Order).
    OrderId
);
id_type!(
    /// Identifies a [`Notification`](crate::model::Notification).
    NotificationId
);
id_type!(
    /// Identifies an [`Event`](crate::event::Event); consumers deduplicate by it.
    EventId
);
