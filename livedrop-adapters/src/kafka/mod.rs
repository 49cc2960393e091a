//! The kafka adapters.
