//! [`TlsElement`]: a [`TlsSession`] as a chain element, ciphertext on one side and plaintext
//! on the other, with credit passed through in both directions.

use std::fmt;
use std::sync::{Arc, Weak};

use bytes::{Bytes, BytesMut};
use parking_lot::{Mutex, MutexGuard};
use weir_io::{
    ByteConsumer, ByteIoPair, ByteProducer, Chunks, ControlReply, Credentials, Credit, Ending,
    IoControl, Link, LinkSlot,
};
use weir_reactor::{Reactor, Timer};

use crate::{
    HandshakeInfo, TlsClientConfig, TlsError, TlsEvent, TlsRole, TlsServerConfig, TlsSession,
};

/// Bytes moved by one pump before it yields to other work on the reactor.
const TURN_BUDGET: usize = 256 * 1024;

/// Most plaintext bytes asked of the session at once.
const PLAINTEXT_CHUNK: usize = 64 * 1024;

/// The callback told every [`TlsEvent`].
type EventCallback = Box<dyn FnMut(&TlsEvent) + Send>;

/// A TLS client or server that sits anywhere in a chain between a byte transport and the
/// application.
///
/// Versile `VTLSTransport` (`VTLSClient`, `VTLSServer`), without the loopback socket pair:
/// the session is sans-IO ([`TlsSession`], on OpenSSL) and the element moves its bytes.
///
/// ```text
///                   cipher_io()                              plain_io()
///  transport ──ciphertext──▶ consumer ┐              ┌ producer ──plaintext──▶ application
///  producer                           ├─ TlsSession ─┤                          consumer
///  transport ◀──ciphertext── producer ┘              └ consumer ◀──plaintext── application
///  consumer                                                                     producer
/// ```
///
/// Attach [`cipher_io`](Self::cipher_io) to a transport's pair (a socket or pipe
/// `StreamAgent`, another element) and [`plain_io`](Self::plain_io) to the application's.
/// [`net`](crate::net) does it for TCP in one call.
///
/// # Flow control
///
/// The element never buffers without bound, and backpressure crosses it both ways:
///
/// - The transport gets credit only for the room in the session's incoming ciphertext queue.
///   Received records are decrypted only as far as the application's credit allows, so a slow
///   reader fills that queue and the transport stops reading (a TCP peer is then slowed by
///   its own window).
/// - The application gets credit only for what the session's plaintext queue can take, which
///   is freed as the transport's credit lets ciphertext out.
///
/// Besides the session's bounded queues ([`TlsLimits`](crate::TlsLimits)), the element holds
/// at most one drained batch of ciphertext waiting for transport credit.
///
/// # Handshake and authorization
///
/// A client's ClientHello goes out as soon as the transport side is attached and has credit.
/// When the handshake is done the element sends [`IoControl::Authorize`] down the plaintext
/// side, with protocol `"TLS"`, the peer certificate's subject as identity and its leaf
/// certificate (DER); a server has them from clients it asks for certificates
/// ([`ClientAuth`](crate::ClientAuth)), and otherwise sends no identity and no certificate.
/// [`ControlReply::Denied`] aborts all four links and records [`TlsError::Unauthorized`]. No
/// plaintext flows in either direction before that answer. With no consumer attached to
/// [`plain_io`](Self::plain_io)'s producer when the handshake ends (a write-only
/// application), nobody objects and data flows; a consumer attached later is asked then and
/// may still veto.
///
/// # Ends
///
/// | what happens | transport side | application side |
/// |---|---|---|
/// | the application's stream ends `Completed` | close_notify, then end `Completed` | - |
/// | the application's stream ends `Lost` | end `Lost` (no close_notify) | - |
/// | close_notify arrives | input aborted (nothing may follow) | end `Completed` ([`is_peer_closed`](Self::is_peer_closed)) |
/// | transport ends without close_notify | end `Lost` | end `Lost` ([`is_truncated`](Self::is_truncated)) |
/// | handshake or verification fails | alert, then end `Lost` | end `Lost`, [`error`](Self::error) |
///
/// An abort travels along its own direction: an abort of the application's consumer aborts
/// the transport's producer and the other way round; likewise for the other direction. During
/// the handshake, which needs both directions, any abort aborts everything.
///
/// # Control messages
///
/// Messages pass through: from the transport's producer (e.g. [`IoControl::Connected`]) to the
/// application's consumer, from the application's consumer (e.g.
/// [`IoControl::ReqProducerState`]) to the transport's producer, and likewise for the other
/// direction. When the application's consumer attaches, the element asks the transport for
/// its state, so a late consumer still learns `Connected`.
///
/// # Threading and re-entrancy
///
/// `TlsElement` is `Send + Sync + Clone`; its getters work from any thread. The session runs
/// on the reactor thread only, behind a lock that is never held while calling anything that
/// can come back (a delivery, an end, an abort, a control message, the event callback). Work
/// triggered from inside a delivery is folded into the pump already running, so the element
/// never re-enters itself.
///
/// # Examples
///
/// Two elements wired to each other, without any transport:
///
/// ```no_run
/// use weir_reactor::Reactor;
/// use weir_tls::{TlsClientConfig, TlsElement, TlsIdentity, TlsServerConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let reactor = Reactor::new()?;
/// let identity = TlsIdentity::from_pem_files("localhost.pem", "localhost-key.pem")?;
/// let server = TlsElement::server(&reactor, &TlsServerConfig::builder(identity).build()?)?;
/// let config = TlsClientConfig::builder().build()?;
/// let client = TlsElement::client(&reactor, &config, "localhost")?;
/// client.cipher_io().attach(&server.cipher_io())?;
/// // Attach the applications to client.plain_io() and server.plain_io().
/// # Ok(())
/// # }
/// ```
#[doc(alias = "VTLSTransport")]
#[doc(alias = "VTLSClient")]
#[doc(alias = "VTLSServer")]
#[derive(Clone)]
pub struct TlsElement {
    /// Shared with the four facades.
    inner: Arc<Inner>,
}

/// The state the four sides share.
struct Inner {
    /// The reactor everything runs on.
    reactor: Reactor,
    /// This element, for the pumps it queues.
    me: Weak<Inner>,
    /// Client or server.
    role: TlsRole,
    /// Link from the transport's producer (ciphertext in).
    cipher_in: LinkSlot,
    /// Link to the transport's consumer (ciphertext out).
    cipher_out: LinkSlot,
    /// Link from the application's producer (plaintext in).
    plain_in: LinkSlot,
    /// Link to the application's consumer (plaintext out).
    plain_out: LinkSlot,
    /// The session and everything else that changes, under one lock (one lock taken is one
    /// locked instruction pair fewer, and the pump takes many). Never held while calling
    /// anything that can come back into the element; held across a grant, which only
    /// raises the link's counters and queues the producer's call.
    state: Mutex<State>,
    /// Told every event.
    on_event: Mutex<Option<EventCallback>>,
}

/// Whether the peer has been authorized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Authorization {
    /// Not asked yet.
    Pending,
    /// The question is out.
    Asking,
    /// The application did not object.
    Allowed,
    /// The application objected.
    Denied,
}

/// Mutable part of [`Inner`].
struct State {
    /// The TLS state machine.
    session: TlsSession,
    /// The handshake deadline, armed once when the transport attaches.
    handshake_timer: Option<Timer>,
    /// A pump is running; a nested one only sets `again`.
    pumping: bool,
    /// Something changed while the pump ran: run it once more.
    again: bool,
    /// A pump is queued on the reactor.
    pump_queued: bool,
    /// Ciphertext delivered by the transport that the session has not taken yet.
    cipher_held: BytesMut,
    /// The transport ended; told to the session once `cipher_held` is fed.
    transport_ended: bool,
    /// `handle_transport_end` has been called.
    transport_end_told: bool,
    /// Ciphertext drained from the session, waiting for transport credit.
    cipher_pending: Option<Bytes>,
    /// Plaintext delivered by the application that the session has not taken yet.
    plain_held: Chunks,
    /// How the application's stream ended, once it has.
    app_ending: Option<Ending>,
    /// We stopped taking the application's plaintext (the session cannot send any more).
    plain_in_closed: bool,
    /// `close` has been called on the session.
    close_told: bool,
    /// The handshake finished.
    handshake_done: bool,
    /// What the handshake established.
    info: Option<HandshakeInfo>,
    /// Where authorization stands.
    authorization: Authorization,
    /// The peer was allowed with no consumer to ask: ask the first one that attaches.
    authorize_late: bool,
    /// How the plaintext output is to end, once known.
    plain_out_ending: Option<Ending>,
    /// The plaintext output has ended.
    plain_out_ended: bool,
    /// The ciphertext output has ended (or was aborted).
    cipher_out_ended: bool,
    /// The transport aborted the ciphertext output: nothing can be sent any more.
    cipher_out_broken: bool,
    /// The ciphertext input is no longer wanted (failure, abort).
    cipher_in_closed: bool,
    /// The peer sent close_notify.
    peer_closed: bool,
    /// The transport ended without close_notify after the handshake.
    truncated: bool,
    /// The first failure.
    error: Option<Arc<TlsError>>,
    /// Everything was aborted.
    aborted: bool,
}

/// The element's state, locked.
type Locked<'a> = MutexGuard<'a, State>;

impl State {
    /// Whether the application's plaintext is still wanted (its stream has not ended, and the
    /// session can still send).
    fn takes_plaintext(&self) -> bool {
        self.app_ending.is_none() && !self.plain_in_closed && !self.cipher_out_ended
    }

    /// Credit for the transport's producer: room in the session's ciphertext queue.
    fn cipher_credit(&self, link: &Link) -> Credit {
        if self.cipher_in_closed {
            return link.credit();
        }
        let room = self.session.ciphertext_capacity();
        link.window(room.saturating_sub(self.cipher_held.len()) as u64)
    }

    /// Credit for the application's producer: room in the session's plaintext queue, once
    /// the peer is authorized.
    fn plain_credit(&self, link: &Link) -> Credit {
        if self.authorization != Authorization::Allowed
            || self.app_ending.is_some()
            || self.plain_in_closed
        {
            return link.credit();
        }
        let room = self.session.plaintext_capacity() as u64;
        link.window(room.saturating_sub(self.plain_held.byte_len()))
    }

    /// What the application is told about the peer.
    fn credentials(&self) -> Credentials {
        let certificate = self
            .info
            .as_ref()
            .and_then(|info| info.peer_certificate_der().map(<[u8]>::to_vec));
        Credentials {
            protocol: "TLS".to_string(),
            identity: certificate.as_deref().and_then(subject_of),
            certificates: certificate.into_iter().collect(),
        }
    }
}

/// Feeds held ciphertext and plaintext to the session, then the transport's end and the
/// application's close once nothing is held before them.
fn feed_held(state: &mut State) -> bool {
    let transport_end = state.transport_ended && !state.transport_end_told;
    let close = state.app_ending == Some(Ending::Completed) && !state.close_told;
    if state.cipher_held.is_empty() && state.plain_held.is_empty() && !transport_end && !close {
        return false;
    }
    let mut moved = false;
    if !state.cipher_held.is_empty() {
        let n = state.session.handle_ciphertext(&state.cipher_held);
        moved |= n > 0;
        let _ = state.cipher_held.split_to(n);
    }
    if !state.plain_held.is_empty() {
        match state.session.write_plaintext_chunks(&mut state.plain_held) {
            Ok(n) => moved |= n > 0,
            Err(_) => {
                // A closed session drops the data; `pass_ends` aborts the link then.
                state.plain_held.clear();
                moved = true;
            }
        }
    }
    if transport_end && state.cipher_held.is_empty() {
        state.session.handle_transport_end();
        state.transport_end_told = true;
        moved = true;
    }
    if close && state.plain_held.is_empty() {
        state.session.close();
        state.close_told = true;
        moved = true;
    }
    moved
}

/// Consumes ciphertext from the transport.
struct CipherConsumer(Arc<Inner>);
/// Produces ciphertext for the transport.
struct CipherProducer(Arc<Inner>);
/// Consumes plaintext from the application.
struct PlainConsumer(Arc<Inner>);
/// Produces plaintext for the application.
struct PlainProducer(Arc<Inner>);

impl TlsElement {
    /// A client element that connects to `server_name` (sent as SNI and checked against the
    /// server's certificate, as `config` says).
    ///
    /// # Errors
    ///
    /// As [`TlsSession::client`]: an invalid server name, or OpenSSL refusing to start.
    #[doc(alias = "VTLSClient")]
    pub fn client(
        reactor: &Reactor,
        config: &TlsClientConfig,
        server_name: &str,
    ) -> Result<TlsElement, TlsError> {
        Ok(TlsElement::from_session(
            reactor,
            TlsSession::client(config, server_name)?,
        ))
    }

    /// A server element presenting `config`'s identity.
    ///
    /// # Errors
    ///
    /// As [`TlsSession::server`].
    #[doc(alias = "VTLSServer")]
    pub fn server(reactor: &Reactor, config: &TlsServerConfig) -> Result<TlsElement, TlsError> {
        Ok(TlsElement::from_session(
            reactor,
            TlsSession::server(config)?,
        ))
    }

    /// An element driving a session that has not been used yet.
    pub fn from_session(reactor: &Reactor, session: TlsSession) -> TlsElement {
        let inner = Arc::new_cyclic(|me| Inner {
            reactor: reactor.clone(),
            me: me.clone(),
            role: session.role(),
            cipher_in: LinkSlot::new(),
            cipher_out: LinkSlot::new(),
            plain_in: LinkSlot::new(),
            plain_out: LinkSlot::new(),
            state: Mutex::new(State {
                session,
                handshake_timer: None,
                pumping: false,
                again: false,
                pump_queued: false,
                cipher_held: BytesMut::new(),
                transport_ended: false,
                transport_end_told: false,
                cipher_pending: None,
                plain_held: Chunks::new(),
                app_ending: None,
                plain_in_closed: false,
                close_told: false,
                handshake_done: false,
                info: None,
                authorization: Authorization::Pending,
                authorize_late: false,
                plain_out_ending: None,
                plain_out_ended: false,
                cipher_out_ended: false,
                cipher_out_broken: false,
                cipher_in_closed: false,
                peer_closed: false,
                truncated: false,
                error: None,
                aborted: false,
            }),
            on_event: Mutex::new(None),
        });
        TlsElement { inner }
    }

    /// The ciphertext side: attach it to the transport's pair (its consumer takes what the
    /// transport reads, its producer feeds what the transport writes).
    pub fn cipher_io(&self) -> ByteIoPair {
        ByteIoPair::new(
            Arc::new(CipherConsumer(self.inner.clone())),
            Arc::new(CipherProducer(self.inner.clone())),
        )
    }

    /// The plaintext side: attach it to the application's pair.
    pub fn plain_io(&self) -> ByteIoPair {
        ByteIoPair::new(
            Arc::new(PlainConsumer(self.inner.clone())),
            Arc::new(PlainProducer(self.inner.clone())),
        )
    }

    /// Calls `f` on the reactor thread with every event of the session, in order: the end of
    /// the handshake, close_notify, truncation, and failures, including
    /// [`TlsError::Unauthorized`] when the application vetoed the peer. Replaces an earlier
    /// callback. `f` must not block; it may call this element's getters.
    pub fn set_on_event(&self, f: impl FnMut(&TlsEvent) + Send + 'static) {
        *self.inner.on_event.lock() = Some(Box::new(f));
    }

    /// The first failure: a rejected certificate, a handshake or protocol error, a veto.
    pub fn error(&self) -> Option<Arc<TlsError>> {
        self.inner.state.lock().error.clone()
    }

    /// What the handshake established, once it is done.
    pub fn handshake_info(&self) -> Option<HandshakeInfo> {
        self.inner.state.lock().info.clone()
    }

    /// Whether the handshake has finished.
    pub fn is_handshake_done(&self) -> bool {
        self.inner.state.lock().handshake_done
    }

    /// Whether the peer ended its stream cleanly with close_notify.
    pub fn is_peer_closed(&self) -> bool {
        self.inner.state.lock().peer_closed
    }

    /// Whether the transport ended without close_notify after the handshake: the data
    /// received may have been cut short.
    pub fn is_truncated(&self) -> bool {
        self.inner.state.lock().truncated
    }

    /// Client or server.
    pub fn role(&self) -> TlsRole {
        self.inner.role
    }

    /// Bytes the element holds outside the session's own queues: ciphertext waiting for
    /// transport credit, and input the session could not take yet.
    pub fn buffered(&self) -> usize {
        let state = self.inner.state.lock();
        state.cipher_pending.as_ref().map_or(0, Bytes::len)
            + state.cipher_held.len()
            + state.plain_held.byte_len() as usize
    }
}

impl TlsElement {
    /// Attaches the ciphertext side to `transport`. A transport that has already ended (a
    /// connect that failed before the attach) counts as ended, so the application is told.
    pub(crate) fn attach_transport(&self, transport: &ByteIoPair) {
        let cipher = self.cipher_io();
        let input = weir_io::attach(&transport.producer, &cipher.consumer).is_err();
        let output = weir_io::attach(&cipher.producer, &transport.consumer).is_err();
        if input || output {
            let inner = self.inner.clone();
            self.inner
                .reactor
                .execute(move || inner.transport_unavailable(input, output));
        }
    }
}

impl fmt::Debug for TlsElement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("TlsElement")
            .field("role", &self.inner.role)
            .field("handshake_done", &state.handshake_done)
            .field("authorization", &state.authorization)
            .field("peer_closed", &state.peer_closed)
            .field("truncated", &state.truncated)
            .field("error", &state.error)
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// Moves everything that can move: feeds held input, drains ciphertext and plaintext as
    /// credit allows, handles events, authorizes, passes ends on and regrants credit.
    ///
    /// One lock for the whole pass: each step works on the locked state and lets go of it
    /// only around its calls out (deliveries, ends, aborts, the event callback), which may
    /// come back into the element. Taking it afresh for every check cost more than all the
    /// rest of the element's own work in a handshake.
    fn pump(&self) {
        drop(self.pump_locked(self.state.lock()));
    }

    /// [`pump`](Self::pump) with the state already locked, handing the lock back: a consumer
    /// that has fed its input computes its credit under the same lock.
    fn pump_locked<'a>(&'a self, mut state: Locked<'a>) -> Locked<'a> {
        if state.pumping {
            state.again = true;
            return state;
        }
        state.pumping = true;
        let mut budget = TURN_BUDGET;
        loop {
            state.again = false;
            let mut moved = feed_held(&mut state);
            moved |= self.send_plaintext(&mut state, &mut budget);
            // After the reads: one can write without giving plaintext (the ClientHello of a
            // renegotiation the server asked for), and nothing else would send it.
            moved |= self.send_ciphertext(&mut state, &mut budget);
            moved |= self.handle_events(&mut state);
            self.check_output_broken(&mut state);
            moved |= self.authorize_if_due(&mut state);
            self.pass_ends(&mut state);
            if budget == 0 {
                state.pumping = false;
                self.regrant(&state);
                self.queue_pump(&mut state);
                return state;
            }
            if !moved && !state.again {
                state.pumping = false;
                self.regrant(&state);
                return state;
            }
        }
    }

    /// Runs a pump from the reactor's queue (once for any number of requests).
    fn queue_pump(&self, state: &mut State) {
        if state.pump_queued {
            return;
        }
        state.pump_queued = true;
        let Some(me) = self.me.upgrade() else { return };
        self.reactor.call(move || {
            let mut state = me.state.lock();
            state.pump_queued = false;
            drop(me.pump_locked(state));
        });
    }

    /// Delivers ciphertext to the transport as its credit allows.
    fn send_ciphertext(&self, state: &mut Locked<'_>, budget: &mut usize) -> bool {
        if state.cipher_pending.is_none() && !state.session.wants_write() {
            return false;
        }
        let Some(link) = self.cipher_out.link() else {
            return false;
        };
        let mut moved = false;
        while *budget > 0 {
            let remaining = link.remaining();
            if remaining == 0 {
                break;
            }
            let data = match state.cipher_pending.take() {
                Some(data) => Some(data),
                None => state.session.poll_ciphertext(),
            };
            let Some(mut data) = data else { break };
            let n = usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(data.len());
            let chunk = data.split_to(n);
            if !data.is_empty() {
                state.cipher_pending = Some(data);
            }
            *budget = budget.saturating_sub(n);
            if Locked::unlocked(state, || link.deliver(chunk)).is_err() {
                break;
            }
            moved = true;
        }
        moved
    }

    /// Decrypts and delivers plaintext to the application as its credit allows, once the
    /// peer is authorized.
    fn send_plaintext(&self, state: &mut Locked<'_>, budget: &mut usize) -> bool {
        if state.authorization != Authorization::Allowed || !state.session.can_read() {
            return false;
        }
        let Some(link) = self.plain_out.link() else {
            return false;
        };
        let mut moved = false;
        while *budget > 0 && state.authorization == Authorization::Allowed {
            let remaining = link.remaining();
            if remaining == 0 {
                break;
            }
            let max = usize::try_from(remaining)
                .unwrap_or(usize::MAX)
                .min(PLAINTEXT_CHUNK);
            let Some(data) = state.session.poll_plaintext(max) else {
                break;
            };
            *budget = budget.saturating_sub(data.len());
            if Locked::unlocked(state, || link.deliver(data)).is_err() {
                break;
            }
            moved = true;
        }
        moved
    }

    /// Drains the session's events.
    fn handle_events(&self, state: &mut Locked<'_>) -> bool {
        let mut moved = false;
        while let Some(event) = state.session.poll_event() {
            moved = true;
            Locked::unlocked(state, || self.notify(&event));
            match event {
                TlsEvent::HandshakeDone(info) => {
                    state.handshake_done = true;
                    state.info = Some(info);
                    if let Some(timer) = &state.handshake_timer {
                        timer.cancel();
                    }
                }
                TlsEvent::PeerClosed => {
                    state.peer_closed = true;
                    state.plain_out_ending.get_or_insert(Ending::Completed);
                    state.cipher_in_closed = true;
                    // Nothing may follow close_notify: the transport can stop reading.
                    Locked::unlocked(state, || abort_slot(&self.cipher_in));
                }
                TlsEvent::Truncated => {
                    state.truncated = true;
                    state.plain_out_ending.get_or_insert(Ending::Lost);
                }
                TlsEvent::Failed(error) => self.fail(state, error),
            }
        }
        moved
    }

    /// Acts on a ciphertext output aborted by the transport: during the handshake the session
    /// cannot go on; afterwards the application's producer is told it can write no more.
    fn check_output_broken(&self, state: &mut Locked<'_>) {
        if !state.cipher_out_broken {
            return;
        }
        let handshaking = !state.handshake_done && state.error.is_none();
        let stop_input = !state.plain_in_closed;
        state.plain_in_closed = true;
        if handshaking {
            Locked::unlocked(state, || {
                self.notify(&TlsEvent::Failed(TlsError::Truncated));
            });
            self.fail(state, TlsError::Truncated);
            Locked::unlocked(state, || abort_slot(&self.cipher_in));
        } else if stop_input {
            Locked::unlocked(state, || abort_slot(&self.plain_in));
        }
    }

    /// The transport ended before the ciphertext side could be attached.
    fn transport_unavailable(&self, input: bool, output: bool) {
        {
            let mut state = self.state.lock();
            state.transport_ended |= input;
            if output {
                state.cipher_out_ended = true;
                state.cipher_out_broken = true;
            }
        }
        self.pump();
    }

    /// Tells the event callback.
    fn notify(&self, event: &TlsEvent) {
        // Taken out while it runs, so that it may call back into the element.
        let callback = self.on_event.lock().take();
        if let Some(mut callback) = callback {
            callback(event);
            let mut slot = self.on_event.lock();
            if slot.is_none() {
                *slot = Some(callback);
            }
        }
    }

    /// Records a failure: the plaintext output ends `Lost`, input stops, the application can
    /// write no more; the alert is still sent before the transport output ends.
    fn fail(&self, state: &mut Locked<'_>, error: TlsError) {
        tracing::debug!(role = ?self.role, %error, "tls element failed");
        state.error.get_or_insert_with(|| Arc::new(error));
        state.plain_out_ending.get_or_insert(Ending::Lost);
        state.cipher_in_closed = true;
        state.plain_in_closed = true;
        state.cipher_held.clear();
        state.plain_held.clear();
        // The transport's input is aborted only once the alert is out (`pass_ends`): on a
        // transport that is another element, the abort would otherwise overtake the alert.
        Locked::unlocked(state, || abort_slot(&self.plain_in));
    }

    /// Sends `Authorize` to the application once the handshake is done and its consumer is
    /// attached; a veto aborts everything.
    fn authorize_if_due(&self, state: &mut Locked<'_>) -> bool {
        if !state.handshake_done
            || state.authorization != Authorization::Pending
            || state.error.is_some()
        {
            return false;
        }
        let Some(link) = self.plain_out.link().filter(|l| l.is_open()) else {
            if self.plain_out.link().is_none() {
                // No consumer to ask (a write-only application): nobody objects now. A
                // consumer that attaches later is asked then, and may still veto.
                state.authorization = Authorization::Allowed;
                state.authorize_late = true;
                return true;
            }
            return false;
        };
        state.authorization = Authorization::Asking;
        let question = IoControl::Authorize(state.credentials());
        let reply = Locked::unlocked(state, || link.control_downstream(&question));
        if reply == ControlReply::Denied {
            Locked::unlocked(state, || self.deny());
        } else if state.authorization == Authorization::Asking {
            state.authorization = Authorization::Allowed;
        }
        true
    }

    /// The application vetoed the peer: abort everything.
    fn deny(&self) {
        tracing::debug!(role = ?self.role, "peer refused by the application");
        self.state.lock().authorization = Authorization::Denied;
        self.give_up(TlsError::Unauthorized);
    }

    /// Arms the handshake deadline, once, when the transport attaches.
    fn arm_handshake_timeout(&self) {
        let mut state = self.state.lock();
        let Some(after) = state.session.limits().handshake_timeout() else {
            return;
        };
        if state.handshake_timer.is_some() || state.handshake_done || state.error.is_some() {
            return;
        }
        let me = self.me.clone();
        state.handshake_timer = Some(self.reactor.schedule(after, move || {
            if let Some(inner) = me.upgrade() {
                if inner.is_handshaking() {
                    tracing::debug!(role = ?inner.role, ?after, "tls handshake timed out");
                    inner.give_up(TlsError::HandshakeTimeout { after });
                }
            }
        }));
    }

    /// Fails with `error` and aborts everything, with no alert: the peer is not worth one.
    fn give_up(&self, error: TlsError) {
        let event = TlsEvent::Failed(error);
        self.notify(&event);
        if let TlsEvent::Failed(error) = event {
            self.state
                .lock()
                .error
                .get_or_insert_with(|| Arc::new(error));
        }
        self.abort_all();
    }

    /// Passes ends on: the plaintext output's, and the ciphertext output's once the session
    /// has nothing more to send.
    fn pass_ends(&self, state: &mut Locked<'_>) {
        // The plaintext output.
        if let Some(ending) = state.plain_out_ending.filter(|_| !state.plain_out_ended) {
            if let Some(link) = self.plain_out.link().filter(|l| l.is_open()) {
                state.plain_out_ended = true;
                Locked::unlocked(state, || link.end(ending));
            }
        }

        // The ciphertext output.
        if state.cipher_out_ended {
            return;
        }
        let write_closed = state.session.is_write_closed();
        let ending = if state.app_ending == Some(Ending::Lost) {
            // The application's stream broke: no close_notify, the peer sees truncation.
            Ending::Lost
        } else if write_closed && !state.session.wants_write() && state.cipher_pending.is_none() {
            let clean = state.close_told && state.error.is_none() && !state.truncated;
            if clean {
                Ending::Completed
            } else {
                Ending::Lost
            }
        } else {
            return;
        };
        if write_closed && state.app_ending.is_none() && !state.plain_in_closed {
            state.plain_in_closed = true;
            // The session takes no more plaintext: let the application's producer know.
            Locked::unlocked(state, || abort_slot(&self.plain_in));
        }
        if let Some(link) = self.cipher_out.link().filter(|l| l.is_open()) {
            state.cipher_out_ended = true;
            Locked::unlocked(state, || link.end(ending));
            if state.error.is_some() {
                Locked::unlocked(state, || abort_slot(&self.cipher_in));
            }
        }
    }

    /// Raises the credit of both inputs to what the session can take now, once as a pump
    /// ends: a grant only queues the producer's `on_credit`, which runs after the pump
    /// anyway. (It does not come back into the element, so the lock may stay held.)
    fn regrant(&self, state: &State) {
        if let Some(link) = self.cipher_in.link() {
            link.grant(state.cipher_credit(&link));
        }
        if let Some(link) = self.plain_in.link() {
            link.grant(state.plain_credit(&link));
        }
    }

    /// Credit for the transport's producer.
    fn cipher_credit(&self, link: &Link) -> Credit {
        self.state.lock().cipher_credit(link)
    }

    /// Credit for the application's producer.
    fn plain_credit(&self, link: &Link) -> Credit {
        self.state.lock().plain_credit(link)
    }

    /// Aborts all four links and drops what is held.
    fn abort_all(&self) {
        {
            let mut state = self.state.lock();
            if state.aborted {
                return;
            }
            if let Some(timer) = &state.handshake_timer {
                timer.cancel();
            }
            state.aborted = true;
            state.cipher_in_closed = true;
            state.cipher_out_ended = true;
            state.plain_in_closed = true;
            state.plain_out_ended = true;
            state.app_ending.get_or_insert(Ending::Lost);
            state.cipher_pending = None;
            state.cipher_held.clear();
            state.plain_held.clear();
        }
        for slot in [
            &self.cipher_in,
            &self.cipher_out,
            &self.plain_in,
            &self.plain_out,
        ] {
            abort_slot(slot);
        }
    }

    /// Whether the handshake is still running (and has not failed).
    fn is_handshaking(&self) -> bool {
        let state = self.state.lock();
        !state.handshake_done && state.error.is_none()
    }

    /// Passes a control message to the link in `slot`, downstream or upstream.
    fn forward(&self, slot: &LinkSlot, message: &IoControl, downstream: bool) -> ControlReply {
        if matches!(
            message,
            IoControl::NotifyConsumerAttached | IoControl::NotifyProducerAttached
        ) {
            return ControlReply::Unsupported;
        }
        match slot.link() {
            Some(link) if downstream => link.control_downstream(message),
            Some(link) => link.control_upstream(message),
            None => ControlReply::Unsupported,
        }
    }
}

/// Aborts the link in `slot` and marks that side ended. An empty slot stays attachable: the
/// side's `on_attached` aborts a late link, so that whoever attaches still learns the end.
fn abort_slot(slot: &LinkSlot) {
    if let Some(link) = slot.link() {
        slot.mark_ended();
        link.abort();
    }
}

/// The subject of a DER certificate in RFC 4514 form (`CN=localhost,O=weir`), when it parses.
///
/// The last answer is kept with its certificate: a client meets the same server certificate
/// connection after connection, and parsing it and looking up its attribute names costs about
/// 45 000 instructions, more than the rest of weir's own share of a handshake.
fn subject_of(der: &[u8]) -> Option<String> {
    /// A certificate and its subject.
    type Remembered = (Box<[u8]>, Option<String>);
    static LAST: Mutex<Option<Remembered>> = parking_lot::const_mutex(None);
    if let Some((last, subject)) = LAST.lock().as_ref() {
        if **last == *der {
            return subject.clone();
        }
    }
    let subject = parse_subject(der);
    *LAST.lock() = Some((der.into(), subject.clone()));
    subject
}

/// [`subject_of`] without the memory.
fn parse_subject(der: &[u8]) -> Option<String> {
    use x509_cert::der::Decode;
    let certificate = x509_cert::Certificate::from_der(der).ok()?;
    let subject = certificate.tbs_certificate().subject().to_string();
    (!subject.is_empty()).then_some(subject)
}

impl ByteConsumer for CipherConsumer {
    fn reactor(&self) -> &Reactor {
        &self.0.reactor
    }

    fn consumer_slot(&self) -> &LinkSlot {
        &self.0.cipher_in
    }

    fn on_attached(&self, link: &Arc<Link>) -> Credit {
        if self.0.state.lock().cipher_in_closed {
            link.abort();
            return Credit::ZERO;
        }
        self.0.arm_handshake_timeout();
        self.0.cipher_credit(link)
    }

    fn consume(&self, link: &Arc<Link>, data: Bytes) -> Credit {
        let mut guard = self.0.state.lock();
        {
            let state = &mut *guard;
            if state.cipher_in_closed {
                return link.credit();
            }
            // Behind held ciphertext, or what the session cannot take now, waits.
            let rest = if state.cipher_held.is_empty() {
                state.session.handle_ciphertext_bytes(data)
            } else {
                data
            };
            if !rest.is_empty() {
                state.cipher_held.extend_from_slice(&rest);
            }
        }
        self.0.pump_locked(guard).cipher_credit(link)
    }

    fn on_end(&self, _link: &Arc<Link>, _ending: Ending) {
        // Clean or not, the session tells close_notify from truncation.
        self.0.state.lock().transport_ended = true;
        self.0.pump();
    }

    fn on_abort(&self) {
        {
            let mut state = self.0.state.lock();
            if state.cipher_in_closed {
                // We stopped reading ourselves.
                return;
            }
            state.transport_ended = true;
        }
        // The session tells a cut handshake (a failure) from a cut stream (truncation).
        self.0.pump();
    }

    fn on_control(&self, message: &IoControl) -> ControlReply {
        self.0.forward(&self.0.plain_out, message, true)
    }
}

impl ByteProducer for CipherProducer {
    fn reactor(&self) -> &Reactor {
        &self.0.reactor
    }

    fn producer_slot(&self) -> &LinkSlot {
        &self.0.cipher_out
    }

    fn on_attached(&self, link: &Arc<Link>) {
        if self.0.state.lock().cipher_out_ended {
            link.abort();
        }
    }

    fn on_credit(&self, _link: &Arc<Link>) {
        self.0.pump();
    }

    fn on_abort(&self) {
        {
            let mut state = self.0.state.lock();
            if state.cipher_out_ended {
                return;
            }
            state.cipher_out_ended = true;
            state.cipher_out_broken = true;
            state.cipher_pending = None;
        }
        // The pump first reads the session's events: a failure already reported there is
        // the reason, not this abort.
        self.0.pump();
    }

    fn on_control(&self, message: &IoControl) -> ControlReply {
        self.0.forward(&self.0.plain_in, message, false)
    }
}

impl ByteConsumer for PlainConsumer {
    fn reactor(&self) -> &Reactor {
        &self.0.reactor
    }

    fn consumer_slot(&self) -> &LinkSlot {
        &self.0.plain_in
    }

    fn on_attached(&self, link: &Arc<Link>) -> Credit {
        let closed = {
            let state = self.0.state.lock();
            state.plain_in_closed || state.app_ending.is_some()
        };
        if closed {
            link.abort();
            return Credit::ZERO;
        }
        self.0.plain_credit(link)
    }

    fn consume(&self, link: &Arc<Link>, data: Bytes) -> Credit {
        let mut guard = self.0.state.lock();
        {
            let state = &mut *guard;
            if !state.takes_plaintext() {
                return link.credit();
            }
            if !state.plain_held.is_empty() {
                state.plain_held.push(data);
            } else if let Ok(rest) = state.session.write_plaintext_bytes(data) {
                // (A closed session drops the data; `pass_ends` aborts this link then.)
                state.plain_held.push(rest);
            }
        }
        self.0.pump_locked(guard).plain_credit(link)
    }

    fn takes_runs(&self) -> bool {
        true
    }

    fn consume_chunks(&self, link: &Arc<Link>, chunks: &mut Chunks) -> Credit {
        let mut guard = self.0.state.lock();
        {
            let state = &mut *guard;
            if !state.takes_plaintext() {
                chunks.clear();
                return link.credit();
            }
            // A closed session drops the data; `pass_ends` aborts this link then.
            if state.plain_held.is_empty() && state.session.write_plaintext_chunks(chunks).is_err()
            {
                chunks.clear();
            }
            state.plain_held.append(chunks);
        }
        self.0.pump_locked(guard).plain_credit(link)
    }

    fn on_end(&self, _link: &Arc<Link>, ending: Ending) {
        self.0.state.lock().app_ending.get_or_insert(ending);
        self.0.pump();
    }

    fn on_abort(&self) {
        let handshaking = self.0.is_handshaking();
        {
            let mut state = self.0.state.lock();
            if state.app_ending.is_some() || state.plain_in_closed {
                return;
            }
            state.app_ending = Some(Ending::Lost);
        }
        if handshaking {
            self.0.abort_all();
        } else {
            self.0.state.lock().cipher_out_ended = true;
            abort_slot(&self.0.cipher_out);
        }
        self.0.pump();
    }

    fn on_control(&self, message: &IoControl) -> ControlReply {
        self.0.forward(&self.0.cipher_out, message, true)
    }
}

impl ByteProducer for PlainProducer {
    fn reactor(&self) -> &Reactor {
        &self.0.reactor
    }

    fn producer_slot(&self) -> &LinkSlot {
        &self.0.plain_out
    }

    fn on_attached(&self, link: &Arc<Link>) {
        if self.0.state.lock().plain_out_ended {
            link.abort();
        }
    }

    fn on_credit(&self, _link: &Arc<Link>) {
        self.0.pump();
    }

    fn on_abort(&self) {
        let handshaking = self.0.is_handshaking();
        {
            let mut state = self.0.state.lock();
            if state.plain_out_ended {
                return;
            }
            state.plain_out_ended = true;
            state.cipher_in_closed = true;
        }
        if handshaking {
            self.0.abort_all();
        } else {
            // Nobody reads any more: stop the transport's input.
            abort_slot(&self.0.cipher_in);
        }
        self.0.pump();
    }

    fn on_control(&self, message: &IoControl) -> ControlReply {
        match message {
            IoControl::NotifyConsumerAttached => {
                // A late consumer still learns the transport's state (e.g. `Connected`).
                self.0
                    .forward(&self.0.cipher_in, &IoControl::ReqProducerState, false);
                if std::mem::take(&mut self.0.state.lock().authorize_late) {
                    self.0.queue_reauthorize();
                }
                self.0.pump();
                ControlReply::Handled
            }
            IoControl::ReqProducerState => {
                let reply = self.0.forward(&self.0.cipher_in, message, false);
                if self.0.state.lock().authorization == Authorization::Allowed {
                    self.0.queue_reauthorize();
                }
                reply
            }
            _ => self.0.forward(&self.0.cipher_in, message, false),
        }
    }
}

impl Inner {
    /// Asks the application again, from the reactor's queue (answering `ReqProducerState`).
    fn queue_reauthorize(&self) {
        let Some(me) = self.me.upgrade() else { return };
        self.reactor.call(move || {
            let link = me.plain_out.link().filter(|l| l.is_open());
            if let Some(link) = link {
                let credentials = me.state.lock().credentials();
                let reply = link.control_downstream(&IoControl::Authorize(credentials));
                if reply == ControlReply::Denied {
                    me.deny();
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::subject_of;
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::{X509Name, X509};

    /// A self-signed certificate for `common_name`, DER encoded.
    fn certificate(common_name: &str) -> Vec<u8> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509Name::builder().unwrap();
        name.append_entry_by_nid(Nid::COMMONNAME, common_name)
            .unwrap();
        let name = name.build();
        let mut builder = X509::builder().unwrap();
        builder.set_subject_name(&name).unwrap();
        builder.set_issuer_name(&name).unwrap();
        builder.set_pubkey(&key).unwrap();
        builder
            .set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        builder
            .set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        builder.sign(&key, MessageDigest::sha256()).unwrap();
        builder.build().to_der().unwrap()
    }

    #[test]
    fn each_certificate_gets_its_own_subject_though_the_last_is_remembered() {
        let (a, b) = (certificate("a.example"), certificate("b.example"));
        for _ in 0..2 {
            assert_eq!(subject_of(&a).as_deref(), Some("CN=a.example"));
            assert_eq!(subject_of(&a).as_deref(), Some("CN=a.example"));
            assert_eq!(subject_of(&b).as_deref(), Some("CN=b.example"));
        }
        assert_eq!(subject_of(b"not a certificate"), None);
        assert_eq!(subject_of(&a).as_deref(), Some("CN=a.example"));
    }
}
