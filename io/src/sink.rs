//! [`ByteSink`] and [`ByteSource`]: a consumer and a producer made of a few hooks.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use weir_reactor::Reactor;

use crate::{
    ByteConsumer, ByteProducer, Chunks, ConsumerRef, ControlReply, Credit, Ending, IoControl, Link,
    LinkSlot, ProducerRef,
};

/// What a [`ByteSink`] does with what it receives.
///
/// Any `FnMut(Bytes) + Send` closure is a `SinkHooks` that ignores the end and controls.
pub trait SinkHooks: Send + 'static {
    /// Bytes arrived (Versile `_data_received`).
    #[doc(alias = "_data_received")]
    fn on_data(&mut self, link: &Arc<Link>, data: Bytes);

    /// The stream ended, or the link was aborted ([`Ending::Lost`]); called exactly once, after
    /// every `on_data` (Versile `_data_ended` / `_consumer_aborted`).
    #[doc(alias = "_data_ended")]
    fn on_end(&mut self, ending: Ending) {
        let _ = ending;
    }

    /// A control message from upstream.
    fn on_control(&mut self, message: &IoControl) -> ControlReply {
        let _ = message;
        ControlReply::Unsupported
    }
}

impl<F: FnMut(Bytes) + Send + 'static> SinkHooks for F {
    fn on_data(&mut self, _link: &Arc<Link>, data: Bytes) {
        self(data)
    }
}

/// A consumer that hands what it receives to [`SinkHooks`] and grants credit by a window.
///
/// Versile `VByteConsumer` with its hooks. After each chunk the sink grants credit for
/// `window` bytes beyond what it has received ([`Window::Unlimited`] grants without limit).
/// [`pause`](Self::pause) stops granting, so the producer stops once the credit is used up:
/// that is how a slow consumer pushes back; [`resume`](Self::resume) grants again.
///
/// # Threading and re-entrancy
///
/// Hooks run on the reactor thread, one at a time. `on_data` may write into other elements or
/// abort its link; `on_end` is queued on the reactor, so it never runs inside another hook.
/// `pause`, `resume` and `set_window` work from any thread.
///
/// # Examples
///
/// ```
/// use bytes::Bytes;
/// use weir_io::{ByteSink, Window};
/// use weir_reactor::Reactor;
///
/// let reactor = Reactor::new()?;
/// let sink = ByteSink::new(&reactor, Window::Bytes(4096), |data: Bytes| {
///     println!("{} bytes", data.len());
/// });
/// assert_eq!(sink.received(), 0);
/// # Ok::<(), std::io::Error>(())
/// ```
#[doc(alias = "VByteConsumer")]
pub struct ByteSink<H> {
    /// The reactor the hooks run on.
    reactor: Reactor,
    /// This sink, for calls it queues.
    me: Weak<ByteSink<H>>,
    /// Where the link to the producer is kept.
    slot: LinkSlot,
    /// The end flag and the limit.
    state: Mutex<SinkState>,
    /// The window ahead of the position, `u64::MAX` for [`Window::Unlimited`]. This and
    /// `paused` are read at every grant, without the lock.
    window: AtomicU64,
    /// Granting is paused.
    paused: AtomicBool,
    /// A limit is set (`state.limit`): only then does a grant take the lock.
    limited: AtomicBool,
    /// Bytes received over all links; written only on the reactor thread (see `count`).
    received: AtomicU64,
    /// The user's hooks.
    hooks: Mutex<H>,
}

/// How much credit a [`ByteSink`] grants ahead of what it has received.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Window {
    /// This many bytes beyond the current position.
    Bytes(u64),
    /// No limit.
    Unlimited,
}

/// Mutable part of a [`ByteSink`].
struct SinkState {
    /// `on_end` was queued already.
    ended: bool,
    /// Caps the window, e.g. by the free space of a writer the hooks feed.
    limit: Option<Arc<dyn Fn() -> u64 + Send + Sync>>,
}

impl<H: SinkHooks> ByteSink<H> {
    /// A sink on `reactor` granting `window` ahead, calling `hooks`.
    pub fn new(reactor: &Reactor, window: Window, hooks: H) -> Arc<ByteSink<H>> {
        Arc::new_cyclic(|me| ByteSink {
            reactor: reactor.clone(),
            me: me.clone(),
            slot: LinkSlot::new(),
            state: Mutex::new(SinkState {
                ended: false,
                limit: None,
            }),
            window: AtomicU64::new(window_value(window)),
            paused: AtomicBool::new(false),
            limited: AtomicBool::new(false),
            received: AtomicU64::new(0),
            hooks: Mutex::new(hooks),
        })
    }

    /// This sink as a consumer reference, for [`attach`](crate::attach).
    pub fn consumer(self: &Arc<Self>) -> ConsumerRef {
        self.clone()
    }

    /// Stops granting credit; the producer stops when what it has is used up.
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    /// Grants credit again after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.regrant();
    }

    /// Changes the window; a larger one is granted at once.
    pub fn set_window(&self, window: Window) {
        self.window.store(window_value(window), Ordering::SeqCst);
        self.regrant();
    }

    /// Caps the window by `limit()`, evaluated at every grant: e.g. the free space of the
    /// writer the hooks write into. Call [`regrant`](Self::regrant) when it grows.
    pub fn set_limit(&self, limit: impl Fn() -> u64 + Send + Sync + 'static) {
        self.state.lock().limit = Some(Arc::new(limit));
        self.limited.store(true, Ordering::SeqCst);
    }

    /// Grants credit again by the current window and limit (any thread).
    pub fn regrant(&self) {
        if let Some(link) = self.slot.link() {
            link.grant(self.credit_for(&link));
        }
    }

    /// Bytes received so far, over every link.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Whether the stream has ended (the `on_end` hook is queued or has run).
    pub fn is_ended(&self) -> bool {
        self.state.lock().ended
    }

    /// Aborts the link to the producer, if any.
    pub fn abort(&self) {
        self.slot.mark_ended();
        match self.slot.link() {
            Some(link) => link.abort(),
            None => self.finish(Ending::Lost),
        }
    }

    /// Runs `f` with the hooks locked (any thread; not from inside a hook).
    pub fn with_hooks<R>(&self, f: impl FnOnce(&mut H) -> R) -> R {
        f(&mut self.hooks.lock())
    }

    /// The credit the sink grants now on `link`.
    fn credit_for(&self, link: &Link) -> Credit {
        if self.paused.load(Ordering::SeqCst) {
            return link.credit();
        }
        let window = self.window.load(Ordering::SeqCst);
        let limit = if self.limited.load(Ordering::SeqCst) {
            let limit = self.state.lock().limit.clone();
            limit.map(|limit| limit())
        } else {
            None
        };
        match (window, limit) {
            (u64::MAX, None) => Credit::UNLIMITED,
            (window, Some(limit)) => link.window(window.min(limit)),
            (window, None) => link.window(window),
        }
    }

    /// Adds `len` to the bytes received (reactor thread, the one writer: a load and a store
    /// rather than a locked add).
    fn count(&self, len: u64) {
        let received = self.received.load(Ordering::Relaxed);
        self.received.store(received + len, Ordering::Relaxed);
    }

    /// Queues the `on_end` hook, once.
    fn finish(&self, ending: Ending) {
        let mut state = self.state.lock();
        if std::mem::replace(&mut state.ended, true) {
            return;
        }
        drop(state);
        let Some(me) = self.me.upgrade() else { return };
        self.reactor.call(move || me.hooks.lock().on_end(ending));
    }
}

impl<H: SinkHooks> ByteConsumer for ByteSink<H> {
    fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    fn consumer_slot(&self) -> &LinkSlot {
        &self.slot
    }

    fn on_attached(&self, link: &Arc<Link>) -> Credit {
        self.credit_for(link)
    }

    fn consume(&self, link: &Arc<Link>, data: Bytes) -> Credit {
        self.count(data.len() as u64);
        self.hooks.lock().on_data(link, data);
        self.credit_for(link)
    }

    fn takes_runs(&self) -> bool {
        true
    }

    fn consume_chunks(&self, link: &Arc<Link>, chunks: &mut Chunks) -> Credit {
        let run = chunks.byte_len();
        {
            let mut hooks = self.hooks.lock();
            while link.is_open() {
                let Some(chunk) = chunks.pop() else { break };
                hooks.on_data(link, chunk);
            }
        }
        // What a hook's abort or detach left here was never handed to the hooks.
        self.count(run - chunks.byte_len());
        self.credit_for(link)
    }

    fn on_end(&self, _link: &Arc<Link>, ending: Ending) {
        self.finish(ending);
    }

    fn on_abort(&self) {
        self.finish(Ending::Lost);
    }

    fn on_control(&self, message: &IoControl) -> ControlReply {
        match self.hooks.try_lock() {
            Some(mut hooks) => hooks.on_control(message),
            // A hook is running and sent this message through the chain back to us.
            None => ControlReply::Unsupported,
        }
    }
}

impl<H> fmt::Debug for ByteSink<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("ByteSink")
            .field("window", &self.window.load(Ordering::Relaxed))
            .field("paused", &self.paused.load(Ordering::Relaxed))
            .field("received", &self.received.load(Ordering::Relaxed))
            .field("ended", &state.ended)
            .finish()
    }
}

/// A window as stored in [`ByteSink::window`]: `u64::MAX` for no limit.
fn window_value(window: Window) -> u64 {
    match window {
        Window::Bytes(n) => n,
        Window::Unlimited => u64::MAX,
    }
}

/// What a [`ByteSource`] hook produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Produce {
    /// Bytes to deliver (at most the `max` asked for; more is kept for later).
    Data(Bytes),
    /// The stream is over.
    End(Ending),
    /// Nothing now; call [`ByteSource::trigger`] when there is.
    Pending,
}

/// How a [`ByteSource`] makes bytes on demand.
pub trait SourceHooks: Send + 'static {
    /// Produces up to `max` bytes (Versile `_produce`).
    #[doc(alias = "_produce")]
    fn produce(&mut self, max: usize) -> Produce;

    /// The consumer aborted the stream.
    fn on_abort(&mut self) {}

    /// A control message from downstream.
    fn on_control(&mut self, message: &IoControl) -> ControlReply {
        let _ = message;
        ControlReply::Unsupported
    }
}

/// Most bytes asked of a [`SourceHooks::produce`] call, and most bytes in one run.
const SOURCE_CHUNK: usize = 64 * 1024;
/// Most chunks a source hands on in one run ([`Link::deliver_chunks`]).
const SOURCE_RUN_CHUNKS: usize = 256;
/// Bytes a source delivers per reactor turn before it yields.
const SOURCE_TURN_BUDGET: usize = 256 * 1024;

/// A producer that pulls bytes from [`SourceHooks`] whenever its consumer has credit.
///
/// Versile `VByteProducer` with its `_produce` hook. The source asks for at most the credit
/// left (and at most 64 KiB at a time), so it never holds more than one chunk of its own.
/// It calls the hook while credit lasts and hands what it made on as one run
/// ([`Link::deliver_chunks`]) of up to 256 chunks or 64 KiB, so a hook that makes small
/// chunks does not pay the chain's per-call costs for each of them.
///
/// # Threading
///
/// Hooks run on the reactor thread; [`trigger`](Self::trigger) works from any thread.
#[doc(alias = "VByteProducer")]
pub struct ByteSource<H> {
    /// The reactor production runs on.
    reactor: Reactor,
    /// This source, for calls it queues.
    me: Weak<ByteSource<H>>,
    /// Where the link to the consumer is kept.
    slot: LinkSlot,
    /// Flags.
    state: Mutex<SourceState>,
    /// The user's hooks.
    hooks: Mutex<H>,
}

/// Mutable part of a [`ByteSource`].
#[derive(Default)]
struct SourceState {
    /// Bytes produced beyond what the credit allowed, delivered first next time.
    held: Option<Bytes>,
    /// The run being gathered (kept between turns for its allocation).
    run: Chunks,
    /// A production turn is queued.
    turn_queued: bool,
    /// The hooks said the stream is over.
    ended: bool,
}

impl<H: SourceHooks> ByteSource<H> {
    /// A source on `reactor` calling `hooks`.
    pub fn new(reactor: &Reactor, hooks: H) -> Arc<ByteSource<H>> {
        Arc::new_cyclic(|me| ByteSource {
            reactor: reactor.clone(),
            me: me.clone(),
            slot: LinkSlot::new(),
            state: Mutex::new(SourceState::default()),
            hooks: Mutex::new(hooks),
        })
    }

    /// This source as a producer reference, for [`attach`](crate::attach).
    pub fn producer(self: &Arc<Self>) -> ProducerRef {
        self.clone()
    }

    /// Asks for a production turn: the hooks have something new (any thread).
    pub fn trigger(&self) {
        let mut state = self.state.lock();
        if state.turn_queued || state.ended {
            return;
        }
        state.turn_queued = true;
        drop(state);
        let Some(me) = self.me.upgrade() else { return };
        self.reactor.call(move || {
            me.state.lock().turn_queued = false;
            me.produce();
        });
    }

    /// Runs `f` with the hooks locked (any thread; not from inside a hook).
    pub fn with_hooks<R>(&self, f: impl FnOnce(&mut H) -> R) -> R {
        f(&mut self.hooks.lock())
    }

    /// Delivers while there is credit, data and budget, a run at a time.
    fn produce(&self) {
        let Some(link) = self.slot.link() else { return };
        let mut sent = 0;
        loop {
            let remaining = link.remaining();
            if remaining == 0 {
                return;
            }
            if sent >= SOURCE_TURN_BUDGET {
                self.trigger();
                return;
            }
            let (mut run, ending) = {
                let mut state = self.state.lock();
                if state.ended {
                    return;
                }
                let mut run = std::mem::take(&mut state.run);
                let held = state.held.take();
                drop(state);
                let mut hooks = None;
                let ending = self.gather(&mut run, held, remaining, &mut hooks);
                (run, ending)
            };
            let more = ending.is_none() && !run.is_empty();
            sent += run.byte_len() as usize;
            let delivered = link.deliver_chunks(&mut run);
            // What a link closed from inside the consumer did not take has nowhere to go.
            run.clear();
            let mut state = self.state.lock();
            state.run = run;
            let ending = match ending {
                Some(Produce::End(ending)) => {
                    state.ended = true;
                    Some(ending)
                }
                _ => None,
            };
            drop(state);
            match (delivered, ending) {
                (Ok(()), Some(ending)) => link.end(ending),
                (Ok(()), None) if more => continue,
                _ => {}
            }
            return;
        }
    }

    /// Fills `run` from what was held and then from the hooks (locked once, in `hooks`), up to
    /// `credit` bytes and the run's limits. Returns the hooks' answer that stopped it, if one
    /// did ([`Produce::End`] or [`Produce::Pending`]).
    fn gather<'a>(
        &'a self,
        run: &mut Chunks,
        mut held: Option<Bytes>,
        credit: u64,
        hooks: &mut Option<parking_lot::MutexGuard<'a, H>>,
    ) -> Option<Produce> {
        let credit = credit.min(SOURCE_CHUNK as u64);
        while run.byte_len() < credit && run.len() < SOURCE_RUN_CHUNKS {
            // Below `credit`, itself at most SOURCE_CHUNK: fits a usize.
            let max = (credit - run.byte_len()) as usize;
            let output = match held.take() {
                Some(data) => Produce::Data(data),
                None => hooks.get_or_insert_with(|| self.hooks.lock()).produce(max),
            };
            match output {
                Produce::Data(mut data) => {
                    if data.len() > max {
                        self.state.lock().held = Some(data.split_off(max));
                    }
                    run.push(data);
                }
                stop => return Some(stop),
            }
        }
        if let Some(rest) = held {
            self.state.lock().held = Some(rest);
        }
        None
    }
}

impl<H: SourceHooks> ByteProducer for ByteSource<H> {
    fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    fn producer_slot(&self) -> &LinkSlot {
        &self.slot
    }

    fn on_credit(&self, _link: &Arc<Link>) {
        self.produce();
    }

    fn on_abort(&self) {
        self.state.lock().ended = true;
        let Some(me) = self.me.upgrade() else { return };
        self.reactor.call(move || me.hooks.lock().on_abort());
    }

    fn on_control(&self, message: &IoControl) -> ControlReply {
        match self.hooks.try_lock() {
            Some(mut hooks) => hooks.on_control(message),
            None => ControlReply::Unsupported,
        }
    }
}

impl<H> fmt::Debug for ByteSource<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("ByteSource")
            .field("ended", &state.ended)
            .finish_non_exhaustive()
    }
}
