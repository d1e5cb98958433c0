//! [`VudpTransport`]: the VUT core bridged to the reactor on a non-blocking UDP socket, as a
//! producer/consumer pair that any chain (TLS, an application) can run over.

use std::fmt;
use std::io::{self, Read};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::Mutex;
use weir_io::{
    ByteConsumer, ByteIoPair, ByteProducer, Chunks, ControlReply, Credit, Ending, IoControl, Link,
    LinkSlot, Peer,
};
use weir_reactor::Token;
use weir_reactor::{ByteHandle, CloseReason, Direction, Interest, Reactor, ReactorError, Timer};

use crate::batch::{Inbox, IoStats, Outbox};
use crate::{Config, ConfigError, Connection, Error, Event, Stats};

/// Datagrams read per readiness call (at least one read call) before the acks they caused
/// go out and the reactor serves others (level-triggered: the next loop turn calls again).
const RECV_BUDGET: usize = 64;
/// Most bytes handed downstream in one delivery.
const DELIVER_CHUNK: usize = 64 * 1024;
/// Upstream credit grows in steps of at least this much (or when it ran out), so that every
/// incoming ack does not queue a credit call.
const GRANT_STEP: u64 = 16 * 1024;
/// Socket buffer sizes asked for (the kernel caps them at `net.core.{r,w}mem_max`).
const SOCKET_BUFFER: usize = 4 * 1024 * 1024;
/// Size of the datagram buffer: the largest UDP payload.
const MAX_UDP_PAYLOAD: usize = 65_535;

/// The VUT core ([`Connection`]) driven by the reactor on a non-blocking UDP socket and
/// exposed as a consumer (bytes to send) and a producer (bytes received).
///
/// Versile `VUDPTransport`: built from a bound UDP socket, the peer's address and the two
/// secrets. The socket carries this one connection; datagrams from other addresses are
/// dropped by the core.
///
/// ```text
///               ┌─────────────────────── VudpTransport ───────────────────────┐
///  UDP socket ──┤ recvmmsg ─▶ handle_datagram ─▶ core ─▶ read(≤ credit) ─▶ producer ───┼─▶ downstream
///               │ sendmsg ◀── poll_transmit ◀─── core ◀── write ◀──────── consumer ◀──┼── upstream
///               │ one timer ◀── poll_timeout         credit = send_capacity           │
///               └─────────────────────────────────────────────────────────────────────┘
/// ```
///
/// # Batching
///
/// Datagrams of equal size that the core emits in a row go out in one `sendmsg` with UDP
/// segmentation offload (GSO, Linux), up to 64 segments or 64 KiB; reads take several
/// datagrams per call (`recvmmsg`, and GRO runs split at their stride). Both go through
/// `quinn-udp`. Where the kernel has no GSO each datagram is its own send; where it refuses
/// a GSO send at run time (`EIO`/`EINVAL`), batching stays off for the socket and that run
/// goes out one datagram at a time. [`io_stats`](Self::io_stats) counts the calls.
///
/// # Flow control
///
/// - Downstream: the producer hands over `core.read(min(credit left, 64 KiB))` only while its
///   consumer's credit allows. Bytes not taken stay in the core, whose receive window then
///   closes: a slow consumer slows the remote writer, end to end.
/// - Upstream: the consumer grants credit for the core's free send buffer
///   ([`Connection::send_capacity`]), so writes are never cut short.
///
/// # Ends and closes
///
/// - The upstream chain ending [`Ending::Completed`] (or its producer aborting) finishes our
///   stream ([`Connection::finish`]); ending [`Ending::Lost`] aborts the connection.
/// - The peer finishing ends the downstream chain [`Ending::Completed`] after its last byte.
/// - A failure (reset, timeout, abort, a socket error) ends the downstream chain
///   [`Ending::Lost`] and aborts the upstream one; [`error`](Self::error) tells why.
/// - A downstream consumer that aborts makes the transport discard what arrives (the peer
///   can still finish).
/// - Once the core is drained ([`Connection::is_drained`], after its close linger) the socket
///   is deregistered and closed and the close callback runs, once.
///
/// # Control messages
///
/// On [`Event::Connected`] it sends [`IoControl::Connected`] with [`Peer::Udp`] downstream,
/// also to a consumer that attaches later and in answer to [`IoControl::ReqProducerState`].
///
/// # Threading
///
/// `VudpTransport` is `Send + Sync + Clone`; its methods work from any thread. All I/O and
/// every call into the core happen on the reactor thread.
///
/// # Examples
///
/// ```no_run
/// use std::net::UdpSocket;
/// use weir_reactor::Reactor;
/// use weir_vudp::{Config, VudpTransport};
///
/// let reactor = Reactor::new()?;
/// let _thread = reactor.start()?;
/// let socket = UdpSocket::bind("127.0.0.1:4000")?;
/// let peer = "127.0.0.1:4001".parse()?;
/// let transport =
///     VudpTransport::new(&reactor, socket, peer, b"our secret", b"their secret", Config::default())?;
/// transport.set_close_callback(|info| println!("closed: {info:?}"));
/// let _pair = transport.io_pair(); // attach an application or TLS here
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "VUDPTransport")]
#[derive(Clone)]
pub struct VudpTransport {
    /// Shared with the facades, the reactor handle and the timer.
    inner: Arc<Inner>,
}

/// How a [`VudpTransport`] ended, given to its close callback.
#[derive(Clone, Debug)]
pub struct CloseInfo {
    /// Why it failed; `None` after a clean close (both streams ended, both FINs acknowledged).
    pub error: Option<TransportError>,
    /// The core's counters at the end.
    pub stats: Stats,
}

impl CloseInfo {
    /// [`Ending::Completed`] after a clean close, else [`Ending::Lost`].
    pub fn ending(&self) -> Ending {
        if self.error.is_none() {
            Ending::Completed
        } else {
            Ending::Lost
        }
    }
}

/// Why a running [`VudpTransport`] failed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum TransportError {
    /// The connection failed: reset, timeout, protocol violation, or a local abort.
    Connection(Error),
    /// The socket reported an error.
    Io(Arc<io::Error>),
    /// The reactor stopped while the transport was open.
    ReactorStopped,
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransportError::Connection(err) => write!(f, "connection failed: {err}"),
            TransportError::Io(_) => f.write_str("udp socket failed"),
            TransportError::ReactorStopped => f.write_str("reactor stopped"),
        }
    }
}

impl std::error::Error for TransportError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TransportError::Io(err) => Some(&**err),
            _ => None,
        }
    }
}

/// Why [`VudpTransport::new`] failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum OpenError {
    /// The configuration is inconsistent.
    Config(ConfigError),
    /// Setting up the socket (or reading the OS random source) failed.
    Io(io::Error),
    /// The reactor refused the socket (e.g. it has stopped).
    Reactor(ReactorError),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Config(err) => write!(f, "{err}"),
            OpenError::Io(_) => f.write_str("udp socket setup failed"),
            OpenError::Reactor(_) => f.write_str("reactor refused the socket"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Config(_) => None,
            OpenError::Io(err) => Some(err),
            OpenError::Reactor(err) => Some(err),
        }
    }
}

/// Shared state of a transport.
struct Inner {
    /// The reactor all I/O runs on.
    reactor: Reactor,
    /// This transport, for the handle, the timer and queued calls.
    me: Weak<Inner>,
    /// The peer's address.
    peer: SocketAddr,
    /// Link to the consumer of what arrives.
    producer_slot: LinkSlot,
    /// Link to the producer of what we send.
    consumer_slot: LinkSlot,
    /// Everything else. Never held while calling into a link.
    state: Mutex<State>,
}

/// Mutable part of a transport.
struct State {
    /// The protocol core.
    core: Connection,
    /// The socket; `None` once closed.
    socket: Option<UdpSocket>,
    /// The socket's registration.
    token: Option<Token>,
    /// Interest registered now.
    interest: Interest,
    /// Segmentation offload and batched receive state of the socket (`quinn-udp`).
    udp: quinn_udp::UdpSocketState,
    /// Datagram buffer for `poll_transmit`.
    tx: Vec<u8>,
    /// The datagram in `tx` did not fit in the outbox, which would block: its destination.
    held: Option<SocketAddr>,
    /// Datagrams on their way to the socket, batched.
    outbox: Outbox,
    /// Receive buffers.
    inbox: Inbox,
    /// The one timer, with the instant it was armed for.
    timer: Option<(Instant, Timer)>,
    /// A pump runs (further pumps only ask it to go round again).
    pumping: bool,
    /// The running pump should go round again.
    again: bool,
    /// The handshake completed.
    connected: bool,
    /// The downstream consumer aborted: discard what arrives.
    discarding: bool,
    /// How the downstream chain ended, once it has.
    downstream_ended: Option<Ending>,
    /// Why the transport failed.
    error: Option<TransportError>,
    /// The socket is closed and the close callback has run (or is running).
    closed: bool,
    /// Called once when closed.
    on_close: Option<Box<dyn FnOnce(CloseInfo) + Send>>,
    /// Simulated loss of outgoing datagrams (benchmarks and tests only).
    send_loss: Option<SendLoss>,
}

/// Drops outgoing datagrams at random, from a seeded generator (xorshift64).
#[derive(Clone, Copy, Debug)]
struct SendLoss {
    /// A datagram is dropped when the next draw is below this.
    threshold: u64,
    /// Generator state, never zero.
    rng: u64,
}

impl SendLoss {
    /// Whether to drop the next datagram.
    fn drop_next(&mut self) -> bool {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng < self.threshold
    }
}

/// The transport's producer side (bytes received from the peer).
struct TransportProducer(Arc<Inner>);
/// The transport's consumer side (bytes to send to the peer).
struct TransportConsumer(Arc<Inner>);
/// Reactor handle of the socket.
///
/// It holds the transport strongly: while the socket is registered the transport lives (it
/// may still owe the peer retransmissions and the close handshake after every chain has let
/// go of it). `close` deregisters, which breaks the cycle.
struct SocketHandle(Arc<Inner>);

impl VudpTransport {
    /// A transport over `socket` (bound, connected or not) to `peer`, with a fresh seed from
    /// the OS random source (`/dev/urandom`). The socket is made non-blocking and registered
    /// with `reactor` at once; the first HELLO goes out on the reactor thread.
    ///
    /// # Errors
    ///
    /// [`OpenError`]: a bad `config`, a socket or random-source error, or the reactor refused
    /// the socket.
    #[doc(alias = "VUDPTransport")]
    pub fn new(
        reactor: &Reactor,
        socket: UdpSocket,
        peer: SocketAddr,
        local_secret: &[u8],
        peer_secret: &[u8],
        config: Config,
    ) -> Result<VudpTransport, OpenError> {
        let mut seed = [0; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut seed))
            .map_err(OpenError::Io)?;
        Self::with_seed(
            reactor,
            socket,
            peer,
            local_secret,
            peer_secret,
            config,
            seed,
        )
    }

    /// As [`new`](Self::new), with the core's seed given (it must be fresh random bytes for
    /// every connection; a fixed seed is for reproducible tests only).
    ///
    /// # Errors
    ///
    /// As for [`new`](Self::new).
    pub fn with_seed(
        reactor: &Reactor,
        socket: UdpSocket,
        peer: SocketAddr,
        local_secret: &[u8],
        peer_secret: &[u8],
        config: Config,
        seed: [u8; 32],
    ) -> Result<VudpTransport, OpenError> {
        let core = Connection::new(
            config,
            local_secret,
            peer_secret,
            peer,
            seed,
            Instant::now(),
        )
        .map_err(OpenError::Config)?;
        socket.set_nonblocking(true).map_err(OpenError::Io)?;
        let udp = quinn_udp::UdpSocketState::new((&socket).into()).map_err(OpenError::Io)?;
        let sock = socket2::SockRef::from(&socket);
        // Larger buffers absorb bursts; the kernel caps them, and a refusal is harmless.
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
        let inner = Arc::new_cyclic(|me| Inner {
            reactor: reactor.clone(),
            me: me.clone(),
            peer,
            producer_slot: LinkSlot::new(),
            consumer_slot: LinkSlot::new(),
            state: Mutex::new(State {
                core,
                socket: None,
                token: None,
                interest: Interest::READ,
                udp,
                tx: Vec::with_capacity(MAX_UDP_PAYLOAD),
                held: None,
                outbox: Outbox::new(),
                inbox: Inbox::new(),
                timer: None,
                pumping: false,
                again: false,
                connected: false,
                discarding: false,
                downstream_ended: None,
                error: None,
                closed: false,
                on_close: None,
                send_loss: None,
            }),
        });
        let token = reactor
            .register(
                socket.as_fd(),
                Interest::READ,
                Arc::new(SocketHandle(inner.clone())),
            )
            .map_err(OpenError::Reactor)?;
        {
            let mut state = inner.state.lock();
            state.socket = Some(socket);
            state.token = Some(token);
        }
        let start = inner.clone();
        reactor.execute(move || start.pump());
        Ok(VudpTransport { inner })
    }

    /// The transport's consumer (bytes to send) and producer (bytes received), to attach
    /// chains.
    pub fn io_pair(&self) -> ByteIoPair {
        ByteIoPair::new(
            Arc::new(TransportConsumer(self.inner.clone())),
            Arc::new(TransportProducer(self.inner.clone())),
        )
    }

    /// Calls `f` once, on the reactor thread, when the transport has closed (the core is
    /// drained and the socket closed). If that has happened already, `f` runs at once (on
    /// the reactor thread).
    #[doc(alias = "close_cback")]
    pub fn set_close_callback(&self, f: impl FnOnce(CloseInfo) + Send + 'static) {
        let mut state = self.inner.state.lock();
        if state.closed {
            let info = state.close_info();
            drop(state);
            self.inner.reactor.execute(move || f(info));
        } else {
            state.on_close = Some(Box::new(f));
        }
    }

    /// Ends our outbound stream after what was written (any thread), as an upstream end
    /// would.
    #[doc(alias = "end_consume")]
    pub fn finish(&self) {
        self.inner.with_core(|core| core.finish());
    }

    /// Tears the connection down at once (any thread): RESET to the peer, the downstream
    /// chain ends [`Ending::Lost`], [`error`](Self::error) becomes [`Error::Aborted`].
    #[doc(alias = "close_io")]
    pub fn abort(&self) {
        self.inner.with_core(|core| core.abort());
    }

    /// The peer's address.
    pub fn peer(&self) -> SocketAddr {
        self.inner.peer
    }

    /// Whether the handshake completed and the transport has not closed.
    pub fn is_connected(&self) -> bool {
        let state = self.inner.state.lock();
        state.connected && !state.closed
    }

    /// Whether the transport has closed (socket released, close callback run or running).
    pub fn is_closed(&self) -> bool {
        self.inner.state.lock().closed
    }

    /// Why the transport failed, if it did.
    pub fn error(&self) -> Option<TransportError> {
        self.inner.state.lock().error.clone()
    }

    /// The core's counters.
    pub fn stats(&self) -> Stats {
        self.inner.state.lock().core.stats()
    }

    /// Counters of the socket calls: sends and the datagrams they carried (more than one per
    /// call with GSO), refused GSO sends, receive calls.
    pub fn io_stats(&self) -> IoStats {
        let state = self.inner.state.lock();
        IoStats {
            recv_calls: state.inbox.recv_calls,
            datagrams_received: state.inbox.datagrams,
            ..state.outbox.stats(&state.udp)
        }
    }

    /// Drops each outgoing datagram with `probability` (`0.0..=1.0`), drawn from a generator
    /// seeded with `seed`, as a lossy network would: **for benchmarks and tests only**. A
    /// probability of 0 turns it off.
    pub fn set_danger_send_loss(&self, probability: f64, seed: u64) {
        let probability = probability.clamp(0.0, 1.0);
        self.inner.state.lock().send_loss = (probability > 0.0).then_some(SendLoss {
            // `as` saturates: a probability of 1.0 maps to u64::MAX.
            threshold: (probability * u64::MAX as f64) as u64,
            rng: seed | 1,
        });
    }
}

impl fmt::Debug for VudpTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("VudpTransport")
            .field("peer", &self.inner.peer)
            .field("connected", &state.connected)
            .field("closed", &state.closed)
            .field("error", &state.error)
            .finish()
    }
}

impl State {
    /// What the close callback is told.
    fn close_info(&self) -> CloseInfo {
        CloseInfo {
            error: self.error.clone(),
            stats: self.core.stats(),
        }
    }

    /// Sends what the core has to send, until it has nothing more or the socket would block:
    /// runs of equal-sized datagrams are batched into one send (GSO); simulated loss leaves
    /// datagrams out of the batch, so every segment in it keeps its size.
    fn transmit(&mut self) {
        let State {
            core,
            socket,
            udp,
            tx,
            held,
            outbox,
            send_loss,
            ..
        } = self;
        let Some(socket) = socket.as_ref() else {
            return;
        };
        if outbox.flush(udp, socket).is_err() {
            return;
        }
        if let Some(destination) = held.take() {
            // The outbox was just emptied: it takes any datagram.
            let _ = outbox.push(udp, destination, tx);
        }
        let now = Instant::now();
        loop {
            if outbox.is_full(udp) && outbox.flush(udp, socket).is_err() {
                return;
            }
            let Some(transmit) = core.poll_transmit(now, tx) else {
                break;
            };
            tx.truncate(transmit.size);
            if send_loss.as_mut().is_some_and(SendLoss::drop_next) {
                continue;
            }
            if outbox.push(udp, transmit.destination, tx).is_err() {
                if outbox.flush(udp, socket).is_err() {
                    *held = Some(transmit.destination);
                    return;
                }
                let _ = outbox.push(udp, transmit.destination, tx);
            }
        }
        let _ = outbox.flush(udp, socket);
    }
}

impl Inner {
    /// Runs `f` on the core on the reactor thread, then pumps.
    fn with_core(&self, f: impl FnOnce(&mut Connection) + Send + 'static) {
        let Some(me) = self.me.upgrade() else { return };
        self.reactor.execute(move || {
            f(&mut me.state.lock().core);
            me.pump();
        });
    }

    /// Drains every output of the core and acts on it: datagrams to the socket, the timer,
    /// events, bytes downstream, credit upstream, the final close. Re-entrant calls (from a
    /// link called by this pump) only ask the running pump to go round again.
    fn pump(&self) {
        {
            let mut state = self.state.lock();
            if state.pumping {
                state.again = true;
                return;
            }
            state.pumping = true;
        }
        loop {
            let events = {
                let mut state = self.state.lock();
                state.again = false;
                state.transmit();
                self.update_interest(&mut state);
                self.rearm(&mut state);
                std::iter::from_fn(|| state.core.poll_event()).collect::<Vec<_>>()
            };
            for event in events {
                self.on_event(event);
            }
            self.deliver();
            self.grant_upstream();
            self.close_if_drained();
            let mut state = self.state.lock();
            if !state.again {
                state.pumping = false;
                break;
            }
        }
    }

    /// Re-arms the one timer from `poll_timeout`. A timer armed for an earlier instant is
    /// kept: it fires early, which the core takes as a no-op, and the pump re-arms then.
    fn rearm(&self, state: &mut State) {
        match (state.core.poll_timeout(), &state.timer) {
            (None, _) => {
                if let Some((_, timer)) = state.timer.take() {
                    timer.cancel();
                }
            }
            (Some(want), Some((armed, timer))) if *armed <= want && timer.is_pending() => {}
            (Some(want), _) => {
                if let Some((_, timer)) = state.timer.take() {
                    timer.cancel();
                }
                let me = self.me.clone();
                let delay = want.saturating_duration_since(Instant::now());
                let timer = self.reactor.schedule(delay, move || {
                    if let Some(inner) = me.upgrade() {
                        inner.on_timer();
                    }
                });
                state.timer = Some((want, timer));
            }
        }
    }

    /// The timer fired.
    fn on_timer(&self) {
        {
            let mut state = self.state.lock();
            state.timer = None;
            state.core.handle_timeout(Instant::now());
        }
        self.pump();
    }

    /// Registers write interest while datagrams are held back, read interest otherwise.
    fn update_interest(&self, state: &mut State) {
        let want = Interest::READ.with_write(state.outbox.is_blocked());
        if want == state.interest {
            return;
        }
        state.interest = want;
        if let Some(token) = state.token {
            if let Err(err) = self.reactor.set_interest(token, want) {
                tracing::debug!(%err, "set_interest failed");
            }
        }
    }

    /// Reads every datagram waiting (up to a budget) into the core, then pumps.
    fn on_readable(&self) {
        {
            let mut guard = self.state.lock();
            let State {
                core,
                socket,
                udp,
                inbox,
                ..
            } = &mut *guard;
            let Some(socket) = socket.as_ref() else {
                return;
            };
            let now = Instant::now();
            let mut read = 0;
            while read < RECV_BUDGET {
                match inbox.recv(udp, socket, |from, datagram| {
                    core.handle_datagram(now, from, datagram)
                }) {
                    Ok(n) => read += n.max(1),
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    // An ICMP error for an earlier datagram (e.g. the peer's port is not
                    // open yet); the core treats it as loss.
                    Err(err) => {
                        tracing::debug!(%err, "udp receive error ignored");
                        read += 1;
                    }
                }
            }
        }
        self.pump();
    }

    /// The socket may take the held datagrams now.
    fn on_writable(&self) {
        self.pump();
    }

    /// Acts on one event of the core.
    fn on_event(&self, event: Event) {
        match event {
            Event::Connected => {
                self.state.lock().connected = true;
                self.announce();
            }
            Event::Failed(err) => {
                self.state
                    .lock()
                    .error
                    .get_or_insert(TransportError::Connection(err));
                self.end_downstream(Ending::Lost);
                self.abort_upstream();
            }
            // Delivery, credit and the close are checked on every pump anyway.
            _ => {}
        }
    }

    /// Sends `Connected` downstream if the handshake has completed.
    fn announce(&self) {
        if !self.state.lock().connected {
            return;
        }
        if let Some(link) = self.producer_slot.link() {
            link.control_downstream(&IoControl::Connected(Peer::Udp(self.peer)));
        }
    }

    /// Hands readable bytes downstream as far as the credit allows; ends the downstream
    /// chain once the peer has finished and every byte went out.
    fn deliver(&self) {
        let link = self.producer_slot.link();
        loop {
            let remaining = link.as_ref().map_or(0, |link| link.remaining());
            let chunk = {
                let mut state = self.state.lock();
                if state.downstream_ended.is_some() && !state.discarding {
                    return;
                }
                if state.core.readable_len() == 0 {
                    let done = state.core.is_peer_finished() && !state.discarding;
                    drop(state);
                    if done {
                        self.end_downstream(Ending::Completed);
                    }
                    return;
                }
                if state.discarding {
                    while state.core.read(usize::MAX).is_some() {}
                    state.again = true;
                    return;
                }
                if remaining == 0 {
                    return;
                }
                let max = usize::try_from(remaining)
                    .unwrap_or(usize::MAX)
                    .min(DELIVER_CHUNK);
                // Reading opens the receive window: go round again to send the update.
                state.again = true;
                match state.core.read(max) {
                    Some(chunk) => chunk,
                    None => return,
                }
            };
            let Some(link) = link.as_ref() else { return };
            if link.deliver(chunk).is_err() {
                return;
            }
        }
    }

    /// Raises the upstream credit to the core's free send buffer, in steps.
    fn grant_upstream(&self) {
        let Some(link) = self.consumer_slot.link() else {
            return;
        };
        let capacity = self.state.lock().core.send_capacity() as u64;
        let position = link.position();
        let old = link.credit().limit().unwrap_or(u64::MAX);
        let new = position.saturating_add(capacity);
        if new > old && (new - old >= GRANT_STEP || old <= position) {
            link.grant(Credit::upto(new));
        }
    }

    /// Credit for the upstream producer now.
    fn write_credit(&self, link: &Link) -> Credit {
        let capacity = self.state.lock().core.send_capacity() as u64;
        link.window(capacity)
    }

    /// Ends the downstream chain, once.
    fn end_downstream(&self, ending: Ending) {
        {
            let mut state = self.state.lock();
            if state.downstream_ended.is_some() {
                return;
            }
            state.downstream_ended = Some(ending);
        }
        // With no consumer attached yet, the slot stays open and a consumer that attaches
        // later gets the end at once (see `TransportProducer::on_attached`): an empty stream
        // can finish before the application has attached its reader.
        if let Some(link) = self.producer_slot.link() {
            self.producer_slot.mark_ended();
            link.end(ending);
        }
    }

    /// Aborts the upstream chain: nothing more can be sent.
    fn abort_upstream(&self) {
        self.consumer_slot.mark_ended();
        if let Some(link) = self.consumer_slot.link() {
            link.abort();
        }
    }

    /// Once the core is drained: releases the socket and runs the close callback.
    fn close_if_drained(&self) {
        if !self.state.lock().core.is_drained() {
            return;
        }
        self.close();
    }

    /// Releases the socket and the timer and runs the close callback, once.
    fn close(&self) {
        let (token, socket, callback, info) = {
            let mut state = self.state.lock();
            if state.closed {
                return;
            }
            state.closed = true;
            if let Some((_, timer)) = state.timer.take() {
                timer.cancel();
            }
            (
                state.token.take(),
                state.socket.take(),
                state.on_close.take(),
                state.close_info(),
            )
        };
        if let Some(token) = token {
            self.reactor.deregister(token);
        }
        // Closed after it left the poller.
        drop(socket);
        if info.error.is_some() {
            self.end_downstream(Ending::Lost);
        }
        self.abort_upstream();
        if let Some(callback) = callback {
            callback(info);
        }
    }

    /// The transport cannot go on (socket error, reactor stopped): fail it at once.
    fn fail_now(&self, error: TransportError) {
        {
            let mut state = self.state.lock();
            state.error.get_or_insert(error);
            // The token is gone already (the reactor removed it).
            state.token = None;
            state.core.abort();
            while state.core.poll_event().is_some() {}
        }
        self.end_downstream(Ending::Lost);
        self.close();
    }
}

impl ByteHandle for SocketHandle {
    fn on_readable(&self) {
        self.0.on_readable();
    }

    fn on_writable(&self) {
        self.0.on_writable();
    }

    fn on_close(&self, direction: Direction, reason: CloseReason) {
        let inner = &self.0;
        if direction != Direction::Both {
            // A hang-up means nothing for an unconnected datagram socket.
            return;
        }
        let error = match reason {
            CloseReason::Stopped => TransportError::ReactorStopped,
            _ => {
                let taken = inner
                    .state
                    .lock()
                    .socket
                    .as_ref()
                    .and_then(|s| s.take_error().ok().flatten());
                let err = taken.unwrap_or_else(|| io::Error::other(reason.to_string()));
                TransportError::Io(Arc::new(err))
            }
        };
        inner.fail_now(error);
    }
}

impl ByteProducer for TransportProducer {
    fn reactor(&self) -> &Reactor {
        &self.0.reactor
    }

    fn producer_slot(&self) -> &LinkSlot {
        &self.0.producer_slot
    }

    fn on_credit(&self, _link: &Arc<Link>) {
        self.0.pump();
    }

    fn on_attached(&self, link: &Arc<Link>) {
        self.0.announce();
        let ended = self.0.state.lock().downstream_ended;
        if let Some(ending) = ended {
            self.0.producer_slot.mark_ended();
            link.end(ending);
        }
    }

    fn on_abort(&self) {
        // The consumer of what arrives gave up: discard from now on, so the peer can finish.
        self.0.state.lock().discarding = true;
        self.0.pump();
    }

    fn on_control(&self, message: &IoControl) -> ControlReply {
        match message {
            IoControl::ReqProducerState => {
                self.0.announce();
                ControlReply::Handled
            }
            _ => ControlReply::Unsupported,
        }
    }
}

impl TransportConsumer {
    /// Hands `data` to the core and pumps once (a run makes fuller GSO batches); returns the
    /// credit. The credit never exceeds the send capacity, so the core takes all of it
    /// (unless the connection ended, when the bytes have nowhere to go).
    fn write(&self, link: &Link, data: impl IntoIterator<Item = Bytes>) -> Credit {
        {
            let mut state = self.0.state.lock();
            for chunk in data {
                state.core.write_bytes(chunk);
            }
        }
        self.0.pump();
        self.0.write_credit(link)
    }
}

impl ByteConsumer for TransportConsumer {
    fn reactor(&self) -> &Reactor {
        &self.0.reactor
    }

    fn consumer_slot(&self) -> &LinkSlot {
        &self.0.consumer_slot
    }

    fn on_attached(&self, link: &Arc<Link>) -> Credit {
        self.0.write_credit(link)
    }

    fn consume(&self, link: &Arc<Link>, data: Bytes) -> Credit {
        self.write(link, [data])
    }

    fn takes_runs(&self) -> bool {
        true
    }

    fn consume_chunks(&self, link: &Arc<Link>, chunks: &mut Chunks) -> Credit {
        self.write(link, chunks)
    }

    fn on_end(&self, _link: &Arc<Link>, ending: Ending) {
        match ending {
            Ending::Completed => self.0.state.lock().core.finish(),
            Ending::Lost => self.0.state.lock().core.abort(),
        }
        self.0.pump();
    }

    fn on_abort(&self) {
        // The producer of what we send gave up: finish with what it wrote.
        self.0.state.lock().core.finish();
        self.0.pump();
    }
}
