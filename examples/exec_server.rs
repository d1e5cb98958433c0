//! An inetd-like server: each connection gets its own child process, with the connection's
//! bytes on the child's standard input and the child's standard output sent back.
//!
//! ```text
//! cargo run --release --example exec_server -- [ADDR] -- COMMAND ARGS…
//! cargo run --release --example exec_server -- 127.0.0.1:7000 -- tr a-z A-Z
//! ```
//!
//! `ADDR` is `127.0.0.1:7000` by default (`unix:/path` for a Unix socket). The server prints
//! `listening on ADDR` once it accepts connections, then serves until killed.
//!
//! ```text
//!   client ──TCP──▶ StreamAgent ──▶ ChildAgent ──stdin──▶ COMMAND
//!   client ◀─TCP── StreamAgent ◀── ChildAgent ◀─stdout── COMMAND
//! ```
//!
//! Both agents keep the socket rules: the server reads from the client only as far as the
//! child takes its input, and from the child only as far as the client takes its output, so
//! memory stays bounded per connection. When the client shuts down its sending side, the
//! child's standard input closes; when the child's output has ended and the child has exited,
//! the server writes what it still holds and closes the connection. Exit statuses are printed
//! on stderr. The child is killed if the connection closes before it has exited.

use std::io::Write;
use std::process::{Command, ExitCode};

use weir_io::attach;
use weir_pipe::{ChildAgent, ChildOptions};
use weir_reactor::Reactor;
use weir_sock::{Address, AgentConfig, ListenOptions, Listener};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(split) = args.iter().position(|a| a == "--") else {
        eprintln!("usage: exec_server [ADDR] -- COMMAND ARGS…");
        return ExitCode::from(2);
    };
    let (before, command) = (&args[..split], &args[split + 1..]);
    if command.is_empty() || before.len() > 1 {
        eprintln!("usage: exec_server [ADDR] -- COMMAND ARGS…");
        return ExitCode::from(2);
    }
    let arg = before.first().map_or("127.0.0.1:7000", String::as_str);
    let address: Address = match arg.parse() {
        Ok(address) => address,
        Err(err) => {
            eprintln!("exec_server: bad address {arg:?}: {err}");
            return ExitCode::from(2);
        }
    };
    match serve(&address, command.to_vec()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("exec_server: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Listens on `address` and serves each connection with its own `command` until the
/// reactor stops.
fn serve(address: &Address, command: Vec<String>) -> Result<(), Box<dyn std::error::Error>> {
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
            let peer = accepted.peer.clone();
            let socket = match accepted.into_agent(&r, AgentConfig::default()) {
                Ok(agent) => agent,
                Err(err) => return eprintln!("exec_server: {err}"),
            };
            let mut cmd = Command::new(&command[0]);
            cmd.args(&command[1..]);
            let child = match ChildAgent::spawn(&r, &mut cmd, ChildOptions::default()) {
                Ok(child) => child,
                Err(err) => {
                    eprintln!("exec_server: cannot run {:?}: {err}", command[0]);
                    socket.close(weir_io::Ending::Lost);
                    return;
                }
            };
            let pid = child.id();
            child.on_exit(move |status| eprintln!("exec_server: {peer}: child {pid}: {status}"));
            // The client went away (both directions closed): kill a child that is still
            // running. Killing one that has exited is harmless.
            let killer = child.clone();
            socket.set_close_callback(move |_| {
                let _ = killer.kill();
            });
            let (s, c) = (socket.io_pair(), child.io_pair());
            // Fresh agents: their sides are free, attaching cannot fail.
            for result in [
                attach(&s.producer, &c.consumer),
                attach(&c.producer, &s.consumer),
            ] {
                if let Err(err) = result {
                    eprintln!("exec_server: attach: {err}");
                }
            }
        },
    )?;
    // The socket listens already: connections made from now on wait in the backlog.
    println!("listening on {}", listener.local_address());
    std::io::stdout().flush()?;
    reactor.run()?;
    Ok(())
}
