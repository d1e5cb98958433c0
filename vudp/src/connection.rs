//! The connection state machine.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::unsent::Unsent;

use crate::config::{Config, ConfigError};
use crate::crypto::{self, MacKey};
use crate::error::{Error, ResetCode, Violation};
use crate::packet::{
    self, Hello, Packet, ParseError, Parsed, Reset, SackBlock, Segment, SegmentHeader, FLAG_FIN,
    FLAG_PING, MAX_SACK_BLOCKS, NONCE_LEN,
};
use crate::recovery::{Controller, Replay, ReplayWindow, RttEstimator, Utilization};
use crate::stats::Stats;

/// Segments sent after a lost one that must be acknowledged before it counts as lost.
const PACKET_THRESHOLD: u64 = 3;
/// Extra acks a closed connection sends for the peer's FIN, one per probe timeout.
const FINAL_ACKS: u8 = 3;
/// Probe packets sent when the probe timer expires (RFC 9002 allows one or two).
const PROBES_PER_TIMEOUT: u8 = 2;
/// Shortest time a failed connection answers with RESET (three probe timeouts, at least
/// this): long enough for a peer's packets already on the way to draw an answer.
const MIN_RESET_LINGER: Duration = Duration::from_millis(600);

/// One datagram to send, produced by [`Connection::poll_transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where to send it: always the peer address given to [`Connection::new`].
    pub destination: SocketAddr,
    /// Number of bytes written to the caller's buffer.
    pub size: usize,
}

/// Something the application or bridge should know, from [`Connection::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Both directions ended cleanly: our FIN was acknowledged and the peer's arrived.
    /// Data not yet read stays readable. The connection lingers a little to answer
    /// retransmissions, then [`Connection::is_drained`] becomes true.
    #[doc(alias = "close_io")]
    Closed,
    /// The handshake completed; data now flows.
    #[doc(alias = "connected")]
    Connected,
    /// The connection failed; nothing more will be delivered. Reported once.
    #[doc(alias = "VFIOLost")]
    Failed(Error),
    /// The peer ended its stream: every byte before its FIN has arrived. After reading
    /// [`Connection::readable_len`] more bytes, the inbound stream is complete.
    #[doc(alias = "end_consume")]
    PeerFinished,
    /// In-order bytes became readable (the buffer went from empty to non-empty). Call
    /// [`Connection::read`] until it returns `None`.
    ReadableData,
    /// [`Connection::send_capacity`] rose above zero after a write was cut short.
    #[doc(alias = "can_produce")]
    WritableAgain,
}

/// The sans-IO core of one VUT connection: a reliable, ordered, authenticated byte stream
/// in each direction over UDP.
///
/// A `Connection` owns no socket, reads no clock and spawns nothing. Time comes in as
/// `Instant` arguments, which must never go backwards; randomness comes from the seed given
/// to [`Connection::new`].
///
/// # Methods by kind
///
/// * Inputs: [`handle_datagram`](Self::handle_datagram) (every datagram the socket receives;
///   the core itself checks the source address), [`handle_timeout`](Self::handle_timeout)
///   (when the instant from [`poll_timeout`](Self::poll_timeout) is reached; calling it early
///   or twice is harmless).
/// * Outputs, drained **in this order** after every input or stream call:
///   1. [`poll_transmit`](Self::poll_transmit) until `None`, sending each datagram;
///   2. [`poll_timeout`](Self::poll_timeout), re-arming the one timer (`None`: no timer);
///   3. [`poll_event`](Self::poll_event) until `None`.
/// * Outbound stream: [`write`](Self::write) (or [`write_bytes`](Self::write_bytes), which
///   does not copy), [`send_capacity`](Self::send_capacity), [`finish`](Self::finish),
///   [`abort`](Self::abort).
/// * Inbound stream: [`read`](Self::read), [`readable_len`](Self::readable_len),
///   [`is_peer_finished`](Self::is_peer_finished).
/// * State: [`is_established`](Self::is_established), [`is_drained`](Self::is_drained),
///   [`stats`](Self::stats), [`peer`](Self::peer).
///
/// # Threading and re-entrancy
///
/// A `Connection` is `Send` and has no interior mutability; use it from one thread at a
/// time. It never calls back into its caller: everything it has to say comes out of the
/// `poll_*` methods.
///
/// # Examples
///
/// Two connections wired back to back without loss:
///
/// ```
/// use std::net::SocketAddr;
/// use std::time::Instant;
/// use weir_vudp::{Config, Connection, Event};
///
/// let (a_addr, b_addr): (SocketAddr, SocketAddr) =
///     ("10.0.0.1:4000".parse().unwrap(), "10.0.0.2:4000".parse().unwrap());
/// let now = Instant::now();
/// let mut a = Connection::new(Config::default(), b"secret A", b"secret B", b_addr, [1; 32], now)
///     .unwrap();
/// let mut b = Connection::new(Config::default(), b"secret B", b"secret A", a_addr, [2; 32], now)
///     .unwrap();
/// a.write(b"hello");
/// a.finish();
/// let mut buf = Vec::new();
/// for _ in 0..10 {
///     while a.poll_transmit(now, &mut buf).is_some() {
///         b.handle_datagram(now, a_addr, &buf);
///     }
///     while b.poll_transmit(now, &mut buf).is_some() {
///         a.handle_datagram(now, b_addr, &buf);
///     }
/// }
/// assert_eq!(b.poll_event(), Some(Event::Connected));
/// assert_eq!(&b.read(100).unwrap()[..], b"hello");
/// assert!(b.is_peer_finished());
/// ```
#[derive(Debug)]
#[doc(alias = "VUDPTransport")]
pub struct Connection {
    /// Settings, validated.
    config: Config,
    /// The only address we talk to and accept datagrams from.
    peer: SocketAddr,
    /// Where the connection is in its life.
    state: State,
    /// When a closed or failed connection stops answering.
    linger_until: Option<Instant>,

    // Handshake.
    /// Our nonce for this connection.
    local_nonce: [u8; NONCE_LEN],
    /// Keying material of direction us → peer.
    ikm_send: Vec<u8>,
    /// Keying material of direction peer → us.
    ikm_recv: Vec<u8>,
    /// HELLO key us → peer.
    hello_send: MacKey,
    /// HELLO key peer → us.
    hello_recv: MacKey,
    /// The HELLO whose nonce we use as the peer's (tentative until established).
    peer_hello: Option<Hello>,
    /// Data keys derived from both nonces.
    keys: Option<Keys>,
    /// A HELLO should go out.
    hello_pending: bool,
    /// When to retransmit the HELLO.
    hello_deadline: Option<Instant>,
    /// When the handshake gives up.
    handshake_deadline: Instant,

    // Packet numbers.
    /// Packet number of the next SEGMENT or RESET.
    next_packet_number: u64,
    /// Packet numbers received.
    replay: ReplayWindow,

    // Sending.
    /// Data bytes per segment.
    mss: usize,
    /// Written, not yet segmented.
    unsent: Unsent,
    /// Sent segments not yet cumulatively acknowledged, by stream offset.
    segments: BTreeMap<u64, SentSegment>,
    /// Counts and indexes of `segments` by state, kept in step with it.
    flight: Flight,
    /// Data bytes in `segments`.
    outstanding_bytes: u64,
    /// Lowest unacknowledged stream offset (FIN included).
    snd_una: u64,
    /// Offset of the next new data byte.
    snd_nxt: u64,
    /// Largest `ack + window` the peer announced.
    send_limit: u64,
    /// The application called `finish`.
    finish_requested: bool,
    /// Our FIN is in `segments` (or acknowledged).
    fin_sent: bool,
    /// Our FIN was acknowledged.
    fin_acked: bool,
    /// Transmission counter stamped on every segment sent.
    next_send_order: u64,
    /// Send order of the newest segment acknowledged so far.
    largest_acked_order: Option<u64>,
    /// Probe timer (PTO, RFC 9002 section 6.2); not used while the loss timer is armed.
    pto_deadline: Option<Instant>,
    /// When the newest data segment (new or retransmitted) went out.
    last_data_sent: Instant,
    /// Probe packets still to send after a probe timeout; they ignore the congestion window.
    probes_pending: u8,
    /// Reused buffer: bytes and send order (`None` if ambiguous) of the segments one ack
    /// newly acknowledged.
    acked_scratch: Vec<(u64, Option<u64>)>,
    /// When the earliest in-flight segment crosses the time threshold of loss detection.
    loss_deadline: Option<Instant>,
    /// Zero-window probe timer.
    persist_deadline: Option<Instant>,
    /// Probes sent since the window closed.
    persist_backoff: u32,
    /// A write was cut short; report `WritableAgain` once capacity returns.
    write_blocked: bool,

    // Receiving.
    /// Next in-order data offset expected from the peer.
    rcv_nxt: u64,
    /// Offset of the first byte the application has not read.
    read_offset: u64,
    /// In-order bytes waiting for the application.
    readable: VecDeque<Bytes>,
    /// Bytes in `readable`.
    readable_len: usize,
    /// Out-of-order data, non-overlapping, by offset, all inside the window.
    out_of_order: BTreeMap<u64, Bytes>,
    /// Offset of the data most recently stored out of order (its range goes first in SACK).
    latest_out_of_order: Option<u64>,
    /// The peer's final length, once its FIN arrived.
    peer_fin: Option<u64>,
    /// All bytes before the peer's FIN arrived.
    peer_finished: bool,
    /// Right edge of the window as last sent.
    announced_right: u64,
    /// `ReadableData` was reported and the buffer has not been emptied since.
    readable_notified: bool,
    /// An acknowledgement should go out.
    ack_pending: bool,
    /// Ack-eliciting packets received since we last sent an ack.
    eliciting_since_ack: u32,
    /// An ack-eliciting empty segment (keep-alive or probe) should go out.
    ping_pending: bool,
    /// Extra final acks still to send after a clean close.
    final_acks_left: u8,
    /// When the next extra final ack goes out.
    final_ack_deadline: Option<Instant>,

    // Time, estimators, output.
    /// When we last sent anything.
    last_sent: Instant,
    /// When we last received an authentic packet.
    last_received: Instant,
    /// RTT and RTO.
    rtt: RttEstimator,
    /// Congestion control.
    cc: Controller,
    /// Whether the sender filled the congestion window lately: set when data waited for
    /// the window, cleared when the sender ran out of data or peer window with room left.
    use_of_window: Utilization,
    /// The code of our RESET once failed.
    reset_code: Option<ResetCode>,
    /// A RESET should go out.
    reset_pending: bool,
    /// Events not yet polled.
    events: VecDeque<Event>,
    /// Counters.
    stats: Stats,
}

/// Life cycle of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Exchanging HELLOs.
    Handshaking,
    /// Data flows.
    Established,
    /// Closed cleanly; answering retransmissions until `linger_until`.
    Closed,
    /// Failed; answering with RESET until `linger_until`.
    Failed,
    /// Nothing more to do.
    Drained,
}

/// The two data keys.
#[derive(Debug, Clone)]
struct Keys {
    /// Us → peer.
    send: MacKey,
    /// Peer → us.
    recv: MacKey,
}

/// A segment sent and not yet cumulatively acknowledged.
#[derive(Debug, Clone)]
struct SentSegment {
    /// Stream bytes.
    data: Bytes,
    /// Carries our FIN (which occupies the offset after the data).
    fin: bool,
    /// Last transmission time.
    sent_at: Instant,
    /// Transmission counter value of the last transmission.
    order: u64,
    /// Sent more than once (no RTT samples: Karn's rule).
    retransmitted: bool,
    /// Where it stands.
    state: SegmentState,
}

impl SentSegment {
    /// Stream offsets occupied, FIN included.
    fn seq_len(&self) -> u64 {
        self.data.len() as u64 + u64::from(self.fin)
    }
}

/// What the sender knows about a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SegmentState {
    /// Sent, no news.
    InFlight,
    /// Declared lost, waiting for retransmission.
    Lost,
    /// Selectively acknowledged.
    Sacked,
}

/// What the sent segments add up to, kept in step with every change of a segment's state so
/// that the send and ack paths need not scan them all: bytes and segments in flight, the lost
/// ones by offset, and the in-flight transmissions in send order (for loss detection and
/// probes).
#[derive(Debug, Default)]
struct Flight {
    /// Data bytes of the segments in flight.
    bytes: u64,
    /// Segments in flight (FIN-only ones included).
    segments: usize,
    /// Offsets of the segments declared lost and not yet retransmitted.
    lost: BTreeSet<u64>,
    /// `(send order, offset)` of transmissions, oldest first. An entry is current while the
    /// segment at `offset` is in flight with that send order; others are stale and are
    /// skipped (and dropped once they reach the front).
    by_order: VecDeque<(u64, u64)>,
}

impl Flight {
    /// `seg` (at `offset`) takes the state `state`.
    fn set_state(&mut self, offset: u64, seg: &mut SentSegment, state: SegmentState) {
        self.leave(offset, seg);
        seg.state = state;
        self.enter(offset, seg);
    }

    /// `seg` (at `offset`) enters the books in its state.
    fn enter(&mut self, offset: u64, seg: &SentSegment) {
        match seg.state {
            SegmentState::InFlight => {
                self.bytes += seg.data.len() as u64;
                self.segments += 1;
                self.by_order.push_back((seg.order, offset));
            }
            SegmentState::Lost => {
                self.lost.insert(offset);
            }
            SegmentState::Sacked => {}
        }
    }

    /// `seg` (at `offset`) leaves the books (acknowledged, or before a change of state).
    fn leave(&mut self, offset: u64, seg: &SentSegment) {
        match seg.state {
            SegmentState::InFlight => {
                self.bytes -= seg.data.len() as u64;
                self.segments -= 1;
            }
            SegmentState::Lost => {
                self.lost.remove(&offset);
            }
            SegmentState::Sacked => {}
        }
    }

    /// The oldest transmission still in flight: `(send order, offset)`. Drops stale entries
    /// from the front on the way.
    fn oldest(&mut self, segments: &BTreeMap<u64, SentSegment>) -> Option<(u64, u64)> {
        while let Some(&(order, offset)) = self.by_order.front() {
            let current = segments
                .get(&offset)
                .is_some_and(|s| s.order == order && s.state == SegmentState::InFlight);
            if current {
                return Some((order, offset));
            }
            self.by_order.pop_front();
        }
        None
    }
}

impl Connection {
    /// Creates a connection to `peer` and queues its first HELLO.
    ///
    /// `local_secret` is this side's secret and `peer_secret` the peer's (the peer passes
    /// them the other way round). `seed` must be fresh random bytes (for example from the OS
    /// random source) for every connection: it makes the connection's nonce.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] if `config` is inconsistent.
    #[doc(alias = "VUDPTransport")]
    pub fn new(
        config: Config,
        local_secret: &[u8],
        peer_secret: &[u8],
        peer: SocketAddr,
        seed: [u8; 32],
        now: Instant,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let ikm_send = crypto::direction_ikm(local_secret, peer_secret);
        let ikm_recv = crypto::direction_ikm(peer_secret, local_secret);
        let mss = Config::mss_for(config.max_datagram);
        Ok(Self {
            peer,
            state: State::Handshaking,
            linger_until: None,
            local_nonce: crypto::nonce_from_seed(&seed),
            hello_send: crypto::hello_key(&ikm_send),
            hello_recv: crypto::hello_key(&ikm_recv),
            ikm_send,
            ikm_recv,
            peer_hello: None,
            keys: None,
            hello_pending: true,
            hello_deadline: None,
            handshake_deadline: now + config.handshake_timeout,
            next_packet_number: 0,
            replay: ReplayWindow::default(),
            mss,
            unsent: Unsent::default(),
            flight: Flight::default(),
            segments: BTreeMap::new(),
            outstanding_bytes: 0,
            snd_una: 0,
            snd_nxt: 0,
            send_limit: 0,
            finish_requested: false,
            fin_sent: false,
            fin_acked: false,
            next_send_order: 0,
            largest_acked_order: None,
            pto_deadline: None,
            last_data_sent: now,
            probes_pending: 0,
            acked_scratch: Vec::new(),
            loss_deadline: None,
            persist_deadline: None,
            persist_backoff: 0,
            write_blocked: false,
            rcv_nxt: 0,
            read_offset: 0,
            readable: VecDeque::new(),
            readable_len: 0,
            out_of_order: BTreeMap::new(),
            latest_out_of_order: None,
            peer_fin: None,
            peer_finished: false,
            announced_right: u64::from(config.recv_buffer),
            readable_notified: false,
            ack_pending: false,
            eliciting_since_ack: 0,
            ping_pending: false,
            final_acks_left: 0,
            final_ack_deadline: None,
            last_sent: now,
            last_received: now,
            rtt: RttEstimator::new(config.initial_rto, config.min_rto, config.max_rto),
            cc: Controller::new(config.congestion_control, mss),
            use_of_window: Utilization::Underused,
            reset_code: None,
            reset_pending: false,
            events: VecDeque::new(),
            stats: Stats::default(),
            config,
        })
    }

    // ---------------------------------------------------------------- inputs

    /// Feeds one received datagram. Datagrams from other addresses, unparsable or
    /// unauthentic ones are dropped and counted in [`Stats::dropped`]; none can panic or
    /// disturb the connection.
    #[doc(alias = "do_read")]
    pub fn handle_datagram(&mut self, now: Instant, from: SocketAddr, datagram: &[u8]) {
        if from != self.peer {
            self.stats.dropped.wrong_source += 1;
            return;
        }
        self.stats.datagrams_received += 1;
        if self.state == State::Drained {
            self.stats.dropped.unexpected += 1;
            return;
        }
        let parsed = match packet::parse(datagram) {
            Ok(parsed) => parsed,
            Err(ParseError::UnsupportedVersion { .. }) => {
                self.stats.dropped.unsupported_version += 1;
                return;
            }
            Err(_) => {
                self.stats.dropped.unparsable += 1;
                return;
            }
        };
        match parsed.packet {
            Packet::Hello(hello) => self.handle_hello(now, &parsed, hello),
            Packet::Segment(segment) => {
                if self.authenticate(&parsed, segment.packet_number) {
                    self.handle_segment(now, &segment);
                }
            }
            Packet::Reset(reset) => {
                if self.authenticate(&parsed, reset.packet_number) {
                    self.handle_reset(reset);
                }
            }
        }
    }

    /// Tells the core that time has passed. Harmless when called early or repeatedly.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state {
            State::Drained => {}
            State::Closed | State::Failed => {
                if self.linger_until.is_some_and(|t| now >= t) {
                    self.state = State::Drained;
                    return;
                }
                if self.final_ack_deadline.is_some_and(|t| now >= t) {
                    self.ack_pending = true;
                    self.final_acks_left = self.final_acks_left.saturating_sub(1);
                    self.final_ack_deadline =
                        (self.final_acks_left > 0).then(|| now + self.rtt.pto());
                }
            }
            State::Handshaking => {
                if now >= self.handshake_deadline {
                    let authentication_failures = self.stats.dropped.bad_mac;
                    self.fail(
                        now,
                        Error::HandshakeTimeout {
                            authentication_failures,
                        },
                        None,
                    );
                    return;
                }
                if self.hello_deadline.is_some_and(|t| now >= t) {
                    self.rtt.on_timeout();
                    self.hello_pending = true;
                    self.hello_deadline = Some(now + self.rtt.pto());
                }
            }
            State::Established => {
                if now >= self.last_received + self.config.idle_timeout {
                    self.fail(now, Error::IdleTimeout, None);
                    return;
                }
                // The loss timer takes precedence over the probe timer (RFC 9002 6.2.1); when
                // it fires, the retransmissions it causes restart the probe timer.
                if self.loss_deadline.is_some_and(|t| now >= t) {
                    self.detect_lost(now, None);
                } else if self.loss_deadline.is_none()
                    && self.pto_deadline.is_some_and(|t| now >= t)
                {
                    self.on_probe_timeout(now);
                }
                if self.persist_deadline.is_some_and(|t| now >= t) {
                    self.ping_pending = true;
                    self.persist_backoff = (self.persist_backoff + 1).min(20);
                    self.persist_deadline = Some(now + self.persist_interval());
                }
                // An ack about to go out refreshes the NAT binding just as well, and we
                // just heard from the peer.
                if now >= self.last_sent + self.config.keepalive_interval && !self.ack_pending {
                    self.ping_pending = true;
                }
            }
        }
    }

    // ---------------------------------------------------------------- outputs

    /// Writes the next datagram to send into `buf` (cleared first) and says where it goes.
    /// Call until it returns `None`.
    pub fn poll_transmit(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        buf.clear();
        if self.state == State::Drained {
            return None;
        }
        if self.reset_pending {
            self.reset_pending = false;
            let (Some(keys), Some(code)) = (&self.keys, self.reset_code) else {
                return None;
            };
            let reset = Reset {
                code: code.0,
                packet_number: self.next_packet_number,
            };
            self.next_packet_number += 1;
            packet::encode_reset(buf, &reset);
            keys.send.seal(buf);
            let linger = now + self.reset_linger();
            self.linger_until = Some(self.linger_until.map_or(linger, |t| t.max(linger)));
            return Some(self.transmitted(now, buf));
        }
        if self.state == State::Failed {
            return None;
        }
        if self.hello_pending {
            self.hello_pending = false;
            let hello = Hello {
                max_datagram: self.config.max_datagram,
                window: self.config.recv_buffer,
                nonce: self.local_nonce,
                echo: self.peer_hello.map_or([0; NONCE_LEN], |h| h.nonce),
            };
            packet::encode_hello(buf, &hello);
            self.hello_send.seal(buf);
            if self.state == State::Handshaking && self.hello_deadline.is_none() {
                self.hello_deadline = Some(now + self.rtt.pto());
            }
            return Some(self.transmitted(now, buf));
        }
        if self.state == State::Handshaking {
            return None;
        }
        self.poll_segment(now, buf)
    }

    /// The instant at which [`handle_timeout`](Self::handle_timeout) should be called, or
    /// `None` if no timer is needed.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let candidates: [Option<Instant>; 5] = match self.state {
            State::Drained => return None,
            State::Handshaking => [
                Some(self.handshake_deadline),
                self.hello_deadline,
                None,
                None,
                None,
            ],
            State::Established => [
                Some(self.last_received + self.config.idle_timeout),
                Some(self.last_sent + self.config.keepalive_interval),
                self.pto_deadline.filter(|_| self.loss_deadline.is_none()),
                self.persist_deadline,
                self.loss_deadline,
            ],
            State::Closed | State::Failed => {
                [self.linger_until, self.final_ack_deadline, None, None, None]
            }
        };
        candidates.into_iter().flatten().min()
    }

    /// The next event, if any. Call until it returns `None`.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    // ---------------------------------------------------------------- outbound stream

    /// Queues bytes for sending and returns how many were taken: at most
    /// [`send_capacity`](Self::send_capacity). Bytes written before the handshake completes
    /// are sent once it does. Returns 0 after [`finish`](Self::finish) or once the
    /// connection ended. A short write arms [`Event::WritableAgain`].
    #[doc(alias = "consume")]
    pub fn write(&mut self, data: &[u8]) -> usize {
        if self.finish_requested || !matches!(self.state, State::Handshaking | State::Established) {
            return 0;
        }
        let taken = self.send_capacity().min(data.len());
        if taken < data.len() {
            self.write_blocked = true;
        }
        self.unsent.push(Bytes::copy_from_slice(&data[..taken]));
        taken
    }

    /// As [`write`](Self::write), without copying: takes the first
    /// [`send_capacity`](Self::send_capacity) bytes of `data` (sharing its buffer) and
    /// returns how many.
    pub fn write_bytes(&mut self, mut data: Bytes) -> usize {
        if self.finish_requested || !matches!(self.state, State::Handshaking | State::Established) {
            return 0;
        }
        let taken = self.send_capacity().min(data.len());
        if taken < data.len() {
            self.write_blocked = true;
            data.truncate(taken);
        }
        self.unsent.push(data);
        taken
    }

    /// Bytes [`write`](Self::write) would take now: the send buffer minus bytes written and
    /// not yet acknowledged.
    pub fn send_capacity(&self) -> usize {
        if self.finish_requested || !matches!(self.state, State::Handshaking | State::Established) {
            return 0;
        }
        let used = self.unsent.len() as u64 + self.outstanding_bytes;
        u64::from(self.config.send_buffer).saturating_sub(used) as usize
    }

    /// Ends our outbound stream: every byte written is delivered, then FIN. Idempotent.
    #[doc(alias = "end_consume")]
    pub fn finish(&mut self) {
        if matches!(self.state, State::Handshaking | State::Established) {
            self.finish_requested = true;
        }
    }

    /// Tears the connection down at once: sends RESET ([`ResetCode::ABORTED`]) if keys
    /// exist, discards both streams and reports [`Event::Failed`] with [`Error::Aborted`].
    /// Does nothing once the connection has ended.
    #[doc(alias = "FLAG_FAIL")]
    pub fn abort(&mut self) {
        if matches!(
            self.state,
            State::Handshaking | State::Established | State::Closed
        ) {
            self.fail_without_clock(Error::Aborted, Some(ResetCode::ABORTED));
        }
    }

    // ---------------------------------------------------------------- inbound stream

    /// Takes up to `max` in-order bytes, or `None` if none are readable. Reading opens the
    /// receive window again (the advertised window is the receive buffer minus bytes not
    /// yet read), so a slow reader slows the sender down.
    pub fn read(&mut self, max: usize) -> Option<Bytes> {
        if max == 0 {
            return None;
        }
        let front = self.readable.front_mut()?;
        let chunk = if front.len() <= max {
            self.readable.pop_front()?
        } else {
            front.split_to(max)
        };
        self.readable_len -= chunk.len();
        self.read_offset += chunk.len() as u64;
        if self.readable_len == 0 {
            self.readable_notified = false;
        }
        let threshold = (u64::from(self.config.recv_buffer) / 4)
            .min(2 * self.mss as u64)
            .max(1);
        if self.right_edge() >= self.announced_right + threshold
            && matches!(self.state, State::Established | State::Closed)
            && !self.peer_finished
        {
            self.ack_pending = true;
        }
        Some(chunk)
    }

    /// In-order bytes ready for [`read`](Self::read).
    pub fn readable_len(&self) -> usize {
        self.readable_len
    }

    /// Whether the peer's stream ended: no bytes will follow those now readable.
    pub fn is_peer_finished(&self) -> bool {
        self.peer_finished
    }

    // ---------------------------------------------------------------- state

    /// Whether the handshake completed and the connection has not ended.
    pub fn is_established(&self) -> bool {
        self.state == State::Established
    }

    /// Whether the core has nothing left to do: closed or failed, and done lingering. The
    /// bridge may drop it (and its socket) now.
    pub fn is_drained(&self) -> bool {
        self.state == State::Drained
    }

    /// The peer address given to [`new`](Self::new).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Counters and estimator state.
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats;
        stats.cwnd = self.cc.cwnd();
        stats.ssthresh = self.cc.ssthresh();
        stats.srtt = self.rtt.srtt();
        stats.rttvar = self.rtt.rttvar();
        stats.rto = self.rtt.pto();
        stats
    }

    // ---------------------------------------------------------------- receive path

    /// Checks the tag of a SEGMENT or RESET and its packet number.
    fn authenticate(&mut self, parsed: &Parsed<'_>, packet_number: u64) -> bool {
        let Some(keys) = &self.keys else {
            self.stats.dropped.unexpected += 1;
            return false;
        };
        if !keys.recv.verify(parsed.authenticated, parsed.tag) {
            self.stats.dropped.bad_mac += 1;
            return false;
        }
        match self.replay.check_and_insert(packet_number) {
            Ok(()) => true,
            Err(Replay::Duplicate) => {
                self.stats.dropped.replayed += 1;
                false
            }
            Err(Replay::TooOld) => {
                self.stats.dropped.too_old += 1;
                false
            }
        }
    }

    fn handle_hello(&mut self, now: Instant, parsed: &Parsed<'_>, hello: Hello) {
        if !self.hello_recv.verify(parsed.authenticated, parsed.tag) {
            self.stats.dropped.bad_mac += 1;
            return;
        }
        if hello.nonce == self.local_nonce {
            self.stats.dropped.stale_handshake += 1;
            return;
        }
        match self.state {
            State::Handshaking => {
                if self.peer_hello.map(|h| h.nonce) != Some(hello.nonce) {
                    self.keys = Some(Keys {
                        send: crypto::data_key(&self.ikm_send, &self.local_nonce, &hello.nonce),
                        recv: crypto::data_key(&self.ikm_recv, &hello.nonce, &self.local_nonce),
                    });
                    self.replay = ReplayWindow::default();
                }
                self.peer_hello = Some(hello);
                self.hello_pending = true;
                if hello.echo == self.local_nonce {
                    self.establish(now);
                }
            }
            _ if self.peer_hello.map(|h| h.nonce) == Some(hello.nonce) => {
                // The peer is still handshaking. If it lacks our nonce it needs our HELLO;
                // otherwise any keyed packet proves we are established. Answering a
                // retransmitted HELLO with a pure ack (never with a HELLO) cannot loop.
                if matches!(self.state, State::Established | State::Closed) {
                    if hello.echo == self.local_nonce {
                        self.ack_pending = true;
                    } else {
                        self.hello_pending = true;
                    }
                }
            }
            _ => self.stats.dropped.stale_handshake += 1,
        }
    }

    fn establish(&mut self, now: Instant) {
        let Some(hello) = self.peer_hello else { return };
        self.state = State::Established;
        self.hello_deadline = None;
        self.last_received = now;
        self.send_limit = u64::from(hello.window);
        let datagram = self.config.max_datagram.min(hello.max_datagram);
        self.mss = Config::mss_for(datagram);
        self.cc = Controller::new(self.config.congestion_control, self.mss);
        // HELLO retransmissions backed the timer off; data starts afresh.
        self.rtt.reset_backoff();
        self.events.push_back(Event::Connected);
    }

    fn handle_reset(&mut self, reset: Reset) {
        match self.state {
            State::Handshaking | State::Established | State::Closed => {
                self.reset_code = None;
                self.events
                    .push_back(Event::Failed(Error::Reset(ResetCode(reset.code))));
                self.state = State::Drained;
            }
            _ => self.stats.dropped.unexpected += 1,
        }
    }

    fn handle_segment(&mut self, now: Instant, segment: &Segment<'_>) {
        self.last_received = now;
        match self.state {
            State::Handshaking => self.establish(now),
            State::Closed => self.linger_until = Some(now + self.config.close_linger),
            State::Failed => {
                self.reset_pending = true;
                return;
            }
            State::Established | State::Drained => {}
        }
        if let Err(violation) = self.process_ack(now, segment) {
            self.fail(
                now,
                Error::ProtocolViolation(violation),
                Some(ResetCode::PROTOCOL_VIOLATION),
            );
            return;
        }
        if let Err(violation) = self.process_data(segment) {
            self.fail(
                now,
                Error::ProtocolViolation(violation),
                Some(ResetCode::PROTOCOL_VIOLATION),
            );
            return;
        }
        if segment.is_ack_eliciting() {
            self.ack_pending = true;
            self.eliciting_since_ack = self.eliciting_since_ack.saturating_add(1);
        }
        self.check_closed(now);
    }

    /// Cumulative ack, SACK blocks, window, RTT, loss detection, congestion control.
    fn process_ack(&mut self, now: Instant, segment: &Segment<'_>) -> Result<(), Violation> {
        let sent_end = self.sent_end();
        if segment.ack > sent_end {
            return Err(Violation::AckOfUnsentData);
        }
        let mut blocks = [(0u64, 0u64); MAX_SACK_BLOCKS];
        let mut block_count = 0;
        for block in segment.sack_blocks() {
            let start = segment.ack.checked_add(u64::from(block.start));
            let end = start.and_then(|s| s.checked_add(u64::from(block.len)));
            match (start, end) {
                (Some(start), Some(end)) if end <= sent_end => {
                    blocks[block_count] = (start, end);
                    block_count += 1;
                }
                _ => return Err(Violation::AckOfUnsentData),
            }
        }

        let mut newly_acked = 0u64;
        let mut newest: Option<(u64, Instant, bool)> = None;
        let mut acked = std::mem::take(&mut self.acked_scratch);
        acked.clear();
        let (mut spurious_losses, mut spurious_retransmits) = (0u64, 0u64);
        let min_rtt = self.rtt.min_rtt();
        let mut note = |seg: &SentSegment, newly: &mut u64| {
            // Acks name offsets, not transmissions. An ack of a retransmitted segment sooner
            // than the smallest RTT after the retransmission answers an earlier transmission
            // (as in RACK, RFC 8985): the retransmission was unnecessary, and its send order
            // says nothing about what arrived.
            let ambiguous = seg.retransmitted
                && min_rtt.is_some_and(|m| now.saturating_duration_since(seg.sent_at) < m);
            let order = (!ambiguous).then_some(seg.order);
            if seg.state != SegmentState::Sacked {
                *newly += seg.data.len() as u64;
                acked.push((seg.data.len() as u64, order));
                if seg.state == SegmentState::Lost {
                    // Declared lost, yet it arrived before its retransmission went out.
                    spurious_losses += 1;
                } else if ambiguous {
                    spurious_retransmits += 1;
                }
            }
            if let Some(order) = order {
                if !matches!(newest, Some((newest, _, _)) if newest >= order) {
                    newest = Some((order, seg.sent_at, seg.retransmitted));
                }
            }
        };
        let cumulative_progress = segment.ack > self.snd_una;
        if cumulative_progress {
            while let Some(entry) = self.segments.first_entry() {
                if entry.key() + entry.get().seq_len() > segment.ack {
                    break;
                }
                let offset = *entry.key();
                let seg = entry.remove();
                self.flight.leave(offset, &seg);
                note(&seg, &mut newly_acked);
                self.outstanding_bytes -= seg.data.len() as u64;
                if seg.fin {
                    self.fin_acked = true;
                }
            }
            self.snd_una = segment.ack;
        }
        for &(start, end) in &blocks[..block_count] {
            for (&offset, seg) in self.segments.range_mut(start..end) {
                if offset + seg.seq_len() <= end && seg.state != SegmentState::Sacked {
                    note(seg, &mut newly_acked);
                    self.flight.set_state(offset, seg, SegmentState::Sacked);
                }
            }
        }
        self.stats.bytes_acked += newly_acked;
        self.stats.spurious_losses += spurious_losses;
        self.stats.spurious_retransmits += spurious_retransmits;

        self.send_limit = self
            .send_limit
            .max(segment.ack.saturating_add(u64::from(segment.window)));
        if self.send_limit > self.snd_nxt {
            self.persist_deadline = None;
            self.persist_backoff = 0;
        }

        let previous_largest = self.largest_acked_order;
        if let Some((order, sent_at, retransmitted)) = newest {
            if !retransmitted {
                self.rtt.on_sample(now.saturating_duration_since(sent_at));
            }
            self.largest_acked_order = Some(previous_largest.map_or(order, |o| o.max(order)));
        }
        // Transmissions newer than everything acknowledged before this ack and older than
        // everything it newly acknowledges: a span of them all lost may be persistent
        // congestion.
        let span_end = acked
            .iter()
            .filter_map(|&(_, order)| order)
            .filter(|&order| previous_largest.is_none_or(|p| order > p))
            .min();
        self.detect_lost(now, span_end.map(|end| (previous_largest, end)));
        let srtt = self.rtt.srtt();
        for &(bytes, order) in &acked {
            // An ambiguous ack counts as one of a transmission from before any recovery.
            self.cc
                .on_ack(now, bytes, order.unwrap_or(0), srtt, self.use_of_window);
        }
        self.acked_scratch = acked;
        if newly_acked > 0 {
            // New data acknowledged: the probe timeout backoff ends (RFC 9002 6.2.1).
            self.rtt.reset_backoff();
            self.probes_pending = 0;
        }
        self.arm_probe_timer();
        if self.write_blocked && self.send_capacity() > 0 {
            self.write_blocked = false;
            self.events.push_back(Event::WritableAgain);
        }
        Ok(())
    }

    /// Marks in-flight segments lost by packet threshold (PACKET_THRESHOLD later sends
    /// acknowledged) or by time threshold (RFC 9002 section 6.1.2: a later send was
    /// acknowledged and the segment went out more than `9/8 · max(SRTT, latest RTT)`, at
    /// least 1 ms, ago), and arms the loss timer for the earliest segment that will cross the
    /// time threshold. With the small windows that heavy random loss leaves, fewer than
    /// PACKET_THRESHOLD segments follow a loss, and only the time threshold catches it
    /// without waiting for a probe timeout.
    ///
    /// `ack_span`, on the ack path: the send orders strictly between the largest acknowledged
    /// before this ack and the oldest it newly acknowledged; if lost segments in it were sent
    /// further apart than the persistent congestion duration, the window collapses.
    fn detect_lost(&mut self, now: Instant, ack_span: Option<(Option<u64>, u64)>) {
        self.loss_deadline = None;
        let Some(largest) = self.largest_acked_order else {
            return;
        };
        let window = self.rtt.loss_delay();
        let mut largest_lost: Option<u64> = None;
        let mut deadline: Option<Instant> = None;
        // Transmissions in send order: both thresholds hold for a prefix of them (an older
        // transmission went out no later), so the walk stops at the first one that is not
        // lost yet.
        while let Some((order, offset)) = self.flight.oldest(&self.segments) {
            if order >= largest {
                break;
            }
            let Some(seg) = self.segments.get_mut(&offset) else {
                break;
            };
            let by_count = order + PACKET_THRESHOLD <= largest;
            let lost_at = window.map(|window| seg.sent_at + window);
            if !(by_count || lost_at.is_some_and(|t| now >= t)) {
                deadline = lost_at;
                break;
            }
            self.flight.set_state(offset, seg, SegmentState::Lost);
            self.stats.fast_retransmits += 1;
            if by_count {
                self.stats.lost_by_packet_threshold += 1;
            } else {
                self.stats.lost_by_time_threshold += 1;
            }
            largest_lost = Some(largest_lost.map_or(order, |l| l.max(order)));
        }
        self.loss_deadline = deadline;
        let Some(largest_lost) = largest_lost else {
            return;
        };
        if self.cc.on_loss(largest_lost, self.next_send_order) {
            self.stats.congestion_events += 1;
        }
        if let (Some((after, before)), Some(duration)) =
            (ack_span, self.rtt.persistent_congestion_duration())
        {
            let mut span: Option<(Instant, Instant)> = None;
            let lost = self.flight.lost.iter().filter_map(|o| self.segments.get(o));
            for seg in lost {
                let inside = after.is_none_or(|a| seg.order > a) && seg.order < before;
                if inside {
                    span = Some(span.map_or((seg.sent_at, seg.sent_at), |(first, last)| {
                        (first.min(seg.sent_at), last.max(seg.sent_at))
                    }));
                }
            }
            if span.is_some_and(|(first, last)| last.saturating_duration_since(first) > duration) {
                self.cc.on_persistent_congestion();
                self.stats.persistent_congestions += 1;
            }
        }
    }

    /// Stores data and the FIN, delivers what is now in order.
    fn process_data(&mut self, segment: &Segment<'_>) -> Result<(), Violation> {
        if segment.data.is_empty() && !segment.is_fin() {
            return Ok(());
        }
        let Some(end) = segment.seq.checked_add(segment.data.len() as u64) else {
            self.stats.dropped.out_of_window += 1;
            return Ok(());
        };
        if let Some(fin) = self.peer_fin {
            if end > fin {
                return Err(Violation::DataAfterFin);
            }
            if segment.is_fin() && end != fin {
                return Err(Violation::FinMoved);
            }
        }
        if end > self.right_edge() && !segment.data.is_empty() {
            self.stats.dropped.out_of_window += 1;
            return Ok(());
        }
        if segment.is_fin() && self.peer_fin.is_none() {
            let highest = self
                .out_of_order
                .last_key_value()
                .map_or(self.rcv_nxt, |(k, v)| k + v.len() as u64);
            if highest.max(self.rcv_nxt) > end {
                return Err(Violation::DataAfterFin);
            }
            self.peer_fin = Some(end);
        }
        if !segment.data.is_empty() && end > self.rcv_nxt {
            self.insert_data(segment.seq, segment.data);
        }
        if !self.peer_finished && self.peer_fin == Some(self.rcv_nxt) {
            self.peer_finished = true;
            self.events.push_back(Event::PeerFinished);
        }
        Ok(())
    }

    /// Inserts `data` at `offset` (which ends after `rcv_nxt` and inside the window).
    fn insert_data(&mut self, offset: u64, data: &[u8]) {
        let before = self.rcv_nxt;
        let skip = self.rcv_nxt.saturating_sub(offset) as usize;
        let (mut offset, mut data) = (offset + skip as u64, &data[skip..]);
        if offset == self.rcv_nxt {
            self.deliver(Bytes::copy_from_slice(data));
            while let Some(entry) = self.out_of_order.first_entry() {
                if *entry.key() > self.rcv_nxt {
                    break;
                }
                let start = *entry.key();
                let mut chunk = entry.remove();
                let end = start + chunk.len() as u64;
                if end > self.rcv_nxt {
                    let _ = chunk.split_to((self.rcv_nxt - start) as usize);
                    self.deliver(chunk);
                }
            }
        } else {
            // Out of order: store only the parts no stored range covers.
            self.latest_out_of_order = Some(offset);
            if let Some((&start, stored)) = self.out_of_order.range(..=offset).next_back() {
                let covered = (start + stored.len() as u64).saturating_sub(offset);
                let cut = (covered as usize).min(data.len());
                offset += cut as u64;
                data = &data[cut..];
            }
            while !data.is_empty() {
                let next = self
                    .out_of_order
                    .range(offset..)
                    .next()
                    .map(|(&k, v)| (k, v.len()));
                match next {
                    Some((start, len)) if start < offset + data.len() as u64 => {
                        let gap = (start - offset) as usize;
                        if gap > 0 {
                            self.out_of_order
                                .insert(offset, Bytes::copy_from_slice(&data[..gap]));
                        }
                        let cut = (gap + len).min(data.len());
                        offset += cut as u64;
                        data = &data[cut..];
                    }
                    _ => {
                        self.out_of_order
                            .insert(offset, Bytes::copy_from_slice(data));
                        break;
                    }
                }
            }
        }
        self.stats.bytes_delivered += self.rcv_nxt - before;
    }

    /// Appends in-order bytes to the readable buffer.
    fn deliver(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        self.rcv_nxt += chunk.len() as u64;
        self.readable_len += chunk.len();
        self.readable.push_back(chunk);
        if !self.readable_notified {
            self.readable_notified = true;
            self.events.push_back(Event::ReadableData);
        }
    }

    // ---------------------------------------------------------------- send path

    /// A retransmission, new data, or an ack / probe, in that order of preference. After a
    /// probe timeout the next `probes_pending` data segments ignore the congestion window,
    /// and when there is neither lost nor new data to send they retransmit the oldest
    /// transmission still unacknowledged.
    fn poll_segment(&mut self, now: Instant, buf: &mut Vec<u8>) -> Option<Transmit> {
        let flight = self.flight();
        let probing = self.probes_pending > 0;
        let cwnd = self.cc.cwnd();
        let room = |len: u64| probing || flight == 0 || flight + len <= cwnd;

        // 1. Retransmit the lowest lost segment.
        let lost = self
            .flight
            .lost
            .first()
            .and_then(|offset| self.segments.get_key_value(offset))
            .map(|(&offset, s)| (offset, s.data.len() as u64));
        // Whether data waits for the congestion window (else the window is underused).
        let mut window_full = false;
        if let Some((offset, len)) = lost {
            if room(len) {
                return self.retransmit(now, buf, offset);
            }
            window_full = true;
        }

        // 2. New data and/or FIN.
        if self.state == State::Established && !self.fin_sent {
            let waiting = self.unsent.len();
            let usable = self.send_limit.saturating_sub(self.snd_nxt) as usize;
            let take = waiting.min(usable).min(self.mss);
            let full = waiting.min(self.mss);
            let fin = self.finish_requested && take == waiting;
            let worth_it = take == full || flight == 0;
            let sendable = take > 0 && worth_it || fin;
            window_full |= sendable && !room(take as u64);
            if sendable && room(take as u64) {
                let data = self.unsent.take(take);
                let offset = self.snd_nxt;
                self.snd_nxt += take as u64;
                self.outstanding_bytes += take as u64;
                self.fin_sent = fin;
                let order = self.take_send_order();
                let seg = SentSegment {
                    data: data.clone(),
                    fin,
                    sent_at: now,
                    order,
                    retransmitted: false,
                    state: SegmentState::InFlight,
                };
                self.flight.enter(offset, &seg);
                self.segments.insert(offset, seg);
                self.stats.bytes_sent += take as u64;
                self.data_sent(now);
                return Some(self.send_segment(now, buf, offset, &data, fin, false));
            }
            if waiting > 0 && usable == 0 && self.segments.is_empty() {
                // Zero window with nothing in flight: probe on the persist timer.
                if self.persist_deadline.is_none() {
                    self.persist_deadline = Some(now + self.persist_interval());
                }
            }
        }

        self.use_of_window = if window_full {
            Utilization::Full
        } else {
            Utilization::Underused
        };

        // 2b. A probe with nothing lost or new to send: the oldest transmission again.
        if probing {
            let oldest = self.flight.oldest(&self.segments).map(|(_, offset)| offset);
            match oldest {
                Some(offset) => return self.retransmit(now, buf, offset),
                None => self.probes_pending = 0,
            }
        }

        // 3. Acknowledgement, window update, keep-alive or probe.
        if self.ack_pending || self.ping_pending {
            let ping = self.ping_pending && self.state == State::Established;
            let offset = self.snd_nxt + u64::from(self.fin_sent);
            return Some(self.send_segment(now, buf, offset, &[], false, ping));
        }
        None
    }

    fn send_segment(
        &mut self,
        now: Instant,
        buf: &mut Vec<u8>,
        seq: u64,
        data: &[u8],
        fin: bool,
        ping: bool,
    ) -> Transmit {
        let ack = self.rcv_nxt + u64::from(self.peer_finished);
        let right = self.right_edge();
        let window = u32::try_from(right.saturating_sub(ack)).unwrap_or(u32::MAX);
        let mut flags = 0;
        if fin {
            flags |= FLAG_FIN;
        }
        if ping {
            flags |= FLAG_PING;
        }
        let header = SegmentHeader {
            flags,
            packet_number: self.next_packet_number,
            seq,
            ack,
            window,
        };
        self.next_packet_number += 1;
        let (blocks, count) = self.sack_blocks(ack);
        packet::encode_segment(buf, &header, &blocks[..count], data);
        if let Some(keys) = &self.keys {
            keys.send.seal(buf);
        }
        self.announced_right = self.announced_right.max(right);
        // A pure ack answering two or more ack-eliciting packets goes out twice, so that one
        // lost ack does not leave the peer without news of a whole flight.
        self.ack_pending = data.is_empty()
            && !fin
            && !ping
            && self.eliciting_since_ack >= 2
            && self.state == State::Established;
        self.eliciting_since_ack = 0;
        self.ping_pending = false;
        self.transmitted(now, buf)
    }

    /// Up to four received ranges above `ack`: the newest first, then the lowest.
    fn sack_blocks(&self, ack: u64) -> ([SackBlock; MAX_SACK_BLOCKS], usize) {
        let mut blocks = [SackBlock::default(); MAX_SACK_BLOCKS];
        let mut count = 0;
        let mut ranges: [(u64, u64); MAX_SACK_BLOCKS + 1] = [(0, 0); MAX_SACK_BLOCKS + 1];
        let mut range_count = 0;
        let mut newest = None;
        let mut current: Option<(u64, u64)> = None;
        let latest = self.latest_out_of_order;
        let mut flush = |range: (u64, u64), newest: &mut Option<(u64, u64)>| {
            if latest.is_some_and(|l| range.0 <= l && l < range.1) {
                *newest = Some(range);
            } else if range_count < ranges.len() {
                ranges[range_count] = range;
                range_count += 1;
            }
        };
        for (&start, data) in &self.out_of_order {
            let end = start + data.len() as u64;
            current = match current {
                Some((s, e)) if e == start => Some((s, end)),
                Some(range) => {
                    flush(range, &mut newest);
                    Some((start, end))
                }
                None => Some((start, end)),
            };
        }
        if let Some(range) = current {
            flush(range, &mut newest);
        }
        for (start, end) in newest
            .into_iter()
            .chain(ranges[..range_count].iter().copied())
        {
            if count == MAX_SACK_BLOCKS || start < ack {
                continue;
            }
            // Both lie inside the receive window (at most 1 GiB), so they fit in u32.
            blocks[count] = SackBlock {
                start: u32::try_from(start - ack).unwrap_or(u32::MAX),
                len: u32::try_from(end - start).unwrap_or(0),
            };
            count += 1;
        }
        (blocks, count)
    }

    /// Sends the segment at `offset` again.
    fn retransmit(&mut self, now: Instant, buf: &mut Vec<u8>, offset: u64) -> Option<Transmit> {
        let order = self.take_send_order();
        let seg = self.segments.get_mut(&offset)?;
        self.flight.leave(offset, seg);
        seg.state = SegmentState::InFlight;
        seg.retransmitted = true;
        seg.sent_at = now;
        seg.order = order;
        self.flight.enter(offset, seg);
        let (data, fin) = (seg.data.clone(), seg.fin);
        self.stats.bytes_retransmitted += data.len() as u64;
        self.data_sent(now);
        Some(self.send_segment(now, buf, offset, &data, fin, false))
    }

    /// Bookkeeping of every data segment sent: the probe timer restarts from it, and it
    /// uses up a pending probe.
    fn data_sent(&mut self, now: Instant) {
        self.last_data_sent = now;
        self.pto_deadline = Some(now + self.rtt.pto());
        if self.probes_pending > 0 {
            self.probes_pending -= 1;
            self.stats.probes_sent += 1;
        }
    }

    /// Bookkeeping common to every datagram sent.
    fn transmitted(&mut self, now: Instant, buf: &[u8]) -> Transmit {
        self.last_sent = now;
        self.stats.datagrams_sent += 1;
        self.stats.wire_bytes_sent += buf.len() as u64;
        Transmit {
            destination: self.peer,
            size: buf.len(),
        }
    }

    // ---------------------------------------------------------------- timers and ends

    /// The probe timer expired (RFC 9002 section 6.2): no ack for a probe timeout after the
    /// newest data segment. Nothing is declared lost and the congestion window stays; up to
    /// two probes go out (ignoring the window) and the timeout doubles.
    fn on_probe_timeout(&mut self, now: Instant) {
        if self.flight.segments == 0 {
            self.pto_deadline = None;
            return;
        }
        self.rtt.on_timeout();
        self.stats.rto_expirations += 1;
        self.probes_pending = PROBES_PER_TIMEOUT;
        self.pto_deadline = Some(now + self.rtt.pto());
    }

    /// Arms the probe timer a probe timeout after the newest data segment, if any data
    /// segment is in flight.
    fn arm_probe_timer(&mut self) {
        let in_flight = self.flight.segments > 0;
        self.pto_deadline = in_flight.then(|| self.last_data_sent + self.rtt.pto());
    }

    fn check_closed(&mut self, now: Instant) {
        if self.state == State::Established && self.fin_acked && self.peer_finished {
            self.state = State::Closed;
            self.events.push_back(Event::Closed);
            let pto = self.rtt.pto();
            self.linger_until = Some(now + self.config.close_linger);
            self.final_acks_left = FINAL_ACKS;
            self.final_ack_deadline = Some(now + pto);
            self.pto_deadline = None;
            self.loss_deadline = None;
            self.probes_pending = 0;
            self.persist_deadline = None;
        }
    }

    /// Fails the connection, reporting `error`, and queues a RESET with `code` if keys exist.
    fn fail(&mut self, now: Instant, error: Error, code: Option<ResetCode>) {
        self.fail_without_clock(error, code);
        if self.state == State::Failed {
            self.linger_until = Some(now + self.reset_linger());
        }
    }

    fn fail_without_clock(&mut self, error: Error, code: Option<ResetCode>) {
        self.events.push_back(Event::Failed(error));
        self.unsent = Unsent::default();
        self.segments.clear();
        self.flight = Flight::default();
        self.outstanding_bytes = 0;
        self.out_of_order.clear();
        self.pto_deadline = None;
        self.loss_deadline = None;
        self.probes_pending = 0;
        self.persist_deadline = None;
        self.final_ack_deadline = None;
        self.hello_pending = false;
        self.ack_pending = false;
        self.ping_pending = false;
        match (code, &self.keys) {
            (Some(code), Some(_)) => {
                self.state = State::Failed;
                self.reset_code = Some(code);
                self.reset_pending = true;
                // Sending the RESET starts the linger (see `poll_transmit`).
                self.linger_until = None;
            }
            _ => self.state = State::Drained,
        }
    }

    // ---------------------------------------------------------------- helpers

    /// Everything sent so far, FIN included: acks may not exceed it.
    fn sent_end(&self) -> u64 {
        self.snd_nxt + u64::from(self.fin_sent)
    }

    /// Bytes in flight: sent, neither acknowledged nor declared lost.
    fn flight(&self) -> u64 {
        self.flight.bytes
    }

    /// Right edge of our receive window.
    fn right_edge(&self) -> u64 {
        self.read_offset + u64::from(self.config.recv_buffer)
    }

    /// How long a failed connection answers with RESET.
    fn reset_linger(&self) -> Duration {
        (self.rtt.pto() * 3).max(MIN_RESET_LINGER)
    }

    fn persist_interval(&self) -> Duration {
        let factor = 1u32 << self.persist_backoff.min(20);
        self.rtt
            .pto()
            .saturating_mul(factor)
            .min(self.config.max_rto)
    }

    fn take_send_order(&mut self) -> u64 {
        let order = self.next_send_order;
        self.next_send_order += 1;
        order
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(n: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, n], 1000))
    }

    /// Two established connections, wired losslessly.
    fn pair(now: Instant) -> (Connection, Connection) {
        let mut a = Connection::new(Config::default(), b"a", b"b", addr(2), [1; 32], now).unwrap();
        let mut b = Connection::new(Config::default(), b"b", b"a", addr(1), [2; 32], now).unwrap();
        pump(now, &mut a, &mut b);
        assert!(a.is_established() && b.is_established());
        (a, b)
    }

    fn pump(now: Instant, a: &mut Connection, b: &mut Connection) {
        let mut buf = Vec::new();
        for _ in 0..20 {
            while a.poll_transmit(now, &mut buf).is_some() {
                b.handle_datagram(now, addr(1), &buf);
            }
            while b.poll_transmit(now, &mut buf).is_some() {
                a.handle_datagram(now, addr(2), &buf);
            }
        }
    }

    /// A segment from `b` to `a`, correctly authenticated, with arbitrary fields.
    fn forge(b: &mut Connection, header: SegmentHeader, data: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        let header = SegmentHeader {
            packet_number: b.next_packet_number,
            ..header
        };
        b.next_packet_number += 1;
        packet::encode_segment(&mut buf, &header, &[], data);
        b.keys.as_ref().unwrap().send.seal(&mut buf);
        buf
    }

    fn violation_resets_both(header: SegmentHeader, data: &[u8], expected: Violation) {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let bad = forge(&mut b, header, data);
        a.handle_datagram(now, addr(2), &bad);
        let events: Vec<_> = std::iter::from_fn(|| a.poll_event()).collect();
        assert!(
            events.contains(&Event::Failed(Error::ProtocolViolation(expected))),
            "{events:?}"
        );
        pump(now, &mut a, &mut b);
        let events: Vec<_> = std::iter::from_fn(|| b.poll_event()).collect();
        let reset = Event::Failed(Error::Reset(ResetCode::PROTOCOL_VIOLATION));
        assert!(events.contains(&reset), "{events:?}");
    }

    #[test]
    fn authenticated_protocol_violations_send_reset() {
        let h = SegmentHeader {
            flags: 0,
            packet_number: 0,
            seq: 0,
            ack: 0,
            window: 1000,
        };
        violation_resets_both(
            SegmentHeader { ack: 5, ..h },
            &[],
            Violation::AckOfUnsentData,
        );
        let now = Instant::now();
        // FIN at 3, then data beyond it.
        let (mut a, mut b) = pair(now);
        let fin = forge(
            &mut b,
            SegmentHeader {
                flags: FLAG_FIN,
                seq: 0,
                ..h
            },
            b"abc",
        );
        a.handle_datagram(now, addr(2), &fin);
        let beyond = forge(&mut b, SegmentHeader { seq: 3, ..h }, b"d");
        a.handle_datagram(now, addr(2), &beyond);
        assert_eq!(
            std::iter::from_fn(|| a.poll_event()).last(),
            Some(Event::Failed(Error::ProtocolViolation(
                Violation::DataAfterFin
            )))
        );
    }

    #[test]
    fn data_beyond_the_window_is_dropped_and_counted() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let h = SegmentHeader {
            flags: 0,
            packet_number: 0,
            seq: 300_000,
            ack: 0,
            window: 0,
        };
        let far = forge(&mut b, h, b"x");
        a.handle_datagram(now, addr(2), &far);
        assert_eq!(a.stats().dropped.out_of_window, 1);
        assert!(a.is_established());
        assert_eq!(a.readable_len(), 0);
    }

    #[test]
    fn an_ack_for_two_or_more_packets_goes_out_twice() {
        let now = Instant::now();
        let (mut a, mut b) = pair(now);
        let mut buf = Vec::new();
        let mut acks = |a: &mut Connection, b: &mut Connection, len: usize| {
            assert_eq!(a.write(&vec![7; len]), len);
            let mut datagrams = Vec::new();
            while a.poll_transmit(now, &mut buf).is_some() {
                datagrams.push(buf.clone());
            }
            for datagram in &datagrams {
                b.handle_datagram(now, addr(1), datagram);
            }
            let mut count = 0;
            while b.poll_transmit(now, &mut buf).is_some() {
                a.handle_datagram(now, addr(2), &buf);
                count += 1;
            }
            (datagrams.len(), count)
        };
        let mss = a.mss;
        assert_eq!(acks(&mut a, &mut b, 100), (1, 1));
        assert_eq!(acks(&mut a, &mut b, 3 * mss), (3, 2));
        assert_eq!(a.stats().bytes_acked, 100 + 3 * mss as u64);
    }

    /// The books of [`Flight`] agree with a count over the segments.
    fn check_flight(conn: &Connection) {
        let in_flight: Vec<_> = conn
            .segments
            .iter()
            .filter(|(_, s)| s.state == SegmentState::InFlight)
            .collect();
        let bytes: u64 = in_flight.iter().map(|(_, s)| s.data.len() as u64).sum();
        assert_eq!(conn.flight.bytes, bytes);
        assert_eq!(conn.flight.segments, in_flight.len());
        let lost: BTreeSet<u64> = conn
            .segments
            .iter()
            .filter(|(_, s)| s.state == SegmentState::Lost)
            .map(|(&o, _)| o)
            .collect();
        assert_eq!(conn.flight.lost, lost);
        // Every segment in flight has its current transmission in the order index, which
        // is sorted by send order.
        for (&offset, seg) in &in_flight {
            assert!(conn.flight.by_order.contains(&(seg.order, offset)));
        }
        let orders: Vec<u64> = conn.flight.by_order.iter().map(|&(o, _)| o).collect();
        assert!(orders.windows(2).all(|w| w[0] < w[1]), "{orders:?}");
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 24,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0xf1_16e7),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]
        /// Under loss, reordering and duplication, the flight books stay in step with the
        /// segments after every step.
        #[test]
        fn flight_books_match_the_segments(seed in any::<u64>(), loss in 0.0f64..0.3) {
            let link = crate::sim::LinkConfig {
                loss,
                delay: Duration::from_millis(2),
                jitter: Duration::from_millis(2),
                duplicate: 0.02,
                ..Default::default()
            };
            let mut sim = crate::sim::Sim::new(seed, link);
            sim.client.send(vec![3; 200_000], true);
            sim.server.send(vec![4; 30_000], true);
            for _ in 0..200_000 {
                check_flight(&sim.client.conn);
                check_flight(&sim.server.conn);
                if sim.client.is_closed() && sim.server.is_closed() || !sim.step() {
                    break;
                }
            }
            // (At high loss every HELLO can be lost: the handshake then times out.)
            let handshake_failed = matches!(
                sim.client.failure(),
                Some(crate::Error::HandshakeTimeout { .. })
            );
            prop_assert!(sim.server.received.len() == 200_000 || handshake_failed);
        }
    }

    proptest! {
        /// Reassembly of overlapping, reordered, duplicated pieces matches a naive model.
        #[test]
        fn reassembly_matches_a_naive_model(
            pieces in proptest::collection::vec((0usize..3000, 1usize..400), 1..60)
        ) {
            let now = Instant::now();
            let (mut a, mut b) = pair(now);
            let stream: Vec<u8> = (0..4000u32).map(|i| (i * 7 + i / 251) as u8).collect();
            let mut model = vec![false; stream.len()];
            for (start, len) in pieces {
                let end = (start + len).min(stream.len());
                let h = SegmentHeader {
                    flags: 0, packet_number: 0, seq: start as u64, ack: 0, window: 0,
                };
                let datagram = forge(&mut b, h, &stream[start..end]);
                a.handle_datagram(now, addr(2), &datagram);
                model[start..end].iter_mut().for_each(|m| *m = true);
            }
            let expected = model.iter().position(|m| !m).unwrap_or(model.len());
            let mut got = Vec::new();
            while let Some(chunk) = a.read(usize::MAX) {
                got.extend_from_slice(&chunk);
            }
            prop_assert_eq!(&got[..], &stream[..expected]);
            // Out-of-order storage never overlaps and stays inside the window.
            let mut last_end = a.rcv_nxt;
            for (&start, data) in &a.out_of_order {
                prop_assert!(start >= last_end);
                last_end = start + data.len() as u64;
            }
            prop_assert!(last_end <= a.right_edge());
        }
    }
}
