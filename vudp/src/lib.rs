//! VUT, a reliable, ordered, authenticated byte stream over UDP, as a sans-IO protocol core.
//!
//! This crate replaces Versile's `VUDPTransport`. Two peers that already know each other's
//! address and a pair of secrets (typically handed out by a relay after NAT punch-through)
//! get one byte stream in each direction, with flow control, congestion control,
//! half-close and an explicit reset. The wire format, `VUT/1`, is specified in
//! `PROTOCOL.md` next to this crate's `Cargo.toml`; it is deliberately not compatible with
//! Versile's.
//!
//! # What it does not do
//!
//! * **No I/O in the core.** [`Connection`] owns no socket, reads no clock, spawns no thread
//!   and sets no timer. The bridge [`VudpTransport`] moves datagrams, time and bytes in and
//!   out on a weir reactor, and exposes the stream as a producer/consumer pair.
//! * **No confidentiality.** Every packet is authenticated (HMAC-SHA256), but payload
//!   travels in clear: run TLS or another secure channel on top.
//! * No relay negotiation, no address discovery, no NAT rebinding or migration, no
//!   multiplexing of several connections on one socket, no path-MTU discovery.
//!
//! # Data flow
//!
//! ```text
//!            application / bridge                         bridge (UDP socket, timer)
//!   write(&[u8]) ──► send buffer ──► segments ──► poll_transmit(now, buf) ──► send_to
//!   finish(), abort()          (window, cwnd, RTO)      ▲
//!                                                       │ acks, SACK, window
//!   read(max) ◄── readable ◄── reassembly ◄── handle_datagram(now, from, bytes) ◄── recv_from
//!                                                    handle_timeout(now) ◄── timer
//!   poll_event() ──► Connected, ReadableData, WritableAgain, PeerFinished, Closed, Failed
//!   poll_timeout() ──► re-arm the one timer
//! ```
//!
//! # Where to start
//!
//! [`VudpTransport`] runs a connection on a UDP socket for a reactor chain.
//! [`Connection`] is the state machine; its documentation gives the order of calls.
//! [`Config`] holds the settings. [`sim`] runs two connections on a simulated network with
//! loss, reordering and a virtual clock, for tests and benches. [`packet`] is the wire codec.
//!
//! # Example
//!
//! A 100 kB transfer each way over a simulated link that loses 5% of datagrams:
//!
//! ```
//! use weir_vudp::sim::{LinkConfig, Sim};
//!
//! let mut link = LinkConfig::default();
//! link.loss = 0.05;
//! let mut sim = Sim::new(42, link);
//! sim.client.send(vec![1; 100_000], true);
//! sim.server.send(vec![2; 100_000], true);
//! sim.run_until(|s| s.client.is_closed() && s.server.is_closed()).unwrap();
//! assert_eq!(sim.server.received, vec![1; 100_000]);
//! assert_eq!(sim.client.received, vec![2; 100_000]);
//! println!("{:?}", sim.client.conn.stats());
//! ```
//!
//! A bridge's event loop, in outline (see [`Connection`] for a runnable version):
//!
//! ```text
//! on readable:  while let Ok((n, from)) = socket.recv_from(&mut rx) { conn.handle_datagram(now, from, &rx[..n]) }
//! on timer:     conn.handle_timeout(now)
//! then always:  while let Some(t) = conn.poll_transmit(now, &mut tx) { socket.send_to(&tx, t.destination) }
//!               timer.rearm(conn.poll_timeout())
//!               while let Some(event) = conn.poll_event() { ... }
//! ```
//!
//! # Cargo features
//!
//! None. The [`sim`] and [`fuzzing`] modules are always built; they are small and have no
//! dependencies.
//!
//! # Versile names
//!
//! | Versile | Ours |
//! |---|---|
//! | `VUDPTransport` | [`Connection`] (the core) and the reactor bridge [`VudpTransport`] |
//! | `FLAG_CLOSE` / `FLAG_ACK_CLOSE` | FIN + its acknowledgement, [`Connection::finish`], [`Event::Closed`] |
//! | `FLAG_FAIL` | RESET packet, [`Connection::abort`], [`ResetCode`] |
//! | `_SIM_LOSS_RATE` | [`sim::LinkConfig::loss`] |
//! | `connected(peer)` | [`Event::Connected`] |
//! | `end_consume(True)` downstream | [`Event::PeerFinished`] |
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

mod batch;
mod config;
mod connection;
mod crypto;
mod error;
pub mod fuzzing;
pub mod packet;
mod recovery;
pub mod sim;
mod stats;
mod transport;
mod unsent;

pub use batch::IoStats;
pub use config::{Config, ConfigError, CongestionControl};
pub use connection::{Connection, Event, Transmit};
pub use error::{Error, ResetCode, Violation};
pub use stats::{DropCounts, Stats};
pub use transport::{CloseInfo, OpenError, TransportError, VudpTransport};
