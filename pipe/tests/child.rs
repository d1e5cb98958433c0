//! Child processes as chain agents: throughput, backpressure, early exit, kill, stderr.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::time::Instant;

use common::{on_reactor, wait_until, CheckSink, PatternSource, LIMIT};
use weir_io::{attach, ByteSink, ByteSource, ByteWriter, Ending, Peer, Window};
use weir_pipe::{ChildAgent, ChildOptions, Stderr};
use weir_reactor::Reactor;

/// Where a [`CheckSink`] sends its report.
type Done = mpsc::Receiver<(common::Report, Vec<u8>)>;

/// A pattern source feeding `child`, a checking sink after it.
fn run_through(
    reactor: &Reactor,
    child: &ChildAgent,
    total: Option<u64>,
    check: bool,
) -> (Arc<ByteSource<PatternSource>>, Done) {
    let source = ByteSource::new(reactor, PatternSource::new(total));
    let (hooks, done) = CheckSink::new(check);
    let sink = ByteSink::new(reactor, Window::Bytes(256 * 1024), hooks);
    let pair = child.io_pair();
    attach(&source.producer(), &pair.consumer).unwrap();
    attach(&pair.producer, &sink.consumer()).unwrap();
    (source, done)
}

#[test]
fn cat_carries_100_mib_byte_for_byte() {
    const TOTAL: u64 = 100 * 1024 * 1024;
    let reactor = Reactor::new().unwrap();
    let thread = reactor.start().unwrap();
    let started = Instant::now();
    let child =
        ChildAgent::spawn(&reactor, &mut Command::new("cat"), ChildOptions::default()).unwrap();
    let (status_tx, status_rx) = mpsc::channel();
    child.on_exit(move |status| status_tx.send(status).unwrap());
    let (_source, done) = run_through(&reactor, &child, Some(TOTAL), true);
    let (report, _) = done.recv_timeout(LIMIT).expect("the chain ends");
    let elapsed = started.elapsed();
    eprintln!(
        "100 MiB through cat: {elapsed:?} ({:.0} MiB/s)",
        100.0 / elapsed.as_secs_f64()
    );
    assert_eq!(report.received, TOTAL);
    assert!(report.matches, "bytes differ from what was sent");
    assert_eq!(report.ending, Ending::Completed);
    assert_eq!(report.peer, Some(Peer::Process(child.id())));
    let exited = report.exited.expect("ChildExited came before the end");
    assert!(exited.status.success());
    assert_eq!(exited.pid, child.id());
    assert!(status_rx.recv_timeout(LIMIT).unwrap().success());
    // Both pipe ends and the pidfd are out of the reactor.
    assert_eq!(
        on_reactor(&reactor, {
            let r = reactor.clone();
            move || r.registered()
        }),
        0
    );
    assert!(child.agent().is_closed());
    reactor.stop();
    thread.join().unwrap();
}

#[test]
fn slow_child_stops_the_upstream() {
    const TOTAL: u64 = 4 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("gate");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let reactor = Reactor::new().unwrap();
    let thread = reactor.start().unwrap();
    // The child reads nothing until the test opens the FIFO, then copies everything.
    let child = ChildAgent::spawn(
        &reactor,
        Command::new("sh")
            .args(["-c", "read _ < \"$0\"; exec cat"])
            .arg(&fifo),
        ChildOptions::default(),
    )
    .unwrap();
    let (source, done) = run_through(&reactor, &child, Some(TOTAL), true);
    let produced = source.with_hooks(|h| h.produced.clone());
    let write_buffer = child.agent().config().write_buffer;
    wait_until("the write buffer to fill", || {
        child.agent().buffered() == write_buffer
    });
    // Full buffer, full pipe: the agent grants no more credit, so the source stopped.
    let stalled = produced.load(Ordering::Acquire);
    eprintln!("produced while the child was not reading: {stalled} bytes");
    assert!(
        stalled <= (write_buffer + 1024 * 1024) as u64,
        "buffered without bound: {stalled}"
    );
    // One more reactor turn changes nothing.
    on_reactor(&reactor, || ());
    assert_eq!(produced.load(Ordering::Acquire), stalled);
    assert_eq!(child.agent().buffered(), write_buffer);
    // Let the child go: everything arrives, in order.
    std::fs::write(&fifo, b"go\n").unwrap();
    let (report, _) = done.recv_timeout(LIMIT).expect("the chain ends");
    assert_eq!(report.received, TOTAL);
    assert!(report.matches);
    assert_eq!(report.ending, Ending::Completed);
    reactor.stop();
    thread.join().unwrap();
}

#[test]
fn child_exiting_early_ends_the_chain_lost() {
    let reactor = Reactor::new().unwrap();
    let thread = reactor.start().unwrap();
    let child = ChildAgent::spawn(
        &reactor,
        Command::new("sh").args(["-c", "head -c 1000 > /dev/null; exit 3"]),
        ChildOptions::default(),
    )
    .unwrap();
    let (status_tx, status_rx) = mpsc::channel();
    child.on_exit(move |status| status_tx.send(status).unwrap());
    // An endless upstream: only the child's exit can end this.
    let (source, done) = run_through(&reactor, &child, None, false);
    let (report, _) = done.recv_timeout(LIMIT).expect("the chain ends");
    assert_eq!(report.ending, Ending::Lost);
    assert_eq!(report.exited.unwrap().status.code(), Some(3));
    assert_eq!(status_rx.recv_timeout(LIMIT).unwrap().code(), Some(3));
    assert_eq!(child.exit_status().unwrap().code(), Some(3));
    // Writing into the closed stdin gave EPIPE (this process is alive: no SIGPIPE) and the
    // upstream was aborted.
    let aborted = source.with_hooks(|h| h.aborted.clone());
    wait_until("the upstream abort", || aborted.load(Ordering::Acquire));
    wait_until("the agent to close", || child.agent().is_closed());
    let error = child.agent().error().expect("the write failed");
    assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe);
    assert_eq!(
        on_reactor(&reactor, {
            let r = reactor.clone();
            move || r.registered()
        }),
        0
    );
    reactor.stop();
    thread.join().unwrap();
}

#[test]
fn killed_child_ends_the_chain_lost() {
    let reactor = Reactor::new().unwrap();
    let thread = reactor.start().unwrap();
    let child =
        ChildAgent::spawn(&reactor, &mut Command::new("cat"), ChildOptions::default()).unwrap();
    let writer = ByteWriter::new(&reactor, 1024);
    let (hooks, done) = CheckSink::new(false);
    let sink = ByteSink::new(&reactor, Window::Bytes(4096), hooks);
    let pair = child.io_pair();
    attach(&writer.producer(), &pair.consumer).unwrap();
    attach(&pair.producer, &sink.consumer()).unwrap();
    writer.write(&b"spam"[..]).unwrap();
    wait_until("cat to echo", || sink.received() == 4);
    child.kill().unwrap();
    let (report, kept) = done.recv_timeout(LIMIT).expect("the chain ends");
    assert_eq!(kept, b"spam");
    assert_eq!(report.ending, Ending::Lost);
    assert_eq!(report.exited.unwrap().status.signal(), Some(9));
    wait_until("the writer to be aborted", || writer.is_closed());
    child.kill().expect("killing a reaped child is harmless");
    reactor.stop();
    thread.join().unwrap();
}

#[test]
fn kill_on_drop_kills_and_reaps() {
    let reactor = Reactor::new().unwrap();
    let thread = reactor.start().unwrap();
    let child = ChildAgent::spawn(
        &reactor,
        &mut Command::new("cat"),
        ChildOptions::default().with_kill_on_drop(true),
    )
    .unwrap();
    let (status_tx, status_rx) = mpsc::channel();
    child.on_exit(move |status| status_tx.send(status).unwrap());
    let pid = child.id();
    drop(child);
    let status = status_rx.recv_timeout(LIMIT).expect("the child exits");
    assert_eq!(status.signal(), Some(9));
    // Reaped: the pid is no longer our child.
    let proc = format!("/proc/{pid}/stat");
    wait_until("the zombie to go", || {
        std::fs::read_to_string(&proc).map_or(true, |s| !s.contains(") Z "))
    });
    reactor.stop();
    thread.join().unwrap();
}

#[test]
fn stderr_as_its_own_agent() {
    let reactor = Reactor::new().unwrap();
    let thread = reactor.start().unwrap();
    let child = ChildAgent::spawn(
        &reactor,
        Command::new("sh").args(["-c", "echo out; echo oops >&2"]),
        ChildOptions::default().with_stderr(Stderr::Agent),
    )
    .unwrap();
    let (out_hooks, out_done) = CheckSink::new(false);
    let out = ByteSink::new(&reactor, Window::Bytes(4096), out_hooks);
    let (err_hooks, err_done) = CheckSink::new(false);
    let err = ByteSink::new(&reactor, Window::Bytes(4096), err_hooks);
    attach(&child.io_pair().producer, &out.consumer()).unwrap();
    attach(&child.stderr().unwrap().io_pair().producer, &err.consumer()).unwrap();
    let (report, kept) = out_done
        .recv_timeout(LIMIT)
        .unwrap_or_else(|_| panic!("stdout did not end: {child:?} {:?}", child.stderr()));
    assert_eq!(kept, b"out\n");
    // Nothing was ever attached to stdin: the child exited 0 after its output ended.
    assert_eq!(report.ending, Ending::Completed);
    let (report, kept) = err_done.recv_timeout(LIMIT).unwrap();
    assert_eq!(kept, b"oops\n");
    assert_eq!(report.ending, Ending::Completed);
    reactor.stop();
    thread.join().unwrap();
}

#[test]
fn spawn_failure_is_an_error() {
    let reactor = Reactor::new().unwrap();
    let err = ChildAgent::spawn(
        &reactor,
        &mut Command::new("/nonexistent/weir-test"),
        ChildOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}
