//! Throughput of a 4-stage in-memory chain, weir against tokio, plus the cost of a cross-thread
//! `Reactor::call` and of a timer insert + cancel.
//!
//! ```text
//! weir:  ByteSource ─▶ ByteFilter ─▶ ByteFilter ─▶ ByteSink        (one reactor thread)
//! tokio: task ─duplex─▶ task ─duplex─▶ task ─duplex─▶ task          (current-thread runtime)
//! ```
//!
//! weir's source is a `ByteSource`, which hands its hook's chunks on in runs
//! (`Link::deliver_chunks`); a second weir row delivers one chunk per call
//! (`Link::deliver`), the path a transport that reads one buffer at a time takes.
//!
//! Run with `cargo bench -p weir-bench --bench chain`. Without `--bench` (as under
//! `cargo test --all-targets`) it runs a tiny smoke version and prints nothing. For a
//! profiler or callgrind, `CHAIN_PROFILE=weir|single|tokio` runs only that 64 B chain, for
//! `CHAIN_CHUNKS` chunks (default 2^24).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_io::{
    attach, ByteFilter, ByteProducer, ByteSink, ByteSource, Ending, Link, LinkSlot, Produce,
    ProducerRef, SourceHooks, Window,
};
use weir_reactor::Reactor;

/// Each stage's buffer: filter capacity, sink window, duplex size.
const BUFFER: usize = 256 * 1024;

/// Serves `count` chunks of `chunk`, then the end.
struct Repeat {
    chunk: Bytes,
    left: u64,
}

impl SourceHooks for Repeat {
    fn produce(&mut self, _max: usize) -> Produce {
        if self.left == 0 {
            return Produce::End(Ending::Completed);
        }
        self.left -= 1;
        // More than `max` is fine: the source holds the rest for the next turn.
        Produce::Data(self.chunk.clone())
    }
}

/// A producer that delivers one chunk per [`Link::deliver`] call while credit lasts.
struct OneByOne {
    reactor: Reactor,
    slot: LinkSlot,
    chunk: Bytes,
    left: AtomicU64,
}

impl ByteProducer for OneByOne {
    fn reactor(&self) -> &Reactor {
        &self.reactor
    }

    fn producer_slot(&self) -> &LinkSlot {
        &self.slot
    }

    fn on_credit(&self, link: &Arc<Link>) {
        // The sink grants as it consumes, so this runs to the end in one call.
        while link.remaining() >= self.chunk.len() as u64 {
            if self.left.load(Ordering::Relaxed) == 0 {
                link.end(Ending::Completed);
                return;
            }
            self.left.fetch_sub(1, Ordering::Relaxed);
            if link.deliver(self.chunk.clone()).is_err() {
                return;
            }
        }
    }
}

/// How weir's source hands chunks on.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    /// `ByteSource`: runs of chunks per call.
    Runs,
    /// [`OneByOne`]: one chunk per call.
    Single,
}

/// Moves `count` chunks of `size` bytes through a weir chain; returns the elapsed time.
fn weir_chain(size: usize, count: u64, kind: Source) -> Duration {
    let reactor = Reactor::new().expect("poller");
    let thread = reactor.start().expect("reactor");
    let received = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel();
    let r = received.clone();
    let sink = ByteSink::new(
        &reactor,
        Window::Bytes(BUFFER as u64),
        move |data: Bytes| {
            r.fetch_add(data.len() as u64, Ordering::Relaxed);
        },
    );
    let f1 = ByteFilter::new(&reactor, BUFFER, |b| b);
    let f2 = ByteFilter::new(&reactor, BUFFER, |b| b);
    let (p1, p2) = (f1.io_pair(), f2.io_pair());
    let chunk = Bytes::from(vec![0x5a; size]);
    let source: ProducerRef = match kind {
        Source::Runs => ByteSource::new(&reactor, Repeat { chunk, left: count }),
        Source::Single => Arc::new(OneByOne {
            reactor: reactor.clone(),
            slot: LinkSlot::new(),
            chunk,
            left: AtomicU64::new(count),
        }),
    };
    attach(&p2.producer, &sink.consumer()).expect("attach");
    attach(&p1.producer, &p2.consumer).expect("attach");
    let begun = Instant::now();
    attach(&source, &p1.consumer).expect("attach");
    // Wait for the end: poll the sink from the reactor thread after each turn.
    let s = sink.clone();
    let r = reactor.clone();
    fn check<H: weir_io::SinkHooks>(s: Arc<ByteSink<H>>, r: Reactor, tx: mpsc::Sender<()>) {
        if s.is_ended() {
            let _ = tx.send(());
        } else {
            let r2 = r.clone();
            r.call(move || check(s, r2, tx));
        }
    }
    reactor.call(move || check(s, r, tx));
    rx.recv_timeout(Duration::from_secs(120))
        .expect("the chain ends");
    let elapsed = begun.elapsed();
    assert_eq!(received.load(Ordering::Relaxed), size as u64 * count);
    reactor.stop();
    thread.join().expect("reactor thread");
    elapsed
}

/// The same through four tokio tasks joined by `tokio::io::duplex`.
fn tokio_chain(size: usize, count: u64) -> Duration {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let (mut a_w, a_r) = tokio::io::duplex(BUFFER);
        let (b_w, b_r) = tokio::io::duplex(BUFFER);
        let (c_w, mut c_r) = tokio::io::duplex(BUFFER);
        let begun = Instant::now();
        let chunk = vec![0x5au8; size];
        let source = tokio::spawn(async move {
            for _ in 0..count {
                a_w.write_all(&chunk).await.expect("write");
            }
            a_w.shutdown().await.expect("shutdown");
        });
        let relay = |mut from: tokio::io::DuplexStream, mut to: tokio::io::DuplexStream| async move {
            let mut buf = vec![0u8; size];
            loop {
                let n = from.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                to.write_all(&buf[..n]).await.expect("write");
            }
            to.shutdown().await.expect("shutdown");
        };
        let f1 = tokio::spawn(relay(a_r, b_w));
        let f2 = tokio::spawn(relay(b_r, c_w));
        let sink = tokio::spawn(async move {
            let mut buf = vec![0u8; size];
            let mut total = 0u64;
            loop {
                let n = c_r.read(&mut buf).await.expect("read");
                if n == 0 {
                    break total;
                }
                total += n as u64;
            }
        });
        source.await.expect("source");
        f1.await.expect("filter");
        f2.await.expect("filter");
        let total = sink.await.expect("sink");
        assert_eq!(total, size as u64 * count);
        begun.elapsed()
    })
}

/// Nanoseconds per one-way cross-thread `Reactor::call`.
fn cross_thread_call(calls: u64) -> f64 {
    let reactor = Reactor::new().expect("poller");
    let thread = reactor.start().expect("reactor");
    let count = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel();
    let begun = Instant::now();
    for i in 0..calls {
        let count = count.clone();
        let tx = (i + 1 == calls).then(|| tx.clone());
        reactor.call(move || {
            count.fetch_add(1, Ordering::Relaxed);
            if let Some(tx) = tx {
                let _ = tx.send(());
            }
        });
    }
    rx.recv_timeout(Duration::from_secs(60)).expect("calls ran");
    let elapsed = begun.elapsed();
    assert_eq!(count.load(Ordering::Relaxed), calls);
    reactor.stop();
    thread.join().expect("reactor thread");
    elapsed.as_nanos() as f64 / calls as f64
}

/// Nanoseconds per `schedule` + `cancel` pair from another thread.
fn timer_insert_cancel(timers: u64) -> f64 {
    let reactor = Reactor::new().expect("poller");
    let thread = reactor.start().expect("reactor");
    let begun = Instant::now();
    for _ in 0..timers {
        let timer = reactor.schedule(Duration::from_secs(3600), || {});
        assert!(timer.cancel());
    }
    let elapsed = begun.elapsed();
    reactor.stop();
    thread.join().expect("reactor thread");
    elapsed.as_nanos() as f64 / timers as f64
}

fn main() {
    // For a profiler: one chain only, 64 B chunks.
    if let Some(which) = std::env::var_os("CHAIN_PROFILE") {
        let count = std::env::var("CHAIN_CHUNKS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1 << 24);
        let elapsed = match which.to_str() {
            Some("weir") => weir_chain(64, count, Source::Runs),
            Some("single") => weir_chain(64, count, Source::Single),
            Some("tokio") => tokio_chain(64, count),
            _ => panic!("CHAIN_PROFILE is weir, single or tokio"),
        };
        println!("{count} chunks in {elapsed:?}");
        return;
    }
    let benching = std::env::args().any(|a| a == "--bench");
    if !benching {
        // Smoke run under `cargo test --all-targets`.
        weir_chain(64, 100, Source::Runs);
        weir_chain(64, 100, Source::Single);
        tokio_chain(64, 100);
        cross_thread_call(100);
        timer_insert_cancel(100);
        return;
    }
    println!("4-stage in-memory chain (source -> filter -> filter -> sink), best of 5 runs");
    println!("each weir/tokio pair measured alternately in the same run");
    println!(
        "{:>8} {:>10} {:>22} {:>14} {:>14} {:>8} {:>6}",
        "chunk", "total", "weir source", "weir MiB/s", "tokio MiB/s", "ratio", "goal"
    );
    let rows = [
        (64usize, 16u64 << 20, Source::Runs, 2.0),
        (64, 16 << 20, Source::Single, 2.0),
        (64 * 1024, 512 << 20, Source::Runs, 1.0),
    ];
    for (size, total, kind, goal) in rows {
        let count = total / size as u64;
        let (mut weir, mut tokio) = (Duration::MAX, Duration::MAX);
        for _ in 0..5 {
            weir = weir.min(weir_chain(size, count, kind));
            tokio = tokio.min(tokio_chain(size, count));
        }
        let mib = total as f64 / (1 << 20) as f64;
        let (w, t) = (mib / weir.as_secs_f64(), mib / tokio.as_secs_f64());
        println!(
            "{:>8} {:>6} MiB {:>22} {:>14.1} {:>14.1} {:>7.2}x {:>5}x {}",
            if size < 1024 {
                format!("{size} B")
            } else {
                format!("{} KiB", size / 1024)
            },
            total >> 20,
            match kind {
                Source::Runs => "runs (ByteSource)",
                Source::Single => "a chunk per call",
            },
            w,
            t,
            w / t,
            goal,
            if w / t >= goal { "met" } else { "MISSED" }
        );
    }
    println!();
    println!(
        "cross-thread Reactor::call (one-way, 1M calls): {:.0} ns/call",
        cross_thread_call(1_000_000)
    );
    println!(
        "timer schedule + cancel (1M pairs, foreign thread): {:.0} ns/pair",
        timer_insert_cancel(1_000_000)
    );
}
