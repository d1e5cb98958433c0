//! TLS echo throughput and handshakes per second: weir's TLS element against tokio +
//! tokio-native-tls, same certificates, same OpenSSL, loopback, in one run.
//!
//! ```text
//! cargo run -p weir-tls --release --example tls_bench
//! ```

#[path = "../tests/common/mod.rs"]
#[allow(missing_docs)]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_io::{
    ByteIoPair, ByteSink, ByteSource, ByteWAgent, ByteWriter, Ending, Link, Produce, SinkHooks,
    SourceHooks, WAgentHooks, Window,
};
use weir_reactor::Reactor;
use weir_sock::{AgentConfig, ConnectOptions, ListenOptions};
use weir_tls::net::{self, TlsListener};

/// Bytes echoed in the bulk test.
const BULK: u64 = 256 * 1024 * 1024;
/// Connections in the handshake test.
const HANDSHAKES: usize = 300;

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

/// Counts what arrives, reports the end.
struct Count(Arc<AtomicU64>, mpsc::Sender<Ending>);
impl SinkHooks for Count {
    fn on_data(&mut self, _link: &Arc<Link>, data: Bytes) {
        self.0.fetch_add(data.len() as u64, Ordering::Relaxed);
    }
    fn on_end(&mut self, ending: Ending) {
        let _ = self.1.send(ending);
    }
}

/// One weir client: sends `bytes`, waits for the echo and the clean end.
fn weir_client(
    reactor: &Reactor,
    config: &weir_tls::TlsClientConfig,
    address: &weir_sock::Address,
    bytes: u64,
) -> u64 {
    let connection = net::connect(
        reactor,
        address.clone(),
        "localhost",
        config,
        ConnectOptions::default(),
    )
    .unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel();
    let sink = ByteSink::new(
        reactor,
        Window::Bytes(256 * 1024),
        Count(received.clone(), tx),
    );
    let source = ByteSource::new(reactor, Zeros(bytes, Bytes::from(vec![0; 64 * 1024])));
    connection
        .plain
        .attach(&ByteIoPair::new(sink.consumer(), source.producer()))
        .unwrap();
    assert_eq!(rx.recv().unwrap(), Ending::Completed);
    received.load(Ordering::Relaxed)
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
    let start = Instant::now();
    assert_eq!(weir_client(&reactor, &config, &address, BULK), BULK);
    let bulk = BULK as f64 / (1024.0 * 1024.0) / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..HANDSHAKES {
        let t = Instant::now();
        assert_eq!(weir_client(&reactor, &config, &address, 1), 1);
        if std::env::var_os("TLS_BENCH_TRACE").is_some() {
            eprintln!("one connection: {:?}", t.elapsed());
        }
    }
    let rate = HANDSHAKES as f64 / start.elapsed().as_secs_f64();
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
        assert_eq!(client(BULK).await, BULK);
        let bulk = BULK as f64 / (1024.0 * 1024.0) / start.elapsed().as_secs_f64();
        let start = Instant::now();
        for _ in 0..HANDSHAKES {
            assert_eq!(client(1).await, 1);
        }
        let rate = HANDSHAKES as f64 / start.elapsed().as_secs_f64();
        (bulk, rate)
    })
}

fn main() {
    let _ = Duration::ZERO;
    let (weir_bulk, weir_rate) = weir_run();
    let (tokio_bulk, tokio_rate) = tokio_run();
    println!(
        "TLS echo on loopback, {} MiB bulk, {HANDSHAKES} sequential handshakes",
        BULK >> 20
    );
    println!("{:<28} {:>12} {:>12} {:>8}", "", "weir", "tokio", "ratio");
    println!(
        "{:<28} {:>12.1} {:>12.1} {:>8.2}",
        "bulk echo MiB/s (each way)",
        weir_bulk,
        tokio_bulk,
        weir_bulk / tokio_bulk
    );
    println!(
        "{:<28} {:>12.1} {:>12.1} {:>8.2}",
        "handshakes/s (+1 B echo)",
        weir_rate,
        tokio_rate,
        weir_rate / tokio_rate
    );
}
