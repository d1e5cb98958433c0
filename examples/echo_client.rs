//! An echo client: standard input goes to the server, what the server sends goes to standard
//! output.
//!
//! ```text
//! cargo run --release --example echo_client -- [ADDR]
//! ```
//!
//! `ADDR` is `127.0.0.1:7000` by default; it may be `[::1]:7000`, `unix:/path`, or a host name
//! with a port (`localhost:7000`). At the end of standard input the client shuts down its
//! sending side and keeps reading; it exits once the server has closed its side too, with
//! status 0 if that end was clean.
//!
//! ```text
//!  stdin thread ──write──▶ ByteWriter ──▶ StreamAgent ──▶ server
//!  stdout ◀──on_data── ByteSink ◀──────── StreamAgent ◀── server
//! ```
//!
//! The writer holds at most 64 KiB: when it is full the stdin thread waits for room, so a
//! server that does not read slows the client down instead of filling its memory.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::{mpsc, Arc};

use bytes::Bytes;
use weir_io::{attach, ByteSink, ByteWriter, Ending, Link, SinkHooks, Window, WriteError};
use weir_reactor::Reactor;
use weir_sock::{Address, ConnectOptions, StreamAgent};

/// Capacity of the writer fed by standard input, and the window of the stdout sink.
const BUFFER: usize = 64 * 1024;

fn main() -> ExitCode {
    let target = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".to_owned());
    match run(&target) {
        Ok(Ending::Completed) => ExitCode::SUCCESS,
        Ok(Ending::Lost) => {
            eprintln!("echo_client: the connection was lost");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("echo_client: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Connects to `target`, pumps both directions, and returns how the server's side ended.
fn run(target: &str) -> Result<Ending, Box<dyn std::error::Error>> {
    let reactor = Reactor::new()?;
    let thread = reactor.start()?;
    let options = ConnectOptions::default().on_connect(|outcome| {
        if let Err(err) = outcome {
            let cause = std::error::Error::source(&err).map_or(String::new(), |s| format!(": {s}"));
            eprintln!("echo_client: {err}{cause}");
        }
    });
    let agent = match target.parse::<Address>() {
        Ok(address) => StreamAgent::connect(&reactor, address, options),
        Err(_) => {
            let (host, port) = target
                .rsplit_once(':')
                .ok_or("expected ADDR, unix:PATH or HOST:PORT")?;
            StreamAgent::connect_host(&reactor, host, port.parse()?, options)
        }
    };

    let (ended_tx, ended_rx) = mpsc::channel();
    let sink = ByteSink::new(
        &reactor,
        Window::Bytes(BUFFER as u64),
        Stdout { ended: ended_tx },
    );
    let writer = ByteWriter::new(&reactor, BUFFER);
    let (room_tx, room_rx) = mpsc::channel();
    writer.set_on_room(move || {
        let _ = room_tx.send(());
    });
    let pair = agent.io_pair();
    attach(&pair.producer, &sink.consumer())?;
    attach(&writer.producer(), &pair.consumer)?;

    let stdin_writer = writer.clone();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || pump_stdin(&stdin_writer, &room_rx))?;

    // The sink always ends, also when the connect fails (its ending is then `Lost`).
    let ending = ended_rx.recv()?;
    reactor.stop();
    thread.join()?;
    Ok(ending)
}

/// Copies standard input into `writer`, waiting for room when it is full; ends the writer at
/// end of input (or aborts it on a read error).
fn pump_stdin(writer: &ByteWriter, room: &mpsc::Receiver<()>) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0; BUFFER / 4];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => {
                eprintln!("echo_client: stdin: {err}");
                writer.abort_writer();
                return;
            }
        };
        let chunk = Bytes::copy_from_slice(&buf[..n]);
        loop {
            match writer.write(chunk.clone()) {
                Ok(()) => break,
                Err(WriteError::Full { .. }) => {
                    // Woken when half the buffer is free; a stale wake-up just retries.
                    if room.recv().is_err() {
                        return;
                    }
                }
                Err(_) => return, // The connection is gone.
            }
        }
    }
    writer.end_write(Ending::Completed);
}

/// Writes what the server sends to standard output and reports the end.
struct Stdout {
    /// Told how the server's side ended.
    ended: mpsc::Sender<Ending>,
}

impl SinkHooks for Stdout {
    fn on_data(&mut self, link: &Arc<Link>, data: Bytes) {
        // A blocking write on the reactor thread: fine for a client with one connection, and
        // a slow stdout then slows the server down through credit.
        let mut stdout = std::io::stdout().lock();
        if stdout
            .write_all(&data)
            .and_then(|()| stdout.flush())
            .is_err()
        {
            link.abort();
        }
    }

    fn on_end(&mut self, ending: Ending) {
        let _ = self.ended.send(ending);
    }
}
