#![doc = include_str!("../README.md")]

pub use livedrop_adapters as adapters;
pub use livedrop_core as core;
