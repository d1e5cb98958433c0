//! Helpers shared by the socket tests: a running reactor, a recording sink, condition polling.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use weir_io::{ByteSink, ControlReply, Ending, IoControl, Link, Peer, SinkHooks, Window};
use weir_reactor::{Reactor, ReactorThread};

/// How long any condition may take before a test fails.
pub(crate) const DEADLINE: Duration = Duration::from_secs(20);

/// A reactor running on its own thread, stopped when dropped.
pub(crate) struct Running {
    pub(crate) reactor: Reactor,
    thread: Option<ReactorThread>,
}

impl Running {
    pub(crate) fn new() -> Running {
        let reactor = Reactor::new().expect("reactor");
        let thread = reactor.start().expect("start reactor");
        Running {
            reactor,
            thread: Some(thread),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.reactor.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Polls `cond` until it holds; panics with `what` after [`DEADLINE`].
pub(crate) fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What a [`Recorder`] saw.
#[derive(Default)]
pub(crate) struct Record {
    pub(crate) data: Vec<u8>,
    pub(crate) ending: Option<Ending>,
    pub(crate) ends: usize,
    pub(crate) connected: Vec<Peer>,
    pub(crate) can_connect: Vec<Peer>,
}

/// Sink hooks that record everything and answer `CanConnect` with `answer`.
pub(crate) struct Recorder {
    pub(crate) record: Arc<Mutex<Record>>,
    pub(crate) answer: ControlReply,
}

impl SinkHooks for Recorder {
    fn on_data(&mut self, _link: &Arc<Link>, data: Bytes) {
        self.record.lock().data.extend_from_slice(&data);
    }

    fn on_end(&mut self, ending: Ending) {
        let mut record = self.record.lock();
        record.ending = Some(ending);
        record.ends += 1;
    }

    fn on_control(&mut self, message: &IoControl) -> ControlReply {
        match message {
            IoControl::Connected(peer) => {
                self.record.lock().connected.push(peer.clone());
                ControlReply::Handled
            }
            IoControl::CanConnect(peer) => {
                self.record.lock().can_connect.push(peer.clone());
                self.answer
            }
            _ => ControlReply::Unsupported,
        }
    }
}

/// A recording sink granting `window` bytes ahead, and what it records.
pub(crate) fn recorder(
    reactor: &Reactor,
    window: Window,
    answer: ControlReply,
) -> (Arc<ByteSink<Recorder>>, Arc<Mutex<Record>>) {
    let record = Arc::new(Mutex::new(Record::default()));
    let sink = ByteSink::new(
        reactor,
        window,
        Recorder {
            record: record.clone(),
            answer,
        },
    );
    (sink, record)
}

/// A deterministic byte pattern: byte `i` of a stream.
pub(crate) fn pattern(i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8
}

/// `len` bytes of the pattern starting at stream offset `start`.
pub(crate) fn pattern_bytes(start: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| pattern(start + i)).collect()
}
