//! [`ByteFilter`]: a middle element that transforms bytes, with credit passed through.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use weir_reactor::Reactor;

use crate::writer::take_chunk;
use crate::{
    ByteConsumer, ByteIoPair, ByteProducer, ControlReply, Credit, Ending, IoControl, Link, LinkSlot,
};

/// A middle element: bytes from upstream go through a function and on downstream.
///
/// ```text
///   upstream ──▶ [consumer side] ── f(bytes) ──▶ buffer ──▶ [producer side] ──▶ downstream
///            ◀── credit: received + capacity − buffered ◀── credit from downstream
/// ```
///
/// The filter buffers at most `capacity` bytes of output (plus one transformed chunk): it
/// grants upstream only what it can hold, so a slow consumer downstream slows the producer
/// upstream. The end is passed on after the last buffered byte; an abort on either side aborts
/// the other; control messages pass through in both directions.
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
    /// Buffer, flags and the transformation.
    state: Mutex<FilterState<F>>,
}

/// Mutable part of a [`ByteFilter`].
struct FilterState<F> {
    /// The transformation.
    transform: F,
    /// Output waiting for downstream credit.
    pending: VecDeque<Bytes>,
    /// Bytes in `pending`.
    buffered: u64,
    /// The upstream ending, passed on once `pending` drains.
    ending: Option<Ending>,
    /// A flush is running (a re-entrant flush only adds to its work).
    flushing: bool,
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
                state: Mutex::new(FilterState {
                    transform,
                    pending: VecDeque::new(),
                    buffered: 0,
                    ending: None,
                    flushing: false,
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
        let buffered = self.state.lock().buffered;
        link.window(self.capacity.saturating_sub(buffered))
    }

    /// Delivers one chunk downstream without queueing it, if the credit allows (the caller
    /// has set `flushing`); returns the bytes buffered afterwards.
    fn pass(&self, output: Bytes) -> u64 {
        let link = self.downstream.current();
        let held = match &*link {
            Some(link) if output.len() as u64 <= link.remaining() => {
                // An error means the link closed meanwhile; the chunk has nowhere to go.
                let _ = link.deliver(output);
                None
            }
            _ => Some(output),
        };
        let (more, buffered) = {
            let mut state = self.state.lock();
            if let Some(output) = held {
                state.buffered += output.len() as u64;
                state.pending.push_back(output);
            }
            state.flushing = false;
            (
                !state.pending.is_empty() || state.ending.is_some(),
                state.buffered,
            )
        };
        if more {
            self.flush();
            return self.state.lock().buffered;
        }
        buffered
    }

    /// Sends pending output as downstream credit allows, then the ending if due.
    fn flush(&self) {
        {
            let mut state = self.state.lock();
            if state.flushing {
                return;
            }
            state.flushing = true;
        }
        let link = self.downstream.link();
        loop {
            let remaining = link.as_ref().map_or(0, |l| l.remaining());
            let mut state = self.state.lock();
            if state.pending.is_empty() || remaining == 0 {
                state.flushing = false;
                // Keep the ending until a downstream link exists to carry it: a filter that
                // is ended upstream before anything is attached downstream still passes the
                // end on once something attaches.
                let ending = if state.pending.is_empty() && link.is_some() {
                    state.ending.take()
                } else {
                    None
                };
                drop(state);
                if let (Some(ending), Some(link)) = (ending, &link) {
                    link.end(ending);
                }
                break;
            }
            let chunk = take_chunk(&mut state.pending, remaining);
            state.buffered -= chunk.len() as u64;
            drop(state);
            if let Some(link) = &link {
                if link.deliver(chunk).is_err() {
                    self.state.lock().flushing = false;
                    break;
                }
            }
        }
    }

    /// Aborts both links and drops the buffer.
    fn abort_all(&self) {
        {
            let mut state = self.state.lock();
            state.pending.clear();
            state.buffered = 0;
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
            let output = (state.transform)(data);
            // Nothing waiting and nobody delivering: this chunk may go straight through.
            let direct = state.pending.is_empty() && !state.flushing;
            state.flushing |= direct;
            (output, direct)
        };
        let buffered = if direct {
            self.0.pass(output)
        } else {
            let mut state = self.0.state.lock();
            state.buffered += output.len() as u64;
            state.pending.push_back(output);
            drop(state);
            self.0.flush();
            self.0.state.lock().buffered
        };
        link.window(self.0.capacity.saturating_sub(buffered))
    }

    fn on_end(&self, _link: &Arc<Link>, ending: Ending) {
        self.0.state.lock().ending = Some(ending);
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
            .field("buffered", &state.buffered)
            .finish()
    }
}
