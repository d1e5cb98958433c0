//! Shared test helpers: certificates made on the fly, and an in-memory wire between two
//! sessions.

#![allow(dead_code, unreachable_pub)]

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Name, X509};
use weir_tls::{
    TlsClientConfig, TlsClientConfigBuilder, TlsError, TlsEvent, TlsIdentity, TlsServerConfig,
    TlsSession,
};

/// A certificate and its PKCS#8 key, both PEM.
#[derive(Clone)]
pub struct CertKey {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    cert: X509,
    key: PKey<Private>,
}

impl CertKey {
    pub fn identity(&self) -> TlsIdentity {
        TlsIdentity::from_pem(&self.cert_pem, &self.key_pem).expect("identity from PEM")
    }

    pub fn server_config(&self) -> TlsServerConfig {
        TlsServerConfig::builder(self.identity())
            .build()
            .expect("server config")
    }

    /// A PKCS#12 archive of this key and certificate, with `ca` as extra chain certificate.
    pub fn pkcs12(&self, password: &str, ca: &CertKey) -> Vec<u8> {
        let mut chain = openssl::stack::Stack::new().unwrap();
        chain.push(ca.cert.clone()).unwrap();
        Pkcs12::builder()
            .name("weir test")
            .pkey(&self.key)
            .cert(&self.cert)
            .ca(chain)
            .build2(password)
            .unwrap()
            .to_der()
            .unwrap()
    }
}

/// The certificates every test uses.
pub struct Pki {
    /// A CA, self-signed.
    pub ca: CertKey,
    /// A server certificate for "localhost", signed by `ca`, valid now.
    pub localhost: CertKey,
    /// Like `localhost` but expired yesterday.
    pub expired: CertKey,
    /// A self-signed certificate for "localhost".
    pub self_signed: CertKey,
    /// A client certificate ("weir test client", `clientAuth`), signed by `ca`, valid now.
    pub client: CertKey,
    /// Like `client` but expired yesterday.
    pub client_expired: CertKey,
    /// A self-signed client certificate.
    pub client_self_signed: CertKey,
}

/// What [`make_cert`] makes.
#[derive(Clone, Copy)]
enum Kind<'a> {
    /// A CA.
    Ca,
    /// A server leaf for this DNS name.
    Server(&'a str),
    /// A client leaf.
    Client,
}

/// The certificates, made once per test binary.
pub fn pki() -> &'static Pki {
    static PKI: OnceLock<Pki> = OnceLock::new();
    PKI.get_or_init(|| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let day = 86_400;
        let ca = make_cert("weir test CA", Kind::Ca, None, now - day, now + 30 * day, 1);
        let localhost = make_cert(
            "localhost",
            Kind::Server("localhost"),
            Some(&ca),
            now - day,
            now + 30 * day,
            2,
        );
        let expired = make_cert(
            "localhost",
            Kind::Server("localhost"),
            Some(&ca),
            now - 30 * day,
            now - day,
            3,
        );
        let self_signed = make_cert(
            "localhost",
            Kind::Server("localhost"),
            None,
            now - day,
            now + 30 * day,
            4,
        );
        let client_cn = "weir test client";
        let client = make_cert(
            client_cn,
            Kind::Client,
            Some(&ca),
            now - day,
            now + 30 * day,
            5,
        );
        let client_expired = make_cert(
            client_cn,
            Kind::Client,
            Some(&ca),
            now - 30 * day,
            now - day,
            6,
        );
        let client_self_signed =
            make_cert(client_cn, Kind::Client, None, now - day, now + 30 * day, 7);
        Pki {
            ca,
            localhost,
            expired,
            self_signed,
            client,
            client_expired,
            client_self_signed,
        }
    })
}

/// Makes a P-256 certificate of `kind`, signed by `issuer`, or self-signed.
fn make_cert(
    cn: &str,
    kind: Kind<'_>,
    issuer: Option<&CertKey>,
    not_before: i64,
    not_after: i64,
    serial: u32,
) -> CertKey {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let name = name.build();

    let mut builder = X509::builder().unwrap();
    builder.set_version(2).unwrap();
    let serial = BigNum::from_u32(serial).unwrap().to_asn1_integer().unwrap();
    builder.set_serial_number(&serial).unwrap();
    builder.set_subject_name(&name).unwrap();
    match issuer {
        Some(issuer) => builder.set_issuer_name(issuer.cert.subject_name()).unwrap(),
        None => builder.set_issuer_name(&name).unwrap(),
    }
    builder.set_pubkey(&key).unwrap();
    builder
        .set_not_before(&Asn1Time::from_unix(not_before).unwrap())
        .unwrap();
    builder
        .set_not_after(&Asn1Time::from_unix(not_after).unwrap())
        .unwrap();

    if let Kind::Ca = kind {
        builder
            .append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
        builder
            .append_extension(
                KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .build()
                    .unwrap(),
            )
            .unwrap();
    } else {
        builder
            .append_extension(BasicConstraints::new().build().unwrap())
            .unwrap();
        builder
            .append_extension(
                KeyUsage::new()
                    .critical()
                    .digital_signature()
                    .build()
                    .unwrap(),
            )
            .unwrap();
        let mut usage = ExtendedKeyUsage::new();
        match kind {
            Kind::Client => usage.client_auth(),
            _ => usage.server_auth(),
        };
        builder.append_extension(usage.build().unwrap()).unwrap();
    }
    let ski = SubjectKeyIdentifier::new()
        .build(&builder.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))
        .unwrap();
    builder.append_extension(ski).unwrap();
    if let Some(issuer) = issuer {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(false)
            .build(&builder.x509v3_context(Some(&issuer.cert), None))
            .unwrap();
        builder.append_extension(aki).unwrap();
    }
    if let Kind::Server(san) = kind {
        let ext = SubjectAlternativeName::new()
            .dns(san)
            .build(&builder.x509v3_context(issuer.map(|i| i.cert.as_ref()), None))
            .unwrap();
        builder.append_extension(ext).unwrap();
    }
    let signing_key = issuer.map(|i| &i.key).unwrap_or(&key);
    builder.sign(signing_key, MessageDigest::sha256()).unwrap();
    let cert = builder.build();
    CertKey {
        cert_pem: cert.to_pem().unwrap(),
        key_pem: key.private_key_to_pem_pkcs8().unwrap(),
        cert,
        key,
    }
}

/// A client config builder that trusts only the test CA.
pub fn client_trusting_ca() -> TlsClientConfigBuilder {
    TlsClientConfig::builder()
        .without_built_in_roots()
        .with_root_certificate_pem(&pki().ca.cert_pem)
}

/// Everything one side of a [`Pair`] has seen.
#[derive(Default)]
pub struct Side {
    /// Plaintext read so far.
    pub received: Vec<u8>,
    /// Events, in order.
    pub events: Vec<TlsEvent>,
    /// Whether the pump reads this side's plaintext.
    pub paused: bool,
}

impl Side {
    pub fn handshake_done(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, TlsEvent::HandshakeDone(_)))
    }

    pub fn failure(&self) -> Option<&TlsError> {
        self.events.iter().find_map(|e| match e {
            TlsEvent::Failed(error) => Some(error),
            _ => None,
        })
    }

    pub fn peer_closed(&self) -> bool {
        self.events
            .iter()
            .any(|e| matches!(e, TlsEvent::PeerClosed))
    }

    pub fn truncated(&self) -> bool {
        self.events.iter().any(|e| matches!(e, TlsEvent::Truncated))
    }

    pub fn is_over(&self) -> bool {
        self.failure().is_some() || self.truncated()
    }
}

/// Two sessions joined by an in-memory wire, pumped step by step.
pub struct Pair {
    pub client: TlsSession,
    pub server: TlsSession,
    /// Ciphertext on its way from client to server.
    pub to_server: BytesMut,
    /// Ciphertext on its way from server to client.
    pub to_client: BytesMut,
    pub client_side: Side,
    pub server_side: Side,
    /// The pump stops draining a session's ciphertext while its wire holds this much: a
    /// transport with finite room.
    pub wire_limit: usize,
}

impl Pair {
    pub fn new(client: TlsSession, server: TlsSession) -> Self {
        Pair {
            client,
            server,
            to_server: BytesMut::new(),
            to_client: BytesMut::new(),
            client_side: Side::default(),
            server_side: Side::default(),
            wire_limit: 256 * 1024,
        }
    }

    /// A client for "localhost" trusting the test CA, against a server presenting `localhost`.
    pub fn localhost() -> Self {
        let client_config = client_trusting_ca().build().unwrap();
        let client = TlsSession::client(&client_config, "localhost").unwrap();
        let server = TlsSession::server(&pki().localhost.server_config()).unwrap();
        Pair::new(client, server)
    }

    /// Moves bytes one round: drains ciphertext onto the wire, feeds what each side accepts,
    /// reads plaintext on unpaused sides, collects events. Returns whether anything moved.
    pub fn step(&mut self) -> bool {
        let mut moved = false;
        while self.to_server.len() < self.wire_limit {
            let Some(bytes) = self.client.poll_ciphertext() else {
                break;
            };
            self.to_server.extend_from_slice(&bytes);
        }
        while self.to_client.len() < self.wire_limit {
            let Some(bytes) = self.server.poll_ciphertext() else {
                break;
            };
            self.to_client.extend_from_slice(&bytes);
        }
        let n = self.server.handle_ciphertext(&self.to_server);
        self.to_server.advance(n);
        moved |= n > 0;
        let n = self.client.handle_ciphertext(&self.to_client);
        self.to_client.advance(n);
        moved |= n > 0;
        moved |= drain(&mut self.client, &mut self.client_side);
        moved |= drain(&mut self.server, &mut self.server_side);
        moved
    }

    /// Steps until `done` holds; panics after `max_steps` or when nothing moves any more.
    pub fn run_until(&mut self, max_steps: usize, mut done: impl FnMut(&Pair) -> bool) {
        for _ in 0..max_steps {
            if done(self) {
                return;
            }
            if !self.step() && !done(self) {
                panic!(
                    "stalled: client events {:?}, server events {:?}",
                    self.client_side.events, self.server_side.events
                );
            }
        }
        assert!(done(self), "step limit reached");
    }

    /// Runs the handshake to the end (success or failure on both sides).
    pub fn handshake(&mut self) {
        self.run_until(100, |p| {
            let client_done = p.client_side.handshake_done() || p.client_side.is_over();
            let server_done = p.server_side.handshake_done() || p.server_side.is_over();
            client_done && server_done
        });
    }
}

/// Reads plaintext (unless paused) and events from one session; returns whether any came.
fn drain(session: &mut TlsSession, side: &mut Side) -> bool {
    let mut moved = false;
    if !side.paused {
        while let Some(bytes) = session.poll_plaintext(64 * 1024) {
            side.received.extend_from_slice(&bytes);
            moved = true;
        }
    }
    while let Some(event) = session.poll_event() {
        side.events.push(event);
        moved = true;
    }
    moved
}

/// Deterministic test data: `len` bytes from a seeded generator.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            (state >> 24) as u8
        })
        .collect()
}

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct ChildGuard(pub std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ChildGuard {
    /// Waits for the child to exit, at most a minute (reached only when something is broken).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                start.elapsed() < std::time::Duration::from_secs(60),
                "child process did not exit"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// The child's stderr, once it has exited.
    pub fn stderr(&mut self) -> String {
        use std::io::Read;
        let mut text = String::new();
        if let Some(stderr) = self.0.stderr.as_mut() {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    }

    /// Drops the child's stdin: its end of file.
    pub fn close_stdin(&mut self) {
        drop(self.0.stdin.take());
    }
}

/// Reads `output` (a child's standard output or error) line by line on a thread, to the end;
/// [`wait_for`] consumes the lines. The child never blocks on a full pipe, whether or not
/// anyone reads the lines.
pub fn lines(output: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(output);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap_or(0) > 0 {
            // A receiver that is gone only means nobody wants the rest: keep draining.
            let _ = tx.send(std::mem::take(&mut line));
        }
    });
    rx
}

/// Takes lines until one contains `needle`; returns everything taken. Stops early at the end
/// of the output or after a minute (reached only when something is broken).
pub fn wait_for(lines: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut text = String::new();
    while let Ok(line) =
        lines.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
    {
        text.push_str(&line);
        if line.contains(needle) {
            break;
        }
    }
    text
}

/// An `openssl s_server` listening on a loopback port that the OS chose for it.
pub struct SServer {
    /// The process.
    pub child: ChildGuard,
    /// The port it listens on, from its `ACCEPT` line.
    pub port: u16,
    /// Its standard output after the `ACCEPT` line.
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl SServer {
    /// Starts `openssl s_server -accept 127.0.0.1:0 ARGS` and returns once it listens.
    ///
    /// The OS picks the port and s_server prints it (`ACCEPT 127.0.0.1:PORT`, so `ARGS` must
    /// not hold `-quiet`); the caller connects once, with no retry loop. A port the test picks
    /// and hands over is free only until someone else takes it, and a connect retried until
    /// s_server listens can reach whoever that is: the interop tests failed about once in
    /// twenty runs that way, with the handshake cut short and s_server never seeing a
    /// connection.
    ///
    /// # Panics
    ///
    /// If the `openssl` tool is missing or s_server exits before it listens.
    pub fn start(args: &[&str], stdin: std::process::Stdio) -> SServer {
        let mut child = ChildGuard(
            std::process::Command::new("openssl")
                .args(["s_server", "-accept", "127.0.0.1:0"])
                .args(args)
                .stdin(stdin)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("the openssl command line tool is needed for the interop tests"),
        );
        let lines = lines(child.0.stdout.take().expect("stdout is piped"));
        let text = wait_for(&lines, "ACCEPT");
        let port = text
            .lines()
            .find_map(|line| line.strip_prefix("ACCEPT "))
            .and_then(|address| address.trim().rsplit(':').next()?.parse().ok());
        let Some(port) = port else {
            let _ = child.0.kill();
            panic!("s_server did not listen: {text:?} {}", child.stderr());
        };
        SServer { child, port, lines }
    }
}
