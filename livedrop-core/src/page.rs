//! Keyset pagination: newest first, by `(created_at, id)` descending.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::Timestamp;

/// The default page size.
pub const DEFAULT_LIMIT: u32 = 20;
/// The largest page size.
pub const MAX_LIMIT: u32 = 100;

/// A position in a keyset listing: the sort key of the last item seen.
///
/// Its text form is opaque to clients; only this type parses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// Timestamp of the last item returned.
    pub at: Timestamp,
    /// Id of the last item returned (tie-breaker).
    pub id: Uuid,
}

impl Cursor {
    /// The cursor that continues after an item with this sort key.
    pub fn new(at: Timestamp, id: Uuid) -> Self {
        Self { at, id }
    }

    /// Whether an item with key `(at, id)` comes after this cursor in newest-first order.
    pub fn precedes(&self, at: Timestamp, id: Uuid) -> bool {
        (at, id) < (self.at, self.id)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.at.timestamp_micros(), self.id.simple())
    }
}

/// A cursor string that does not parse.
#[derive(Debug, Clone, thiserror::Error)]
#[error("cursor is not one this server issued")]
pub struct BadCursor;

impl FromStr for Cursor {
    type Err = BadCursor;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (micros, id) = s.split_once('_').ok_or(BadCursor)?;
        let micros: i64 = micros.parse().map_err(|_| BadCursor)?;
        let at = chrono::DateTime::from_timestamp_micros(micros)
            .filter(|at| crate::clock::is_storable(*at))
            .ok_or(BadCursor)?;
        let id = Uuid::try_parse(id).map_err(|_| BadCursor)?;
        Ok(Self { at, id })
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Which page of a listing to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PageRequest {
    /// How many items at most, 1..=100.
    pub limit: u32,
    /// Continue after this position; `None` starts at the newest item.
    pub after: Option<Cursor>,
}

impl PageRequest {
    /// The first page with `limit` items, clamped to 1..=[`MAX_LIMIT`].
    pub fn first(limit: u32) -> Self {
        Self {
            limit: limit.clamp(1, MAX_LIMIT),
            after: None,
        }
    }

    /// The page after `cursor`.
    pub fn after(self, cursor: Option<Cursor>) -> Self {
        Self {
            after: cursor,
            ..self
        }
    }
}

impl Default for PageRequest {
    fn default() -> Self {
        Self::first(DEFAULT_LIMIT)
    }
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next_cursor: Option<Cursor>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` items already in order: the extra item,
    /// if present, only tells that another page exists.
    pub fn from_overfetch(mut items: Vec<T>, limit: u32, key: impl Fn(&T) -> Cursor) -> Self {
        let limit = limit as usize;
        let more = items.len() > limit;
        items.truncate(limit);
        let next_cursor = if more { items.last().map(key) } else { None };
        Self { items, next_cursor }
    }

    /// Maps the items, keeping the cursor.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let c = Cursor::new(crate::clock::truncate(chrono::Utc::now()), Uuid::now_v7());
        assert_eq!(c.to_string().parse::<Cursor>().unwrap(), c);
        for bad in [
            "",
            "x",
            "12_notauuid",
            "abc_0190a3b2c3d4e5f6a7b8c9d0e1f2a3b4",
            // Parseable numbers, but times no store keeps (before year 1, after 9999).
            "-62135596800000001_0190a3b2c3d4e5f6a7b8c9d0e1f2a3b4",
            "253402300800000000_0190a3b2c3d4e5f6a7b8c9d0e1f2a3b4",
            "-8000000000000000000_0190a3b2c3d4e5f6a7b8c9d0e1f2a3b4",
            "99999999999999999999_0190a3b2c3d4e5f6a7b8c9d0e1f2a3b4",
        ] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?} must not parse");
        }
    }

    #[test]
    fn overfetch_sets_the_next_cursor_only_when_more_exist() {
        let at = chrono::Utc::now();
        let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
        let page = Page::from_overfetch(ids.clone(), 2, |id| Cursor::new(at, *id));
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.next_cursor, Some(Cursor::new(at, ids[1])));
        let last = Page::from_overfetch(ids[..2].to_vec(), 2, |id| Cursor::new(at, *id));
        assert_eq!(last.next_cursor, None);
        assert_eq!(PageRequest::first(1000).limit, MAX_LIMIT);
        assert_eq!(PageRequest::first(0).limit, 1);
    }
}
