//! A deterministic simulated network that runs two [`Connection`]s against each other.
//!
//! [`Sim`] owns a client and a server [`Endpoint`], a virtual clock and a seeded random
//! generator. Datagrams travel through one queue per direction with configurable delay,
//! jitter (which reorders), loss, duplication, bandwidth and MTU ([`LinkConfig`]); scripted
//! [`Fault`]s apply to a side's next datagrams ("drop the client's next packet"). The clock
//! jumps straight to the earliest of the next arrival and both cores' `poll_timeout`, so
//! minutes of protocol time take milliseconds. The same seed gives the same run; every loop
//! has a step limit, and errors name the seed.
//!
//! Each endpoint also plays a tiny application: it writes [`Endpoint::to_send`] as capacity
//! allows, optionally finishes after the last byte, and (if [`Endpoint::auto_read`]) reads
//! everything into [`Endpoint::received`].
//!
//! # Examples
//!
//! ```
//! use weir_vudp::sim::{LinkConfig, Sim};
//!
//! let mut link = LinkConfig::default();
//! link.loss = 0.1;
//! let mut sim = Sim::new(7, link);
//! sim.client.send(vec![42; 100_000], true);
//! sim.server.send(b"pong".to_vec(), true);
//! sim.run_until(|sim| sim.client.is_closed() && sim.server.is_closed()).unwrap();
//! assert_eq!(sim.server.received, vec![42; 100_000]);
//! assert_eq!(sim.client.received, b"pong");
//! ```

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::{Config, Connection, Event};

/// Which endpoint of a [`Sim`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The first endpoint (address [`Sim::CLIENT_ADDR`]).
    Client,
    /// The second endpoint (address [`Sim::SERVER_ADDR`]).
    Server,
}

impl Side {
    /// The other side.
    pub fn peer(self) -> Self {
        match self {
            Self::Client => Self::Server,
            Self::Server => Self::Client,
        }
    }

    fn index(self) -> usize {
        match self {
            Self::Client => 0,
            Self::Server => 1,
        }
    }
}

/// Properties of the simulated link, the same in both directions.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LinkConfig {
    /// One-way propagation delay. Default 20 ms.
    pub delay: Duration,
    /// Extra delay drawn uniformly from `0..jitter` per datagram; reorders. Default 0.
    pub jitter: Duration,
    /// Probability that a datagram is lost, `0.0..=1.0`. Default 0.
    pub loss: f64,
    /// Probability that a datagram is delivered twice. Default 0.
    pub duplicate: f64,
    /// Bytes per second per direction; `None` is unlimited. Default `None`.
    pub bandwidth: Option<u64>,
    /// Largest datagram the link carries; larger ones are dropped. Default 1500.
    pub mtu: usize,
    /// With a bandwidth limit, datagrams that would wait longer than this in the queue are
    /// dropped (drop-tail). Default 200 ms.
    pub max_queue_delay: Duration,
}

impl Default for LinkConfig {
    fn default() -> Self {
        Self {
            delay: Duration::from_millis(20),
            jitter: Duration::ZERO,
            loss: 0.0,
            duplicate: 0.0,
            bandwidth: None,
            mtu: 1500,
            max_queue_delay: Duration::from_millis(200),
        }
    }
}

/// A scripted action applied to the next datagram a side sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Delay it by this much on top of the link's delay.
    Delay(Duration),
    /// Drop it.
    Drop,
    /// Let it through untouched (bypassing random loss).
    Pass,
}

/// The simulated run failed to reach its goal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimError {
    /// The seed of the run, to reproduce it.
    pub seed: u64,
    /// What went wrong.
    pub reason: String,
}

impl fmt::Display for SimError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "simulation with seed {} failed: {}",
            self.seed, self.reason
        )
    }
}

impl std::error::Error for SimError {}

/// One side of a [`Sim`]: a connection plus a scripted application.
#[derive(Debug)]
pub struct Endpoint {
    /// The protocol core.
    pub conn: Connection,
    /// This endpoint's address.
    pub addr: SocketAddr,
    /// Every event the core reported, in order.
    pub events: Vec<Event>,
    /// Bytes read from the core.
    pub received: Vec<u8>,
    /// Bytes the application still has to write.
    pub to_send: VecDeque<u8>,
    /// Call `finish` once `to_send` is empty.
    pub finish_when_sent: bool,
    /// Read everything readable after every step. Default true.
    pub auto_read: bool,
    /// Scripted faults for the next datagrams this side sends.
    pub faults: VecDeque<Fault>,
}

impl Endpoint {
    /// Queues `data` for writing; `finish` ends the stream after it.
    pub fn send(&mut self, data: Vec<u8>, finish: bool) {
        self.to_send.extend(data);
        self.finish_when_sent |= finish;
    }

    /// Whether the core reported [`Event::Closed`].
    pub fn is_closed(&self) -> bool {
        self.events.contains(&Event::Closed)
    }

    /// The error of the core's [`Event::Failed`], if any.
    pub fn failure(&self) -> Option<crate::Error> {
        self.events.iter().find_map(|e| match e {
            Event::Failed(error) => Some(*error),
            _ => None,
        })
    }

    /// Whether the core reported `event`.
    pub fn saw(&self, event: Event) -> bool {
        self.events.contains(&event)
    }

    /// Runs the application and drains the core's outputs in the documented order.
    fn drive(&mut self, now: Instant, out: &mut Vec<Vec<u8>>) {
        for _ in 0..2 {
            if !self.to_send.is_empty() {
                let (front, _) = self.to_send.as_slices();
                let taken = self.conn.write(front);
                self.to_send.drain(..taken);
            }
            if self.to_send.is_empty() && self.finish_when_sent {
                self.conn.finish();
            }
            if self.auto_read {
                while let Some(chunk) = self.conn.read(usize::MAX) {
                    self.received.extend_from_slice(&chunk);
                }
            }
            let mut buf = Vec::new();
            while let Some(transmit) = self.conn.poll_transmit(now, &mut buf) {
                debug_assert_eq!(transmit.size, buf.len());
                out.push(std::mem::take(&mut buf));
            }
            let _ = self.conn.poll_timeout();
            while let Some(event) = self.conn.poll_event() {
                self.events.push(event);
            }
        }
    }
}

/// A datagram on the wire.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Flight {
    /// Arrival time.
    at: Instant,
    /// Tie-breaker: order of sending.
    serial: u64,
    /// Receiving side.
    to: usize,
    /// Source address.
    from: SocketAddr,
    /// Payload.
    bytes: Vec<u8>,
}

/// Two connections on a simulated network; see the [module documentation](self).
#[derive(Debug)]
pub struct Sim {
    /// The seed of this run.
    seed: u64,
    /// Link-level random generator.
    rng: SimRng,
    /// The virtual clock.
    now: Instant,
    /// When the run started.
    start: Instant,
    /// Link properties.
    pub link: LinkConfig,
    /// The client endpoint.
    pub client: Endpoint,
    /// The server endpoint.
    pub server: Endpoint,
    /// Datagrams on the wire, earliest first.
    wire: BinaryHeap<Reverse<Flight>>,
    /// Serial number of the next datagram.
    serial: u64,
    /// Per direction: when the link finishes sending what it already has.
    busy_until: [Instant; 2],
    /// Every datagram sent by the cores, if capturing: (sender, bytes).
    pub capture: Option<Vec<(Side, Vec<u8>)>>,
    /// Datagrams the link dropped (loss, MTU, queue, faults).
    pub link_drops: u64,
    /// Steps taken.
    steps: u64,
    /// Steps allowed in one `run_until`.
    pub step_limit: u64,
}

impl Sim {
    /// The client's address.
    pub const CLIENT_ADDR: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 1001));
    /// The server's address.
    pub const SERVER_ADDR: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 2), 2002));

    /// A run with default [`Config`]s and matching secrets.
    ///
    /// # Panics
    ///
    /// The `with_*` constructors panic if a [`Config`] is invalid.
    pub fn new(seed: u64, link: LinkConfig) -> Self {
        Self::with_configs(seed, link, Config::default(), Config::default())
    }

    /// A run with the given configurations and matching secrets.
    pub fn with_configs(seed: u64, link: LinkConfig, client: Config, server: Config) -> Self {
        Self::with_secrets(
            seed,
            link,
            client,
            server,
            [b"client secret", b"server secret"],
        )
    }

    /// A run where the server is given `server_view` as `[its secret, the client's]`;
    /// the client always uses `b"client secret"` and `b"server secret"`.
    pub fn with_secrets(
        seed: u64,
        link: LinkConfig,
        client: Config,
        server: Config,
        server_view: [&[u8]; 2],
    ) -> Self {
        let mut rng = SimRng::new(seed);
        let now = Instant::now();
        let client_conn = Connection::new(
            client,
            b"client secret",
            b"server secret",
            Self::SERVER_ADDR,
            rng.seed32(),
            now,
        );
        let server_conn = Connection::new(
            server,
            server_view[1],
            server_view[0],
            Self::CLIENT_ADDR,
            rng.seed32(),
            now,
        );
        // A test harness: an invalid configuration is the caller's bug, so say so loudly.
        let (Ok(client_conn), Ok(server_conn)) = (client_conn, server_conn) else {
            panic!("sim: invalid config");
        };
        let endpoint = |conn, addr| Endpoint {
            conn,
            addr,
            events: Vec::new(),
            received: Vec::new(),
            to_send: VecDeque::new(),
            finish_when_sent: false,
            auto_read: true,
            faults: VecDeque::new(),
        };
        let mut sim = Self {
            seed,
            rng,
            now,
            start: now,
            link,
            client: endpoint(client_conn, Self::CLIENT_ADDR),
            server: endpoint(server_conn, Self::SERVER_ADDR),
            wire: BinaryHeap::new(),
            serial: 0,
            busy_until: [now; 2],
            capture: None,
            link_drops: 0,
            steps: 0,
            step_limit: 200_000,
        };
        sim.drive(Side::Client);
        sim.drive(Side::Server);
        sim
    }

    /// The seed of this run.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The virtual clock.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since the start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// An endpoint by side.
    pub fn endpoint(&mut self, side: Side) -> &mut Endpoint {
        match side {
            Side::Client => &mut self.client,
            Side::Server => &mut self.server,
        }
    }

    /// Drops the next datagram `side` sends.
    pub fn drop_next(&mut self, side: Side) {
        self.endpoint(side).faults.push_back(Fault::Drop);
    }

    /// Delivers `bytes` to `to` as if sent from `from`, after the link delay.
    pub fn inject(&mut self, to: Side, from: SocketAddr, bytes: Vec<u8>) {
        let at = self.now + self.link.delay;
        self.push_flight(at, to.index(), from, bytes);
    }

    /// Runs the application and drains the outputs of `side` now (after a manual call on
    /// its connection).
    pub fn drive(&mut self, side: Side) {
        let mut out = Vec::new();
        let now = self.now;
        self.endpoint(side).drive(now, &mut out);
        for bytes in out {
            self.send(side, bytes);
        }
    }

    /// Advances to the next instant where something happens and processes it. Returns
    /// false when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        self.steps += 1;
        let next_arrival = self.wire.peek().map(|f| f.0.at);
        let next = [
            next_arrival,
            self.client.conn.poll_timeout(),
            self.server.conn.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else { return false };
        self.now = self.now.max(next);
        while self.wire.peek().is_some_and(|f| f.0.at <= self.now) {
            let Some(Reverse(flight)) = self.wire.pop() else {
                break;
            };
            let endpoint = if flight.to == 0 {
                &mut self.client
            } else {
                &mut self.server
            };
            endpoint
                .conn
                .handle_datagram(self.now, flight.from, &flight.bytes);
        }
        for side in [Side::Client, Side::Server] {
            let now = self.now;
            let conn = &mut self.endpoint(side).conn;
            if conn.poll_timeout().is_some_and(|t| t <= now) {
                conn.handle_timeout(now);
            }
            self.drive(side);
        }
        true
    }

    /// Steps until `done` holds.
    ///
    /// # Errors
    ///
    /// [`SimError`] (naming the seed) if the step limit is reached or nothing is left to
    /// happen first.
    pub fn run_until(&mut self, mut done: impl FnMut(&Self) -> bool) -> Result<(), SimError> {
        let limit = self.steps + self.step_limit;
        while !done(self) {
            if self.steps >= limit {
                return Err(self.error("step limit reached"));
            }
            if !self.step() {
                return Err(self.error("nothing left to happen"));
            }
        }
        Ok(())
    }

    /// Steps for `duration` of virtual time (or until nothing is left to happen).
    pub fn run_for(&mut self, duration: Duration) {
        let end = self.now + duration;
        let limit = self.steps + self.step_limit;
        while self.steps < limit {
            let next = [
                self.wire.peek().map(|f| f.0.at),
                self.client.conn.poll_timeout(),
                self.server.conn.poll_timeout(),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(t) if t <= end => {
                    self.step();
                }
                _ => break,
            }
        }
        self.now = self.now.max(end);
    }

    /// A [`SimError`] for this run.
    pub fn error(&self, reason: &str) -> SimError {
        SimError {
            seed: self.seed,
            reason: format!(
                "{reason} after {:?} virtual, client {:?} / {:?}, server {:?} / {:?}",
                self.elapsed(),
                self.client.events,
                self.client.conn.stats(),
                self.server.events,
                self.server.conn.stats()
            ),
        }
    }

    fn send(&mut self, from: Side, bytes: Vec<u8>) {
        if let Some(capture) = &mut self.capture {
            capture.push((from, bytes.clone()));
        }
        let mut extra = Duration::ZERO;
        match self.endpoint(from).faults.pop_front() {
            Some(Fault::Drop) => {
                self.link_drops += 1;
                return;
            }
            Some(Fault::Delay(d)) => extra = d,
            Some(Fault::Pass) => {}
            None => {
                if self.rng.chance(self.link.loss) {
                    self.link_drops += 1;
                    return;
                }
            }
        }
        if bytes.len() > self.link.mtu {
            self.link_drops += 1;
            return;
        }
        let dir = from.index();
        let mut departure = self.now;
        if let Some(bandwidth) = self.link.bandwidth {
            let start = self.busy_until[dir].max(self.now);
            if start - self.now > self.link.max_queue_delay {
                self.link_drops += 1;
                return;
            }
            let nanos = (bytes.len() as u128 * 1_000_000_000) / u128::from(bandwidth.max(1));
            departure = start + Duration::from_nanos(nanos as u64);
            self.busy_until[dir] = departure;
        }
        let copies = if self.rng.chance(self.link.duplicate) {
            2
        } else {
            1
        };
        let src = self.endpoint(from).addr;
        for _ in 0..copies {
            let jitter = self.link.jitter.mul_f64(self.rng.unit());
            let at = departure + self.link.delay + jitter + extra;
            self.push_flight(at, from.peer().index(), src, bytes.clone());
        }
    }

    fn push_flight(&mut self, at: Instant, to: usize, from: SocketAddr, bytes: Vec<u8>) {
        self.serial += 1;
        self.wire.push(Reverse(Flight {
            at,
            serial: self.serial,
            to,
            from,
            bytes,
        }));
    }
}

/// SplitMix64: small, fast, seedable, good enough for a network simulation.
#[derive(Debug, Clone)]
struct SimRng {
    /// Generator state.
    state: u64,
}

impl SimRng {
    fn new(seed: u64) -> Self {
        Self {
            state: seed ^ 0x5DEE_CE66_D1CE_4E5B,
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0.0..1.0`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, probability: f64) -> bool {
        probability > 0.0 && self.unit() < probability
    }

    fn seed32(&mut self) -> [u8; 32] {
        let mut seed = [0; 32];
        for chunk in seed.chunks_mut(8) {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        seed
    }
}
