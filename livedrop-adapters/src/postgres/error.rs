//! The one place sqlx errors become [`StoreError`]s.

use livedrop_core::StoreError;

/// Sorts a sqlx error into the core's store errors:
///
/// - the database cannot be reached or is going away (refused connection, I/O, TLS,
///   pool timeout, closed pool, server shutdown or overload) →
///   [`StoreError::Unavailable`] (`"database"`);
/// - a unique violation → [`StoreError::Conflict`] naming the constraint;
/// - anything else → [`StoreError::Backend`].
pub fn map_sqlx_error(e: sqlx::Error) -> StoreError {
    crate::sql::sort_error(e, is_unavailable_code, |db| {
        format!(
            "unique constraint {}",
            db.constraint().unwrap_or("(unnamed)")
        )
    })
}

/// SQLSTATEs that mean "the server cannot serve now": connection exceptions (08),
/// insufficient resources (53), operator intervention such as a shutdown (57P0x).
fn is_unavailable_code(code: &str) -> bool {
    code.starts_with("08") || code.starts_with("53") || matches!(code, "57P01" | "57P02" | "57P03")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_failures_are_unavailable() {
        crate::sql::assert_pool_failures_unavailable(map_sqlx_error);
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert!(map_sqlx_error(sqlx::Error::Io(refused)).is_unavailable());
    }

    #[test]
    fn other_failures_are_backend() {
        let e = map_sqlx_error(sqlx::Error::RowNotFound);
        assert!(matches!(e, StoreError::Backend(_)));
        assert!(is_unavailable_code("08006"));
        assert!(is_unavailable_code("57P01"));
        assert!(!is_unavailable_code("23505"));
    }
}
