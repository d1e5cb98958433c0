//! [`ByteWriter`]: a bounded, thread-safe buffer that produces into a chain.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use weir_reactor::Reactor;

use crate::{ByteProducer, Chunks, Ending, Link, LinkSlot, ProducerRef};

/// Bytes delivered per reactor turn before a writer yields to other work.
const TURN_BUDGET: usize = 256 * 1024;
/// Most bytes handed on in one run ([`Link::deliver_chunks`]).
const RUN_BYTES: u64 = 64 * 1024;

/// A producer fed by [`write`](Self::write) calls from any thread.
///
/// Versile `VByteWriter`. Each `write` is atomic: all of it is buffered, or none of it and an
/// error says why. The buffer is bounded by the capacity given at construction; a write that
/// does not fit fails with [`WriteError::Full`], and [`set_on_room`](Self::set_on_room) tells
/// when at least half the capacity is free again. Bytes flow to the attached consumer as its
/// credit allows, many small writes as one run ([`Link::deliver_chunks`]), each write still
/// its own chunk; [`end_write`](Self::end_write) ends the stream after the last buffered byte.
///
/// # Threading
///
/// `write`, `end_write` and `abort_writer` work from any thread; delivery always happens on the
/// reactor thread, never inside the caller.
///
/// # Examples
///
/// ```
/// use weir_io::{ByteWriter, Ending};
/// use weir_reactor::Reactor;
///
/// let reactor = Reactor::new()?;
/// let writer = ByteWriter::new(&reactor, 1024);
/// writer.write(&b"Knights who say Ni!"[..])?;
/// assert_eq!(writer.buffered(), 19);
/// writer.end_write(Ending::Completed);
/// assert!(writer.write(&b"more"[..]).is_err(), "closed after end_write");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "VByteWriter")]
#[doc(alias = "IVByteWriter")]
pub struct ByteWriter {
    /// The reactor deliveries run on.
    reactor: Reactor,
    /// This writer, for the calls it queues on the reactor.
    me: std::sync::Weak<ByteWriter>,
    /// Where the link to the consumer is kept.
    slot: LinkSlot,
    /// Most bytes the buffer holds.
    capacity: usize,
    /// Buffer and flags.
    state: Mutex<WriterState>,
}

/// Mutable part of a [`ByteWriter`].
#[derive(Default)]
struct WriterState {
    /// Chunks waiting for credit, oldest first.
    chunks: Chunks,
    /// An empty run kept for its allocation, swapped with `chunks` by a delivery.
    spare: Chunks,
    /// Set by `end_write`: the ending to send once the buffer drains.
    ending: Option<Ending>,
    /// No more writes: ended or aborted.
    closed: bool,
    /// A delivery turn is queued on the reactor.
    turn_queued: bool,
    /// A write failed for lack of room: call `on_room` when half the capacity is free.
    room_wanted: bool,
    /// Called when room is wanted and available again.
    on_room: Option<Arc<dyn Fn() + Send + Sync>>,
    /// Called after every delivery.
    on_drain: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl WriterState {
    /// Bytes in `chunks`.
    fn buffered(&self) -> usize {
        // At most the writer's capacity, a usize.
        self.chunks.byte_len() as usize
    }
}

/// Why [`ByteWriter::write`] refused data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WriteError {
    /// The writer was ended or aborted.
    #[doc(alias = "VIOClosed")]
    Closed,
    /// The data does not fit; `free` bytes would.
    Full {
        /// Free space in the buffer now.
        free: usize,
    },
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Closed => f.write_str("writer is closed"),
            WriteError::Full { free } => write!(f, "write buffer full ({free} bytes free)"),
        }
    }
}

impl std::error::Error for WriteError {}

impl ByteWriter {
    /// A writer on `reactor` whose buffer holds at most `capacity` bytes.
    pub fn new(reactor: &Reactor, capacity: usize) -> Arc<ByteWriter> {
        Arc::new_cyclic(|me| ByteWriter {
            reactor: reactor.clone(),
            me: me.clone(),
            slot: LinkSlot::new(),
            capacity,
            state: Mutex::new(WriterState::default()),
        })
    }

    /// This writer as a producer reference, for [`attach`](crate::attach).
    pub fn producer(self: &Arc<Self>) -> ProducerRef {
        self.clone()
    }

    /// Buffers all of `data` for delivery (any thread).
    ///
    /// # Errors
    ///
    /// [`WriteError::Closed`] after [`end_write`](Self::end_write) or an abort;
    /// [`WriteError::Full`] if `data` does not fit in the free space (nothing is buffered).
    pub fn write(&self, data: impl Into<Bytes>) -> Result<(), WriteError> {
        let data = data.into();
        let mut state = self.state.lock();
        if state.closed {
            return Err(WriteError::Closed);
        }
        let free = self.capacity - state.buffered();
        if data.len() > free {
            state.room_wanted = true;
            return Err(WriteError::Full { free });
        }
        if data.is_empty() {
            return Ok(());
        }
        state.chunks.push(data);
        self.queue_turn(state);
        Ok(())
    }

    /// Ends the stream once every buffered byte has been delivered (any thread). Only the
    /// first call counts.
    pub fn end_write(&self, ending: Ending) {
        let mut state = self.state.lock();
        if state.closed {
            return;
        }
        state.closed = true;
        state.ending = Some(ending);
        self.queue_turn(state);
    }

    /// Drops the buffer and aborts the chain (any thread).
    pub fn abort_writer(&self) {
        {
            let mut state = self.state.lock();
            state.closed = true;
            state.chunks.clear();
        }
        self.slot.mark_ended();
        if let Some(link) = self.slot.link() {
            link.abort();
        }
    }

    /// Calls `f` on the reactor thread whenever a write failed with [`WriteError::Full`] and
    /// at least half the capacity is free again.
    pub fn set_on_room(&self, f: impl Fn() + Send + Sync + 'static) {
        self.state.lock().on_room = Some(Arc::new(f));
    }

    /// Calls `f` on the reactor thread after every delivery from the buffer, e.g. to grant
    /// credit to whoever feeds this writer.
    pub fn set_on_drain(&self, f: impl Fn() + Send + Sync + 'static) {
        self.state.lock().on_drain = Some(Arc::new(f));
    }

    /// Bytes buffered and not yet delivered.
    pub fn buffered(&self) -> usize {
        self.state.lock().buffered()
    }

    /// Free space in the buffer.
    pub fn free(&self) -> usize {
        self.capacity - self.state.lock().buffered()
    }

    /// Whether `end_write` or an abort closed the writer.
    pub fn is_closed(&self) -> bool {
        self.state.lock().closed
    }

    /// Queues one delivery turn unless one is queued already.
    fn queue_turn(&self, mut state: parking_lot::MutexGuard<'_, WriterState>) {
        if state.turn_queued {
            return;
        }
        state.turn_queued = true;
        drop(state);
        let Some(writer) = self.me.upgrade() else {
            return;
        };
        self.reactor.call(move || {
            writer.state.lock().turn_queued = false;
            writer.deliver();
        });
    }

    /// Delivers as much as the credit allows, then the ending if everything went out.
    fn deliver(&self) {
        let Some(link) = self.slot.link() else { return };
        let mut sent = 0;
        loop {
            let remaining = link.remaining();
            let mut state = self.state.lock();
            if state.chunks.is_empty() {
                let ending = state.ending.take();
                drop(state);
                if let Some(ending) = ending {
                    link.end(ending);
                }
                break;
            }
            if remaining == 0 {
                break;
            }
            if sent >= TURN_BUDGET {
                self.queue_turn(state);
                break;
            }
            let max = remaining.min(RUN_BYTES);
            let queues = &mut *state;
            let mut run = queues.chunks.split_to_reusing(max, &mut queues.spare);
            // At most RUN_BYTES.
            sent += run.byte_len() as usize;
            let room = self.room_callback(&mut state);
            let drain = state.on_drain.clone();
            drop(state);
            let delivered = link.deliver_chunks(&mut run);
            // What a link closed from inside the consumer did not take is dropped with it.
            run.clear();
            self.state.lock().spare = run;
            if delivered.is_err() {
                break;
            }
            if let Some(room) = room {
                room();
            }
            if let Some(drain) = drain {
                drain();
            }
        }
    }

    /// The room callback, if it is due now.
    fn room_callback(&self, state: &mut WriterState) -> Option<Arc<dyn Fn() + Send + Sync>> {
        if state.room_wanted && state.buffered() * 2 <= self.capacity {
            state.room_wanted = false;
            state.on_room.clone()
        } else {
            None
        }
    }
}

impl ByteProducer for ByteWriter {
    fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    fn producer_slot(&self) -> &LinkSlot {
        &self.slot
    }

    fn on_credit(&self, link: &Arc<Link>) {
        let _ = link;
        self.deliver();
    }

    fn on_abort(&self) {
        let mut state = self.state.lock();
        state.closed = true;
        state.chunks.clear();
    }
}

impl fmt::Debug for ByteWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("ByteWriter")
            .field("capacity", &self.capacity)
            .field("buffered", &state.buffered())
            .field("closed", &state.closed)
            .finish()
    }
}
