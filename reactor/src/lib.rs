//! The weir reactor: one thread that waits on descriptors, runs timers and runs calls handed
//! in from other threads.
//!
//! It does *not* read or write anything itself, know about sockets, or buffer bytes: it tells
//! [`ByteHandle`]s when their descriptor is ready, and they do the I/O. Producer/consumer
//! chains live in `weir-io`; sockets and pipes in `weir-sock` and `weir-pipe`.
//!
//! ```text
//!  other threads ──call / schedule / stop──▶ ┌──────────── reactor thread ────────────┐
//!                 (coalesced wake-up)        │ wait(poller, next timer deadline)       │
//!                                            │  ├─ readiness ─▶ ByteHandle::on_*       │
//!                                            │  ├─ due timers ─▶ scheduled calls       │
//!                                            │  └─ queued calls ─▶ calls (FIFO)        │
//!                                            └─────────────────────────────────────────┘
//! ```
//!
//! Start from [`Reactor`]: [`Reactor::start`] runs the loop on a dedicated thread, and a
//! `Reactor` clone is the `Send + Sync` handle every other thread uses.
//!
//! ```
//! use std::sync::mpsc;
//! use weir_reactor::Reactor;
//!
//! let reactor = Reactor::new()?;
//! let thread = reactor.start()?;
//! let (tx, rx) = mpsc::channel();
//! let r = reactor.clone();
//! reactor.call(move || tx.send(r.is_reactor_thread()).unwrap());
//! assert!(rx.recv()?, "calls run on the reactor thread");
//! reactor.stop();
//! thread.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The loop runs on level-triggered epoll (Linux); see [`ByteHandle`] for the readiness
//! contract (spurious wake-ups, drain until `WouldBlock`, hang-ups and errors). The crate has
//! no Cargo features.
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

mod handle;
mod poller;
mod reactor;
mod timer;

pub use handle::{ByteHandle, CloseReason, Direction, Interest};
pub use reactor::{Reactor, ReactorThread, Token};
pub use timer::Timer;

use std::fmt;
use std::io;

/// What can go wrong when running or using a reactor.
#[derive(Debug)]
#[non_exhaustive]
pub enum ReactorError {
    /// The reactor runs, or has run, already: a reactor's loop runs once.
    AlreadyRunning,
    /// The reactor has stopped; it takes no new registrations.
    #[doc(alias = "VReactorStopped")]
    Stopped,
    /// The token does not refer to a live registration.
    NotRegistered,
    /// The reactor thread panicked outside any handle or call.
    Panicked,
    /// The OS poller failed.
    Io(io::Error),
}

impl fmt::Display for ReactorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReactorError::AlreadyRunning => f.write_str("reactor is running or has run already"),
            ReactorError::Stopped => f.write_str("reactor has stopped"),
            ReactorError::NotRegistered => f.write_str("token is not registered"),
            ReactorError::Panicked => f.write_str("reactor thread panicked"),
            ReactorError::Io(_) => f.write_str("poller failed"),
        }
    }
}

impl std::error::Error for ReactorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReactorError::Io(err) => Some(err),
            _ => None,
        }
    }
}

impl From<io::Error> for ReactorError {
    fn from(err: io::Error) -> Self {
        ReactorError::Io(err)
    }
}
