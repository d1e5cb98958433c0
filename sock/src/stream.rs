//! [`StreamAgent`]: a non-blocking byte stream bridged to chains, with credit both ways.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSlice};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use weir_io::{
    spare, ByteConsumer, ByteIoPair, ByteProducer, Chunks, ControlReply, Credit, Ending,
    HalfClosePolicy, IoControl, Link, LinkSlot, Peer,
};
use weir_reactor::{ByteHandle, CloseReason, Direction, Interest, Reactor, Token};

/// Bytes read per readiness call before the agent lets the reactor serve others.
const READ_BUDGET: usize = 256 * 1024;
/// Reads up to this long are copied out of the spare read buffer, which stays for the next
/// read; longer ones take the buffer downstream as it is, without a copy.
const COPY_MAX: usize = 1024;
/// The smallest read capacity the agent's guess of the next read's length goes down to.
const MIN_READ: usize = 2 * 1024;
/// The read capacity of a new stream, before any read has taught the agent better.
const INITIAL_READ: usize = 16 * 1024;

/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;

/// A non-blocking byte stream that a [`StreamAgent`] reads and writes: a socket, or the two
/// ends of a pipe pair.
///
/// Every method must return `WouldBlock` rather than block.
pub trait StreamIo: Send + Sync + 'static {
    /// Reads once, appending what it read to `buf`: at most its spare capacity
    /// (`capacity() - len()`, which the agent never leaves at zero), never reallocating.
    /// Returns the number of bytes read; `Ok(0)` is end of file.
    ///
    /// The agent hands the vector downstream as it is when the read was long, so the bytes
    /// are read straight into the buffer that travels on. `rustix` fills the spare capacity
    /// without initialising it first, in safe code:
    /// `rustix::io::read(fd, rustix::buffer::spare_capacity(buf))`, or `rustix::net::recv`
    /// for a socket.
    fn read(&self, buf: &mut Vec<u8>) -> io::Result<usize>;

    /// Writes from `bufs`, in order; never raises `SIGPIPE`.
    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;

    /// The descriptors to watch.
    fn descriptors(&self) -> Descriptors<'_>;

    /// Stops one direction (`Input` or `Output`) for good: a socket shuts it down, a pipe
    /// closes that end. The agent has deregistered that direction's descriptor before.
    fn shutdown(&self, direction: Direction) -> io::Result<()>;

    /// A pending error on the descriptor (for a socket, `SO_ERROR`).
    fn take_error(&self) -> io::Result<Option<io::Error>> {
        Ok(None)
    }

    /// Whether bytes wait to be read, without reading them (for a socket, a one-byte
    /// `MSG_PEEK`). Asked once the descriptor has reported an error: a TCP peer's last bytes
    /// before its reset are still readable, and the agent delivers them, as its consumer's
    /// credit allows, before it ends the input `Lost`. The default, `false`, ends it at once.
    fn has_unread(&self) -> bool {
        false
    }

    /// The far end, as far as it is known.
    fn peer(&self) -> Peer;
}

/// Which descriptors a [`StreamIo`] reads and writes.
#[derive(Clone, Copy, Debug)]
pub enum Descriptors<'a> {
    /// One descriptor for both directions (a socket).
    Shared(BorrowedFd<'a>),
    /// One descriptor per direction (a pipe pair); either may be missing.
    Split {
        /// Read from this one.
        input: Option<BorrowedFd<'a>>,
        /// Write to this one.
        output: Option<BorrowedFd<'a>>,
    },
}

/// How a [`StreamAgent`] buffers and closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AgentConfig {
    /// Most bytes read by one read call (Versile `max_read`). Default 256 KiB. The agent
    /// sizes each read by the length reads have been coming in at, from 16 KiB for a new
    /// stream up to this, so a stream of short messages never allocates this much; a busy
    /// stream makes a sixteenth of the system calls it would at 16 KiB. Zero counts as one.
    pub max_read: usize,
    /// Size of the write buffer: the credit granted to the producer that feeds the stream is
    /// what this buffer can still take (Versile `wbuf_len`). Default 256 KiB: an echo or a
    /// proxy, whose reads are limited by the write buffer behind them, then moves data in
    /// large reads and writes. It bounds the memory of a connection whose peer reads slowly
    /// (an idle connection holds none); lower it where many such connections must fit. Zero
    /// counts as one.
    pub write_buffer: usize,
    /// Which directions may close on their own. Default [`HalfClosePolicy::HALF_CLOSE`].
    pub half_close: HalfClosePolicy,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            max_read: 256 * 1024,
            write_buffer: 256 * 1024,
            half_close: HalfClosePolicy::HALF_CLOSE,
        }
    }
}

impl AgentConfig {
    /// This configuration with `max_read`.
    #[must_use]
    pub fn with_max_read(mut self, max_read: usize) -> Self {
        self.max_read = max_read.max(1);
        self
    }

    /// This configuration with a write buffer of `write_buffer` bytes.
    #[must_use]
    pub fn with_write_buffer(mut self, write_buffer: usize) -> Self {
        self.write_buffer = write_buffer.max(1);
        self
    }

    /// This configuration with a half-close policy.
    #[must_use]
    pub fn with_half_close(mut self, half_close: HalfClosePolicy) -> Self {
        self.half_close = half_close;
        self
    }
}

/// How a [`StreamAgent`] ended, given to its close callback.
#[derive(Clone, Debug)]
pub struct CloseInfo {
    /// How the input direction ended.
    pub input: Ending,
    /// How the output direction ended.
    pub output: Ending,
    /// The first I/O error seen, if any.
    pub error: Option<Arc<io::Error>>,
}

/// The bridge between a non-blocking stream and two chains: what it reads goes down the
/// chain attached to its producer, what its consumer receives it writes.
///
/// Versile `VClientSocketAgent` (and `VPipeAgent`, which is the same agent over two pipe
/// ends).
///
/// ```text
///                 ┌──────────── StreamAgent ────────────┐
///  socket / pipe ─┤ read ≤ credit ──▶ producer ─────────┼──▶ downstream consumer
///                 │ write ◀── buffer ◀── consumer ◀─────┼─── upstream producer
///                 └─────── credit = free buffer space ──┘
/// ```
///
/// # Flow control
///
/// - It reads only while its downstream consumer has credit left, at most that much, so a
///   slow consumer leaves data in the kernel and the remote sender is slowed by TCP (or the
///   pipe) itself: memory stays bounded.
/// - It grants its upstream producer credit for the free space of its write buffer
///   ([`AgentConfig::write_buffer`]), so the producer never outruns the socket.
///
/// # Ends and closes
///
/// - End of file from the peer ends the downstream chain [`Ending::Completed`]; a read error
///   ends it [`Ending::Lost`].
/// - A reset (any error the descriptor reports) closes output at once, aborting the upstream
///   chain; bytes the peer sent before it still go downstream, as the consumer's credit
///   allows, before the downstream chain ends [`Ending::Lost`] with the error recorded.
/// - When the upstream chain ends, the agent writes what it holds, then shuts down writing
///   (with half-close allowed) while reading goes on, or closes the whole stream.
/// - When the downstream consumer aborts, input is shut down; when the upstream producer
///   aborts, output is.
/// - Once both directions are closed the descriptors are deregistered and closed, and the
///   close callback runs, exactly once.
///
/// # Control messages
///
/// When connected it sends [`IoControl::Connected`] downstream, also to a consumer that
/// attaches later and in answer to [`IoControl::ReqProducerState`].
///
/// # Threading
///
/// `StreamAgent` is `Send + Sync + Clone`; its methods work from any thread. All I/O happens
/// on the reactor thread.
#[doc(alias = "VClientSocketAgent")]
#[doc(alias = "VClientSocket")]
#[doc(alias = "VPipeAgent")]
#[derive(Clone)]
pub struct StreamAgent {
    /// Shared with the facades and the reactor handles.
    pub(crate) inner: Arc<AgentInner>,
}

/// The agent's shared state.
pub(crate) struct AgentInner {
    /// The reactor all I/O runs on.
    pub(crate) reactor: Reactor,
    /// This agent, for calls it queues and handles it registers.
    me: Weak<AgentInner>,
    /// Buffer sizes and policy.
    config: AgentConfig,
    /// Capacity for the next read, learnt from the last ones (reactor thread only): twice
    /// what a short read brought, doubled after a full one, up to `max_read`. A read then
    /// fills at least half of its buffer, which can travel on as it is.
    read_hint: AtomicUsize,
    /// The stream; `None` before connect and after close.
    io: Mutex<Option<Arc<dyn StreamIo>>>,
    /// The descriptor reported an error (a reset) with bytes still unread: the input is read
    /// as credit allows until nothing is left, and that end is `Lost` (see
    /// [`drain_after_error`](Self::drain_after_error)).
    draining: AtomicBool,
    /// A `Connected` announcement is queued and not sent yet. Outside the state's lock: every
    /// read asks, and the answer is almost always no.
    announce_pending: AtomicBool,
    /// Link to the consumer of what we read.
    producer_slot: LinkSlot,
    /// Link to the producer of what we write.
    consumer_slot: LinkSlot,
    /// Everything else.
    state: Mutex<AgentState>,
}

/// Where the agent is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for a connect to finish.
    Connecting,
    /// Carrying data.
    Connected,
    /// Both directions closed, descriptors released.
    Closed,
}

/// The reactor registrations of the agent.
#[derive(Clone, Copy, Debug, Default)]
struct Tokens {
    /// The registration of a shared descriptor, or of the input one.
    input: Option<Token>,
    /// The registration of the output descriptor when it is a separate one.
    output: Option<Token>,
    /// Whether `input` covers both directions.
    shared: bool,
}

/// Mutable part of an agent.
struct AgentState {
    /// Life stage.
    phase: Phase,
    /// Registrations.
    tokens: Tokens,
    /// Interest currently registered for reading and writing.
    interest: Interest,
    /// How input ended, once it has.
    input_closed: Option<Ending>,
    /// How output ended, once it has.
    output_closed: Option<Ending>,
    /// Bytes waiting to be written.
    wbuf: VecDeque<Bytes>,
    /// Total bytes in `wbuf`.
    buffered: usize,
    /// The upstream ended: close output with this once `wbuf` drains.
    end_after_drain: Option<Ending>,
    /// The far end, once connected.
    peer: Option<Peer>,
    /// First I/O error.
    error: Option<Arc<io::Error>>,
    /// Called once when both directions are closed.
    on_close: Option<Box<dyn FnOnce(CloseInfo) + Send>>,
    /// What to do when a connect attempt finishes.
    connect_hook: Option<Box<dyn ConnectHook>>,
}

/// Decides what follows a connect attempt (the socket connect driver implements it).
pub(crate) trait ConnectHook: Send {
    /// The attempt succeeded.
    fn succeeded(self: Box<Self>, agent: &AgentInner);
    /// The attempt failed with `err`.
    fn failed(self: Box<Self>, agent: &AgentInner, err: io::Error);
    /// The agent was closed while the attempt was in progress.
    fn closed(self: Box<Self>, agent: &AgentInner);
}

/// The agent's producer side.
struct AgentProducer(Arc<AgentInner>);
/// The agent's consumer side.
struct AgentConsumer(Arc<AgentInner>);
/// Reactor handle for a shared descriptor or the input one.
///
/// It holds the agent strongly: while a descriptor is registered the agent lives, even when
/// no chain refers to it any more (an echo whose input has ended still has bytes to write).
/// Deregistering, which every close does, breaks the cycle.
struct InputHandle(Arc<AgentInner>);
/// Reactor handle for a separate output descriptor (holds the agent like [`InputHandle`]).
struct OutputHandle(Arc<AgentInner>);

impl StreamAgent {
    /// An agent for a connected, non-blocking stream, registered with `reactor` at once.
    ///
    /// # Errors
    ///
    /// The reactor refused a descriptor (e.g. it has stopped).
    pub fn new(
        reactor: &Reactor,
        io: impl StreamIo,
        config: AgentConfig,
    ) -> Result<StreamAgent, weir_reactor::ReactorError> {
        let agent = StreamAgent::unconnected(reactor, config);
        agent.inner.install(Arc::new(io), true)?;
        Ok(agent)
    }

    /// An agent without a stream yet, in the connecting phase.
    pub(crate) fn unconnected(reactor: &Reactor, config: AgentConfig) -> StreamAgent {
        // The fields are public: a zero set directly would make every read look like the end
        // of the stream, or grant the producer nothing, for ever. One byte is the least.
        let config = AgentConfig {
            max_read: config.max_read.max(1),
            write_buffer: config.write_buffer.max(1),
            ..config
        };
        let inner = Arc::new_cyclic(|me| AgentInner {
            reactor: reactor.clone(),
            me: me.clone(),
            config,
            read_hint: AtomicUsize::new(INITIAL_READ.min(config.max_read)),
            io: Mutex::new(None),
            draining: AtomicBool::new(false),
            announce_pending: AtomicBool::new(false),
            producer_slot: LinkSlot::new(),
            consumer_slot: LinkSlot::new(),
            state: Mutex::new(AgentState {
                phase: Phase::Connecting,
                tokens: Tokens::default(),
                interest: Interest::NONE,
                input_closed: None,
                output_closed: None,
                wbuf: VecDeque::new(),
                buffered: 0,
                end_after_drain: None,
                peer: None,
                error: None,
                on_close: None,
                connect_hook: None,
            }),
        });
        StreamAgent { inner }
    }

    /// The agent's consumer (bytes to write) and producer (bytes read), to attach chains.
    pub fn io_pair(&self) -> ByteIoPair {
        ByteIoPair::new(
            Arc::new(AgentConsumer(self.inner.clone())),
            Arc::new(AgentProducer(self.inner.clone())),
        )
    }

    /// Calls `f` once, on the reactor thread, when both directions have closed. If that has
    /// happened already, `f` runs right away (on the reactor thread).
    #[doc(alias = "close_cback")]
    pub fn set_close_callback(&self, f: impl FnOnce(CloseInfo) + Send + 'static) {
        let mut state = self.inner.state.lock();
        if state.phase == Phase::Closed {
            let info = state.close_info();
            drop(state);
            self.inner.reactor.execute(move || f(info));
        } else {
            state.on_close = Some(Box::new(f));
        }
    }

    /// Closes both directions (any thread): the downstream chain ends with `ending`.
    #[doc(alias = "close_io")]
    pub fn close(&self, ending: Ending) {
        let inner = self.inner.clone();
        self.inner.reactor.execute(move || inner.close_all(ending));
    }

    /// The far end, once connected.
    pub fn peer(&self) -> Option<Peer> {
        self.inner.state.lock().peer.clone()
    }

    /// Whether the stream is connected and not yet fully closed.
    pub fn is_connected(&self) -> bool {
        self.inner.state.lock().phase == Phase::Connected
    }

    /// Whether both directions have closed.
    pub fn is_closed(&self) -> bool {
        self.inner.state.lock().phase == Phase::Closed
    }

    /// Bytes waiting in the write buffer.
    pub fn buffered(&self) -> usize {
        self.inner.state.lock().buffered
    }

    /// The first I/O error the agent saw.
    pub fn error(&self) -> Option<Arc<io::Error>> {
        self.inner.state.lock().error.clone()
    }

    /// The configuration.
    pub fn config(&self) -> AgentConfig {
        self.inner.config
    }
}

impl fmt::Debug for StreamAgent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("StreamAgent")
            .field("phase", &state.phase)
            .field("peer", &state.peer)
            .field("buffered", &state.buffered)
            .field("input_closed", &state.input_closed)
            .field("output_closed", &state.output_closed)
            .finish()
    }
}

impl AgentState {
    /// What the close callback is told.
    fn close_info(&self) -> CloseInfo {
        CloseInfo {
            input: self.input_closed.unwrap_or(Ending::Lost),
            output: self.output_closed.unwrap_or(Ending::Lost),
            error: self.error.clone(),
        }
    }
}

impl AgentInner {
    /// Installs a stream and registers its descriptors; `connected` says whether the stream
    /// is already connected (else the agent waits for writability, then checks the error).
    pub(crate) fn install(
        &self,
        io: Arc<dyn StreamIo>,
        connected: bool,
    ) -> Result<(), weir_reactor::ReactorError> {
        let me = self
            .me
            .upgrade()
            .ok_or(weir_reactor::ReactorError::Stopped)?;
        // Connected streams are connected before the reactor can report anything about
        // them: an error event on the first turn must not be taken for a failed connect.
        if connected {
            let peer = io.peer();
            let mut state = self.state.lock();
            state.phase = Phase::Connected;
            state.peer = Some(peer);
        }
        *self.io.lock() = Some(io.clone());
        let tokens = match io.descriptors() {
            Descriptors::Shared(fd) => {
                // A connected stream is registered wanting to read: its chain is nearly always
                // attached before the loop next waits (start_serving below is queued behind
                // the caller's attach), so the poller is told once instead of twice. If the
                // stream turns readable before anything is attached, the read finds no
                // consumer and takes the interest away again.
                let interest = if connected {
                    Interest::READ
                } else {
                    Interest::WRITE
                };
                let token =
                    self.reactor
                        .register(fd, interest, Arc::new(InputHandle(me.clone())))?;
                self.state.lock().interest = interest;
                Tokens {
                    input: Some(token),
                    output: None,
                    shared: true,
                }
            }
            Descriptors::Split { input, output } => {
                let input = input
                    .map(|fd| {
                        let handle = Arc::new(InputHandle(me.clone()));
                        self.reactor.register(fd, Interest::NONE, handle)
                    })
                    .transpose()?;
                let output = match output {
                    Some(fd) => {
                        let handle = Arc::new(OutputHandle(me.clone()));
                        match self.reactor.register(fd, Interest::NONE, handle) {
                            Ok(token) => Some(token),
                            Err(err) => {
                                if let Some(token) = input {
                                    self.reactor.deregister(token);
                                }
                                return Err(err);
                            }
                        }
                    }
                    None => None,
                };
                Tokens {
                    input,
                    output,
                    shared: false,
                }
            }
        };
        let missing_input = !tokens.shared && tokens.input.is_none();
        let missing_output = !tokens.shared && tokens.output.is_none();
        self.state.lock().tokens = tokens;
        if connected {
            // Queued, so that a caller on the reactor thread attaches its chain first.
            self.reactor.call(move || {
                me.start_serving();
                if missing_input {
                    me.close_input(Ending::Completed);
                }
                if missing_output {
                    me.close_output(Ending::Completed);
                }
            });
        }
        Ok(())
    }

    /// Drops a stream whose connect failed, keeping the agent for another attempt.
    pub(crate) fn uninstall(&self) {
        let tokens = std::mem::take(&mut self.state.lock().tokens);
        for token in [tokens.input, tokens.output].into_iter().flatten() {
            self.reactor.deregister(token);
        }
        self.state.lock().interest = Interest::NONE;
        self.io.lock().take();
    }

    /// The agent's phase.
    pub(crate) fn phase(&self) -> Phase {
        self.state.lock().phase
    }

    /// The stream, if installed and open.
    fn io(&self) -> Option<Arc<dyn StreamIo>> {
        self.io.lock().clone()
    }

    /// The connect finished (or the stream came connected): start serving.
    pub(crate) fn connected(&self) {
        let peer = match self.io() {
            Some(io) => io.peer(),
            None => return,
        };
        {
            let mut state = self.state.lock();
            if state.phase != Phase::Connecting {
                return;
            }
            state.phase = Phase::Connected;
            state.peer = Some(peer);
        }
        self.start_serving();
    }

    /// Reads from the reactor's queue without waiting for the poller to report the stream
    /// readable: for an accepted connection, whose client has usually sent its first bytes
    /// (a TLS ClientHello, a request) by the time the chain behind it is attached. The call
    /// runs in the turn it is queued in when queued from an I/O callback (as the listener's
    /// factory is), after the factory has attached the chain; with nothing to read it costs
    /// one `WouldBlock` read and the poller takes over.
    pub(crate) fn read_soon(&self) {
        let Some(me) = self.me.upgrade() else { return };
        self.reactor.call(move || {
            if me.input_open() {
                me.read_ready();
            }
        });
    }

    /// First steps once connected: announce, write what is buffered, watch for readiness.
    fn start_serving(&self) {
        if self.phase() != Phase::Connected {
            return;
        }
        self.announce();
        self.flush(true);
        self.update_interest();
    }

    /// Sends `Connected` to the downstream consumer if connected, from the reactor queue, or
    /// earlier if data or the end go downstream first (see [`Self::send_announce`]).
    fn announce(&self) {
        let Some(me) = self.me.upgrade() else { return };
        self.announce_pending.store(true, Ordering::Release);
        self.reactor.call(move || me.send_announce());
    }

    /// Sends a pending `Connected` now. Called before anything else goes downstream, so the
    /// consumer hears of the connection before its first byte or its end, even when the
    /// queued announcement would only run after the stream has ended.
    fn send_announce(&self) {
        if !self.announce_pending.load(Ordering::Acquire)
            || !self.announce_pending.swap(false, Ordering::AcqRel)
        {
            return;
        }
        let peer = self.state.lock().peer.clone();
        if let (Some(peer), Some(link)) = (peer, self.producer_slot.link()) {
            if link.is_open() {
                link.control_downstream(&IoControl::Connected(peer));
            }
        }
    }

    /// Records the first error.
    pub(crate) fn record_error(&self, err: io::Error) {
        let mut state = self.state.lock();
        if state.error.is_none() {
            tracing::debug!(%err, "stream error");
            state.error = Some(Arc::new(err));
        }
    }

    /// Makes the registered interest match what the agent wants now.
    fn update_interest(&self) {
        self.update_interest_with(self.producer_slot.link().as_deref());
    }

    /// [`update_interest`](Self::update_interest) with the downstream link at hand, which
    /// must be the current one (the data path has it already: loading it costs more than the
    /// rest of this check).
    fn update_interest_with(&self, downstream: Option<&Link>) {
        let read_credit = downstream.is_some_and(|l| l.remaining() > 0);
        let mut state = self.state.lock();
        let want = match state.phase {
            Phase::Connecting => Interest::WRITE,
            Phase::Connected => Interest {
                read: state.input_closed.is_none() && read_credit,
                write: state.output_closed.is_none() && state.buffered > 0,
            },
            Phase::Closed => return,
        };
        if want == state.interest {
            return;
        }
        state.interest = want;
        let tokens = state.tokens;
        drop(state);
        let result = if tokens.shared {
            tokens.input.map(|t| self.reactor.set_interest(t, want))
        } else {
            let input = tokens
                .input
                .map(|t| self.reactor.set_interest(t, want.with_write(false)));
            let output = tokens
                .output
                .map(|t| self.reactor.set_interest(t, want.with_read(false)));
            input.into_iter().chain(output).find(Result::is_err)
        };
        if let Some(Err(err)) = result {
            tracing::debug!(%err, "interest update failed");
        }
    }

    /// Reads while there is credit, data and budget; delivers downstream.
    fn read_ready(&self) {
        let Some(io) = self.io() else { return };
        let Some(link) = self.producer_slot.link() else {
            self.update_interest();
            return;
        };
        let mut total = 0;
        let mut announced = false;
        while total < READ_BUDGET {
            let remaining = link.remaining();
            if remaining == 0 {
                break;
            }
            let credit = usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(self.config.max_read);
            let want = credit.min(self.read_hint.load(Ordering::Relaxed));
            // A spare capacity of exactly `want`, so that a read cannot pass the credit: a
            // short read's buffer or one a consumer gave back, if one fits.
            let mut buf = spare::take(want);
            let result = io.read(&mut buf);
            let chunk = match result {
                Ok(0) => {
                    spare::keep(buf);
                    self.end_of_input();
                    return;
                }
                Ok(_) => into_chunk(buf),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    self.record_error(err);
                    self.close_input(Ending::Lost);
                    return;
                }
            };
            debug_assert!(chunk.len() <= want, "a read went past its spare capacity");
            total += chunk.len();
            let drained = chunk.len() < want;
            self.learn_read_size(chunk.len(), want, credit);
            if !announced {
                self.send_announce();
                announced = true;
            }
            if link.deliver(chunk).is_err() || drained {
                // A short read emptied the kernel buffer: skip the read that would only say
                // `WouldBlock`. Readiness is level-triggered, so anything that arrives now is
                // reported on the next turn.
                break;
            }
        }
        if link.is_open() {
            self.update_interest_with(Some(&link));
        } else {
            // Delivering ended or replaced the link: ask the slot.
            self.update_interest();
        }
    }

    /// A read found the end: end of file, or, draining after an error, nothing left.
    fn end_of_input(&self) {
        if self.draining.load(Ordering::Relaxed) {
            // The error (the reset) is recorded: the stream did not end cleanly.
            self.close_all(Ending::Lost);
        } else {
            self.close_input(Ending::Completed);
        }
    }

    /// The reactor removed the registration of a socket that reported an error (a TCP reset)
    /// while bytes the peer sent before it are still unread. Nothing more can be written:
    /// output closes `Lost` and the upstream chain is aborted. The socket is registered again
    /// for its input, where it reports a hang-up: the reactor then calls for reads while
    /// there is credit, as for any stream whose peer is gone (and closes it, should it stop
    /// first), until a read finds nothing more; then the stream closes `Lost`, with the
    /// recorded error. Returns `false`, having changed nothing, if it cannot register.
    fn drain_after_error(&self) -> bool {
        let (Some(io), Some(me)) = (self.io(), self.me.upgrade()) else {
            return false;
        };
        let Descriptors::Shared(fd) = io.descriptors() else {
            return false;
        };
        let handle = Arc::new(InputHandle(me));
        let Ok(token) = self.reactor.register(fd, Interest::NONE, handle) else {
            return false;
        };
        {
            let mut state = self.state.lock();
            state.tokens.input = Some(token);
            state.interest = Interest::NONE;
            state.output_closed.get_or_insert(Ending::Lost);
            state.wbuf.clear();
            state.buffered = 0;
            state.end_after_drain = None;
        }
        self.draining.store(true, Ordering::Relaxed);
        self.abort_upstream();
        self.update_interest();
        true
    }

    /// Adjusts the capacity of the next read after one of `capacity` bytes (`credit` allowed)
    /// brought `read`.
    fn learn_read_size(&self, read: usize, capacity: usize, credit: usize) {
        let next = if read < capacity {
            (read * 2).next_power_of_two()
        } else if capacity < credit {
            capacity * 2
        } else {
            // Held back by the credit, not by the guess: nothing learnt.
            return;
        };
        let next = next.clamp(MIN_READ.min(self.config.max_read), self.config.max_read);
        self.read_hint.store(next, Ordering::Relaxed);
    }

    /// Writes what the buffer holds until it is empty or the stream would block. With
    /// `grant`, tells the upstream producer about the freed space. Returns the bytes still
    /// buffered.
    ///
    /// One lock for the whole pass: the writes are made holding it, as the buffer is read in
    /// place, and what follows them (the end, the interest, the credit) reads the state it
    /// left.
    fn flush(&self, grant: bool) -> usize {
        let Some(io) = self.io() else {
            return self.state.lock().buffered;
        };
        let mut freed = false;
        let (closing, stale_interest, buffered) = {
            let mut state = self.state.lock();
            let mut closing = None;
            while state.buffered > 0 && state.phase == Phase::Connected {
                match write_buffered(&*io, &state.wbuf) {
                    Ok(n) => {
                        freed = true;
                        state.advance(n);
                    }
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                    Err(err) => {
                        closing = Some(Closing::Failed(err));
                        break;
                    }
                }
            }
            if state.buffered == 0 && closing.is_none() {
                closing = state.end_after_drain.take().map(Closing::Drained);
            }
            // Writing changes only the write half of the interest (new credit reaches the
            // read half through `on_credit`): most writes leave it as it was.
            let write = state.output_closed.is_none() && state.buffered > 0;
            let stale = state.phase != Phase::Connected || write != state.interest.write;
            (closing, stale, state.buffered)
        };
        match closing {
            None => {}
            Some(Closing::Failed(err)) => {
                self.record_error(err);
                self.close_output(Ending::Lost);
                return 0;
            }
            Some(Closing::Drained(ending)) => {
                self.close_output(ending);
                return 0;
            }
        }
        if grant && freed {
            if let Some(link) = self.consumer_slot.link() {
                link.grant(self.write_credit(&link));
            }
        }
        if stale_interest {
            self.update_interest();
        }
        buffered
    }

    /// Credit for the upstream producer: the free space of the write buffer.
    fn write_credit(&self, link: &Link) -> Credit {
        let buffered = self.state.lock().buffered;
        self.window_for(link, buffered)
    }

    /// Credit for the upstream producer when `buffered` bytes wait in the write buffer.
    fn window_for(&self, link: &Link, buffered: usize) -> Credit {
        link.window(self.config.write_buffer.saturating_sub(buffered) as u64)
    }

    /// Closes the input direction (end of file, read error, or the consumer's abort).
    pub(crate) fn close_input(&self, ending: Ending) {
        if self.half_close(Direction::Input, ending) {
            self.end_downstream(ending);
            self.update_interest();
        }
    }

    /// Closes the output direction (upstream ended, write error, or the producer's abort).
    pub(crate) fn close_output(&self, ending: Ending) {
        if self.half_close(Direction::Output, ending) {
            self.abort_upstream();
            self.update_interest();
        }
    }

    /// Closes one direction (`Input` or `Output`): marks it, deregisters its own descriptor
    /// if it has one, and shuts it down. Escalates to [`close_all`](Self::close_all) when the
    /// policy forbids a half-close, the other direction is closed already, or the stream
    /// never connected. Returns whether it half-closed (the caller then tells its chain).
    fn half_close(&self, direction: Direction, ending: Ending) -> bool {
        let input = direction == Direction::Input;
        let escalate = {
            let state = self.state.lock();
            let (this, other) = if input {
                (state.input_closed, state.output_closed)
            } else {
                (state.output_closed, state.input_closed)
            };
            if this.is_some() || state.phase == Phase::Closed {
                return false;
            }
            let allowed = if input {
                self.config.half_close.input
            } else {
                self.config.half_close.output
            };
            !allowed || other.is_some() || state.phase != Phase::Connected
        };
        if escalate {
            self.close_all(ending);
            return false;
        }
        let token = {
            let mut state = self.state.lock();
            let state = &mut *state;
            if input {
                state.input_closed = Some(ending);
            } else {
                state.output_closed = Some(ending);
                state.wbuf.clear();
                state.buffered = 0;
            }
            let own = if input {
                &mut state.tokens.input
            } else {
                &mut state.tokens.output
            };
            (!state.tokens.shared).then(|| own.take()).flatten()
        };
        if let Some(token) = token {
            self.reactor.deregister(token);
        }
        if let Some(io) = self.io() {
            if let Err(err) = io.shutdown(direction) {
                tracing::debug!(%err, ?direction, "shutdown failed");
            }
        }
        true
    }

    /// Closes both directions, releases the descriptors and runs the close callback.
    pub(crate) fn close_all(&self, ending: Ending) {
        let (tokens, callback, info, hook) = {
            let mut state = self.state.lock();
            if state.phase == Phase::Closed {
                return;
            }
            state.phase = Phase::Closed;
            state.input_closed.get_or_insert(ending);
            state.output_closed.get_or_insert(ending);
            state.wbuf.clear();
            state.buffered = 0;
            let tokens = std::mem::take(&mut state.tokens);
            let hook = state.connect_hook.take();
            (tokens, state.on_close.take(), state.close_info(), hook)
        };
        for token in [tokens.input, tokens.output].into_iter().flatten() {
            self.reactor.deregister(token);
        }
        // Dropping the stream closes the descriptors, after they left the poller.
        self.io.lock().take();
        self.end_downstream(info.input);
        self.abort_upstream();
        if let Some(callback) = callback {
            callback(info);
        }
        if let Some(hook) = hook {
            // Closed while a connect was in progress: the connector reports it.
            hook.closed(self);
        }
    }

    /// Ends the downstream chain, once.
    ///
    /// With no consumer attached yet, the slot stays open: a consumer that attaches later
    /// gets the end at once (see `AgentProducer::on_attached`), so a connect that fails before
    /// the chain is attached still reaches it.
    fn end_downstream(&self, ending: Ending) {
        self.send_announce();
        if let Some(link) = self.producer_slot.link() {
            self.producer_slot.mark_ended();
            link.end(ending);
        }
    }

    /// Aborts the upstream chain: no more bytes can be written. A producer that attaches
    /// later is aborted at once (see `AgentConsumer::on_attached`).
    fn abort_upstream(&self) {
        if let Some(link) = self.consumer_slot.link() {
            self.consumer_slot.mark_ended();
            link.abort();
        }
    }

    /// Handles a reactor close of one registration.
    fn reactor_closed(&self, input_side: bool, direction: Direction, reason: CloseReason) {
        let shared = {
            let mut state = self.state.lock();
            if direction == Direction::Both {
                // The reactor has removed this registration already.
                if input_side {
                    state.tokens.input = None;
                } else {
                    state.tokens.output = None;
                }
            }
            state.tokens.shared
        };
        match (reason, direction) {
            (CloseReason::HangUp, _) if !input_side || shared => {
                // The peer is gone: nothing more can be written. Input drains until EOF.
                // A hang-up after our own output closed (both sides shut down writing) is the
                // normal end of a half-closed stream, not an error.
                let output_open = self.state.lock().output_closed.is_none();
                if output_open && self.phase() == Phase::Connected {
                    self.record_error(io::Error::from(io::ErrorKind::BrokenPipe));
                    self.close_output(Ending::Lost);
                }
            }
            (CloseReason::HangUp, _) => {}
            (CloseReason::Error, _) if self.phase() == Phase::Connecting => {
                self.connect_ready();
            }
            _ => {
                // The error first: a peek at a socket in error would take it.
                self.record_reactor_error(reason);
                // Only for an error: a panicked handle or a stopped reactor ends it now.
                let drain = reason == CloseReason::Error
                    && shared
                    && self.input_open()
                    && self.io().is_some_and(|io| io.has_unread());
                if drain && self.drain_after_error() {
                    // Reading goes on; the end comes after the bytes.
                } else if shared {
                    self.close_all(Ending::Lost);
                } else if input_side {
                    self.close_input(Ending::Lost);
                } else {
                    self.close_output(Ending::Lost);
                }
            }
        }
    }

    /// Records the descriptor's own error for a reactor close for `reason`, else the reason.
    fn record_reactor_error(&self, reason: CloseReason) {
        match self.io().map(|io| io.take_error()) {
            Some(Ok(Some(err))) => self.record_error(err),
            _ => self.record_error(io::Error::other(reason.to_string())),
        }
    }

    /// Whether the stream is connected and its input still open.
    fn input_open(&self) -> bool {
        let state = self.state.lock();
        state.phase == Phase::Connected && state.input_closed.is_none()
    }

    /// The descriptor became writable while connecting: check how the connect went.
    fn connect_ready(&self) {
        let Some(io) = self.io() else { return };
        let outcome = match io.take_error() {
            Ok(None) => Ok(()),
            Ok(Some(err)) | Err(err) => Err(err),
        };
        let hook = self.state.lock().connect_hook.take();
        match (outcome, hook) {
            (Ok(()), Some(hook)) => hook.succeeded(self),
            (Ok(()), None) => self.connected(),
            (Err(err), Some(hook)) => hook.failed(self, err),
            (Err(err), None) => {
                self.record_error(err);
                self.close_all(Ending::Lost);
            }
        }
    }

    /// Sets what follows the connect attempt in progress.
    pub(crate) fn set_connect_hook(&self, hook: Box<dyn ConnectHook>) {
        self.state.lock().connect_hook = Some(hook);
    }

    /// Drops the pending connect hook (the connect timed out).
    pub(crate) fn state_take_hook(&self) -> Option<Box<dyn ConnectHook>> {
        self.state.lock().connect_hook.take()
    }

    /// The peer, once connected.
    pub(crate) fn peer_now(&self) -> Option<Peer> {
        self.state.lock().peer.clone()
    }

    /// The link to the downstream consumer, for the connect driver.
    pub(crate) fn downstream(&self) -> Option<Arc<Link>> {
        self.producer_slot.link()
    }
}

/// One vectored write of the front of `wbuf`.
fn write_buffered(io: &dyn StreamIo, wbuf: &VecDeque<Bytes>) -> io::Result<usize> {
    if let (1, Some(only)) = (wbuf.len(), wbuf.front()) {
        // The usual case, one message: no array of empty slices to fill first.
        return io.write_vectored(&[IoSlice::new(only)]);
    }
    // On the stack: a write per message must not cost an allocation.
    let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
    let mut count = 0;
    for (slot, chunk) in slices.iter_mut().zip(wbuf) {
        *slot = IoSlice::new(chunk);
        count += 1;
    }
    io.write_vectored(&slices[..count])
}

/// Why a flush ends by closing the output.
enum Closing {
    /// A write failed.
    Failed(io::Error),
    /// The buffer drained and the upstream had ended: close with its ending.
    Drained(Ending),
}

/// The bytes of one read as a chunk to deliver. A short read is copied and its buffer kept for
/// the next read; a long one goes on in its own buffer without a copy, trimmed when it filled
/// less than half of it.
fn into_chunk(mut buf: Vec<u8>) -> Bytes {
    if buf.len() <= COPY_MAX {
        let chunk = Bytes::copy_from_slice(&buf);
        buf.clear();
        spare::keep(buf);
        chunk
    } else {
        if buf.len() < buf.capacity() / 2 {
            // Trimming shrinks the block in place: a buffered chunk holds at most twice its
            // length. (The read size guess makes this rare.)
            buf.shrink_to_fit();
        }
        Bytes::from(buf)
    }
}

impl AgentState {
    /// Drops `n` written bytes from the front of the write buffer.
    fn advance(&mut self, mut n: usize) {
        self.buffered -= n;
        while n > 0 {
            let Some(front) = self.wbuf.front_mut() else {
                break;
            };
            if front.len() <= n {
                n -= front.len();
                self.wbuf.pop_front();
            } else {
                let _ = front.split_to(n);
                n = 0;
            }
        }
    }
}

impl ByteHandle for InputHandle {
    fn on_readable(&self) {
        self.0.read_ready();
    }

    fn on_writable(&self) {
        if self.0.phase() == Phase::Connecting {
            self.0.connect_ready();
        } else {
            self.0.flush(true);
        }
    }

    fn on_close(&self, direction: Direction, reason: CloseReason) {
        self.0.reactor_closed(true, direction, reason);
    }
}

impl ByteHandle for OutputHandle {
    fn on_writable(&self) {
        self.0.flush(true);
    }

    fn on_close(&self, direction: Direction, reason: CloseReason) {
        self.0.reactor_closed(false, direction, reason);
    }
}

impl ByteProducer for AgentProducer {
    fn reactor(&self) -> &Reactor {
        &self.0.reactor
    }

    fn producer_slot(&self) -> &LinkSlot {
        &self.0.producer_slot
    }

    fn on_credit(&self, _link: &Arc<Link>) {
        self.0.update_interest();
    }

    fn on_attached(&self, _link: &Arc<Link>) {
        if self.0.phase() == Phase::Connected {
            self.0.announce();
        }
        let closed = self.0.state.lock().input_closed;
        if let Some(ending) = closed {
            self.0.end_downstream(ending);
        }
    }

    fn on_detached(&self) {
        self.0.update_interest();
    }

    fn on_abort(&self) {
        // The consumer of what we read gave up: stop reading.
        self.0.close_input(Ending::Completed);
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

impl AgentConsumer {
    /// Appends `data` (`len` bytes) to the write buffer and writes at once if the buffer was
    /// empty: most writes finish here and never wait for the poller; a run goes out in one
    /// vectored write. Returns the credit. Nothing is queued once the output has closed.
    fn queue(&self, link: &Link, len: usize, data: impl IntoIterator<Item = Bytes>) -> Credit {
        let waiting = {
            let mut state = self.0.state.lock();
            if state.output_closed.is_some() || state.phase == Phase::Closed {
                return link.credit();
            }
            let was_empty = state.buffered == 0;
            state.buffered += len;
            state.wbuf.extend(data);
            // Behind earlier data (its writability is awaited) or before the connect: wait.
            (!was_empty || state.phase != Phase::Connected).then_some(state.buffered)
        };
        let buffered = waiting.unwrap_or_else(|| self.0.flush(false));
        self.0.window_for(link, buffered)
    }
}

impl ByteConsumer for AgentConsumer {
    fn reactor(&self) -> &Reactor {
        &self.0.reactor
    }

    fn consumer_slot(&self) -> &LinkSlot {
        &self.0.consumer_slot
    }

    fn on_attached(&self, link: &Arc<Link>) -> Credit {
        let closed = self.0.state.lock().output_closed.is_some();
        if closed {
            link.abort();
            return Credit::ZERO;
        }
        self.0.write_credit(link)
    }

    fn consume(&self, link: &Arc<Link>, data: Bytes) -> Credit {
        self.queue(link, data.len(), [data])
    }

    fn takes_runs(&self) -> bool {
        true
    }

    fn consume_chunks(&self, link: &Arc<Link>, chunks: &mut Chunks) -> Credit {
        // At most the write buffer's size, a usize.
        let len = chunks.byte_len() as usize;
        let credit = self.queue(link, len, &mut *chunks);
        // Left only when the output was closed: those bytes have nowhere to go.
        chunks.clear();
        credit
    }

    fn on_end(&self, _link: &Arc<Link>, ending: Ending) {
        let drained = {
            let mut state = self.0.state.lock();
            // While connecting, the end waits like buffered data does: closing output now
            // would close the never-connected socket as a whole (Versile `close_output`).
            if state.buffered == 0 && state.phase != Phase::Connecting {
                true
            } else {
                state.end_after_drain = Some(ending);
                false
            }
        };
        if drained {
            self.0.close_output(ending);
        }
    }

    fn on_abort(&self) {
        // The producer of what we write gave up: finish with what was written.
        self.0.close_output(Ending::Completed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A long read goes on in its own buffer, not copied (trimmed when it used less than
    /// half); a short one is copied and its buffer stays for the next read.
    #[test]
    fn long_reads_move_short_reads_copy() {
        let mut buf = spare::take(8192);
        buf.extend_from_slice(&[7; 5000]);
        let address = buf.as_ptr();
        let chunk = into_chunk(buf);
        assert_eq!(chunk.as_ptr(), address, "a long read was copied");
        assert_eq!(&chunk[..], &[7; 5000][..]);

        let mut buf = spare::take(8192);
        buf.extend_from_slice(b"Ni!");
        let address = buf.as_ptr();
        let chunk = into_chunk(buf);
        assert_eq!(&chunk[..], b"Ni!");
        let spare = spare::take(8192);
        assert_eq!(
            spare.as_ptr(),
            address,
            "the short read's buffer was not kept"
        );

        let mut buf = spare::take(65_536);
        buf.extend_from_slice(&[9; 2000]);
        let chunk = into_chunk(buf);
        assert_eq!(&chunk[..], &[9; 2000][..]);
    }

    /// The guess of the next read's length follows short reads down and full reads up, within
    /// `MIN_READ..=max_read`, and ignores reads that the credit cut short.
    #[test]
    fn the_read_size_guess_follows_the_reads() {
        let reactor = Reactor::new().unwrap();
        let agent = StreamAgent::unconnected(&reactor, AgentConfig::default());
        let inner = &agent.inner;
        let hint = || inner.read_hint.load(Ordering::Relaxed);
        assert_eq!(hint(), INITIAL_READ);
        inner.learn_read_size(4096, 65_536, 65_536);
        assert_eq!(hint(), 8192);
        inner.learn_read_size(64, 8192, 65_536);
        assert_eq!(hint(), MIN_READ);
        inner.learn_read_size(100, 100, 100);
        assert_eq!(
            hint(),
            MIN_READ,
            "a read the credit cut short taught something"
        );
        for _ in 0..10 {
            let capacity = hint();
            inner.learn_read_size(capacity, capacity, 1 << 20);
        }
        assert_eq!(hint(), AgentConfig::default().max_read);
    }
}
