//! [`TlsSession`], the sans-IO TLS state machine, and what it reports: [`TlsEvent`],
//! [`HandshakeInfo`], [`TlsRole`].

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::mem;

use bytes::Bytes;

use weir_io::Chunks;

use crate::config::{TlsClientConfig, TlsLimits, TlsServerConfig};
use crate::error::{classify, Phase, TlsError};
use crate::stream::{Mid, Step, Stream};
use crate::transport::{Incoming, MemoryTransport};

/// Most plaintext bytes in one TLS record; plaintext is encrypted at most this much at a time.
const MAX_RECORD_PLAINTEXT: usize = 16 * 1024;

/// Most bytes one `poll_plaintext` call returns, whatever `max` says.
const MAX_POLL_PLAINTEXT: usize = 4 * MAX_RECORD_PLAINTEXT;

/// Which end of the handshake a session plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TlsRole {
    /// Sends the ClientHello and checks the server's certificate.
    Client,
    /// Answers a ClientHello with its identity.
    Server,
}

/// Something that happened in a [`TlsSession`], drained with
/// [`poll_event`](TlsSession::poll_event).
///
/// A session reports at most one `HandshakeDone`, and at most one of `Failed`, `PeerClosed`,
/// `Truncated`, except that `PeerClosed` may be followed by `Failed` if writing fails later.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsEvent {
    /// The session failed and is over. Drain [`poll_ciphertext`](TlsSession::poll_ciphertext)
    /// once more: it may hold the alert that tells the peer why.
    Failed(TlsError),
    /// The handshake finished; plaintext now flows both ways.
    HandshakeDone(HandshakeInfo),
    /// The peer sent close_notify: it will send no more data, and everything it sent has been
    /// read. This is a clean end of the incoming direction. We may still write; call
    /// [`close`](TlsSession::close) to send our own close_notify.
    PeerClosed,
    /// The transport ended without close_notify, after the handshake. The data read so far is
    /// genuine, but the peer's stream may have been cut short by an attacker or a crash; do not
    /// treat it as complete. The session is over.
    Truncated,
}

/// What the handshake established, reported by [`TlsEvent::HandshakeDone`] and kept by
/// [`TlsSession::handshake_info`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HandshakeInfo {
    /// The peer's leaf certificate, DER-encoded.
    peer_certificate: Option<Bytes>,
    /// The ALPN protocol both sides agreed on.
    alpn_protocol: Option<Bytes>,
}

impl HandshakeInfo {
    /// The peer's leaf certificate in DER form (parse it with any X.509 crate for its subject,
    /// key or extensions). A client always gets one; a server gets the client's where it asked
    /// for one ([`ClientAuth`](crate::ClientAuth)) and the client sent it.
    pub fn peer_certificate_der(&self) -> Option<&[u8]> {
        self.peer_certificate.as_deref()
    }

    /// The ALPN protocol agreed on, e.g. `b"h2"`, if both sides configured ALPN and share one.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.alpn_protocol.as_deref()
    }

    /// Collects the information from an established stream.
    fn from_stream(stream: &Stream) -> Self {
        HandshakeInfo {
            peer_certificate: stream.peer_certificate_der().map(Bytes::from),
            alpn_protocol: stream.alpn_protocol().map(Bytes::from),
        }
    }
}

/// A TLS session that owns no socket: ciphertext and plaintext pass through it as byte slices.
///
/// Start one with [`client`](Self::client) or [`server`](Self::server). The handshake, the
/// encryption and the close are OpenSSL's (a client's through native-tls); the session decides when
/// to run them and keeps every buffer bounded (see [`TlsLimits`]).
///
/// # Methods by kind
///
/// | kind | methods |
/// |---|---|
/// | inputs | [`handle_ciphertext`], [`handle_transport_end`], [`write_plaintext`], [`close`] |
/// | outputs | [`poll_ciphertext`], [`read_plaintext`] / [`poll_plaintext`], [`poll_event`] |
/// | flow control | [`ciphertext_capacity`], [`plaintext_capacity`], [`wants_write`], [`can_read`] |
/// | state | [`is_handshaking`], [`is_read_closed`], [`is_write_closed`], [`is_finished`] |
/// | facts | [`handshake_info`], [`role`], [`limits`](Self::limits) |
///
/// # Order of calls
///
/// After **every** input, the driver drains the outputs in this order:
///
/// ```text
/// handle_ciphertext(bytes) -> accepted    handle_transport_end()     inputs from the transport
/// write_plaintext(bytes) -> accepted      close()                    inputs from the application
///
/// poll_ciphertext() -> Option<Bytes>      until None: send it to the peer
/// poll_plaintext(max) -> Option<Bytes>    until None, as far as the application wants data
/// poll_event() -> Option<TlsEvent>        until None
/// ```
///
/// - Feed ciphertext only while [`ciphertext_capacity`] is above zero; `handle_ciphertext`
///   returns how much it took, and the rest must be fed again later (after reading plaintext,
///   which consumes the queue).
/// - Received data is decrypted only when the application reads it, so the application's pace
///   is the transport's pace: that is how backpressure crosses the session. For the same reason
///   the end of the peer's data ([`TlsEvent::PeerClosed`] or [`TlsEvent::Truncated`]) and
///   failures after the handshake show up only once plaintext has been read up to them: keep
///   calling `poll_plaintext` until it returns `None`, then poll events.
/// - Reading can also give ciphertext to send and no plaintext: the answer to a renegotiation
///   or a key update the peer asked for, or an alert refusing one. After `poll_plaintext`,
///   drain `poll_ciphertext` again; a driver that sends only what the inputs gave leaves the
///   peer waiting.
/// - [`write_plaintext`] is accepted during the handshake too; the bytes go out once it is
///   done. It accepts at most [`plaintext_capacity`] bytes, and refills as the driver drains
///   [`poll_ciphertext`].
/// - [`close`] sends close_notify after all written plaintext.
///
/// # Threading and re-entrancy
///
/// The session is `Send` and can move between threads, but each call needs `&mut self`: one
/// thread at a time. It never calls back into its caller; everything it has to say waits in the
/// `poll_*` queues.
///
/// # Examples
///
/// A blocking client over a `TcpStream`, to show the call order (weir's chain element does
/// the same without blocking):
///
/// ```no_run
/// use std::io::{Read, Write};
/// use std::net::TcpStream;
/// use weir_tls::{TlsClientConfig, TlsEvent, TlsSession};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = TlsClientConfig::builder().build()?;
/// let mut session = TlsSession::client(&config, "example.com")?;
/// let mut socket = TcpStream::connect("example.com:443")?;
/// session.write_plaintext(b"GET / HTTP/1.0\r\nHost: example.com\r\n\r\n")?;
/// session.close();
/// let mut buf = vec![0; 16 * 1024];
/// loop {
///     while let Some(ciphertext) = session.poll_ciphertext() {
///         socket.write_all(&ciphertext)?;
///     }
///     while let Some(plaintext) = session.poll_plaintext(64 * 1024) {
///         std::io::stdout().write_all(&plaintext)?;
///     }
///     while let Some(event) = session.poll_event() {
///         match event {
///             TlsEvent::Failed(error) => return Err(error.into()),
///             TlsEvent::PeerClosed | TlsEvent::Truncated => return Ok(()),
///             _ => {}
///         }
///     }
///     let room = session.ciphertext_capacity().min(buf.len());
///     let n = socket.read(&mut buf[..room])?;
///     if n == 0 {
///         session.handle_transport_end();
///     } else {
///         session.handle_ciphertext(&buf[..n]);
///     }
/// }
/// # }
/// ```
///
/// [`handle_ciphertext`]: Self::handle_ciphertext
/// [`handle_transport_end`]: Self::handle_transport_end
/// [`write_plaintext`]: Self::write_plaintext
/// [`close`]: Self::close
/// [`poll_ciphertext`]: Self::poll_ciphertext
/// [`read_plaintext`]: Self::read_plaintext
/// [`poll_plaintext`]: Self::poll_plaintext
/// [`poll_event`]: Self::poll_event
/// [`ciphertext_capacity`]: Self::ciphertext_capacity
/// [`plaintext_capacity`]: Self::plaintext_capacity
/// [`wants_write`]: Self::wants_write
/// [`can_read`]: Self::can_read
/// [`is_handshaking`]: Self::is_handshaking
/// [`is_read_closed`]: Self::is_read_closed
/// [`is_write_closed`]: Self::is_write_closed
/// [`is_finished`]: Self::is_finished
/// [`handshake_info`]: Self::handshake_info
/// [`role`]: Self::role
#[doc(alias = "VTLSTransport")]
#[doc(alias = "VTLSClient")]
#[doc(alias = "VTLSServer")]
#[doc(alias = "SSLIOStream")]
#[derive(Debug)]
pub struct TlsSession {
    /// Client or server.
    role: TlsRole,
    /// Where OpenSSL is: handshaking, established, or gone.
    stage: Stage,
    /// The ciphertext queues, shared with the stream OpenSSL reads and writes.
    transport: MemoryTransport,
    /// Buffer bounds.
    limits: TlsLimits,
    /// Plaintext accepted by `write_plaintext*`, not yet encrypted; chunks are kept as given,
    /// so OpenSSL encrypts straight from them.
    pending_plaintext: Chunks,
    /// Where small pending chunks are gathered into one record.
    record: Vec<u8>,
    /// State of the incoming (peer to us) direction.
    read_state: DirectionState,
    /// State of the outgoing (us to peer) direction.
    write_state: WriteState,
    /// Events not yet drained by `poll_event`.
    events: VecDeque<TlsEvent>,
    /// Set when the handshake finished.
    handshake_info: Option<HandshakeInfo>,
}

/// Where the OpenSSL stream is.
#[derive(Debug)]
enum Stage {
    /// The handshake is running.
    Handshaking(Mid),
    /// The handshake finished; records flow.
    Established(Stream),
    /// The stream is gone: the session failed or the transport was lost.
    Gone,
}

/// State of the incoming direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DirectionState {
    /// Data may still arrive.
    Open,
    /// The direction ended: close_notify, truncation or failure.
    Ended,
}

/// State of the outgoing direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteState {
    /// Plaintext is accepted.
    Open,
    /// `close` was called; close_notify goes out after the pending plaintext.
    Closing,
    /// close_notify was sent, or the session is over.
    Ended,
}

impl TlsSession {
    /// Starts a client session that will connect to `server_name`.
    ///
    /// `server_name` is sent as SNI (unless disabled or an IP address) and the server's
    /// certificate must be valid for it (unless
    /// [`danger_accept_invalid_hostnames`](crate::TlsClientConfigBuilder::danger_accept_invalid_hostnames)).
    /// The ClientHello is ready in [`poll_ciphertext`](Self::poll_ciphertext) right away.
    ///
    /// # Errors
    ///
    /// [`TlsError::InvalidServerName`] if `server_name` is empty or contains a NUL byte;
    /// [`TlsError::Handshake`] if OpenSSL cannot set the session up.
    #[doc(alias = "VTLSClient")]
    pub fn client(config: &TlsClientConfig, server_name: &str) -> Result<Self, TlsError> {
        // Checked here because the openssl crate panics on a NUL in the name.
        if server_name.is_empty() || server_name.contains('\0') {
            return Err(TlsError::InvalidServerName {
                name: server_name.to_string(),
            });
        }
        let transport = MemoryTransport::default();
        let started = Step::client(config.connector.connect(server_name, transport.clone()));
        Self::start(TlsRole::Client, config.limits, transport, started)
    }

    /// Starts a server session. It waits for the client's hello.
    ///
    /// # Errors
    ///
    /// [`TlsError::Handshake`] if OpenSSL cannot set the session up.
    #[doc(alias = "VTLSServer")]
    pub fn server(config: &TlsServerConfig) -> Result<Self, TlsError> {
        let transport = MemoryTransport::default();
        let started = Step::server(config.acceptor.accept(transport.clone()));
        Self::start(TlsRole::Server, config.limits, transport, started)
    }

    // ----- inputs -------------------------------------------------------------------------

    /// Feeds ciphertext received from the peer and returns how many bytes were taken.
    ///
    /// At most [`ciphertext_capacity`](Self::ciphertext_capacity) bytes are taken; feed the
    /// rest again later. During the handshake the bytes are processed at once; afterwards they
    /// wait until plaintext is read. Once the incoming direction is over (closed, truncated or
    /// failed), every byte is taken and dropped.
    pub fn handle_ciphertext(&mut self, ciphertext: &[u8]) -> usize {
        self.take_ciphertext(ciphertext.len(), |n| {
            Bytes::copy_from_slice(&ciphertext[..n])
        })
    }

    /// Like [`handle_ciphertext`](Self::handle_ciphertext) for a chunk taken without copying;
    /// returns the part that was not taken (empty when all of it was).
    pub fn handle_ciphertext_bytes(&mut self, mut ciphertext: Bytes) -> Bytes {
        let mut rest = Bytes::new();
        // Moved in whole when it fits: slicing a `Bytes` made from a `Vec` allocates.
        self.take_ciphertext(ciphertext.len(), |n| {
            if n < ciphertext.len() {
                rest = ciphertext.split_off(n);
            }
            ciphertext
        });
        rest
    }

    /// Takes the first bytes of `len` offered, as many as there is room for; `first(n)` gives
    /// them.
    fn take_ciphertext(&mut self, len: usize, first: impl FnOnce(usize) -> Bytes) -> usize {
        if self.read_state == DirectionState::Ended || matches!(self.stage, Stage::Gone) {
            if len > 0 {
                tracing::trace!(len, "dropping ciphertext after the end");
            }
            return len;
        }
        let n = len.min(self.ciphertext_capacity());
        self.transport.lock().incoming.push(first(n));
        self.advance();
        n
    }

    /// Reports that the transport has ended: no more ciphertext will come.
    ///
    /// During the handshake this fails the session with [`TlsError::Truncated`]. Afterwards
    /// the end is found when plaintext has been read up to it: [`TlsEvent::PeerClosed`] if
    /// close_notify came first, else [`TlsEvent::Truncated`].
    pub fn handle_transport_end(&mut self) {
        self.transport.lock().incoming_ended = true;
        self.advance();
    }

    /// Offers plaintext to send and returns how many bytes were taken.
    ///
    /// Accepted during the handshake too; it is encrypted once the handshake is done. At most
    /// [`plaintext_capacity`](Self::plaintext_capacity) bytes are taken, so `Ok(0)` means
    /// "full": drain [`poll_ciphertext`](Self::poll_ciphertext) and try again.
    ///
    /// # Errors
    ///
    /// [`TlsError::Closed`] after [`close`](Self::close), or once the session has failed or
    /// been truncated.
    pub fn write_plaintext(&mut self, plaintext: &[u8]) -> Result<usize, TlsError> {
        if self.write_state != WriteState::Open {
            return Err(TlsError::Closed);
        }
        let n = plaintext.len().min(self.plaintext_capacity());
        self.pending_plaintext
            .push(Bytes::copy_from_slice(&plaintext[..n]));
        self.pump_writes();
        Ok(n)
    }

    /// Like [`write_plaintext`](Self::write_plaintext) for a chunk taken without copying;
    /// returns the part that was not taken (empty when all of it was).
    ///
    /// # Errors
    ///
    /// As [`write_plaintext`](Self::write_plaintext); nothing is taken then.
    pub fn write_plaintext_bytes(&mut self, mut plaintext: Bytes) -> Result<Bytes, TlsError> {
        if self.write_state != WriteState::Open {
            return Err(TlsError::Closed);
        }
        let n = plaintext.len().min(self.plaintext_capacity());
        self.pending_plaintext.push(plaintext.split_to(n));
        self.pump_writes();
        Ok(plaintext)
    }

    /// Like [`write_plaintext`](Self::write_plaintext) for a run of chunks, taken without
    /// copying: as many bytes from the front of `plaintext` as the capacity allows (the last
    /// chunk taken may be split), encrypted in one go. What was not taken stays in
    /// `plaintext`; returns how many bytes were taken.
    ///
    /// # Errors
    ///
    /// As [`write_plaintext`](Self::write_plaintext); nothing is taken then.
    pub fn write_plaintext_chunks(&mut self, plaintext: &mut Chunks) -> Result<u64, TlsError> {
        if self.write_state != WriteState::Open {
            return Err(TlsError::Closed);
        }
        let capacity = self.plaintext_capacity() as u64;
        let taken = if plaintext.byte_len() <= capacity {
            let taken = plaintext.byte_len();
            self.pending_plaintext.append(plaintext);
            taken
        } else {
            let mut head = plaintext.split_to(capacity);
            self.pending_plaintext.append(&mut head);
            capacity
        };
        self.pump_writes();
        Ok(taken)
    }

    /// Asks for a clean end of the outgoing direction: close_notify is sent after all plaintext
    /// written so far (and after the handshake, if it is still running). Calling it again, or
    /// after a failure, does nothing.
    ///
    /// The incoming direction stays open: the peer's close_notify arrives as
    /// [`TlsEvent::PeerClosed`].
    pub fn close(&mut self) {
        if self.write_state == WriteState::Open {
            self.write_state = WriteState::Closing;
            self.pump_writes();
        }
    }

    // ----- outputs ------------------------------------------------------------------------

    /// Takes the ciphertext to send to the peer, if any, all at once.
    ///
    /// Draining it lets the session encrypt more pending plaintext, so call it until `None`
    /// (or until the transport cannot take more).
    pub fn poll_ciphertext(&mut self) -> Option<Bytes> {
        let ciphertext = {
            let mut queues = self.transport.lock();
            if queues.outgoing.is_empty() {
                None
            } else {
                Some(queues.outgoing.split().freeze())
            }
        };
        self.pump_writes();
        ciphertext
    }

    /// Decrypts received data into `buf` and returns how many bytes were written; `0` when
    /// nothing is available now or the incoming direction is over (see
    /// [`poll_event`](Self::poll_event)).
    ///
    /// This is where received records are processed after the handshake: call it (or
    /// [`poll_plaintext`](Self::poll_plaintext)) until it returns `0` to find close_notify,
    /// truncation and failures.
    pub fn read_plaintext(&mut self, buf: &mut [u8]) -> usize {
        if buf.is_empty() || !self.can_read() {
            return 0;
        }
        let Stage::Established(stream) = &mut self.stage else {
            return 0;
        };
        let result = stream.read(buf);
        let n = match result {
            Ok(0) => {
                let end_delivered = self.transport.lock().end_delivered;
                if end_delivered {
                    // OpenSSL 1.1 reports an end without close_notify as a plain EOF.
                    self.lose_transport();
                } else {
                    self.read_state = DirectionState::Ended;
                    self.push_event(TlsEvent::PeerClosed);
                }
                0
            }
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
            Err(error) => {
                match classify(&error, Phase::Data) {
                    // OpenSSL 3: "unexpected eof while reading".
                    TlsError::Truncated => self.lose_transport(),
                    error => self.fail(error),
                }
                0
            }
        };
        // Reading may have processed a record that unblocks writing (e.g. a key update).
        if !self.pending_plaintext.is_empty() || self.write_state == WriteState::Closing {
            self.pump_writes();
        }
        n
    }

    /// Like [`read_plaintext`](Self::read_plaintext), returning up to `max` bytes (and at most
    /// 64 KiB) as `Bytes`, or `None` when nothing is available now or the incoming direction
    /// is over.
    pub fn poll_plaintext(&mut self, max: usize) -> Option<Bytes> {
        if max == 0 || self.read_state == DirectionState::Ended {
            return None;
        }
        // Decrypt into this thread's scratch buffer, zeroed once, and copy out only what was
        // read: zero-filling a fresh 64 KiB for every poll cost more than a whole handshake's
        // worth of our own code.
        thread_local! {
            static SCRATCH: RefCell<Box<[u8]>> =
                RefCell::new(vec![0; MAX_POLL_PLAINTEXT].into_boxed_slice());
        }
        SCRATCH.with_borrow_mut(|scratch| {
            let buf = &mut scratch[..max.min(MAX_POLL_PLAINTEXT)];
            let mut filled = 0;
            while filled < buf.len() {
                let n = self.read_plaintext(&mut buf[filled..]);
                if n == 0 {
                    break;
                }
                filled += n;
            }
            (filled > 0).then(|| Bytes::copy_from_slice(&buf[..filled]))
        })
    }

    /// Whether reading could make progress now: there is ciphertext OpenSSL has not seen, an
    /// end of the transport it has not been told, or decrypted bytes it holds back. When
    /// `false`, [`read_plaintext`](Self::read_plaintext) returns `0` and
    /// [`poll_plaintext`](Self::poll_plaintext) `None` without asking OpenSSL, which could only
    /// ask the transport and hear "would block" (~4 000 instructions a call).
    pub fn can_read(&self) -> bool {
        if self.read_state == DirectionState::Ended {
            return false;
        }
        let Stage::Established(stream) = &self.stage else {
            return false;
        };
        let fresh = {
            let queues = self.transport.lock();
            !queues.incoming.is_empty() || queues.incoming_ended
        };
        fresh || stream.buffered() > 0
    }

    /// Takes the next event, if any.
    pub fn poll_event(&mut self) -> Option<TlsEvent> {
        self.events.pop_front()
    }

    // ----- flow control -------------------------------------------------------------------

    /// How many ciphertext bytes [`handle_ciphertext`](Self::handle_ciphertext) would take
    /// now: the room left in the incoming queue. `0` means "stop reading the transport until
    /// plaintext has been read".
    pub fn ciphertext_capacity(&self) -> usize {
        let queued = self.transport.lock().incoming.len();
        self.limits.incoming_ciphertext().saturating_sub(queued)
    }

    /// How many plaintext bytes [`write_plaintext`](Self::write_plaintext) would take now;
    /// `0` once the outgoing direction is closed.
    pub fn plaintext_capacity(&self) -> usize {
        if self.write_state != WriteState::Open {
            return 0;
        }
        // At most the limit, a usize.
        self.limits
            .outgoing_plaintext()
            .saturating_sub(self.pending_plaintext.byte_len() as usize)
    }

    /// `true` when [`poll_ciphertext`](Self::poll_ciphertext) has bytes to send.
    pub fn wants_write(&self) -> bool {
        !self.transport.lock().outgoing.is_empty()
    }

    // ----- state --------------------------------------------------------------------------

    /// Client or server.
    pub fn role(&self) -> TlsRole {
        self.role
    }

    /// `true` until the handshake has finished or failed.
    pub fn is_handshaking(&self) -> bool {
        matches!(self.stage, Stage::Handshaking(_))
    }

    /// `true` once the incoming direction is over: the peer's close_notify was read, the
    /// transport was lost, or the session failed.
    pub fn is_read_closed(&self) -> bool {
        self.read_state == DirectionState::Ended
    }

    /// `true` once our close_notify has been produced, or the session is over.
    pub fn is_write_closed(&self) -> bool {
        self.write_state == WriteState::Ended
    }

    /// `true` when nothing more will happen: both directions are over and every output has
    /// been drained. The driver can drop the session and close the transport.
    pub fn is_finished(&self) -> bool {
        self.is_read_closed()
            && self.is_write_closed()
            && self.events.is_empty()
            && !self.wants_write()
    }

    /// What the handshake established, once it has finished.
    pub fn handshake_info(&self) -> Option<&HandshakeInfo> {
        self.handshake_info.as_ref()
    }

    /// The buffer bounds in force.
    pub fn limits(&self) -> TlsLimits {
        self.limits
    }

    // ----- helpers ------------------------------------------------------------------------

    /// Builds a session from the first handshake step.
    fn start(
        role: TlsRole,
        limits: TlsLimits,
        transport: MemoryTransport,
        started: Step,
    ) -> Result<Self, TlsError> {
        let mut session = TlsSession {
            role,
            stage: Stage::Gone,
            transport,
            limits,
            pending_plaintext: Chunks::new(),
            record: Vec::new(),
            read_state: DirectionState::Open,
            write_state: WriteState::Open,
            events: VecDeque::new(),
            handshake_info: None,
        };
        match started {
            Step::Done(stream) => session.establish(stream),
            Step::Again(mid) => session.stage = Stage::Handshaking(mid),
            Step::Failed(error) => return Err(error),
        }
        Ok(session)
    }

    /// Moves the session forward after an input: continues the handshake, or encrypts
    /// pending plaintext.
    fn advance(&mut self) {
        if let Stage::Handshaking(_) = self.stage {
            let Stage::Handshaking(mid) = mem::replace(&mut self.stage, Stage::Gone) else {
                return;
            };
            match mid.resume() {
                Step::Done(stream) => self.establish(stream),
                Step::Again(mid) => self.stage = Stage::Handshaking(mid),
                Step::Failed(error) => self.fail(error),
            }
        } else {
            self.pump_writes();
        }
    }

    /// Records a finished handshake and starts sending pending plaintext.
    fn establish(&mut self, stream: Stream) {
        let info = HandshakeInfo::from_stream(&stream);
        tracing::debug!(role = ?self.role, alpn = ?info.alpn_protocol, "tls handshake done");
        self.stage = Stage::Established(stream);
        self.handshake_info = Some(info.clone());
        self.push_event(TlsEvent::HandshakeDone(info));
        self.pump_writes();
    }

    /// Encrypts pending plaintext while the outgoing ciphertext queue is below its bound, then
    /// sends close_notify if it was asked for and everything is written.
    fn pump_writes(&mut self) {
        let Stage::Established(stream) = &mut self.stage else {
            return;
        };
        let mut failure = None;
        while let Some(front) = self.pending_plaintext.front() {
            let queued = self.transport.lock().outgoing.len();
            if queued >= self.limits.outgoing_ciphertext() {
                break;
            }
            // A record straight from the front chunk when it fills one (or is all there is);
            // small chunks queued behind each other are gathered into one record instead.
            let record = if front.len() >= MAX_RECORD_PLAINTEXT || self.pending_plaintext.len() == 1
            {
                &front[..front.len().min(MAX_RECORD_PLAINTEXT)]
            } else {
                self.record.clear();
                for chunk in self.pending_plaintext.iter() {
                    let room = MAX_RECORD_PLAINTEXT - self.record.len();
                    self.record
                        .extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if self.record.len() == MAX_RECORD_PLAINTEXT {
                        break;
                    }
                }
                &self.record[..]
            };
            match stream.write(record) {
                Ok(0) => break,
                Ok(written) => self.pending_plaintext.advance(written as u64),
                // OpenSSL needs to read first (a renegotiation); retried after the next input.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => break,
                Err(error) => {
                    failure = Some(classify(&error, Phase::Data));
                    break;
                }
            }
        }
        if failure.is_none()
            && self.pending_plaintext.is_empty()
            && self.write_state == WriteState::Closing
        {
            match stream.shutdown() {
                Ok(()) => {
                    tracing::debug!(role = ?self.role, "close_notify sent");
                    self.write_state = WriteState::Ended;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(error) => failure = Some(classify(&error, Phase::Data)),
            }
        }
        if let Some(error) = failure {
            self.fail(error);
        }
    }

    /// Ends the session after the transport ended without close_notify, past the handshake.
    fn lose_transport(&mut self) {
        tracing::debug!(role = ?self.role, "transport ended without close_notify");
        self.end_everything();
        self.push_event(TlsEvent::Truncated);
    }

    /// Ends the session with an error. Outgoing ciphertext (an alert) stays drainable.
    fn fail(&mut self, error: TlsError) {
        tracing::debug!(role = ?self.role, %error, "tls session failed");
        self.end_everything();
        self.push_event(TlsEvent::Failed(error));
    }

    /// Drops the OpenSSL stream, the queued input and the pending plaintext.
    fn end_everything(&mut self) {
        self.stage = Stage::Gone;
        self.read_state = DirectionState::Ended;
        self.write_state = WriteState::Ended;
        self.pending_plaintext = Chunks::new();
        self.transport.lock().incoming = Incoming::default();
    }

    /// Queues an event.
    fn push_event(&mut self, event: TlsEvent) {
        self.events.push_back(event);
    }
}
