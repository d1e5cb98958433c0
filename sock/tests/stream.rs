//! StreamAgent over real loopback sockets: echo (TCP v4, v6, Unix), half-close both ways,
//! reset, the close callback, credit in both directions, many connections on one reactor.

mod common;

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use common::{pattern_bytes, recorder, wait_for, Running, DEADLINE};
use parking_lot::Mutex;
use socket2::Socket;
use weir_io::{attach, ByteWriter, ControlReply, Ending, HalfClosePolicy, Peer, Window};
use weir_reactor::Reactor;
use weir_sock::{
    tcp_pair, unix_pair, Address, AgentConfig, CloseInfo, ConnectOptions, ListenOptions, Listener,
    StreamAgent,
};

/// An echo listener on `address`: each connection's producer feeds its own consumer.
fn echo_listener(running: &Running, address: &Address) -> Listener {
    let r = running.reactor.clone();
    Listener::bind(
        &running.reactor,
        address,
        ListenOptions::default(),
        move |accepted| {
            let agent = accepted.into_agent(&r, AgentConfig::default()).unwrap();
            let pair = agent.io_pair();
            attach(&pair.producer, &pair.consumer).unwrap();
        },
    )
    .unwrap()
}

/// Connects an agent to `address`, sends `data`, ends, and returns what came back.
fn echo_through(running: &Running, address: Address, data: &[u8]) -> (Vec<u8>, Peer) {
    let (tx, rx) = mpsc::channel();
    let options = ConnectOptions::default().on_connect(move |outcome| tx.send(outcome).unwrap());
    let agent = StreamAgent::connect(&running.reactor, address, options);
    let (sink, record) = recorder(&running.reactor, Window::Bytes(4096), ControlReply::Allowed);
    let writer = ByteWriter::new(&running.reactor, data.len().max(1));
    let pair = agent.io_pair();
    attach(&pair.producer, &sink.consumer()).unwrap();
    attach(&writer.producer(), &pair.consumer).unwrap();
    writer.write(data.to_vec()).unwrap();
    writer.end_write(Ending::Completed);
    let peer = rx.recv_timeout(DEADLINE).unwrap().unwrap();
    wait_for("the echo to end", || record.lock().ending.is_some());
    assert_eq!(record.lock().ending, Some(Ending::Completed));
    wait_for("the client agent to close", || agent.is_closed());
    let data = std::mem::take(&mut record.lock().data);
    (data, peer)
}

#[test]
fn echo_over_tcp_v4() {
    let running = Running::new();
    let listener = echo_listener(&running, &"127.0.0.1:0".parse().unwrap());
    let data = pattern_bytes(0, 300_000);
    let (echoed, peer) = echo_through(&running, listener.local_address().clone(), &data);
    assert!(echoed == data, "echo differs");
    assert_eq!(peer, listener.local_address().to_peer());
}

#[test]
fn echo_over_tcp_v6() {
    let running = Running::new();
    let address: Address = "[::1]:0".parse().unwrap();
    let listener =
        match Listener::bind(&running.reactor, &address, ListenOptions::default(), |_| {}) {
            Ok(_) => echo_listener(&running, &address),
            Err(err) => {
                // Some sandboxes have no IPv6 loopback at all; say so rather than fail.
                eprintln!("skipping: no IPv6 loopback here ({err})");
                return;
            }
        };
    let data = pattern_bytes(7, 100_000);
    let (echoed, peer) = echo_through(&running, listener.local_address().clone(), &data);
    assert!(echoed == data, "echo differs");
    assert!(matches!(peer, Peer::Tcp(addr) if addr.is_ipv6()));
}

#[test]
fn echo_over_unix() {
    let running = Running::new();
    let path = std::env::temp_dir().join(format!("weir-sock-echo-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = echo_listener(&running, &Address::Unix(path.clone()));
    assert_eq!(listener.local_address(), &Address::Unix(path.clone()));
    let data = pattern_bytes(3, 200_000);
    let (echoed, peer) = echo_through(&running, Address::Unix(path.clone()), &data);
    assert!(echoed == data, "echo differs");
    assert_eq!(peer, Peer::Unix(Some(path.clone())));
    listener.close();
    let _ = std::fs::remove_file(&path);
}

/// An agent on one end of a TCP pair, the other end a plain blocking std socket.
fn agent_with_std_peer(running: &Running, config: AgentConfig) -> (StreamAgent, TcpStream) {
    let (ours, theirs) = tcp_pair().unwrap();
    theirs.set_nonblocking(false).unwrap();
    let agent = StreamAgent::from_socket(&running.reactor, ours, config).unwrap();
    (agent, TcpStream::from(theirs))
}

/// Counts close callbacks and keeps the last report.
fn close_counter(agent: &StreamAgent) -> (Arc<AtomicUsize>, Arc<Mutex<Option<CloseInfo>>>) {
    let count = Arc::new(AtomicUsize::new(0));
    let info = Arc::new(Mutex::new(None));
    let (c, i) = (count.clone(), info.clone());
    agent.set_close_callback(move |report| {
        c.fetch_add(1, Ordering::SeqCst);
        *i.lock() = Some(report);
    });
    (count, info)
}

#[test]
fn half_close_local_end_then_peer_keeps_sending() {
    let running = Running::new();
    let (agent, mut peer) = agent_with_std_peer(&running, AgentConfig::default());
    let (closes, info) = close_counter(&agent);
    let (sink, record) = recorder(&running.reactor, Window::Unlimited, ControlReply::Allowed);
    let writer = ByteWriter::new(&running.reactor, 1024);
    let pair = agent.io_pair();
    attach(&pair.producer, &sink.consumer()).unwrap();
    attach(&writer.producer(), &pair.consumer).unwrap();
    writer.write(&b"request"[..]).unwrap();
    writer.end_write(Ending::Completed);
    // The peer sees our data, then end of file (SHUT_WR), while our input stays open.
    let mut got = Vec::new();
    peer.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"request");
    assert!(!agent.is_closed());
    peer.write_all(b"reply after your EOF").unwrap();
    wait_for("the reply", || {
        record.lock().data == b"reply after your EOF"
    });
    assert_eq!(closes.load(Ordering::SeqCst), 0, "input is still open");
    peer.shutdown(Shutdown::Write).unwrap();
    wait_for("the input to end", || record.lock().ending.is_some());
    assert_eq!(record.lock().ending, Some(Ending::Completed));
    wait_for("the close callback", || closes.load(Ordering::SeqCst) == 1);
    let info = info.lock().clone().unwrap();
    assert_eq!(
        (info.input, info.output),
        (Ending::Completed, Ending::Completed)
    );
    assert!(
        info.error.is_none(),
        "a clean close recorded {:?}",
        info.error
    );
    assert!(agent.is_closed());
    // Closed means closed: the peer sees end of file on its side too.
    let mut rest = Vec::new();
    peer.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    std::thread::sleep(Duration::from_millis(50)); // a late second callback would show now
    assert_eq!(closes.load(Ordering::SeqCst), 1);
}

#[test]
fn half_close_peer_end_then_we_keep_sending() {
    let running = Running::new();
    let (agent, mut peer) = agent_with_std_peer(&running, AgentConfig::default());
    let (closes, _) = close_counter(&agent);
    let (sink, record) = recorder(&running.reactor, Window::Unlimited, ControlReply::Allowed);
    let writer = ByteWriter::new(&running.reactor, 1 << 20);
    let pair = agent.io_pair();
    attach(&pair.producer, &sink.consumer()).unwrap();
    attach(&writer.producer(), &pair.consumer).unwrap();
    peer.write_all(b"question").unwrap();
    peer.shutdown(Shutdown::Write).unwrap();
    wait_for("the peer's end", || record.lock().ending.is_some());
    assert_eq!(record.lock().data, b"question");
    assert_eq!(record.lock().ending, Some(Ending::Completed));
    assert!(
        !agent.is_closed(),
        "output stays open after the peer's half-close"
    );
    let answer = pattern_bytes(11, 500_000);
    writer.write(answer.clone()).unwrap();
    writer.end_write(Ending::Completed);
    let mut got = Vec::new();
    peer.read_to_end(&mut got).unwrap();
    assert!(got == answer, "answer differs ({} bytes)", got.len());
    wait_for("the close callback", || closes.load(Ordering::SeqCst) == 1);
}

#[test]
fn no_half_close_policy_closes_both_on_upstream_end() {
    let running = Running::new();
    let config = AgentConfig::default().with_half_close(HalfClosePolicy::NO_HALF_CLOSE);
    let (agent, mut peer) = agent_with_std_peer(&running, config);
    let (closes, _) = close_counter(&agent);
    let (sink, record) = recorder(&running.reactor, Window::Unlimited, ControlReply::Allowed);
    let writer = ByteWriter::new(&running.reactor, 1024);
    let pair = agent.io_pair();
    attach(&pair.producer, &sink.consumer()).unwrap();
    attach(&writer.producer(), &pair.consumer).unwrap();
    writer.write(&b"bye"[..]).unwrap();
    writer.end_write(Ending::Completed);
    let mut got = Vec::new();
    peer.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"bye");
    wait_for("the close callback", || closes.load(Ordering::SeqCst) == 1);
    wait_for("the chain to end", || record.lock().ending.is_some());
}

#[test]
fn peer_reset_ends_the_chain_lost() {
    let running = Running::new();
    let (agent, peer) = agent_with_std_peer(&running, AgentConfig::default());
    let (closes, info) = close_counter(&agent);
    let (sink, record) = recorder(&running.reactor, Window::Unlimited, ControlReply::Allowed);
    let writer = ByteWriter::new(&running.reactor, 1024);
    let pair = agent.io_pair();
    attach(&pair.producer, &sink.consumer()).unwrap();
    attach(&writer.producer(), &pair.consumer).unwrap();
    // Linger 0: close sends RST instead of FIN.
    let peer = Socket::from(peer);
    peer.set_linger(Some(Duration::ZERO)).unwrap();
    drop(peer);
    wait_for("the chain to end", || record.lock().ending.is_some());
    assert_eq!(record.lock().ending, Some(Ending::Lost));
    // Writing to a reset connection fails too; the agent then closes completely.
    let _ = writer.write(&b"anyone?"[..]);
    wait_for("the close callback", || closes.load(Ordering::SeqCst) == 1);
    let info = info.lock().clone().unwrap();
    assert_eq!(info.input, Ending::Lost);
    let error = info.error.expect("the reset is recorded");
    assert!(
        matches!(
            error.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        "unexpected error {error:?}"
    );
}

/// Whether the kernel still lists the loopback TCP connection from port `local` to port
/// `remote` (and not as a `TIME_WAIT` leftover of an earlier one): a socket that has taken a
/// reset has left `/proc/net/tcp`. Both ports are matched, since other tests' connections
/// can use either.
fn loopback_tcp_connection_listed(local: u16, remote: u16) -> bool {
    const TIME_WAIT: &str = "06";
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let (local, remote) = (
        format!("0100007F:{local:04X}"),
        format!("0100007F:{remote:04X}"),
    );
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        let (from, to, state) = (fields.next(), fields.next(), fields.next());
        from == Some(local.as_str()) && to == Some(remote.as_str()) && state != Some(TIME_WAIT)
    })
}

/// An agent with a recording sink (granting `window`, paused from the start if `paused`) and a
/// writer attached, whose peer holds bytes of ours unread: when the peer closes, its kernel
/// resets the connection.
struct PeerWithOurBytes {
    agent: StreamAgent,
    peer: TcpStream,
    sink: Arc<weir_io::ByteSink<common::Recorder>>,
    record: Arc<Mutex<common::Record>>,
    writer: Arc<ByteWriter>,
    info: Arc<Mutex<Option<CloseInfo>>>,
}

fn peer_with_our_bytes(running: &Running, window: Window, paused: bool) -> PeerWithOurBytes {
    let (agent, peer) = agent_with_std_peer(running, AgentConfig::default());
    let (_, info) = close_counter(&agent);
    let (sink, record) = recorder(&running.reactor, window, ControlReply::Allowed);
    if paused {
        // Before it is attached: credit granted once stays granted.
        sink.pause();
    }
    let writer = ByteWriter::new(&running.reactor, 1024);
    let pair = agent.io_pair();
    attach(&pair.producer, &sink.consumer()).unwrap();
    attach(&writer.producer(), &pair.consumer).unwrap();
    writer.write(&b"never read"[..]).unwrap();
    peer.peek(&mut [0]).unwrap();
    PeerWithOurBytes {
        agent,
        peer,
        sink,
        record,
        writer,
        info,
    }
}

/// Has `peer`, which holds bytes of ours unread, send `last` and close, which resets the
/// connection, and waits until the kernel has taken the reset.
fn send_then_reset(mut peer: TcpStream, last: &[u8]) {
    let ports = (
        peer.peer_addr().unwrap().port(),
        peer.local_addr().unwrap().port(),
    );
    peer.write_all(last).unwrap();
    drop(peer);
    wait_for("the reset", || {
        !loopback_tcp_connection_listed(ports.0, ports.1)
    });
}

/// The peer's last bytes, then its reset (it closed with bytes of ours unread), both there
/// before the agent looks: the bytes reach the chain, then it ends `Lost` with the reset.
#[test]
fn a_peers_last_bytes_before_its_reset_reach_the_chain() {
    let running = Running::new();
    let PeerWithOurBytes {
        peer, record, info, ..
    } = peer_with_our_bytes(&running, Window::Unlimited, false);
    // Hold the reactor while the peer answers and resets, so that the agent sees both at once.
    let (held, hold) = (mpsc::channel(), mpsc::channel::<()>());
    running.reactor.call(move || {
        held.0.send(()).unwrap();
        let _ = hold.1.recv();
    });
    held.1.recv().unwrap();
    send_then_reset(peer, b"last words");
    drop(hold.0);
    wait_for("the chain to end", || record.lock().ending.is_some());
    assert_eq!(record.lock().data, b"last words");
    assert_eq!(record.lock().ending, Some(Ending::Lost));
    wait_for("the close callback", || info.lock().is_some());
    let error = info
        .lock()
        .clone()
        .unwrap()
        .error
        .expect("the reset is recorded");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error:?}");
}

/// An agent whose peer has sent `last` and then reset the connection, all of it taken in by
/// the agent while its consumer (granting five bytes at a time, paused) had no credit.
struct ResetWithBytesUnread {
    agent: StreamAgent,
    sink: Arc<weir_io::ByteSink<common::Recorder>>,
    record: Arc<Mutex<common::Record>>,
    info: Arc<Mutex<Option<CloseInfo>>>,
    last: Vec<u8>,
}

fn reset_with_bytes_unread(running: &Running) -> ResetWithBytesUnread {
    let PeerWithOurBytes {
        agent,
        peer,
        sink,
        record,
        writer,
        info,
    } = peer_with_our_bytes(running, Window::Bytes(5), true);
    let last = pattern_bytes(7, 20_000);
    send_then_reset(peer, &last);
    // Nothing more can be written: the agent aborts its writer as soon as it sees the reset.
    wait_for("the reset to abort the writer", || writer.is_closed());
    ResetWithBytesUnread {
        agent,
        sink,
        record,
        info,
        last,
    }
}

/// The peer's last bytes, then its reset, while the consumer has no credit: the agent keeps
/// the bytes in the kernel until the consumer asks for them, then ends the chain `Lost` with
/// the reset.
#[test]
fn a_peers_last_bytes_before_its_reset_wait_for_the_consumers_credit() {
    let running = Running::new();
    let reset = reset_with_bytes_unread(&running);
    assert!(reset.record.lock().data.is_empty());
    let ending = reset.record.lock().ending;
    assert_eq!(ending, None, "ended before its bytes were read");
    assert!(
        reset.info.lock().is_none(),
        "closed before its bytes were read"
    );
    // Credit again, five bytes at a time: all of them come, then the end.
    reset.sink.resume();
    wait_for("the chain to end", || reset.record.lock().ending.is_some());
    let record = reset.record.lock();
    assert!(
        record.data == reset.last,
        "the bytes before the reset differ"
    );
    assert_eq!(record.ending, Some(Ending::Lost));
    drop(record);
    wait_for("the close callback", || reset.info.lock().is_some());
    let info = reset.info.lock().clone().unwrap();
    assert_eq!((info.input, info.output), (Ending::Lost, Ending::Lost));
    let error = info.error.expect("the reset is recorded");
    assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error:?}");
    assert!(reset.agent.is_closed());
}

/// An agent waiting for credit to read what came before a reset still closes, and runs its
/// close callback, when its reactor stops.
#[test]
fn an_agent_holding_bytes_from_before_a_reset_closes_when_its_reactor_stops() {
    let running = Running::new();
    let reset = reset_with_bytes_unread(&running);
    assert!(reset.info.lock().is_none());
    drop(running);
    let info = reset.info.lock().clone().expect("the close callback ran");
    assert_eq!((info.input, info.output), (Ending::Lost, Ending::Lost));
    assert!(reset.agent.is_closed());
}

#[test]
fn close_callback_runs_once_after_both_directions() {
    let running = Running::new();
    let (a, b) = unix_pair().unwrap();
    let agent = StreamAgent::from_socket(&running.reactor, a, AgentConfig::default()).unwrap();
    let peer = StreamAgent::from_socket(&running.reactor, b, AgentConfig::default()).unwrap();
    let (closes, info) = close_counter(&agent);
    let (sink, record) = recorder(&running.reactor, Window::Unlimited, ControlReply::Allowed);
    let writer = ByteWriter::new(&running.reactor, 1024);
    let pair = agent.io_pair();
    attach(&pair.producer, &sink.consumer()).unwrap();
    attach(&writer.producer(), &pair.consumer).unwrap();
    // The peer echoes: our end reaches it as EOF, its echo ends and comes back as EOF.
    let peer_pair = peer.io_pair();
    attach(&peer_pair.producer, &peer_pair.consumer).unwrap();
    writer.write(&b"ping"[..]).unwrap();
    writer.end_write(Ending::Completed);
    wait_for("the close callback", || closes.load(Ordering::SeqCst) == 1);
    assert_eq!(record.lock().data, b"ping");
    assert_eq!(record.lock().ends, 1);
    let info = info.lock().clone().unwrap();
    assert_eq!(
        (info.input, info.output),
        (Ending::Completed, Ending::Completed)
    );
    // A callback set after the close runs at once; closing again does nothing.
    let (tx, rx) = mpsc::channel();
    agent.set_close_callback(move |_| tx.send(()).unwrap());
    rx.recv_timeout(DEADLINE).unwrap();
    agent.close(Ending::Lost);
    wait_for("the peer to close", || peer.is_closed());
    std::thread::sleep(Duration::from_millis(50)); // a late second callback would show now
    assert_eq!(closes.load(Ordering::SeqCst), 1);
}

/// A consumer that stops granting credit stops the agent from reading: the kernel buffers
/// fill and the sender blocks; resuming delivers everything, in order.
#[test]
fn slow_consumer_stops_reading_and_the_sender_blocks() {
    let running = Running::new();
    let (agent, peer) = agent_with_std_peer(&running, AgentConfig::default());
    let (sink, record) = recorder(&running.reactor, Window::Bytes(8192), ControlReply::Allowed);
    attach(&agent.io_pair().producer, &sink.consumer()).unwrap();
    // Paused, the sink grants nothing beyond its first window.
    sink.pause();
    let total = 64 << 20;
    let data = Arc::new(pattern_bytes(0, total));
    let sent = Arc::new(AtomicUsize::new(0));
    let (s, d) = (sent.clone(), data.clone());
    let sender = std::thread::spawn(move || {
        let mut peer = peer;
        for chunk in d.chunks(64 * 1024) {
            peer.write_all(chunk).unwrap();
            s.fetch_add(chunk.len(), Ordering::SeqCst);
        }
        peer.shutdown(Shutdown::Write).unwrap();
    });
    // The sender gets stuck once the kernel buffers are full.
    let mut last = usize::MAX;
    wait_for("the sender to block", || {
        let now = sent.load(Ordering::SeqCst);
        let stuck = now == last && now > 0;
        last = now;
        std::thread::sleep(Duration::from_millis(100));
        stuck
    });
    let stuck_at = sent.load(Ordering::SeqCst);
    assert!(
        stuck_at < total,
        "all {total} bytes went through a paused consumer"
    );
    let read = record.lock().data.len();
    assert!(
        read <= 8192,
        "the agent read {read} bytes past a credit of 8192"
    );
    assert!(agent.buffered() == 0);
    sink.resume();
    sender.join().unwrap();
    wait_for("everything to arrive", || record.lock().ending.is_some());
    let record = record.lock();
    assert_eq!(record.ending, Some(Ending::Completed));
    assert!(record.data == *data, "data differs");
}

/// The agent grants its upstream only the free space of its write buffer: a peer that does
/// not read leaves a writer full, not the agent's memory.
#[test]
fn write_buffer_bounds_what_the_agent_takes() {
    let running = Running::new();
    let config = AgentConfig::default().with_write_buffer(32 * 1024);
    let (agent, mut peer) = agent_with_std_peer(&running, config);
    let writer = ByteWriter::new(&running.reactor, 64 * 1024);
    attach(&writer.producer(), &agent.io_pair().consumer).unwrap();
    let mut written = 0usize;
    // Keep the writer topped up until the whole path (kernel buffers, agent, writer) is full.
    let mut stalls = 0;
    while stalls < 20 {
        match writer.write(pattern_bytes(written as u64, 16 * 1024)) {
            Ok(()) => {
                written += 16 * 1024;
                stalls = 0;
            }
            Err(_) => {
                stalls += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        assert!(written < 256 << 20, "the agent takes without limit");
    }
    assert!(
        agent.buffered() <= 32 * 1024,
        "buffered {}",
        agent.buffered()
    );
    assert!(writer.free() < 16 * 1024, "the writer is not held back");
    // Now read it all: everything arrives in order.
    writer.end_write(Ending::Completed);
    let mut got = Vec::new();
    peer.read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), written);
    assert!(got == pattern_bytes(0, written));
}

/// Raises the soft descriptor limit to `want` (or the hard limit).
fn raise_nofile(want: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        if limit.rlim_cur < want {
            limit.rlim_cur = want.min(limit.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
    }
    limit.rlim_cur
}

#[test]
fn two_thousand_connections_on_one_reactor() {
    const CONNECTIONS: usize = 2000;
    let limit = raise_nofile(3 * CONNECTIONS as u64 + 200);
    assert!(
        limit >= 2 * CONNECTIONS as u64 + 100,
        "descriptor limit {limit} is too low for this test"
    );
    let running = Running::new();
    let r = running.reactor.clone();
    let listener = Listener::bind(
        &running.reactor,
        &"127.0.0.1:0".parse().unwrap(),
        ListenOptions::default().with_backlog(4096),
        move |accepted| {
            let agent = accepted.into_agent(&r, AgentConfig::default()).unwrap();
            let pair = agent.io_pair();
            attach(&pair.producer, &pair.consumer).unwrap();
        },
    )
    .unwrap();
    let mut clients = Vec::new();
    for i in 0..CONNECTIONS {
        let agent = StreamAgent::connect(
            &running.reactor,
            listener.local_address().clone(),
            ConnectOptions::default(),
        );
        let (sink, record) = recorder(&running.reactor, Window::Bytes(4096), ControlReply::Allowed);
        let writer = ByteWriter::new(&running.reactor, 1024);
        let pair = agent.io_pair();
        attach(&pair.producer, &sink.consumer()).unwrap();
        attach(&writer.producer(), &pair.consumer).unwrap();
        writer.write(format!("connection {i}\n")).unwrap();
        clients.push((agent, writer, record));
    }
    // All of them open at once: every echo arrives before anyone ends.
    wait_for("every echo", || {
        clients.iter().all(|(_, _, record)| {
            !record.lock().data.is_empty() && record.lock().data.ends_with(b"\n")
        })
    });
    assert!(running.reactor.registered() >= 2 * CONNECTIONS);
    for (i, (_, writer, record)) in clients.iter().enumerate() {
        assert_eq!(record.lock().data, format!("connection {i}\n").as_bytes());
        writer.end_write(Ending::Completed);
    }
    wait_for("every connection to close", || {
        clients.iter().all(|(agent, _, _)| agent.is_closed())
    });
    // The sink's end hook runs from the reactor queue, after the agent has closed.
    wait_for("every chain to end", || {
        clients
            .iter()
            .all(|(_, _, record)| record.lock().ending.is_some())
    });
    for (agent, _, record) in &clients {
        assert_eq!(record.lock().ending, Some(Ending::Completed), "{agent:?}");
    }
    // The server side closed too: only the listener (and the reactor's own) remain.
    wait_for("the server agents to go", || {
        running.reactor.registered() <= 2
    });
}

/// Regression (sockets issue): an echo agent whose chain is its own two sides is owned by
/// nothing but that chain. When its input ended while its write buffer still held bytes,
/// the chain ended, the agent was dropped, and its socket closed with those bytes unsent:
/// the client saw a clean end short of up to 64 KiB. The reactor registration now keeps the
/// agent alive until it has closed. A slow reader makes the write buffer fill, so the end
/// of input often arrives while bytes wait (before the fix about one round in 40 failed).
#[test]
fn echo_with_a_slow_reader_writes_everything_before_closing() {
    let running = Running::new();
    let r = running.reactor.clone();
    // Small kernel buffers on both sides: the kernel holds little of the echo, so the
    // server's own write buffer is full when its input ends.
    let options = ListenOptions::default()
        .with_socket(weir_sock::SocketOptions::default().with_send_buffer(16 * 1024));
    let listener = Listener::bind(
        &running.reactor,
        &"127.0.0.1:0".parse().unwrap(),
        options,
        move |accepted| {
            // The agent is not kept: only its own chain and the reactor refer to it.
            let agent = accepted.into_agent(&r, AgentConfig::default()).unwrap();
            let pair = agent.io_pair();
            attach(&pair.producer, &pair.consumer).unwrap();
        },
    )
    .unwrap();
    let Address::Tcp(address) = listener.local_address().clone() else {
        unreachable!("bound to a TCP address")
    };
    let mut short = Vec::new();
    for round in 0..30u64 {
        let total = (1 << 20) + (round as usize * 7919) % 100_000;
        let socket = Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        socket.connect(&address.into()).unwrap();
        let stream = TcpStream::from(socket);
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let sender = std::thread::spawn(move || {
            writer.write_all(&pattern_bytes(round, total)).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut reader = stream;
        let mut buf = vec![0; 16 * 1024];
        let mut got = 0;
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            got += n;
            // The deliberately slow reader: the behaviour under test.
            std::thread::sleep(Duration::from_micros(20 + (got as u64 + round) % 60));
        }
        sender.join().unwrap();
        if got != total {
            short.push((round, total - got));
        }
    }
    assert!(
        short.is_empty(),
        "rounds that came back short (round, missing bytes): {short:?}"
    );
}

/// Keeps every chunk it receives, as received, and reports each chunk's length.
struct Keeper {
    chunks: Arc<Mutex<Vec<bytes::Bytes>>>,
    lengths: mpsc::Sender<usize>,
}

impl weir_io::SinkHooks for Keeper {
    fn on_data(&mut self, _link: &Arc<weir_io::Link>, data: bytes::Bytes) {
        let len = data.len();
        self.chunks.lock().push(data);
        let _ = self.lengths.send(len);
    }
}

/// Issue 3: reads go straight into the buffers that travel downstream, short ones through one
/// spare buffer that is reused. Every chunk is kept alive until the end, so a buffer reused
/// while a chunk still pointed into it would show as changed bytes; sizes on both sides of
/// the copy limit, up to past `max_read`, and a window that makes the credit vary, must
/// come through whole, in order, and within the credit.
#[test]
fn reads_into_handed_out_buffers_never_overlap_or_lose_bytes() {
    for window in [Window::Unlimited, Window::Bytes(5000)] {
        let running = Running::new();
        let (agent, mut peer) = agent_with_std_peer(&running, AgentConfig::default());
        let chunks = Arc::new(Mutex::new(Vec::new()));
        let (lengths, arrived) = mpsc::channel();
        let keeper = Keeper {
            chunks: chunks.clone(),
            lengths,
        };
        let sink = weir_io::ByteSink::new(&running.reactor, window, keeper);
        attach(&agent.io_pair().producer, &sink.consumer()).unwrap();
        let sizes = [
            1,
            7,
            1024,
            1025,
            4096,
            100_000,
            3,
            16 * 1024 + 1,
            65_536,
            2,
            200_000,
        ];
        let total: usize = sizes.iter().sum::<usize>() * 3;
        let data = pattern_bytes(11, total);
        let (mut sent, mut received) = (0, 0);
        for size in sizes.iter().cycle().take(sizes.len() * 3) {
            peer.write_all(&data[sent..sent + size]).unwrap();
            sent += size;
            // Lock-step: each message is read on its own, so short and long reads alternate.
            while received < sent {
                received += arrived.recv_timeout(DEADLINE).expect("a chunk");
            }
        }
        assert_eq!(received, total);
        let chunks = chunks.lock();
        if let Window::Bytes(limit) = window {
            let largest = chunks.iter().map(|c| c.len()).max().unwrap();
            assert!(
                largest as u64 <= limit,
                "a {largest} B chunk passed the credit"
            );
        }
        let joined: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        assert!(joined == data, "the kept chunks differ from what was sent");
    }
}

/// Whether `socket` is closed in a child after `exec`.
fn close_on_exec(socket: &Socket) -> bool {
    rustix::io::fcntl_getfd(socket)
        .unwrap()
        .contains(rustix::io::FdFlags::CLOEXEC)
}

#[test]
fn sockets_are_made_non_blocking_and_close_on_exec_and_know_their_peer() {
    let running = Running::new();
    let (tx, rx) = mpsc::channel();
    let r = running.reactor.clone();
    let listener = Listener::bind(
        &running.reactor,
        &"127.0.0.1:0".parse().unwrap(),
        ListenOptions::default(),
        move |accepted| {
            let flags = (
                accepted.socket.nonblocking().unwrap(),
                close_on_exec(&accepted.socket),
                accepted.socket.nodelay().unwrap(),
            );
            let peer = accepted.peer.clone();
            let agent = accepted.into_agent(&r, AgentConfig::default()).unwrap();
            tx.send((flags, peer, agent.peer(), agent)).unwrap();
        },
    )
    .unwrap();
    let Address::Tcp(server) = listener.local_address().clone() else {
        unreachable!("a TCP listener")
    };
    let client = TcpStream::connect(server).unwrap();
    let ((nonblocking, cloexec, nodelay), peer, agent_peer, _agent) =
        rx.recv_timeout(DEADLINE).unwrap();
    assert!(nonblocking && cloexec && nodelay);
    let expected = Peer::Tcp(client.local_addr().unwrap());
    assert_eq!(peer, expected);
    assert_eq!(agent_peer, Some(expected));

    let fresh = weir_sock::stream_socket(listener.local_address()).unwrap();
    assert!(fresh.nonblocking().unwrap() && close_on_exec(&fresh));
}

#[test]
fn zero_read_and_write_sizes_count_as_one_byte_not_as_the_end() {
    let running = Running::new();
    let mut config = AgentConfig::default();
    config.max_read = 0;
    config.write_buffer = 0;
    let (agent, mut peer) = agent_with_std_peer(&running, config);
    let pair = agent.io_pair();
    attach(&pair.producer, &pair.consumer).unwrap();
    let data = pattern_bytes(5, 3000);
    peer.write_all(&data).unwrap();
    peer.shutdown(Shutdown::Write).unwrap();
    peer.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut echoed = Vec::new();
    peer.read_to_end(&mut echoed).unwrap();
    assert!(
        echoed == data,
        "echo differs: {} of {} bytes",
        echoed.len(),
        data.len()
    );
}

/// A client that has spoken before its connection is accepted (a TLS ClientHello, a request)
/// is read in the loop turn that accepts it: the agent reads from the reactor's queue, right
/// after the listener's factory has attached the chain, instead of waiting for the poller to
/// report the socket readable on the next turn.
#[test]
fn an_accepted_connection_is_read_in_the_turn_that_accepts_it() {
    let reactor = Reactor::new().unwrap();
    let (tx, rx) = mpsc::channel();
    let r = reactor.clone();
    let listener = Listener::bind(
        &reactor,
        &"127.0.0.1:0".parse().unwrap(),
        ListenOptions::default(),
        move |accepted| {
            let agent = accepted.into_agent(&r, AgentConfig::default()).unwrap();
            let (sink, record) = recorder(&r, Window::Bytes(4096), ControlReply::Allowed);
            attach(&agent.io_pair().producer, &sink.consumer()).unwrap();
            // Queued after the agent's first read, so it runs right after it, in this turn.
            let tx = tx.clone();
            r.call(move || {
                let seen = std::mem::take(&mut record.lock().data);
                tx.send(seen).unwrap();
                drop((agent, sink));
            });
        },
    )
    .unwrap();
    let Address::Tcp(address) = listener.local_address().clone() else {
        unreachable!("bound to a TCP address")
    };
    // Connected and written before the loop runs: the bytes wait in the kernel.
    let mut client = TcpStream::connect(address).unwrap();
    client.write_all(b"hello").unwrap();
    let thread = reactor.start().unwrap();
    let seen = rx.recv_timeout(DEADLINE).unwrap();
    reactor.stop();
    thread.join().unwrap();
    assert_eq!(
        seen, b"hello",
        "the first bytes were not read in the accepting turn"
    );
}

/// A connected agent is registered wanting to read, before anything is attached to it (one
/// call to the poller instead of two for an accepted connection). Bytes already there while
/// nobody consumes them stay in the socket through the loop turns that see them, and all of
/// them arrive, in order, once a consumer attaches.
#[test]
fn bytes_that_arrive_before_the_chain_is_attached_wait_for_it() {
    let running = Running::new();
    let (agent, mut peer) = agent_with_std_peer(&running, AgentConfig::default());
    peer.write_all(b"early bytes").unwrap();
    // Loop turns with the socket readable and no consumer: each round trip is one turn.
    for _ in 0..3 {
        let (tx, rx) = mpsc::channel();
        running.reactor.call(move || tx.send(()).unwrap());
        rx.recv_timeout(DEADLINE).unwrap();
    }
    let (sink, record) = recorder(&running.reactor, Window::Bytes(4096), ControlReply::Allowed);
    attach(&agent.io_pair().producer, &sink.consumer()).unwrap();
    peer.write_all(b", then more").unwrap();
    wait_for("every byte", || record.lock().data.len() >= 22);
    assert_eq!(record.lock().data, b"early bytes, then more");
}
