//! Batched datagram I/O for the bridge: runs of equal-sized datagrams go out in one
//! `sendmsg` with UDP generic segmentation offload (GSO, `UDP_SEGMENT`), and reads take many
//! datagrams per call (GRO and `recvmmsg`), through `quinn-udp`, which keeps the `unsafe`
//! system calls and their fallbacks out of this crate.
//!
//! ```text
//!  core.poll_transmit ─▶ Outbox: segments of one size, back to back ─▶ one sendmsg (GSO)
//!                        (a shorter one ends the run; a refused GSO send goes out one by one)
//!  core.handle_datagram ◀─ split at `stride` ◀─ Inbox: a few 64 KiB buffers ◀─ recvmmsg (GRO)
//! ```

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};

/// Most segments in one GSO send (the kernel's `UDP_MAX_SEGMENTS` is 64).
const MAX_SEGMENTS: usize = 64;
/// Most bytes in one GSO send: the largest UDP payload over IPv4.
const MAX_BATCH_BYTES: usize = 65_507;
/// Receive buffers per read call.
const RX_BUFFERS: usize = 4;
/// Size of each receive buffer: the largest UDP payload (or GRO run).
const RX_BUFFER_SIZE: usize = 65_535;

/// Counters of the bridge's socket calls, for benchmarks and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct IoStats {
    /// Send system calls that went through (one per GSO batch or single datagram).
    pub send_calls: u64,
    /// Datagrams those calls carried.
    pub datagrams_sent: u64,
    /// Sends the socket refused for now (`WouldBlock`); retried when writable.
    pub send_would_block: u64,
    /// GSO sends the kernel refused; their datagrams went out one by one instead, and
    /// batching stays off for this socket.
    pub gso_refused: u64,
    /// Datagrams dropped on a send error other than `WouldBlock` (the core retransmits).
    pub send_errors: u64,
    /// Receive system calls that returned data.
    pub recv_calls: u64,
    /// Datagrams they returned (after splitting GRO runs).
    pub datagrams_received: u64,
    /// Segments per send the socket allows now: 1 without GSO.
    pub max_segments: usize,
}

/// The datagrams a send would block on: a run of equal-sized segments, back to back, the
/// last possibly shorter.
#[derive(Debug)]
pub(crate) struct Outbox {
    /// Segments back to back.
    buf: Vec<u8>,
    /// Size of every segment but possibly the last.
    segment_size: usize,
    /// Segments in `buf`.
    segments: usize,
    /// Where they go.
    destination: Option<SocketAddr>,
    /// The socket refused the last send for now (`WouldBlock`).
    blocked: bool,
    /// Counters.
    stats: IoStats,
}

/// Why a datagram was not taken into the [`Outbox`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Full {
    /// Send what is queued first, then offer the datagram again.
    Flush,
}

impl Outbox {
    /// An empty outbox.
    pub(crate) fn new() -> Self {
        Self {
            buf: Vec::with_capacity(MAX_BATCH_BYTES),
            segment_size: 0,
            segments: 0,
            destination: None,
            blocked: false,
            stats: IoStats::default(),
        }
    }

    /// Whether the last send would have blocked (the bridge waits for writability).
    pub(crate) fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// Counters, with the socket's current segment limit.
    pub(crate) fn stats(&self, udp: &UdpSocketState) -> IoStats {
        IoStats {
            max_segments: max_segments(udp),
            ..self.stats
        }
    }

    /// Appends `datagram` to the run if it can join it: same destination, not larger than
    /// the run's segments, the run not ended by a shorter one, and within the limits of one
    /// GSO send.
    pub(crate) fn push(
        &mut self,
        udp: &UdpSocketState,
        destination: SocketAddr,
        datagram: &[u8],
    ) -> Result<(), Full> {
        if self.segments > 0 {
            let ended = self.buf.len() < self.segments * self.segment_size;
            if ended
                || self.destination != Some(destination)
                || datagram.len() > self.segment_size
                || self.segments >= max_segments(udp)
                || self.buf.len() + datagram.len() > MAX_BATCH_BYTES
            {
                return Err(Full::Flush);
            }
        } else {
            self.segment_size = datagram.len();
            self.destination = Some(destination);
        }
        self.buf.extend_from_slice(datagram);
        self.segments += 1;
        Ok(())
    }

    /// Whether the run can take no further datagram (a full or ended run is best sent
    /// at once).
    pub(crate) fn is_full(&self, udp: &UdpSocketState) -> bool {
        self.segments > 0
            && (self.segments >= max_segments(udp)
                || self.buf.len() < self.segments * self.segment_size
                || self.buf.len() + self.segment_size > MAX_BATCH_BYTES)
    }

    /// Sends what is queued. `Err` means the socket would block: what is left stays queued.
    /// Other errors drop the datagrams, as a lossy network would (the core retransmits).
    /// When the kernel refuses GSO, `quinn-udp` turns it off for the socket and the run
    /// goes out one datagram at a time.
    pub(crate) fn flush(
        &mut self,
        udp: &UdpSocketState,
        socket: &UdpSocket,
    ) -> Result<(), io::ErrorKind> {
        while self.segments > 0 {
            let Some(destination) = self.destination else {
                break;
            };
            // Without GSO, one datagram per call.
            let batched = max_segments(udp) > 1;
            let (len, count) = if batched {
                (self.buf.len(), self.segments)
            } else {
                (self.segment_size.min(self.buf.len()), 1)
            };
            let transmit = Transmit {
                destination,
                ecn: None,
                contents: &self.buf[..len],
                segment_size: (count > 1).then_some(self.segment_size),
                src_ip: None,
            };
            match udp.try_send(socket.into(), &transmit) {
                Ok(()) => {
                    self.stats.send_calls += 1;
                    self.stats.datagrams_sent += count as u64;
                    self.consume(len, count);
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    self.stats.send_would_block += 1;
                    self.blocked = true;
                    return Err(io::ErrorKind::WouldBlock);
                }
                Err(err) if count > 1 && max_segments(udp) == 1 => {
                    // quinn-udp saw the kernel refuse segmentation (EIO or EINVAL) and
                    // turned it off; the loop sends the run one datagram at a time.
                    self.stats.gso_refused += 1;
                    tracing::debug!(%err, "udp gso refused; sending datagrams one by one");
                }
                Err(err) => {
                    self.stats.send_errors += count as u64;
                    tracing::debug!(%err, %destination, "udp send failed; datagrams dropped");
                    self.consume(len, count);
                }
            }
        }
        self.blocked = false;
        Ok(())
    }

    /// Removes the first `count` segments (`len` bytes).
    fn consume(&mut self, len: usize, count: usize) {
        self.buf.drain(..len);
        self.segments -= count;
        if self.segments == 0 {
            self.buf.clear();
            self.destination = None;
        }
    }
}

/// Receive buffers and their metadata.
pub(crate) struct Inbox {
    /// `RX_BUFFERS` buffers of `RX_BUFFER_SIZE` bytes, back to back.
    buf: Vec<u8>,
    /// Metadata of each buffer after a read.
    meta: [RecvMeta; RX_BUFFERS],
    /// Receive calls that returned data.
    pub(crate) recv_calls: u64,
    /// Datagrams they returned.
    pub(crate) datagrams: u64,
}

impl std::fmt::Debug for Inbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbox")
            .field("recv_calls", &self.recv_calls)
            .field("datagrams", &self.datagrams)
            .finish_non_exhaustive()
    }
}

impl Inbox {
    /// Empty buffers.
    pub(crate) fn new() -> Self {
        Self {
            buf: vec![0; RX_BUFFERS * RX_BUFFER_SIZE],
            meta: [RecvMeta::default(); RX_BUFFERS],
            recv_calls: 0,
            datagrams: 0,
        }
    }

    /// Reads what the socket has (one call, several buffers, each possibly a GRO run) and
    /// hands every datagram to `f` with its source. Returns the number of datagrams, or the
    /// error of the call (`WouldBlock` when nothing waits).
    pub(crate) fn recv(
        &mut self,
        udp: &UdpSocketState,
        socket: &UdpSocket,
        mut f: impl FnMut(SocketAddr, &[u8]),
    ) -> io::Result<usize> {
        let mut chunks = self.buf.chunks_mut(RX_BUFFER_SIZE);
        let mut slices: [IoSliceMut<'_>; RX_BUFFERS] =
            std::array::from_fn(|_| IoSliceMut::new(chunks.next().unwrap_or_default()));
        let messages = udp.recv(socket.into(), &mut slices, &mut self.meta)?;
        self.recv_calls += 1;
        let mut datagrams = 0;
        for (meta, buffer) in self
            .meta
            .iter()
            .zip(self.buf.chunks(RX_BUFFER_SIZE))
            .take(messages)
        {
            let filled = &buffer[..meta.len.min(buffer.len())];
            // Without GRO the stride is the length; never split at zero.
            let stride = if meta.stride == 0 {
                filled.len().max(1)
            } else {
                meta.stride
            };
            for datagram in filled.chunks(stride) {
                f(meta.addr, datagram);
                datagrams += 1;
            }
        }
        self.datagrams += datagrams as u64;
        Ok(datagrams)
    }
}

/// Segments per send the socket allows now, at most what one GSO send takes.
fn max_segments(udp: &UdpSocketState) -> usize {
    udp.max_gso_segments().clamp(1, MAX_SEGMENTS)
}
