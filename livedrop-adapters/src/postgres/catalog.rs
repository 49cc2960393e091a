//! Users and follows, products, drops and stock adjustments: the bodies
//! [`catalog_ports!`](crate::sql::catalog::catalog_ports) shares with the other SQL store.

use super::{dialect, PgStore};

crate::sql::catalog::catalog_ports!(PgStore);
