//! Reactor invariants from versile-notes.md section 9 not covered by `reactor.rs`: items 3, 5,
//! 7 (cancel racing with the due time), 11 (a panicking `on_writable`), 12 and 15 (foreign
//! `schedule` calls). See `io/tests/README.md` for the whole map.

use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use parking_lot::Mutex;
use weir_reactor::{ByteHandle, CloseReason, Direction, Interest, Reactor, Token};

const PATIENCE: Duration = Duration::from_secs(10);

fn on_reactor<R: Send + 'static>(reactor: &Reactor, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    reactor.call(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(PATIENCE).expect("reactor answered")
}

/// Item 3: a stop from inside a call takes effect after the current batch; calls queued
/// behind it in the same batch are dropped, and so are timers.
#[test]
fn stop_from_inside_a_call_drops_the_rest_of_the_batch() {
    let reactor = Reactor::new().unwrap();
    let ran = Arc::new(Mutex::new(Vec::new()));
    for i in 0..5 {
        let (ran, r) = (ran.clone(), reactor.clone());
        reactor.call(move || {
            ran.lock().push(i);
            if i == 2 {
                r.stop();
            }
        });
    }
    let r = ran.clone();
    reactor.schedule(Duration::from_secs(3600), move || r.lock().push(100));
    let thread = reactor.start().unwrap();
    thread.join().unwrap();
    let ran = ran.lock().clone();
    assert_eq!(
        ran,
        vec![0, 1, 2],
        "calls after the stop and pending timers are dropped"
    );
}

/// Item 5: `execute` and `call` from one foreign thread run in call order.
#[test]
fn execute_and_call_from_one_thread_keep_their_order() {
    let reactor = Reactor::new().unwrap();
    let thread = reactor.start().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    for i in 0..1000 {
        let log = log.clone();
        if i % 2 == 0 {
            reactor.execute(move || log.lock().push(i));
        } else {
            reactor.call(move || log.lock().push(i));
        }
    }
    on_reactor(&reactor, || ());
    assert_eq!(*log.lock(), (0..1000).collect::<Vec<_>>());
    reactor.stop();
    thread.join().unwrap();
}

/// Item 7: a cancel racing with the due time either wins (and the call never runs) or loses
/// (and it runs once); never both, never neither.
#[test]
fn cancel_racing_with_the_deadline_is_exact() {
    let reactor = Reactor::new().unwrap();
    let thread = reactor.start().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let mut timers = Vec::new();
    for i in 0..2000u64 {
        let ran = ran.clone();
        timers.push(reactor.schedule(Duration::from_micros(i % 500), move || {
            ran.fetch_add(1, Ordering::SeqCst);
        }));
    }
    let cancelled = timers.iter().filter(|t| t.cancel()).count();
    // A marker after every deadline: by then each timer either ran or was cancelled.
    let (tx, rx) = mpsc::channel();
    reactor.schedule(Duration::from_millis(5), move || tx.send(()).unwrap());
    rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(ran.load(Ordering::SeqCst) + cancelled, 2000);
    assert!(timers.iter().all(|t| !t.is_pending() && !t.cancel()));
    reactor.stop();
    thread.join().unwrap();
}

/// Item 15: ten thousand foreign `schedule` calls return at once and all run.
#[test]
fn ten_thousand_foreign_schedules_never_block() {
    let reactor = Reactor::new().unwrap();
    let thread = reactor.start().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let r = reactor.clone();
    let c = count.clone();
    thread::spawn(move || {
        for i in 0..10_000u64 {
            let c = c.clone();
            r.schedule(Duration::from_micros(i % 100), move || {
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    })
    .join()
    .unwrap();
    let (tx, rx) = mpsc::channel();
    reactor.schedule(Duration::from_millis(2), move || tx.send(()).unwrap());
    rx.recv_timeout(PATIENCE).unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 10_000);
    reactor.stop();
    thread.join().unwrap();
}

/// A handle that counts its calls and can panic or deregister another handle.
struct Handle {
    reactor: Reactor,
    calls: AtomicUsize,
    closes: Mutex<Vec<(Direction, CloseReason)>>,
    panic_on_write: AtomicBool,
    victim: Mutex<Option<Token>>,
}

impl Handle {
    fn new(reactor: &Reactor) -> Arc<Handle> {
        Arc::new(Handle {
            reactor: reactor.clone(),
            calls: AtomicUsize::new(0),
            closes: Mutex::new(Vec::new()),
            panic_on_write: AtomicBool::new(false),
            victim: Mutex::new(None),
        })
    }
}

impl ByteHandle for Handle {
    fn on_readable(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let Some(victim) = self.victim.lock().take() {
            self.reactor.deregister(victim);
        }
    }
    fn on_writable(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.panic_on_write.load(Ordering::SeqCst) {
            panic!("on_writable panics on purpose");
        }
    }
    fn on_close(&self, direction: Direction, reason: CloseReason) {
        self.closes.lock().push((direction, reason));
    }
}

/// Item 11 for output: a panicking `on_writable` removes the handle and closes it as lost.
#[test]
fn a_panicking_on_writable_is_closed_as_lost() {
    let reactor = Reactor::new().unwrap();
    let thread = reactor.start().unwrap();
    let (a, _b) = UnixStream::pair().unwrap();
    let handle = Handle::new(&reactor);
    handle.panic_on_write.store(true, Ordering::SeqCst);
    reactor
        .register(a.as_fd(), Interest::WRITE, handle.clone())
        .unwrap();
    let deadline = std::time::Instant::now() + PATIENCE;
    while handle.closes.lock().is_empty() {
        assert!(std::time::Instant::now() < deadline, "no close");
        thread::yield_now();
    }
    assert_eq!(
        *handle.closes.lock(),
        vec![(Direction::Both, CloseReason::Lost)]
    );
    assert_eq!(handle.calls.load(Ordering::SeqCst), 1);
    assert_eq!(reactor.registered(), 0);
    assert_eq!(on_reactor(&reactor, || 1), 1, "the reactor survives");
    reactor.stop();
    thread.join().unwrap();
}

/// Item 12: a handle deregistered earlier in the same batch is not dispatched later in it.
#[test]
fn a_handle_removed_earlier_in_a_batch_is_not_called() {
    let reactor = Reactor::new().unwrap();
    let (a1, mut b1) = UnixStream::pair().unwrap();
    let (a2, mut b2) = UnixStream::pair().unwrap();
    let h1 = Handle::new(&reactor);
    let h2 = Handle::new(&reactor);
    let t1 = reactor
        .register(a1.as_fd(), Interest::READ, h1.clone())
        .unwrap();
    let t2 = reactor
        .register(a2.as_fd(), Interest::READ, h2.clone())
        .unwrap();
    // Each removes the other: whichever the batch calls first, the other is never called.
    *h1.victim.lock() = Some(t2);
    *h2.victim.lock() = Some(t1);
    b1.write_all(b"x").unwrap();
    b2.write_all(b"y").unwrap();
    // Both are readable before the loop starts, so the first wait reports both in one batch.
    let thread = reactor.start().unwrap();
    let r = reactor.clone();
    let deadline = std::time::Instant::now() + PATIENCE;
    while h1.calls.load(Ordering::SeqCst) + h2.calls.load(Ordering::SeqCst) == 0 {
        assert!(std::time::Instant::now() < deadline, "nobody was called");
        thread::yield_now();
    }
    on_reactor(&r, || ());
    let (c1, c2) = (
        h1.calls.load(Ordering::SeqCst),
        h2.calls.load(Ordering::SeqCst),
    );
    assert!(
        (c1 == 0) != (c2 == 0),
        "exactly one handle ran (h1 {c1}, h2 {c2})"
    );
    reactor.stop();
    thread.join().unwrap();
    drop((a1, a2));
}
