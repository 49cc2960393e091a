//! Text every store can keep, and the one case-folding rule every store shares.
//!
//! PostgreSQL refuses a NUL character in `text`, and control characters in names,
//! titles or search terms are never meant; the services refuse both with
//! `invalid_input` before any store sees them, so every store holds the same text.

use crate::error::{Error, Result};

/// The case-folding rule of emails and product search, in every store: Unicode
/// lower case as [`str::to_lowercase`] defines it. Stores compare folded text they
/// were given (or computed with this function), never a database's own `lower()`,
/// whose result depends on the database's collation.
pub fn fold_case(s: &str) -> String {
    s.to_lowercase()
}

/// Refuses `value` unless it is one line of text: no control character at all
/// (NUL, line breaks, tabs, escape, DEL, the C1 controls).
pub fn check_line(field: &str, value: &str) -> Result<()> {
    if value.chars().any(char::is_control) {
        return Err(Error::invalid(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(())
}

/// Refuses `value` if it holds a control character other than a tab or a line
/// break: free text may span lines, but never holds NUL or other controls.
pub fn check_text(field: &str, value: &str) -> Result<()> {
    if value
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(Error::invalid(
            field,
            format!("{field} must not contain control characters other than tabs and line breaks"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_refuse_every_control_character() {
        for bad in ["a\0b", "a\nb", "a\tb", "\u{1b}[31m", "a\u{7f}", "a\u{85}b"] {
            let err = check_line("title", bad).unwrap_err();
            assert_eq!(err.code(), "invalid_input", "{bad:?}");
        }
        check_line("title", "Élodie’s hoodie — 100 % 🧵").unwrap();
    }

    #[test]
    fn free_text_keeps_line_breaks_and_tabs_only() {
        check_text("description", "line one\r\nline two\tcol").unwrap();
        for bad in ["a\0b", "\u{7}", "a\u{1b}b", "a\u{9f}"] {
            let err = check_text("description", bad).unwrap_err();
            assert_eq!(err.code(), "invalid_input", "{bad:?}");
        }
    }

    #[test]
    fn folding_is_unicode_lower_case() {
        assert_eq!(fold_case("ÉLODIE@Example.COM"), "élodie@example.com");
        assert_eq!(fold_case("İSTANBUL"), "i\u{307}stanbul");
        assert_eq!(fold_case("ΣΑΣ"), "σας");
    }
}
