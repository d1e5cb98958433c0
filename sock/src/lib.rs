//! TCP and Unix stream sockets for weir: non-blocking sockets as reactor handles, bridged to
//! producer/consumer chains by [`StreamAgent`], with listeners and connectors.
//!
//! It does *not* do TLS (see `weir-tls`, which sits in a chain on top of an agent), datagrams
//! (see `weir-vudp`) or name resolution beyond the system resolver.
//!
//! ```text
//!   Listener ──accept──▶ factory(Accepted) ──▶ StreamAgent ◀──▶ your chain
//!   StreamAgent::connect(address) ────────────▶ StreamAgent ◀──▶ your chain
//!
//!   StreamAgent:  socket ──read ≤ credit──▶ producer ──▶ downstream consumer
//!                 socket ◀──write── buffer ◀── consumer ◀── upstream producer
//! ```
//!
//! Start from [`Listener::bind`] for a server and [`StreamAgent::connect`] for a client; both
//! give a [`StreamAgent`] whose [`io_pair`](StreamAgent::io_pair) you attach to a chain.
//!
//! ```
//! use std::sync::mpsc;
//! use bytes::Bytes;
//! use weir_io::{attach, ByteSink, ByteWriter, Ending, Window};
//! use weir_reactor::Reactor;
//! use weir_sock::{AgentConfig, ConnectOptions, Listener, ListenOptions, StreamAgent};
//!
//! let reactor = Reactor::new()?;
//! let thread = reactor.start()?;
//! // An echo server on an ephemeral port.
//! let r = reactor.clone();
//! let listener = Listener::bind(&reactor, &"127.0.0.1:0".parse()?, ListenOptions::default(),
//!     move |accepted| {
//!         let agent = accepted.into_agent(&r, AgentConfig::default()).unwrap();
//!         let pair = agent.io_pair();
//!         attach(&pair.producer, &pair.consumer).unwrap();
//!     })?;
//! // A client: write a greeting, collect the echo.
//! let client = StreamAgent::connect(&reactor, listener.local_address().clone(),
//!     ConnectOptions::default());
//! let (tx, rx) = mpsc::channel();
//! let sink = ByteSink::new(&reactor, Window::Unlimited, move |data: Bytes| {
//!     tx.send(data).unwrap();
//! });
//! let writer = ByteWriter::new(&reactor, 1024);
//! let pair = client.io_pair();
//! attach(&pair.producer, &sink.consumer())?;
//! attach(&writer.producer(), &pair.consumer)?;
//! writer.write(&b"Knights who say Ni!"[..])?;
//! let mut echoed = Vec::new();
//! while echoed.len() < 19 {
//!     echoed.extend_from_slice(&rx.recv_timeout(std::time::Duration::from_secs(10))?);
//! }
//! assert_eq!(echoed, b"Knights who say Ni!");
//! writer.end_write(Ending::Completed);
//! reactor.stop();
//! thread.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The crate has no Cargo features. Unix only (it uses `MSG_NOSIGNAL` and Unix sockets).
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]
#![forbid(unsafe_code)]

mod connect;
mod listener;
mod socket;
mod stream;

pub use connect::{ConnectError, ConnectOptions};
pub use listener::{Accepted, ListenOptions, Listener};
pub use socket::{stream_socket, tcp_pair, unix_pair, Address, SocketIo, SocketOptions};
pub use stream::{AgentConfig, CloseInfo, Descriptors, StreamAgent, StreamIo};
