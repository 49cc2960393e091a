//! The one place sqlx's SQLite errors become [`StoreError`]s.

use livedrop_core::StoreError;

/// Sorts a sqlx error into the core's store errors:
///
/// - the file cannot be used now (I/O, pool timeout, closed pool, a worker that
///   died, `SQLITE_BUSY`/`SQLITE_LOCKED` past the busy timeout, a full disk or an
///   unopenable file) → [`StoreError::Unavailable`] (`"database"`);
/// - a unique or primary key violation → [`StoreError::Conflict`];
/// - anything else → [`StoreError::Backend`].
pub fn map_sqlx_error(e: sqlx::Error) -> StoreError {
    crate::sql::sort_error(e, is_unavailable_code, |db| {
        format!("unique constraint: {}", db.message())
    })
}

/// SQLite result codes (primary code in the low byte of an extended one) that mean
/// "the file cannot serve now": BUSY (5), LOCKED (6), IOERR (10), FULL (13),
/// CANTOPEN (14).
fn is_unavailable_code(code: &str) -> bool {
    code.parse::<i64>()
        .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 10 | 13 | 14))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_failures_are_unavailable() {
        crate::sql::assert_pool_failures_unavailable(map_sqlx_error);
    }

    #[test]
    fn busy_and_io_codes_are_unavailable() {
        assert!(is_unavailable_code("5"));
        assert!(is_unavailable_code("517")); // SQLITE_BUSY_SNAPSHOT
        assert!(is_unavailable_code("10"));
        assert!(!is_unavailable_code("2067")); // SQLITE_CONSTRAINT_UNIQUE
        assert!(!is_unavailable_code("x"));
        assert!(matches!(
            map_sqlx_error(sqlx::Error::RowNotFound),
            StoreError::Backend(_)
        ));
    }
}
