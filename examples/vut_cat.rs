//! `vut_cat`: netcat over VUT. Standard input goes to the peer, the peer's bytes go to
//! standard output.
//!
//! ```text
//! vut_cat --bind ADDR --peer ADDR --secret HEX --peer-secret HEX [--linger-ms MS]
//! ```
//!
//! Both sides run the same command with the addresses and secrets swapped. End of input on
//! one side ends that direction; the program exits 0 once both directions have ended and the
//! connection closed cleanly (after `--linger-ms`, default 2000, of answering the peer's
//! last retransmissions), and 1 with a message on standard error if it failed.
//!
//! Standard input and output are served by two plain blocking threads: one feeds a
//! `ByteWriter`, the other drains what a `ByteSink` received, with credit bounded by what it
//! has not yet written.

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bytes::Bytes;
use weir::io::{attach, ByteSink, ByteWriter, Ending, Link, SinkHooks, Window, WriteError};
use weir::reactor::Reactor;
use weir::vudp::{CloseInfo, Config, VudpTransport};

/// Bytes read from standard input at a time.
const CHUNK: usize = 64 * 1024;
/// Most bytes received and not yet written to standard output.
const OUTPUT_WINDOW: u64 = 1024 * 1024;

/// Command-line settings.
struct Args {
    bind: SocketAddr,
    peer: SocketAddr,
    secret: Vec<u8>,
    peer_secret: Vec<u8>,
    linger: Duration,
}

/// What the output thread is told.
enum Output {
    Data(Bytes),
    End(Ending),
}

/// Hands what arrives to the output thread and counts what it has not written yet.
struct ToStdout {
    tx: mpsc::Sender<Output>,
    queued: Arc<AtomicU64>,
}

impl SinkHooks for ToStdout {
    fn on_data(&mut self, _link: &Arc<Link>, data: Bytes) {
        self.queued.fetch_add(data.len() as u64, Ordering::AcqRel);
        let _ = self.tx.send(Output::Data(data));
    }

    fn on_end(&mut self, ending: Ending) {
        let _ = self.tx.send(Output::End(ending));
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("vut_cat: {msg}");
            eprintln!(
                "usage: vut_cat --bind ADDR --peer ADDR --secret HEX --peer-secret HEX \
                 [--linger-ms MS]"
            );
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("vut_cat: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let reactor = Reactor::new().map_err(|e| format!("reactor: {e}"))?;
    let thread = reactor.start().map_err(|e| format!("reactor: {e}"))?;
    let socket = UdpSocket::bind(args.bind).map_err(|e| format!("bind {}: {e}", args.bind))?;
    let mut config = Config::default();
    config.close_linger = args.linger;
    let transport = VudpTransport::new(
        &reactor,
        socket,
        args.peer,
        &args.secret,
        &args.peer_secret,
        config,
    )
    .map_err(|e| format!("transport: {e}"))?;
    let (closed_tx, closed_rx) = mpsc::channel::<CloseInfo>();
    transport.set_close_callback(move |info| {
        let _ = closed_tx.send(info);
    });

    // Standard output: a sink whose credit is capped by what the output thread has not
    // written yet.
    let (out_tx, out_rx) = mpsc::channel();
    let queued = Arc::new(AtomicU64::new(0));
    let sink = ByteSink::new(
        &reactor,
        Window::Bytes(OUTPUT_WINDOW),
        ToStdout {
            tx: out_tx,
            queued: queued.clone(),
        },
    );
    let limit = queued.clone();
    sink.set_limit(move || OUTPUT_WINDOW.saturating_sub(limit.load(Ordering::Acquire)));
    let regrant = sink.clone();
    let output = std::thread::spawn(move || -> Result<(), String> {
        let mut stdout = std::io::stdout().lock();
        loop {
            match out_rx.recv() {
                Ok(Output::Data(data)) => {
                    stdout
                        .write_all(&data)
                        .map_err(|e| format!("standard output: {e}"))?;
                    queued.fetch_sub(data.len() as u64, Ordering::AcqRel);
                    regrant.regrant();
                }
                Ok(Output::End(Ending::Completed)) => {
                    return stdout.flush().map_err(|e| format!("standard output: {e}"));
                }
                Ok(Output::End(Ending::Lost)) | Err(_) => {
                    let _ = stdout.flush();
                    return Err("the peer's stream broke off".into());
                }
            }
        }
    });

    // Standard input: a writer fed by a blocking thread, which waits for room when full.
    let writer = ByteWriter::new(&reactor, 4 * CHUNK);
    let (room_tx, room_rx) = mpsc::channel();
    writer.set_on_room(move || {
        let _ = room_tx.send(());
    });
    let pair = transport.io_pair();
    attach(&writer.producer(), &pair.consumer).map_err(|e| format!("attach: {e}"))?;
    attach(&pair.producer, &sink.consumer()).map_err(|e| format!("attach: {e}"))?;
    let input_writer = writer.clone();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0; CHUNK];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("vut_cat: standard input: {e}");
                    input_writer.end_write(Ending::Lost);
                    return;
                }
            };
            let chunk = Bytes::copy_from_slice(&buf[..n]);
            loop {
                match input_writer.write(chunk.clone()) {
                    Ok(()) => break,
                    Err(WriteError::Full { .. }) => {
                        // The timeout only guards against a wake-up that raced the failed
                        // write; the callback normally ends the wait.
                        let _ = room_rx.recv_timeout(Duration::from_millis(100));
                    }
                    Err(_) => return,
                }
            }
        }
        input_writer.end_write(Ending::Completed);
    });

    let info = closed_rx
        .recv()
        .map_err(|_| "the reactor stopped".to_string())?;
    let output = if info.error.is_none() {
        // Every byte before the peer's FIN is in the core; wait until it is written out.
        output
            .join()
            .unwrap_or_else(|_| Err("output thread panicked".into()))
    } else {
        Ok(())
    };
    reactor.stop();
    let _ = thread.join();
    if let Some(err) = info.error {
        return Err(format!("connection failed: {err}"));
    }
    output
}

fn parse_args() -> Result<Args, String> {
    let mut bind = None;
    let mut peer = None;
    let mut secret = None;
    let mut peer_secret = None;
    let mut linger = Duration::from_millis(2000);
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--bind" => bind = Some(parse_addr(&value()?)?),
            "--peer" => peer = Some(parse_addr(&value()?)?),
            "--secret" => secret = Some(parse_hex(&value()?)?),
            "--peer-secret" => peer_secret = Some(parse_hex(&value()?)?),
            "--linger-ms" => {
                let ms = value()?.parse().map_err(|e| format!("--linger-ms: {e}"))?;
                linger = Duration::from_millis(ms);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(Args {
        bind: bind.ok_or("--bind is required")?,
        peer: peer.ok_or("--peer is required")?,
        secret: secret.ok_or("--secret is required")?,
        peer_secret: peer_secret.ok_or("--peer-secret is required")?,
        linger,
    })
}

fn parse_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|e| format!("address {s}: {e}"))
}

fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    if s.len() % 2 != 0 || s.is_empty() {
        return Err(format!(
            "secret {s:?}: expected a non-empty even number of hex digits"
        ));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| format!("secret {s:?}: {e}")))
        .collect()
}
