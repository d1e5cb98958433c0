//! Runs of chunks (`Link::deliver_chunks` / `ByteConsumer::consume_chunks`): a run reaches the
//! consumer in one call with every chunk's boundaries kept, and a run cut short by a detach
//! from inside the consumer loses and duplicates nothing: what the consumer did not take goes
//! on through the next link.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use common::{collect_until_end, wait_until, Collect, Event, Probe, Running};
use parking_lot::Mutex;
use weir_io::{
    attach, ByteConsumer, ByteFilter, ByteSink, ByteWriter, Chunks, Credit, Ending, Link, LinkSlot,
    SinkHooks, Window,
};
use weir_reactor::Reactor;

/// Ten chunks of different lengths, each filled with its own index.
fn ten_chunks() -> Vec<Bytes> {
    (0..10u8)
        .map(|i| Bytes::from(vec![i; 1 + i as usize * 7]))
        .collect()
}

fn flat(chunks: &[Bytes]) -> Vec<u8> {
    chunks.iter().flat_map(|c| c.iter().copied()).collect()
}

/// A consumer that records each call: how many chunks a `consume_chunks` call brought, and
/// every chunk.
struct Recorder {
    reactor: Reactor,
    slot: LinkSlot,
    calls: Mutex<Vec<usize>>,
    chunks: Mutex<Vec<Bytes>>,
}

impl ByteConsumer for Recorder {
    fn reactor(&self) -> &Reactor {
        &self.reactor
    }
    fn consumer_slot(&self) -> &LinkSlot {
        &self.slot
    }
    fn on_attached(&self, _link: &Arc<Link>) -> Credit {
        Credit::UNLIMITED
    }
    fn consume(&self, _link: &Arc<Link>, data: Bytes) -> Credit {
        self.calls.lock().push(1);
        self.chunks.lock().push(data);
        Credit::UNLIMITED
    }
    fn takes_runs(&self) -> bool {
        true
    }
    fn consume_chunks(&self, _link: &Arc<Link>, chunks: &mut Chunks) -> Credit {
        self.calls.lock().push(chunks.len());
        self.chunks.lock().extend(chunks);
        Credit::UNLIMITED
    }
    fn on_end(&self, _link: &Arc<Link>, _ending: Ending) {}
}

/// A writer holding [`ten_chunks`], a copying-free filter attached to `tail`, and the writer
/// attached to the filter last, from the reactor thread, so that the ten chunks go out as the
/// writer's first run. Returns the writer and the filter's sides (to attach a next tail).
fn ten_chunks_through_a_filter(
    rt: &Running,
    tail: weir_io::ConsumerRef,
) -> (Arc<ByteWriter>, weir_io::ByteIoPair) {
    let writer = ByteWriter::new(&rt.reactor, 1 << 20);
    for chunk in ten_chunks() {
        writer.write(chunk).unwrap();
    }
    let pair = ByteFilter::new(&rt.reactor, 1 << 20, |b: Bytes| b).io_pair();
    attach(&pair.producer, &tail).unwrap();
    let (producer, head) = (writer.producer(), pair.consumer.clone());
    rt.on_reactor(move || attach(&producer, &head).unwrap());
    (writer, pair)
}

#[test]
fn buffered_writes_reach_a_filter_and_its_consumer_as_one_run_with_boundaries_kept() {
    let rt = Running::new();
    let recorder = Arc::new(Recorder {
        reactor: rt.reactor.clone(),
        slot: LinkSlot::new(),
        calls: Mutex::new(Vec::new()),
        chunks: Mutex::new(Vec::new()),
    });
    let _chain = ten_chunks_through_a_filter(&rt, recorder.clone());
    wait_until("every chunk", || recorder.chunks.lock().len() == 10);
    rt.settle();
    assert_eq!(*recorder.calls.lock(), vec![10], "one call for the run");
    assert_eq!(*recorder.chunks.lock(), ten_chunks(), "every boundary kept");
}

#[test]
fn a_run_cut_by_a_detach_inside_consume_goes_on_through_the_next_link() {
    let rt = Running::new();
    // The first consumer takes three chunks of the run and detaches inside the third.
    let first = Probe::new(&rt.reactor, None);
    let taken = Arc::new(AtomicUsize::new(0));
    let t = taken.clone();
    *first.on_consume.lock() = Some(Box::new(move |link: &Arc<Link>, _: &Bytes| {
        if t.fetch_add(1, Ordering::SeqCst) == 2 {
            link.detach();
        }
    }));
    let (writer, pair) = ten_chunks_through_a_filter(&rt, first.consumer());
    wait_until("the detach", || first.detached.load(Ordering::SeqCst) == 1);
    rt.settle();
    assert_eq!(taken.load(Ordering::SeqCst), 3, "nothing after the detach");

    // The rest waits in the filter and goes to the next consumer, once, in order.
    let (hooks, rx) = Collect::new();
    let second = ByteSink::new(&rt.reactor, Window::Bytes(1 << 20), hooks);
    attach(&pair.producer, &second.consumer()).unwrap();
    writer.end_write(Ending::Completed);
    let (rest, ending) = collect_until_end(&rx);
    assert_eq!(ending, Ending::Completed);
    let mut all = first.data.lock().clone();
    all.extend_from_slice(&rest);
    assert_eq!(all, flat(&ten_chunks()), "no byte lost or duplicated");
    assert!(first.violations.lock().is_empty(), "{:?}", first.violations);
}

/// Sink hooks that detach their link inside the second chunk of a run.
struct DetachSecond {
    seen: Arc<Mutex<Vec<Bytes>>>,
}

impl SinkHooks for DetachSecond {
    fn on_data(&mut self, link: &Arc<Link>, data: Bytes) {
        let mut seen = self.seen.lock();
        seen.push(data);
        if seen.len() == 2 {
            link.detach();
        }
    }
}

#[test]
fn a_sink_that_detaches_inside_a_run_counts_only_what_its_hooks_took() {
    let rt = Running::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = ByteSink::new(
        &rt.reactor,
        Window::Unlimited,
        DetachSecond { seen: seen.clone() },
    );
    let (writer, pair) = ten_chunks_through_a_filter(&rt, sink.consumer());
    wait_until("the detach", || {
        sink.consumer_slot().link().is_none() && seen.lock().len() == 2
    });
    rt.settle();
    let chunks = ten_chunks();
    assert_eq!(*seen.lock(), chunks[..2]);
    assert_eq!(sink.received(), flat(&chunks[..2]).len() as u64);

    // The other eight go to the next consumer.
    let (hooks, rx) = Collect::new();
    let next = ByteSink::new(&rt.reactor, Window::Bytes(1 << 20), hooks);
    attach(&pair.producer, &next.consumer()).unwrap();
    writer.end_write(Ending::Lost);
    let mut rest = Vec::new();
    loop {
        match rx.recv_timeout(common::PATIENCE).expect("an event") {
            Event::Data(chunk) => rest.push(chunk),
            Event::End(ending) => {
                assert_eq!(ending, Ending::Lost);
                break;
            }
        }
    }
    assert_eq!(rest, chunks[2..], "the rest, chunk by chunk");
}

/// A consumer with room for `capacity` bytes that it holds until told to let go; its credit
/// is the position plus its free room, the way transports compute theirs.
struct Holder {
    reactor: Reactor,
    slot: LinkSlot,
    capacity: u64,
    held: Mutex<Vec<u8>>,
    most_held: AtomicUsize,
}

impl Holder {
    fn credit(&self, link: &Link) -> Credit {
        let held = self.held.lock().len() as u64;
        link.window(self.capacity.saturating_sub(held))
    }

    /// Lets go of what it holds and grants the room again (reactor thread).
    fn release(&self) -> Vec<u8> {
        let data = std::mem::take(&mut *self.held.lock());
        if let Some(link) = self.slot.link() {
            link.grant(self.credit(&link));
        }
        data
    }
}

impl ByteConsumer for Holder {
    fn reactor(&self) -> &Reactor {
        &self.reactor
    }
    fn consumer_slot(&self) -> &LinkSlot {
        &self.slot
    }
    fn on_attached(&self, link: &Arc<Link>) -> Credit {
        self.credit(link)
    }
    fn consume(&self, link: &Arc<Link>, data: Bytes) -> Credit {
        let mut held = self.held.lock();
        held.extend_from_slice(&data);
        self.most_held.fetch_max(held.len(), Ordering::SeqCst);
        drop(held);
        self.credit(link)
    }
    fn on_end(&self, _link: &Arc<Link>, _ending: Ending) {}
}

#[test]
fn a_run_to_a_consumer_without_runs_never_overruns_a_credit_computed_from_the_position() {
    let rt = Running::new();
    let writer = ByteWriter::new(&rt.reactor, 1 << 20);
    let input: Vec<u8> = (0..300u32).map(|i| i as u8).collect();
    for chunk in input.chunks(30) {
        writer.write(Bytes::copy_from_slice(chunk)).unwrap();
    }
    writer.end_write(Ending::Completed);
    let holder = Arc::new(Holder {
        reactor: rt.reactor.clone(),
        slot: LinkSlot::new(),
        capacity: 100,
        held: Mutex::new(Vec::new()),
        most_held: AtomicUsize::new(0),
    });
    let consumer: weir_io::ConsumerRef = holder.clone();
    attach(&writer.producer(), &consumer).unwrap();
    let mut output = Vec::new();
    while output.len() < input.len() {
        rt.settle();
        let h = holder.clone();
        let released = rt.on_reactor(move || h.release());
        assert!(
            !released.is_empty() || output.len() == input.len(),
            "the writer stalled at {} bytes",
            output.len()
        );
        output.extend_from_slice(&released);
    }
    assert_eq!(output, input);
    assert!(
        holder.most_held.load(Ordering::SeqCst) <= 100,
        "held {} bytes with room for 100",
        holder.most_held.load(Ordering::SeqCst)
    );
}
