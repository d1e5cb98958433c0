//! Byte handles: what the reactor calls when a descriptor is ready.

use std::fmt;

/// An object the reactor calls when its descriptor is ready for reading or writing.
///
/// This is Versile's `IVByteHandle` together with `IVByteHandleInput`, `IVByteHandleOutput`,
/// `IVByteHandleIO` and `IVSelectable`: a handle is registered with
/// [`Reactor::register`](crate::Reactor::register) for a descriptor and an [`Interest`], and the
/// reactor calls it on its own thread.
///
/// # Readiness contract
///
/// - Readiness is **level-triggered**: while the descriptor is readable and read interest is set,
///   every loop turn calls [`on_readable`](Self::on_readable) again. A handler must therefore
///   either read until the operation returns `WouldBlock`, or withdraw its interest with
///   [`Reactor::set_interest`](crate::Reactor::set_interest); otherwise the loop spins.
///   (Reading less than everything is fine when interest stays set: the next turn calls again.)
/// - Readiness can be **spurious**: a call may find nothing to read or no room to write. Treat
///   `WouldBlock` as "wait for the next call", never as an error.
/// - A descriptor the OS poller cannot watch (a regular file) is always ready: it is called on
///   every loop turn while its interest is set, as `select` and `poll` treat such files.
/// - **Errors and hang-ups** never make the loop spin. An error condition (`EPOLLERR`) calls
///   [`on_readable`](Self::on_readable) once more if the handle wants to read (bytes the
///   kernel received before the error, such as a TCP peer's last data before its reset, are
///   still readable, and the read reports the error after them), then removes the
///   registration and calls [`on_close`](Self::on_close) with [`Direction::Both`] and
///   [`CloseReason::Error`]; the handle can then fetch the error itself if no read did (for a
///   socket, `take_error`). A hang-up (`EPOLLHUP`) calls `on_close` with [`Direction::Output`] and
///   [`CloseReason::HangUp`]; input stays readable (level-triggered, without further poller
///   events) so that data still buffered in the kernel is not lost, and the handle closes its
///   input when a read reports end of file.
///
/// # Threading and re-entrancy
///
/// All three methods run on the reactor thread. They may call any [`Reactor`](crate::Reactor)
/// method, including [`deregister`](crate::Reactor::deregister) for their own registration.
/// A handle that panics is deregistered and closed with [`CloseReason::Lost`]; the reactor
/// keeps serving everything else.
///
/// # Dropping
///
/// The reactor holds an `Arc` to the handle while it is registered. A handle must deregister
/// itself **before** it closes its descriptor (the number could otherwise be reused by another
/// descriptor while the poller still watches it).
#[doc(alias = "IVByteHandle")]
#[doc(alias = "IVByteHandleIO")]
#[doc(alias = "IVByteHandleInput")]
#[doc(alias = "IVByteHandleOutput")]
#[doc(alias = "IVSelectable")]
pub trait ByteHandle: Send + Sync + 'static {
    /// The descriptor is readable (or at end of file, or in error).
    #[doc(alias = "do_read")]
    fn on_readable(&self) {}

    /// The descriptor is writable (or a connect finished, or it is in error).
    #[doc(alias = "do_write")]
    fn on_writable(&self) {}

    /// The reactor closed `direction` of this handle for `reason`.
    ///
    /// For [`Direction::Both`] the registration is already gone when this is called; for
    /// [`Direction::Output`] (a hang-up) it stays so that input can be drained.
    #[doc(alias = "close_io")]
    #[doc(alias = "close_input")]
    #[doc(alias = "close_output")]
    fn on_close(&self, direction: Direction, reason: CloseReason);
}

/// Which readiness a registration asks for.
///
/// Interest is a pair of flags; [`Interest::NONE`] keeps the registration (and its hang-up and
/// error reporting) without asking for readiness.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Interest {
    /// Call [`ByteHandle::on_readable`] when readable.
    pub read: bool,
    /// Call [`ByteHandle::on_writable`] when writable.
    pub write: bool,
}

impl Interest {
    /// Neither reading nor writing.
    pub const NONE: Interest = Interest {
        read: false,
        write: false,
    };
    /// Reading only.
    pub const READ: Interest = Interest {
        read: true,
        write: false,
    };
    /// Writing only.
    pub const WRITE: Interest = Interest {
        read: false,
        write: true,
    };
    /// Reading and writing.
    pub const BOTH: Interest = Interest {
        read: true,
        write: true,
    };

    /// This interest with reading set to `read`.
    #[must_use]
    pub fn with_read(self, read: bool) -> Interest {
        Interest { read, ..self }
    }

    /// This interest with writing set to `write`.
    #[must_use]
    pub fn with_write(self, write: bool) -> Interest {
        Interest { write, ..self }
    }

    /// Whether neither direction is asked for.
    pub fn is_none(self) -> bool {
        !self.read && !self.write
    }
}

/// One or both directions of a handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Both directions (Versile `close_io`).
    Both,
    /// The input direction (Versile `close_input`).
    Input,
    /// The output direction (Versile `close_output`).
    Output,
}

impl Direction {
    /// Whether this direction includes input.
    pub fn has_input(self) -> bool {
        matches!(self, Direction::Both | Direction::Input)
    }

    /// Whether this direction includes output.
    pub fn has_output(self) -> bool {
        matches!(self, Direction::Both | Direction::Output)
    }
}

/// Why the reactor closed a handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// The descriptor reported an error condition; ask the descriptor for the error.
    Error,
    /// The descriptor hung up: the peer is gone, writing can no longer succeed.
    HangUp,
    /// The handle panicked and was removed from the reactor.
    Lost,
    /// The reactor stopped while the handle was registered.
    Stopped,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloseReason::Error => "descriptor reported an error",
            CloseReason::HangUp => "descriptor hung up",
            CloseReason::Lost => "handle panicked",
            CloseReason::Stopped => "reactor stopped",
        })
    }
}
