//! Helpers shared by the weir-io integration tests: a started reactor, bounded waits, and
//! two hand-written elements ([`Probe`], a checking consumer, and [`Pusher`], a checking
//! producer) that record everything the chain does to them.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use weir_io::{
    ByteConsumer, ByteProducer, ControlReply, Credit, DeliverError, Ending, IoControl, Link,
    LinkSlot, SinkHooks,
};
use weir_reactor::{Reactor, ReactorThread};

/// How long a test waits for something that should happen soon.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A started reactor that stops and joins when dropped.
pub struct Running {
    pub reactor: Reactor,
    thread: Option<ReactorThread>,
}

impl Running {
    pub fn new() -> Running {
        let reactor = Reactor::new().expect("poller");
        let thread = reactor.start().expect("reactor thread");
        Running {
            reactor,
            thread: Some(thread),
        }
    }

    /// Runs `f` on the reactor thread and returns its result.
    pub fn on_reactor<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        on_reactor(&self.reactor, f)
    }

    /// Returns once every call queued before this one has run (two turns, so that calls
    /// queued by those calls have run too).
    pub fn settle(&self) {
        for _ in 0..3 {
            self.on_reactor(|| ());
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.reactor.stop();
        if let Some(thread) = self.thread.take() {
            let joined = thread.join();
            if !thread::panicking() {
                joined.expect("reactor thread ends cleanly");
            }
        }
    }
}

/// Runs `f` on the reactor thread and returns its result.
pub fn on_reactor<R: Send + 'static>(
    reactor: &Reactor,
    f: impl FnOnce() -> R + Send + 'static,
) -> R {
    let (tx, rx) = mpsc::channel();
    reactor.call(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(PATIENCE).expect("reactor answered")
}

/// Waits (bounded) until `done` holds.
pub fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::yield_now();
    }
}

/// What a [`Collect`] sink saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Data(Bytes),
    End(Ending),
}

/// Sink hooks that forward every event to a channel.
pub struct Collect(pub mpsc::Sender<Event>);

impl Collect {
    pub fn new() -> (Collect, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel();
        (Collect(tx), rx)
    }
}

impl SinkHooks for Collect {
    fn on_data(&mut self, _link: &Arc<Link>, data: Bytes) {
        let _ = self.0.send(Event::Data(data));
    }
    fn on_end(&mut self, ending: Ending) {
        let _ = self.0.send(Event::End(ending));
    }
}

/// Reads events until the end; returns the bytes and the ending. Panics on a second end
/// seen within `settle` afterwards is left to callers.
pub fn collect_until_end(rx: &mpsc::Receiver<Event>) -> (Vec<u8>, Ending) {
    let mut out = Vec::new();
    loop {
        match rx.recv_timeout(PATIENCE).expect("an event before the end") {
            Event::Data(d) => out.extend_from_slice(&d),
            Event::End(e) => return (out, e),
        }
    }
}

/// A callback a [`Probe`] runs inside `consume`.
pub type OnConsume = Box<dyn FnMut(&Arc<Link>, &Bytes) + Send>;

/// A checking consumer: grants `window` bytes ahead (or nothing while paused), checks at every
/// `consume` that the position never passes what it granted itself, and records everything.
pub struct Probe {
    pub reactor: Reactor,
    pub slot: LinkSlot,
    pub window: Mutex<Option<u64>>,
    pub paused: AtomicBool,
    /// The largest credit this probe has granted, and the link (by address) it was granted on.
    pub granted: Mutex<(usize, Credit)>,
    pub data: Mutex<Vec<u8>>,
    pub endings: Mutex<Vec<Ending>>,
    pub aborts: AtomicUsize,
    pub attached: AtomicUsize,
    pub detached: AtomicUsize,
    pub controls: Mutex<Vec<String>>,
    pub violations: Mutex<Vec<String>>,
    /// Called with the data inside `consume` (to test re-entrancy).
    pub on_consume: Mutex<Option<OnConsume>>,
    pub events: Mutex<Option<mpsc::Sender<Event>>>,
}

impl Probe {
    pub fn new(reactor: &Reactor, window: Option<u64>) -> Arc<Probe> {
        Arc::new(Probe {
            reactor: reactor.clone(),
            slot: LinkSlot::new(),
            window: Mutex::new(window),
            paused: AtomicBool::new(false),
            granted: Mutex::new((0, Credit::ZERO)),
            data: Mutex::new(Vec::new()),
            endings: Mutex::new(Vec::new()),
            aborts: AtomicUsize::new(0),
            attached: AtomicUsize::new(0),
            detached: AtomicUsize::new(0),
            controls: Mutex::new(Vec::new()),
            violations: Mutex::new(Vec::new()),
            on_consume: Mutex::new(None),
            events: Mutex::new(None),
        })
    }

    pub fn consumer(self: &Arc<Self>) -> weir_io::ConsumerRef {
        self.clone()
    }

    /// A channel that gets every data chunk and ending.
    pub fn events(&self) -> mpsc::Receiver<Event> {
        let (tx, rx) = mpsc::channel();
        *self.events.lock() = Some(tx);
        rx
    }

    /// What this probe has granted on `link`, raised to `credit`.
    fn raise(&self, link: &Link, credit: Credit) -> Credit {
        let mut granted = self.granted.lock();
        let id = link as *const Link as usize;
        if granted.0 != id {
            *granted = (id, Credit::ZERO);
        }
        granted.1 = granted.1.raise(credit);
        granted.1
    }

    fn credit(&self, link: &Link) -> Credit {
        let credit = match (self.paused.load(Ordering::SeqCst), *self.window.lock()) {
            (true, _) => Credit::ZERO,
            (false, Some(n)) => link.window(n),
            (false, None) => Credit::UNLIMITED,
        };
        self.raise(link, credit)
    }

    /// Grants `credit` on `link` and counts it as granted (any thread).
    pub fn grant(&self, link: &Arc<Link>, credit: Credit) {
        self.raise(link, credit);
        link.grant(credit);
    }

    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Grants again (any thread).
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        if let Some(link) = self.slot.link() {
            link.grant(self.credit(&link));
        }
    }
}

impl ByteConsumer for Probe {
    fn reactor(&self) -> &Reactor {
        &self.reactor
    }
    fn consumer_slot(&self) -> &LinkSlot {
        &self.slot
    }
    fn on_attached(&self, link: &Arc<Link>) -> Credit {
        self.attached.fetch_add(1, Ordering::SeqCst);
        self.credit(link)
    }
    fn consume(&self, link: &Arc<Link>, data: Bytes) -> Credit {
        if !self.reactor.is_reactor_thread() {
            self.violations
                .lock()
                .push("consume off the reactor thread".into());
        }
        let granted = self.raise(link, Credit::ZERO);
        if data.is_empty() {
            self.violations.lock().push("empty consume".into());
        }
        if let Some(limit) = granted.limit() {
            if link.position() > limit {
                self.violations.lock().push(format!(
                    "position {} passed granted credit {limit}",
                    link.position()
                ));
            }
        }
        if !self.endings.lock().is_empty() {
            self.violations.lock().push("data after the end".into());
        }
        self.data.lock().extend_from_slice(&data);
        if let Some(tx) = &*self.events.lock() {
            let _ = tx.send(Event::Data(data.clone()));
        }
        if let Some(f) = self.on_consume.lock().as_mut() {
            f(link, &data);
        }
        self.credit(link)
    }
    fn on_end(&self, _link: &Arc<Link>, ending: Ending) {
        self.endings.lock().push(ending);
        if let Some(tx) = &*self.events.lock() {
            let _ = tx.send(Event::End(ending));
        }
    }
    fn on_detached(&self) {
        self.detached.fetch_add(1, Ordering::SeqCst);
    }
    fn on_abort(&self) {
        self.aborts.fetch_add(1, Ordering::SeqCst);
        if let Some(tx) = &*self.events.lock() {
            let _ = tx.send(Event::End(Ending::Lost));
        }
    }
    fn on_control(&self, message: &IoControl) -> ControlReply {
        self.controls.lock().push(format!("{message:?}"));
        match message {
            IoControl::Custom(_) => ControlReply::Unsupported,
            IoControl::CanConnect(_) => ControlReply::Denied,
            _ => ControlReply::Handled,
        }
    }
}

/// A checking producer: delivers what tests give it as far as the credit allows, keeps the
/// rest, and records every refusal of the link (there must be none but `NotOpen`).
pub struct Pusher {
    pub reactor: Reactor,
    pub me: std::sync::Weak<Pusher>,
    pub slot: LinkSlot,
    pub queue: Mutex<std::collections::VecDeque<Bytes>>,
    pub ending: Mutex<Option<Ending>>,
    pub credits: AtomicUsize,
    pub attached: AtomicUsize,
    pub detached: AtomicUsize,
    pub aborts: AtomicUsize,
    pub controls: Mutex<Vec<String>>,
    pub refusals: Mutex<Vec<DeliverError>>,
    pub reentered: AtomicBool,
    in_credit: AtomicBool,
}

impl Pusher {
    pub fn new(reactor: &Reactor) -> Arc<Pusher> {
        Arc::new_cyclic(|me| Pusher {
            reactor: reactor.clone(),
            me: me.clone(),
            slot: LinkSlot::new(),
            queue: Mutex::new(Default::default()),
            ending: Mutex::new(None),
            credits: AtomicUsize::new(0),
            attached: AtomicUsize::new(0),
            detached: AtomicUsize::new(0),
            aborts: AtomicUsize::new(0),
            controls: Mutex::new(Vec::new()),
            refusals: Mutex::new(Vec::new()),
            reentered: AtomicBool::new(false),
            in_credit: AtomicBool::new(false),
        })
    }

    pub fn producer(self: &Arc<Self>) -> weir_io::ProducerRef {
        self.clone()
    }

    /// Whether `on_credit` is running now.
    pub fn in_credit_flag(&self) -> bool {
        self.in_credit.load(Ordering::SeqCst)
    }

    /// Queues `data` and pushes on the reactor thread (any thread).
    pub fn push(&self, data: impl Into<Bytes>) {
        self.queue.lock().push_back(data.into());
        self.kick();
    }

    /// Ends after the queue drains (any thread).
    pub fn finish(&self, ending: Ending) {
        *self.ending.lock() = Some(ending);
        self.kick();
    }

    fn kick(&self) {
        let me = self.me.upgrade().expect("alive");
        self.reactor.call(move || me.pump());
    }

    /// Delivers what the credit allows (reactor thread).
    pub fn pump(&self) {
        let Some(link) = self.slot.link() else { return };
        loop {
            let remaining = link.remaining();
            let chunk = {
                let mut queue = self.queue.lock();
                let Some(front) = queue.front_mut() else {
                    break;
                };
                if remaining == 0 {
                    return;
                }
                if front.len() as u64 <= remaining {
                    queue.pop_front().expect("front exists")
                } else {
                    front.split_to(remaining as usize)
                }
            };
            if let Err(err) = link.deliver(chunk) {
                self.refusals.lock().push(err);
                return;
            }
        }
        if let Some(ending) = self.ending.lock().take() {
            link.end(ending);
        }
    }
}

impl ByteProducer for Pusher {
    fn reactor(&self) -> &Reactor {
        &self.reactor
    }
    fn producer_slot(&self) -> &LinkSlot {
        &self.slot
    }
    fn on_credit(&self, _link: &Arc<Link>) {
        self.credits.fetch_add(1, Ordering::SeqCst);
        self.in_credit.store(true, Ordering::SeqCst);
        self.pump();
        self.in_credit.store(false, Ordering::SeqCst);
    }
    fn on_attached(&self, _link: &Arc<Link>) {
        self.attached.fetch_add(1, Ordering::SeqCst);
    }
    fn on_detached(&self) {
        self.detached.fetch_add(1, Ordering::SeqCst);
    }
    fn on_abort(&self) {
        self.aborts.fetch_add(1, Ordering::SeqCst);
    }
    fn on_control(&self, message: &IoControl) -> ControlReply {
        self.controls.lock().push(format!("{message:?}"));
        match message {
            IoControl::Custom(_) => ControlReply::Unsupported,
            _ => ControlReply::Handled,
        }
    }
}
