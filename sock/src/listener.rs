//! Listening sockets that hand accepted connections to a factory.

use std::fmt;
use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use socket2::Socket;
use weir_io::Peer;
use weir_reactor::{ByteHandle, CloseReason, Direction, Interest, Reactor, ReactorError, Token};

use crate::socket::{stream_socket, Address, SocketIo, SocketOptions};
use crate::stream::{AgentConfig, StreamAgent};

/// Accepts taken per readiness call before the listener lets the reactor serve others.
const ACCEPT_BUDGET: usize = 256;
/// First pause after running out of descriptors; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(20);
/// Longest pause after running out of descriptors.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How a [`Listener`] listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListenOptions {
    /// Length of the queue of connections not yet accepted. Default 1024.
    pub backlog: i32,
    /// `SO_REUSEADDR` (TCP). Default on, so a restarted server can bind at once.
    pub reuse_address: bool,
    /// `SO_REUSEPORT` (TCP): several listeners share one port. Default off.
    pub reuse_port: bool,
    /// Options applied to every accepted socket.
    pub socket: SocketOptions,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            backlog: 1024,
            reuse_address: true,
            reuse_port: false,
            socket: SocketOptions::default(),
        }
    }
}

impl ListenOptions {
    /// This with a backlog.
    #[must_use]
    pub fn with_backlog(mut self, backlog: i32) -> Self {
        self.backlog = backlog;
        self
    }

    /// This with `SO_REUSEADDR` set to `reuse`.
    #[must_use]
    pub fn with_reuse_address(mut self, reuse: bool) -> Self {
        self.reuse_address = reuse;
        self
    }

    /// This with `SO_REUSEPORT` set to `reuse`.
    #[must_use]
    pub fn with_reuse_port(mut self, reuse: bool) -> Self {
        self.reuse_port = reuse;
        self
    }

    /// This with options for accepted sockets.
    #[must_use]
    pub fn with_socket(mut self, socket: SocketOptions) -> Self {
        self.socket = socket;
        self
    }
}

/// A connection accepted by a [`Listener`]: a connected, non-blocking socket.
#[derive(Debug)]
pub struct Accepted {
    /// The socket, with the listener's socket options applied.
    pub socket: Socket,
    /// Who connected.
    pub peer: Peer,
}

impl Accepted {
    /// Makes the usual agent for the connection (Versile `VClientSocketFactory.build`).
    ///
    /// The agent reads once without waiting for the poller, from the reactor's queue: called
    /// from the listener's factory, that is later in the same loop turn, once the factory
    /// has attached its chain. A client that spoke first (a TLS ClientHello, a request) is
    /// served a turn sooner; one that has not costs a read that would block.
    ///
    /// # Errors
    ///
    /// The reactor refused the descriptor.
    #[doc(alias = "VClientSocketFactory")]
    pub fn into_agent(
        self,
        reactor: &Reactor,
        config: AgentConfig,
    ) -> Result<StreamAgent, ReactorError> {
        let target = Address::from_peer(self.peer);
        let agent = StreamAgent::new(reactor, SocketIo::new(self.socket, target), config)?;
        agent.inner.read_soon();
        Ok(agent)
    }
}

/// The function a listener calls for each accepted connection, on the reactor thread.
type Factory = Box<dyn FnMut(Accepted) + Send>;

/// A listening TCP or Unix socket on a reactor.
///
/// Versile `VListeningSocket` with a `VClientSocketFactory`: every accepted connection goes
/// to the factory closure given to [`bind`](Self::bind), which usually makes a
/// [`StreamAgent`] with [`Accepted::into_agent`] and attaches a chain to it. Several
/// listeners can share one reactor.
///
/// A listener accepts until [`close`](Self::close) or until the reactor stops; dropping the
/// `Listener` handle does not stop it.
///
/// Running out of descriptors (`EMFILE`, `ENFILE`) or kernel memory never makes the accept
/// loop spin: the listener logs, stops accepting for a while (20 ms, doubling up to 1 s) and
/// tries again; connections wait in the backlog meanwhile.
///
/// # Examples
///
/// ```no_run
/// use weir_io::ByteIoPair;
/// use weir_reactor::Reactor;
/// use weir_sock::{AgentConfig, Listener, ListenOptions};
///
/// let reactor = Reactor::new()?;
/// let r = reactor.clone();
/// let listener = Listener::bind(&reactor, &"127.0.0.1:7000".parse()?, ListenOptions::default(),
///     move |accepted| {
///         // An echo: the agent's producer feeds its own consumer.
///         if let Ok(agent) = accepted.into_agent(&r, AgentConfig::default()) {
///             let pair: ByteIoPair = agent.io_pair();
///             let _ = weir_io::attach(&pair.producer, &pair.consumer);
///         }
///     })?;
/// println!("listening on {}", listener.local_address());
/// reactor.run()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[doc(alias = "VListeningSocket")]
#[doc(alias = "VTCPListeningSocket")]
#[doc(alias = "VUnixListeningSocket")]
#[derive(Clone)]
pub struct Listener {
    /// Shared with the reactor handle.
    inner: Arc<ListenerInner>,
}

/// State of a listener.
struct ListenerInner {
    /// The reactor it accepts on.
    reactor: Reactor,
    /// The address it is bound to.
    local: Address,
    /// Applied to accepted sockets.
    options: SocketOptions,
    /// The socket; `None` after close.
    socket: Mutex<Option<Socket>>,
    /// The registration.
    token: Mutex<Option<Token>>,
    /// Accepting is paused by the user.
    paused: Mutex<bool>,
    /// Pause after running out of descriptors: the last delay (reset by a successful accept)
    /// and whether the listener is waiting it out now.
    backoff: Mutex<(Option<Duration>, bool)>,
    /// Where accepted connections go.
    factory: Mutex<Factory>,
}

/// The reactor handle of a listener.
///
/// It holds the listener strongly: a listener accepts until [`Listener::close`] or the
/// reactor stops, whether or not the caller keeps its [`Listener`]. (A weak handle would let
/// the socket close while still registered with the poller.)
struct ListenerHandle(Arc<ListenerInner>);

impl Listener {
    /// Binds to `address`, listens, and registers with `reactor`; each accepted connection
    /// is given to `factory` on the reactor thread.
    ///
    /// For a Unix path, a stale socket file must be removed first.
    ///
    /// # Errors
    ///
    /// Binding or listening failed (address in use, permission), or the reactor refused the
    /// descriptor.
    pub fn bind(
        reactor: &Reactor,
        address: &Address,
        options: ListenOptions,
        factory: impl FnMut(Accepted) + Send + 'static,
    ) -> io::Result<Listener> {
        let socket = stream_socket(address)?;
        if let Address::Tcp(_) = address {
            socket.set_reuse_address(options.reuse_address)?;
            if options.reuse_port {
                socket.set_reuse_port(true)?;
            }
        }
        socket.bind(&address.to_sock_addr()?)?;
        socket.listen(options.backlog)?;
        let local = socket
            .local_addr()
            .ok()
            .as_ref()
            .and_then(Address::from_sock_addr)
            .unwrap_or_else(|| address.clone());
        let inner = Arc::new(ListenerInner {
            reactor: reactor.clone(),
            local,
            options: options.socket,
            socket: Mutex::new(None),
            token: Mutex::new(None),
            paused: Mutex::new(false),
            backoff: Mutex::new((None, false)),
            factory: Mutex::new(Box::new(factory)),
        });
        let handle = Arc::new(ListenerHandle(inner.clone()));
        let token = reactor
            .register(socket.as_fd(), Interest::READ, handle)
            .map_err(|err| io::Error::other(err.to_string()))?;
        *inner.socket.lock() = Some(socket);
        *inner.token.lock() = Some(token);
        Ok(Listener { inner })
    }

    /// The address the listener is bound to (with the real port when bound to port 0).
    pub fn local_address(&self) -> &Address {
        &self.inner.local
    }

    /// Stops accepting until [`resume`](Self::resume); connections wait in the backlog.
    pub fn pause(&self) {
        *self.inner.paused.lock() = true;
        self.inner.update_interest();
    }

    /// Accepts again after [`pause`](Self::pause).
    #[doc(alias = "can_accept")]
    pub fn resume(&self) {
        *self.inner.paused.lock() = false;
        self.inner.update_interest();
    }

    /// Stops listening and closes the socket (any thread). Accepted connections live on.
    pub fn close(&self) {
        let inner = self.inner.clone();
        self.inner.reactor.execute(move || inner.close());
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Listener")
            .field("local", &self.inner.local)
            .finish_non_exhaustive()
    }
}

impl ListenerInner {
    /// Accepts until the queue is empty, the budget is spent, or descriptors run out.
    fn accept_ready(self: &Arc<Self>) {
        for _ in 0..ACCEPT_BUDGET {
            let accepted = {
                let socket = self.socket.lock();
                let Some(socket) = socket.as_ref() else {
                    return;
                };
                // Non-blocking and close-on-exec from the start: no `fcntl` calls after.
                socket.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
            };
            match accepted {
                Ok((socket, from)) => {
                    self.backoff.lock().0 = None;
                    if let Err(err) = self.prepare(&socket) {
                        tracing::debug!(%err, "dropping an accepted connection");
                        continue;
                    }
                    let peer = Address::from_sock_addr(&from)
                        .map_or(Peer::Unix(None), |address| address.to_peer());
                    (self.factory.lock())(Accepted { socket, peer });
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return,
                Err(err) if is_resource_shortage(&err) => {
                    self.back_off(err);
                    return;
                }
                // ECONNABORTED and friends: that connection is gone, the next may be fine.
                Err(err) => tracing::debug!(%err, "accept failed"),
            }
        }
    }

    /// Makes an accepted socket ready for an agent.
    fn prepare(&self, socket: &Socket) -> io::Result<()> {
        self.options
            .apply_to(socket, matches!(self.local, Address::Tcp(_)))
    }

    /// Stops accepting for a while after running out of descriptors or memory.
    fn back_off(self: &Arc<Self>, err: io::Error) {
        let delay = {
            let mut backoff = self.backoff.lock();
            let delay = backoff.0.map_or(MIN_BACKOFF, |d| (d * 2).min(MAX_BACKOFF));
            *backoff = (Some(delay), true);
            delay
        };
        tracing::warn!(%err, ?delay, address = %self.local, "accept is out of resources; pausing");
        self.update_interest();
        let me = Arc::downgrade(self);
        self.reactor.schedule(delay, move || {
            if let Some(me) = me.upgrade() {
                // The delay stays (it resets on the next successful accept); try again.
                me.backoff.lock().1 = false;
                me.update_interest();
            }
        });
    }

    /// Registers the interest the listener wants now.
    fn update_interest(&self) {
        let waiting = self.backoff.lock().1;
        let want = if *self.paused.lock() || waiting {
            Interest::NONE
        } else {
            Interest::READ
        };
        self.set_interest(want);
    }

    /// Sets the interest of the registration.
    fn set_interest(&self, interest: Interest) {
        if let Some(token) = *self.token.lock() {
            if let Err(err) = self.reactor.set_interest(token, interest) {
                tracing::debug!(%err, "listener interest");
            }
        }
    }

    /// Deregisters and closes the socket.
    fn close(&self) {
        if let Some(token) = self.token.lock().take() {
            self.reactor.deregister(token);
        }
        self.socket.lock().take();
    }
}

/// Whether an accept error means "out of descriptors or memory, try later".
fn is_resource_shortage(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

impl ByteHandle for ListenerHandle {
    fn on_readable(&self) {
        self.0.accept_ready();
    }

    fn on_close(&self, direction: Direction, reason: CloseReason) {
        if direction == Direction::Both {
            tracing::debug!(%reason, "listener closed by the reactor");
            self.0.token.lock().take();
            self.0.socket.lock().take();
        }
    }
}
