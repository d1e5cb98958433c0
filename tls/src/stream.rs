//! The OpenSSL stream under a session, whichever side built it: native-tls's for a client,
//! the `openssl` crate's own for a server (native-tls's acceptor cannot speak TLS 1.3; see
//! [`TlsServerConfig`](crate::TlsServerConfig)). Both run over the same [`MemoryTransport`]
//! and read and write alike (native-tls's stream is the `openssl` one inside); what differs is
//! the handshake's types and the few queries below.

use std::io::{self, Read, Write};

use openssl::ssl::{self, ErrorCode};

use crate::error::{classify, classify_server_handshake, Phase, TlsError};
use crate::transport::MemoryTransport;

/// A stream in the middle of its handshake.
#[derive(Debug)]
pub(crate) enum Mid {
    /// A client's, from native-tls.
    Client(native_tls::MidHandshakeTlsStream<MemoryTransport>),
    /// A server's, from OpenSSL.
    Server(ssl::MidHandshakeSslStream<MemoryTransport>),
}

/// A stream whose handshake is done.
#[derive(Debug)]
pub(crate) enum Stream {
    /// A client's, from native-tls.
    Client(native_tls::TlsStream<MemoryTransport>),
    /// A server's, from OpenSSL.
    Server(ssl::SslStream<MemoryTransport>),
}

/// Where one step of a handshake left it.
pub(crate) enum Step {
    /// Done: records flow.
    Done(Stream),
    /// Waiting for the peer.
    Again(Mid),
    /// Failed, for this reason.
    Failed(TlsError),
}

impl Step {
    /// A client's step, as native-tls reports it.
    pub(crate) fn client(
        step: Result<
            native_tls::TlsStream<MemoryTransport>,
            native_tls::HandshakeError<MemoryTransport>,
        >,
    ) -> Step {
        match step {
            Ok(stream) => Step::Done(Stream::Client(stream)),
            Err(native_tls::HandshakeError::WouldBlock(mid)) => Step::Again(Mid::Client(mid)),
            Err(native_tls::HandshakeError::Failure(error)) => {
                Step::Failed(classify(&error, Phase::Handshake))
            }
        }
    }

    /// A server's step, as OpenSSL reports it.
    pub(crate) fn server(
        step: Result<ssl::SslStream<MemoryTransport>, ssl::HandshakeError<MemoryTransport>>,
    ) -> Step {
        match step {
            Ok(stream) => Step::Done(Stream::Server(stream)),
            Err(ssl::HandshakeError::WouldBlock(mid)) => Step::Again(Mid::Server(mid)),
            Err(ssl::HandshakeError::Failure(mid)) => Step::Failed(classify_server_handshake(
                mid.error(),
                mid.ssl().verify_result(),
            )),
            Err(ssl::HandshakeError::SetupFailure(error)) => {
                Step::Failed(classify(&error, Phase::Handshake))
            }
        }
    }
}

impl Mid {
    /// Runs the handshake on with what the transport holds now.
    pub(crate) fn resume(self) -> Step {
        match self {
            Mid::Client(mid) => Step::client(mid.handshake()),
            Mid::Server(mid) => Step::server(mid.handshake()),
        }
    }
}

impl Stream {
    /// Decrypts into `buf`: `Ok(0)` at the end of the peer's data, `WouldBlock` when the
    /// transport holds no whole record.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Client(stream) => stream.read(buf),
            Stream::Server(stream) => stream.read(buf),
        }
    }

    /// Encrypts from `buf` into the transport.
    pub(crate) fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Client(stream) => stream.write(buf),
            Stream::Server(stream) => stream.write(buf),
        }
    }

    /// Sends close_notify. A peer's close_notify met on the way counts as done, as native-tls
    /// counts it.
    pub(crate) fn shutdown(&mut self) -> io::Result<()> {
        match self {
            Stream::Client(stream) => stream.shutdown(),
            Stream::Server(stream) => match stream.shutdown() {
                Ok(_) => Ok(()),
                Err(error) if error.code() == ErrorCode::ZERO_RETURN => Ok(()),
                Err(error) => Err(error.into_io_error().unwrap_or_else(io::Error::other)),
            },
        }
    }

    /// Decrypted bytes OpenSSL holds that no read has taken yet.
    pub(crate) fn buffered(&self) -> usize {
        match self {
            Stream::Client(stream) => stream.buffered_read_size().unwrap_or(0),
            Stream::Server(stream) => stream.ssl().pending(),
        }
    }

    /// The peer's leaf certificate, DER-encoded: always a server's; a client's only where the
    /// server asked for one and the client sent it.
    pub(crate) fn peer_certificate_der(&self) -> Option<Vec<u8>> {
        let der = match self {
            Stream::Client(stream) => match stream.peer_certificate() {
                Ok(Some(certificate)) => certificate.to_der().map_err(|e| e.to_string()),
                Ok(None) => return None,
                Err(error) => Err(error.to_string()),
            },
            Stream::Server(stream) => stream
                .ssl()
                .peer_certificate()?
                .to_der()
                .map_err(|e| e.to_string()),
        };
        der.map_err(|error| tracing::debug!(%error, "cannot get the peer certificate"))
            .ok()
    }

    /// The ALPN protocol agreed on.
    pub(crate) fn alpn_protocol(&self) -> Option<Vec<u8>> {
        match self {
            Stream::Client(stream) => stream.negotiated_alpn().ok().flatten(),
            Stream::Server(stream) => stream.ssl().selected_alpn_protocol().map(<[u8]>::to_vec),
        }
    }
}
