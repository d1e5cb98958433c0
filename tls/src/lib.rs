//! A sans-IO TLS session on OpenSSL (clients through native-tls): ciphertext in and out on one
//! side, plaintext in and out on the other, with every buffer bounded.
//!
//! # What it does not do
//!
//! - **No I/O.** It owns no socket, spawns nothing, reads no clock and never blocks. A driver
//!   (weir's TLS chain element, or a test pump) moves the bytes. There are no timeouts either:
//!   a handshake that never finishes is the driver's timer's business.
//! - **No TLS of its own.** The protocol is OpenSSL's: a client through native-tls (the
//!   system's trusted roots); a server through the `openssl` crate that native-tls uses here,
//!   since native-tls's own acceptor cannot speak TLS 1.3 (Mozilla's intermediate profile;
//!   see [`TlsServerConfig`]). Both speak TLS 1.3 and 1.2, never 1.0 or 1.1 (RFC 8996), also
//!   where OpenSSL's configuration would allow them; see the two configs for a configuration
//!   that asks for TLS 1.3 only.
//! - **No session resumption control, no certificate parsing** (the peer's leaf is handed
//!   over as DER). Client certificates work both ways: a client presents one with
//!   [`TlsClientConfigBuilder::with_client_identity`], a server asks for or requires them
//!   with [`TlsServerConfigBuilder::with_client_auth`].
//!
//! # Data flow
//!
//! ```text
//!        transport side                               application side
//!
//!  handle_ciphertext(&[u8]) --> +---------------------+ --> poll_plaintext(max)
//!  handle_transport_end()   --> |     TlsSession      |     read_plaintext(&mut [u8])
//!                               | incoming ciphertext |
//!  poll_ciphertext()        <-- | outgoing plaintext  | <-- write_plaintext(&[u8])
//!                               | outgoing ciphertext | <-- close()
//!                               +---------------------+ --> poll_event(): HandshakeDone,
//!                                                           PeerClosed, Truncated, Failed
//! ```
//!
//! Backpressure passes straight through: received ciphertext is decrypted only when the
//! application reads plaintext, so a slow reader fills the incoming queue, and
//! [`TlsSession::ciphertext_capacity`] falling to zero tells the driver to stop reading the
//! transport. In the other direction, plaintext is encrypted only while the driver drains
//! [`TlsSession::poll_ciphertext`]. The bounds are in [`TlsLimits`].
//!
//! # Where to start
//!
//! [`TlsSession`]: its doc gives the order of calls. Build a [`TlsClientConfig`] (safe
//! defaults: certificate and hostname checks, SNI) or a [`TlsServerConfig`] from a
//! [`TlsIdentity`]. Failures are [`TlsError`]s, with one variant per kind of certificate
//! rejection.
//!
//! # Examples
//!
//! A client session has its ClientHello ready as soon as it starts:
//!
//! ```
//! use weir_tls::{TlsClientConfig, TlsSession};
//!
//! let config = TlsClientConfig::builder().build()?;
//! let mut session = TlsSession::client(&config, "localhost")?;
//! assert!(session.is_handshaking());
//!
//! let hello = session.poll_ciphertext().expect("a ClientHello");
//! assert_eq!(hello[0], 22); // a TLS handshake record
//!
//! // Plaintext written now is held until the handshake is done.
//! assert_eq!(session.write_plaintext(b"hello")?, 5);
//! assert!(session.poll_ciphertext().is_none());
//!
//! // The transport ends before the server answered: the session fails, nothing hangs.
//! session.handle_transport_end();
//! assert!(matches!(
//!     session.poll_event(),
//!     Some(weir_tls::TlsEvent::Failed(weir_tls::TlsError::Truncated))
//! ));
//! # Ok::<(), weir_tls::TlsError>(())
//! ```
//!
//! # Cargo features
//!
//! None. ALPN is always available.
//!
//! # Versile and Turbo
//!
//! [`TlsSession`] replaces Versile's `VTLSTransport` / `VTLSClient` / `VTLSServer` (which
//! routed the bytes through a loopback socket pair) and Turbo's `SSLIOStream`. Unlike Turbo's,
//! it sends SNI, sends close_notify on [`TlsSession::close`], reports every certificate and
//! handshake failure as an event instead of leaving the caller waiting, and tells a clean end
//! ([`TlsEvent::PeerClosed`]) from a cut one ([`TlsEvent::Truncated`]).

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

mod config;
mod element;
mod error;
pub mod net;
mod session;
mod stream;
mod transport;

pub use config::{
    ClientAuth, TlsClientConfig, TlsClientConfigBuilder, TlsIdentity, TlsLimits, TlsServerConfig,
    TlsServerConfigBuilder, TlsVersion,
};
pub use element::TlsElement;
pub use error::TlsError;
pub use session::{HandshakeInfo, TlsEvent, TlsRole, TlsSession};
