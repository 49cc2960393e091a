//! The postgres adapters.
