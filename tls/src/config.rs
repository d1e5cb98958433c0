//! Session configuration: [`TlsClientConfig`], [`TlsServerConfig`], the server's
//! [`TlsIdentity`] and the buffer and time bounds in [`TlsLimits`].
//!
//! A config is built once (building a client config loads the system's trusted roots, which is
//! slow) and shared by every session started from it; cloning one is cheap.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use openssl::pkey::{PKey, Private};
use openssl::ssl::{AlpnError, SslAcceptor, SslMethod, SslOptions, SslVerifyMode, SslVersion};
use openssl::x509::X509;

use crate::error::TlsError;

/// Default bound of each of the three session buffers, in bytes.
const DEFAULT_LIMIT: usize = 64 * 1024;

/// Smallest accepted bound, in bytes; smaller requests are raised to it.
const MIN_LIMIT: usize = 4 * 1024;

/// Default time a handshake may take once the transport is attached.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The bounds on the buffers a [`TlsSession`](crate::TlsSession) keeps, and on how long its
/// handshake may take.
///
/// | buffer | default | what happens at the bound |
/// |---|---|---|
/// | incoming ciphertext | 64 KiB | `handle_ciphertext` takes only [`ciphertext_capacity`] bytes |
/// | outgoing plaintext | 64 KiB | `write_plaintext` accepts only [`plaintext_capacity`] bytes |
/// | outgoing ciphertext | 64 KiB | no more plaintext is encrypted until the caller drains it |
///
/// The outgoing ciphertext queue can pass its bound by one TLS record (about 16 KiB) plus the
/// session's own messages (handshake flights, alerts, close_notify), which are small and few.
/// Decrypted plaintext is never queued by the session: OpenSSL holds at most one record, and the
/// caller reads it when it wants to.
///
/// Each bound is at least 4 KiB; smaller values are raised to that.
///
/// The handshake timeout (default 30 s) is enforced by [`TlsElement`](crate::TlsElement),
/// counted from the moment its transport attaches: a peer that connects and then says nothing,
/// or stalls half-way, ends the element with [`TlsError::HandshakeTimeout`] instead of holding
/// a connection forever. A bare `TlsSession` has no clock; its caller enforces the bound.
///
/// [`ciphertext_capacity`]: crate::TlsSession::ciphertext_capacity
/// [`plaintext_capacity`]: crate::TlsSession::plaintext_capacity
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TlsLimits {
    /// Bound of the incoming ciphertext queue, in bytes.
    incoming_ciphertext: usize,
    /// Bound of the outgoing plaintext queue, in bytes.
    outgoing_plaintext: usize,
    /// High water mark of the outgoing ciphertext queue, in bytes.
    outgoing_ciphertext: usize,
    /// How long the handshake may take, if bounded.
    handshake_timeout: Option<Duration>,
}

impl Default for TlsLimits {
    fn default() -> Self {
        TlsLimits {
            incoming_ciphertext: DEFAULT_LIMIT,
            outgoing_plaintext: DEFAULT_LIMIT,
            outgoing_ciphertext: DEFAULT_LIMIT,
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }
}

impl TlsLimits {
    /// Sets the bound of the incoming ciphertext queue (at least 4 KiB).
    pub fn with_incoming_ciphertext(mut self, bytes: usize) -> Self {
        self.incoming_ciphertext = bytes.max(MIN_LIMIT);
        self
    }

    /// Sets the bound of the outgoing plaintext queue (at least 4 KiB).
    pub fn with_outgoing_plaintext(mut self, bytes: usize) -> Self {
        self.outgoing_plaintext = bytes.max(MIN_LIMIT);
        self
    }

    /// Sets the high water mark of the outgoing ciphertext queue (at least 4 KiB).
    pub fn with_outgoing_ciphertext(mut self, bytes: usize) -> Self {
        self.outgoing_ciphertext = bytes.max(MIN_LIMIT);
        self
    }

    /// Sets how long the handshake may take once the transport is attached.
    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = Some(timeout);
        self
    }

    /// Lets the handshake take as long as the peer likes (not recommended for servers: an
    /// idle peer then holds its connection until the transport itself gives up).
    pub fn without_handshake_timeout(mut self) -> Self {
        self.handshake_timeout = None;
        self
    }

    /// How long the handshake may take, if bounded.
    pub fn handshake_timeout(&self) -> Option<Duration> {
        self.handshake_timeout
    }

    /// The bound of the incoming ciphertext queue, in bytes.
    pub fn incoming_ciphertext(&self) -> usize {
        self.incoming_ciphertext
    }

    /// The bound of the outgoing plaintext queue, in bytes.
    pub fn outgoing_plaintext(&self) -> usize {
        self.outgoing_plaintext
    }

    /// The high water mark of the outgoing ciphertext queue, in bytes.
    pub fn outgoing_ciphertext(&self) -> usize {
        self.outgoing_ciphertext
    }
}

/// A certificate chain and its private key: what a server presents to its clients, or a client
/// to a server that asks ([`TlsClientConfigBuilder::with_client_identity`]).
///
/// # Examples
///
/// ```no_run
/// use weir_tls::TlsIdentity;
///
/// use weir_tls::TlsServerConfig;
///
/// let identity = TlsIdentity::from_pem_files("server-chain.pem", "server-key.pem")?;
/// let config = TlsServerConfig::builder(identity).build()?;
/// # drop(config);
/// # Ok::<(), weir_tls::TlsError>(())
/// ```
#[derive(Clone)]
pub struct TlsIdentity {
    /// The private key.
    key: PKey<Private>,
    /// The leaf certificate.
    leaf: X509,
    /// Intermediates, in the order they are sent.
    chain: Vec<X509>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Builds an identity from a PEM certificate chain (leaf first, then intermediates) and a
    /// PEM private key: PKCS#8 (`-----BEGIN PRIVATE KEY-----`) or the traditional RSA or EC
    /// form.
    ///
    /// # Errors
    ///
    /// [`TlsError::Config`] if the PEM cannot be parsed or the chain is empty. A key that does
    /// not belong to the leaf certificate is found when a [`TlsServerConfig`] is built from the
    /// identity.
    pub fn from_pem(certificate_chain: &[u8], private_key: &[u8]) -> Result<Self, TlsError> {
        let what = "identity from PEM chain and key";
        let mut certificates = X509::stack_from_pem(certificate_chain)
            .map_err(|source| TlsError::config(what, source))?
            .into_iter();
        let leaf = certificates
            .next()
            .ok_or_else(|| TlsError::config(what, "no certificate in the chain"))?;
        let key = PKey::private_key_from_pem(private_key)
            .map_err(|source| TlsError::config(what, source))?;
        let chain = certificates.collect();
        Ok(TlsIdentity { key, leaf, chain })
    }

    /// Like [`from_pem`](Self::from_pem), reading both parts from files.
    ///
    /// # Errors
    ///
    /// [`TlsError::ReadFile`] if a file cannot be read, else as [`from_pem`](Self::from_pem).
    pub fn from_pem_files(
        certificate_chain: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let chain = read_file(certificate_chain.as_ref())?;
        let key = read_file(private_key.as_ref())?;
        Self::from_pem(&chain, &key)
    }

    /// Builds an identity from a DER-encoded PKCS#12 archive holding the key, the leaf and
    /// optionally intermediates.
    ///
    /// # Errors
    ///
    /// [`TlsError::Config`] if the archive cannot be parsed or `password` is wrong.
    pub fn from_pkcs12(der: &[u8], password: &str) -> Result<Self, TlsError> {
        let what = "identity from PKCS#12";
        let parsed = openssl::pkcs12::Pkcs12::from_der(der)
            .and_then(|archive| archive.parse2(password))
            .map_err(|source| TlsError::config(what, source))?;
        let (Some(key), Some(leaf)) = (parsed.pkey, parsed.cert) else {
            return Err(TlsError::config(
                what,
                "no key or no certificate in the archive",
            ));
        };
        // OpenSSL's parse hands the intermediates over last first.
        let chain = parsed.ca.into_iter().flatten().rev().collect();
        Ok(TlsIdentity { key, leaf, chain })
    }

    /// Like [`from_pkcs12`](Self::from_pkcs12), reading the archive from a file.
    ///
    /// # Errors
    ///
    /// [`TlsError::ReadFile`] if the file cannot be read, else as
    /// [`from_pkcs12`](Self::from_pkcs12).
    pub fn from_pkcs12_file(path: impl AsRef<Path>, password: &str) -> Result<Self, TlsError> {
        let der = read_file(path.as_ref())?;
        Self::from_pkcs12(&der, password)
    }

    /// The same identity in native-tls's form, for a client's certificate.
    fn to_native(&self) -> Result<native_tls::Identity, TlsError> {
        let what = "client identity";
        let error = |source| TlsError::config(what, source);
        let mut chain = self.leaf.to_pem().map_err(error)?;
        for certificate in &self.chain {
            chain.extend(certificate.to_pem().map_err(error)?);
        }
        let key = self.key.private_key_to_pem_pkcs8().map_err(error)?;
        native_tls::Identity::from_pkcs8(&chain, &key)
            .map_err(|source| TlsError::config(what, source))
    }
}

/// Settings shared by every client session started from it.
///
/// Safe by default: the server's certificate chain is checked against the system's trusted
/// roots, its name is checked against the name given to
/// [`TlsSession::client`](crate::TlsSession::client), and that name is sent as SNI. TLS 1.3
/// and 1.2 are offered, never 1.0 or 1.1 (RFC 8996), whatever OpenSSL's own configuration
/// says: native-tls sets the versions itself, so a configuration that allows TLS 1.3 only
/// does not hold for clients (native-tls cannot ask for 1.3 at least). Build one with
/// [`TlsClientConfig::builder`].
///
/// # Examples
///
/// ```
/// use weir_tls::{TlsClientConfig, TlsSession};
///
/// let config = TlsClientConfig::builder()
///     .with_alpn_protocols(&["h2", "http/1.1"])
///     .build()?;
/// let session = TlsSession::client(&config, "example.com")?;
/// assert!(session.is_handshaking());
/// # Ok::<(), weir_tls::TlsError>(())
/// ```
#[derive(Clone, Debug)]
pub struct TlsClientConfig {
    /// The built native-tls connector.
    pub(crate) connector: native_tls::TlsConnector,
    /// Buffer bounds for each session.
    pub(crate) limits: TlsLimits,
}

impl TlsClientConfig {
    /// Starts a builder with the safe defaults.
    pub fn builder() -> TlsClientConfigBuilder {
        TlsClientConfigBuilder::default()
    }

    /// The buffer bounds of each session.
    pub fn limits(&self) -> TlsLimits {
        self.limits
    }
}

/// Builds a [`TlsClientConfig`]; see there for the defaults.
#[derive(Clone, Debug)]
pub struct TlsClientConfigBuilder {
    /// PEM blocks of extra trusted roots, parsed by `build`.
    root_pems: Vec<Vec<u8>>,
    /// Whether the system's trusted roots are used.
    built_in_roots: bool,
    /// Whether SNI is sent.
    sni: bool,
    /// `danger_accept_invalid_certs`.
    accept_invalid_certs: bool,
    /// `danger_accept_invalid_hostnames`.
    accept_invalid_hostnames: bool,
    /// ALPN protocols offered, most preferred first.
    alpn: Vec<String>,
    /// A client certificate, if the server asks for one.
    identity: Option<TlsIdentity>,
    /// The newest protocol version offered.
    max_version: TlsVersion,
    /// Buffer bounds.
    limits: TlsLimits,
}

impl Default for TlsClientConfigBuilder {
    fn default() -> Self {
        TlsClientConfigBuilder {
            root_pems: Vec::new(),
            built_in_roots: true,
            sni: true,
            accept_invalid_certs: false,
            accept_invalid_hostnames: false,
            alpn: Vec::new(),
            identity: None,
            max_version: TlsVersion::Tls13,
            limits: TlsLimits::default(),
        }
    }
}

impl TlsClientConfigBuilder {
    /// Trusts the certificates in `pem` (one or more `-----BEGIN CERTIFICATE-----` blocks) as
    /// roots, in addition to the system's. Use it for a private CA or a pinned self-signed
    /// server certificate. Parsed by [`build`](Self::build).
    pub fn with_root_certificate_pem(mut self, pem: &[u8]) -> Self {
        self.root_pems.push(pem.to_vec());
        self
    }

    /// Trusts only the roots added with
    /// [`with_root_certificate_pem`](Self::with_root_certificate_pem), not the system's.
    pub fn without_built_in_roots(mut self) -> Self {
        self.built_in_roots = false;
        self
    }

    /// Does not send the server name (SNI) in the handshake. Names that are IP addresses are
    /// never sent anyway.
    pub fn without_sni(mut self) -> Self {
        self.sni = false;
        self
    }

    /// Offers these ALPN protocols, most preferred first. The one the server picks is in
    /// [`HandshakeInfo::alpn_protocol`](crate::HandshakeInfo::alpn_protocol).
    pub fn with_alpn_protocols(mut self, protocols: &[&str]) -> Self {
        self.alpn = protocols.iter().map(|p| p.to_string()).collect();
        self
    }

    /// Presents this certificate when the server asks for one.
    pub fn with_client_identity(mut self, identity: TlsIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Offers no protocol version newer than `version` (default TLS 1.3), e.g. to test a
    /// server's TLS 1.2 path.
    pub fn with_max_version(mut self, version: TlsVersion) -> Self {
        self.max_version = version;
        self
    }

    /// Sets the buffer bounds of each session.
    pub fn with_limits(mut self, limits: TlsLimits) -> Self {
        self.limits = limits;
        self
    }

    /// **Dangerous**: with `true`, accepts any server certificate: expired, self-signed, issued
    /// by anyone, for any name. Anyone on the path can then read and change the traffic. Only
    /// for tests and for transports authenticated by other means.
    pub fn danger_accept_invalid_certs(mut self, accept: bool) -> Self {
        self.accept_invalid_certs = accept;
        self
    }

    /// **Dangerous**: with `true`, accepts a valid certificate issued for another name. Any
    /// holder of a certificate from a trusted CA can then impersonate the server.
    pub fn danger_accept_invalid_hostnames(mut self, accept: bool) -> Self {
        self.accept_invalid_hostnames = accept;
        self
    }

    /// Builds the config.
    ///
    /// # Errors
    ///
    /// [`TlsError::Config`] if a root PEM holds no certificate or cannot be parsed, or if
    /// OpenSSL rejects the settings.
    pub fn build(self) -> Result<TlsClientConfig, TlsError> {
        let mut builder = native_tls::TlsConnector::builder();
        for pem in &self.root_pems {
            let root_error = |source: native_tls::Error| {
                TlsError::config("trusted root certificate (PEM)", source)
            };
            let certificates = match native_tls::Certificate::stack_from_pem(pem) {
                Ok(certificates) if !certificates.is_empty() => certificates,
                // No block found: parsing it as one certificate yields native-tls's own error.
                Ok(_) => vec![native_tls::Certificate::from_pem(pem).map_err(root_error)?],
                Err(source) => return Err(root_error(source)),
            };
            for certificate in certificates {
                builder.add_root_certificate(certificate);
            }
        }
        if let Some(identity) = &self.identity {
            builder.identity(identity.to_native()?);
        }
        let alpn: Vec<&str> = self.alpn.iter().map(String::as_str).collect();
        // native-tls names no version past 1.2: no maximum means the newest OpenSSL has.
        let max = match self.max_version {
            TlsVersion::Tls12 => Some(native_tls::Protocol::Tlsv12),
            TlsVersion::Tls13 => None,
        };
        builder
            // RFC 8996: never TLS 1.0 or 1.1, whatever OpenSSL's configuration allows.
            .min_protocol_version(Some(native_tls::Protocol::Tlsv12))
            .max_protocol_version(max)
            .disable_built_in_roots(!self.built_in_roots)
            .use_sni(self.sni)
            .danger_accept_invalid_certs(self.accept_invalid_certs)
            .danger_accept_invalid_hostnames(self.accept_invalid_hostnames)
            .request_alpns(&alpn);
        let connector = builder
            .build()
            .map_err(|source| TlsError::config("client connector", source))?;
        Ok(TlsClientConfig {
            connector,
            limits: self.limits,
        })
    }
}

/// Settings shared by every server session started from it: the identity it presents, the
/// ALPN protocols it accepts and the buffer bounds. Build one with [`TlsServerConfig::builder`].
///
/// Clients are not asked for certificates unless
/// [`with_client_auth`](TlsServerConfigBuilder::with_client_auth) says so. TLS 1.3 and 1.2
/// are spoken, never 1.0 or 1.1 (RFC 8996), whatever OpenSSL's own configuration allows; a
/// configuration that allows 1.3 only is kept.
///
/// # Client certificates
///
/// With [`ClientAuth::Required`] (or [`ClientAuth::Optional`]) and the roots that issue them
/// ([`with_client_roots_pem`](TlsServerConfigBuilder::with_client_roots_pem)), each client is
/// asked for a certificate, which must chain to one of those roots, be valid now and allow
/// client authentication (its extended key usage, if it has one, includes `clientAuth`). A
/// client that fails the check ends the handshake with
/// [`TlsError::UnknownIssuer`], [`TlsError::CertificateExpired`] or
/// [`TlsError::CertificateRejected`] on the server, and one that sends none where one is
/// required with [`TlsError::PeerCertificateMissing`]; the client receives the matching alert.
/// The certificate of a client that passed is in
/// [`HandshakeInfo::peer_certificate_der`](crate::HandshakeInfo::peer_certificate_der), and a
/// [`TlsElement`](crate::TlsElement) names its subject in the `Authorize` control message,
/// where the application can still refuse that client. Only the given roots are trusted for
/// clients, never the system's.
///
/// # TLS 1.3, and why not through native-tls
///
/// A server speaks TLS 1.3 as well as 1.2. native-tls's acceptor cannot: it starts from
/// Mozilla's "intermediate" server profile in the version written before TLS 1.3, which turns
/// TLS 1.3 off, and offers no way to turn it back on. So the server is built on the `openssl`
/// crate that native-tls uses on Linux, with the same profile and settings as native-tls's
/// acceptor (its TLS 1.2 cipher list and order, the server's preference) and TLS 1.3 turned
/// back on. The client side is native-tls's.
/// [`with_max_version`](TlsServerConfigBuilder::with_max_version) holds a server to TLS 1.2,
/// where it then behaves as native-tls's acceptor does.
///
/// # Examples
///
/// ```no_run
/// use weir_tls::{TlsIdentity, TlsServerConfig, TlsSession};
///
/// let identity = TlsIdentity::from_pkcs12_file("server.p12", "secret")?;
/// let config = TlsServerConfig::builder(identity).build()?;
/// let session = TlsSession::server(&config)?;
/// # drop(session);
/// # Ok::<(), weir_tls::TlsError>(())
/// ```
#[derive(Clone)]
pub struct TlsServerConfig {
    /// The built acceptor.
    pub(crate) acceptor: SslAcceptor,
    /// Buffer bounds for each session.
    pub(crate) limits: TlsLimits,
}

impl fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsServerConfig")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl TlsServerConfig {
    /// Starts a builder that presents `identity`.
    pub fn builder(identity: TlsIdentity) -> TlsServerConfigBuilder {
        TlsServerConfigBuilder {
            identity,
            alpn: Vec::new(),
            max_version: TlsVersion::Tls13,
            client_auth: ClientAuth::None,
            client_root_pems: Vec::new(),
            limits: TlsLimits::default(),
        }
    }

    /// The buffer bounds of each session.
    pub fn limits(&self) -> TlsLimits {
        self.limits
    }
}

/// Builds a [`TlsServerConfig`].
#[derive(Clone, Debug)]
pub struct TlsServerConfigBuilder {
    /// The identity presented to clients.
    identity: TlsIdentity,
    /// ALPN protocols accepted, most preferred first.
    alpn: Vec<String>,
    /// The newest protocol version negotiated.
    max_version: TlsVersion,
    /// Whether clients are asked for certificates.
    client_auth: ClientAuth,
    /// PEM blocks of the roots client certificates must chain to, parsed by `build`.
    client_root_pems: Vec<Vec<u8>>,
    /// Buffer bounds.
    limits: TlsLimits,
}

/// Whether a server asks its clients for certificates; see
/// [`TlsServerConfig`](TlsServerConfig#client-certificates).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientAuth {
    /// Clients are not asked (the default).
    #[default]
    None,
    /// Clients are asked; one that sends no certificate is accepted, one that sends a
    /// certificate that fails the check is not.
    Optional,
    /// Clients must send a certificate that passes the check.
    Required,
}

/// A TLS protocol version.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum TlsVersion {
    /// TLS 1.2 (RFC 5246).
    Tls12,
    /// TLS 1.3 (RFC 8446).
    Tls13,
}

impl TlsServerConfigBuilder {
    /// Accepts these ALPN protocols, most preferred first; the first one the client also
    /// offers is chosen. A client offering none of them gets no ALPN answer.
    pub fn with_alpn_protocols(mut self, protocols: &[&str]) -> Self {
        self.alpn = protocols.iter().map(|p| p.to_string()).collect();
        self
    }

    /// Negotiates no protocol version newer than `version` (default TLS 1.3), e.g. to measure
    /// against a TLS 1.2-only peer.
    pub fn with_max_version(mut self, version: TlsVersion) -> Self {
        self.max_version = version;
        self
    }

    /// Asks clients for certificates, or requires them (default [`ClientAuth::None`]). Any
    /// other choice needs [`with_client_roots_pem`](Self::with_client_roots_pem).
    pub fn with_client_auth(mut self, client_auth: ClientAuth) -> Self {
        self.client_auth = client_auth;
        self
    }

    /// Trusts the certificates in `pem` (one or more `-----BEGIN CERTIFICATE-----` blocks) as
    /// roots for client certificates; their names are sent to clients as the authorities
    /// the server accepts. Parsed by [`build`](Self::build).
    pub fn with_client_roots_pem(mut self, pem: &[u8]) -> Self {
        self.client_root_pems.push(pem.to_vec());
        self
    }

    /// Sets the buffer bounds of each session.
    pub fn with_limits(mut self, limits: TlsLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Builds the config.
    ///
    /// # Errors
    ///
    /// [`TlsError::Config`] if OpenSSL rejects the identity (e.g. the key does not match the
    /// certificate) or the settings, if a client root PEM holds no certificate or cannot be
    /// parsed, or if clients are asked for certificates and no roots were given.
    pub fn build(self) -> Result<TlsServerConfig, TlsError> {
        let error = |source| TlsError::config("server acceptor", source);
        // native-tls's acceptor, with TLS 1.3 back on (see `TlsServerConfig`).
        let mut builder = SslAcceptor::mozilla_intermediate(SslMethod::tls()).map_err(error)?;
        builder.clear_options(SslOptions::NO_TLSV1_3);
        let TlsIdentity { key, leaf, chain } = self.identity;
        // The certificate first: a key set before a certificate it does not match is dropped
        // without a word, and every handshake then fails ("no shared cipher").
        builder.set_certificate(&leaf).map_err(error)?;
        builder.set_private_key(&key).map_err(error)?;
        for certificate in chain {
            builder.add_extra_chain_cert(certificate).map_err(error)?;
        }
        builder.check_private_key().map_err(error)?;
        let max = match self.max_version {
            TlsVersion::Tls12 => SslVersion::TLS1_2,
            TlsVersion::Tls13 => SslVersion::TLS1_3,
        };
        // RFC 8996: never below TLS 1.2. A configuration of OpenSSL's that asks for 1.3 at
        // least (`MinProtocol = TLSv1.3`) is kept.
        if builder.min_proto_version() != Some(SslVersion::TLS1_3) {
            builder
                .set_min_proto_version(Some(SslVersion::TLS1_2))
                .map_err(error)?;
        }
        builder.set_max_proto_version(Some(max)).map_err(error)?;
        if self.client_auth != ClientAuth::None {
            ask_for_client_certificates(&mut builder, self.client_auth, &self.client_root_pems)?;
        }
        if !self.alpn.is_empty() {
            let ours = self.alpn;
            builder.set_alpn_select_callback(move |_, offered| {
                choose_alpn(&ours, offered).ok_or(AlpnError::NOACK)
            });
        }
        Ok(TlsServerConfig {
            acceptor: builder.build(),
            limits: self.limits,
        })
    }
}

/// Makes `builder` ask for (or require) client certificates chaining to the roots in `pems`.
fn ask_for_client_certificates(
    builder: &mut openssl::ssl::SslAcceptorBuilder,
    client_auth: ClientAuth,
    pems: &[Vec<u8>],
) -> Result<(), TlsError> {
    const WHAT: &str = "client certificate roots (PEM)";
    let error = |source| TlsError::config(WHAT, source);
    let mut roots = Vec::new();
    for pem in pems {
        let certificates = X509::stack_from_pem(pem).map_err(error)?;
        if certificates.is_empty() {
            return Err(TlsError::config(WHAT, "no certificate in the PEM"));
        }
        roots.extend(certificates);
    }
    if roots.is_empty() {
        let why = "clients are asked for certificates, and no roots were given";
        return Err(TlsError::config(WHAT, why));
    }
    for root in roots {
        builder.add_client_ca(&root).map_err(error)?;
        builder.cert_store_mut().add_cert(root).map_err(error)?;
    }
    let mut mode = SslVerifyMode::PEER;
    if client_auth == ClientAuth::Required {
        mode |= SslVerifyMode::FAIL_IF_NO_PEER_CERT;
    }
    builder.set_verify(mode);
    // OpenSSL refuses to resume a session without it once peers are verified.
    builder
        .set_session_id_context(b"weir-tls")
        .map_err(|source| TlsError::config("server acceptor", source))?;
    Ok(())
}

/// Our first ALPN protocol that the client also offers, as it appears in the client's list
/// (`offered`: the wire format, each name after its length byte).
fn choose_alpn<'a>(ours: &[String], offered: &'a [u8]) -> Option<&'a [u8]> {
    let mut names = Vec::new();
    let mut rest = offered;
    while let Some((&len, tail)) = rest.split_first() {
        let Some((name, after)) = tail.split_at_checked(usize::from(len)) else {
            break;
        };
        names.push(name);
        rest = after;
    }
    ours.iter()
        .find_map(|want| names.iter().copied().find(|name| *name == want.as_bytes()))
}

/// Reads a whole file, naming it in the error.
fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::choose_alpn;

    #[test]
    fn alpn_takes_our_first_choice_the_client_offers_from_the_clients_list() {
        let ours = ["h2".to_string(), "http/1.1".to_string()];
        let offered = b"\x08http/1.1\x02h2";
        let chosen = choose_alpn(&ours, offered).unwrap();
        assert_eq!(chosen, b"h2");
        // A slice of the client's list, not of ours.
        assert!(std::ptr::eq(chosen.as_ptr(), offered[10..].as_ptr()));
        assert_eq!(choose_alpn(&ours, b"\x06spdy/3"), None);
        assert_eq!(choose_alpn(&ours, b""), None);
        // A length past the end, and one of zero: nothing read beyond the list, no panic.
        assert_eq!(choose_alpn(&ours, b"\x02h2\x09http/1.1"), Some(&b"h2"[..]));
        assert_eq!(choose_alpn(&ours, b"\x00\x07http/1."), None);
    }
}
