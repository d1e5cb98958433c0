//! Reactor behaviour: running, stopping, timers, cross-thread calls, readiness, panics.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustix::event::{PollFd, PollFlags};
use weir_reactor::{ByteHandle, CloseReason, Direction, Interest, Reactor, ReactorError};

/// How long any test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);

fn started() -> (Reactor, weir_reactor::ReactorThread) {
    let reactor = Reactor::new().unwrap();
    let thread = reactor.start().unwrap();
    (reactor, thread)
}

/// Runs `f` on the reactor thread and returns its result.
fn on_reactor<R: Send + 'static>(reactor: &Reactor, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    reactor.call(move || tx.send(f()).unwrap());
    rx.recv_timeout(PATIENCE).expect("reactor answered")
}

#[test]
fn a_reactor_runs_once() {
    let (reactor, thread) = started();
    assert!(matches!(reactor.run(), Err(ReactorError::AlreadyRunning)));
    assert!(matches!(reactor.start(), Err(ReactorError::AlreadyRunning)));
    reactor.stop();
    thread.join().unwrap();
    assert!(
        matches!(reactor.run(), Err(ReactorError::AlreadyRunning)),
        "not after stop either"
    );
}

#[test]
fn stop_before_run_makes_run_return_at_once() {
    let reactor = Reactor::new().unwrap();
    reactor.stop();
    reactor.run().unwrap();
    assert!(reactor.is_finished());
}

#[test]
fn stop_from_another_thread_drops_timers_and_closes_handles() {
    let (reactor, thread) = started();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    reactor.schedule(Duration::from_secs(3600), move || {
        _ = r.fetch_add(1, Ordering::SeqCst)
    });
    let (a, _b) = UnixStream::pair().unwrap();
    let handle = Recorder::new();
    reactor
        .register(a.as_fd(), Interest::NONE, handle.clone())
        .unwrap();
    let begun = Instant::now();
    reactor.stop();
    thread.join().unwrap();
    assert!(begun.elapsed() < PATIENCE);
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "pending timers do not run at stop"
    );
    assert_eq!(
        *handle.closes.lock(),
        vec![(Direction::Both, CloseReason::Stopped)]
    );
    assert_eq!(reactor.registered(), 0);
    assert!(matches!(
        reactor.register(a.as_fd(), Interest::READ, Recorder::new()),
        Err(ReactorError::Stopped)
    ));
}

#[test]
fn timers_run_in_deadline_order_then_fifo_and_never_early() {
    let (reactor, thread) = started();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let begun = Instant::now();
    for (label, millis) in [("c", 30u64), ("a", 10), ("b1", 20), ("b2", 20), ("b3", 20)] {
        let log = log.clone();
        let tx = tx.clone();
        reactor.schedule(Duration::from_millis(millis), move || {
            assert!(
                begun.elapsed() >= Duration::from_millis(millis),
                "{label} ran early"
            );
            log.lock().push(label);
            if label == "c" {
                tx.send(()).unwrap();
            }
        });
    }
    rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(*log.lock(), vec!["a", "b1", "b2", "b3", "c"]);
    reactor.stop();
    thread.join().unwrap();
}

#[test]
fn cancel_from_another_thread_and_on_the_reactor_thread() {
    let (reactor, thread) = started();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    let timer = reactor.schedule(Duration::from_millis(50), move || {
        _ = r.fetch_add(1, Ordering::SeqCst)
    });
    assert!(timer.cancel());
    assert!(!timer.cancel(), "idempotent");
    // On the reactor thread: a call due now, cancelled before the loop reaches timers.
    let r = ran.clone();
    let reactor2 = reactor.clone();
    let cancelled = on_reactor(&reactor, move || {
        let timer = reactor2.schedule(Duration::ZERO, move || _ = r.fetch_add(1, Ordering::SeqCst));
        timer.cancel()
    });
    assert!(cancelled);
    // A marker scheduled after both proves the loop went past their deadlines.
    let (tx, rx) = mpsc::channel();
    reactor.schedule(Duration::from_millis(80), move || tx.send(()).unwrap());
    rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 0);
    reactor.stop();
    thread.join().unwrap();
}

#[test]
fn eight_threads_call_and_schedule_at_once_in_order_per_thread() {
    let (reactor, thread) = started();
    let seen = Arc::new(Mutex::new(vec![Vec::new(); 8]));
    let done = Arc::new(AtomicUsize::new(0));
    let (tx, rx) = mpsc::channel();
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let (reactor, seen, done, tx) =
                (reactor.clone(), seen.clone(), done.clone(), tx.clone());
            thread::spawn(move || {
                for i in 0..2000 {
                    let (seen, done, tx) = (seen.clone(), done.clone(), tx.clone());
                    let call = move || {
                        seen.lock()[t].push(i);
                        if done.fetch_add(1, Ordering::SeqCst) + 1 == 8 * 2000 {
                            tx.send(()).unwrap();
                        }
                    };
                    if i % 2 == 0 {
                        reactor.call(call);
                    } else {
                        reactor.schedule(Duration::ZERO, call);
                    }
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().unwrap());
    rx.recv_timeout(PATIENCE).unwrap();
    for per_thread in seen.lock().iter() {
        assert_eq!(per_thread.len(), 2000);
        let calls: Vec<_> = per_thread.iter().filter(|i| *i % 2 == 0).collect();
        assert!(
            calls.windows(2).all(|w| w[0] < w[1]),
            "calls from one thread run in order"
        );
    }
    reactor.stop();
    thread.join().unwrap();
}

#[test]
fn ten_thousand_calls_from_a_thread_never_block() {
    let reactor = Reactor::new().unwrap();
    // Not running: every call must still return at once (they queue).
    let count = Arc::new(AtomicUsize::new(0));
    for _ in 0..10_000 {
        let count = count.clone();
        reactor.call(move || _ = count.fetch_add(1, Ordering::SeqCst));
    }
    let thread = reactor.start().unwrap();
    let (tx, rx) = mpsc::channel();
    reactor.call(move || tx.send(()).unwrap());
    rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 10_000);
    reactor.stop();
    thread.join().unwrap();
}

#[test]
fn panics_in_calls_and_handles_are_isolated() {
    let (reactor, thread) = started();
    reactor.call(|| panic!("a call panics"));
    reactor.schedule(Duration::ZERO, || panic!("a timer panics"));
    assert_eq!(
        on_reactor(&reactor, || 7),
        7,
        "the loop carries on after panics"
    );

    let (a, mut b) = UnixStream::pair().unwrap();
    let handle = Recorder::new();
    *handle.panic_on_read.lock() = true;
    reactor
        .register(a.as_fd(), Interest::READ, handle.clone())
        .unwrap();
    b.write_all(b"x").unwrap();
    handle.wait_closes(1);
    assert_eq!(
        *handle.closes.lock(),
        vec![(Direction::Both, CloseReason::Lost)]
    );
    assert_eq!(
        reactor.registered(),
        0,
        "a panicking handle is deregistered"
    );
    assert_eq!(on_reactor(&reactor, || 8), 8);
    reactor.stop();
    thread.join().unwrap();
}

#[test]
fn calls_queued_by_calls_run_before_the_loop_polls_again() {
    let (reactor, thread) = started();
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let handle = Recorder::with_stream(a);
    reactor
        .register(handle.fd(), Interest::READ, handle.clone())
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let (r, h) = (reactor.clone(), handle.clone());
    reactor.call(move || {
        // Readable from here on; a poll between this call and the next would dispatch it.
        b.write_all(b"x").unwrap();
        r.call(move || tx.send((h.reads.load(Ordering::SeqCst), b)).unwrap());
    });
    let (reads, _b) = rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(reads, 0, "the queued call ran after a poll");
    handle.wait_data(1);
    reactor.stop();
    thread.join().unwrap();
}

#[test]
fn an_interest_set_on_the_reactor_thread_reaches_the_poller_before_it_waits() {
    let (reactor, thread) = started();
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let handle = Recorder::with_stream(a);
    let token = reactor
        .register(handle.fd(), Interest::NONE, handle.clone())
        .unwrap();
    b.write_all(b"ping").unwrap();
    // The loop then blocks in its wait: only the poller can wake it for the data.
    let r = reactor.clone();
    on_reactor(&reactor, move || r.set_interest(token, Interest::READ)).unwrap();
    handle.wait_data(4);
    // And dropped again on the reactor thread: the next bytes are not read.
    let r = reactor.clone();
    on_reactor(&reactor, move || r.set_interest(token, Interest::NONE)).unwrap();
    let reads = handle.reads.load(Ordering::SeqCst);
    b.write_all(b"pong").unwrap();
    on_reactor(&reactor, || ());
    on_reactor(&reactor, || ());
    assert_eq!(handle.reads.load(Ordering::SeqCst), reads);
    assert_eq!(&*handle.data.lock(), b"ping");
    reactor.stop();
    thread.join().unwrap();
}

#[test]
fn a_handle_is_not_called_for_an_interest_dropped_in_the_same_turn() {
    let (reactor, thread) = started();
    let (a1, mut b1) = UnixStream::pair().unwrap();
    let (a2, mut b2) = UnixStream::pair().unwrap();
    a1.set_nonblocking(true).unwrap();
    a2.set_nonblocking(true).unwrap();
    let second = Recorder::with_stream(a2);
    let second_token = reactor
        .register(second.fd(), Interest::READ, second.clone())
        .unwrap();
    /// Reads like a `Recorder`, then drops the other registration's read interest.
    struct DropsTheOther(Arc<Recorder>, Reactor, weir_reactor::Token);
    impl ByteHandle for DropsTheOther {
        fn on_readable(&self) {
            self.0.on_readable();
            self.1.set_interest(self.2, Interest::NONE).unwrap();
        }
        fn on_close(&self, direction: Direction, reason: CloseReason) {
            self.0.on_close(direction, reason);
        }
    }
    let first = Recorder::with_stream(a1);
    let dropper = Arc::new(DropsTheOther(first.clone(), reactor.clone(), second_token));
    // Both become readable while the loop is held in a call, so one wait reports both.
    let (go, wait) = mpsc::channel::<()>();
    reactor.call(move || wait.recv().unwrap());
    reactor
        .register(first.fd(), Interest::READ, dropper)
        .unwrap();
    b1.write_all(b"1").unwrap();
    b2.write_all(b"2").unwrap();
    go.send(()).unwrap();
    first.wait_data(1);
    on_reactor(&reactor, || ());
    // The dropper may have run first or second in that turn: either the second handle read
    // before its interest went, or it is never called.
    let reads = second.reads.load(Ordering::SeqCst);
    assert!(reads <= 1);
    assert_eq!(second.data.lock().len(), reads);
    on_reactor(&reactor, || ());
    assert_eq!(second.reads.load(Ordering::SeqCst), reads);
    reactor.stop();
    thread.join().unwrap();
}

#[test]
fn an_interest_change_the_poller_refuses_closes_the_registration_with_an_error() {
    let (reactor, thread) = started();
    let (a, _b) = UnixStream::pair().unwrap();
    let duplicate = a.try_clone().unwrap();
    let handle = Recorder::new();
    let token = reactor
        .register(duplicate.as_fd(), Interest::NONE, handle.clone())
        .unwrap();
    // Against the contract, the descriptor is closed while registered (the socket stays
    // open through `a`, so the poller keeps watching it): the poller refuses the change.
    drop(duplicate);
    let r = reactor.clone();
    on_reactor(&reactor, move || r.set_interest(token, Interest::READ)).unwrap();
    handle.wait_closes(1);
    assert_eq!(
        handle.closes.lock()[0],
        (Direction::Both, CloseReason::Error)
    );
    assert_eq!(reactor.registered(), 0);
    reactor.stop();
    thread.join().unwrap();
}

#[test]
fn a_self_rescheduling_call_does_not_starve_io() {
    let (reactor, thread) = started();
    fn again(reactor: Reactor, spins: Arc<AtomicUsize>) {
        spins.fetch_add(1, Ordering::Relaxed);
        let r = reactor.clone();
        reactor.call(move || again(r, spins));
    }
    let spins = Arc::new(AtomicUsize::new(0));
    let r = reactor.clone();
    let s = spins.clone();
    reactor.call(move || again(r, s));
    // The spinning must have begun before the data is written: in the loop turn that sees
    // both the first call and readiness, I/O is dispatched first, so the spin count could
    // otherwise still be 0 when the data arrives.
    let deadline = Instant::now() + PATIENCE;
    while spins.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the call never ran");
        thread::yield_now();
    }
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let handle = Recorder::with_stream(a);
    reactor
        .register(handle.fd(), Interest::READ, handle.clone())
        .unwrap();
    b.write_all(b"ping").unwrap();
    handle.wait_data(4);
    reactor.stop();
    thread.join().unwrap();
}

#[test]
fn hang_up_closes_output_and_lets_input_drain_without_spinning() {
    let (reactor, thread) = started();
    let (a, mut b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let handle = Recorder::with_stream(a);
    let token = reactor
        .register(handle.fd(), Interest::NONE, handle.clone())
        .unwrap();
    b.write_all(b"last words").unwrap();
    drop(b);
    handle.wait_closes(1);
    assert_eq!(
        handle.closes.lock()[0],
        (Direction::Output, CloseReason::HangUp)
    );
    // No interest: a hung-up descriptor must not be dispatched at all (no spin).
    on_reactor(&reactor, || ());
    assert_eq!(handle.reads.load(Ordering::SeqCst), 0);
    // Interest again: the buffered bytes are still there, then end of file.
    reactor.set_interest(token, Interest::READ).unwrap();
    handle.wait_data(10);
    handle.wait_eof();
    assert_eq!(&*handle.data.lock(), b"last words");
    reactor.stop();
    thread.join().unwrap();
}

/// A TCP peer's last bytes, then its reset (it closed with bytes of ours unread): the bytes
/// are read before the error closes the registration.
#[test]
fn bytes_that_came_before_a_connection_reset_are_read_first() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut theirs, _) = listener.accept().unwrap();
    (&ours).write_all(b"never read").unwrap();
    theirs.peek(&mut [0]).unwrap();
    theirs.write_all(b"last words").unwrap();
    // Closing with unread bytes sends a reset instead of a FIN.
    drop(theirs);
    ours.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + PATIENCE;
    loop {
        // `poll` shows the reset without taking the error, as `SO_ERROR` or a read would.
        let mut fds = [PollFd::new(&ours, PollFlags::IN)];
        rustix::event::poll(&mut fds, None).unwrap();
        if fds[0].revents().contains(PollFlags::ERR) {
            break;
        }
        assert!(Instant::now() < deadline, "no reset arrived");
        thread::yield_now();
    }

    let (reactor, thread) = started();
    let handle = Recorder::with_reader(Box::new(ours.try_clone().unwrap()));
    reactor
        .register(ours.as_fd(), Interest::READ, handle.clone())
        .unwrap();
    handle.wait_closes(1);
    assert_eq!(&*handle.data.lock(), b"last words");
    assert_eq!(
        *handle.errors.lock(),
        vec![std::io::ErrorKind::ConnectionReset]
    );
    assert_eq!(
        *handle.closes.lock(),
        vec![(Direction::Both, CloseReason::Error)]
    );
    assert_eq!(reactor.registered(), 0);
    reactor.stop();
    thread.join().unwrap();
}

#[test]
fn an_error_condition_closes_both_directions_once() {
    let (reactor, thread) = started();
    let (reader, writer) = std::io::pipe().unwrap();
    let handle = Recorder::new();
    reactor
        .register(writer.as_fd(), Interest::NONE, handle.clone())
        .unwrap();
    drop(reader);
    handle.wait_closes(1);
    assert_eq!(
        *handle.closes.lock(),
        vec![(Direction::Both, CloseReason::Error)]
    );
    assert_eq!(reactor.registered(), 0);
    reactor.stop();
    thread.join().unwrap();
    assert_eq!(handle.closes.lock().len(), 1, "no second close at stop");
    drop(writer);
}

#[test]
fn regular_files_are_always_ready() {
    let (reactor, thread) = started();
    let mut file = tempfile_in_target();
    file.write_all(b"from a file").unwrap();
    let file = std::fs::File::open(file.path()).unwrap();
    let handle = Recorder::with_reader(Box::new(file.try_clone().unwrap()));
    reactor
        .register(file.as_fd(), Interest::READ, handle.clone())
        .unwrap();
    handle.wait_data(11);
    handle.wait_eof();
    reactor.stop();
    thread.join().unwrap();
}

#[test]
fn execute_runs_inline_on_the_reactor_thread_and_queues_elsewhere() {
    let (reactor, thread) = started();
    let r = reactor.clone();
    let inline = on_reactor(&reactor, move || {
        let flag = Arc::new(AtomicUsize::new(0));
        let f = flag.clone();
        r.execute(move || f.store(1, Ordering::SeqCst));
        flag.load(Ordering::SeqCst) == 1 && r.is_reactor_thread()
    });
    assert!(inline);
    assert!(!reactor.is_reactor_thread());
    reactor.stop();
    thread.join().unwrap();
}

/// A temporary file path under the target directory (no tempfile dependency here).
struct TempFile {
    path: std::path::PathBuf,
    file: std::fs::File,
}

impl TempFile {
    fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Write for TempFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn tempfile_in_target() -> TempFile {
    let path = std::env::temp_dir().join(format!("weir-reactor-test-{}", std::process::id()));
    let file = std::fs::File::create(&path).unwrap();
    TempFile { path, file }
}

/// A handle that records what the reactor does to it.
struct Recorder {
    reader: Mutex<Option<Box<dyn Read + Send>>>,
    stream: Option<UnixStream>,
    data: Mutex<Vec<u8>>,
    eof: Mutex<bool>,
    reads: AtomicUsize,
    closes: Mutex<Vec<(Direction, CloseReason)>>,
    /// What failed reads reported.
    errors: Mutex<Vec<std::io::ErrorKind>>,
    panic_on_read: Mutex<bool>,
}

impl Recorder {
    fn build(stream: Option<UnixStream>, reader: Option<Box<dyn Read + Send>>) -> Arc<Recorder> {
        Arc::new(Recorder {
            reader: Mutex::new(reader),
            stream,
            data: Mutex::new(Vec::new()),
            eof: Mutex::new(false),
            reads: AtomicUsize::new(0),
            closes: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
            panic_on_read: Mutex::new(false),
        })
    }

    fn new() -> Arc<Recorder> {
        Recorder::build(None, None)
    }

    fn with_stream(stream: UnixStream) -> Arc<Recorder> {
        let reader = stream.try_clone().unwrap();
        Recorder::build(Some(stream), Some(Box::new(reader)))
    }

    fn with_reader(reader: Box<dyn Read + Send>) -> Arc<Recorder> {
        Recorder::build(None, Some(reader))
    }

    fn fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.stream.as_ref().unwrap().as_fd()
    }

    fn wait(&self, what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::yield_now();
        }
    }

    fn wait_closes(&self, n: usize) {
        self.wait("closes", || self.closes.lock().len() >= n);
    }

    fn wait_data(&self, n: usize) {
        self.wait("data", || self.data.lock().len() >= n);
    }

    fn wait_eof(&self) {
        self.wait("end of file", || *self.eof.lock());
    }
}

impl ByteHandle for Recorder {
    fn on_readable(&self) {
        self.reads.fetch_add(1, Ordering::SeqCst);
        if *self.panic_on_read.lock() {
            panic!("handle panics on purpose");
        }
        let mut reader = self.reader.lock();
        let Some(reader) = reader.as_mut() else {
            return;
        };
        let mut buf = [0u8; 4096];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => {
                    *self.eof.lock() = true;
                    return;
                }
                Ok(n) => self.data.lock().extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    self.errors.lock().push(e.kind());
                    return;
                }
            }
        }
    }

    fn on_close(&self, direction: Direction, reason: CloseReason) {
        self.closes.lock().push((direction, reason));
    }
}
