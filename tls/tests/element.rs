//! The TLS chain element: two elements wired to each other in memory, over OS pipes wrapped as
//! stream agents, and over loopback TCP; verification failures, the authorize veto, clean and
//! truncated ends, bulk data and backpressure.

mod common;

use std::io::{self, IoSlice};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use weir_io::{
    ByteConsumer, ByteIoPair, ByteSink, ByteSource, ByteWAgent, ByteWriter, ControlReply, Credit,
    Ending, IoControl, Link, LinkSlot, Peer, Produce, SinkHooks, SourceHooks, WAgentHooks, Window,
};
use weir_reactor::{Direction, Reactor, ReactorThread};
use weir_sock::{AgentConfig, ConnectOptions, Descriptors, ListenOptions, StreamAgent, StreamIo};
use weir_tls::net::{self, TlsConnection, TlsListener};
use weir_tls::{ClientAuth, TlsClientConfig, TlsElement, TlsError, TlsLimits, TlsServerConfig};

use common::{client_trusting_ca, pki};

/// Bound on every wait; reached only when something is broken.
const DEADLINE: Duration = Duration::from_secs(120);

// ----- rig ----------------------------------------------------------------------------------

/// A reactor running on its own thread, stopped when the test ends.
struct Rig {
    reactor: Reactor,
    thread: Option<ReactorThread>,
}

impl Rig {
    fn new() -> Rig {
        let reactor = Reactor::new().unwrap();
        let thread = reactor.start().unwrap();
        Rig {
            reactor,
            thread: Some(thread),
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.reactor.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

// ----- data ---------------------------------------------------------------------------------

/// Length of the repeating test pattern: a prime, so chunk boundaries never line up with it.
const PATTERN_LEN: usize = 1_000_003;

/// The test pattern, made once.
fn pattern() -> &'static Bytes {
    static PATTERN: OnceLock<Bytes> = OnceLock::new();
    PATTERN.get_or_init(|| Bytes::from(common::pattern(PATTERN_LEN, 7)))
}

/// At most `max` bytes of the endless pattern starting at stream position `offset`.
fn pattern_at(offset: u64, max: usize) -> Bytes {
    let start = (offset % PATTERN_LEN as u64) as usize;
    let end = PATTERN_LEN.min(start + max);
    pattern().slice(start..end)
}

/// Whether `data` is the pattern at stream position `offset`.
fn matches_pattern(mut offset: u64, mut data: &[u8]) -> bool {
    while !data.is_empty() {
        let expected = pattern_at(offset, data.len());
        if data[..expected.len()] != expected[..] {
            return false;
        }
        offset += expected.len() as u64;
        data = &data[expected.len()..];
    }
    true
}

/// Produces `total` bytes of the pattern, then ends `Completed`; counts what it produced.
struct PatternSource {
    total: u64,
    produced: Arc<AtomicU64>,
}

impl SourceHooks for PatternSource {
    fn produce(&mut self, max: usize) -> Produce {
        let at = self.produced.load(Ordering::Relaxed);
        if at >= self.total {
            return Produce::End(Ending::Completed);
        }
        let len = max.min((self.total - at) as usize);
        let data = pattern_at(at, len);
        self.produced
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        Produce::Data(data)
    }
}

// ----- application side ---------------------------------------------------------------------

/// What an application consumer saw.
#[derive(Default)]
struct Seen {
    /// Bytes received (kept unless `verify_only`).
    data: Vec<u8>,
    /// Bytes received, counted.
    received: u64,
    /// Whether every byte matched the pattern so far.
    pattern_ok: bool,
    /// Control messages, in order.
    controls: Vec<IoControl>,
}

/// An application consumer: records data and controls, sends the ending on a channel, and
/// answers `Authorize` as told.
struct App {
    seen: Arc<Mutex<Seen>>,
    ended: Sender<Ending>,
    deny: bool,
    keep: bool,
}

impl SinkHooks for App {
    fn on_data(&mut self, _link: &Arc<Link>, data: Bytes) {
        let mut seen = self.seen.lock();
        let ok = matches_pattern(seen.received, &data);
        seen.pattern_ok = (seen.received == 0 || seen.pattern_ok) && ok;
        seen.received += data.len() as u64;
        if self.keep {
            seen.data.extend_from_slice(&data);
        }
    }

    fn on_end(&mut self, ending: Ending) {
        let _ = self.ended.send(ending);
    }

    fn on_control(&mut self, message: &IoControl) -> ControlReply {
        self.seen.lock().controls.push(message.clone());
        match message {
            IoControl::Authorize(_) if self.deny => ControlReply::Denied,
            IoControl::Authorize(_) => ControlReply::Allowed,
            _ => ControlReply::Unsupported,
        }
    }
}

/// An application: a sink recording what arrives and a writer for what it sends.
struct Client {
    seen: Arc<Mutex<Seen>>,
    ended: Receiver<Ending>,
    writer: Arc<ByteWriter>,
}

impl Client {
    /// Attaches a new application to `plain`.
    fn attach(reactor: &Reactor, plain: &ByteIoPair, deny: bool) -> Client {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (tx, rx) = mpsc::channel();
        let sink = ByteSink::new(
            reactor,
            Window::Bytes(256 * 1024),
            App {
                seen: seen.clone(),
                ended: tx,
                deny,
                keep: true,
            },
        );
        let writer = ByteWriter::new(reactor, 64 * 1024);
        plain
            .attach(&ByteIoPair::new(sink.consumer(), writer.producer()))
            .unwrap();
        Client {
            seen,
            ended: rx,
            writer,
        }
    }

    fn ending(&self) -> Ending {
        self.ended
            .recv_timeout(DEADLINE)
            .expect("the stream never ended")
    }

    /// Waits until `len` bytes have arrived.
    fn wait_for(&self, len: usize) -> Vec<u8> {
        let start = Instant::now();
        loop {
            {
                let seen = self.seen.lock();
                if seen.data.len() >= len {
                    return seen.data.clone();
                }
            }
            assert!(start.elapsed() < DEADLINE, "data never arrived");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn authorize_credentials(&self) -> Option<weir_io::Credentials> {
        self.seen.lock().controls.iter().find_map(|c| match c {
            IoControl::Authorize(credentials) => Some(credentials.clone()),
            _ => None,
        })
    }
}

/// Echo hooks for a server application.
struct Echo;

impl WAgentHooks for Echo {
    fn on_data(&mut self, writer: &Arc<ByteWriter>, data: Bytes) {
        // The agent's sink grants only the writer's free space, so this fits.
        writer.write(data).expect("echo fits the writer");
    }
}

/// Attaches an echo application to `plain`.
fn attach_echo(reactor: &Reactor, plain: &ByteIoPair) {
    let echo = ByteWAgent::new(reactor, 64 * 1024, Echo);
    plain.attach(&echo.io_pair()).unwrap();
}

// ----- in-memory pairs ----------------------------------------------------------------------

/// A client element and a server element wired to each other directly.
fn memory_pair(
    reactor: &Reactor,
    client_config: &TlsClientConfig,
    server_name: &str,
    server_config: &TlsServerConfig,
) -> (TlsElement, TlsElement) {
    let client = TlsElement::client(reactor, client_config, server_name).unwrap();
    let server = TlsElement::server(reactor, server_config).unwrap();
    client.cipher_io().attach(&server.cipher_io()).unwrap();
    (client, server)
}

#[test]
fn memory_pair_echoes_and_ends_cleanly_with_close_notify() {
    let rig = Rig::new();
    let config = client_trusting_ca().build().unwrap();
    let (client, server) = memory_pair(
        &rig.reactor,
        &config,
        "localhost",
        &pki().localhost.server_config(),
    );
    attach_echo(&rig.reactor, &server.plain_io());
    let app = Client::attach(&rig.reactor, &client.plain_io(), false);

    let message = pattern_at(0, 300_000);
    for chunk in message.chunks(32 * 1024) {
        while app.writer.write(Bytes::copy_from_slice(chunk)).is_err() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    app.writer.end_write(Ending::Completed);
    assert_eq!(app.ending(), Ending::Completed);
    assert_eq!(app.seen.lock().data, message);
    assert!(client.is_peer_closed() && server.is_peer_closed());
    assert!(!client.is_truncated() && client.error().is_none() && server.error().is_none());

    let credentials = app
        .authorize_credentials()
        .expect("Authorize reached the app");
    assert_eq!(credentials.protocol, "TLS");
    let leaf = openssl::x509::X509::from_pem(&pki().localhost.cert_pem)
        .unwrap()
        .to_der()
        .unwrap();
    assert_eq!(credentials.certificates, vec![leaf]);
    assert_eq!(credentials.identity.as_deref(), Some("CN=localhost"));
    assert!(client
        .handshake_info()
        .unwrap()
        .peer_certificate_der()
        .is_some());
}

/// How one verification run ended.
struct Verdict {
    client_ending: Ending,
    client_error: Option<Arc<TlsError>>,
    echoed: Vec<u8>,
}

/// Runs a client against an echo server in memory: sends "ping", waits for the end.
fn verify_run(client_config: TlsClientConfig, name: &str, server: TlsServerConfig) -> Verdict {
    let rig = Rig::new();
    let (client, server) = memory_pair(&rig.reactor, &client_config, name, &server);
    attach_echo(&rig.reactor, &server.plain_io());
    let app = Client::attach(&rig.reactor, &client.plain_io(), false);
    // A rejected handshake may have closed the writer already.
    let _ = app.writer.write(&b"ping"[..]);
    app.writer.end_write(Ending::Completed);
    let client_ending = app.ending();
    let echoed = app.seen.lock().data.clone();
    Verdict {
        client_ending,
        client_error: client.error(),
        echoed,
    }
}

#[test]
fn wrong_host_is_rejected_with_its_reason_and_accepted_when_allowed() {
    let server = pki().localhost.server_config();
    let verdict = verify_run(
        client_trusting_ca().build().unwrap(),
        "wrong.example",
        server,
    );
    assert_eq!(verdict.client_ending, Ending::Lost);
    let error = verdict.client_error.expect("an error");
    assert!(
        matches!(*error, TlsError::HostnameMismatch { .. }),
        "{error:?}"
    );
    assert!(verdict.echoed.is_empty());

    let trusting = client_trusting_ca()
        .danger_accept_invalid_hostnames(true)
        .build()
        .unwrap();
    let verdict = verify_run(trusting, "wrong.example", pki().localhost.server_config());
    assert_eq!(verdict.client_ending, Ending::Completed);
    assert_eq!(verdict.echoed, b"ping");
}

#[test]
fn unknown_issuer_is_rejected_with_its_reason_and_accepted_when_trusted() {
    let server = pki().self_signed.server_config();
    let verdict = verify_run(client_trusting_ca().build().unwrap(), "localhost", server);
    assert_eq!(verdict.client_ending, Ending::Lost);
    let error = verdict.client_error.expect("an error");
    assert!(
        matches!(*error, TlsError::UnknownIssuer { .. }),
        "{error:?}"
    );

    let trusting = client_trusting_ca()
        .with_root_certificate_pem(&pki().self_signed.cert_pem)
        .build()
        .unwrap();
    let verdict = verify_run(trusting, "localhost", pki().self_signed.server_config());
    assert_eq!(verdict.client_ending, Ending::Completed);
    assert_eq!(verdict.echoed, b"ping");
}

#[test]
fn expired_certificate_is_rejected_with_its_reason_and_accepted_when_allowed() {
    let server = pki().expired.server_config();
    let verdict = verify_run(client_trusting_ca().build().unwrap(), "localhost", server);
    assert_eq!(verdict.client_ending, Ending::Lost);
    let error = verdict.client_error.expect("an error");
    assert!(
        matches!(*error, TlsError::CertificateExpired { .. }),
        "{error:?}"
    );

    let trusting = client_trusting_ca()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    let verdict = verify_run(trusting, "localhost", pki().expired.server_config());
    assert_eq!(verdict.client_ending, Ending::Completed);
    assert_eq!(verdict.echoed, b"ping");
}

#[test]
fn failed_handshake_reaches_the_server_as_a_peer_alert() {
    let rig = Rig::new();
    let config = client_trusting_ca().build().unwrap();
    let client = TlsElement::client(&rig.reactor, &config, "localhost").unwrap();
    let server = TlsElement::server(&rig.reactor, &pki().self_signed.server_config()).unwrap();
    let (tx, rx) = mpsc::channel();
    // Set before wiring: the handshake may fail before any application attaches.
    server.set_on_event(move |event| {
        let _ = tx.send(format!("{event:?}"));
    });
    client.cipher_io().attach(&server.cipher_io()).unwrap();
    let server_app = Client::attach(&rig.reactor, &server.plain_io(), false);
    let client_app = Client::attach(&rig.reactor, &client.plain_io(), false);
    assert_eq!(client_app.ending(), Ending::Lost);
    assert_eq!(server_app.ending(), Ending::Lost);
    let event = rx.recv_timeout(DEADLINE).unwrap();
    assert!(event.contains("PeerAlert"), "{event}");
    assert!(matches!(
        *server.error().unwrap(),
        TlsError::PeerAlert { .. }
    ));
}

#[test]
fn authorize_veto_aborts_both_directions() {
    let rig = Rig::new();
    let config = client_trusting_ca().build().unwrap();
    let client = TlsElement::client(&rig.reactor, &config, "localhost").unwrap();
    let server = TlsElement::server(&rig.reactor, &pki().localhost.server_config()).unwrap();
    // The applications attach before the transports are wired: a handshake that finished
    // with no reader attached would let the peer in (documented), and the veto would come
    // too late for what the writer had queued.
    let server_app = Client::attach(&rig.reactor, &server.plain_io(), false);
    let client_app = Client::attach(&rig.reactor, &client.plain_io(), true);
    client_app.writer.write(&b"never sent"[..]).unwrap();
    client.cipher_io().attach(&server.cipher_io()).unwrap();
    assert_eq!(client_app.ending(), Ending::Lost);
    assert!(matches!(*client.error().unwrap(), TlsError::Unauthorized));
    assert_eq!(server_app.ending(), Ending::Lost);
    assert!(
        server_app.seen.lock().data.is_empty(),
        "no plaintext before authorization"
    );
    // The writer's abort travels on its own link: wait for it rather than race it.
    let deadline = std::time::Instant::now() + DEADLINE;
    while !client_app.writer.is_closed() {
        assert!(
            std::time::Instant::now() < deadline,
            "the app's writer was not aborted"
        );
        std::thread::yield_now();
    }
}

/// A server that requires client certificates names the client in `Authorize` (its
/// certificate's subject and the certificate itself), and its application can still refuse
/// that client.
#[test]
fn a_server_authorizes_by_the_client_certificate() {
    let rig = Rig::new();
    let client_config = client_trusting_ca()
        .with_client_identity(pki().client.identity())
        .build()
        .unwrap();
    let server_config = TlsServerConfig::builder(pki().localhost.identity())
        .with_client_auth(ClientAuth::Required)
        .with_client_roots_pem(&pki().ca.cert_pem)
        .build()
        .unwrap();
    let client_der = openssl::x509::X509::from_pem(&pki().client.cert_pem)
        .unwrap()
        .to_der()
        .unwrap();
    for deny in [false, true] {
        let client = TlsElement::client(&rig.reactor, &client_config, "localhost").unwrap();
        let server = TlsElement::server(&rig.reactor, &server_config).unwrap();
        let server_app = Client::attach(&rig.reactor, &server.plain_io(), deny);
        let client_app = Client::attach(&rig.reactor, &client.plain_io(), false);
        client.cipher_io().attach(&server.cipher_io()).unwrap();
        client_app.writer.write(&b"who am I"[..]).unwrap();
        client_app.writer.end_write(Ending::Completed);
        if deny {
            assert_eq!(server_app.ending(), Ending::Lost);
            assert!(matches!(*server.error().unwrap(), TlsError::Unauthorized));
            assert_eq!(client_app.ending(), Ending::Lost);
            assert!(server_app.seen.lock().data.is_empty());
        } else {
            assert_eq!(server_app.wait_for(8), b"who am I");
        }
        let credentials = server_app
            .authorize_credentials()
            .expect("Authorize was sent");
        assert_eq!(credentials.protocol, "TLS");
        assert_eq!(credentials.identity.as_deref(), Some("CN=weir test client"));
        assert_eq!(credentials.certificates, vec![client_der.clone()]);
    }
}

// ----- over OS pipes ------------------------------------------------------------------------

/// Two OS pipes as one stream: read from one, write to the other.
struct PipeIo {
    input: OwnedFd,
    output: OwnedFd,
}

impl StreamIo for PipeIo {
    fn read(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let spare = rustix::buffer::spare_capacity(buf);
        Ok(rustix::io::read(&self.input, spare)?)
    }

    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(rustix::io::writev(&self.output, bufs)?)
    }

    fn descriptors(&self) -> Descriptors<'_> {
        Descriptors::Split {
            input: Some(self.input.as_fd()),
            output: Some(self.output.as_fd()),
        }
    }

    fn shutdown(&self, _direction: Direction) -> io::Result<()> {
        // A pipe end closes when the agent drops this stream; the TLS element ends its input
        // itself after close_notify, so both agents close.
        Ok(())
    }

    fn peer(&self) -> Peer {
        Peer::Pipe
    }
}

/// Two stream agents joined by two pipes.
fn pipe_agents(reactor: &Reactor) -> (StreamAgent, StreamAgent) {
    let flags = rustix::pipe::PipeFlags::NONBLOCK | rustix::pipe::PipeFlags::CLOEXEC;
    let (a_in, b_out) = rustix::pipe::pipe_with(flags).unwrap();
    let (b_in, a_out) = rustix::pipe::pipe_with(flags).unwrap();
    let a = PipeIo {
        input: a_in,
        output: a_out,
    };
    let b = PipeIo {
        input: b_in,
        output: b_out,
    };
    (
        StreamAgent::new(reactor, a, AgentConfig::default()).unwrap(),
        StreamAgent::new(reactor, b, AgentConfig::default()).unwrap(),
    )
}

/// A client and a server element, each on a pipe agent.
fn pipe_pair(reactor: &Reactor) -> (TlsElement, TlsElement, StreamAgent, StreamAgent) {
    let (a, b) = pipe_agents(reactor);
    let config = client_trusting_ca().build().unwrap();
    let client = TlsElement::client(reactor, &config, "localhost").unwrap();
    let server = TlsElement::server(reactor, &pki().localhost.server_config()).unwrap();
    client.cipher_io().attach(&a.io_pair()).unwrap();
    server.cipher_io().attach(&b.io_pair()).unwrap();
    (client, server, a, b)
}

#[test]
fn tls_over_os_pipes_is_transport_agnostic() {
    let rig = Rig::new();
    let (client, server, a, b) = pipe_pair(&rig.reactor);
    let (closed_tx, closed_rx) = mpsc::channel();
    for agent in [&a, &b] {
        let tx = closed_tx.clone();
        agent.set_close_callback(move |info| {
            let _ = tx.send(info.error.is_none());
        });
    }
    attach_echo(&rig.reactor, &server.plain_io());
    let total: u64 = 4 * 1024 * 1024;
    let source = ByteSource::new(
        &rig.reactor,
        PatternSource {
            total,
            produced: Arc::new(AtomicU64::new(0)),
        },
    );
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (tx, rx) = mpsc::channel();
    let sink = ByteSink::new(
        &rig.reactor,
        Window::Bytes(64 * 1024),
        App {
            seen: seen.clone(),
            ended: tx,
            deny: false,
            keep: false,
        },
    );
    client
        .plain_io()
        .attach(&ByteIoPair::new(sink.consumer(), source.producer()))
        .unwrap();
    assert_eq!(rx.recv_timeout(DEADLINE).unwrap(), Ending::Completed);
    {
        let seen = seen.lock();
        assert_eq!(seen.received, total);
        assert!(seen.pattern_ok);
        let connected = seen
            .controls
            .iter()
            .any(|c| matches!(c, IoControl::Connected(Peer::Pipe)));
        assert!(connected, "Connected(Pipe) passed through");
    }
    assert!(client.is_peer_closed() && server.is_peer_closed());
    // Both agents close once both TLS directions have ended.
    for _ in 0..2 {
        assert!(
            closed_rx.recv_timeout(DEADLINE).unwrap(),
            "closed without error"
        );
    }
}

/// A consumer that takes `step` bytes per millisecond and checks how much is in flight.
struct SlowReader {
    reactor: Reactor,
    me: Weak<SlowReader>,
    slot: LinkSlot,
    step: u64,
    produced: Arc<AtomicU64>,
    state: Mutex<SlowState>,
    done: Sender<(u64, u64, bool)>,
    until: u64,
}

#[derive(Default)]
struct SlowState {
    received: u64,
    max_in_flight: u64,
    pattern_ok: bool,
    timer_pending: bool,
    reported: bool,
}

impl SlowReader {
    fn new(
        reactor: &Reactor,
        step: u64,
        until: u64,
        produced: Arc<AtomicU64>,
        done: Sender<(u64, u64, bool)>,
    ) -> Arc<SlowReader> {
        Arc::new_cyclic(|me| SlowReader {
            reactor: reactor.clone(),
            me: me.clone(),
            slot: LinkSlot::new(),
            step,
            produced,
            state: Mutex::new(SlowState {
                pattern_ok: true,
                ..SlowState::default()
            }),
            done,
            until,
        })
    }
}

impl ByteConsumer for SlowReader {
    fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    fn consumer_slot(&self) -> &LinkSlot {
        &self.slot
    }

    fn on_attached(&self, link: &Arc<Link>) -> Credit {
        link.window(self.step)
    }

    fn consume(&self, link: &Arc<Link>, data: Bytes) -> Credit {
        let mut state = self.state.lock();
        state.pattern_ok &= matches_pattern(state.received, &data);
        state.received += data.len() as u64;
        let in_flight = self.produced.load(Ordering::Relaxed) - state.received;
        state.max_in_flight = state.max_in_flight.max(in_flight);
        if state.received >= self.until && !state.reported {
            state.reported = true;
            let _ = self
                .done
                .send((state.received, state.max_in_flight, state.pattern_ok));
            return link.credit();
        }
        if !state.timer_pending {
            state.timer_pending = true;
            let me = self.me.clone();
            let link = link.clone();
            self.reactor.schedule(Duration::from_millis(1), move || {
                if let Some(me) = me.upgrade() {
                    me.state.lock().timer_pending = false;
                    link.grant(link.window(me.step));
                }
            });
        }
        link.credit()
    }

    fn on_end(&self, _link: &Arc<Link>, _ending: Ending) {}
}

#[test]
fn slow_plaintext_reader_keeps_memory_bounded_over_pipes() {
    let rig = Rig::new();
    let (client, server, _a, _b) = pipe_pair(&rig.reactor);
    let produced = Arc::new(AtomicU64::new(0));
    let total = 8 * 1024 * 1024;
    let source = ByteSource::new(
        &rig.reactor,
        PatternSource {
            total: u64::MAX,
            produced: produced.clone(),
        },
    );
    weir_io::attach(&source.producer(), &client.plain_io().consumer).unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = SlowReader::new(&rig.reactor, 16 * 1024, total, produced.clone(), tx);
    weir_io::attach(
        &server.plain_io().producer,
        &(reader as Arc<dyn ByteConsumer>),
    )
    .unwrap();
    let (received, max_in_flight, pattern_ok) = rx.recv_timeout(DEADLINE).unwrap();
    assert!(client.error().is_none() && server.error().is_none());
    eprintln!("slow reader: {received} bytes, at most {max_in_flight} bytes in flight");
    assert!(pattern_ok, "bytes arrived intact and in order");
    // Everything between the source and the reader is bounded: the source's chunk, the two
    // sessions' queues, the agents' buffers and two pipes. 8 MiB went through.
    assert!(
        max_in_flight < 1024 * 1024,
        "{max_in_flight} bytes in flight: something buffers without bound"
    );
    assert!(
        produced.load(Ordering::Relaxed) - received < 1024 * 1024,
        "the source was paused"
    );
}

// ----- over TCP -----------------------------------------------------------------------------

/// A TLS echo server on an ephemeral loopback port.
fn echo_listener(reactor: &Reactor) -> TlsListener {
    let r = reactor.clone();
    TlsListener::bind(
        reactor,
        &"127.0.0.1:0".parse().unwrap(),
        pki().localhost.server_config(),
        ListenOptions::default(),
        AgentConfig::default(),
        move |connection: TlsConnection| attach_echo(&r, &connection.plain),
    )
    .unwrap()
}

#[test]
fn hundred_mib_through_tls_over_tcp_byte_for_byte() {
    let rig = Rig::new();
    let listener = echo_listener(&rig.reactor);
    let config = client_trusting_ca().build().unwrap();
    let connection = net::connect(
        &rig.reactor,
        listener.local_address().clone(),
        "localhost",
        &config,
        ConnectOptions::default(),
    )
    .unwrap();
    let total: u64 = 100 * 1024 * 1024;
    let produced = Arc::new(AtomicU64::new(0));
    let source = ByteSource::new(
        &rig.reactor,
        PatternSource {
            total,
            produced: produced.clone(),
        },
    );
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (tx, rx) = mpsc::channel();
    let sink = ByteSink::new(
        &rig.reactor,
        Window::Bytes(256 * 1024),
        App {
            seen: seen.clone(),
            ended: tx,
            deny: false,
            keep: false,
        },
    );
    let start = Instant::now();
    connection
        .plain
        .attach(&ByteIoPair::new(sink.consumer(), source.producer()))
        .unwrap();
    assert_eq!(rx.recv_timeout(DEADLINE).unwrap(), Ending::Completed);
    let elapsed = start.elapsed();
    let seen = seen.lock();
    eprintln!(
        "100 MiB echoed through TLS in {elapsed:?} ({:.1} MiB/s each way)",
        100.0 / elapsed.as_secs_f64()
    );
    assert_eq!(seen.received, total);
    assert!(seen.pattern_ok, "every byte came back in order");
    assert!(connection.tls.is_peer_closed());
    let connected = seen
        .controls
        .iter()
        .any(|c| matches!(c, IoControl::Connected(Peer::Tcp(_))));
    assert!(connected, "Connected passed through the TLS element");
}

/// Two hundred clients at once, on a reactor of their own, against one echo server: every
/// client gets back its own bytes (each sends a different pattern), so no record crosses
/// into another connection, and each stream ends with close_notify.
#[test]
fn two_hundred_concurrent_clients_each_get_their_own_echo() {
    const CLIENTS: usize = 200;
    const LEN: usize = 48 * 1024;
    let server = Rig::new();
    let clients = Rig::new();
    let listener = echo_listener(&server.reactor);
    let config = client_trusting_ca().build().unwrap();
    let running: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let (connection, app) =
                connect_client(&clients.reactor, listener.local_address().clone(), &config);
            let data = common::pattern(LEN, i as u32);
            app.writer.write(data.clone()).unwrap();
            app.writer.end_write(Ending::Completed);
            (connection, app, data)
        })
        .collect();
    for (i, (connection, app, data)) in running.iter().enumerate() {
        assert_eq!(app.ending(), Ending::Completed, "client {i}");
        assert!(app.seen.lock().data == *data, "client {i} got other bytes");
        assert!(connection.tls.is_peer_closed(), "client {i}");
    }
}

/// A TLS client to `address` for "localhost", with a recording application attached.
fn connect_client(
    reactor: &Reactor,
    address: weir_sock::Address,
    config: &TlsClientConfig,
) -> (TlsConnection, Client) {
    let connection = net::connect(
        reactor,
        address,
        "localhost",
        config,
        ConnectOptions::default(),
    )
    .unwrap();
    let app = Client::attach(reactor, &connection.plain, false);
    (connection, app)
}

/// A server application that records what it gets, on a listener.
fn recording_listener(reactor: &Reactor) -> (TlsListener, Receiver<(Client, TlsElement)>) {
    let r = reactor.clone();
    let (tx, rx) = mpsc::channel();
    let listener = TlsListener::bind(
        reactor,
        &"127.0.0.1:0".parse().unwrap(),
        pki().localhost.server_config(),
        ListenOptions::default(),
        AgentConfig::default(),
        move |connection: TlsConnection| {
            let app = Client::attach(&r, &connection.plain, false);
            let _ = tx.send((app, connection.tls));
        },
    )
    .unwrap();
    (listener, rx)
}

#[test]
fn clean_end_is_completed_and_cut_transport_is_truncation() {
    let rig = Rig::new();
    let (listener, accepted) = recording_listener(&rig.reactor);
    let config = client_trusting_ca().build().unwrap();

    // Clean: the client's stream ends, close_notify goes out.
    let (_connection, app) =
        connect_client(&rig.reactor, listener.local_address().clone(), &config);
    app.writer.write(&b"all of it"[..]).unwrap();
    app.writer.end_write(Ending::Completed);
    let (server_app, server_tls) = accepted.recv_timeout(DEADLINE).unwrap();
    assert_eq!(server_app.ending(), Ending::Completed);
    assert_eq!(server_app.seen.lock().data, b"all of it");
    assert!(server_tls.is_peer_closed() && !server_tls.is_truncated());

    // Cut: the client's socket closes without close_notify.
    let (connection, app) = connect_client(&rig.reactor, listener.local_address().clone(), &config);
    app.writer.write(&b"partial"[..]).unwrap();
    let (server_app, server_tls) = accepted.recv_timeout(DEADLINE).unwrap();
    server_app.wait_for(7);
    connection.agent.close(Ending::Completed);
    assert_eq!(server_app.ending(), Ending::Lost);
    assert!(server_tls.is_truncated() && !server_tls.is_peer_closed());
    assert_eq!(server_app.seen.lock().data, b"partial");
}

#[test]
fn refused_connection_ends_the_application_lost() {
    let rig = Rig::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = client_trusting_ca().build().unwrap();
    let (connection, app) = connect_client(&rig.reactor, port.into(), &config);
    assert_eq!(app.ending(), Ending::Lost);
    assert!(!connection.tls.is_handshake_done());
}

#[test]
fn silent_peer_is_dropped_at_the_handshake_timeout_and_a_prompt_one_is_not() {
    use std::io::{Read, Write};

    let rig = Rig::new();
    let timeout = Duration::from_millis(300);
    let server_config = TlsServerConfig::builder(pki().localhost.identity())
        .with_limits(TlsLimits::default().with_handshake_timeout(timeout))
        .build()
        .unwrap();
    let r = rig.reactor.clone();
    let (tx, accepted) = mpsc::channel();
    let listener = TlsListener::bind(
        &rig.reactor,
        &"127.0.0.1:0".parse().unwrap(),
        server_config,
        ListenOptions::default(),
        AgentConfig::default(),
        move |connection: TlsConnection| {
            let app = Client::attach(&r, &connection.plain, false);
            let _ = tx.send((app, connection.tls));
        },
    )
    .unwrap();
    let address = match listener.local_address() {
        weir_sock::Address::Tcp(address) => *address,
        other => panic!("not TCP: {other:?}"),
    };

    // A peer that connects and never says a word.
    let mut silent = std::net::TcpStream::connect(address).unwrap();
    silent.set_read_timeout(Some(DEADLINE)).unwrap();
    let (app, tls) = accepted.recv_timeout(DEADLINE).unwrap();
    let started = Instant::now();
    assert_eq!(app.ending(), Ending::Lost);
    assert!(started.elapsed() < DEADLINE);
    match tls.error().as_deref() {
        Some(TlsError::HandshakeTimeout { after }) => assert_eq!(*after, timeout),
        other => panic!("expected a handshake timeout, got {other:?}"),
    }
    // The server dropped the connection: the silent peer reads its end.
    let mut buf = [0u8; 64];
    match silent.read(&mut buf) {
        Ok(0) => {}
        Err(error) if error.kind() == io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the connection closed, got {other:?}"),
    }
    // Speaking after the timeout is too late: the socket is gone.
    let _ = silent.write_all(b"\x16\x03\x01");

    // A client that completes the handshake keeps its connection past the bound.
    let config = client_trusting_ca().build().unwrap();
    let (connection, client) =
        connect_client(&rig.reactor, listener.local_address().clone(), &config);
    client.writer.write(&b"before"[..]).unwrap();
    let (server_app, server_tls) = accepted.recv_timeout(DEADLINE).unwrap();
    server_app.wait_for(6);
    // Let the bound pass with the session established: nothing may fire.
    std::thread::sleep(timeout * 2);
    client.writer.write(&b" and after"[..]).unwrap();
    assert_eq!(server_app.wait_for(16), b"before and after");
    assert!(server_tls.error().is_none());
    assert!(connection.tls.error().is_none());
}
