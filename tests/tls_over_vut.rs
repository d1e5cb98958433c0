//! TLS over VUT: the TLS element on weir's reliable UDP transport instead of a socket or a
//! pipe, two reactors on loopback. The element does not know what carries its ciphertext;
//! VUT's retransmissions, with datagrams dropped on purpose, reach it as a plain byte stream.

#[path = "../tls/tests/common/mod.rs"]
mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use bytes::Bytes;
use common::{client_trusting_ca, pattern, pki};
use weir_io::{
    ByteIoPair, ByteSink, ByteSource, ByteWAgent, ByteWriter, ControlReply, Ending, IoControl,
    Link, Peer, Produce, SinkHooks, SourceHooks, WAgentHooks, Window,
};
use weir_reactor::{Reactor, ReactorThread};
use weir_tls::TlsElement;
use weir_vudp::{CloseInfo, Config, VudpTransport};

/// Longest any one test waits for an event.
const DEADLINE: Duration = Duration::from_secs(60);

/// Produces `data`, in pieces of at most what the credit allows, then ends.
struct Upload(Bytes);

impl SourceHooks for Upload {
    fn produce(&mut self, max: usize) -> Produce {
        if self.0.is_empty() {
            return Produce::End(Ending::Completed);
        }
        let n = max.min(self.0.len());
        Produce::Data(self.0.split_to(n))
    }
}

/// What the client's application saw, sent when its input ends.
#[derive(Debug)]
struct Received {
    /// The plaintext, in order.
    data: Vec<u8>,
    /// How the stream ended.
    ending: Ending,
    /// The peer announced by `Connected`, if any.
    peer: Option<Peer>,
}

/// Collects the plaintext that comes back.
struct Collect {
    /// What arrived so far.
    data: Vec<u8>,
    /// From `Connected`.
    peer: Option<Peer>,
    /// Where the result goes.
    done: mpsc::Sender<Received>,
}

impl SinkHooks for Collect {
    fn on_data(&mut self, _link: &Arc<Link>, data: Bytes) {
        self.data.extend_from_slice(&data);
    }

    fn on_end(&mut self, ending: Ending) {
        let _ = self.done.send(Received {
            data: std::mem::take(&mut self.data),
            ending,
            peer: self.peer.take(),
        });
    }

    fn on_control(&mut self, message: &IoControl) -> ControlReply {
        if let IoControl::Connected(peer) = message {
            self.peer = Some(peer.clone());
        }
        ControlReply::Handled
    }
}

/// Writes back what it reads; its output ends when its input does.
struct Echo;

impl WAgentHooks for Echo {
    fn on_data(&mut self, writer: &Arc<ByteWriter>, data: Bytes) {
        let _ = writer.write(data);
    }
}

/// One end: a reactor on its own thread, a VUT transport on it, and the TLS element over
/// the transport.
struct End {
    reactor: Reactor,
    thread: Option<ReactorThread>,
    transport: VudpTransport,
    tls: TlsElement,
    closed: mpsc::Receiver<CloseInfo>,
}

impl Drop for End {
    fn drop(&mut self) {
        self.reactor.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl End {
    /// An end on `socket` talking to `peer`, with the TLS element `tls` makes on its reactor
    /// put over the transport. Outgoing datagrams are dropped with probability `loss`.
    fn new(
        socket: UdpSocket,
        peer: SocketAddr,
        secrets: (&[u8], &[u8]),
        loss: f64,
        tls: impl FnOnce(&Reactor) -> TlsElement,
    ) -> End {
        let reactor = Reactor::new().unwrap();
        let thread = reactor.start().unwrap();
        let mut config = Config::default();
        config.close_linger = Duration::from_millis(500);
        let transport =
            VudpTransport::new(&reactor, socket, peer, secrets.0, secrets.1, config).unwrap();
        transport.set_danger_send_loss(loss, u64::from(peer.port()));
        let (closed_tx, closed) = mpsc::channel();
        transport.set_close_callback(move |info| {
            let _ = closed_tx.send(info);
        });
        let tls = tls(&reactor);
        tls.cipher_io().attach(&transport.io_pair()).unwrap();
        End {
            reactor,
            thread: Some(thread),
            transport,
            tls,
            closed,
        }
    }

    /// Waits until the transport has closed, and checks that it closed cleanly.
    fn expect_clean_close(&self) {
        let info = self
            .closed
            .recv_timeout(DEADLINE)
            .expect("transport closed");
        assert!(info.error.is_none(), "{info:?}");
        assert_eq!(info.ending(), Ending::Completed);
    }
}

/// A TLS client over VUT sends `len` bytes to a TLS echo server over VUT, each transport
/// dropping `loss` of its datagrams; checks the echo byte for byte, the clean TLS end on both
/// sides and the clean close of both transports. Returns the bytes VUT retransmitted (both
/// ends together).
fn echo_over_vut(len: usize, loss: f64) -> u64 {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let config = client_trusting_ca().build().unwrap();
    let client = End::new(a, b_addr, (b"client", b"server"), loss, |reactor| {
        TlsElement::client(reactor, &config, "localhost").unwrap()
    });
    let server = End::new(b, a_addr, (b"server", b"client"), loss, |reactor| {
        TlsElement::server(reactor, &pki().localhost.server_config()).unwrap()
    });
    let echo = ByteWAgent::new(&server.reactor, 64 * 1024, Echo);
    server.tls.plain_io().attach(&echo.io_pair()).unwrap();

    let sent = pattern(len, 7);
    let (done, received) = mpsc::channel();
    let sink = ByteSink::new(
        &client.reactor,
        Window::Bytes(64 * 1024),
        Collect {
            data: Vec::new(),
            peer: None,
            done,
        },
    );
    let source = ByteSource::new(&client.reactor, Upload(Bytes::from(sent.clone())));
    client
        .tls
        .plain_io()
        .attach(&ByteIoPair::new(sink.consumer(), source.producer()))
        .unwrap();

    let at_client = received.recv_timeout(DEADLINE).expect("the echo ended");
    assert_eq!(at_client.ending, Ending::Completed);
    assert_eq!(at_client.data.len(), sent.len());
    assert!(
        at_client.data == sent,
        "the echo differs from what was sent"
    );
    // The transport's own `Connected` passes through TLS to the application.
    assert_eq!(at_client.peer, Some(Peer::Udp(b_addr)));
    let info = client.tls.handshake_info().expect("handshake done");
    assert!(info.peer_certificate_der().is_some());
    // Both directions ended with close_notify, not with the transport's end.
    assert!(client.tls.is_peer_closed() && server.tls.is_peer_closed());
    assert!(!client.tls.is_truncated() && !server.tls.is_truncated());
    assert!(client.tls.error().is_none() && server.tls.error().is_none());
    client.expect_clean_close();
    server.expect_clean_close();
    [&client, &server]
        .iter()
        .map(|end| end.transport.stats().bytes_retransmitted)
        .sum()
}

#[test]
fn tls_echo_over_vut_on_loopback() {
    echo_over_vut(4 << 20, 0.0);
}

/// A tenth of the datagrams dropped, both ways, from the first HELLO on: the handshake's
/// flights and the records after it are retransmitted by VUT, and TLS sees none of it.
#[test]
fn tls_echo_over_vut_with_a_tenth_of_the_datagrams_dropped() {
    let retransmitted = echo_over_vut(2 << 20, 0.1);
    assert!(retransmitted > 0, "nothing was lost, so nothing was tested");
}
