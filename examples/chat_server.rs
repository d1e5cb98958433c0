//! A line-based chat server: every line a client sends goes to all other clients, prefixed
//! with the sender's address.
//!
//! ```text
//! cargo run --release --example chat_server -- [ADDR]
//! ```
//!
//! `ADDR` is `127.0.0.1:7001` by default (`[::1]:PORT` and `unix:/path` work too). The server
//! prints `listening on ADDR` once it accepts connections. A new client first receives
//! `welcome PEER`, where `PEER` is how the others will see it (e.g. `tcp:127.0.0.1:40000`);
//! then each line `text` it sends reaches every other client as `PEER: text`.
//!
//! ```text
//!  client A ──▶ StreamAgent ──▶ ByteSink (splits lines) ──┬──▶ ByteWriter ──▶ StreamAgent ──▶ B
//!                                                         └──▶ ByteWriter ──▶ StreamAgent ──▶ C
//! ```
//!
//! Each client's writer holds at most 256 KiB. A client that reads so slowly that its writer
//! overflows is disconnected rather than buffered without limit, and a line longer than 64 KiB
//! closes its sender's connection.

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use weir_io::{attach, ByteSink, ByteWriter, Ending, Link, Peer, SinkHooks, Window};
use weir_reactor::Reactor;
use weir_sock::{Accepted, Address, AgentConfig, ListenOptions, Listener};

/// What each client's writer holds at most.
const WRITER_CAPACITY: usize = 256 * 1024;
/// Longest line accepted.
const MAX_LINE: usize = 64 * 1024;

/// The connected clients' writers, by connection number.
type Clients = Arc<Mutex<HashMap<u64, Arc<ByteWriter>>>>;

fn main() -> ExitCode {
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7001".to_owned());
    let address: Address = match arg.parse() {
        Ok(address) => address,
        Err(err) => {
            eprintln!("chat_server: bad address {arg:?}: {err}");
            return ExitCode::from(2);
        }
    };
    match serve(&address) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("chat_server: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Listens on `address` and relays lines until the reactor stops.
fn serve(address: &Address) -> Result<(), Box<dyn std::error::Error>> {
    if let Address::Unix(path) = address {
        // A socket file left by an earlier run would make bind fail.
        let _ = std::fs::remove_file(path);
    }
    let reactor = Reactor::new()?;
    let clients = Clients::default();
    let mut next_id = 0;
    let r = reactor.clone();
    let listener = Listener::bind(
        &reactor,
        address,
        ListenOptions::default(),
        move |accepted| {
            next_id += 1;
            if let Err(err) = join(&r, &clients, next_id, accepted) {
                eprintln!("chat_server: {err}");
            }
        },
    )?;
    println!("listening on {}", listener.local_address());
    std::io::stdout().flush()?;
    reactor.run()?;
    Ok(())
}

/// Sets up the chains of a new client and registers its writer.
fn join(
    reactor: &Reactor,
    clients: &Clients,
    id: u64,
    accepted: Accepted,
) -> Result<(), Box<dyn std::error::Error>> {
    let peer = accepted.peer.clone();
    let agent = accepted.into_agent(reactor, AgentConfig::default())?;
    let pair = agent.io_pair();
    let writer = ByteWriter::new(reactor, WRITER_CAPACITY);
    attach(&writer.producer(), &pair.consumer)?;
    // Fits: the writer is new and empty.
    writer.write(format!("welcome {peer}\n"))?;
    lock(clients).insert(id, writer.clone());
    let hooks = Relay {
        id,
        peer,
        partial: Vec::new(),
        clients: clients.clone(),
        writer,
    };
    let sink = ByteSink::new(reactor, Window::Bytes(16 * 1024), hooks);
    attach(&pair.producer, &sink.consumer())?;
    Ok(())
}

/// Locks the client list; a panic elsewhere cannot leave it inconsistent, so poison is ignored.
fn lock(clients: &Clients) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ByteWriter>>> {
    clients.lock().unwrap_or_else(|poison| poison.into_inner())
}

/// Splits one client's input into lines and sends each to the other clients.
struct Relay {
    /// This client's connection number.
    id: u64,
    /// This client's address, the prefix of its lines.
    peer: Peer,
    /// The start of a line whose end has not arrived.
    partial: Vec<u8>,
    /// Everybody's writers.
    clients: Clients,
    /// This client's writer.
    writer: Arc<ByteWriter>,
}

impl Relay {
    /// Sends one line (without its newline) to every other client.
    fn broadcast(&self, line: &[u8]) {
        let mut message = format!("{}: ", self.peer).into_bytes();
        message.extend_from_slice(line);
        message.push(b'\n');
        let message = Bytes::from(message);
        // Copy the list so that no lock is held while writing into chains.
        let others: Vec<(u64, Arc<ByteWriter>)> = lock(&self.clients)
            .iter()
            .filter(|(id, _)| **id != self.id)
            .map(|(id, writer)| (*id, writer.clone()))
            .collect();
        for (id, writer) in others {
            if writer.write(message.clone()).is_err() {
                // Too slow to keep up (or already leaving): disconnect rather than buffer.
                eprintln!("chat_server: dropping client {id}: it does not read");
                lock(&self.clients).remove(&id);
                writer.abort_writer();
            }
        }
    }
}

impl SinkHooks for Relay {
    fn on_data(&mut self, link: &Arc<Link>, data: Bytes) {
        self.partial.extend_from_slice(&data);
        let mut start = 0;
        while let Some(newline) = self.partial[start..].iter().position(|&b| b == b'\n') {
            let end = start + newline;
            let line = self.partial[start..end]
                .strip_suffix(b"\r")
                .unwrap_or(&self.partial[start..end]);
            self.broadcast(line);
            start = end + 1;
        }
        self.partial.drain(..start);
        if self.partial.len() > MAX_LINE {
            eprintln!("chat_server: client {} sent a line too long", self.id);
            link.abort();
        }
    }

    fn on_end(&mut self, _ending: Ending) {
        lock(&self.clients).remove(&self.id);
        self.writer.end_write(Ending::Completed);
    }
}
