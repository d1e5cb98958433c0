//! Control messages passed along a chain (Versile `VIOControl`).

use std::any::Any;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// A control message travelling along a chain.
///
/// Messages towards the application (downstream) go to a consumer with
/// [`Link::control_downstream`](crate::Link::control_downstream); messages towards the transport
/// (upstream) go to a producer with [`Link::control_upstream`](crate::Link::control_upstream).
/// Each element answers what it supports, handles it, passes it along, or both; anything else
/// gets [`ControlReply::Unsupported`] (Versile `VIOMissingControl`).
///
/// The usual order on a new chain: attach, the `Notify*Attached` messages,
/// [`ReqProducerState`](Self::ReqProducerState) upstream, [`Connected`](Self::Connected)
/// downstream (at least once: receivers must tolerate a repeat), then
/// [`Authorize`](Self::Authorize) from security layers.
#[doc(alias = "VIOControl")]
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum IoControl {
    /// Downstream: a security layer finished its handshake; may the peer be trusted?
    /// [`ControlReply::Denied`] makes the sender abort both directions.
    #[doc(alias = "authorize")]
    Authorize(Credentials),
    /// Downstream: may the transport connect to this peer? [`ControlReply::Denied`] vetoes.
    #[doc(alias = "can_connect")]
    CanConnect(Peer),
    /// Downstream: the transport is connected to this peer.
    #[doc(alias = "connected")]
    Connected(Peer),
    /// An element's own message; match on the payload's type.
    Custom(Arc<dyn Any + Send + Sync>),
    /// Upstream: a consumer has just attached to this producer.
    #[doc(alias = "notify_consumer_attached")]
    NotifyConsumerAttached,
    /// Downstream: a producer has just attached to this consumer.
    #[doc(alias = "notify_producer_attached")]
    NotifyProducerAttached,
    /// Downstream: a producer asks its consumer for state it may have missed (the mirror of
    /// [`ReqProducerState`](Self::ReqProducerState)).
    #[doc(alias = "req_consumer_state")]
    ReqConsumerState,
    /// Upstream: a consumer that attached late asks for the state it missed, e.g. a
    /// transport answers with [`Connected`](Self::Connected) sent downstream.
    #[doc(alias = "req_producer_state")]
    ReqProducerState,
}

/// The answer to a control message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlReply {
    /// A question was answered yes.
    Allowed,
    /// A question was answered no: veto the connect, refuse the peer.
    Denied,
    /// The message was handled (or passed on) and needs no answer.
    Handled,
    /// Nobody on the way handles this message (Versile `VIOMissingControl`).
    #[doc(alias = "VIOMissingControl")]
    Unsupported,
}

impl ControlReply {
    /// Whether a question is allowed: only [`Denied`](Self::Denied) says no; an unsupported
    /// question counts as allowed, as in Versile.
    pub fn allows(self) -> bool {
        self != ControlReply::Denied
    }

    /// Whether anything handled the message.
    pub fn is_supported(self) -> bool {
        self != ControlReply::Unsupported
    }
}

/// The far end of a transport.
#[doc(alias = "VPeer")]
#[doc(alias = "VSocketPeer")]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Peer {
    /// Some other transport, described in words.
    Other(String),
    /// An OS pipe or the standard streams (Versile `VPipePeer`).
    #[doc(alias = "VPipePeer")]
    Pipe,
    /// A child process, by process id.
    Process(u32),
    /// A TCP peer.
    Tcp(SocketAddr),
    /// A UDP peer (e.g. a VUT stream).
    Udp(SocketAddr),
    /// A Unix socket peer, with its path when it has one.
    Unix(Option<PathBuf>),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Other(what) => f.write_str(what),
            Peer::Pipe => f.write_str("pipe"),
            Peer::Process(pid) => write!(f, "process {pid}"),
            Peer::Tcp(addr) => write!(f, "tcp:{addr}"),
            Peer::Udp(addr) => write!(f, "udp:{addr}"),
            Peer::Unix(Some(path)) => write!(f, "unix:{}", path.display()),
            Peer::Unix(None) => f.write_str("unix:(unnamed)"),
        }
    }
}

/// What a security layer learned about its peer, for [`IoControl::Authorize`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Credentials {
    /// The layer that authenticated the peer, e.g. `"TLS"`.
    pub protocol: String,
    /// The peer's identity as the layer names it (e.g. a certificate subject), if any.
    pub identity: Option<String>,
    /// The peer's certificate chain, DER encoded, leaf first (may be empty).
    pub certificates: Vec<Vec<u8>>,
}
