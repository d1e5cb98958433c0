//! Versile's names and ours (documentation only).
//!
//! weir follows the design of Versile's `versile.reactor` and `versile.reactor.io`. Every
//! item below carries its Versile name as a rustdoc alias, so searching the docs for the old
//! name finds the new one.
//!
//! | Versile | weir |
//! |---|---|
//! | `VFDWaitReactor`, `VReactor`, `IVCoreReactor`, `IVTimeReactor` | [`weir_reactor::Reactor`] |
//! | `reactor.start()` / `run()` / `stop()` | [`Reactor::start`](weir_reactor::Reactor::start) / [`run`](weir_reactor::Reactor::run) / [`stop`](weir_reactor::Reactor::stop) |
//! | `execute`, `schedule`, `call_when_running` | [`Reactor::execute`](weir_reactor::Reactor::execute), [`schedule`](weir_reactor::Reactor::schedule), [`call`](weir_reactor::Reactor::call) |
//! | `VScheduledCall`, `cancel()` | [`weir_reactor::Timer`], [`Timer::cancel`](weir_reactor::Timer::cancel) |
//! | `add_reader`/`add_writer`, `remove_reader`/`remove_writer` | [`Reactor::register`](weir_reactor::Reactor::register), [`set_interest`](weir_reactor::Reactor::set_interest), [`deregister`](weir_reactor::Reactor::deregister) |
//! | `IVByteHandle`, `IVByteHandleIO`, `IVSelectable` | [`weir_reactor::ByteHandle`] |
//! | `do_read` / `do_write` | [`ByteHandle::on_readable`](weir_reactor::ByteHandle::on_readable) / [`on_writable`](weir_reactor::ByteHandle::on_writable) |
//! | `close_io` / `close_input` / `close_output` | [`ByteHandle::on_close`](weir_reactor::ByteHandle::on_close) with a [`Direction`](weir_reactor::Direction) |
//! | `VReactorStopped` | [`ReactorError::Stopped`](weir_reactor::ReactorError::Stopped) |
//! | `IVByteProducer` / `IVByteConsumer` | [`ByteProducer`](crate::ByteProducer) / [`ByteConsumer`](crate::ByteConsumer) |
//! | `can_produce(limit)` | [`Link::grant`](crate::Link::grant) → [`ByteProducer::on_credit`](crate::ByteProducer::on_credit) |
//! | `consume(data)` returning the limit | [`Link::deliver`](crate::Link::deliver) → [`ByteConsumer::consume`](crate::ByteConsumer::consume) returning a [`Credit`](crate::Credit) |
//! | `end_consume(clean)` | [`Link::end`](crate::Link::end) with an [`Ending`](crate::Ending) → [`ByteConsumer::on_end`](crate::ByteConsumer::on_end) |
//! | `abort()` | [`Link::abort`](crate::Link::abort) → `on_abort` on both sides |
//! | `attach` / `detach` | [`attach`](crate::attach) / [`Link::detach`](crate::Link::detach) |
//! | `VIOCompleted` / `VIOLost` (and `VFIO…` reasons) | [`Ending::Completed`](crate::Ending::Completed) / [`Ending::Lost`](crate::Ending::Lost) |
//! | `VIOControl`, `VIOMissingControl` | [`IoControl`](crate::IoControl), [`ControlReply::Unsupported`](crate::ControlReply::Unsupported) |
//! | `authorize`, `can_connect`, `connected`, `req_producer_state`, … | the variants of [`IoControl`](crate::IoControl) |
//! | `VByteWriter` (`write`, `end_write`, `abort_writer`) | [`ByteWriter`](crate::ByteWriter) |
//! | `VByteConsumer` with `_data_received` / `_data_ended` | [`ByteSink`](crate::ByteSink) with [`SinkHooks`](crate::SinkHooks) |
//! | `VByteProducer` with `_produce` | [`ByteSource`](crate::ByteSource) with [`SourceHooks`](crate::SourceHooks) |
//! | `VByteWAgent`, `VByteAgent` | [`ByteWAgent`](crate::ByteWAgent) |
//! | `VByteIOPair` | [`ByteIoPair`](crate::ByteIoPair) |
//! | `VHalfClosePolicy`, `VHalfClose`, `VNoHalfClose` | [`HalfClosePolicy`](crate::HalfClosePolicy) and its constants |
//! | `VPeer`, `VSocketPeer`, `VPipePeer` | [`Peer`](crate::Peer) |
//!
//! # Changed on purpose
//!
//! - A consumer takes **all** it is given: the [`Link`](crate::Link) never offers more than
//!   the credit, instead of Versile's shared buffer the consumer pops from.
//! - A producer can hand on a run of chunks in one call
//!   ([`Link::deliver_chunks`](crate::Link::deliver_chunks) →
//!   [`ByteConsumer::consume_chunks`](crate::ByteConsumer::consume_chunks)); Versile had one
//!   `consume` per buffer. Chunk boundaries are kept; only the per-call costs are shared.
//! - `on_credit` is always queued on the reactor; Versile left deferral to each producer.
//! - Errors from attach come back at once from any thread (the slots are locked), and the
//!   callbacks then run on the reactor thread; Versile's foreign-thread attach only logged
//!   errors.
//! - `Ending` survives end to end (Versile lost the clean flag in several places).
//! - At stop, every registered handle is closed with a "stopped" reason so descriptors are
//!   released; Versile dropped them without a close.
