//! Bulk throughput of one VUT stream on loopback, against kernel TCP and quinn (QUIC), with
//! in-process random loss of outgoing datagrams.
//!
//! ```text
//! cargo run --release -p weir-bench --bin vut_bench [MiB] [loss%,loss%,...] [rounds]
//! ```
//!
//! Defaults: 64 MiB per run, loss 0, 1 and 5%, one round (each round runs every row once, so
//! that rows of one round share the machine's conditions). With `VUT_PROFILE` set in the
//! environment only the VUT 1200 B rows run, for a profiler. Each run moves the payload one way over a fresh
//! connection, timed from before the connection is set up until the receiver has the last
//! byte. CPU is the whole process's user + system time (both endpoints run in this process),
//! from `/proc/self/stat`, divided by the payload.
//!
//! VUT runs CUBIC (its default) and, in lossy rows, also NewReno at 1200 B.
//!
//! Loss: VUT drops outgoing datagrams with a seeded generator before they are batched
//! (`VudpTransport::set_danger_send_loss`): a dropped datagram is left out of its GSO batch,
//! so loss stays per datagram. quinn gets the same through a wrapper around its UDP socket
//! that leaves dropped segments out of each GSO transmit ("quinn (GSO)" rows), and through
//! one that also turns GSO off ("quinn (1 dgram/send)"). Kernel TCP cannot be made lossy in
//! process: it runs lossless only.

use std::io::{IoSliceMut, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::pin::Pin;
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_io::{
    attach, ByteSink, ByteSource, Ending, Link, Produce, SinkHooks, SourceHooks, Window,
};
use weir_reactor::Reactor;
use weir_vudp::{Config, CongestionControl, VudpTransport};

/// Bytes handed to a sender at a time.
const CHUNK: usize = 64 * 1024;
/// VUT's default congestion controller.
const CUBIC: CongestionControl = CongestionControl::Cubic;

fn main() {
    let mut args = std::env::args().skip(1);
    let mib: usize = args.next().map_or(64, |a| a.parse().expect("MiB"));
    let losses: Vec<f64> = args.next().map_or(vec![0.0, 1.0, 5.0], |a| {
        a.split(',').map(|l| l.parse().expect("loss %")).collect()
    });
    let rounds: usize = args.next().map_or(1, |a| a.parse().expect("rounds"));
    let total = mib << 20;
    let payload = Bytes::from((0..CHUNK).map(|i| (i * 31 % 251) as u8).collect::<Vec<_>>());
    println!("payload {mib} MiB per run, one stream, loopback, 2 vCPU");
    println!(
        "{:<22} {:>6} {:>10} {:>9} {:>10} {:>8}  notes",
        "transport", "loss", "time (s)", "MB/s", "CPU ns/B", "CPU %"
    );
    let row = |name: &str, loss: f64, m: Measure, notes: String| {
        println!(
            "{:<22} {:>5}% {:>10.3} {:>9.1} {:>10.2} {:>7.0}%  {}",
            name,
            loss,
            m.wall.as_secs_f64(),
            total as f64 / m.wall.as_secs_f64() / 1e6,
            m.cpu.as_secs_f64() * 1e9 / total as f64,
            100.0 * m.cpu.as_secs_f64() / m.wall.as_secs_f64(),
            notes
        );
    };
    if std::env::var_os("VUT_PROFILE").is_some() {
        // Only VUT at 1200 B, for a profiler (e.g. valgrind --tool=callgrind).
        for &loss in &losses {
            let (m, notes) = measure(|| vut_run(total, loss / 100.0, 1200, CUBIC));
            row("vut (weir-vudp)", loss, m, notes);
        }
        return;
    }
    for round in 1..=rounds {
        if rounds > 1 {
            println!("-- round {round} of {rounds}");
        }
        let tcp = measure(|| tcp_run(total, &payload));
        row("tcp (kernel)", 0.0, tcp.0, String::new());
        for &loss in &losses {
            let (m, notes) = measure(|| vut_run(total, loss / 100.0, 1200, CUBIC));
            row("vut (weir-vudp)", loss, m, notes);
            let (m, notes) = measure(|| vut_run(total, loss / 100.0, 1452, CUBIC));
            row("vut (dgram 1452)", loss, m, notes);
            if loss > 0.0 {
                let newreno = CongestionControl::NewReno;
                let (m, notes) = measure(|| vut_run(total, loss / 100.0, 1200, newreno));
                row("vut (NewReno)", loss, m, notes);
            }
            if loss == 0.0 {
                let (m, notes) = measure(|| quinn_run(total, &payload, 0.0, QuinnSocket::Native));
                row("quinn (native, GSO)", loss, m, notes);
            }
            let gso = QuinnSocket::Lossy { gso: true };
            let (m, notes) = measure(|| quinn_run(total, &payload, loss / 100.0, gso));
            row("quinn (GSO, lossy)", loss, m, notes);
            let single = QuinnSocket::Lossy { gso: false };
            let (m, notes) = measure(|| quinn_run(total, &payload, loss / 100.0, single));
            row("quinn (1 dgram/send)", loss, m, notes);
        }
    }
}

/// Which socket quinn runs on.
#[derive(Clone, Copy)]
enum QuinnSocket {
    /// Through the loss wrapper; GSO batches (with dropped segments left out) or one datagram
    /// per send.
    Lossy { gso: bool },
    /// Its own socket, unwrapped.
    Native,
}

/// Wall and CPU time of one run.
#[derive(Clone, Copy)]
struct Measure {
    wall: Duration,
    cpu: Duration,
}

/// Runs `f` and measures it.
fn measure(f: impl FnOnce() -> String) -> (Measure, String) {
    let (cpu0, t0) = (process_cpu(), Instant::now());
    let notes = f();
    let wall = t0.elapsed();
    let cpu = process_cpu().saturating_sub(cpu0);
    (Measure { wall, cpu }, notes)
}

/// User + system CPU time of this process so far.
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which ends with ')'): utime is the 12th, stime the 13th.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

// ------------------------------------------------------------------------------------- TCP

fn tcp_run(total: usize, payload: &Bytes) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0; 256 * 1024];
        let mut got = 0;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break got;
            }
            got += n;
        }
    });
    let mut s = TcpStream::connect(addr).unwrap();
    let mut sent = 0;
    while sent < total {
        let n = (total - sent).min(payload.len());
        s.write_all(&payload[..n]).unwrap();
        sent += n;
    }
    drop(s);
    assert_eq!(reader.join().unwrap(), total);
    "64 KiB writes".into()
}

// ------------------------------------------------------------------------------------- VUT

/// Produces `left` bytes of zeros (the content does not matter here; the core authenticates
/// every datagram).
struct Zeros {
    chunk: Bytes,
    left: usize,
}

impl SourceHooks for Zeros {
    fn produce(&mut self, max: usize) -> Produce {
        if self.left == 0 {
            return Produce::End(Ending::Completed);
        }
        let n = max.min(self.left).min(self.chunk.len());
        self.left -= n;
        Produce::Data(self.chunk.slice(..n))
    }
}

/// Counts what arrives; reports the total at the end.
struct Count {
    got: usize,
    done: mpsc::Sender<(usize, Ending)>,
}

impl SinkHooks for Count {
    fn on_data(&mut self, _link: &Arc<Link>, data: Bytes) {
        self.got += data.len();
    }

    fn on_end(&mut self, ending: Ending) {
        let _ = self.done.send((self.got, ending));
    }
}

fn vut_run(total: usize, loss: f64, max_datagram: u16, cc: CongestionControl) -> String {
    let a_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b_sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (a_addr, b_addr) = (a_sock.local_addr().unwrap(), b_sock.local_addr().unwrap());
    let (ra, rb) = (Reactor::new().unwrap(), Reactor::new().unwrap());
    let (ta, tb) = (ra.start().unwrap(), rb.start().unwrap());
    let mut config = Config::default();
    config.max_datagram = max_datagram;
    config.congestion_control = cc;
    let a =
        VudpTransport::new(&ra, a_sock, b_addr, b"bench A", b"bench B", config.clone()).unwrap();
    let b = VudpTransport::new(&rb, b_sock, a_addr, b"bench B", b"bench A", config).unwrap();
    a.set_danger_send_loss(loss, 0x5EED_0001);
    b.set_danger_send_loss(loss, 0x5EED_0002);
    let (done_tx, done) = mpsc::channel();
    let source = ByteSource::new(
        &ra,
        Zeros {
            chunk: Bytes::from(vec![0; CHUNK]),
            left: total,
        },
    );
    let sink = ByteSink::new(
        &rb,
        Window::Bytes(1 << 20),
        Count {
            got: 0,
            done: done_tx,
        },
    );
    attach(&source.producer(), &a.io_pair().consumer).unwrap();
    attach(&b.io_pair().producer, &sink.consumer()).unwrap();
    // B sends nothing.
    let silent = ByteSource::new(
        &rb,
        Zeros {
            chunk: Bytes::new(),
            left: 0,
        },
    );
    attach(&silent.producer(), &b.io_pair().consumer).unwrap();
    let (got, ending) = done
        .recv_timeout(Duration::from_secs(600))
        .expect("VUT run finished");
    assert_eq!((got, ending), (total, Ending::Completed));
    let s = a.stats();
    let io = a.io_stats();
    let notes = format!(
        "sent {} dgrams in {} sends, {:.1}% retransmitted (lost by count {}, by time {}, \
         spurious {}), {} PTOs, {} cong. events, srtt {:?}, wire/payload {:.3}",
        s.datagrams_sent,
        io.send_calls,
        100.0 * s.bytes_retransmitted as f64 / total as f64,
        s.lost_by_packet_threshold,
        s.lost_by_time_threshold,
        s.spurious_losses + s.spurious_retransmits,
        s.rto_expirations,
        s.congestion_events,
        s.srtt,
        s.wire_bytes_sent as f64 / total as f64
    );
    ra.stop();
    rb.stop();
    let _ = (ta.join(), tb.join());
    notes
}

// ----------------------------------------------------------------------------------- quinn

/// A quinn socket that drops outgoing datagrams at random (seeded): one datagram per send,
/// or GSO batches with the dropped segments left out.
#[derive(Debug)]
struct LossySocket {
    inner: Arc<dyn quinn::AsyncUdpSocket>,
    threshold: u64,
    rng: Mutex<u64>,
    gso: bool,
}

impl LossySocket {
    /// Whether to drop the next datagram.
    fn drop_next(&self) -> bool {
        let mut x = self.rng.lock().unwrap();
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x < self.threshold
    }
}

impl quinn::AsyncUdpSocket for LossySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn quinn::UdpPoller>> {
        self.inner.clone().create_io_poller()
    }

    fn try_send(&self, transmit: &quinn::udp::Transmit<'_>) -> std::io::Result<()> {
        let Some(size) = transmit.segment_size else {
            if self.drop_next() {
                return Ok(());
            }
            return self.inner.try_send(transmit);
        };
        // A GSO batch: keep the segments that survive, in order, at the same stride (only
        // the last may be shorter, as before).
        let mut kept = Vec::with_capacity(transmit.contents.len());
        let mut count = 0;
        for segment in transmit.contents.chunks(size) {
            if !self.drop_next() {
                kept.extend_from_slice(segment);
                count += 1;
            }
        }
        if count == 0 {
            return Ok(());
        }
        self.inner.try_send(&quinn::udp::Transmit {
            contents: &kept,
            segment_size: (count > 1).then_some(size),
            ..transmit.clone()
        })
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [quinn::udp::RecvMeta],
    ) -> Poll<std::io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        if self.gso {
            self.inner.max_transmit_segments()
        } else {
            1
        }
    }

    fn max_receive_segments(&self) -> usize {
        self.inner.max_receive_segments()
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

/// A quinn endpoint on loopback, native or lossy.
fn quinn_endpoint(
    server: Option<quinn::ServerConfig>,
    loss: f64,
    kind: QuinnSocket,
    seed: u64,
) -> quinn::Endpoint {
    use quinn::Runtime;
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let runtime = Arc::new(quinn::TokioRuntime);
    let wrapped = runtime.wrap_udp_socket(socket).unwrap();
    let socket: Arc<dyn quinn::AsyncUdpSocket> = match kind {
        QuinnSocket::Native => wrapped,
        QuinnSocket::Lossy { gso } => Arc::new(LossySocket {
            inner: wrapped,
            threshold: (loss * u64::MAX as f64) as u64,
            rng: Mutex::new(seed | 1),
            gso,
        }),
    };
    quinn::Endpoint::new_with_abstract_socket(
        quinn::EndpointConfig::default(),
        server,
        socket,
        runtime,
    )
    .unwrap()
}

fn quinn_run(total: usize, payload: &Bytes, loss: f64, kind: QuinnSocket) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_der = rustls::pki_types::CertificateDer::from(cert.cert.der().to_vec());
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der());
    let server_config =
        quinn::ServerConfig::with_single_cert(vec![cert_der.clone()], key.into()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).unwrap();
    let client_config = quinn::ClientConfig::with_root_certificates(Arc::new(roots)).unwrap();

    let (addr_tx, addr_rx) = mpsc::channel();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let endpoint = quinn_endpoint(Some(server_config), loss, kind, 0x5EED_0003);
            addr_tx.send(endpoint.local_addr().unwrap()).unwrap();
            let conn = endpoint.accept().await.unwrap().await.unwrap();
            let mut stream = conn.accept_uni().await.unwrap();
            let mut got = 0;
            while let Some(chunk) = stream.read_chunk(usize::MAX, true).await.unwrap() {
                got += chunk.bytes.len();
            }
            conn.close(0u32.into(), b"done");
            endpoint.wait_idle().await;
            got
        })
    });
    let server_addr = addr_rx.recv().unwrap();
    let payload = payload.clone();
    let client = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut endpoint = quinn_endpoint(None, loss, kind, 0x5EED_0004);
            endpoint.set_default_client_config(client_config);
            let conn = endpoint
                .connect(server_addr, "localhost")
                .unwrap()
                .await
                .unwrap();
            let mut stream = conn.open_uni().await.unwrap();
            let mut sent = 0;
            while sent < total {
                let n = (total - sent).min(payload.len());
                stream.write_chunk(payload.slice(..n)).await.unwrap();
                sent += n;
            }
            stream.finish().unwrap();
            let _ = conn.closed().await;
            let stats = conn.stats();
            endpoint.wait_idle().await;
            stats
        })
    });
    let got = server.join().unwrap();
    let stats = client.join().unwrap();
    assert_eq!(got, total);
    format!(
        "sent {} dgrams, {} lost, mtu {}, cwnd {}",
        stats.path.sent_packets, stats.path.lost_packets, stats.path.current_mtu, stats.path.cwnd
    )
}
