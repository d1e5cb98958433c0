//! Two-way packagings: [`ByteIoPair`], [`ByteWAgent`] and [`HalfClosePolicy`].

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use weir_reactor::Reactor;

use crate::{
    attach, AttachError, ByteSink, ByteWriter, ConsumerRef, ControlReply, Ending, IoControl, Link,
    ProducerRef, SinkHooks, Window,
};

/// The consumer and the producer of one two-way element, e.g. a socket agent.
///
/// Versile `VByteIOPair`. [`attach`](Self::attach) wires two pairs in both directions.
#[doc(alias = "VByteIOPair")]
#[derive(Clone)]
pub struct ByteIoPair {
    /// Takes bytes into the element.
    pub consumer: ConsumerRef,
    /// Emits bytes from the element.
    pub producer: ProducerRef,
}

impl ByteIoPair {
    /// A pair of a consumer and a producer.
    pub fn new(consumer: ConsumerRef, producer: ProducerRef) -> ByteIoPair {
        ByteIoPair { consumer, producer }
    }

    /// Attaches `other`'s producer to this consumer and this producer to `other`'s consumer.
    ///
    /// # Errors
    ///
    /// The first [`AttachError`]; the other direction is not attached then.
    pub fn attach(&self, other: &ByteIoPair) -> Result<(), AttachError> {
        attach(&other.producer, &self.consumer)?;
        attach(&self.producer, &other.consumer)
    }
}

impl fmt::Debug for ByteIoPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteIoPair").finish_non_exhaustive()
    }
}

/// What a [`ByteWAgent`] does with what it receives; it answers through its writer.
pub trait WAgentHooks: Send + 'static {
    /// Bytes arrived; `writer` sends bytes the other way.
    fn on_data(&mut self, writer: &Arc<ByteWriter>, data: Bytes);

    /// The incoming stream ended (or was aborted: [`Ending::Lost`]); called once.
    fn on_end(&mut self, writer: &Arc<ByteWriter>, ending: Ending) {
        let _ = ending;
        writer.end_write(Ending::Completed);
    }

    /// A control message from upstream, e.g. [`IoControl::Connected`] (a good moment to
    /// start writing).
    fn on_control(&mut self, writer: &Arc<ByteWriter>, message: &IoControl) -> ControlReply {
        let _ = (writer, message);
        ControlReply::Unsupported
    }
}

/// A two-way endpoint made of hooks: a [`ByteSink`] for what arrives and a [`ByteWriter`] for
/// what it sends.
///
/// Versile `VByteWAgent`. The default `on_end` ends the writer too, so a closed input closes
/// the whole exchange.
///
/// # Examples
///
/// An echo: everything received is written back.
///
/// ```
/// use std::sync::Arc;
/// use bytes::Bytes;
/// use weir_io::{ByteWAgent, ByteWriter, WAgentHooks};
/// use weir_reactor::Reactor;
///
/// struct Echo;
/// impl WAgentHooks for Echo {
///     fn on_data(&mut self, writer: &Arc<ByteWriter>, data: Bytes) {
///         // The sink's window equals the writer's capacity, so this fits.
///         let _ = writer.write(data);
///     }
/// }
/// let reactor = Reactor::new()?;
/// let agent = ByteWAgent::new(&reactor, 64 * 1024, Echo);
/// let _pair = agent.io_pair();
/// # Ok::<(), std::io::Error>(())
/// ```
#[doc(alias = "VByteWAgent")]
#[doc(alias = "VByteAgent")]
pub struct ByteWAgent<H> {
    /// The receiving side.
    sink: Arc<ByteSink<WAgentSink<H>>>,
    /// The sending side.
    writer: Arc<ByteWriter>,
}

/// Adapts [`WAgentHooks`] to [`SinkHooks`].
struct WAgentSink<H> {
    /// The user's hooks.
    hooks: H,
    /// The agent's writer.
    writer: Arc<ByteWriter>,
}

impl<H: WAgentHooks> SinkHooks for WAgentSink<H> {
    fn on_data(&mut self, _link: &Arc<Link>, data: Bytes) {
        self.hooks.on_data(&self.writer, data);
    }

    fn on_end(&mut self, ending: Ending) {
        self.hooks.on_end(&self.writer, ending);
    }

    fn on_control(&mut self, message: &IoControl) -> ControlReply {
        self.hooks.on_control(&self.writer, message)
    }
}

impl<H: WAgentHooks> ByteWAgent<H> {
    /// An agent whose writer holds `capacity` bytes. The sink grants credit only for the
    /// writer's free space, so hooks that write back at most what they receive (an echo, a
    /// transformation that does not grow data) never meet a full writer: a slow reader of
    /// the writer slows the sender of the sink.
    pub fn new(reactor: &Reactor, capacity: usize, hooks: H) -> ByteWAgent<H> {
        let writer = ByteWriter::new(reactor, capacity);
        let sink = ByteSink::new(
            reactor,
            Window::Bytes(capacity as u64),
            WAgentSink {
                hooks,
                writer: writer.clone(),
            },
        );
        let free = Arc::downgrade(&writer);
        sink.set_limit(move || free.upgrade().map_or(0, |w| w.free() as u64));
        let regrant = Arc::downgrade(&sink);
        writer.set_on_drain(move || {
            if let Some(sink) = regrant.upgrade() {
                sink.regrant();
            }
        });
        ByteWAgent { sink, writer }
    }

    /// The writer, to send from outside the hooks.
    pub fn writer(&self) -> &Arc<ByteWriter> {
        &self.writer
    }

    /// The sink, to pause or resume receiving.
    pub fn sink(&self) -> &Arc<ByteSink<impl SinkHooks>> {
        &self.sink
    }

    /// The agent's consumer (the sink) and producer (the writer).
    pub fn io_pair(&self) -> ByteIoPair {
        ByteIoPair::new(self.sink.consumer(), self.writer.producer())
    }
}

impl<H> fmt::Debug for ByteWAgent<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteWAgent")
            .field("writer", &self.writer)
            .finish_non_exhaustive()
    }
}

/// Whether each direction of a two-way transport may close on its own.
///
/// Versile `VHalfClosePolicy` and its presets. With half-close allowed for output, the end of
/// the stream being sent shuts down only the sending direction (TCP `shutdown(SHUT_WR)`) and
/// reading goes on; without it, the whole transport closes.
#[doc(alias = "VHalfClosePolicy")]
#[doc(alias = "IVHalfClose")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HalfClosePolicy {
    /// Input may close while output stays open.
    pub input: bool,
    /// Output may close while input stays open.
    pub output: bool,
}

impl HalfClosePolicy {
    /// Both directions close on their own (Versile `VHalfClose`); the default for sockets.
    #[doc(alias = "VHalfClose")]
    pub const HALF_CLOSE: HalfClosePolicy = HalfClosePolicy {
        input: true,
        output: true,
    };
    /// Closing either direction closes both (Versile `VNoHalfClose`).
    #[doc(alias = "VNoHalfClose")]
    pub const NO_HALF_CLOSE: HalfClosePolicy = HalfClosePolicy {
        input: false,
        output: false,
    };
    /// Only input closes on its own (Versile `VHalfCloseInput`).
    #[doc(alias = "VHalfCloseInput")]
    pub const HALF_CLOSE_INPUT: HalfClosePolicy = HalfClosePolicy {
        input: true,
        output: false,
    };
    /// Only output closes on its own (Versile `VHalfCloseOutput`).
    #[doc(alias = "VHalfCloseOutput")]
    pub const HALF_CLOSE_OUTPUT: HalfClosePolicy = HalfClosePolicy {
        input: false,
        output: true,
    };
}

impl Default for HalfClosePolicy {
    fn default() -> Self {
        HalfClosePolicy::HALF_CLOSE
    }
}
