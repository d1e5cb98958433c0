//! Native sockets: addresses, creation, connected pairs, options, and sockets as streams.

use std::fmt;
use std::io::{self, IoSlice};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::buffer::spare_capacity;
use socket2::{Domain, SockAddr, Socket, TcpKeepalive, Type};
use weir_io::Peer;
use weir_reactor::{Direction, Reactor, ReactorError};

use crate::stream::{AgentConfig, Descriptors, StreamAgent, StreamIo};

/// Where a stream socket connects or listens: TCP (IPv4 or IPv6) or a Unix socket path.
///
/// Parses from `127.0.0.1:7000`, `[::1]:7000` or `unix:/path/to/socket`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket path.
    Unix(PathBuf),
}

impl Address {
    /// The socket2 form.
    pub(crate) fn to_sock_addr(&self) -> io::Result<SockAddr> {
        match self {
            Address::Tcp(addr) => Ok(SockAddr::from(*addr)),
            Address::Unix(path) => SockAddr::unix(path),
        }
    }

    /// The domain of sockets for this address.
    pub(crate) fn domain(&self) -> Domain {
        match self {
            Address::Tcp(SocketAddr::V4(_)) => Domain::IPV4,
            Address::Tcp(SocketAddr::V6(_)) => Domain::IPV6,
            Address::Unix(_) => Domain::UNIX,
        }
    }

    /// The peer this address names.
    pub fn to_peer(&self) -> Peer {
        match self {
            Address::Tcp(addr) => Peer::Tcp(*addr),
            Address::Unix(path) => Peer::Unix(Some(path.clone())),
        }
    }

    /// The address a peer names, if it has one (an unnamed Unix peer has none).
    pub(crate) fn from_peer(peer: Peer) -> Option<Address> {
        match peer {
            Peer::Tcp(addr) => Some(Address::Tcp(addr)),
            Peer::Unix(Some(path)) => Some(Address::Unix(path)),
            _ => None,
        }
    }

    /// The address of a socket2 address, if it is TCP or a named Unix socket.
    pub(crate) fn from_sock_addr(addr: &SockAddr) -> Option<Address> {
        if let Some(addr) = addr.as_socket() {
            return Some(Address::Tcp(addr));
        }
        addr.as_pathname().map(|p| Address::Unix(p.to_path_buf()))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(addr) => write!(f, "{addr}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl FromStr for Address {
    type Err = std::net::AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.strip_prefix("unix:") {
            Some(path) => Ok(Address::Unix(PathBuf::from(path))),
            None => s.parse().map(Address::Tcp),
        }
    }
}

impl From<SocketAddr> for Address {
    fn from(addr: SocketAddr) -> Self {
        Address::Tcp(addr)
    }
}

/// Socket options applied to new and accepted sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SocketOptions {
    /// `TCP_NODELAY` (TCP only). Default on: a chain writes whole messages.
    pub nodelay: bool,
    /// TCP keep-alive with this idle time before probes (TCP only). Default off.
    pub keepalive: Option<Duration>,
    /// `SO_RCVBUF`, if set. Default: the kernel's.
    pub recv_buffer: Option<usize>,
    /// `SO_SNDBUF`, if set. Default: the kernel's.
    pub send_buffer: Option<usize>,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            nodelay: true,
            keepalive: None,
            recv_buffer: None,
            send_buffer: None,
        }
    }
}

impl SocketOptions {
    /// This with `TCP_NODELAY` set to `nodelay`.
    #[must_use]
    pub fn with_nodelay(mut self, nodelay: bool) -> Self {
        self.nodelay = nodelay;
        self
    }

    /// This with keep-alive probes after `idle` without traffic.
    #[must_use]
    pub fn with_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.keepalive = idle;
        self
    }

    /// This with `SO_RCVBUF` set.
    #[must_use]
    pub fn with_recv_buffer(mut self, bytes: usize) -> Self {
        self.recv_buffer = Some(bytes);
        self
    }

    /// This with `SO_SNDBUF` set.
    #[must_use]
    pub fn with_send_buffer(mut self, bytes: usize) -> Self {
        self.send_buffer = Some(bytes);
        self
    }

    /// Applies the options to `socket` (TCP options only to TCP sockets).
    ///
    /// # Errors
    ///
    /// The OS refused an option.
    pub fn apply(&self, socket: &Socket) -> io::Result<()> {
        let tcp = matches!(socket.domain()?, d if d == Domain::IPV4 || d == Domain::IPV6);
        self.apply_to(socket, tcp)
    }

    /// [`apply`](Self::apply) to a socket known to be TCP or not, without asking the OS.
    pub(crate) fn apply_to(&self, socket: &Socket, tcp: bool) -> io::Result<()> {
        if tcp {
            socket.set_nodelay(self.nodelay)?;
            if let Some(idle) = self.keepalive {
                socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
            }
        }
        if let Some(bytes) = self.recv_buffer {
            socket.set_recv_buffer_size(bytes)?;
        }
        if let Some(bytes) = self.send_buffer {
            socket.set_send_buffer_size(bytes)?;
        }
        Ok(())
    }
}

/// A new non-blocking stream socket for `address`'s family (Versile `create_native`).
///
/// # Errors
///
/// The OS refused to create the socket.
#[doc(alias = "create_native")]
pub fn stream_socket(address: &Address) -> io::Result<Socket> {
    let protocol = match address {
        Address::Tcp(_) => Some(socket2::Protocol::TCP),
        Address::Unix(_) => None,
    };
    Socket::new(
        address.domain(),
        Type::STREAM.nonblocking().cloexec(),
        protocol,
    )
}

/// Two connected non-blocking TCP sockets on loopback (Versile `create_native_pair` for TCP).
///
/// Made through a listener on `127.0.0.1:0` that is closed afterwards; the accepted socket
/// is checked to be the one that connected.
///
/// # Errors
///
/// Any OS error on the way, or `InvalidData` if another client got in first.
#[doc(alias = "create_native_pair")]
pub fn tcp_pair() -> io::Result<(Socket, Socket)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (server, from) = listener.accept()?;
    if from != client.local_addr()? {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a stranger connected first",
        ));
    }
    let (a, b) = (Socket::from(client), Socket::from(server));
    for socket in [&a, &b] {
        socket.set_nonblocking(true)?;
        socket.set_nodelay(true)?;
    }
    Ok((a, b))
}

/// Two connected non-blocking Unix stream sockets.
///
/// # Errors
///
/// The OS refused to create them.
pub fn unix_pair() -> io::Result<(Socket, Socket)> {
    let (a, b) = Socket::pair(Domain::UNIX, Type::STREAM.cloexec(), None)?;
    a.set_nonblocking(true)?;
    b.set_nonblocking(true)?;
    Ok((a, b))
}

/// A connected (or connecting) stream socket as a [`StreamIo`].
#[derive(Debug)]
pub struct SocketIo {
    /// The socket, non-blocking.
    socket: Socket,
    /// The peer's address when known already (what was connected to, or what `accept`
    /// returned), so that the OS need not be asked.
    target: Option<Address>,
    /// A read has returned end of file: the peer will send nothing more.
    read_ended: AtomicBool,
}

impl SocketIo {
    /// Wraps a non-blocking stream socket; `target` names the peer when it is known (the
    /// address it connects to, or the one `accept` returned), else the OS is asked.
    pub fn new(socket: Socket, target: Option<Address>) -> SocketIo {
        SocketIo {
            socket,
            target,
            read_ended: AtomicBool::new(false),
        }
    }

    /// The socket.
    pub fn socket(&self) -> &Socket {
        &self.socket
    }
}

/// `MSG_NOSIGNAL`: a write to a closed socket fails with `EPIPE` instead of raising `SIGPIPE`.
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL;

impl StreamIo for SocketIo {
    fn read(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let flags = rustix::net::RecvFlags::empty();
        let room = buf.capacity() > buf.len();
        // The second figure is the length the kernel had, which differs only with `TRUNC`.
        let (read, _) = rustix::net::recv(&self.socket, spare_capacity(buf), flags)?;
        if read == 0 && room {
            self.read_ended.store(true, Ordering::Relaxed);
        }
        Ok(read)
    }

    fn write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if bufs.len() == 1 {
            self.socket.send_with_flags(&bufs[0], SEND_FLAGS)
        } else {
            self.socket.send_vectored_with_flags(bufs, SEND_FLAGS)
        }
    }

    fn descriptors(&self) -> Descriptors<'_> {
        Descriptors::Shared(self.socket.as_fd())
    }

    fn shutdown(&self, direction: Direction) -> io::Result<()> {
        let how = match direction {
            // The peer has ended its output: there is nothing left to refuse, and the
            // system call would change nothing.
            Direction::Input if self.read_ended.load(Ordering::Relaxed) => return Ok(()),
            Direction::Input => Shutdown::Read,
            Direction::Output => Shutdown::Write,
            Direction::Both => Shutdown::Both,
        };
        match self.socket.shutdown(how) {
            Err(err) if err.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        }
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.socket.take_error()
    }

    fn has_unread(&self) -> bool {
        let flags = rustix::net::RecvFlags::PEEK | rustix::net::RecvFlags::DONTWAIT;
        matches!(
            rustix::net::recv(&self.socket, &mut [0u8][..], flags),
            Ok((1, _))
        )
    }

    fn peer(&self) -> Peer {
        if let Some(address) = &self.target {
            return address.to_peer();
        }
        self.socket
            .peer_addr()
            .ok()
            .as_ref()
            .and_then(Address::from_sock_addr)
            .map_or(Peer::Unix(None), |address| address.to_peer())
    }
}

impl StreamAgent {
    /// An agent for a connected non-blocking socket, such as an accepted one or one of a
    /// pair (Versile `VClientSocketAgent(sock, connected=True)`).
    ///
    /// # Errors
    ///
    /// The reactor refused the descriptor.
    pub fn from_socket(
        reactor: &Reactor,
        socket: Socket,
        config: AgentConfig,
    ) -> Result<StreamAgent, ReactorError> {
        StreamAgent::new(reactor, SocketIo::new(socket, None), config)
    }
}
