//! Byte chains for weir: producers and consumers joined by links that carry bytes under
//! cumulative credit, with control messages and half-close policies.
//!
//! It does *not* touch descriptors or know about sockets, pipes or TLS: transports built on
//! it live in `weir-sock`, `weir-pipe`, `weir-tls` and `weir-vudp`. Everything runs on one
//! [`Reactor`](weir_reactor::Reactor) thread.
//!
//! ```text
//!             deliver(bytes) ≤ credit                deliver(bytes) ≤ credit
//!  producer ─────────────────────────▶ element ─────────────────────────▶ consumer
//!  (ByteWriter,  ◀── grant(credit) ───  (ByteFilter, ◀── grant(credit) ──  (ByteSink,
//!   socket…)        end / abort ─────▶   TLS…)         end / abort ────▶   socket…)
//!                   ◀── control ─────▶                 ◀── control ────▶
//! ```
//!
//! The types to start from: [`ByteWriter`] (write bytes from any thread into a chain),
//! [`ByteSink`] (receive bytes through a hook), [`ByteWAgent`] (a two-way endpoint), and
//! [`attach`] to join a producer to a consumer. To write an element of your own, implement
//! [`ByteProducer`] and/or [`ByteConsumer`] around a [`LinkSlot`]; the [`Link`] enforces the
//! credit contract for you.
//!
//! # The credit contract
//!
//! - A consumer grants a **cumulative** byte limit ([`Credit`]) counted from attach, or
//!   unlimited. A producer never delivers past it: [`Link::deliver`] refuses such data.
//! - A smaller limit never withdraws credit.
//! - [`ByteConsumer::consume`] returns the consumer's new cumulative limit. A run of chunks
//!   ([`Chunks`]) can go in one call ([`Link::deliver_chunks`] →
//!   [`ByteConsumer::consume_chunks`]) under the same rules, for the run's total length.
//! - A producer told it may produce ([`ByteProducer::on_credit`]) is called from the reactor's
//!   queue, never from inside its consumer, so it can deliver at once without re-entering.
//! - The end of data ([`Ending::Completed`] or [`Ending::Lost`]) reaches the consumer exactly
//!   once, after every byte delivered before it. An abort on a link reaches both its sides;
//!   elements pass it on, so it reaches both ends of a one-way chain. Repeated ends and aborts
//!   do nothing.
//!
//! # Example
//!
//! ```
//! use std::sync::mpsc;
//! use bytes::Bytes;
//! use weir_io::{attach, ByteSink, ByteWriter, Ending, SinkHooks, Window, Link};
//! use weir_reactor::Reactor;
//!
//! struct Collect(Vec<u8>, mpsc::Sender<Vec<u8>>);
//! impl SinkHooks for Collect {
//!     fn on_data(&mut self, _link: &std::sync::Arc<Link>, data: Bytes) {
//!         self.0.extend_from_slice(&data);
//!     }
//!     fn on_end(&mut self, ending: Ending) {
//!         assert_eq!(ending, Ending::Completed);
//!         self.1.send(std::mem::take(&mut self.0)).unwrap();
//!     }
//! }
//!
//! let reactor = Reactor::new()?;
//! let thread = reactor.start()?;
//! let (tx, rx) = mpsc::channel();
//! let writer = ByteWriter::new(&reactor, 1024);
//! let sink = ByteSink::new(&reactor, Window::Bytes(4), Collect(Vec::new(), tx));
//! attach(&writer.producer(), &sink.consumer())?;
//! writer.write(&b"Knights who say Ni!"[..])?;
//! writer.end_write(Ending::Completed);
//! assert_eq!(rx.recv()?, b"Knights who say Ni!");
//! reactor.stop();
//! thread.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The crate has no Cargo features. [`versile`] maps Versile's names to ours.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

mod chunks;
mod control;
mod credit;
mod filter;
mod link;
mod pair;
mod sink;
pub mod spare;
pub mod versile;
mod writer;

pub use chunks::Chunks;
pub use control::{ControlReply, Credentials, IoControl, Peer};
pub use credit::{Credit, Ending};
pub use filter::ByteFilter;
pub use link::{
    attach, AttachError, ByteConsumer, ByteProducer, ConsumerRef, DeliverError, Link, LinkSlot,
    ProducerRef,
};
pub use pair::{ByteIoPair, ByteWAgent, HalfClosePolicy, WAgentHooks};
pub use sink::{ByteSink, ByteSource, Produce, SinkHooks, SourceHooks, Window};
pub use writer::{ByteWriter, WriteError};
