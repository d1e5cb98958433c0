//! Why a connection failed, and the reset codes on the wire.

use std::fmt;

/// The code carried by a RESET packet (`PROTOCOL.md` section 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[doc(alias = "FLAG_FAIL")]
pub struct ResetCode(pub u16);

impl ResetCode {
    /// The application gave up ([`Connection::abort`](crate::Connection::abort)).
    pub const ABORTED: Self = Self(0);
    /// The sender saw an authenticated packet that broke the protocol.
    pub const PROTOCOL_VIOLATION: Self = Self(1);
}

impl fmt::Display for ResetCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::ABORTED => f.write_str("aborted"),
            Self::PROTOCOL_VIOLATION => f.write_str("protocol violation"),
            Self(code) => write!(f, "code {code}"),
        }
    }
}

/// What an authenticated peer did wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Violation {
    /// It acknowledged (cumulatively or by SACK) stream offsets never sent.
    AckOfUnsentData,
    /// It sent data or a FIN beyond its earlier FIN.
    DataAfterFin,
    /// It moved its FIN to another offset.
    FinMoved,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AckOfUnsentData => "acknowledgement of unsent data",
            Self::DataAfterFin => "data after the end of the stream",
            Self::FinMoved => "end of stream moved",
        })
    }
}

/// Why a connection failed. Reported once as [`Event::Failed`](crate::Event::Failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The application called [`Connection::abort`](crate::Connection::abort).
    Aborted,
    /// No handshake completed within `Config::handshake_timeout`.
    HandshakeTimeout {
        /// Packets from the peer's address that failed authentication. Non-zero usually
        /// means the two sides were given different secrets.
        authentication_failures: u64,
    },
    /// Nothing authentic arrived within `Config::idle_timeout`.
    IdleTimeout,
    /// The peer broke the protocol; we sent RESET with
    /// [`ResetCode::PROTOCOL_VIOLATION`].
    ProtocolViolation(Violation),
    /// The peer sent an authentic RESET.
    Reset(ResetCode),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Aborted => f.write_str("aborted locally"),
            Self::HandshakeTimeout {
                authentication_failures: 0,
            } => f.write_str("handshake timed out"),
            Self::HandshakeTimeout {
                authentication_failures,
            } => write!(
                f,
                "handshake timed out; {authentication_failures} packets failed \
                 authentication (wrong secrets?)"
            ),
            Self::IdleTimeout => f.write_str("idle timeout"),
            Self::ProtocolViolation(v) => write!(f, "peer violated the protocol: {v}"),
            Self::Reset(code) => write!(f, "reset by peer ({code})"),
        }
    }
}

impl std::error::Error for Error {}
