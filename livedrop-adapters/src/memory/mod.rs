//! The memory adapters.
