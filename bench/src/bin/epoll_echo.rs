//! The plainest epoll echo server, as the ceiling the echo benchmark's servers are held
//! against: one thread, level-triggered epoll, per message one `recv` into a 64 KiB buffer
//! and one `send` of what came, no allocation, no framework. It keeps what a send could not
//! take and stops reading that connection until it has gone (so it never buffers more than
//! one read per connection).
//!
//! `epoll_echo ADDR` prints `listening on ADDR` and serves until killed. In the benchmark:
//! `ECHO_BENCH_PEER=epoll_echo target/release/echo_bench` puts it where tokio's server is.
//! It is a ceiling for the ping-pong rows only: its 64 KiB reads hold back its bulk echo,
//! and it keeps no memory per idle connection beyond the kernel's.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, EventData, EventFlags};

/// The listener's key; connections are keyed by their descriptor.
const LISTENER: u64 = u64::MAX;

/// One connection: the socket and what a send left over.
struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
}

fn main() -> io::Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(&address)?;
    listener.set_nonblocking(true)?;
    println!("listening on {}", listener.local_addr()?);
    let poller = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    epoll::add(
        &poller,
        &listener,
        EventData::new_u64(LISTENER),
        EventFlags::IN,
    )?;
    let mut conns: HashMap<u64, Conn> = HashMap::new();
    let mut events = Vec::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        events.clear();
        epoll::wait(&poller, spare_capacity(&mut events), None)?;
        for event in &events {
            let (key, flags) = (event.data.u64(), event.flags);
            if key == LISTENER {
                while let Ok((stream, _)) = listener.accept() {
                    stream.set_nonblocking(true)?;
                    stream.set_nodelay(true)?;
                    let key = stream.as_raw_fd() as u64;
                    epoll::add(&poller, &stream, EventData::new_u64(key), EventFlags::IN)?;
                    let pending = Vec::new();
                    conns.insert(key, Conn { stream, pending });
                }
                continue;
            }
            let Some(conn) = conns.get_mut(&key) else {
                continue;
            };
            let was_blocked = !conn.pending.is_empty();
            let open = if was_blocked {
                flush(conn, flags)
            } else {
                echo(conn, &mut buf)
            };
            match open {
                Ok(true) => {
                    // Only when the connection changes between reading and waiting to write.
                    let blocked = !conn.pending.is_empty();
                    if blocked != was_blocked {
                        let flags = if blocked {
                            EventFlags::OUT
                        } else {
                            EventFlags::IN
                        };
                        let data = EventData::new_u64(key);
                        epoll::modify(&poller, &conn.stream, data, flags)?;
                    }
                }
                Ok(false) | Err(_) => {
                    if let Some(conn) = conns.remove(&key) {
                        let _ = epoll::delete(&poller, &conn.stream);
                    }
                }
            }
        }
    }
}

/// One read and one send of what it brought; keeps what the send left. False at the end.
fn echo(conn: &mut Conn, buf: &mut [u8]) -> io::Result<bool> {
    let n = match conn.stream.read(buf) {
        Ok(0) => return Ok(false),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
        Err(e) => return Err(e),
    };
    let sent = match conn.stream.write(&buf[..n]) {
        Ok(sent) => sent,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => return Err(e),
    };
    conn.pending.extend_from_slice(&buf[sent..n]);
    Ok(true)
}

/// Sends what is left over once the socket is writable.
fn flush(conn: &mut Conn, flags: EventFlags) -> io::Result<bool> {
    if !flags.intersects(EventFlags::OUT | EventFlags::ERR | EventFlags::HUP) {
        return Ok(true);
    }
    match conn.stream.write(&conn.pending) {
        Ok(sent) => {
            conn.pending.drain(..sent);
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
        Err(e) => Err(e),
    }
}
