//! An echo server: every byte of every connection goes back to its sender.
//!
//! ```text
//! cargo run --release --example echo_server -- [ADDR]
//! ```
//!
//! `ADDR` is `127.0.0.1:7000` by default; `[::1]:7000` listens on IPv6 and `unix:/path` on a
//! Unix socket (a stale socket file is removed first). The server prints `listening on ADDR`
//! once it accepts connections, then serves until killed.
//!
//! Each connection is one [`StreamAgent`] whose producer (bytes read) is attached to its own
//! consumer (bytes to write). The agent reads only as far as its write buffer has room, so a
//! client that does not read its echo stops the server from reading more of its input: memory
//! stays bounded by the write buffer per connection, and TCP slows the client down. When the
//! client shuts down its sending side, the server writes what it still holds, then closes.
//!
//! Warnings from the library (e.g. a listener pausing after running out of descriptors) are
//! printed on stderr.

use std::io::Write;
use std::process::ExitCode;

use weir_io::attach;
use weir_reactor::Reactor;
use weir_sock::{Address, AgentConfig, ListenOptions, Listener};

fn main() -> ExitCode {
    let _ = tracing::subscriber::set_global_default(log::StderrWarnings);
    let arg = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7000".to_owned());
    let address: Address = match arg.parse() {
        Ok(address) => address,
        Err(err) => {
            eprintln!("echo_server: bad address {arg:?}: {err}");
            return ExitCode::from(2);
        }
    };
    match serve(&address) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("echo_server: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Listens on `address` and echoes until the reactor stops.
fn serve(address: &Address) -> Result<(), Box<dyn std::error::Error>> {
    if let Address::Unix(path) = address {
        // A socket file left by an earlier run would make bind fail.
        let _ = std::fs::remove_file(path);
    }
    let reactor = Reactor::new()?;
    let r = reactor.clone();
    let listener = Listener::bind(
        &reactor,
        address,
        ListenOptions::default(),
        move |accepted| {
            match accepted.into_agent(&r, AgentConfig::default()) {
                Ok(agent) => {
                    let pair = agent.io_pair();
                    // A new agent's two sides are free: attaching them cannot fail.
                    if let Err(err) = attach(&pair.producer, &pair.consumer) {
                        eprintln!("echo_server: attach: {err}");
                    }
                }
                Err(err) => eprintln!("echo_server: {err}"),
            }
        },
    )?;
    // The socket listens already: connections made from now on wait in the backlog.
    println!("listening on {}", listener.local_address());
    std::io::stdout().flush()?;
    reactor.run()?;
    Ok(())
}

/// A minimal `tracing` subscriber that prints warnings and errors on stderr, so that the
/// example needs no logging crate.
mod log {
    use std::fmt::{self, Write as _};

    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Metadata, Subscriber};

    /// Prints events at `WARN` and above, one line each.
    pub(crate) struct StderrWarnings;

    /// Collects an event's fields into one line.
    struct Line(String);

    impl Visit for Line {
        fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
            if field.name() == "message" {
                let _ = write!(self.0, " {value:?}");
            } else {
                let _ = write!(self.0, " {}={value:?}", field.name());
            }
        }
    }

    impl Subscriber for StderrWarnings {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            *metadata.level() <= Level::WARN
        }

        fn new_span(&self, _span: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }

        fn record(&self, _span: &Id, _values: &Record<'_>) {}

        fn record_follows_from(&self, _span: &Id, _follows: &Id) {}

        fn event(&self, event: &Event<'_>) {
            let mut line = Line(format!("{}:", event.metadata().level()));
            event.record(&mut line);
            eprintln!("{}", line.0);
        }

        fn enter(&self, _span: &Id) {}

        fn exit(&self, _span: &Id) {}
    }
}
