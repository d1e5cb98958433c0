//! VUT: a reliable, ordered, authenticated byte stream over UDP, as a sans-IO protocol core.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

mod config;
mod connection;
mod crypto;
mod error;
pub mod fuzzing;
pub mod packet;
mod recovery;
pub mod sim;
mod stats;

pub use config::{Config, ConfigError};
pub use connection::{Connection, Event, Transmit};
pub use error::{Error, ResetCode, Violation};
pub use stats::{DropCounts, Stats};
