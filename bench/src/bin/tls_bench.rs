//! TLS echo throughput and handshakes per second: weir's TLS element against tokio +
//! tokio-native-tls, same certificates, same OpenSSL, loopback, in one run.
//!
//! ```text
//! cargo run -p weir-bench --release --bin tls_bench
//! ```

#[path = "../../../tls/tests/common/mod.rs"]
#[allow(missing_docs)]
mod common;

use std::sync::{mpsc, Arc};
use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_io::{
    ByteIoPair, ByteSink, ByteSource, ByteWAgent, ByteWriter, Ending, Link, Produce, SinkHooks,
    SourceHooks, WAgentHooks, Window,
};
use weir_reactor::Reactor;
use weir_sock::{AgentConfig, ConnectOptions, ListenOptions};
use weir_tls::net::{self, TlsListener};

/// Bytes echoed in the bulk test (`TLS_BENCH_BULK_MIB` overrides, for profiling).
fn bulk() -> u64 {
    let mib = std::env::var("TLS_BENCH_BULK_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256u64);
    mib * 1024 * 1024
}
/// Connections in the handshake test (`TLS_BENCH_HANDSHAKES` overrides, for profiling).
fn handshakes() -> usize {
    std::env::var("TLS_BENCH_HANDSHAKES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// Echo hooks.
struct Echo;
impl WAgentHooks for Echo {
    fn on_data(&mut self, writer: &Arc<ByteWriter>, data: Bytes) {
        let _ = writer.write(data);
    }
}

/// Produces `left` zero bytes.
struct Zeros(u64, Bytes);
impl SourceHooks for Zeros {
    fn produce(&mut self, max: usize) -> Produce {
        if self.0 == 0 {
            return Produce::End(Ending::Completed);
        }
        let n = (max as u64).min(self.0).min(self.1.len() as u64) as usize;
        self.0 -= n as u64;
        Produce::Data(self.1.slice(..n))
    }
}

/// What a client is told when its echo has ended: how it ended and how many bytes came back.
type Done = Box<dyn FnOnce(Ending, u64) + Send>;

/// Counts what arrives, reports the end.
struct Count(u64, Option<Done>);
impl SinkHooks for Count {
    fn on_data(&mut self, _link: &Arc<Link>, data: Bytes) {
        self.0 += data.len() as u64;
    }
    fn on_end(&mut self, ending: Ending) {
        if let Some(done) = self.1.take() {
            done(ending, self.0);
        }
    }
}

/// Starts one weir client: sends `bytes`, then calls `done` (on the reactor thread) with the end
/// of the echo.
fn weir_client(
    reactor: &Reactor,
    config: &weir_tls::TlsClientConfig,
    address: &weir_sock::Address,
    bytes: u64,
    done: Done,
) {
    let connection = net::connect(
        reactor,
        address.clone(),
        "localhost",
        config,
        ConnectOptions::default(),
    )
    .unwrap();
    let sink = ByteSink::new(reactor, Window::Bytes(256 * 1024), Count(0, Some(done)));
    let source = ByteSource::new(reactor, Zeros(bytes, Bytes::from(vec![0; 64 * 1024])));
    connection
        .plain
        .attach(&ByteIoPair::new(sink.consumer(), source.producer()))
        .unwrap();
}

/// Runs `left` one-byte clients one after the other, each started on the reactor thread when
/// the previous one ended (as tokio's loop runs on its one thread), then signals `finished`.
fn weir_handshakes(
    reactor: Reactor,
    config: weir_tls::TlsClientConfig,
    address: weir_sock::Address,
    left: usize,
    finished: mpsc::Sender<()>,
) {
    let (r, c, a) = (reactor.clone(), config.clone(), address.clone());
    let done: Done = Box::new(move |ending, received| {
        assert_eq!((ending, received), (Ending::Completed, 1));
        if left > 1 {
            r.clone()
                .call(move || weir_handshakes(r, c, a, left - 1, finished));
        } else {
            let _ = finished.send(());
        }
    });
    weir_client(&reactor, &config, &address, 1, done);
}

/// (bulk MiB/s, handshakes/s) for weir.
fn weir_run() -> (f64, f64) {
    let reactor = Reactor::new().unwrap();
    let thread = reactor.start().unwrap();
    let r = reactor.clone();
    let listener = TlsListener::bind(
        &reactor,
        &"127.0.0.1:0".parse().unwrap(),
        common::pki().localhost.server_config(),
        ListenOptions::default(),
        AgentConfig::default(),
        move |connection| {
            let echo = ByteWAgent::new(&r, 64 * 1024, Echo);
            let _ = connection.plain.attach(&echo.io_pair());
        },
    )
    .unwrap();
    let address = listener.local_address().clone();
    let config = common::client_trusting_ca().build().unwrap();
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    let done: Done = Box::new(move |ending, received| {
        let _ = tx.send((ending, received));
    });
    weir_client(&reactor, &config, &address, bulk(), done);
    assert_eq!(rx.recv().unwrap(), (Ending::Completed, bulk()));
    let bulk = bulk() as f64 / (1024.0 * 1024.0) / start.elapsed().as_secs_f64();
    let (tx, rx) = mpsc::channel();
    let start = Instant::now();
    weir_handshakes(reactor.clone(), config, address, handshakes(), tx);
    rx.recv().unwrap();
    let rate = handshakes() as f64 / start.elapsed().as_secs_f64();
    reactor.stop();
    let _ = thread.join();
    (bulk, rate)
}

/// (bulk MiB/s, handshakes/s) for tokio + tokio-native-tls, on one thread like weir.
fn tokio_run() -> (f64, f64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pki = common::pki();
        let identity =
            native_tls::Identity::from_pkcs8(&pki.localhost.cert_pem, &pki.localhost.key_pem)
                .unwrap();
        let acceptor = tokio_native_tls::TlsAcceptor::from(
            native_tls::TlsAcceptor::builder(identity).build().unwrap(),
        );
        let ca = native_tls::Certificate::from_pem(&pki.ca.cert_pem).unwrap();
        let connector = tokio_native_tls::TlsConnector::from(
            native_tls::TlsConnector::builder()
                .add_root_certificate(ca)
                .disable_built_in_roots(true)
                .build()
                .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(socket).await else {
                        return;
                    };
                    let (mut reader, mut writer) = tokio::io::split(stream);
                    let _ = tokio::io::copy(&mut reader, &mut writer).await;
                    let _ = writer.shutdown().await;
                });
            }
        });
        let client = |bytes: u64| {
            let connector = connector.clone();
            async move {
                let socket = tokio::net::TcpStream::connect(address).await.unwrap();
                let stream = connector.connect("localhost", socket).await.unwrap();
                let (mut reader, mut writer) = tokio::io::split(stream);
                let send = async move {
                    let chunk = vec![0u8; 64 * 1024];
                    let mut left = bytes;
                    while left > 0 {
                        let n = left.min(chunk.len() as u64) as usize;
                        writer.write_all(&chunk[..n]).await.unwrap();
                        left -= n as u64;
                    }
                    writer.shutdown().await.unwrap();
                };
                let receive = async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut total = 0u64;
                    loop {
                        match reader.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => total += n as u64,
                        }
                    }
                    total
                };
                let ((), total) = tokio::join!(send, receive);
                total
            }
        };
        let start = Instant::now();
        let total = bulk();
        assert_eq!(client(total).await, total);
        let bulk = total as f64 / (1024.0 * 1024.0) / start.elapsed().as_secs_f64();
        let start = Instant::now();
        for _ in 0..handshakes() {
            assert_eq!(client(1).await, 1);
        }
        let rate = handshakes() as f64 / start.elapsed().as_secs_f64();
        (bulk, rate)
    })
}

/// The median of a few samples.
fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let only = std::env::var("TLS_BENCH_ONLY").unwrap_or_default();
    let rounds: usize = std::env::var("TLS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(9);
    let (mut weir, mut tokio) = (Vec::new(), Vec::new());
    // Alternate which side runs first: each run leaves the allocator and the CPU caches in a
    // different state for the next one.
    for round in 0..rounds {
        let first_weir = round % 2 == 0;
        for side in [first_weir, !first_weir] {
            if side && only != "tokio" {
                weir.push(weir_run());
            } else if !side && only != "weir" {
                tokio.push(tokio_run());
            }
        }
    }
    let summary = |runs: &[(f64, f64)]| {
        if runs.is_empty() {
            return (f64::NAN, f64::NAN);
        }
        (
            median(runs.iter().map(|r| r.0).collect()),
            median(runs.iter().map(|r| r.1).collect()),
        )
    };
    let (weir_bulk, weir_rate) = summary(&weir);
    let (tokio_bulk, tokio_rate) = summary(&tokio);
    // The ratios are medians of each round's own ratio: the two runs of a round are next to
    // each other in time, so a burst of load from another tenant of the machine spoils one
    // pair rather than tilting the whole figure.
    let ratios = weir
        .iter()
        .zip(&tokio)
        .map(|(w, t)| (w.0 / t.0, w.1 / t.1))
        .collect::<Vec<_>>();
    let (bulk_ratio, rate_ratio) = summary(&ratios);
    println!(
        "TLS echo on loopback, {} MiB bulk, {} sequential handshakes, medians of {rounds} \
         alternating rounds (ratio: median of the rounds' ratios); client and server on one \
         reactor thread / one current-thread runtime",
        bulk() >> 20,
        handshakes()
    );
    println!("{:<28} {:>12} {:>12} {:>8}", "", "weir", "tokio", "ratio");
    println!(
        "{:<28} {:>12.1} {:>12.1} {:>8.2}",
        "bulk echo MiB/s (each way)", weir_bulk, tokio_bulk, bulk_ratio
    );
    println!(
        "{:<28} {:>12.1} {:>12.1} {:>8.2}",
        "handshakes/s (+1 B echo)", weir_rate, tokio_rate, rate_ratio
    );
}
