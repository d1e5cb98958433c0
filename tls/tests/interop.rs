//! Interop with peers we did not write: our client session against `openssl s_server`, our
//! server session against `openssl s_client`, each over a real loopback TCP connection pumped
//! by a small blocking driver.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{client_trusting_ca, pki, ChildGuard, SServer};
use weir_tls::{
    TlsClientConfig, TlsClientConfigBuilder, TlsError, TlsEvent, TlsIdentity, TlsSession,
    TlsVersion,
};

/// Upper bound for any single wait in these tests; reached only when something is broken.
const DEADLINE: Duration = Duration::from_secs(20);

/// Writes `bytes` to `dir/name` and returns the path as a string for the command line.
fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_string()
}

/// Starts `openssl` with `args`; panics with a clear message if the CLI is missing.
fn spawn_openssl(args: &[&str], stdin: Stdio, stdout: Stdio) -> ChildGuard {
    let child = Command::new("openssl")
        .args(args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the openssl command line tool is needed for the interop tests");
    ChildGuard(child)
}

/// A blocking driver: moves bytes between one session and one TCP stream.
struct SocketPump {
    session: TlsSession,
    stream: TcpStream,
    received: Vec<u8>,
    events: Vec<TlsEvent>,
    transport_ended: bool,
}

impl SocketPump {
    fn new(session: TlsSession, stream: TcpStream) -> Self {
        // The timeout only paces the loop; every wait is bounded by `run_until`.
        stream
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        SocketPump {
            session,
            stream,
            received: Vec::new(),
            events: Vec::new(),
            transport_ended: false,
        }
    }

    /// Drains every output of the session.
    fn drain(&mut self) {
        while let Some(ciphertext) = self.session.poll_ciphertext() {
            // The peer may be gone already; what it misses is its business.
            let _ = self.stream.write_all(&ciphertext);
        }
        while let Some(plaintext) = self.session.poll_plaintext(64 * 1024) {
            self.received.extend_from_slice(&plaintext);
        }
        while let Some(event) = self.session.poll_event() {
            self.events.push(event);
        }
    }

    /// One round: drain outputs, read the socket once, feed the session, drain again.
    fn step(&mut self) {
        self.drain();
        let room = self.session.ciphertext_capacity().min(16 * 1024);
        if !self.transport_ended && room > 0 {
            let mut buf = vec![0; room];
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.transport_ended = true;
                    self.session.handle_transport_end();
                }
                Ok(n) => assert_eq!(self.session.handle_ciphertext(&buf[..n]), n),
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(_) => {
                    self.transport_ended = true;
                    self.session.handle_transport_end();
                }
            }
        }
        self.drain();
    }

    fn run_until(&mut self, what: &str, mut done: impl FnMut(&SocketPump) -> bool) {
        let start = Instant::now();
        while !done(self) {
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}; events {:?}, received {:?}",
                self.events,
                String::from_utf8_lossy(&self.received)
            );
            self.step();
        }
    }

    fn failure(&self) -> Option<&TlsError> {
        self.events.iter().find_map(|e| match e {
            TlsEvent::Failed(error) => Some(error),
            _ => None,
        })
    }

    fn has(&self, wanted: fn(&TlsEvent) -> bool) -> bool {
        self.events.iter().any(wanted)
    }
}

#[test]
fn client_session_against_openssl_s_server_tls13() {
    let reported = client_session_against_openssl_s_server(&[], |config| config);
    assert!(reported.contains("Protocol version: TLSv1.3"), "{reported}");
}

#[test]
fn client_session_against_openssl_s_server_tls12() {
    let reported = client_session_against_openssl_s_server(&["-tls1_2"], |config| config);
    assert!(reported.contains("Protocol version: TLSv1.2"), "{reported}");
}

/// A client held to TLS 1.2 gets 1.2 from a server that would speak 1.3.
#[test]
fn client_session_held_to_tls12_against_openssl_s_server() {
    let reported = client_session_against_openssl_s_server(&[], |config| {
        config.with_max_version(TlsVersion::Tls12)
    });
    assert!(reported.contains("Protocol version: TLSv1.2"), "{reported}");
}

/// A client identity is presented when the server asks for one, with its chain: s_server,
/// trusting nothing, meets the CA at depth 1, so the intermediate went out after the leaf.
/// (The client trusts no root here, else OpenSSL would complete the chain from its roots
/// whatever the identity holds; so it does not check the server's certificate either.)
#[test]
fn client_session_presents_its_identity_to_openssl_s_server() {
    let pki = pki();
    let mut chain = pki.localhost.cert_pem.clone();
    chain.extend_from_slice(&pki.ca.cert_pem);
    let identity = TlsIdentity::from_pem(&chain, &pki.localhost.key_pem).unwrap();
    let reported = client_session_against_openssl_s_server(&["-verify", "2"], |_| {
        TlsClientConfig::builder()
            .without_built_in_roots()
            .danger_accept_invalid_certs(true)
            .with_client_identity(identity)
    });
    assert!(
        reported.contains("Peer certificate: CN = localhost"),
        "{reported}"
    );
    assert!(reported.contains("depth=1 CN = weir test CA"), "{reported}");
}

/// Handshake with SNI, a line each way, close_notify both ways; `extra` goes to s_server, and
/// `configure` adds to the client's config. Returns s_server's standard error, where in
/// `-rev` mode it reports the connection (`Protocol version: ...`).
fn client_session_against_openssl_s_server(
    extra: &[&str],
    configure: impl FnOnce(TlsClientConfigBuilder) -> TlsClientConfigBuilder,
) -> String {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    // The default certificate is self-signed: a client that did not send SNI would get it
    // and reject it. Only SNI "localhost" selects the CA-signed one.
    let default_cert = write_file(dir.path(), "default.pem", &pki.self_signed.cert_pem);
    let default_key = write_file(dir.path(), "default.key", &pki.self_signed.key_pem);
    let sni_cert = write_file(dir.path(), "localhost.pem", &pki.localhost.cert_pem);
    let sni_key = write_file(dir.path(), "localhost.key", &pki.localhost.key_pem);
    let mut args = vec![
        "-naccept",
        "1",
        "-rev",
        "-cert",
        &default_cert,
        "-key",
        &default_key,
        "-servername",
        "localhost",
        "-cert2",
        &sni_cert,
        "-key2",
        &sni_key,
    ];
    args.extend_from_slice(extra);
    let SServer {
        child: mut server,
        port,
        ..
    } = SServer::start(&args, Stdio::null());
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();

    // (No ALPN here: s_server does not answer ALPN on its SNI-selected context. The server
    // test below covers ALPN against s_client.)
    let config = configure(client_trusting_ca()).build().unwrap();
    let session = TlsSession::client(&config, "localhost").unwrap();
    let mut pump = SocketPump::new(session, stream);
    // Written before the handshake is done.
    pump.session.write_plaintext(b"hello weir\n").unwrap();
    pump.run_until("the reversed line", |p| {
        p.failure().is_some() || p.received.ends_with(b"riew olleh\n")
    });
    assert!(pump.failure().is_none(), "{:?}", pump.events);
    let info = pump.session.handshake_info().unwrap();
    let leaf = openssl::x509::X509::from_pem(&pki.localhost.cert_pem).unwrap();
    assert_eq!(
        info.peer_certificate_der(),
        Some(&leaf.to_der().unwrap()[..])
    );

    // In -rev mode, a "CLOSE" line makes s_server send close_notify.
    pump.session.write_plaintext(b"CLOSE\n").unwrap();
    pump.run_until("close_notify from s_server", |p| {
        p.failure().is_some() || p.has(|e| matches!(e, TlsEvent::PeerClosed))
    });
    assert!(pump.failure().is_none(), "{:?}", pump.events);
    assert!(!pump.has(|e| matches!(e, TlsEvent::Truncated)));
    pump.session.close();
    pump.drain();
    assert!(pump.session.is_finished());
    let status = server.wait();
    let stderr = server.stderr();
    assert!(status.success(), "{stderr}");
    stderr
}

#[test]
fn client_session_rejects_expired_certificate_from_openssl_s_server() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let cert = write_file(dir.path(), "expired.pem", &pki.expired.cert_pem);
    let key = write_file(dir.path(), "expired.key", &pki.expired.key_pem);
    let SServer {
        child: mut server,
        port,
        ..
    } = SServer::start(
        &["-naccept", "1", "-rev", "-cert", &cert, "-key", &key],
        Stdio::null(),
    );
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let config = client_trusting_ca().build().unwrap();
    let mut pump = SocketPump::new(TlsSession::client(&config, "localhost").unwrap(), stream);
    pump.run_until("the verification failure", |p| p.failure().is_some());
    assert!(
        matches!(pump.failure(), Some(TlsError::CertificateExpired { .. })),
        "{:?}",
        pump.events
    );
    // The alert went out; s_server ends its connection instead of waiting for us.
    server.wait();
}

#[test]
fn server_session_against_openssl_s_client_speaks_tls13() {
    let stderr = server_session_against_openssl_s_client(None);
    assert!(stderr.contains("Protocol version: TLSv1.3"), "{stderr}");
}

/// Held to TLS 1.2, the server chooses as native-tls's acceptor does (its own preference
/// first: ChaCha20-Poly1305 with an ECDSA key).
#[test]
fn server_session_held_to_tls12_against_openssl_s_client() {
    let stderr = server_session_against_openssl_s_client(Some(TlsVersion::Tls12));
    assert!(stderr.contains("Protocol version: TLSv1.2"), "{stderr}");
    assert!(
        stderr.contains("Ciphersuite: ECDHE-ECDSA-CHACHA20-POLY1305"),
        "{stderr}"
    );
}

/// A line each way with ALPN, close_notify from us; the server held to `max_version` if
/// given. Returns s_client's standard error, where `-brief` reports the connection.
fn server_session_against_openssl_s_client(max_version: Option<TlsVersion>) -> String {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    let ca = write_file(dir.path(), "ca.pem", &pki.ca.cert_pem);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let connect = format!("127.0.0.1:{}", listener.local_addr().unwrap().port());
    let mut client = spawn_openssl(
        &[
            "s_client",
            "-connect",
            &connect,
            "-servername",
            "localhost",
            "-verify_hostname",
            "localhost",
            "-CAfile",
            &ca,
            "-verify_return_error",
            "-alpn",
            "weir/1",
            "-brief",
            "-ign_eof",
        ],
        Stdio::piped(),
        Stdio::piped(),
    );
    // s_client reads its stdin and sends it; -ign_eof keeps the connection open after stdin
    // ends.
    let mut stdin = client.0.stdin.take().unwrap();
    stdin.write_all(b"ping from s_client\n").unwrap();
    drop(stdin);
    let mut stdout = client.0.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        out
    });

    listener.set_nonblocking(true).unwrap();
    let start = Instant::now();
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                if let Some(status) = client.0.try_wait().unwrap() {
                    panic!("s_client exited early ({status}): {}", client.stderr());
                }
                assert!(start.elapsed() < DEADLINE, "s_client never connected");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(error) => panic!("accept: {error}"),
        }
    };
    stream.set_nonblocking(false).unwrap();

    let mut config = weir_tls::TlsServerConfig::builder(pki.localhost.identity())
        .with_alpn_protocols(&["weir/1"]);
    if let Some(version) = max_version {
        config = config.with_max_version(version);
    }
    let config = config.build().unwrap();
    let mut pump = SocketPump::new(TlsSession::server(&config).unwrap(), stream);
    pump.run_until("the line from s_client", |p| {
        p.failure().is_some() || p.received.ends_with(b"\n")
    });
    assert!(pump.failure().is_none(), "{:?}", pump.events);
    assert_eq!(pump.received, b"ping from s_client\n");
    let info = pump.session.handshake_info().unwrap();
    assert_eq!(info.alpn_protocol(), Some(&b"weir/1"[..]));

    pump.session.write_plaintext(b"pong from weir\n").unwrap();
    pump.session.close();
    // s_client exits on our close_notify, answering with its own or just closing TCP.
    pump.run_until("the end of the connection", |p| {
        p.session.is_read_closed() || p.transport_ended
    });
    let status = client.wait();
    let out = reader.join().unwrap();
    assert!(
        out.windows(15).any(|w| w == b"pong from weir\n"),
        "s_client printed {:?}; stderr {}",
        String::from_utf8_lossy(&out),
        client.stderr()
    );
    let stderr = client.stderr();
    assert!(status.success(), "s_client failed: {stderr}");
    assert!(pump.failure().is_none(), "{:?}", pump.events);
    stderr
}
