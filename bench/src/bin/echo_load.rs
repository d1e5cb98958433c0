//! A fixed echo load against a server that is already running, for profilers: the same work
//! for every server, so that `strace -c` and callgrind counts of two servers compare.
//!
//! ```text
//! echo_load ADDR ping CONNECTIONS SIZE MESSAGES   # MESSAGES round trips in all, lock-step
//! echo_load ADDR bulk MIB                         # MIB MiB through one connection, 64 KiB writes
//! ```
//!
//! It prints what it did and how long it took; the figures that matter come from the
//! profiler wrapped around the server.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: echo_load ADDR ping CONNECTIONS SIZE MESSAGES | echo_load ADDR bulk MIB";
    let address: SocketAddr = args.first().ok_or(usage)?.parse()?;
    let number = |i: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(args.get(i).ok_or(usage)?.parse()?)
    };
    let begun = Instant::now();
    match args.get(1).map(String::as_str) {
        Some("ping") => {
            let (connections, size, messages) = (number(2)?, number(3)?, number(4)?);
            ping(address, connections, size, messages)?;
            println!(
                "ping: {messages} round trips of {size} B over {connections} connections in {:?}",
                begun.elapsed()
            );
        }
        Some("bulk") => {
            let mib = number(2)?;
            weir_bench::bulk_echo(address, mib << 20)?;
            println!("bulk: {mib} MiB each way in {:?}", begun.elapsed());
        }
        _ => return Err(usage.into()),
    }
    Ok(())
}

/// `messages` round trips in all: every connection sends a message, then each reads its
/// echo and sends the next, in turn, until the count is reached.
fn ping(address: SocketAddr, connections: usize, size: usize, messages: usize) -> io::Result<()> {
    let mut streams = Vec::with_capacity(connections);
    for _ in 0..connections {
        let stream = TcpStream::connect(address)?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    let message = vec![0x5a_u8; size];
    let mut echo = vec![0u8; size];
    let mut sent = 0;
    for stream in &mut streams {
        if sent < messages {
            stream.write_all(&message)?;
            sent += 1;
        }
    }
    let mut received = 0;
    while received < messages {
        for stream in &mut streams {
            if received == sent {
                break;
            }
            stream.read_exact(&mut echo)?;
            received += 1;
            if sent < messages {
                stream.write_all(&message)?;
                sent += 1;
            }
        }
    }
    Ok(())
}
