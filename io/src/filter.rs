//! [`ByteFilter`]: a middle element that transforms bytes, with credit passed through.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use weir_reactor::Reactor;

use crate::{
    ByteConsumer, ByteIoPair, ByteProducer, Chunks, ControlReply, Credit, Ending, IoControl, Link,
    LinkSlot,
};

/// A middle element: bytes from upstream go through a function and on downstream.
///
/// ```text
///   upstream ──▶ [consumer side] ── f(bytes) ──▶ buffer ──▶ [producer side] ──▶ downstream
///            ◀── credit: received + capacity − buffered ◀── credit from downstream
/// ```
///
/// The filter buffers at most `capacity` bytes of output (plus one transformed run): it
/// grants upstream only what it can hold, so a slow consumer downstream slows the producer
/// upstream. Output goes straight on when nothing is buffered, and a run of chunks that
/// arrives in one call ([`Link::deliver_chunks`]) goes on as one run. The end is passed on
/// after the last buffered byte; an abort on either side aborts the other; control messages
/// pass through in both directions.
///
/// # Examples
///
/// ```
/// use weir_io::ByteFilter;
/// use weir_reactor::Reactor;
///
/// let reactor = Reactor::new()?;
/// let upper = ByteFilter::new(&reactor, 64 * 1024, |b: bytes::Bytes| {
///     bytes::Bytes::from(b.to_ascii_uppercase())
/// });
/// let _pair = upper.io_pair();
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct ByteFilter<F> {
    /// Shared by the two sides.
    inner: Arc<FilterInner<F>>,
}

/// The state both sides of a [`ByteFilter`] share.
struct FilterInner<F> {
    /// The reactor the filter runs on.
    reactor: Reactor,
    /// Link to the upstream producer (our consumer side).
    upstream: LinkSlot,
    /// Link to the downstream consumer (our producer side).
    downstream: LinkSlot,
    /// Most bytes of output held.
    capacity: u64,
    /// A flush or a direct delivery is running: output that arrives meanwhile (from inside
    /// that delivery) queues behind it. Reactor thread only, like `backlog`: both are plain
    /// flags outside the lock, so a chunk that goes straight through takes the lock once.
    flushing: AtomicBool,
    /// `state` holds pending output or an ending: a copy kept up to date under the lock.
    backlog: AtomicBool,
    /// Buffer, ending and the transformation.
    state: Mutex<FilterState<F>>,
}

/// Mutable part of a [`ByteFilter`].
struct FilterState<F> {
    /// The transformation.
    transform: F,
    /// Output waiting for downstream credit.
    pending: Chunks,
    /// An empty run kept for its allocation, swapped with `pending` by a flush.
    scratch: Chunks,
    /// The upstream ending, passed on once `pending` drains.
    ending: Option<Ending>,
}

/// Transformed output for [`FilterInner::accept`].
enum Output<'a> {
    /// One chunk, from [`ByteConsumer::consume`].
    Chunk(Bytes),
    /// A run, from [`ByteConsumer::consume_chunks`]; emptied by `accept`.
    Run(&'a mut Chunks),
}

/// The consumer side of a [`ByteFilter`].
struct FilterConsumer<F>(Arc<FilterInner<F>>);
/// The producer side of a [`ByteFilter`].
struct FilterProducer<F>(Arc<FilterInner<F>>);

impl<F: FnMut(Bytes) -> Bytes + Send + 'static> ByteFilter<F> {
    /// A filter holding at most `capacity` bytes of output, applying `transform`.
    pub fn new(reactor: &Reactor, capacity: usize, transform: F) -> ByteFilter<F> {
        ByteFilter {
            inner: Arc::new(FilterInner {
                reactor: reactor.clone(),
                upstream: LinkSlot::new(),
                downstream: LinkSlot::new(),
                capacity: capacity as u64,
                flushing: AtomicBool::new(false),
                backlog: AtomicBool::new(false),
                state: Mutex::new(FilterState {
                    transform,
                    pending: Chunks::new(),
                    scratch: Chunks::new(),
                    ending: None,
                }),
            }),
        }
    }

    /// The two sides: attach the consumer to an upstream producer and the producer to a
    /// downstream consumer.
    pub fn io_pair(&self) -> ByteIoPair {
        ByteIoPair::new(
            Arc::new(FilterConsumer(self.inner.clone())),
            Arc::new(FilterProducer(self.inner.clone())),
        )
    }
}

impl<F> FilterInner<F> {
    /// Credit for upstream: what the buffer can still take.
    fn upstream_credit(&self, link: &Link) -> Credit {
        let buffered = self.state.lock().pending.byte_len();
        link.window(self.capacity.saturating_sub(buffered))
    }

    /// Takes transformed output: passes it straight downstream if `direct` (the caller saw
    /// nothing buffered and set `flushing`), queues what does not go on, flushes if that is
    /// due, and returns the credit for upstream. A run is left empty, with its allocation.
    fn accept(&self, upstream: &Link, output: Output<'_>, direct: bool) -> Credit {
        let (mut held, mut run) = match output {
            Output::Chunk(chunk) => (Some(chunk), None),
            Output::Run(run) => (None, Some(run)),
        };
        if direct {
            if let Some(link) = self.downstream.link() {
                // An error or a leftover means the link closed meanwhile: the output waits
                // for the next one.
                let remaining = link.remaining();
                // (A link only closes on the reactor thread, so it stays open until `deliver`.)
                let fits = |chunk: &mut Bytes| chunk.len() as u64 <= remaining && link.is_open();
                if let Some(chunk) = held.take_if(fits) {
                    let _ = link.deliver(chunk);
                }
                if let Some(run) = run.as_deref_mut() {
                    if run.byte_len() <= remaining {
                        let _ = link.deliver_chunks(run);
                    } else {
                        let mut fits = run.split_to(remaining);
                        let _ = link.deliver_chunks(&mut fits);
                        fits.append(run);
                        run.append(&mut fits);
                    }
                }
            }
        }
        let left = held.is_some() || run.as_deref().is_some_and(|run| !run.is_empty());
        if left {
            let mut state = self.state.lock();
            if let Some(chunk) = held {
                state.pending.push(chunk);
            }
            if let Some(run) = run {
                state.pending.append(run);
            }
            self.note_backlog(&state);
        }
        if direct {
            self.flushing.store(false, Ordering::Relaxed);
        }
        if !self.backlog.load(Ordering::Relaxed) {
            return upstream.window(self.capacity);
        }
        self.flush();
        let buffered = self.state.lock().pending.byte_len();
        upstream.window(self.capacity.saturating_sub(buffered))
    }

    /// Sends pending output as downstream credit allows, then the ending if due.
    fn flush(&self) {
        if self.flushing.load(Ordering::Relaxed) || !self.backlog.load(Ordering::Relaxed) {
            return;
        }
        self.flushing.store(true, Ordering::Relaxed);
        let link = self.downstream.link();
        loop {
            let remaining = link.as_ref().map_or(0, |l| l.remaining());
            let mut state = self.state.lock();
            if state.pending.is_empty() || remaining == 0 {
                // Keep the ending until a downstream link exists to carry it: a filter that
                // is ended upstream before anything is attached downstream still passes the
                // end on once something attaches.
                let ending = if state.pending.is_empty() && link.is_some() {
                    state.ending.take()
                } else {
                    None
                };
                self.note_backlog(&state);
                drop(state);
                self.flushing.store(false, Ordering::Relaxed);
                if let (Some(ending), Some(link)) = (ending, &link) {
                    link.end(ending);
                }
                break;
            }
            let queues = &mut *state;
            let mut run = queues
                .pending
                .split_to_reusing(remaining, &mut queues.scratch);
            self.note_backlog(&state);
            drop(state);
            if let Some(link) = &link {
                if link.deliver_chunks(&mut run).is_err() || !run.is_empty() {
                    // Closed meanwhile: keep what it did not take, in front.
                    let mut state = self.state.lock();
                    run.append(&mut state.pending);
                    std::mem::swap(&mut run, &mut state.pending);
                    self.note_backlog(&state);
                    drop(state);
                    self.flushing.store(false, Ordering::Relaxed);
                    break;
                }
            }
            self.state.lock().scratch = run;
        }
    }

    /// Brings `backlog` up to date with `state` (the lock held).
    fn note_backlog(&self, state: &FilterState<F>) {
        let backlog = !state.pending.is_empty() || state.ending.is_some();
        self.backlog.store(backlog, Ordering::Relaxed);
    }

    /// Whether new output may go straight downstream: nothing waits and nobody delivers.
    /// If so, marks a delivery as running, for [`accept`](Self::accept) to clear.
    fn take_direct(&self, state: &FilterState<F>) -> bool {
        let direct = state.pending.is_empty() && !self.flushing.load(Ordering::Relaxed);
        if direct {
            self.flushing.store(true, Ordering::Relaxed);
        }
        direct
    }

    /// Aborts both links and drops the buffer.
    fn abort_all(&self) {
        {
            let mut state = self.state.lock();
            state.pending.clear();
            self.note_backlog(&state);
        }
        self.upstream.mark_ended();
        self.downstream.mark_ended();
        for link in [self.upstream.link(), self.downstream.link()]
            .into_iter()
            .flatten()
        {
            link.abort();
        }
    }
}

impl<F: FnMut(Bytes) -> Bytes + Send + 'static> ByteConsumer for FilterConsumer<F> {
    fn reactor(&self) -> &Reactor {
        &self.0.reactor
    }

    fn consumer_slot(&self) -> &LinkSlot {
        &self.0.upstream
    }

    fn on_attached(&self, link: &Arc<Link>) -> Credit {
        self.0.upstream_credit(link)
    }

    fn consume(&self, link: &Arc<Link>, data: Bytes) -> Credit {
        let (output, direct) = {
            let mut state = self.0.state.lock();
            ((state.transform)(data), self.0.take_direct(&state))
        };
        self.0.accept(link, Output::Chunk(output), direct)
    }

    fn takes_runs(&self) -> bool {
        true
    }

    fn consume_chunks(&self, link: &Arc<Link>, chunks: &mut Chunks) -> Credit {
        let direct = {
            let mut state = self.0.state.lock();
            chunks.map_in_place(&mut state.transform);
            self.0.take_direct(&state)
        };
        // The run goes on in the caller's queue, which keeps its allocation.
        self.0.accept(link, Output::Run(chunks), direct)
    }

    fn on_end(&self, _link: &Arc<Link>, ending: Ending) {
        {
            let mut state = self.0.state.lock();
            state.ending = Some(ending);
            self.0.note_backlog(&state);
        }
        self.0.flush();
    }

    fn on_abort(&self) {
        self.0.abort_all();
    }

    fn on_control(&self, message: &IoControl) -> ControlReply {
        match self.0.downstream.link() {
            Some(link) => link.control_downstream(message),
            None => ControlReply::Unsupported,
        }
    }
}

impl<F: FnMut(Bytes) -> Bytes + Send + 'static> ByteProducer for FilterProducer<F> {
    fn reactor(&self) -> &Reactor {
        &self.0.reactor
    }

    fn producer_slot(&self) -> &LinkSlot {
        &self.0.downstream
    }

    fn on_attached(&self, _link: &Arc<Link>) {}

    fn on_credit(&self, _link: &Arc<Link>) {
        self.0.flush();
        if let Some(up) = self.0.upstream.link() {
            up.grant(self.0.upstream_credit(&up));
        }
    }

    fn on_abort(&self) {
        self.0.abort_all();
    }

    fn on_control(&self, message: &IoControl) -> ControlReply {
        match self.0.upstream.link() {
            Some(link) => link.control_upstream(message),
            None => ControlReply::Unsupported,
        }
    }
}

impl<F> fmt::Debug for ByteFilter<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("ByteFilter")
            .field("capacity", &self.inner.capacity)
            .field("buffered", &state.pending.byte_len())
            .finish()
    }
}
