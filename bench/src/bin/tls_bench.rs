//! TLS echo throughput and handshakes per second: weir's TLS element against tokio +
//! tokio-native-tls, same certificates, same OpenSSL, loopback, in one run.
//!
//! ```text
//! cargo run -p weir-bench --release --bin tls_bench
//! ```
//!
//! Three parts, each taking turns between the two sides (alternating which goes first) so
//! that the median of the rounds' own ratios survives the bursts of load of a shared machine:
//!
//! - **One thread each, client and server together.** Both sides are set up once in this
//!   process, pinned to CPU 0 (weir's reactor thread; tokio's current-thread runtime), and
//!   stay up: bulk rounds (one echo of `TLS_BENCH_BULK_MIB` MiB each,
//!   `TLS_BENCH_BULK_ROUNDS` of them) and handshake rounds (`TLS_BENCH_HANDSHAKES`
//!   sequential connections that each echo one byte, `TLS_BENCH_ROUNDS` of them; with each
//!   side's CPU time per handshake, weir's reactor thread against tokio's main thread, which
//!   tells work from waiting). The same connections over plain TCP (the same clients and echo
//!   servers without TLS) are the reference: the difference of the two is what TLS adds to a
//!   connection (from the medians; the last row's ratio is tokio's over weir's, so above 1.0
//!   weir's TLS costs less).
//!   Then bulk and handshakes again at TLS 1.3: weir with its defaults against tokio +
//!   tokio-openssl (client and server).
//!   `TLS_BENCH_ONLY=weir` (or `tokio`) runs one side, for profiling.
//! - **The clients alone.** The same clients, moved to CPU 1, against one server for both:
//!   tokio's echo server in its own process on CPU 0 (this binary with
//!   `--serve tokio CERT KEY ADDR`), `TLS_BENCH_ROUNDS` rounds of `TLS_BENCH_HANDSHAKES`:
//!   handshakes/s, and the client threads' CPU time per handshake (weir's reactor thread,
//!   tokio's runtime thread; from `/proc/self/task/*/schedstat`).
//! - **The servers alone, under a client we did not write.** Each side's echo server runs as
//!   its own process (`--serve weir|tokio CERT KEY ADDR`) pinned to CPU 0, and
//!   `openssl s_time -new` (one full handshake per connection, sequential) runs on CPU 1
//!   against each in turn for `TLS_BENCH_SERVER_SECS` seconds, `TLS_BENCH_SERVER_ROUNDS`
//!   times (0 skips this part and the clients-alone part; a missing `openssl` skips this
//!   one): handshakes/s, and the server's CPU time per handshake from
//!   `/proc/PID/task/*/schedstat`. Then the same at TLS 1.3: weir's server with its defaults
//!   against tokio + tokio-openssl (Mozilla's intermediate profile, as a tokio-openssl user
//!   sets it up), both on the same OpenSSL.
//!
//! Every other connection is TLS 1.2 with ECDHE-ECDSA-CHACHA20-POLY1305: tokio-native-tls's
//! server cannot speak TLS 1.3, so weir's is held to 1.2, where it chooses as native-tls
//! does.
//!
//! Handshake figures of the two sides are within noise of each other in all three parts (the
//! handshake is OpenSSL's work; across CPUs the machine's wake-ups bound the rates, and on one
//! core, on some machines, weir came out a few per cent behind). Bulk is where weir leads: its
//! socket reads move into the TLS element without a copy, and the element gives each chunk's
//! buffer back for the next read once OpenSSL has copied it (`weir_io::spare`).

#[path = "../../../tls/tests/common/mod.rs"]
#[allow(missing_docs)]
mod common;

use std::ffi::OsStr;
use std::io;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use weir_bench::{
    alternate, alternate_servers, median, paired_ratio, pin_self, taskset_works, Server,
};
use weir_io::{
    ByteIoPair, ByteSink, ByteSource, ByteWAgent, ByteWriter, Ending, Link, Produce, SinkHooks,
    SourceHooks, WAgentHooks, Window,
};
use weir_reactor::Reactor;
use weir_sock::{AgentConfig, ConnectOptions, ListenOptions, Listener, StreamAgent};
use weir_tls::net::{self, TlsListener};

/// A number from the environment, or `default`.
fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
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
/// of the echo. Over TLS with `config`; without, over the plain socket (the reference row).
fn weir_client(
    reactor: &Reactor,
    config: Option<&weir_tls::TlsClientConfig>,
    address: &weir_sock::Address,
    bytes: u64,
    done: Done,
) {
    let options = ConnectOptions::default();
    let pair = match config {
        Some(config) => {
            net::connect(reactor, address.clone(), "localhost", config, options)
                .unwrap()
                .plain
        }
        None => StreamAgent::connect(reactor, address.clone(), options).io_pair(),
    };
    let sink = ByteSink::new(reactor, Window::Bytes(256 * 1024), Count(0, Some(done)));
    let source = ByteSource::new(reactor, Zeros(bytes, Bytes::from(vec![0; 64 * 1024])));
    pair.attach(&ByteIoPair::new(sink.consumer(), source.producer()))
        .unwrap();
}

/// Runs `left` one-byte clients one after the other, each started on the reactor thread by
/// the previous one's end (as tokio's loop starts its next client as soon as one returns),
/// then signals `finished`.
fn weir_handshakes(
    reactor: Reactor,
    config: Option<weir_tls::TlsClientConfig>,
    address: weir_sock::Address,
    left: usize,
    finished: mpsc::Sender<()>,
) {
    let (r, c, a) = (reactor.clone(), config.clone(), address.clone());
    let done: Done = Box::new(move |ending, received| {
        assert_eq!((ending, received), (Ending::Completed, 1));
        if left > 1 {
            weir_handshakes(r, c, a, left - 1, finished);
        } else {
            let _ = finished.send(());
        }
    });
    weir_client(&reactor, config.as_ref(), &address, 1, done);
}

/// The server's certificate chain and key, PEM.
struct Identity {
    /// Certificate chain, leaf first.
    cert_pem: Vec<u8>,
    /// PKCS#8 private key.
    key_pem: Vec<u8>,
}

impl Identity {
    /// The test PKI's `localhost` certificate (which this process's clients trust).
    fn localhost() -> Identity {
        let pki = common::pki();
        Identity {
            cert_pem: pki.localhost.cert_pem.clone(),
            key_pem: pki.localhost.key_pem.clone(),
        }
    }
}

/// weir's TLS echo server on `reactor`, listening on `address`, speaking TLS `max_version`
/// at most.
///
/// tokio-native-tls's server speaks TLS 1.2 at most (native-tls's acceptor cannot do 1.3):
/// held to 1.2, weir's negotiates as that one does, so both do the same work. At 1.3 (weir's
/// default) it is measured against tokio-openssl.
fn weir_server(
    reactor: &Reactor,
    address: &weir_sock::Address,
    identity: &Identity,
    max_version: weir_tls::TlsVersion,
) -> Result<TlsListener, Box<dyn std::error::Error>> {
    let r = reactor.clone();
    let identity = weir_tls::TlsIdentity::from_pem(&identity.cert_pem, &identity.key_pem)?;
    Ok(TlsListener::bind(
        reactor,
        address,
        weir_tls::TlsServerConfig::builder(identity)
            .with_max_version(max_version)
            .build()?,
        ListenOptions::default(),
        AgentConfig::default(),
        move |connection| {
            let echo = ByteWAgent::new(&r, 64 * 1024, Echo);
            let _ = connection.plain.attach(&echo.io_pair());
        },
    )?)
}

/// weir's plain TCP echo server on `reactor` (the reference row).
fn weir_plain_server(
    reactor: &Reactor,
    address: &weir_sock::Address,
) -> Result<Listener, Box<dyn std::error::Error>> {
    let r = reactor.clone();
    Ok(Listener::bind(
        reactor,
        address,
        ListenOptions::default(),
        move |accepted| {
            if let Ok(agent) = accepted.into_agent(&r, AgentConfig::default()) {
                let echo = ByteWAgent::new(&r, 64 * 1024, Echo);
                let _ = agent.io_pair().attach(&echo.io_pair());
            }
        },
    )?)
}

/// weir's side: a reactor on its own thread serving TLS echo (and plain TCP echo).
struct WeirSide {
    /// The reactor both the server and the clients run on.
    reactor: Reactor,
    /// Its thread, joined on drop.
    thread: Option<weir_reactor::ReactorThread>,
    /// The echo server held to TLS 1.2, kept listening.
    _listener: TlsListener,
    /// Where it listens.
    address: weir_sock::Address,
    /// The echo server with its defaults (TLS 1.3), kept listening.
    tls13: TlsListener,
    /// The plain TCP echo server, kept listening.
    plain: Listener,
    /// The clients' configuration (trusting the test CA).
    config: weir_tls::TlsClientConfig,
}

impl WeirSide {
    fn new() -> WeirSide {
        let reactor = Reactor::new().unwrap();
        let thread = reactor.start().unwrap();
        let address = "127.0.0.1:0".parse().unwrap();
        let identity = Identity::localhost();
        let listener = weir_server(&reactor, &address, &identity, weir_tls::TlsVersion::Tls12);
        let listener = listener.unwrap();
        let tls13 = weir_server(&reactor, &address, &identity, weir_tls::TlsVersion::Tls13);
        let plain = weir_plain_server(&reactor, &address).unwrap();
        WeirSide {
            address: listener.local_address().clone(),
            reactor,
            thread: Some(thread),
            _listener: listener,
            tls13: tls13.unwrap(),
            plain,
            config: common::client_trusting_ca().build().unwrap(),
        }
    }

    /// MiB/s of one echo of `bytes` (TLS 1.2).
    fn bulk(&self, bytes: u64) -> f64 {
        self.bulk_with(&self.address, bytes)
    }

    /// MiB/s of one echo of `bytes` with the server at `address`.
    fn bulk_with(&self, address: &weir_sock::Address, bytes: u64) -> f64 {
        let (tx, rx) = mpsc::channel();
        let start = Instant::now();
        let done: Done = Box::new(move |ending, received| {
            let _ = tx.send((ending, received));
        });
        weir_client(&self.reactor, Some(&self.config), address, bytes, done);
        assert_eq!(rx.recv().unwrap(), (Ending::Completed, bytes));
        bytes as f64 / (1024.0 * 1024.0) / start.elapsed().as_secs_f64()
    }

    /// Handshakes/s of `count` sequential one-byte echoes with weir's own server (TLS 1.2).
    fn handshakes(&self, count: usize) -> f64 {
        self.handshakes_with(&self.address, count)
    }

    /// MiB/s of one echo of `bytes` at TLS 1.3.
    fn bulk13(&self, bytes: u64) -> f64 {
        self.bulk_with(self.tls13.local_address(), bytes)
    }

    /// Handshakes/s of `count` sequential one-byte echoes at TLS 1.3.
    fn handshakes13(&self, count: usize) -> f64 {
        self.handshakes_with(self.tls13.local_address(), count)
    }

    /// Handshakes/s of `count` sequential one-byte echoes with the server at `address`.
    fn handshakes_with(&self, address: &weir_sock::Address, count: usize) -> f64 {
        self.sequential(Some(&self.config), address, count)
    }

    /// Connections/s of `count` sequential one-byte echoes over plain TCP with weir's own
    /// plain server.
    fn plain_connections(&self, count: usize) -> f64 {
        self.sequential(None, self.plain.local_address(), count)
    }

    /// Connections/s of `count` sequential one-byte echoes with the server at `address`,
    /// over TLS with `config`, else over plain TCP.
    fn sequential(
        &self,
        config: Option<&weir_tls::TlsClientConfig>,
        address: &weir_sock::Address,
        count: usize,
    ) -> f64 {
        let (tx, rx) = mpsc::channel();
        let start = Instant::now();
        weir_handshakes(
            self.reactor.clone(),
            config.cloned(),
            address.clone(),
            count,
            tx,
        );
        rx.recv().unwrap();
        count as f64 / start.elapsed().as_secs_f64()
    }
}

impl Drop for WeirSide {
    fn drop(&mut self) {
        self.reactor.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// tokio's TLS acceptor presenting `identity`.
fn tokio_acceptor(identity: &Identity) -> Acceptor {
    let identity = native_tls::Identity::from_pkcs8(&identity.cert_pem, &identity.key_pem).unwrap();
    let acceptor = native_tls::TlsAcceptor::builder(identity).build().unwrap();
    Acceptor::NativeTls(acceptor.into())
}

/// tokio-openssl's acceptor presenting `identity`, as a tokio-openssl user sets one up:
/// Mozilla's current intermediate profile (TLS 1.2 and 1.3).
fn tokio_openssl_acceptor(identity: &Identity) -> Acceptor {
    use openssl::ssl::{SslAcceptor, SslMethod};
    let key = openssl::pkey::PKey::private_key_from_pem(&identity.key_pem).unwrap();
    let chain = openssl::x509::X509::stack_from_pem(&identity.cert_pem).unwrap();
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
    builder.set_certificate(&chain[0]).unwrap();
    builder.set_private_key(&key).unwrap();
    for certificate in chain.into_iter().skip(1) {
        builder.add_extra_chain_cert(certificate).unwrap();
    }
    Acceptor::OpenSsl(Arc::new(builder.build()))
}

/// How a tokio echo server takes its connections.
#[derive(Clone)]
enum Acceptor {
    /// Plain TCP (the reference row).
    Plain,
    /// TLS through tokio-native-tls (TLS 1.2 at most).
    NativeTls(tokio_native_tls::TlsAcceptor),
    /// TLS through tokio-openssl.
    OpenSsl(Arc<openssl::ssl::SslAcceptor>),
}

/// Serves echo on `listener` from a task of the current runtime, as `acceptor` says: one
/// task per connection, `tokio::io::copy` between the stream's halves (what a tokio user
/// writes), `TCP_NODELAY` set as weir sets it.
fn tokio_serve(listener: tokio::net::TcpListener, acceptor: Acceptor) {
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            // As weir's sockets (and the tokio echo peer) do.
            socket.set_nodelay(true).unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                match acceptor {
                    Acceptor::Plain => echo_back(socket).await,
                    Acceptor::NativeTls(acceptor) => {
                        if let Ok(stream) = acceptor.accept(socket).await {
                            echo_back(stream).await;
                        }
                    }
                    Acceptor::OpenSsl(acceptor) => {
                        if let Some(stream) = openssl_accept(&acceptor, socket).await {
                            echo_back(stream).await;
                        }
                    }
                }
            });
        }
    });
}

/// The server's side of a tokio-openssl handshake on `socket`.
async fn openssl_accept(
    acceptor: &openssl::ssl::SslAcceptor,
    socket: tokio::net::TcpStream,
) -> Option<tokio_openssl::SslStream<tokio::net::TcpStream>> {
    let ssl = openssl::ssl::Ssl::new(acceptor.context()).ok()?;
    let mut stream = tokio_openssl::SslStream::new(ssl, socket).ok()?;
    std::pin::Pin::new(&mut stream).accept().await.ok()?;
    Some(stream)
}

/// Echoes what `stream` reads until its end, then shuts its output down.
async fn echo_back(stream: impl AsyncRead + AsyncWrite) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let _ = tokio::io::copy(&mut reader, &mut writer).await;
    let _ = writer.shutdown().await;
}

/// tokio's side: a current-thread runtime (on the caller's thread, like weir's one reactor
/// thread) serving TLS echo with tokio-native-tls (and plain TCP echo).
struct TokioSide {
    /// Runs the server and the clients, inside `block_on`.
    runtime: tokio::runtime::Runtime,
    /// Where the server listens.
    address: std::net::SocketAddr,
    /// Where the tokio-openssl echo server (TLS 1.3) listens.
    address13: std::net::SocketAddr,
    /// Where the plain TCP echo server listens.
    plain: std::net::SocketAddr,
    /// The clients' connector (trusting the test CA).
    connector: tokio_native_tls::TlsConnector,
    /// The TLS 1.3 clients' connector, tokio-openssl's (trusting the test CA).
    connector13: openssl::ssl::SslConnector,
}

/// How a tokio client talks to its server.
#[derive(Clone, Copy)]
enum Security {
    /// Plain TCP.
    Plain,
    /// tokio-native-tls (TLS 1.2 with tokio-native-tls's server).
    NativeTls,
    /// tokio-openssl (TLS 1.3).
    OpenSsl,
}

impl TokioSide {
    fn new() -> TokioSide {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ca = native_tls::Certificate::from_pem(&common::pki().ca.cert_pem).unwrap();
        let connector = tokio_native_tls::TlsConnector::from(
            native_tls::TlsConnector::builder()
                .add_root_certificate(ca)
                .disable_built_in_roots(true)
                .build()
                .unwrap(),
        );
        let serve = |acceptor| async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            tokio_serve(listener, acceptor);
            address
        };
        let identity = Identity::localhost();
        let address = runtime.block_on(serve(tokio_acceptor(&identity)));
        let address13 = runtime.block_on(serve(tokio_openssl_acceptor(&identity)));
        let plain = runtime.block_on(serve(Acceptor::Plain));
        let mut connector13 =
            openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls()).unwrap();
        let ca = openssl::x509::X509::from_pem(&common::pki().ca.cert_pem).unwrap();
        connector13.cert_store_mut().add_cert(ca).unwrap();
        TokioSide {
            runtime,
            address,
            address13,
            plain,
            connector,
            connector13: connector13.build(),
        }
    }

    /// One client of the server at `address`: sends `bytes`, half-closes, and returns how
    /// many came back, over what `security` says.
    async fn client(&self, address: std::net::SocketAddr, bytes: u64, security: Security) -> u64 {
        let socket = tokio::net::TcpStream::connect(address).await.unwrap();
        socket.set_nodelay(true).unwrap();
        match security {
            Security::Plain => echo_through(socket, bytes).await,
            Security::NativeTls => {
                let stream = self.connector.connect("localhost", socket).await.unwrap();
                echo_through(stream, bytes).await
            }
            Security::OpenSsl => {
                let ssl = self.connector13.configure().unwrap();
                let ssl = ssl.into_ssl("localhost").unwrap();
                let mut stream = tokio_openssl::SslStream::new(ssl, socket).unwrap();
                std::pin::Pin::new(&mut stream).connect().await.unwrap();
                echo_through(stream, bytes).await
            }
        }
    }
}

/// Sends `bytes` through `stream`, half-closes, and returns how many came back.
async fn echo_through(stream: impl AsyncRead + AsyncWrite, bytes: u64) -> u64 {
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

impl TokioSide {
    /// MiB/s of one echo of `bytes` (TLS 1.2, tokio-native-tls).
    fn bulk(&self, bytes: u64) -> f64 {
        self.bulk_with(self.address, bytes, Security::NativeTls)
    }

    /// MiB/s of one echo of `bytes` at TLS 1.3 (tokio-openssl).
    fn bulk13(&self, bytes: u64) -> f64 {
        self.bulk_with(self.address13, bytes, Security::OpenSsl)
    }

    /// MiB/s of one echo of `bytes` with the server at `address`.
    fn bulk_with(&self, address: std::net::SocketAddr, bytes: u64, security: Security) -> f64 {
        let start = Instant::now();
        let echoed = self.runtime.block_on(self.client(address, bytes, security));
        assert_eq!(echoed, bytes);
        bytes as f64 / (1024.0 * 1024.0) / start.elapsed().as_secs_f64()
    }

    /// Handshakes/s of `count` sequential one-byte echoes with tokio's own server.
    fn handshakes(&self, count: usize) -> f64 {
        self.handshakes_with(self.address, count)
    }

    /// Handshakes/s of `count` sequential one-byte echoes at TLS 1.3 (tokio-openssl).
    fn handshakes13(&self, count: usize) -> f64 {
        self.sequential(self.address13, count, Security::OpenSsl)
    }

    /// Handshakes/s of `count` sequential one-byte echoes with the server at `address`.
    fn handshakes_with(&self, address: std::net::SocketAddr, count: usize) -> f64 {
        self.sequential(address, count, Security::NativeTls)
    }

    /// Connections/s of `count` sequential one-byte echoes over plain TCP with tokio's own
    /// plain server.
    fn plain_connections(&self, count: usize) -> f64 {
        self.sequential(self.plain, count, Security::Plain)
    }

    /// Connections/s of `count` sequential one-byte echoes with the server at `address`.
    fn sequential(&self, address: std::net::SocketAddr, count: usize, security: Security) -> f64 {
        let start = Instant::now();
        self.runtime.block_on(async {
            for _ in 0..count {
                assert_eq!(self.client(address, 1, security).await, 1);
            }
        });
        count as f64 / start.elapsed().as_secs_f64()
    }
}

/// The medians of each side's figures and of the rounds' own ratios.
fn summary((weir, tokio): (Vec<f64>, Vec<f64>)) -> (f64, f64, f64) {
    let ratio = paired_ratio(&weir, &tokio);
    (median(weir), median(tokio), ratio)
}

/// `--serve weir|tokio CERT.pem KEY.pem ADDR`: one side's echo server alone, on this
/// thread, until killed.
fn serve(
    side: &str,
    cert: &str,
    key: &str,
    address: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let identity = Identity {
        cert_pem: std::fs::read(cert)?,
        key_pem: std::fs::read(key)?,
    };
    let version = match side {
        "weir" => weir_tls::TlsVersion::Tls12,
        "weir-tls13" => weir_tls::TlsVersion::Tls13,
        "tokio" | "tokio-openssl" => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            return Ok(runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(address).await?;
                println!("listening on {}", listener.local_addr()?);
                let acceptor = if side == "tokio" {
                    tokio_acceptor(&identity)
                } else {
                    tokio_openssl_acceptor(&identity)
                };
                tokio_serve(listener, acceptor);
                std::future::pending::<io::Result<()>>().await
            })?);
        }
        _ => {
            let sides = "weir, weir-tls13, tokio or tokio-openssl";
            return Err(format!("--serve takes {sides}, not {side:?}").into());
        }
    };
    let reactor = Reactor::new()?;
    let listener = weir_server(&reactor, &address.parse()?, &identity, version)?;
    println!("listening on {}", listener.local_address());
    reactor.run()?;
    Ok(())
}

/// One `openssl s_time -new` run of `secs` seconds against `server`: handshakes/s, and the
/// server's CPU time per handshake in microseconds.
fn s_time(server: &Server, secs: u64) -> io::Result<(f64, f64)> {
    let cpu_before = server.cpu_time();
    let start = Instant::now();
    let output = Command::new("openssl")
        .args(["s_time", "-new", "-connect"])
        .arg(server.address.to_string())
        .arg("-time")
        .arg(secs.to_string())
        .stderr(Stdio::null())
        .output()?;
    let elapsed = start.elapsed();
    let cpu = server.cpu_time().saturating_sub(cpu_before);
    let text = String::from_utf8_lossy(&output.stdout);
    // "N connections in 3.01s; ..." (the first such line; the second repeats N).
    let count = text
        .lines()
        .find_map(|l| {
            l.split_once(" connections in ")?
                .0
                .trim()
                .parse::<u64>()
                .ok()
        })
        .filter(|&n| n > 0)
        .ok_or_else(|| io::Error::other(format!("{}: s_time said {text:?}", server.name)))?;
    Ok((
        count as f64 / elapsed.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / count as f64,
    ))
}

/// The test identity in files for the server processes, in a directory removed on drop.
struct IdentityFiles {
    /// The directory.
    dir: PathBuf,
}

impl IdentityFiles {
    /// Writes [`Identity::localhost`] to a new directory under the system's temporary one.
    fn write() -> io::Result<IdentityFiles> {
        let dir = std::env::temp_dir().join(format!("weir-tls-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let files = IdentityFiles { dir };
        let identity = Identity::localhost();
        std::fs::write(files.cert(), identity.cert_pem)?;
        std::fs::write(files.key(), identity.key_pem)?;
        Ok(files)
    }

    /// The certificate chain's file.
    fn cert(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// The private key's file.
    fn key(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    /// Starts `side`'s echo server (`--serve`) as its own process on CPU 0.
    fn serve(&self, side: &'static str) -> io::Result<Server> {
        let (cert, key) = (self.cert(), self.key());
        let args: [&OsStr; 4] = [
            "--serve".as_ref(),
            side.as_ref(),
            cert.as_ref(),
            key.as_ref(),
        ];
        Server::start(side, "tls_bench", &args)
    }
}

impl Drop for IdentityFiles {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// CPU time so far of this process's threads that `pick` chooses by name and thread id
/// (`/proc/self/task/*/comm` and `schedstat`).
fn own_cpu(pick: impl Fn(&str, u32) -> bool) -> Duration {
    let tasks = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten();
    let nanos: u64 = tasks
        .filter(|task| {
            let tid = task.file_name().to_str().and_then(|t| t.parse().ok());
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            tid.is_some_and(|tid| pick(name.trim(), tid))
        })
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|stat| stat.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(nanos)
}

/// `count` handshakes with `run`, timed, and the CPU time of the threads `pick` chooses:
/// handshakes/s and CPU microseconds per handshake.
fn timed_cpu(
    count: usize,
    run: impl FnOnce() -> f64,
    pick: impl Fn(&str, u32) -> bool,
) -> (f64, f64) {
    let before = own_cpu(&pick);
    let rate = run();
    let cpu = own_cpu(&pick).saturating_sub(before);
    (rate, cpu.as_secs_f64() * 1e6 / count as f64)
}

/// The clients alone, on CPU 1 (weir's reactor thread; tokio's runtime on the main thread),
/// against one server for both: tokio's, in its own process on CPU 0.
fn client_rounds(
    weir: &WeirSide,
    tokio: &TokioSide,
    files: &IdentityFiles,
    rounds: u64,
    count: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let server = files.serve("tokio")?;
    let target = weir_sock::Address::Tcp(server.address);
    let main_thread = std::process::id();
    let (w, t) = alternate(
        rounds,
        Some(|| {
            let run = || weir.handshakes_with(&target, count);
            timed_cpu(count, run, |name, _| name == "weir-reactor")
        }),
        Some(|| {
            let run = || tokio.handshakes_with(server.address, count);
            timed_cpu(count, run, |_, tid| tid == main_thread)
        }),
    );
    let runs = [w, t];
    print_runs(
        &format!(
            "TLS clients alone on CPU 1, each side's against tokio's echo server in its own \
             process on CPU 0; {rounds} alternating rounds of {count} sequential handshakes"
        ),
        "client",
        runs,
    );
    Ok(())
}

/// The servers alone under `openssl s_time`, `rounds` rounds of `secs` seconds each: weir's
/// and tokio's `--serve` sides, as `sides` names them, at the TLS version `version` names.
fn server_rounds(
    files: &IdentityFiles,
    sides: [&'static str; 2],
    version: &str,
    rounds: u64,
    secs: u64,
) -> Result<(), Box<dyn std::error::Error>> {
    let servers = [files.serve(sides[0])?, files.serve(sides[1])?];
    let runs = alternate_servers(rounds, &servers, |server| s_time(server, secs))?;
    print_runs(
        &format!(
            "{version} echo servers alone ({} against {}), each its own process on CPU 0, under \
             `openssl s_time -new` (one connection at a time) on CPU 1; {rounds} alternating \
             rounds of {secs} s",
            sides[0], sides[1]
        ),
        "server",
        runs,
    );
    Ok(())
}

/// From paired runs of (handshakes/s, CPU µs per handshake) of weir (`runs[0]`) and tokio
/// (`runs[1]`): the rows of the rates (ratio weir/tokio) and of the CPU (ratio tokio/weir, so
/// that above 1.0 is weir's lead in both).
fn rate_and_cpu(runs: [Vec<(f64, f64)>; 2]) -> ((f64, f64, f64), (f64, f64, f64)) {
    let [(w_rate, w_cpu), (t_rate, t_cpu)]: [(Vec<f64>, Vec<f64>); 2] =
        runs.map(|side| side.into_iter().unzip());
    let cpu_ratio = paired_ratio(&t_cpu, &w_cpu);
    (
        summary((w_rate, t_rate)),
        (median(w_cpu), median(t_cpu), cpu_ratio),
    )
}

/// Prints the table of paired runs of (handshakes/s, CPU µs per handshake) of weir (`runs[0]`)
/// and tokio (`runs[1]`); `whose` says whose CPU it is.
fn print_runs(title: &str, whose: &str, runs: [Vec<(f64, f64)>; 2]) {
    let (rate, cpu) = rate_and_cpu(runs);
    print_table(
        title,
        &[
            ("handshakes/s (weir/tokio)".into(), rate),
            (format!("{whose} CPU us/handshake (tokio/weir)"), cpu),
        ],
    );
}

/// Prints `title` and rows of (label, (weir, tokio, ratio)).
fn print_table(title: &str, rows: &[(String, (f64, f64, f64))]) {
    println!("\n{title}");
    println!("{:<36} {:>10} {:>10} {:>8}", "", "weir", "tokio", "ratio");
    for (label, (weir, tokio, ratio)) in rows {
        println!("{label:<36} {weir:>10.1} {tokio:>10.1} {ratio:>8.2}");
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, side, cert, key, address] = args.as_slice() {
        if flag == "--serve" {
            return serve(side, cert, key, address);
        }
    }
    if taskset_works() {
        pin_self(0);
    }
    let only = std::env::var("TLS_BENCH_ONLY").unwrap_or_default();
    let bulk_bytes = setting("TLS_BENCH_BULK_MIB", 256) * 1024 * 1024;
    let bulk_rounds = setting("TLS_BENCH_BULK_ROUNDS", 5);
    let handshake_rounds = setting("TLS_BENCH_ROUNDS", 25);
    let handshakes = setting("TLS_BENCH_HANDSHAKES", 100) as usize;
    let weir = (only != "tokio").then(WeirSide::new);
    let tokio = (only != "weir").then(TokioSide::new);
    // Alternating rounds of one figure on each side that was set up.
    let both = |rounds, w: &dyn Fn(&WeirSide) -> f64, t: &dyn Fn(&TokioSide) -> f64| {
        summary(alternate(
            rounds,
            weir.as_ref().map(|side| move || w(side)),
            tokio.as_ref().map(|side| move || t(side)),
        ))
    };
    let bulk = both(bulk_rounds, &|s| s.bulk(bulk_bytes), &|s| {
        s.bulk(bulk_bytes)
    });
    // Handshake rounds that also take each side's CPU time (weir's reactor thread, tokio's
    // runtime on the main thread): whether a gap in the rate is work or waiting.
    let main_thread = std::process::id();
    let with_cpu = |w: &dyn Fn(&WeirSide) -> f64, t: &dyn Fn(&TokioSide) -> f64| {
        let (w, t) = alternate(
            handshake_rounds,
            weir.as_ref().map(|side| {
                move || timed_cpu(handshakes, || w(side), |name, _| name == "weir-reactor")
            }),
            tokio
                .as_ref()
                .map(|side| move || timed_cpu(handshakes, || t(side), |_, tid| tid == main_thread)),
        );
        rate_and_cpu([w, t])
    };
    let (rate, rate_cpu) = with_cpu(&|s| s.handshakes(handshakes), &|s| s.handshakes(handshakes));
    let plain = both(
        handshake_rounds,
        &|s| s.plain_connections(handshakes),
        &|s| s.plain_connections(handshakes),
    );
    let bulk13 = both(bulk_rounds, &|s| s.bulk13(bulk_bytes), &|s| {
        s.bulk13(bulk_bytes)
    });
    let (rate13, rate13_cpu) = with_cpu(&|s| s.handshakes13(handshakes), &|s| {
        s.handshakes13(handshakes)
    });
    // What TLS adds to a connection: microseconds per connection with it, less without.
    let tls_cost = |handshakes: f64, connections: f64| 1e6 / handshakes - 1e6 / connections;
    let (weir_cost, tokio_cost) = (tls_cost(rate.0, plain.0), tls_cost(rate.1, plain.1));
    print_table(
        "TLS echo on loopback, client and server on one reactor thread / one current-thread \
         runtime, on CPU 0; medians of alternating rounds, ratio = median of the rounds' own \
         ratios",
        &[
            (
                format!("bulk echo MiB/s ({bulk_rounds} x {} MiB)", bulk_bytes >> 20),
                bulk,
            ),
            (
                format!("handshakes/s ({handshake_rounds} x {handshakes})"),
                rate,
            ),
            ("CPU us/handshake (tokio/weir)".into(), rate_cpu),
            (
                format!("same over plain TCP, conn/s ({handshake_rounds} x {handshakes})"),
                plain,
            ),
            (
                "TLS's part, us/conn (tokio/weir)".into(),
                (weir_cost, tokio_cost, tokio_cost / weir_cost),
            ),
        ],
    );
    print_table(
        "The same at TLS 1.3 (TLS_AES_256_GCM_SHA384), weir's defaults against tokio + \
         tokio-openssl",
        &[
            (
                format!("bulk echo MiB/s ({bulk_rounds} x {} MiB)", bulk_bytes >> 20),
                bulk13,
            ),
            (
                format!("handshakes/s ({handshake_rounds} x {handshakes})"),
                rate13,
            ),
            ("CPU us/handshake (tokio/weir)".into(), rate13_cpu),
        ],
    );
    let server_rounds_wanted = setting("TLS_BENCH_SERVER_ROUNDS", 6);
    if server_rounds_wanted == 0 {
        return Ok(());
    }
    let files = IdentityFiles::write()?;
    let pinned = taskset_works() && pin_self(1);
    if !pinned {
        println!("\n(taskset unavailable: nothing below is pinned)");
    }
    if let (Some(weir), Some(tokio)) = (&weir, &tokio) {
        client_rounds(weir, tokio, &files, handshake_rounds, handshakes)?;
    }
    drop((weir, tokio));
    let openssl_found = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !openssl_found {
        println!("\nservers alone: skipped (no `openssl` command for s_time)");
        return Ok(());
    }
    let secs = setting("TLS_BENCH_SERVER_SECS", 3);
    let sides = ["weir", "tokio"];
    server_rounds(&files, sides, "TLS 1.2", server_rounds_wanted, secs)?;
    let sides = ["weir-tls13", "tokio-openssl"];
    server_rounds(&files, sides, "TLS 1.3", server_rounds_wanted, secs)
}
