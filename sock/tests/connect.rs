//! Connecting: refused, timed out, vetoed, host names, late consumers, every address tried.

mod common;

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{recorder, wait_for, Running};
use weir_io::{attach, ByteWriter, ControlReply, Ending, IoControl, Peer, Window};
use weir_sock::{Address, ConnectError, ConnectOptions, StreamAgent};

/// A loopback port with nothing listening on it (bound, then released).
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

#[test]
fn refused_connect_is_reported_and_ends_lost() {
    let running = Running::new();
    let (tx, rx) = mpsc::channel();
    let options = ConnectOptions::default().on_connect(move |outcome| tx.send(outcome).unwrap());
    let agent = StreamAgent::connect(&running.reactor, closed_port().into(), options);
    let (sink, record) = recorder(&running.reactor, Window::Unlimited, ControlReply::Allowed);
    attach(&agent.io_pair().producer, &sink.consumer()).unwrap();
    let outcome = rx.recv_timeout(common::DEADLINE).unwrap();
    match outcome {
        Err(ConnectError::Io(err)) => assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused),
        other => panic!("expected a refused connect, got {other:?}"),
    }
    wait_for("the chain to end", || record.lock().ending.is_some());
    assert_eq!(record.lock().ending, Some(Ending::Lost));
    assert_eq!(record.lock().ends, 1);
    wait_for("the agent to close", || agent.is_closed());
    assert!(record.lock().connected.is_empty());
}

#[test]
fn refused_connect_without_a_chain_still_reports() {
    let running = Running::new();
    let (tx, rx) = mpsc::channel();
    let options = ConnectOptions::default().on_connect(move |outcome| tx.send(outcome).unwrap());
    let agent = StreamAgent::connect(&running.reactor, closed_port().into(), options);
    let outcome = rx.recv_timeout(common::DEADLINE).unwrap();
    assert_eq!(
        outcome.unwrap_err().kind(),
        Some(io::ErrorKind::ConnectionRefused)
    );
    wait_for("the agent to close", || agent.is_closed());
}

#[test]
fn a_chain_attached_after_a_failed_connect_still_ends_lost() {
    let running = Running::new();
    let (tx, rx) = mpsc::channel();
    let options = ConnectOptions::default().on_connect(move |outcome| tx.send(outcome).unwrap());
    let agent = StreamAgent::connect(&running.reactor, closed_port().into(), options);
    assert!(rx.recv_timeout(common::DEADLINE).unwrap().is_err());
    wait_for("the agent to close", || agent.is_closed());
    // Both sides attach after the failure: the reader hears the end, the writer the abort.
    let (sink, record) = recorder(&running.reactor, Window::Unlimited, ControlReply::Allowed);
    let writer = weir_io::ByteWriter::new(&running.reactor, 64);
    let pair = agent.io_pair();
    attach(&pair.producer, &sink.consumer()).unwrap();
    attach(&writer.producer(), &pair.consumer).unwrap();
    wait_for("the chain to end", || record.lock().ending.is_some());
    assert_eq!(record.lock().ending, Some(Ending::Lost));
    wait_for("the writer to be aborted", || writer.is_closed());
}

/// Loopback only: a listener with backlog 0 that never accepts is filled with connections;
/// Linux then drops further SYNs, so a connect neither succeeds nor fails until our timeout.
#[test]
fn connect_times_out() {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(0).unwrap();
    let address = socket.local_addr().unwrap().as_socket().unwrap();
    // Fill the accept queue: with backlog 0 Linux queues one connection, then drops SYNs.
    // Nonblocking connects that stay pending count as filling too; stop once one is stuck.
    let mut fillers = Vec::new();
    let mut filled = false;
    for _ in 0..8 {
        let filler =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        filler.set_nonblocking(true).unwrap();
        let _ = filler.connect(&address.into());
        let start = Instant::now();
        // A filler that is connected within 200 ms went into the queue; one that is not
        // shows that SYNs are dropped now.
        let mut connected = false;
        while start.elapsed() < Duration::from_millis(200) {
            if filler.peer_addr().is_ok() {
                connected = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        fillers.push(filler);
        if !connected {
            filled = true;
            break;
        }
    }
    assert!(filled, "the listen queue never filled up");

    let running = Running::new();
    let (tx, rx) = mpsc::channel();
    let options = ConnectOptions::default()
        .with_timeout(Some(Duration::from_millis(300)))
        .on_connect(move |outcome| tx.send(outcome).unwrap());
    let started = Instant::now();
    let agent = StreamAgent::connect(&running.reactor, address.into(), options);
    let (sink, record) = recorder(&running.reactor, Window::Unlimited, ControlReply::Allowed);
    attach(&agent.io_pair().producer, &sink.consumer()).unwrap();
    let outcome = rx.recv_timeout(common::DEADLINE).unwrap();
    let took = started.elapsed();
    assert!(
        matches!(outcome, Err(ConnectError::TimedOut)),
        "expected a timeout, got {outcome:?}"
    );
    assert!(
        took >= Duration::from_millis(250),
        "timed out too early: {took:?}"
    );
    wait_for("the chain to end", || record.lock().ending.is_some());
    assert_eq!(record.lock().ending, Some(Ending::Lost));
    wait_for("the agent to close", || agent.is_closed());
}

#[test]
fn can_connect_veto_closes_without_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let running = Running::new();
    let (tx, rx) = mpsc::channel();
    let (sink, record) = recorder(&running.reactor, Window::Unlimited, ControlReply::Denied);
    // The veto is asked of the chain attached when the connect starts: connect and attach on
    // the reactor thread in one go, as the documentation says.
    let options = ConnectOptions::default().on_connect(move |outcome| tx.send(outcome).unwrap());
    let target = listener.local_addr().unwrap().into();
    let (agent_tx, agent_rx) = mpsc::channel();
    let r = running.reactor.clone();
    running.reactor.call(move || {
        let agent = StreamAgent::connect(&r, target, options);
        attach(&agent.io_pair().producer, &sink.consumer()).unwrap();
        agent_tx.send(agent).unwrap();
    });
    let agent = agent_rx.recv_timeout(common::DEADLINE).unwrap();
    let outcome = rx.recv_timeout(common::DEADLINE).unwrap();
    assert!(
        matches!(outcome, Err(ConnectError::Vetoed)),
        "expected a veto, got {outcome:?}"
    );
    let asked = record.lock().can_connect.clone();
    assert_eq!(asked, vec![Peer::Tcp(listener.local_addr().unwrap())]);
    wait_for("the chain to end", || record.lock().ending.is_some());
    assert_eq!(record.lock().ending, Some(Ending::Lost));
    assert!(agent.is_closed());
    // Nothing reached the listener.
    match listener.accept() {
        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
        other => panic!("the vetoed agent connected: {other:?}"),
    }
}

#[test]
fn connect_host_localhost_works_and_announces_connected() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let running = Running::new();
    let (tx, rx) = mpsc::channel();
    let options = ConnectOptions::default().on_connect(move |outcome| tx.send(outcome).unwrap());
    let agent = StreamAgent::connect_host(&running.reactor, "localhost", port, options);
    let (sink, record) = recorder(&running.reactor, Window::Unlimited, ControlReply::Allowed);
    let writer = ByteWriter::new(&running.reactor, 1024);
    let pair = agent.io_pair();
    attach(&pair.producer, &sink.consumer()).unwrap();
    attach(&writer.producer(), &pair.consumer).unwrap();
    writer.write(&b"ni"[..]).unwrap();
    writer.end_write(Ending::Completed);
    // localhost may resolve to ::1 first, where nothing listens: the next address is tried.
    let peer = rx.recv_timeout(common::DEADLINE).unwrap().unwrap();
    assert_eq!(peer, Peer::Tcp(listener.local_addr().unwrap()));
    let (mut server, _) = listener.accept().unwrap();
    let mut got = Vec::new();
    server.read_to_end(&mut got).unwrap();
    assert_eq!(got, b"ni");
    drop(server);
    wait_for("the chain to end", || record.lock().ending.is_some());
    assert_eq!(record.lock().ending, Some(Ending::Completed));
    assert_eq!(record.lock().connected, vec![peer]);
    wait_for("the agent to close", || agent.is_closed());
}

#[test]
fn unresolvable_host_fails_with_resolve_error() {
    let running = Running::new();
    let (tx, rx) = mpsc::channel();
    let options = ConnectOptions::default().on_connect(move |outcome| tx.send(outcome).unwrap());
    // `.invalid` never resolves (RFC 2606); the resolver may still consult the network's
    // configuration, but no traffic leaves loopback in a sandbox without DNS.
    let agent = StreamAgent::connect_host(&running.reactor, "weir.invalid", 7000, options);
    let outcome = rx.recv_timeout(common::DEADLINE).unwrap();
    assert!(
        matches!(
            outcome,
            Err(ConnectError::Resolve(_) | ConnectError::NoAddress)
        ),
        "got {outcome:?}"
    );
    wait_for("the agent to close", || agent.is_closed());
}

#[test]
fn every_address_is_tried_until_one_connects() {
    // connect_host resolves to one address here, so check the multi-address path with a
    // refused v6 address (nothing on that port) and a listening v4 one through localhost.
    // Which order the resolver gives does not matter: the listening one must win.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let running = Running::new();
    let (tx, rx) = mpsc::channel();
    let options = ConnectOptions::default().on_connect(move |outcome| tx.send(outcome).unwrap());
    let _agent = StreamAgent::connect_host(&running.reactor, "localhost", port, options);
    assert!(rx.recv_timeout(common::DEADLINE).unwrap().is_ok());
}

#[test]
fn late_consumer_still_gets_connected() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let running = Running::new();
    let (tx, rx) = mpsc::channel();
    let options = ConnectOptions::default().on_connect(move |outcome| tx.send(outcome).unwrap());
    let agent = StreamAgent::connect(
        &running.reactor,
        listener.local_addr().unwrap().into(),
        options,
    );
    let peer = rx.recv_timeout(common::DEADLINE).unwrap().unwrap();
    assert!(agent.is_connected());
    // Attached after the connect finished: the agent announces on attach.
    let (sink, record) = recorder(&running.reactor, Window::Unlimited, ControlReply::Allowed);
    attach(&agent.io_pair().producer, &sink.consumer()).unwrap();
    wait_for("Connected after attach", || {
        !record.lock().connected.is_empty()
    });
    assert_eq!(record.lock().connected[0], peer);
    // And again when asked with ReqProducerState.
    let link = agent_link(&sink);
    let reply = link.control_upstream(&IoControl::ReqProducerState);
    assert_eq!(reply, ControlReply::Handled);
    wait_for("Connected on request", || {
        record.lock().connected.len() >= 2
    });
    assert_eq!(record.lock().connected[1], peer);
}

/// The link a sink is attached by.
fn agent_link<H: weir_io::SinkHooks>(
    sink: &std::sync::Arc<weir_io::ByteSink<H>>,
) -> std::sync::Arc<weir_io::Link> {
    use weir_io::ByteConsumer;
    let mut link = None;
    wait_for("the link to open", || {
        link = sink.consumer_slot().link().filter(|l| l.is_open());
        link.is_some()
    });
    link.unwrap()
}

#[test]
fn unix_connect_refused_when_nothing_listens() {
    let path = std::env::temp_dir().join(format!("weir-sock-none-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let running = Running::new();
    let (tx, rx) = mpsc::channel();
    let options = ConnectOptions::default().on_connect(move |outcome| tx.send(outcome).unwrap());
    let agent = StreamAgent::connect(&running.reactor, Address::Unix(path), options);
    let outcome = rx.recv_timeout(common::DEADLINE).unwrap();
    assert!(
        matches!(outcome, Err(ConnectError::Io(_))),
        "got {outcome:?}"
    );
    wait_for("the agent to close", || agent.is_closed());
}

/// Regression: an upstream that ended (with nothing written) before the connect finished
/// closed the never-connected agent at once, so the connect was never made or reported.
#[test]
fn end_before_connect_waits_for_the_connect() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let running = Running::new();
    let (tx, rx) = mpsc::channel();
    let options = ConnectOptions::default().on_connect(move |outcome| tx.send(outcome).unwrap());
    let writer = ByteWriter::new(&running.reactor, 1024);
    let (sink, record) = recorder(&running.reactor, Window::Unlimited, ControlReply::Allowed);
    let target = listener.local_addr().unwrap().into();
    let (agent_tx, agent_rx) = mpsc::channel();
    let r = running.reactor.clone();
    let w = writer.clone();
    running.reactor.call(move || {
        let agent = StreamAgent::connect(&r, target, options);
        let pair = agent.io_pair();
        attach(&pair.producer, &sink.consumer()).unwrap();
        attach(&w.producer(), &pair.consumer).unwrap();
        agent_tx.send(agent).unwrap();
    });
    writer.end_write(Ending::Completed);
    let agent = agent_rx.recv_timeout(common::DEADLINE).unwrap();
    let peer = rx.recv_timeout(common::DEADLINE).unwrap();
    assert!(peer.is_ok(), "connect failed: {peer:?}");
    let (mut server, _) = listener.accept().unwrap();
    let mut got = Vec::new();
    server.read_to_end(&mut got).unwrap();
    assert!(got.is_empty());
    assert!(!agent.is_closed(), "input stays open after our half-close");
    drop(server);
    wait_for("the chain to end", || record.lock().ending.is_some());
    assert_eq!(record.lock().ending, Some(Ending::Completed));
    wait_for("the agent to close", || agent.is_closed());
}

/// Closing an agent while it connects tells `on_connect` so.
#[test]
fn close_while_connecting_reports_closed() {
    let running = Running::new();
    let (tx, rx) = mpsc::channel();
    let options = ConnectOptions::default().on_connect(move |outcome| tx.send(outcome).unwrap());
    // A connect that stays pending: 192.0.2.1 (TEST-NET-1) would leave loopback, so use the
    // same full-backlog trick as `connect_times_out` would; simpler: close from the reactor
    // thread right after starting the connect, before any readiness can arrive.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let target = listener.local_addr().unwrap().into();
    let r = running.reactor.clone();
    running.reactor.call(move || {
        let agent = StreamAgent::connect(&r, target, options);
        agent.close(Ending::Lost);
    });
    let outcome = rx.recv_timeout(common::DEADLINE).unwrap();
    assert!(
        matches!(outcome, Err(ConnectError::Closed)),
        "got {outcome:?}"
    );
}
