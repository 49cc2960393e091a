#![doc = include_str!("../README.md")]

#[cfg(feature = "memory")]
pub mod memory;

#[cfg(feature = "postgres")]
pub mod postgres;

#[cfg(feature = "redis")]
pub mod redis;

#[cfg(feature = "kafka")]
pub mod kafka;

#[cfg(feature = "sim")]
pub mod sim;
