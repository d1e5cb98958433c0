//! Session configuration: [`TlsClientConfig`], [`TlsServerConfig`], the server's
//! [`TlsIdentity`] and the buffer and time bounds in [`TlsLimits`].
//!
//! A config is built once (building a client config loads the system's trusted roots, which is
//! slow) and shared by every session started from it; cloning one is cheap.

use std::fmt;
use std::path::Path;
use std::time::Duration;

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

/// A certificate chain and its private key: what a server presents to its clients.
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
    /// The native-tls identity.
    inner: native_tls::Identity,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material.
        f.debug_struct("TlsIdentity").finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// Builds an identity from a PEM certificate chain (leaf first, then intermediates) and a
    /// PEM PKCS#8 private key (`-----BEGIN PRIVATE KEY-----`).
    ///
    /// # Errors
    ///
    /// [`TlsError::Config`] if the PEM cannot be parsed, the key is not PKCS#8, or the chain is
    /// empty. A key that does not belong to the leaf certificate is not detected here (native-tls
    /// does not check): every handshake then fails with "no shared cipher".
    pub fn from_pem(certificate_chain: &[u8], private_key: &[u8]) -> Result<Self, TlsError> {
        native_tls::Identity::from_pkcs8(certificate_chain, private_key)
            .map(|inner| TlsIdentity { inner })
            .map_err(|source| TlsError::Config {
                what: "identity from PEM chain and PKCS#8 key",
                source,
            })
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
        native_tls::Identity::from_pkcs12(der, password)
            .map(|inner| TlsIdentity { inner })
            .map_err(|source| TlsError::Config {
                what: "identity from PKCS#12",
                source,
            })
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
}

/// Settings shared by every client session started from it.
///
/// Safe by default: the server's certificate chain is checked against the system's trusted
/// roots, its name is checked against the name given to
/// [`TlsSession::client`](crate::TlsSession::client), and that name is sent as SNI. Build one
/// with [`TlsClientConfig::builder`].
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
            let root_error = |source| TlsError::Config {
                what: "trusted root certificate (PEM)",
                source,
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
            builder.identity(identity.inner.clone());
        }
        let alpn: Vec<&str> = self.alpn.iter().map(String::as_str).collect();
        builder
            .disable_built_in_roots(!self.built_in_roots)
            .use_sni(self.sni)
            .danger_accept_invalid_certs(self.accept_invalid_certs)
            .danger_accept_invalid_hostnames(self.accept_invalid_hostnames)
            .request_alpns(&alpn);
        let connector = builder.build().map_err(|source| TlsError::Config {
            what: "client connector",
            source,
        })?;
        Ok(TlsClientConfig {
            connector,
            limits: self.limits,
        })
    }
}

/// Settings shared by every server session started from it: the identity it presents, the
/// ALPN protocols it accepts and the buffer bounds. Build one with [`TlsServerConfig::builder`].
///
/// Clients are not asked for certificates (native-tls does not offer it).
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
    /// The built native-tls acceptor.
    pub(crate) acceptor: native_tls::TlsAcceptor,
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
    /// Buffer bounds.
    limits: TlsLimits,
}

impl TlsServerConfigBuilder {
    /// Accepts these ALPN protocols, most preferred first; the first one the client also
    /// offers is chosen. A client offering none of them gets no ALPN answer.
    pub fn with_alpn_protocols(mut self, protocols: &[&str]) -> Self {
        self.alpn = protocols.iter().map(|p| p.to_string()).collect();
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
    /// certificate) or the settings.
    pub fn build(self) -> Result<TlsServerConfig, TlsError> {
        let mut builder = native_tls::TlsAcceptor::builder(self.identity.inner);
        if !self.alpn.is_empty() {
            builder.accept_alpn(&self.alpn);
        }
        let acceptor = builder.build().map_err(|source| TlsError::Config {
            what: "server acceptor",
            source,
        })?;
        Ok(TlsServerConfig {
            acceptor,
            limits: self.limits,
        })
    }
}

/// Reads a whole file, naming it in the error.
fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::ReadFile {
        path: path.to_path_buf(),
        source,
    })
}
