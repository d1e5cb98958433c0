//! Counters and estimator state, for tests, benches and monitoring.

use std::time::Duration;

/// Received datagrams dropped, by reason (`PROTOCOL.md` section 5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DropCounts {
    /// The tag did not verify.
    pub bad_mac: u64,
    /// Data lay beyond the receive window (only the data was dropped).
    pub out_of_window: u64,
    /// The packet number was already seen (network duplicate or replay).
    pub replayed: u64,
    /// A HELLO with a nonce other than the peer's (an earlier connection, or a reflection).
    pub stale_handshake: u64,
    /// The packet number lay below the replay window.
    pub too_old: u64,
    /// A SEGMENT or RESET arrived before any key existed, or after the connection ended.
    pub unexpected: u64,
    /// The datagram did not parse.
    pub unparsable: u64,
    /// The version byte was not 1.
    pub unsupported_version: u64,
    /// The datagram came from an address other than the peer's.
    pub wrong_source: u64,
}

impl DropCounts {
    /// Sum of all counters.
    pub fn total(&self) -> u64 {
        self.bad_mac
            + self.out_of_window
            + self.replayed
            + self.stale_handshake
            + self.too_old
            + self.unexpected
            + self.unparsable
            + self.unsupported_version
            + self.wrong_source
    }
}

/// A snapshot of a connection's counters, returned by
/// [`Connection::stats`](crate::Connection::stats).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Stream bytes sent for the first time.
    pub bytes_sent: u64,
    /// Stream bytes sent again.
    pub bytes_retransmitted: u64,
    /// Stream bytes the peer acknowledged.
    pub bytes_acked: u64,
    /// Stream bytes received in order (available to or read by the application).
    pub bytes_delivered: u64,
    /// Current congestion window, bytes.
    pub cwnd: u64,
    /// Datagrams dropped on receipt, by reason.
    pub dropped: DropCounts,
    /// Segments declared lost by loss detection, either threshold (the sum of
    /// `lost_by_packet_threshold` and `lost_by_time_threshold`).
    pub fast_retransmits: u64,
    /// Segments declared lost because 3 later transmissions were acknowledged.
    pub lost_by_packet_threshold: u64,
    /// Segments declared lost because a later transmission was acknowledged and they went out
    /// more than `9/8 · max(SRTT, latest RTT)` ago.
    pub lost_by_time_threshold: u64,
    /// Segments declared lost that were then acknowledged before their retransmission went
    /// out (the loss was spurious: reordering or a late ack).
    pub spurious_losses: u64,
    /// Retransmissions found unnecessary: the segment was acknowledged sooner than the
    /// smallest RTT after its retransmission, so an earlier transmission had arrived.
    pub spurious_retransmits: u64,
    /// Congestion events: window reductions, at most one per recovery period.
    pub congestion_events: u64,
    /// Times persistent congestion collapsed the window to the minimum.
    pub persistent_congestions: u64,
    /// Probe segments sent after probe timeouts.
    pub probes_sent: u64,
    /// Datagrams received from the peer's address (before any check).
    pub datagrams_received: u64,
    /// Datagrams sent.
    pub datagrams_sent: u64,
    /// UDP payload bytes sent (everything on the wire above UDP).
    pub wire_bytes_sent: u64,
    /// Current probe timeout (PTO), with backoff.
    pub rto: Duration,
    /// Probe timer (PTO) expiries. Unlike a classic retransmission timeout, a PTO neither
    /// declares anything lost nor shrinks the congestion window.
    pub rto_expirations: u64,
    /// RTT variation estimate; zero before the first sample.
    pub rttvar: Duration,
    /// Smoothed RTT; zero before the first sample.
    pub srtt: Duration,
    /// Slow-start threshold, bytes (`u64::MAX` before the first loss).
    pub ssthresh: u64,
}
