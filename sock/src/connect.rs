//! Connecting client sockets: to addresses or host names, with a timeout and a veto.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use weir_io::{Ending, IoControl, Peer};
use weir_reactor::{Reactor, Timer};

use crate::socket::{stream_socket, Address, SocketIo, SocketOptions};
use crate::stream::{AgentConfig, AgentInner, ConnectHook, Phase, StreamAgent};

/// Why a connect failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConnectError {
    /// The last address tried failed with this OS error (e.g. connection refused).
    Io(io::Error),
    /// Name resolution failed.
    Resolve(io::Error),
    /// Name resolution gave no address.
    NoAddress,
    /// The connect did not finish within the timeout.
    TimedOut,
    /// The chain answered [`IoControl::CanConnect`] with a denial.
    Vetoed,
    /// The agent was closed before the connect finished.
    Closed,
}

impl ConnectError {
    /// The OS error kind behind this error, if there is one.
    pub fn kind(&self) -> Option<io::ErrorKind> {
        match self {
            ConnectError::Io(err) | ConnectError::Resolve(err) => Some(err.kind()),
            ConnectError::TimedOut => Some(io::ErrorKind::TimedOut),
            _ => None,
        }
    }
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConnectError::Io(_) => "connect failed",
            ConnectError::Resolve(_) => "name resolution failed",
            ConnectError::NoAddress => "name resolved to no address",
            ConnectError::TimedOut => "connect timed out",
            ConnectError::Vetoed => "connect vetoed by the chain",
            ConnectError::Closed => "closed before the connect finished",
        })
    }
}

impl std::error::Error for ConnectError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConnectError::Io(err) | ConnectError::Resolve(err) => Some(err),
            _ => None,
        }
    }
}

/// Called once with the outcome of a connect.
type ConnectCallback = Box<dyn FnOnce(Result<Peer, ConnectError>) + Send>;

/// How to connect.
#[non_exhaustive]
pub struct ConnectOptions {
    /// Give up after this long (all addresses together). Default 30 s.
    pub timeout: Option<Duration>,
    /// Options for the new socket.
    pub socket: SocketOptions,
    /// Buffering and half-close of the agent.
    pub agent: AgentConfig,
    /// Told the outcome, once, on the reactor thread.
    on_connect: Option<ConnectCallback>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            timeout: Some(Duration::from_secs(30)),
            socket: SocketOptions::default(),
            agent: AgentConfig::default(),
            on_connect: None,
        }
    }
}

impl ConnectOptions {
    /// This with a timeout (`None`: wait as long as the OS does).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// This with socket options.
    #[must_use]
    pub fn with_socket(mut self, socket: SocketOptions) -> Self {
        self.socket = socket;
        self
    }

    /// This with an agent configuration.
    #[must_use]
    pub fn with_agent(mut self, agent: AgentConfig) -> Self {
        self.agent = agent;
        self
    }

    /// This with a callback told the outcome once, on the reactor thread. A failure also
    /// ends the agent's chains [`Ending::Lost`].
    #[must_use]
    pub fn on_connect(
        mut self,
        f: impl FnOnce(Result<Peer, ConnectError>) + Send + 'static,
    ) -> Self {
        self.on_connect = Some(Box::new(f));
        self
    }
}

impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("timeout", &self.timeout)
            .field("socket", &self.socket)
            .field("agent", &self.agent)
            .finish_non_exhaustive()
    }
}

impl StreamAgent {
    /// Connects to `address`; returns at once with an agent in the connecting phase.
    ///
    /// Attach chains right away: data written before the connect finishes is sent after it,
    /// and an upstream end that comes before is kept until then. Before connecting, the chain
    /// attached to the producer is asked [`IoControl::CanConnect`] and may veto; the question
    /// is asked from the reactor's queue, so to be sure a chain is asked, call `connect` and
    /// attach it on the reactor thread in one go (e.g. inside [`Reactor::execute`]). If the
    /// agent is closed before the connect finishes, `on_connect` gets
    /// [`ConnectError::Closed`]. On success the chain gets
    /// [`IoControl::Connected`]; on failure its input ends [`Ending::Lost`] and the
    /// `on_connect` callback gets the [`ConnectError`] (e.g. connection refused).
    pub fn connect(reactor: &Reactor, address: Address, options: ConnectOptions) -> StreamAgent {
        StreamAgent::connect_any(reactor, vec![address], options)
    }

    /// Resolves `host` (on a helper thread: the reactor never blocks on DNS), then tries every
    /// address in turn until one connects.
    pub fn connect_host(
        reactor: &Reactor,
        host: &str,
        port: u16,
        options: ConnectOptions,
    ) -> StreamAgent {
        let agent = StreamAgent::unconnected(reactor, options.agent);
        let driver = Driver::new(reactor, &agent, options);
        let host = host.to_owned();
        let reactor = reactor.clone();
        let spawned = std::thread::Builder::new()
            .name("weir-resolve".into())
            .spawn(move || {
                let resolved = (host.as_str(), port).to_socket_addrs();
                reactor.call(move || match resolved {
                    Ok(addrs) => {
                        let addrs: VecDeque<Address> = addrs.map(Address::Tcp).collect();
                        if addrs.is_empty() {
                            driver.fail(ConnectError::NoAddress);
                        } else {
                            driver.try_next(addrs);
                        }
                    }
                    Err(err) => driver.fail(ConnectError::Resolve(err)),
                });
            });
        if let Err(err) = spawned {
            // Without a thread we cannot resolve; report it as a resolve failure.
            let inner = agent.inner.clone();
            agent.inner.reactor.call(move || {
                inner.record_error(io::Error::other("could not spawn the resolver thread"));
                inner.close_all(Ending::Lost);
            });
            tracing::error!(%err, "resolver thread");
        }
        agent
    }

    /// Tries `addresses` in turn.
    fn connect_any(
        reactor: &Reactor,
        addresses: Vec<Address>,
        options: ConnectOptions,
    ) -> StreamAgent {
        let agent = StreamAgent::unconnected(reactor, options.agent);
        let driver = Driver::new(reactor, &agent, options);
        // Always queued, also on the reactor thread: a chain attached right after this call
        // on the same thread is in place when `CanConnect` is asked.
        reactor.call(move || driver.try_next(addresses.into()));
        agent
    }
}

/// The connect state shared by the attempts and the timeout.
struct Driver {
    /// The agent being connected.
    agent: Arc<AgentInner>,
    /// Options for each new socket.
    socket: SocketOptions,
    /// The outcome callback; taken when reported.
    report: Arc<Mutex<Option<ConnectCallback>>>,
    /// The timeout, cancelled on the outcome.
    timer: Arc<Mutex<Option<Timer>>>,
}

/// One pending attempt, as the agent's connect hook.
struct Attempt {
    /// Shared state.
    driver: Driver,
    /// Addresses not tried yet.
    rest: VecDeque<Address>,
}

impl Driver {
    /// Sets up the driver and its timeout.
    fn new(reactor: &Reactor, agent: &StreamAgent, options: ConnectOptions) -> Driver {
        let driver = Driver {
            agent: agent.inner.clone(),
            socket: options.socket,
            report: Arc::new(Mutex::new(options.on_connect)),
            timer: Arc::new(Mutex::new(None)),
        };
        if let Some(timeout) = options.timeout {
            let twin = driver.twin();
            let timer = reactor.schedule(timeout, move || {
                if twin.agent.phase() == Phase::Connecting {
                    drop(twin.agent.state_take_hook());
                    twin.fail(ConnectError::TimedOut);
                }
            });
            *driver.timer.lock() = Some(timer);
        }
        driver
    }

    /// Another handle to the same shared state.
    fn twin(&self) -> Driver {
        Driver {
            agent: self.agent.clone(),
            socket: self.socket,
            report: self.report.clone(),
            timer: self.timer.clone(),
        }
    }

    /// Starts the next attempt, or fails with `last` when none is left.
    fn try_next(self, mut rest: VecDeque<Address>) {
        let mut last = None;
        while let Some(address) = rest.pop_front() {
            if self.agent.phase() != Phase::Connecting {
                return self.fail(ConnectError::Closed);
            }
            if let Some(link) = self.agent.downstream() {
                let reply = link.control_downstream(&IoControl::CanConnect(address.to_peer()));
                if !reply.allows() {
                    return self.fail(ConnectError::Vetoed);
                }
            }
            match self.start(&address) {
                Ok(()) => {
                    let attempt = Attempt { driver: self, rest };
                    let agent = attempt.driver.agent.clone();
                    agent.set_connect_hook(Box::new(attempt));
                    return;
                }
                Err(err) => last = Some(err),
            }
        }
        self.fail(last.map_or(ConnectError::NoAddress, ConnectError::Io));
    }

    /// Creates a socket and starts connecting it to `address`.
    fn start(&self, address: &Address) -> io::Result<()> {
        let socket = stream_socket(address)?;
        self.socket
            .apply_to(&socket, matches!(address, Address::Tcp(_)))?;
        match socket.connect(&address.to_sock_addr()?) {
            Ok(()) => {}
            Err(err) if err.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => return Err(err),
        }
        let io = Arc::new(SocketIo::new(socket, Some(address.clone())));
        self.agent
            .install(io, false)
            .map_err(|err| io::Error::other(err.to_string()))
    }

    /// Reports a failure and closes the agent.
    fn fail(self, err: ConnectError) {
        tracing::debug!(%err, "connect failed");
        if let Some(timer) = self.timer.lock().take() {
            timer.cancel();
        }
        if let ConnectError::Io(io) = &err {
            self.agent
                .record_error(io::Error::new(io.kind(), io.to_string()));
        }
        self.agent.close_all(Ending::Lost);
        let report = self.report.lock().take();
        if let Some(report) = report {
            report(Err(err));
        }
    }

    /// Reports success.
    fn succeed(self) {
        if let Some(timer) = self.timer.lock().take() {
            timer.cancel();
        }
        self.agent.connected();
        let peer = self.agent.peer_now();
        let report = self.report.lock().take();
        if let (Some(report), Some(peer)) = (report, peer) {
            report(Ok(peer));
        }
    }
}

impl ConnectHook for Attempt {
    fn succeeded(self: Box<Self>, _agent: &AgentInner) {
        self.driver.succeed();
    }

    fn failed(self: Box<Self>, agent: &AgentInner, err: io::Error) {
        agent.uninstall();
        let Attempt { driver, rest } = *self;
        if rest.is_empty() {
            driver.fail(ConnectError::Io(err));
        } else {
            tracing::debug!(%err, "connect attempt failed; trying the next address");
            driver.try_next(rest);
        }
    }

    fn closed(self: Box<Self>, _agent: &AgentInner) {
        self.driver.fail(ConnectError::Closed);
    }
}
