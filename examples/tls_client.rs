//! A TLS client: standard input goes to the server, the server's bytes go to standard output.
//!
//! ```text
//! cargo run --example tls_client -- localhost:8443 --ca ca.pem [--cert client.pem --key client.key]
//! ```
//!
//! The host name is sent as SNI and checked against the server's certificate, which must lead
//! to the system's trusted roots or to the `--ca` file. With `--cert` and `--key` (a PEM
//! certificate chain and its private key) the client presents that certificate to a server
//! that asks for one. At the end of standard input the client
//! sends close_notify; it exits 0 once the server has closed cleanly, and 1 with the reason
//! (certificate rejected, truncated, connection refused, ...) otherwise.

use std::io::{Read, Write};
use std::sync::mpsc;
use std::sync::Arc;

use bytes::Bytes;
use weir::io::{ByteIoPair, ByteSink, ByteWriter, Ending, Link, SinkHooks, Window, WriteError};
use weir::reactor::Reactor;
use weir::sock::ConnectOptions;
use weir::tls::{net, TlsClientConfig, TlsIdentity};

/// Copies the server's bytes to standard output and reports the end.
struct Stdout {
    out: std::io::Stdout,
    ended: mpsc::Sender<Ending>,
}

impl SinkHooks for Stdout {
    fn on_data(&mut self, _link: &Arc<Link>, data: Bytes) {
        let _ = self.out.write_all(&data);
        let _ = self.out.flush();
    }

    fn on_end(&mut self, ending: Ending) {
        let _ = self.ended.send(ending);
    }
}

/// The command line.
struct Arguments {
    /// `HOST:PORT`.
    target: String,
    /// `--ca`: a CA certificate to trust.
    ca: Option<String>,
    /// `--cert`: the client's certificate chain.
    cert: Option<String>,
    /// `--key`: its private key.
    key: Option<String>,
}

impl Arguments {
    /// The arguments, or `None` for a command line that does not fit the usage.
    fn parse(mut args: impl Iterator<Item = String>) -> Option<Arguments> {
        let mut parsed = Arguments {
            target: args.next()?,
            ca: None,
            cert: None,
            key: None,
        };
        while let Some(flag) = args.next() {
            let slot = match flag.as_str() {
                "--ca" => &mut parsed.ca,
                "--cert" => &mut parsed.cert,
                "--key" => &mut parsed.key,
                _ => return None,
            };
            *slot = Some(args.next()?);
        }
        // A certificate without its key, or a key alone, is a mistake.
        (parsed.cert.is_some() == parsed.key.is_some()).then_some(parsed)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let Some(Arguments {
        target,
        ca,
        cert,
        key,
    }) = Arguments::parse(std::env::args().skip(1))
    else {
        eprintln!("usage: tls_client HOST:PORT [--ca CA.pem] [--cert CERT.pem --key KEY.pem]");
        std::process::exit(2);
    };
    let (host, port) = target.rsplit_once(':').ok_or("expected HOST:PORT")?;
    let port: u16 = port.parse()?;
    let mut builder = TlsClientConfig::builder();
    if let Some(ca) = ca {
        builder = builder.with_root_certificate_pem(&std::fs::read(ca)?);
    }
    if let (Some(cert), Some(key)) = (cert, key) {
        builder = builder.with_client_identity(TlsIdentity::from_pem_files(cert, key)?);
    }
    let config = builder.build()?;

    let reactor = Reactor::new()?;
    let thread = reactor.start()?;
    let connection = net::connect_host(&reactor, host, port, &config, ConnectOptions::default())?;
    let (ended_tx, ended) = mpsc::channel();
    let sink = ByteSink::new(
        &reactor,
        Window::Bytes(64 * 1024),
        Stdout {
            out: std::io::stdout(),
            ended: ended_tx,
        },
    );
    let writer = ByteWriter::new(&reactor, 64 * 1024);
    let (room_tx, room) = mpsc::channel();
    writer.set_on_room(move || {
        let _ = room_tx.send(());
    });
    connection
        .plain
        .attach(&ByteIoPair::new(sink.consumer(), writer.producer()))?;

    // Standard input on a thread of its own: blocking reads never touch the reactor.
    let stdin_writer = writer.clone();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0; 16 * 1024];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let chunk = Bytes::copy_from_slice(&buf[..n]);
            loop {
                match stdin_writer.write(chunk.clone()) {
                    Ok(()) => break,
                    // Wait until the writer has room again (the server reads slowly).
                    Err(WriteError::Full { .. }) => {
                        if room.recv().is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
        }
        stdin_writer.end_write(Ending::Completed);
    });

    let ending = ended.recv()?;
    reactor.stop();
    let _ = thread.join();
    match ending {
        Ending::Completed => Ok(()),
        Ending::Lost => {
            let handshake_done = connection.tls.is_handshake_done();
            let reason = match (connection.tls.error(), connection.agent.error()) {
                // The socket never carried a handshake: its error is the reason.
                (_, Some(error)) if !handshake_done => error.to_string(),
                (Some(error), _) => error.to_string(),
                (None, _) if connection.tls.is_truncated() => {
                    "connection closed without close_notify (truncated)".to_string()
                }
                (None, Some(error)) => error.to_string(),
                (None, None) => "connection lost".to_string(),
            };
            eprintln!("tls_client: {reason}");
            std::process::exit(1);
        }
    }
}
