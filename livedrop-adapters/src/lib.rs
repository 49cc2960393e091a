#![doc = include_str!("../README.md")]
#![warn(unreachable_pub)]

#[cfg(feature = "memory")]
pub mod memory;

#[cfg(any(feature = "postgres", feature = "sqlite"))]
mod sql;

#[cfg(feature = "postgres")]
pub mod postgres;

#[cfg(feature = "sqlite")]
pub mod sqlite;

#[cfg(feature = "redis")]
pub mod redis;

#[cfg(feature = "kafka")]
pub mod kafka;

#[cfg(feature = "sim")]
pub mod sim;
