//! Helpers shared by the integration tests: a pattern source, a checking sink.

#![allow(dead_code, unreachable_pub)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use weir_io::{ControlReply, Ending, IoControl, Link, Peer, Produce, SinkHooks, SourceHooks};
use weir_pipe::ChildExited;

/// Upper bound for any wait in these tests.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Period of the pattern (prime, so chunk boundaries never line up with it).
const PERIOD: usize = 65_521;

/// A pattern long enough that any offset has 64 KiB of it ahead.
pub fn pattern() -> Bytes {
    let mut state: u32 = 0x1234_5678;
    let bytes: Vec<u8> = (0..PERIOD)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect();
    let mut doubled = bytes.clone();
    doubled.extend_from_slice(&bytes);
    Bytes::from(doubled)
}

/// Produces `total` bytes of the pattern (or without end), counting what it produced.
pub struct PatternSource {
    pub pattern: Bytes,
    pub offset: u64,
    pub total: Option<u64>,
    pub produced: Arc<AtomicU64>,
    pub aborted: Arc<AtomicBool>,
}

impl PatternSource {
    pub fn new(total: Option<u64>) -> PatternSource {
        PatternSource {
            pattern: pattern(),
            offset: 0,
            total,
            produced: Arc::new(AtomicU64::new(0)),
            aborted: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl SourceHooks for PatternSource {
    fn produce(&mut self, max: usize) -> Produce {
        let left = self.total.map_or(u64::MAX, |t| t - self.offset);
        if left == 0 {
            return Produce::End(Ending::Completed);
        }
        let n = (max.min(PERIOD) as u64).min(left) as usize;
        let start = (self.offset % PERIOD as u64) as usize;
        self.offset += n as u64;
        self.produced.store(self.offset, Ordering::Release);
        Produce::Data(self.pattern.slice(start..start + n))
    }

    fn on_abort(&mut self) {
        self.aborted.store(true, Ordering::Release);
    }
}

/// What a [`CheckSink`] saw, sent when the stream ends.
#[derive(Debug)]
pub struct Report {
    pub received: u64,
    pub matches: bool,
    pub ending: Ending,
    pub exited: Option<ChildExited>,
    pub peer: Option<Peer>,
}

/// Checks received bytes against the pattern (or keeps them), records controls.
pub struct CheckSink {
    pub pattern: Option<Bytes>,
    pub kept: Vec<u8>,
    pub received: u64,
    pub matches: bool,
    pub exited: Option<ChildExited>,
    pub peer: Option<Peer>,
    pub done: mpsc::Sender<(Report, Vec<u8>)>,
}

impl CheckSink {
    pub fn new(check: bool) -> (CheckSink, mpsc::Receiver<(Report, Vec<u8>)>) {
        let (tx, rx) = mpsc::channel();
        let sink = CheckSink {
            pattern: check.then(pattern),
            kept: Vec::new(),
            received: 0,
            matches: true,
            exited: None,
            peer: None,
            done: tx,
        };
        (sink, rx)
    }
}

impl SinkHooks for CheckSink {
    fn on_data(&mut self, _link: &Arc<Link>, data: Bytes) {
        match &self.pattern {
            Some(pattern) => {
                let mut at = 0;
                while at < data.len() {
                    let start = (self.received % PERIOD as u64) as usize;
                    let n = (data.len() - at).min(PERIOD);
                    if data[at..at + n] != pattern[start..start + n] {
                        self.matches = false;
                    }
                    at += n;
                    self.received += n as u64;
                }
            }
            None => {
                self.kept.extend_from_slice(&data);
                self.received += data.len() as u64;
            }
        }
    }

    fn on_end(&mut self, ending: Ending) {
        let report = Report {
            received: self.received,
            matches: self.matches,
            ending,
            exited: self.exited,
            peer: self.peer.clone(),
        };
        let _ = self.done.send((report, std::mem::take(&mut self.kept)));
    }

    fn on_control(&mut self, message: &IoControl) -> ControlReply {
        if let Some(exited) = ChildExited::from_control(message) {
            self.exited = Some(exited);
            return ControlReply::Handled;
        }
        if let IoControl::Connected(peer) = message {
            self.peer = Some(peer.clone());
            return ControlReply::Handled;
        }
        ControlReply::Unsupported
    }
}

/// Waits until `condition` holds, checking every millisecond, failing after [`LIMIT`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `f` on the reactor thread and returns its result.
pub fn on_reactor<T: Send + 'static>(
    reactor: &weir_reactor::Reactor,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    reactor.call(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(LIMIT).expect("reactor answers")
}
