//! The in-memory transport that OpenSSL reads ciphertext from and writes ciphertext to.
//!
//! native-tls (and the `openssl` crate under it) wants a `Read + Write` stream. [`MemoryTransport`]
//! is one over two byte queues that the session fills and drains: reading an empty incoming queue
//! returns [`WouldBlock`](std::io::ErrorKind::WouldBlock) until the transport is marked ended, then
//! `Ok(0)`; writing always succeeds and appends to the outgoing queue (the session bounds that
//! queue by not encrypting more plaintext while it is long). This keeps OpenSSL fully non-blocking:
//! every call returns, handshakes surface as `HandshakeError::WouldBlock`.
//!
//! The queues sit behind a shared handle rather than inside the stream because native-tls takes
//! the stream by value and drops it when a handshake fails; the alert OpenSSL wrote just before
//! must still reach the peer.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::{Buf, Bytes, BytesMut};

/// Received ciphertext as the chunks it arrived in: queued without copying, copied once, into
/// OpenSSL's record buffer. A chunk read to its end goes back to the thread's spare buffers
/// ([`weir_io::spare::recycle`]): most often it is a socket agent's read buffer, which then
/// serves its next read.
#[derive(Debug, Default)]
pub(crate) struct Incoming {
    /// The chunks, oldest first; none is empty.
    chunks: VecDeque<Bytes>,
    /// Their total length.
    len: usize,
}

impl Incoming {
    /// Appends a chunk.
    pub(crate) fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// Bytes queued.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Moves up to `buf.len()` bytes into `buf`; returns how many.
    fn read(&mut self, buf: &mut [u8]) -> usize {
        let mut filled = 0;
        while filled < buf.len() {
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            let n = front.len().min(buf.len() - filled);
            buf[filled..filled + n].copy_from_slice(&front[..n]);
            front.advance(n);
            if front.is_empty() {
                if let Some(done) = self.chunks.pop_front() {
                    weir_io::spare::recycle(done);
                }
            }
            filled += n;
        }
        self.len -= filled;
        filled
    }
}

/// The two ciphertext queues and the end-of-transport flags.
#[derive(Debug, Default)]
pub(crate) struct Queues {
    /// Ciphertext received from the peer, not yet consumed by OpenSSL.
    pub(crate) incoming: Incoming,
    /// Ciphertext produced by OpenSSL, not yet drained by the caller.
    pub(crate) outgoing: BytesMut,
    /// The caller reported that no more incoming ciphertext will come.
    pub(crate) incoming_ended: bool,
    /// OpenSSL has been told about that end (a read returned `Ok(0)`).
    pub(crate) end_delivered: bool,
}

/// A `Read + Write` stream over shared in-memory [`Queues`]; cloning shares the queues.
#[derive(Clone, Debug, Default)]
pub(crate) struct MemoryTransport {
    /// The queues, shared between the session and the stream native-tls owns.
    queues: Arc<Mutex<Queues>>,
}

impl MemoryTransport {
    /// Locks the queues. A poisoned lock is taken over: no code holding the lock can panic
    /// halfway through an update (it only appends to or splits `BytesMut` buffers).
    pub(crate) fn lock(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Read for MemoryTransport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut queues = self.lock();
        if queues.incoming.is_empty() {
            if queues.incoming_ended {
                queues.end_delivered = true;
                return Ok(0);
            }
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(queues.incoming.read(buf))
    }
}

impl Write for MemoryTransport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.lock().outgoing.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_blocks_until_data_or_end() {
        let mut transport = MemoryTransport::default();
        let mut buf = [0u8; 4];
        let err = transport.read(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);

        transport.lock().incoming.push(Bytes::from_static(b"abc"));
        transport.lock().incoming.push(Bytes::new());
        transport.lock().incoming.push(Bytes::from_static(b"def"));
        assert_eq!(transport.read(&mut buf).unwrap(), 4);
        assert_eq!(&buf, b"abcd");
        transport.lock().incoming_ended = true;
        assert_eq!(transport.read(&mut buf).unwrap(), 2);
        assert!(!transport.lock().end_delivered);
        assert_eq!(transport.read(&mut buf).unwrap(), 0);
        assert!(transport.lock().end_delivered);

        assert_eq!(transport.write(b"xyz").unwrap(), 3);
        assert_eq!(&transport.clone().lock().outgoing[..], b"xyz");
    }

    #[test]
    fn a_chunk_read_to_its_end_becomes_a_spare_buffer() {
        let mut transport = MemoryTransport::default();
        let mut buf = weir_io::spare::take(40_000);
        buf.resize(40_000, 9);
        let address = buf.as_ptr();
        transport.lock().incoming.push(Bytes::from(buf));
        let mut record = vec![0; 16 * 1024];
        let mut read = 0;
        while read < 40_000 {
            read += transport.read(&mut record).unwrap();
        }
        assert_eq!(record[..4], [9; 4]);
        let again = weir_io::spare::take(40_000);
        assert_eq!(again.as_ptr(), address, "the allocation came back");
    }
}
