//! TLS over stream sockets in a few lines: [`connect`] / [`connect_host`] for a client,
//! [`TlsListener`] for a server. Each gives a [`TlsConnection`]: a socket
//! [`StreamAgent`] with a [`TlsElement`] attached, and the plaintext pair for the application.

use std::fmt;
use std::io;

use weir_io::ByteIoPair;
use weir_reactor::Reactor;
use weir_sock::{Address, AgentConfig, ConnectOptions, ListenOptions, Listener, StreamAgent};

use crate::{TlsClientConfig, TlsElement, TlsError, TlsServerConfig};

/// A socket with TLS on top: attach the application to [`plain`](Self::plain).
///
/// ```text
///   socket ◀──▶ agent ◀──ciphertext──▶ tls ◀──plaintext──▶ plain (the application)
/// ```
#[derive(Clone, Debug)]
pub struct TlsConnection {
    /// The socket agent carrying the ciphertext; close it to drop the connection at once.
    pub agent: StreamAgent,
    /// The TLS element: its error, handshake information and events.
    pub tls: TlsElement,
    /// The plaintext side: attach the application's pair with [`ByteIoPair::attach`].
    pub plain: ByteIoPair,
}

/// Connects to `address` and starts a TLS client for `server_name` on top; returns at once.
///
/// The ClientHello is sent as soon as the socket connects. A refused connection, a failed
/// handshake or a rejected certificate ends the application's input [`Ending::Lost`], and
/// [`TlsElement::error`] says why.
///
/// # Errors
///
/// As [`TlsElement::client`]: an invalid server name.
///
/// # Examples
///
/// ```no_run
/// use weir_reactor::Reactor;
/// use weir_sock::ConnectOptions;
/// use weir_tls::{net, TlsClientConfig};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let reactor = Reactor::new()?;
/// let config = TlsClientConfig::builder().build()?;
/// let connection = net::connect(&reactor, "93.184.215.14:443".parse()?, "example.com",
///     &config, ConnectOptions::default())?;
/// // connection.plain.attach(&my_application.io_pair())?;
/// # drop(connection);
/// # Ok(())
/// # }
/// ```
///
/// [`Ending::Lost`]: weir_io::Ending::Lost
pub fn connect(
    reactor: &Reactor,
    address: Address,
    server_name: &str,
    config: &TlsClientConfig,
    options: ConnectOptions,
) -> Result<TlsConnection, TlsError> {
    let tls = TlsElement::client(reactor, config, server_name)?;
    let agent = StreamAgent::connect(reactor, address, options);
    Ok(join(agent, tls))
}

/// Like [`connect`], resolving `host` first (off the reactor thread) and using it as the
/// server name.
///
/// # Errors
///
/// As [`TlsElement::client`]: an invalid server name.
pub fn connect_host(
    reactor: &Reactor,
    host: &str,
    port: u16,
    config: &TlsClientConfig,
    options: ConnectOptions,
) -> Result<TlsConnection, TlsError> {
    let tls = TlsElement::client(reactor, config, host)?;
    let agent = StreamAgent::connect_host(reactor, host, port, options);
    Ok(join(agent, tls))
}

/// Attaches `tls`'s ciphertext side to `agent`.
fn join(agent: StreamAgent, tls: TlsElement) -> TlsConnection {
    tls.attach_transport(&agent.io_pair());
    let plain = tls.plain_io();
    TlsConnection { agent, tls, plain }
}

/// A listening socket whose connections come with a TLS server on top.
///
/// Versile `VListeningSocket` with a TLS agent factory. Each accepted connection becomes a
/// [`TlsConnection`] handed to the factory on the reactor thread; the factory attaches the
/// application to its [`plain`](TlsConnection::plain) pair.
///
/// # Examples
///
/// A TLS echo server:
///
/// ```no_run
/// use weir_io::ByteWAgent;
/// use weir_reactor::Reactor;
/// use weir_sock::{AgentConfig, ListenOptions};
/// use weir_tls::net::TlsListener;
/// use weir_tls::{TlsIdentity, TlsServerConfig};
///
/// # struct Echo;
/// # impl weir_io::WAgentHooks for Echo {
/// #     fn on_data(&mut self, w: &std::sync::Arc<weir_io::ByteWriter>, d: bytes::Bytes) {
/// #         let _ = w.write(d);
/// #     }
/// # }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let reactor = Reactor::new()?;
/// let identity = TlsIdentity::from_pem_files("cert.pem", "key.pem")?;
/// let config = TlsServerConfig::builder(identity).build()?;
/// let r = reactor.clone();
/// let listener = TlsListener::bind(&reactor, &"127.0.0.1:8443".parse()?, config,
///     ListenOptions::default(), AgentConfig::default(), move |connection| {
///         let echo = ByteWAgent::new(&r, 64 * 1024, Echo);
///         let _ = connection.plain.attach(&echo.io_pair());
///     })?;
/// println!("listening on {}", listener.local_address());
/// reactor.run()?;
/// # Ok(())
/// # }
/// ```
#[doc(alias = "VTLSServer")]
#[derive(Clone)]
pub struct TlsListener {
    /// The plain listening socket underneath.
    listener: Listener,
}

impl TlsListener {
    /// Binds to `address` and listens; every accepted connection gets an agent configured by
    /// `agent` and a TLS server from `config`, and goes to `factory`.
    ///
    /// # Errors
    ///
    /// As [`Listener::bind`]: the address is in use, permission, or the reactor refused.
    pub fn bind(
        reactor: &Reactor,
        address: &Address,
        config: TlsServerConfig,
        options: ListenOptions,
        agent: AgentConfig,
        mut factory: impl FnMut(TlsConnection) + Send + 'static,
    ) -> io::Result<TlsListener> {
        let r = reactor.clone();
        let listener = Listener::bind(reactor, address, options, move |accepted| {
            let peer = accepted.peer.clone();
            let tls = match TlsElement::server(&r, &config) {
                Ok(tls) => tls,
                Err(error) => {
                    tracing::warn!(%peer, %error, "cannot start a tls server session");
                    return;
                }
            };
            match accepted.into_agent(&r, agent) {
                Ok(stream) => factory(join(stream, tls)),
                Err(error) => tracing::warn!(%peer, %error, "cannot serve a connection"),
            }
        })?;
        Ok(TlsListener { listener })
    }

    /// The address listened on (with the real port when bound to port 0).
    pub fn local_address(&self) -> &Address {
        self.listener.local_address()
    }

    /// The listening socket underneath, to pause, resume or close it.
    pub fn listener(&self) -> &Listener {
        &self.listener
    }

    /// Stops listening (any thread); connections live on.
    pub fn close(&self) {
        self.listener.close();
    }
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("listener", &self.listener)
            .finish()
    }
}
