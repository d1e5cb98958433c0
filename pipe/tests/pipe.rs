//! Pipe pairs and the standard streams under a StreamAgent.

mod common;

use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::sync::mpsc;

use common::{on_reactor, wait_until, CheckSink, LIMIT};
use weir_io::{attach, ByteSink, ByteWriter, Ending, HalfClosePolicy, Peer, Window};
use weir_pipe::{pipe, AgentConfig, PipeIo, PipeReader, PipeWriter};
use weir_reactor::Reactor;

/// Reads `reader` (blocking by polling) until end of file.
fn read_to_end(reader: &PipeReader) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0; 4096];
    wait_until("end of file", || match reader.try_read(&mut buf) {
        Ok(0) => true,
        Ok(n) => {
            out.extend_from_slice(&buf[..n]);
            false
        }
        Err(err) if err.kind() == ErrorKind::WouldBlock => false,
        Err(err) => panic!("read failed: {err}"),
    });
    out
}

/// Versile item 48: EOF on the read end gives Completed downstream, then both descriptors
/// are closed and the reactor holds neither.
#[test]
fn eof_completes_then_both_descriptors_close() {
    let reactor = Reactor::new().unwrap();
    let thread = reactor.start().unwrap();
    let (in_reader, in_writer) = pipe().unwrap();
    let (out_reader, out_writer) = pipe().unwrap();
    let config = AgentConfig::default().with_half_close(HalfClosePolicy::NO_HALF_CLOSE);
    let agent = PipeIo::new(Some(in_reader), Some(out_writer))
        .into_agent(&reactor, config)
        .unwrap();
    let (closed_tx, closed_rx) = mpsc::channel();
    let r = reactor.clone();
    agent.set_close_callback(move |info| closed_tx.send((info, r.registered())).unwrap());
    let (hooks, done) = CheckSink::new(false);
    let sink = ByteSink::new(&reactor, Window::Bytes(4096), hooks);
    attach(&agent.io_pair().producer, &sink.consumer()).unwrap();
    assert_eq!(in_writer.try_write(b"Ni!").unwrap(), 3);
    drop(in_writer);
    let (report, kept) = done.recv_timeout(LIMIT).unwrap();
    assert_eq!(kept, b"Ni!");
    assert_eq!(report.ending, Ending::Completed);
    assert_eq!(report.peer, Some(Peer::Pipe));
    let (info, registered) = closed_rx.recv_timeout(LIMIT).unwrap();
    assert_eq!(info.input, Ending::Completed);
    assert_eq!(registered, 0, "the reactor still holds a descriptor");
    // The write end was closed too: its reader sees end of file.
    assert!(read_to_end(&out_reader).is_empty());
    reactor.stop();
    thread.join().unwrap();
}

/// With half-close, the output goes on after input EOF and closes when its upstream ends.
#[test]
fn half_close_writes_after_eof_then_closes() {
    let reactor = Reactor::new().unwrap();
    let thread = reactor.start().unwrap();
    let (in_reader, in_writer) = pipe().unwrap();
    let (out_reader, out_writer) = pipe().unwrap();
    let agent = PipeIo::new(Some(in_reader), Some(out_writer))
        .into_agent(&reactor, AgentConfig::default())
        .unwrap();
    let (hooks, done) = CheckSink::new(false);
    let sink = ByteSink::new(&reactor, Window::Bytes(4096), hooks);
    let pair = agent.io_pair();
    attach(&pair.producer, &sink.consumer()).unwrap();
    drop(in_writer);
    let (report, _) = done.recv_timeout(LIMIT).unwrap();
    assert_eq!(report.ending, Ending::Completed);
    let writer = ByteWriter::new(&reactor, 1024);
    attach(&writer.producer(), &pair.consumer).unwrap();
    writer.write(&b"spam, spam"[..]).unwrap();
    writer.end_write(Ending::Completed);
    assert_eq!(read_to_end(&out_reader), b"spam, spam");
    wait_until("the agent to close", || agent.is_closed());
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

/// Writing to a pipe whose reader has gone aborts the upstream, with EPIPE recorded; this
/// process is not killed by SIGPIPE.
#[test]
fn reader_gone_gives_broken_pipe_not_sigpipe() {
    let reactor = Reactor::new().unwrap();
    let thread = reactor.start().unwrap();
    let (reader, writer_end) = pipe().unwrap();
    let agent = PipeIo::new(None, Some(writer_end))
        .into_agent(&reactor, AgentConfig::default())
        .unwrap();
    let writer = ByteWriter::new(&reactor, 1024);
    attach(&writer.producer(), &agent.io_pair().consumer).unwrap();
    writer.write(&b"first"[..]).unwrap();
    assert_eq!(read_to_first(&reader), b"first");
    drop(reader);
    // Whichever comes first, the poller's error report or a failed write: both are EPIPE.
    let _ = writer.write(&b"second"[..]);
    wait_until("the writer to be aborted", || writer.is_closed());
    wait_until("the agent to close", || agent.is_closed());
    assert_eq!(agent.error().unwrap().kind(), ErrorKind::BrokenPipe);
    reactor.stop();
    thread.join().unwrap();
}

/// Reads what is there once something is.
fn read_to_first(reader: &PipeReader) -> Vec<u8> {
    let mut buf = [0; 64];
    let mut n = 0;
    wait_until("data", || match reader.try_read(&mut buf) {
        Ok(got) => {
            n = got;
            true
        }
        Err(err) => {
            assert_eq!(err.kind(), ErrorKind::WouldBlock);
            false
        }
    });
    buf[..n].to_vec()
}

#[test]
fn pipe_ends_are_non_blocking_and_closable() {
    let (reader, writer) = pipe().unwrap();
    let mut buf = [0; 8];
    assert_eq!(
        reader.try_read(&mut buf).unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    // Fill the pipe: the write end never blocks.
    let chunk = vec![7; 65536];
    let mut total = 0;
    loop {
        match writer.try_write(&chunk) {
            Ok(n) => total += n,
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::WouldBlock);
                break;
            }
        }
    }
    assert!(total >= 4096);
    drop(reader);
    assert_eq!(
        writer.try_write(b"x").unwrap_err().kind(),
        ErrorKind::BrokenPipe
    );
    assert!(writer.is_open());
}

/// The standard streams are duplicated: dropping the agent's ends leaves 0 and 1 open, with
/// their flags as they were.
#[test]
fn stdio_duplicates_leave_descriptors_zero_and_one_alone() {
    let flags_before = (
        rustix_flags(std::io::stdin().as_fd()),
        rustix_flags(std::io::stdout().as_fd()),
    );
    let reactor = Reactor::new().unwrap();
    let thread = reactor.start().unwrap();
    let agent = PipeIo::stdio()
        .unwrap()
        .into_agent(&reactor, AgentConfig::default())
        .unwrap();
    agent.close(Ending::Completed);
    wait_until("the agent to close", || agent.is_closed());
    drop(agent);
    reactor.stop();
    thread.join().unwrap();
    let stdin = PipeReader::stdin().unwrap();
    let stdout = PipeWriter::stdout().unwrap();
    drop((stdin, stdout));
    let flags_after = (
        rustix_flags(std::io::stdin().as_fd()),
        rustix_flags(std::io::stdout().as_fd()),
    );
    assert_eq!(flags_before, flags_after);
}

/// File status flags through `fcntl`, via std (the test has no rustix dependency of its own).
fn rustix_flags(fd: std::os::fd::BorrowedFd<'_>) -> Option<String> {
    // `/proc/self/fdinfo/N` shows the flags in octal; good enough to compare.
    use std::os::fd::AsRawFd;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok()?;
    info.lines()
        .find(|l| l.starts_with("flags:"))
        .map(str::to_owned)
}

/// Issue 3: reads go into the buffers that travel downstream. Megabytes through a pipe, from
/// one pipe agent into another, arrive whole and in order, and both agents close.
#[test]
fn megabytes_through_a_pipe_between_two_agents_arrive_whole() {
    let reactor = Reactor::new().unwrap();
    let thread = reactor.start().unwrap();
    let (reader, writer) = pipe().unwrap();
    let sending = PipeIo::new(None, Some(writer))
        .into_agent(&reactor, AgentConfig::default())
        .unwrap();
    let receiving = PipeIo::new(Some(reader), None)
        .into_agent(&reactor, AgentConfig::default())
        .unwrap();
    let total = 8 << 20;
    let source = weir_io::ByteSource::new(&reactor, common::PatternSource::new(Some(total)));
    let (hooks, done) = CheckSink::new(true);
    let sink = ByteSink::new(&reactor, Window::Bytes(100_000), hooks);
    attach(&source.producer(), &sending.io_pair().consumer).unwrap();
    attach(&receiving.io_pair().producer, &sink.consumer()).unwrap();
    let (report, _) = done.recv_timeout(LIMIT).unwrap();
    assert_eq!(report.ending, Ending::Completed);
    assert_eq!(report.received, total);
    assert!(report.matches, "the bytes differ from the pattern");
    wait_until("both agents to close", || {
        sending.is_closed() && receiving.is_closed()
    });
    reactor.stop();
    thread.join().unwrap();
}
