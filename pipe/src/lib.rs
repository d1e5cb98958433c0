//! OS pipes, the standard streams and child processes for weir: non-blocking pipe ends put
//! under the socket crate's [`StreamAgent`], so that they join chains with the same credit
//! rules as a TCP connection.
//!
//! It does *not* re-implement buffering or flow control (a pipe agent **is** a
//! [`StreamAgent`] over a [`PipeIo`]), talk to a terminal (no line discipline, no pty), pass
//! descriptors or signals other than `SIGKILL` to children, or run on anything but Linux (it
//! uses pidfds, `pipe2` and `O_NONBLOCK` on shared file descriptions).
//!
//! ```text
//!  PipeReader ──read ≤ credit──▶ ┌─────────────┐ ──▶ downstream consumer
//!                                │ StreamAgent │
//!  PipeWriter ◀──write── buffer ◀┤ (weir-sock) │ ◀── upstream producer
//!                                └─────────────┘
//!        PipeIo = (PipeReader, PipeWriter)   from pipe(), PipeIo::stdio(), or a child:
//!
//!  ChildAgent:  upstream ──▶ stdin ──▶ child ──▶ stdout ──▶ exit gate ──▶ downstream
//!                                        └── pidfd: exit ──▶ ChildExited, on_exit, the end
//! ```
//!
//! Start from [`ChildAgent::spawn`] to run a command as a chain element, or from
//! [`PipeIo::new`] / [`PipeIo::stdio`] and [`PipeIo::into_agent`] for pipes you have.
//!
//! ```
//! use std::process::Command;
//! use std::sync::mpsc;
//! use bytes::Bytes;
//! use weir_io::{attach, ByteSink, ByteWriter, Ending, Link, SinkHooks, Window};
//! use weir_pipe::{ChildAgent, ChildOptions};
//! use weir_reactor::Reactor;
//!
//! struct Collect(Vec<u8>, mpsc::Sender<(Vec<u8>, Ending)>);
//! impl SinkHooks for Collect {
//!     fn on_data(&mut self, _link: &std::sync::Arc<Link>, data: Bytes) {
//!         self.0.extend_from_slice(&data);
//!     }
//!     fn on_end(&mut self, ending: Ending) {
//!         self.1.send((std::mem::take(&mut self.0), ending)).unwrap();
//!     }
//! }
//!
//! let reactor = Reactor::new()?;
//! let thread = reactor.start()?;
//! let child = ChildAgent::spawn(&reactor, Command::new("tr").args(["a-z", "A-Z"]),
//!     ChildOptions::default())?;
//! let (tx, rx) = mpsc::channel();
//! let writer = ByteWriter::new(&reactor, 1024);
//! let sink = ByteSink::new(&reactor, Window::Bytes(4096), Collect(Vec::new(), tx));
//! let pair = child.io_pair();
//! attach(&writer.producer(), &pair.consumer)?;
//! attach(&pair.producer, &sink.consumer())?;
//! writer.write(&b"knights who say ni!"[..])?;
//! writer.end_write(Ending::Completed); // closes tr's standard input
//! let (output, ending) = rx.recv_timeout(std::time::Duration::from_secs(10))?;
//! assert_eq!(output, b"KNIGHTS WHO SAY NI!");
//! assert_eq!(ending, Ending::Completed); // output ended and tr exited 0
//! assert!(child.exit_status().is_some_and(|s| s.success()));
//! reactor.stop();
//! thread.join()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # `SIGPIPE`
//!
//! Writing to a pipe whose reader has gone fails with `EPIPE`, which ends the chain: the agent
//! closes its output and aborts the upstream chain. That relies on the process ignoring
//! `SIGPIPE`, which the Rust runtime sets up before `main`; a process that restores the default
//! action would be killed instead. Children get the default action back (the standard library
//! resets it before `exec`), as command-line tools expect.
//!
//! The crate has no Cargo features. Its one `unsafe` block lends a pipe descriptor out as a
//! `BorrowedFd` (module `fd`).
#![deny(missing_docs)]
#![deny(unsafe_code)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

mod child;
mod end;
mod fd;
mod stream;

pub use child::{ChildAgent, ChildExited, ChildOptions, Stderr};
pub use end::{pipe, PipeReader, PipeWriter};
pub use stream::PipeIo;
pub use weir_sock::{AgentConfig, CloseInfo, StreamAgent};
