//! weir: network I/O built from small elements that pass bytes along a chain, with
//! credit-based backpressure, driven by one dedicated reactor thread.
//!
//! This umbrella crate re-exports the member crates under short names:
//!
//! | module | crate | what |
//! |---|---|---|
//! | [`reactor`] | `weir-reactor` | the reactor thread: readiness, timers, calls from other threads |
//! | [`io`] | `weir-io` | producers, consumers, links with credit, writers, control messages |
//! | [`sock`] | `weir-sock` | TCP and Unix sockets as chain agents, listeners, connectors |
//! | [`pipe`] | `weir-pipe` | OS pipes and child processes as chain agents |
//! | [`tls`] | `weir-tls` | TLS (native-tls) as a chain element over any transport |
//! | [`vudp`] | `weir-vudp` | VUT: a reliable, authenticated byte stream over UDP |
//!
//! Start with the [`io`] crate's documentation for the chain model, and the examples in the
//! repository's `examples/` folder.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub use weir_io as io;
pub use weir_pipe as pipe;
pub use weir_reactor as reactor;
pub use weir_sock as sock;
pub use weir_tls as tls;
pub use weir_vudp as vudp;
