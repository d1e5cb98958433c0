//! Producers, consumers and the link that joins one of each.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use weir_reactor::Reactor;

use crate::{Chunks, ControlReply, Credit, Ending, IoControl};

/// A shared reference to a producer.
pub type ProducerRef = Arc<dyn ByteProducer>;
/// A shared reference to a consumer.
pub type ConsumerRef = Arc<dyn ByteConsumer>;

/// The sending end of a [`Link`]: it delivers bytes to a consumer as far as its credit allows.
///
/// Versile `IVByteProducer`. An implementation keeps a [`LinkSlot`] and reacts to the calls
/// below; to send it takes its link from the slot and calls [`Link::deliver`] and
/// [`Link::end`].
///
/// # Threading and re-entrancy
///
/// Every method runs on the reactor thread. [`on_credit`](Self::on_credit) is always called
/// from the reactor's queue, never from inside the consumer, so a producer may deliver right
/// there. Never hold a lock of your own while calling into a link: the call can come back
/// (an abort from inside `consume` reaches [`on_abort`](Self::on_abort) of the same element).
#[doc(alias = "IVByteProducer")]
#[doc(alias = "IVProducer")]
pub trait ByteProducer: Send + Sync + 'static {
    /// The reactor this producer runs on.
    fn reactor(&self) -> &Reactor;

    /// Where this producer keeps its link.
    fn producer_slot(&self) -> &LinkSlot;

    /// The consumer raised the credit of `link`: more may be delivered.
    #[doc(alias = "can_produce")]
    fn on_credit(&self, link: &Arc<Link>);

    /// A consumer was attached; called before its first grant of credit.
    fn on_attached(&self, link: &Arc<Link>) {
        let _ = link;
    }

    /// The link was detached without ending; the producer may be attached again.
    fn on_detached(&self) {}

    /// The link was aborted, by either side. Called once per link.
    #[doc(alias = "abort")]
    fn on_abort(&self) {}

    /// A control message from downstream.
    fn on_control(&self, message: &IoControl) -> ControlReply {
        let _ = message;
        ControlReply::Unsupported
    }
}

/// The receiving end of a [`Link`]: it takes bytes and grants credit for more.
///
/// Versile `IVByteConsumer`. Threading rules are those of [`ByteProducer`].
#[doc(alias = "IVByteConsumer")]
#[doc(alias = "IVConsumer")]
pub trait ByteConsumer: Send + Sync + 'static {
    /// The reactor this consumer runs on.
    fn reactor(&self) -> &Reactor;

    /// Where this consumer keeps its link.
    fn consumer_slot(&self) -> &LinkSlot;

    /// A producer was attached; returns the first credit (often a window:
    /// `Credit::upto(n)` since the position starts at 0).
    fn on_attached(&self, link: &Arc<Link>) -> Credit;

    /// Takes `data`, which never exceeds the credit granted so far, and returns the new
    /// cumulative credit (a smaller value than before changes nothing).
    /// [`Link::position`] already counts `data`.
    fn consume(&self, link: &Arc<Link>, data: Bytes) -> Credit;

    /// Takes a run of chunks delivered in one call ([`Link::deliver_chunks`]), in order, and
    /// returns the new cumulative credit. [`Link::position`] already counts the whole run.
    /// Called only if [`takes_runs`](Self::takes_runs) says so.
    ///
    /// Take every chunk, unless the link closes meanwhile (an abort or detach from inside
    /// this call): whatever is left in `chunks` then goes back to the producer.
    ///
    /// The default passes each chunk to [`consume`](Self::consume), stops early if the link
    /// closes, and returns the last credit (earlier ones were computed from a position that
    /// already counted chunks not yet taken).
    fn consume_chunks(&self, link: &Arc<Link>, chunks: &mut Chunks) -> Credit {
        let mut credit = link.credit();
        while link.is_open() {
            let Some(chunk) = chunks.pop() else { break };
            credit = self.consume(link, chunk);
        }
        credit
    }

    /// Whether this consumer takes runs in one call through
    /// [`consume_chunks`](Self::consume_chunks): override both where one call for a whole
    /// run is cheaper (one lock, one credit update, one system call). When `false` (the
    /// default), [`Link::deliver_chunks`] hands a run on chunk by chunk through
    /// [`consume`](Self::consume), each chunk counted in [`Link::position`] only as it goes,
    /// so a consumer that computes its credit from the position stays exact.
    fn takes_runs(&self) -> bool {
        false
    }

    /// The producer ended the stream after every byte it delivered. Called at most once per
    /// link; the link is finished afterwards.
    #[doc(alias = "end_consume")]
    fn on_end(&self, link: &Arc<Link>, ending: Ending);

    /// The link was detached without ending; the consumer may be attached again.
    fn on_detached(&self) {}

    /// The link was aborted, by either side. Called once per link.
    #[doc(alias = "abort")]
    fn on_abort(&self) {}

    /// A control message from upstream.
    fn on_control(&self, message: &IoControl) -> ControlReply {
        let _ = message;
        ControlReply::Unsupported
    }
}

/// Where an element keeps its link, and whether it has ended.
///
/// One per producer and one per consumer. [`attach`] and the link itself fill and clear it.
///
/// A plain lock: taking the link is a lock, a reference count and an unlock, as cheap as a
/// lock-free read of a swappable pointer (`arc-swap`, which weir used at first: its load
/// takes as many locked instructions, and every store scans every thread's debt list).
#[derive(Default)]
pub struct LinkSlot {
    /// The link and the ended flag; attach and release change them under this lock.
    state: Mutex<SlotState>,
}

/// Contents of a [`LinkSlot`].
#[derive(Default)]
struct SlotState {
    /// The current link, if attached.
    link: Option<Arc<Link>>,
    /// The element ended or was aborted: it cannot be attached again.
    ended: bool,
}

impl LinkSlot {
    /// An empty slot.
    pub fn new() -> LinkSlot {
        LinkSlot::default()
    }

    /// The current link, if attached.
    pub fn link(&self) -> Option<Arc<Link>> {
        self.state.lock().link.clone()
    }

    /// Whether the element's stream has ended or been aborted.
    pub fn is_ended(&self) -> bool {
        self.state.lock().ended
    }

    /// Marks the element ended, so that it cannot be attached again; returns whether it
    /// already was.
    pub fn mark_ended(&self) -> bool {
        std::mem::replace(&mut self.state.lock().ended, true)
    }
}

impl SlotState {
    /// Clears the slot if it holds `link` (called with the slot's lock held).
    fn release(&mut self, link: &Link, ended: bool) {
        if self.link.as_deref().is_some_and(|l| std::ptr::eq(l, link)) {
            self.link = None;
        }
        self.ended |= ended;
    }
}

impl fmt::Debug for LinkSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("LinkSlot")
            .field("attached", &state.link.is_some())
            .field("ended", &state.ended)
            .finish()
    }
}

/// Why [`attach`] failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AttachError {
    /// The producer is attached to another consumer.
    ProducerAttached,
    /// The consumer is attached to another producer.
    ConsumerAttached,
    /// The producer's stream has ended or was aborted.
    ProducerEnded,
    /// The consumer's stream has ended or was aborted.
    ConsumerEnded,
    /// The two elements run on different reactors.
    DifferentReactors,
}

impl fmt::Display for AttachError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachError::ProducerAttached => "producer is attached to another consumer",
            AttachError::ConsumerAttached => "consumer is attached to another producer",
            AttachError::ProducerEnded => "producer has ended",
            AttachError::ConsumerEnded => "consumer has ended",
            AttachError::DifferentReactors => "producer and consumer run on different reactors",
        })
    }
}

impl std::error::Error for AttachError {}

/// Why [`Link::deliver`] refused data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeliverError {
    /// The data exceeds the credit; `remaining` bytes may still be delivered.
    NoCredit {
        /// Bytes the credit still allows.
        remaining: u64,
    },
    /// The link is not open: still attaching, or ended, aborted or detached.
    NotOpen,
}

impl fmt::Display for DeliverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliverError::NoCredit { remaining } => {
                write!(f, "data exceeds credit ({remaining} bytes remain)")
            }
            DeliverError::NotOpen => f.write_str("link is not open"),
        }
    }
}

impl std::error::Error for DeliverError {}

/// Attaches `producer` to `consumer` with a new [`Link`]. Works from any thread.
///
/// The slots are filled at once, so errors come back here; the rest happens on the reactor
/// thread, in this order: the producer's [`on_attached`](ByteProducer::on_attached), the
/// consumer's [`on_attached`](ByteConsumer::on_attached) and its first credit,
/// [`IoControl::NotifyConsumerAttached`] to the producer,
/// [`IoControl::NotifyProducerAttached`] to the consumer. Attaching the same pair again does
/// nothing. Counters start at zero on every new link.
///
/// # Errors
///
/// Either side attached elsewhere or ended, or the two on different reactors.
pub fn attach(producer: &ProducerRef, consumer: &ConsumerRef) -> Result<(), AttachError> {
    if producer.reactor() != consumer.reactor() {
        return Err(AttachError::DifferentReactors);
    }
    // Lock order: always the producer's slot before the consumer's; slots of one kind are
    // never held together, so two attaches cannot deadlock.
    let (p_slot, c_slot) = (producer.producer_slot(), consumer.consumer_slot());
    let mut p = p_slot.state.lock();
    let mut c = c_slot.state.lock();
    if let Some(link) = &p.link {
        if same(&link.consumer, consumer) {
            return Ok(());
        }
        return Err(AttachError::ProducerAttached);
    }
    if p.ended {
        return Err(AttachError::ProducerEnded);
    }
    if c.link.is_some() {
        return Err(AttachError::ConsumerAttached);
    }
    if c.ended {
        return Err(AttachError::ConsumerEnded);
    }
    let link = Arc::new(Link {
        reactor: producer.reactor().clone(),
        producer: producer.clone(),
        consumer: consumer.clone(),
        phase: AtomicU8::new(Phase::Attaching as u8),
        position: AtomicU64::new(0),
        credit: AtomicU64::new(0),
        granted: AtomicU64::new(0),
        credit_call_pending: AtomicBool::new(false),
        early_end: Mutex::new(None),
    });
    p.link = Some(link.clone());
    c.link = Some(link.clone());
    drop((p, c));
    let reactor = link.reactor.clone();
    reactor.execute(move || link.open());
    Ok(())
}

/// Whether two references point at the same element.
fn same<T: ?Sized>(a: &Arc<T>, b: &Arc<T>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
}

/// One attachment of a producer to a consumer: the delivered position, the credit, and the
/// way to end, abort or detach.
///
/// A link is made by [`attach`] and lives until it ends, is aborted or is detached; a new
/// attach makes a new link with fresh counters. The link enforces the credit contract: it
/// refuses data beyond the credit ([`DeliverError::NoCredit`]), keeps credit monotonic,
/// delivers the end exactly once and after every byte, and tells both sides of an abort.
///
/// # Methods by side
///
/// - Producer side, reactor thread: [`deliver`](Self::deliver),
///   [`deliver_chunks`](Self::deliver_chunks), [`end`](Self::end),
///   [`remaining`](Self::remaining), [`control_downstream`](Self::control_downstream).
/// - Consumer side: [`grant`](Self::grant) (any thread), [`position`](Self::position),
///   [`control_upstream`](Self::control_upstream).
/// - Either side, any thread: [`abort`](Self::abort), [`detach`](Self::detach).
pub struct Link {
    /// The reactor both sides run on.
    reactor: Reactor,
    /// The sending side.
    producer: ProducerRef,
    /// The receiving side.
    consumer: ConsumerRef,
    /// Where the link is in its life, a [`Phase`].
    phase: AtomicU8,
    /// Bytes delivered since attach; written only by [`Link::deliver`] on the reactor thread.
    position: AtomicU64,
    /// The consumer's cumulative credit (the value of a [`Credit`]) as raised on the reactor
    /// thread, its one writer: raising it is a load and a store, not a locked
    /// read-modify-write. The credit in force is the larger of this and `granted`.
    credit: AtomicU64,
    /// The largest credit granted from other threads.
    granted: AtomicU64,
    /// An `on_credit` call is queued already.
    credit_call_pending: AtomicBool,
    /// An end asked for while attaching, carried out once the link opens.
    early_end: Mutex<Option<Ending>>,
}

// The hot path (deliver, remaining, position, grant) uses atomics rather than a lock: one
// chunk through a chain of elements costs a few loads and stores per link.

/// Life of a [`Link`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Phase {
    /// Made by `attach`, waiting for the reactor thread.
    Attaching,
    /// Carrying data.
    Open,
    /// Finished by `end`, `abort` or `detach`.
    Closed,
}

impl Link {
    /// The producer side.
    pub fn producer(&self) -> &ProducerRef {
        &self.producer
    }

    /// The consumer side.
    pub fn consumer(&self) -> &ConsumerRef {
        &self.consumer
    }

    /// The reactor both sides run on.
    pub fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    /// Bytes delivered over this link so far.
    pub fn position(&self) -> u64 {
        self.position.load(Ordering::Acquire)
    }

    /// The credit granted so far.
    pub fn credit(&self) -> Credit {
        // SeqCst for `granted`: see `notify_credit`.
        let here = self.credit.load(Ordering::Acquire);
        Credit::upto(here.max(self.granted.load(Ordering::SeqCst)))
    }

    /// Bytes the credit still allows (`u64::MAX` when unlimited); 0 unless the link is open.
    pub fn remaining(&self) -> u64 {
        match self.phase() {
            Phase::Open => self.credit().remaining(self.position()),
            _ => 0,
        }
    }

    /// Whether data can flow: attached, not ended, aborted or detached.
    pub fn is_open(&self) -> bool {
        self.phase() == Phase::Open
    }

    /// Credit for `window` more bytes beyond the current position.
    pub fn window(&self, window: u64) -> Credit {
        Credit::upto(self.position().saturating_add(window))
    }

    /// Delivers `data` to the consumer (producer side, reactor thread). Empty data is a no-op.
    ///
    /// # Errors
    ///
    /// [`DeliverError::NoCredit`] if `data` is longer than the credit allows (nothing is
    /// delivered), [`DeliverError::NotOpen`] if the link is not open.
    pub fn deliver(self: &Arc<Self>, data: Bytes) -> Result<(), DeliverError> {
        let len = data.len() as u64;
        let position = self.admit(len)?;
        if len == 0 {
            return Ok(());
        }
        // Only the deliver methods, on the reactor thread, write the position.
        self.position.store(position + len, Ordering::Release);
        let credit = self.consumer.consume(self, data);
        self.raise(credit);
        Ok(())
    }

    /// Delivers a run of chunks: in one call to the consumer's
    /// [`consume_chunks`](ByteConsumer::consume_chunks) if it
    /// [`takes_runs`](ByteConsumer::takes_runs), else chunk by chunk to its
    /// [`consume`](ByteConsumer::consume) (producer side, reactor thread). An empty run is a
    /// no-op.
    ///
    /// On success the consumer has taken every chunk, unless the link closed while it was
    /// taking them (aborted or detached from inside the consumer): what it did not take is
    /// left in `chunks`, for the producer to keep for its next link or drop.
    ///
    /// # Errors
    ///
    /// As [`deliver`](Self::deliver), for the run's total length; `chunks` is left untouched.
    pub fn deliver_chunks(self: &Arc<Self>, chunks: &mut Chunks) -> Result<(), DeliverError> {
        let len = chunks.byte_len();
        let position = self.admit(len)?;
        if len == 0 {
            return Ok(());
        }
        if self.consumer.takes_runs() {
            self.position.store(position + len, Ordering::Release);
            let credit = self.consumer.consume_chunks(self, chunks);
            self.raise(credit);
            return Ok(());
        }
        let mut position = position;
        while self.is_open() {
            let Some(chunk) = chunks.pop() else { break };
            position += chunk.len() as u64;
            self.position.store(position, Ordering::Release);
            let credit = self.consumer.consume(self, chunk);
            self.raise(credit);
        }
        Ok(())
    }

    /// Ends the stream (producer side, reactor thread): the consumer's
    /// [`on_end`](ByteConsumer::on_end) runs once, after every byte delivered before; both
    /// sides are then marked ended and detached. On a link that is still attaching (its
    /// second half has not yet run on the reactor thread, e.g. when an upstream element ends
    /// from inside its own attach), the first end is kept and carried out as soon as the link
    /// opens. Does nothing once the link has closed.
    #[doc(alias = "end_consume")]
    pub fn end(self: &Arc<Self>, ending: Ending) {
        match self.phase() {
            Phase::Attaching => {
                // Both this and `open` run on the reactor thread: `open` will see it.
                self.early_end.lock().get_or_insert(ending);
                return;
            }
            Phase::Closed => return,
            Phase::Open => {}
        }
        if !self.close() {
            return;
        }
        self.release(true);
        self.consumer.on_end(self, ending);
    }

    /// Raises the credit (consumer side, any thread). When it grows, the producer's
    /// [`on_credit`](ByteProducer::on_credit) runs from the reactor's queue (one call for any
    /// number of grants before it runs).
    #[doc(alias = "can_produce")]
    #[doc(alias = "set_receive_limit")]
    pub fn grant(self: &Arc<Self>, credit: Credit) {
        if self.reactor.is_reactor_thread() {
            if !self.raise(credit) || self.phase() != Phase::Open {
                // Credit raised while attaching is announced when the link opens.
                return;
            }
        } else {
            let before = self.credit();
            self.granted
                .fetch_max(credit.limit().unwrap_or(u64::MAX), Ordering::SeqCst);
            if credit <= before || self.phase() != Phase::Open {
                return;
            }
        }
        if self.credit_call_pending.swap(true, Ordering::SeqCst) {
            return;
        }
        let link = self.clone();
        self.reactor.call(move || link.notify_credit());
    }

    /// Aborts the link (either side, any thread): both sides' `on_abort` run once, on the
    /// reactor thread, and both are marked ended and detached. Does nothing after the link
    /// has closed.
    pub fn abort(self: &Arc<Self>) {
        let link = self.clone();
        self.reactor.execute(move || {
            if link.close() {
                link.release(true);
                link.producer.on_abort();
                link.consumer.on_abort();
            }
        });
    }

    /// Detaches both sides without ending (either side, any thread); each may be attached
    /// again. Their `on_detached` run on the reactor thread.
    pub fn detach(self: &Arc<Self>) {
        let link = self.clone();
        self.reactor.execute(move || {
            if link.close() {
                link.release(false);
                link.producer.on_detached();
                link.consumer.on_detached();
            }
        });
    }

    /// Sends a control message to the consumer (downstream) and returns its answer.
    pub fn control_downstream(&self, message: &IoControl) -> ControlReply {
        self.consumer.on_control(message)
    }

    /// Sends a control message to the producer (upstream) and returns its answer.
    pub fn control_upstream(&self, message: &IoControl) -> ControlReply {
        self.producer.on_control(message)
    }

    /// Second half of [`attach`], on the reactor thread.
    fn open(self: &Arc<Self>) {
        let opened = self.phase.compare_exchange(
            Phase::Attaching as u8,
            Phase::Open as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        if opened.is_err() {
            return;
        }
        self.producer.on_attached(self);
        let credit = self.consumer.on_attached(self);
        self.raise(credit);
        if self.credit() > Credit::ZERO {
            self.notify_credit_now();
        }
        if self.is_open() {
            self.producer.on_control(&IoControl::NotifyConsumerAttached);
        }
        if self.is_open() {
            self.consumer.on_control(&IoControl::NotifyProducerAttached);
        }
        let early_end = self.early_end.lock().take();
        if let Some(ending) = early_end {
            self.end(ending);
        }
    }

    /// The queued part of [`grant`](Self::grant).
    fn notify_credit(self: &Arc<Self>) {
        // Cleared before the producer reads the credit, both SeqCst: a grant from another
        // thread that still saw the flag set made its `fetch_max` before that read.
        self.credit_call_pending.store(false, Ordering::SeqCst);
        self.notify_credit_now();
    }

    /// Calls the producer's `on_credit` if the link is open.
    fn notify_credit_now(self: &Arc<Self>) {
        if self.is_open() {
            self.producer.on_credit(self);
        }
    }

    /// Checks that `len` more bytes may be delivered now; returns the position before them.
    fn admit(&self, len: u64) -> Result<u64, DeliverError> {
        if self.phase() != Phase::Open {
            return Err(DeliverError::NotOpen);
        }
        let position = self.position();
        let remaining = self.credit().remaining(position);
        if len > remaining {
            return Err(DeliverError::NoCredit { remaining });
        }
        Ok(position)
    }

    /// Moves the link to closed; returns whether this call did it.
    fn close(&self) -> bool {
        self.phase.swap(Phase::Closed as u8, Ordering::AcqRel) != Phase::Closed as u8
    }

    /// The phase now.
    fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Attaching,
            1 => Phase::Open,
            _ => Phase::Closed,
        }
    }

    /// Raises the credit to `credit` if that is more; returns whether the credit in force
    /// grew. Reactor thread only: it is the one writer of `credit`.
    fn raise(&self, credit: Credit) -> bool {
        let value = credit.limit().unwrap_or(u64::MAX);
        if value <= self.credit.load(Ordering::Relaxed) {
            return false;
        }
        self.credit.store(value, Ordering::Release);
        value > self.granted.load(Ordering::SeqCst)
    }

    /// Clears both slots together, locked in the order [`attach`] uses (producer first), so
    /// that an attach racing with this never sees one side free and the other still taken.
    fn release(&self, ended: bool) {
        let (p_slot, c_slot) = (self.producer.producer_slot(), self.consumer.consumer_slot());
        let mut p = p_slot.state.lock();
        let mut c = c_slot.state.lock();
        p.release(self, ended);
        c.release(self, ended);
    }
}

impl fmt::Debug for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Link")
            .field("phase", &self.phase())
            .field("position", &self.position())
            .field("credit", &self.credit())
            .finish()
    }
}
