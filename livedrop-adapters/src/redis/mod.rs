//! The redis adapters.
