//! Echo benchmark: weir's echo server against a tokio echo server (current-thread runtime),
//! measured in the same run with the same load generator.
//!
//! ```text
//! cargo build --release -p weir-bench --bins
//! target/release/echo_bench [--quick]
//! ```
//!
//! Each server runs as its own process pinned to CPU 0 (`taskset`, where it works); the load
//! generator runs in this process, pinned to CPU 1, on one thread with level-triggered epoll
//! (through rustix: one `epoll_wait` per turn, one read and one write per message, so that it
//! costs no more per message than the servers do). Rows:
//!
//! - ping-pong with 1, 10, 50 and 200 connections at 64 B and 4 KiB: each connection sends
//!   a message and waits for all of it to come back; messages/s, p50/p99 round-trip latency,
//!   and the server's CPU time per message (from `/proc/PID/task/*/schedstat`). Each row is
//!   nine rounds per server (`ECHO_BENCH_ROUNDS`), alternating which goes first; the table
//!   shows the medians of each figure, and as ratio the median of the rounds' own ratios
//!   (each round pairs two runs next to each other in time, so a burst of load from another
//!   tenant of the machine spoils one pair instead of tilting the row);
//! - bulk echo with one connection (a writer thread and a reader thread, 64 KiB writes),
//!   medians of the alternating rounds, ratio as above;
//! - short connections, one after another, each sending 64 B, half-closing and reading the
//!   echo to the server's close: connections/s and the server's CPU time per connection,
//!   alternating rounds, ratios as above;
//! - memory per idle connection with 10 000 idle connections (server `VmRSS` growth).
//!
//! `ECHO_BENCH_PEER=epoll_echo` puts the plainest epoll echo server (`src/bin/epoll_echo.rs`)
//! in tokio's place: the ceiling both are held against.
//!
//! It prints a table with weir/tokio ratios (for latency and CPU and memory, lower is better,
//! so the ratio printed is tokio/weir: above 1.0 means weir is ahead on every row).
#![deny(unsafe_code)]

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use rustix::buffer::spare_capacity;
use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::Timespec;
use weir_bench::{alternate_servers, median, paired_ratio, pin_self, taskset_works, Server};

/// Result of one ping-pong run.
struct PingPong {
    /// Round trips per second.
    rate: f64,
    /// Median round trip.
    p50: Duration,
    /// 99th percentile round trip.
    p99: Duration,
    /// Server CPU time per round trip.
    cpu_per_msg: Duration,
    /// Round trips completed.
    messages: u32,
    /// Server CPU time used.
    cpu: Duration,
}

/// Rounds per row and server: nine, or `ECHO_BENCH_ROUNDS`.
fn round_count() -> usize {
    std::env::var("ECHO_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(9)
}

impl PingPong {
    /// The median of each figure over `rounds`; CPU per message from the totals.
    fn median(rounds: &[PingPong]) -> PingPong {
        fn mid<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
            v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            v[v.len() / 2]
        }
        PingPong {
            rate: mid(rounds.iter().map(|r| r.rate).collect()),
            p50: mid(rounds.iter().map(|r| r.p50).collect()),
            p99: mid(rounds.iter().map(|r| r.p99).collect()),
            cpu_per_msg: rounds.iter().map(|r| r.cpu).sum::<Duration>()
                / rounds.iter().map(|r| r.messages).sum::<u32>().max(1),
            messages: rounds.iter().map(|r| r.messages).sum(),
            cpu: rounds.iter().map(|r| r.cpu).sum(),
        }
    }
}

/// One connection of the ping-pong generator.
struct Conn {
    /// The socket, non-blocking.
    stream: TcpStream,
    /// Bytes of the current message written so far.
    written: usize,
    /// Bytes of the current echo read so far.
    read: usize,
    /// When the current message started.
    started: Instant,
    /// The connection's poller key.
    key: usize,
    /// Whether the poller watches for writability too (only while a write is cut short).
    write_armed: bool,
}

/// The load generator's poller: level-triggered epoll, readability always, writability
/// while asked for.
struct Poller(std::os::fd::OwnedFd);

impl Poller {
    /// An empty poller.
    fn new() -> io::Result<Poller> {
        Ok(Poller(epoll::create(epoll::CreateFlags::CLOEXEC)?))
    }

    /// The events to watch for: always readability, writability when `write`.
    fn flags(write: bool) -> EventFlags {
        if write {
            EventFlags::IN | EventFlags::OUT
        } else {
            EventFlags::IN
        }
    }

    /// Watches `stream` for readability under `key`.
    fn add(&self, stream: &TcpStream, key: usize) -> io::Result<()> {
        let data = EventData::new_u64(key as u64);
        Ok(epoll::add(&self.0, stream, data, Self::flags(false))?)
    }

    /// Watches `stream` for writability too, or no longer.
    fn modify(&self, stream: &TcpStream, key: usize, write: bool) -> io::Result<()> {
        let data = EventData::new_u64(key as u64);
        Ok(epoll::modify(&self.0, stream, data, Self::flags(write))?)
    }

    /// Waits up to `timeout` and fills `raw` with the ready connections' events.
    fn wait(&self, raw: &mut Vec<epoll::Event>, timeout: Duration) -> io::Result<()> {
        raw.clear();
        raw.reserve(1024);
        let timeout = Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: timeout.subsec_nanos().into(),
        };
        epoll::wait(&self.0, spare_capacity(raw), Some(&timeout))?;
        Ok(())
    }
}

/// `connections` connections each sending `size`-byte messages for `duration`.
fn ping_pong(
    server: &Server,
    connections: usize,
    size: usize,
    duration: Duration,
) -> io::Result<PingPong> {
    let poller = Poller::new()?;
    let message = vec![0x5a_u8; size];
    let mut conns = Vec::with_capacity(connections);
    for key in 0..connections {
        let stream = TcpStream::connect(server.address)?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        poller.add(&stream, key)?;
        conns.push(Conn {
            stream,
            written: 0,
            read: 0,
            started: Instant::now(),
            key,
            write_armed: false,
        });
    }
    let mut latencies: Vec<u32> = Vec::with_capacity(1 << 20);
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Vec::new();
    let cpu_before = server.cpu_time();
    let begun = Instant::now();
    let deadline = begun + duration;
    for conn in &mut conns {
        send(conn, &message, &poller)?;
    }
    let mut finished = 0;
    while Instant::now() < deadline {
        poller.wait(&mut events, Duration::from_millis(100))?;
        for event in &events {
            let (flags, data) = (event.flags, event.data);
            let conn = &mut conns[data.u64() as usize];
            let writable = flags.intersects(EventFlags::OUT | EventFlags::ERR);
            if writable && conn.written < size {
                send(conn, &message, &poller)?;
                continue;
            }
            // One read per report: the poller is level-triggered, so what is left is
            // reported again. Reading on to `EAGAIN` would cost the generator a system call
            // per message that the servers do not make, and leave it the bottleneck.
            match conn.stream.read(&mut buf) {
                Ok(0) => return Err(io::Error::other("server closed")),
                Ok(n) => conn.read += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            if conn.read >= size {
                latencies.push(conn.started.elapsed().as_micros() as u32);
                finished += 1;
                conn.read -= size;
                conn.written = 0;
                send(conn, &message, &poller)?;
            }
        }
    }
    let elapsed = begun.elapsed();
    let cpu = server.cpu_time().saturating_sub(cpu_before);
    latencies.sort_unstable();
    let pick = |q: f64| {
        let i = ((latencies.len() as f64 * q) as usize).min(latencies.len().saturating_sub(1));
        Duration::from_micros(u64::from(latencies.get(i).copied().unwrap_or(0)))
    };
    Ok(PingPong {
        rate: finished as f64 / elapsed.as_secs_f64(),
        p50: pick(0.50),
        p99: pick(0.99),
        cpu_per_msg: cpu / finished.max(1) as u32,
        messages: finished as u32,
        cpu,
    })
}

/// Writes as much of the message as the socket takes; watches for writability only while
/// some is left (changing the interest on every message would cost an `epoll_ctl` each).
fn send(conn: &mut Conn, message: &[u8], poller: &Poller) -> io::Result<()> {
    if conn.written == 0 {
        conn.started = Instant::now();
    }
    while conn.written < message.len() {
        match conn.stream.write(&message[conn.written..]) {
            Ok(n) => conn.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    let blocked = conn.written < message.len();
    if blocked == conn.write_armed {
        return Ok(());
    }
    conn.write_armed = blocked;
    poller.modify(&conn.stream, conn.key, blocked)
}

/// Bulk echo over one connection: bytes per second each way.
fn bulk(server: &Server, total: usize) -> io::Result<f64> {
    let begun = Instant::now();
    weir_bench::bulk_echo(server.address, total)?;
    Ok(total as f64 / begun.elapsed().as_secs_f64())
}

/// Short connections one after another for `duration`: each connects, sends `size` bytes,
/// half-closes and reads the echo up to the server's close. Connections per second (bound by
/// the cross-CPU wake-ups of a blocking client: about three per connection) and the server's
/// CPU time per connection.
fn short_connections(server: &Server, size: usize, duration: Duration) -> io::Result<(f64, f64)> {
    let message = vec![7u8; size];
    let mut back = Vec::with_capacity(size);
    let cpu_before = server.cpu_time();
    let begun = Instant::now();
    let mut count = 0u32;
    while begun.elapsed() < duration {
        let mut stream = TcpStream::connect(server.address)?;
        stream.set_nodelay(true)?;
        stream.write_all(&message)?;
        stream.shutdown(Shutdown::Write)?;
        back.clear();
        stream.read_to_end(&mut back)?;
        if back != message {
            return Err(io::Error::other(format!(
                "{}: a short connection's echo came back wrong",
                server.name
            )));
        }
        count += 1;
    }
    let rate = f64::from(count) / begun.elapsed().as_secs_f64();
    let cpu = server.cpu_time().saturating_sub(cpu_before) / count.max(1);
    Ok((rate, cpu.as_secs_f64()))
}

/// [`round_count`] rounds of `run` against weir's server (`servers[0]`) and the peer's,
/// alternating which goes first: each side's results in round order.
fn alternating<T>(
    servers: &[Server; 2],
    run: impl Fn(&Server) -> io::Result<T>,
) -> io::Result<[Vec<T>; 2]> {
    alternate_servers(round_count() as u64, servers, run)
}

/// Server memory growth per idle connection with `count` connections open.
fn idle_memory(server: &Server, count: usize) -> io::Result<f64> {
    let before = server.rss();
    let mut streams = Vec::with_capacity(count);
    for _ in 0..count {
        streams.push(TcpStream::connect(server.address)?);
    }
    // A round trip on the last connection: the server has accepted every earlier one.
    let last = streams
        .last_mut()
        .ok_or_else(|| io::Error::other("no connections"))?;
    last.write_all(b"x")?;
    let mut one = [0u8; 1];
    last.read_exact(&mut one)?;
    let after = server.rss();
    Ok(after.saturating_sub(before) as f64 / count as f64)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let duration = if quick {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(400)
    };
    let bulk_bytes = if quick { 64 << 20 } else { 512 << 20 };
    let idle = if quick { 1000 } else { 10_000 };
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let pinned = taskset_works() && pin_self(1);
    println!(
        "echo benchmark: {} CPUs; servers pinned to CPU 0 and load generator to CPU 1: {}",
        cpus,
        if pinned {
            "yes"
        } else {
            "no (taskset unavailable)"
        }
    );
    // The peer: tokio's echo server, or another binary of this package in its place
    // (`epoll_echo`, the plainest epoll server, shows the ceiling both are held against).
    let peer = std::env::var("ECHO_BENCH_PEER").unwrap_or_else(|_| "tokio_echo".into());
    let label = peer.trim_end_matches("_echo").to_owned();
    println!("peer: {peer}");
    let servers = [
        Server::start("weir", "weir_echo", &[])?,
        Server::start("peer", &peer, &[])?,
    ];
    println!(
        "\n{:<22} {:>12} {:>12} {:>7} | {:>9} {:>9} {:>9} {:>9} | {:>8} {:>8} {:>7}",
        "ping-pong",
        "weir msg/s",
        format!("{label} msg/s"),
        "ratio",
        "weir p50",
        format!("{label} p50"),
        "weir p99",
        format!("{label} p99"),
        "weir cpu",
        format!("{label} cpu"),
        "ratio"
    );
    for size in [64, 4096] {
        for connections in [1, 10, 50, 200] {
            // Short rounds, alternating which server goes first, and the median of each
            // figure.
            let rounds = alternating(&servers, |server| {
                ping_pong(server, connections, size, duration)
            })?;
            let figure = |side: usize, f: fn(&PingPong) -> f64| -> Vec<f64> {
                rounds[side].iter().map(f).collect()
            };
            let rate_ratio = paired_ratio(&figure(0, |r| r.rate), &figure(1, |r| r.rate));
            // CPU per message: lower is better, so tokio's over weir's.
            let cpu = |r: &PingPong| r.cpu_per_msg.as_secs_f64();
            let cpu_ratio = paired_ratio(&figure(1, cpu), &figure(0, cpu));
            let [w, t] = rounds.map(|r| PingPong::median(&r));
            let (w, t) = (&w, &t);
            println!(
                "{:<22} {:>12.0} {:>12.0} {:>7.2} | {:>9?} {:>9?} {:>9?} {:>9?} | {:>8?} {:>8?} {:>7.2}",
                format!("{connections} conn x {size} B"),
                w.rate,
                t.rate,
                rate_ratio,
                w.p50,
                t.p50,
                w.p99,
                t.p99,
                w.cpu_per_msg,
                t.cpu_per_msg,
                cpu_ratio,
            );
        }
    }
    let bulk_rounds = alternating(&servers, |server| bulk(server, bulk_bytes))?;
    let bulk_ratio = paired_ratio(&bulk_rounds[0], &bulk_rounds[1]);
    let bulk_rates = bulk_rounds.map(median);
    println!(
        "\n{:<22} {:>10.0} MB/s {:>10.0} MB/s  ratio {:.2}",
        format!("bulk, 1 conn, {}x{} MiB", round_count(), bulk_bytes >> 20),
        bulk_rates[0] / 1e6,
        bulk_rates[1] / 1e6,
        bulk_ratio
    );
    let short_rounds = alternating(&servers, |server| short_connections(server, 64, duration))?;
    let rates = short_rounds
        .each_ref()
        .map(|r| r.iter().map(|f| f.0).collect::<Vec<_>>());
    let cpus = short_rounds
        .each_ref()
        .map(|r| r.iter().map(|f| f.1).collect::<Vec<_>>());
    println!(
        "{:<22} {:>10.0} conn/s {:>8.0} conn/s ratio {:.2} | cpu/conn {:>6.1?} {:>6.1?} ratio ({label}/weir) {:.2}",
        "short conns, 64 B",
        median(rates[0].clone()),
        median(rates[1].clone()),
        paired_ratio(&rates[0], &rates[1]),
        Duration::from_secs_f64(median(cpus[0].clone())),
        Duration::from_secs_f64(median(cpus[1].clone())),
        paired_ratio(&cpus[1], &cpus[0]),
    );
    let memory: Vec<f64> = servers
        .iter()
        .map(|s| idle_memory(s, idle))
        .collect::<io::Result<_>>()?;
    println!(
        "{:<22} {:>10.0} B/conn {:>8.0} B/conn  ratio ({label}/weir) {:.2}",
        format!("idle, {idle} conns"),
        memory[0],
        memory[1],
        memory[1] / memory[0].max(1.0)
    );
    for server in &servers {
        eprintln!("{} pid {}", server.name, server.pid());
    }
    Ok(())
}
