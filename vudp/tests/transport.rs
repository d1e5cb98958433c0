//! `VudpTransport` on real UDP sockets over loopback, two reactors.

use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_io::{
    attach, ByteSink, ByteSource, ControlReply, Ending, IoControl, Link, Peer, Produce, SinkHooks,
    SourceHooks, Window,
};
use weir_reactor::{Reactor, ReactorThread};
use weir_vudp::{CloseInfo, Config, Error, IoStats, ResetCode, TransportError, VudpTransport};

/// Length of the repeated test pattern: a prime, so that it never lines up with segments.
const PATTERN_LEN: usize = 65_521;

/// The bytes every test sends: a pseudo-random pattern, repeated.
fn pattern() -> Arc<Vec<u8>> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let bytes = (0..PATTERN_LEN)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    Arc::new(bytes)
}

/// Produces `total` bytes of the pattern, then ends.
struct PatternSource {
    /// The pattern.
    pattern: Arc<Vec<u8>>,
    /// Bytes produced so far.
    produced: u64,
    /// Bytes to produce.
    total: u64,
}

impl SourceHooks for PatternSource {
    fn produce(&mut self, max: usize) -> Produce {
        if self.produced == self.total {
            return Produce::End(Ending::Completed);
        }
        let start = (self.produced % PATTERN_LEN as u64) as usize;
        let len = max
            .min(PATTERN_LEN - start)
            .min((self.total - self.produced) as usize);
        self.produced += len as u64;
        Produce::Data(Bytes::copy_from_slice(&self.pattern[start..start + len]))
    }
}

/// What a [`CheckSink`] reports at the end.
#[derive(Debug)]
struct Received {
    /// Bytes received.
    bytes: u64,
    /// Whether they all matched the pattern.
    intact: bool,
    /// How the stream ended.
    ending: Ending,
    /// The peer announced by `Connected`, if any.
    peer: Option<Peer>,
}

/// Checks what arrives against the pattern.
struct CheckSink {
    /// The pattern.
    pattern: Arc<Vec<u8>>,
    /// Bytes received.
    received: u64,
    /// No mismatch so far.
    intact: bool,
    /// From `Connected`.
    peer: Option<Peer>,
    /// Where the result goes.
    done: mpsc::Sender<Received>,
}

impl SinkHooks for CheckSink {
    fn on_data(&mut self, _link: &Arc<Link>, data: Bytes) {
        let mut data = &data[..];
        while !data.is_empty() {
            let start = (self.received % PATTERN_LEN as u64) as usize;
            let len = data.len().min(PATTERN_LEN - start);
            self.intact &= data[..len] == self.pattern[start..start + len];
            self.received += len as u64;
            data = &data[len..];
        }
    }

    fn on_end(&mut self, ending: Ending) {
        let _ = self.done.send(Received {
            bytes: self.received,
            intact: self.intact,
            ending,
            peer: self.peer.clone(),
        });
    }

    fn on_control(&mut self, message: &IoControl) -> ControlReply {
        if let IoControl::Connected(peer) = message {
            self.peer = Some(peer.clone());
        }
        ControlReply::Handled
    }
}

/// One side of a test: its reactor, transport, and where its results arrive.
struct Side {
    reactor: Reactor,
    thread: Option<ReactorThread>,
    transport: VudpTransport,
    received: mpsc::Receiver<Received>,
    closed: mpsc::Receiver<CloseInfo>,
}

impl Drop for Side {
    fn drop(&mut self) {
        self.reactor.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Settings for loopback tests: a short close linger so that closes complete quickly.
fn test_config() -> Config {
    let mut config = Config::default();
    config.close_linger = Duration::from_millis(500);
    config
}

/// Builds one side sending `send` bytes and checking what it receives.
fn side(
    socket: UdpSocket,
    peer: SocketAddr,
    ours: &[u8],
    theirs: &[u8],
    config: Config,
    send: u64,
) -> Side {
    let reactor = Reactor::new().unwrap();
    let thread = reactor.start().unwrap();
    let transport = VudpTransport::new(&reactor, socket, peer, ours, theirs, config).unwrap();
    let (closed_tx, closed) = mpsc::channel();
    transport.set_close_callback(move |info| {
        let _ = closed_tx.send(info);
    });
    let (done, received) = mpsc::channel();
    let pattern = pattern();
    let sink = ByteSink::new(
        &reactor,
        Window::Bytes(256 * 1024),
        CheckSink {
            pattern: pattern.clone(),
            received: 0,
            intact: true,
            peer: None,
            done,
        },
    );
    let source = ByteSource::new(
        &reactor,
        PatternSource {
            pattern,
            produced: 0,
            total: send,
        },
    );
    let pair = transport.io_pair();
    attach(&source.producer(), &pair.consumer).unwrap();
    attach(&pair.producer, &sink.consumer()).unwrap();
    Side {
        reactor,
        thread: Some(thread),
        transport,
        received,
        closed,
    }
}

/// Two bound loopback sockets and their addresses.
fn sockets() -> (UdpSocket, SocketAddr, UdpSocket, SocketAddr) {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    (a, a_addr, b, b_addr)
}

/// Sends `a_to_b` and `b_to_a` bytes over loopback and checks both arrive intact and both
/// sides close cleanly; returns the elapsed time.
fn transfer(a_to_b: u64, b_to_a: u64, deadline: Duration) -> Duration {
    transfer_on(sockets(), a_to_b, b_to_a, deadline).elapsed
}

/// What [`transfer_on`] measured.
struct Outcome {
    /// Time until both streams had arrived.
    elapsed: Duration,
    /// A's socket calls.
    a_io: IoStats,
    /// B's socket calls.
    b_io: IoStats,
}

/// As [`transfer`], on the given sockets.
fn transfer_on(
    (a_sock, a_addr, b_sock, b_addr): (UdpSocket, SocketAddr, UdpSocket, SocketAddr),
    a_to_b: u64,
    b_to_a: u64,
    deadline: Duration,
) -> Outcome {
    let start = Instant::now();
    let a = side(
        a_sock,
        b_addr,
        b"secret of A",
        b"secret of B",
        test_config(),
        a_to_b,
    );
    let b = side(
        b_sock,
        a_addr,
        b"secret of B",
        b"secret of A",
        test_config(),
        b_to_a,
    );
    let at_b = b.received.recv_timeout(deadline).expect("B's stream ended");
    let at_a = a.received.recv_timeout(deadline).expect("A's stream ended");
    let elapsed = start.elapsed();
    assert_eq!(at_b.ending, Ending::Completed, "{at_b:?}");
    assert_eq!(at_b.bytes, a_to_b);
    assert!(at_b.intact, "B received corrupted data");
    assert_eq!(at_b.peer, Some(Peer::Udp(a_addr)));
    assert_eq!(at_a.ending, Ending::Completed, "{at_a:?}");
    assert_eq!(at_a.bytes, b_to_a);
    assert!(at_a.intact, "A received corrupted data");
    assert_eq!(at_a.peer, Some(Peer::Udp(b_addr)));
    for side in [&a, &b] {
        let info = side
            .closed
            .recv_timeout(Duration::from_secs(10))
            .expect("closed");
        assert!(info.error.is_none(), "{info:?}");
        assert_eq!(info.ending(), Ending::Completed);
        assert!(side.transport.is_closed());
        assert!(side.transport.error().is_none());
    }
    let stats = a.transport.stats();
    let (a_io, b_io) = (a.transport.io_stats(), b.transport.io_stats());
    eprintln!(
        "{a_to_b} bytes A→B, {b_to_a} B→A in {elapsed:?} ({:.1} MB/s); A: {stats:?}\n\
         A: {a_io:?}\nB: {b_io:?}",
        a_to_b.max(b_to_a) as f64 / elapsed.as_secs_f64() / 1e6
    );
    Outcome {
        elapsed,
        a_io,
        b_io,
    }
}

#[test]
fn loopback_100_mib_intact() {
    transfer(100 << 20, 0, Duration::from_secs(120));
}

#[test]
fn loopback_both_directions_at_once() {
    transfer(8 << 20, 8 << 20, Duration::from_secs(60));
}

/// Runs of datagrams go out in GSO batches (several datagrams per send call) and come in
/// several per receive call (GRO or `recvmmsg`).
#[test]
fn loopback_sends_in_gso_batches_and_receives_in_batches() {
    let out = transfer_on(sockets(), 16 << 20, 0, Duration::from_secs(60));
    let (a, b) = (out.a_io, out.b_io);
    assert!(a.datagrams_sent > 10_000, "{a:?}");
    assert_eq!(a.gso_refused, 0, "{a:?}");
    if a.max_segments > 1 {
        assert!(a.datagrams_sent >= 2 * a.send_calls, "{a:?}");
    } else {
        without_gso("one datagram per send");
        assert_eq!(a.datagrams_sent, a.send_calls, "{a:?}");
    }
    assert!(b.datagrams_received > b.recv_calls, "{b:?}");
}

/// A kernel that refuses a GSO send (here: `SO_NO_CHECK`, with which Linux rejects
/// `UDP_SEGMENT` with `EINVAL` but sends single datagrams) turns batching off for the socket;
/// the refused run goes out one datagram at a time and the transfer completes.
#[test]
fn gso_refused_by_the_kernel_falls_back_to_one_datagram_per_send() {
    let (a_sock, a_addr, b_sock, b_addr) = sockets();
    refuse_gso(&a_sock);
    let out = transfer_on(
        (a_sock, a_addr, b_sock, b_addr),
        4 << 20,
        0,
        Duration::from_secs(60),
    );
    let a = out.a_io;
    if a.gso_refused == 0 && a.max_segments == 1 && a.datagrams_sent == a.send_calls {
        without_gso("nothing to refuse");
        return;
    }
    assert!(a.gso_refused >= 1, "{a:?}");
    assert_eq!(a.max_segments, 1, "{a:?}");
    assert_eq!(a.send_errors, 0, "{a:?}");
    // Every send after the refusal carried one datagram.
    assert!(a.datagrams_sent <= a.send_calls + 64, "{a:?}");
}

/// A kernel without UDP GSO: said on stderr, and a failure under CI, whose machines have it
/// (CI must not pass by skipping the batching checks).
fn without_gso(consequence: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false");
    assert!(!ci, "this kernel has no UDP GSO under CI: {consequence}");
    eprintln!("this kernel has no UDP GSO: {consequence}");
}

/// Sets `SO_NO_CHECK` (no UDP checksum on send), with which Linux refuses GSO sends.
fn refuse_gso(socket: &UdpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid open socket descriptor, a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NO_CHECK,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt(SO_NO_CHECK): {}",
        std::io::Error::last_os_error()
    );
}

#[test]
fn loopback_empty_streams_close_cleanly() {
    transfer(0, 0, Duration::from_secs(20));
}

#[test]
fn wrong_secret_fails_with_handshake_timeout_and_lost() {
    let (a_sock, a_addr, b_sock, b_addr) = sockets();
    let mut config = test_config();
    config.handshake_timeout = Duration::from_millis(800);
    config.initial_rto = Duration::from_millis(100);
    config.min_rto = Duration::from_millis(50);
    let a = side(
        a_sock,
        b_addr,
        b"secret of A",
        b"secret of B",
        config.clone(),
        1000,
    );
    let b = side(b_sock, a_addr, b"secret of B", b"WRONG", config, 1000);
    for side in [&a, &b] {
        let received = side
            .received
            .recv_timeout(Duration::from_secs(10))
            .expect("ended");
        assert_eq!(received.ending, Ending::Lost);
        assert_eq!(received.bytes, 0);
        let info = side
            .closed
            .recv_timeout(Duration::from_secs(10))
            .expect("closed");
        assert_eq!(info.ending(), Ending::Lost);
        match side.transport.error() {
            Some(TransportError::Connection(Error::HandshakeTimeout {
                authentication_failures,
            })) => assert!(authentication_failures > 0),
            other => panic!("unexpected error {other:?}"),
        }
    }
}

#[test]
fn abort_resets_the_peer() {
    let (a_sock, a_addr, b_sock, b_addr) = sockets();
    // Both send "forever"; B aborts once data flows.
    let a = side(
        a_sock,
        b_addr,
        b"secret of A",
        b"secret of B",
        test_config(),
        u64::MAX,
    );
    let b = side(
        b_sock,
        a_addr,
        b"secret of B",
        b"secret of A",
        test_config(),
        u64::MAX,
    );
    wait_until(Duration::from_secs(10), || {
        b.transport.stats().bytes_delivered > 0 && a.transport.is_connected()
    });
    b.transport.abort();
    let at_b = b.received.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(at_b.ending, Ending::Lost);
    assert!(matches!(
        b.transport.error(),
        Some(TransportError::Connection(Error::Aborted))
    ));
    let at_a = a.received.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(at_a.ending, Ending::Lost);
    let info = a.closed.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(info.ending(), Ending::Lost);
    assert!(
        matches!(
            info.error,
            Some(TransportError::Connection(Error::Reset(ResetCode::ABORTED)))
        ),
        "{info:?}"
    );
}

/// Polls `condition` until it holds; panics after `limit`.
fn wait_until(limit: Duration, condition: impl Fn() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}
