//! Property tests over random chains (versile-notes.md section 9, items 16, 28, 29, 30):
//! a head (`ByteWriter`, `ByteSource` or the checking `Pusher`), 0-4 `ByteFilter`s with random
//! capacities, and a tail (`ByteSink` or the checking `Probe`) with a random window, paused
//! and resumed from another thread and by timers.
//!
//! Checked: output equals input, in order; the tail's position never passes the credit it
//! granted itself (`Probe`); no element's data is refused by a link (`Pusher` records
//! refusals, and equal output proves nobody dropped a refused chunk); the `Ending` arrives
//! once, after every byte, unchanged; an abort anywhere reaches both ends and leaves every
//! element detached; repeated ends and aborts do nothing.

mod common;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use bytes::Bytes;
use common::{wait_until, Collect, Event, Probe, Pusher, Running, PATIENCE};
use parking_lot::Mutex;
use proptest::prelude::*;
use weir_io::{
    attach, ByteFilter, ByteIoPair, ByteSink, ByteSource, ByteWriter, Ending, Link, Produce,
    SourceHooks, Window,
};
use weir_reactor::Reactor;

/// Source hooks serving prepared chunks; sometimes more than asked (the source must hold it).
struct Chunks {
    chunks: VecDeque<Bytes>,
    /// `None`: never end, answer `Pending` when empty (for abort tests).
    ending: Option<Ending>,
    ignore_max: bool,
    aborted: Arc<AtomicBool>,
}

impl SourceHooks for Chunks {
    fn produce(&mut self, max: usize) -> Produce {
        match self.chunks.pop_front() {
            Some(mut chunk) if !self.ignore_max && chunk.len() > max => {
                let rest = chunk.split_off(max);
                self.chunks.push_front(rest);
                Produce::Data(chunk)
            }
            Some(chunk) => Produce::Data(chunk),
            None => self.ending.map_or(Produce::Pending, Produce::End),
        }
    }
    fn on_abort(&mut self) {
        self.aborted.store(true, Ordering::SeqCst);
    }
}

#[derive(Clone, Copy, Debug)]
enum HeadKind {
    Writer,
    Source { ignore_max: bool },
    Pusher,
}

enum Head {
    Writer(Arc<ByteWriter>),
    Source(Arc<ByteSource<Chunks>>, Arc<AtomicBool>),
    Pusher(Arc<Pusher>),
}

enum Tail {
    Sink(Arc<ByteSink<Collect>>, Mutex<mpsc::Receiver<Event>>),
    Probe(Arc<Probe>, Mutex<mpsc::Receiver<Event>>),
}

#[derive(Clone, Debug)]
struct Plan {
    head: HeadKind,
    chunks: Vec<Vec<u8>>,
    filters: Vec<usize>,
    sink_tail: bool,
    window: u64,
    toggles: usize,
    timer_pause: Option<(u64, u64)>,
    ending: Ending,
}

fn plans() -> impl Strategy<Value = Plan> {
    (
        prop_oneof![
            Just(HeadKind::Writer),
            any::<bool>().prop_map(|ignore_max| HeadKind::Source { ignore_max }),
            Just(HeadKind::Pusher),
        ],
        prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..25),
        prop::collection::vec(1usize..400, 0..=4),
        any::<bool>(),
        1u64..600,
        0usize..20,
        prop::option::of((0u64..3, 0u64..4)),
        prop_oneof![Just(Ending::Completed), Just(Ending::Lost)],
    )
        .prop_map(
            |(head, chunks, filters, sink_tail, window, toggles, timer_pause, ending)| Plan {
                head,
                chunks,
                filters,
                sink_tail,
                window,
                toggles,
                timer_pause,
                ending,
            },
        )
}

/// A filter that copies its input.
type CopyFilter = ByteFilter<fn(Bytes) -> Bytes>;

/// A built chain.
struct Chain {
    head: Head,
    filters: Vec<(CopyFilter, ByteIoPair)>,
    tail: Tail,
}

/// Copies the bytes, so that filters really make new buffers.
fn copy(b: Bytes) -> Bytes {
    Bytes::copy_from_slice(&b)
}

impl Chain {
    fn build(reactor: &Reactor, plan: &Plan, ends: bool) -> Chain {
        let head = match plan.head {
            HeadKind::Writer => Head::Writer(ByteWriter::new(reactor, 1 << 20)),
            HeadKind::Source { ignore_max } => {
                let aborted = Arc::new(AtomicBool::new(false));
                let hooks = Chunks {
                    chunks: plan.chunks.iter().map(|c| Bytes::from(c.clone())).collect(),
                    ending: ends.then_some(plan.ending),
                    ignore_max,
                    aborted: aborted.clone(),
                };
                Head::Source(ByteSource::new(reactor, hooks), aborted)
            }
            HeadKind::Pusher => Head::Pusher(Pusher::new(reactor)),
        };
        let filters: Vec<_> = plan
            .filters
            .iter()
            .map(|&cap| {
                let f = ByteFilter::new(reactor, cap, copy as fn(Bytes) -> Bytes);
                let pair = f.io_pair();
                (f, pair)
            })
            .collect();
        let tail = if plan.sink_tail {
            let (hooks, rx) = Collect::new();
            Tail::Sink(
                ByteSink::new(reactor, Window::Bytes(plan.window), hooks),
                Mutex::new(rx),
            )
        } else {
            let probe = Probe::new(reactor, Some(plan.window));
            let rx = probe.events();
            Tail::Probe(probe, Mutex::new(rx))
        };
        let chain = Chain {
            head,
            filters,
            tail,
        };
        let mut producer = chain.head_producer();
        for (_, pair) in &chain.filters {
            attach(&producer, &pair.consumer).expect("attach");
            producer = pair.producer.clone();
        }
        attach(&producer, &chain.tail_consumer()).expect("attach");
        chain
    }

    fn head_producer(&self) -> weir_io::ProducerRef {
        match &self.head {
            Head::Writer(w) => w.producer(),
            Head::Source(s, _) => s.producer(),
            Head::Pusher(p) => p.producer(),
        }
    }

    fn tail_consumer(&self) -> weir_io::ConsumerRef {
        match &self.tail {
            Tail::Sink(s, _) => s.consumer(),
            Tail::Probe(p, _) => p.consumer(),
        }
    }

    fn events(&self) -> parking_lot::MutexGuard<'_, mpsc::Receiver<Event>> {
        match &self.tail {
            Tail::Sink(_, rx) | Tail::Probe(_, rx) => rx.lock(),
        }
    }

    fn pause(&self) {
        match &self.tail {
            Tail::Sink(s, _) => s.pause(),
            Tail::Probe(p, _) => p.pause(),
        }
    }

    fn resume(&self) {
        match &self.tail {
            Tail::Sink(s, _) => s.resume(),
            Tail::Probe(p, _) => p.resume(),
        }
    }

    /// Feeds the input (for a source it is already there) and, when `ending` is given, ends.
    /// A closed writer is an error unless `late`.
    fn feed(&self, chunks: &[Vec<u8>], ending: Option<Ending>, late: bool) {
        match &self.head {
            Head::Writer(w) => {
                for c in chunks {
                    match w.write(c.clone()) {
                        Ok(()) => {}
                        Err(weir_io::WriteError::Closed) if late => {}
                        Err(err) => panic!("write failed: {err}"),
                    }
                }
                if let Some(e) = ending {
                    w.end_write(e);
                }
            }
            Head::Source(s, _) => s.trigger(),
            Head::Pusher(p) => {
                for c in chunks {
                    p.push(c.clone());
                }
                if let Some(e) = ending {
                    p.finish(e);
                }
            }
        }
    }

    /// Every link slot of every element.
    fn links(&self) -> Vec<(String, Option<Arc<Link>>)> {
        let mut out = vec![(
            "head".to_string(),
            self.head_producer().producer_slot().link(),
        )];
        for (i, (_, pair)) in self.filters.iter().enumerate() {
            out.push((
                format!("filter {i} in"),
                pair.consumer.consumer_slot().link(),
            ));
            out.push((
                format!("filter {i} out"),
                pair.producer.producer_slot().link(),
            ));
        }
        out.push((
            "tail".to_string(),
            self.tail_consumer().consumer_slot().link(),
        ));
        out
    }

    fn assert_all_detached(&self) {
        for (name, link) in self.links() {
            assert!(link.is_none(), "{name} is still attached");
        }
    }

    fn check_elements(&self) {
        if let Tail::Probe(p, _) = &self.tail {
            assert!(p.violations.lock().is_empty(), "{:?}", p.violations.lock());
        }
        if let Head::Pusher(p) = &self.head {
            assert!(
                p.refusals.lock().is_empty(),
                "refused: {:?}",
                p.refusals.lock()
            );
        }
    }
}

/// Pauses and resumes the tail from another thread and from timers; the last step of each
/// agent is a resume, so the tail ends up resumed.
fn disturb(rt: &Running, chain: &Arc<Chain>, plan: &Plan) -> thread::JoinHandle<()> {
    if let Some((at, len)) = plan.timer_pause {
        let c = chain.clone();
        rt.reactor
            .schedule(Duration::from_millis(at), move || c.pause());
        let c = chain.clone();
        rt.reactor
            .schedule(Duration::from_millis(at + len), move || c.resume());
    }
    let c = chain.clone();
    let toggles = plan.toggles;
    thread::spawn(move || {
        for _ in 0..toggles {
            c.pause();
            thread::yield_now();
            c.resume();
            thread::yield_now();
        }
    })
}

fn run_to_end(plan: Plan) {
    let rt = Running::new();
    let chain = Arc::new(Chain::build(&rt.reactor, &plan, true));
    let disturber = disturb(&rt, &chain, &plan);
    chain.feed(&plan.chunks, Some(plan.ending), false);
    let mut out = Vec::new();
    let ending = loop {
        match chain
            .events()
            .recv_timeout(PATIENCE)
            .expect("the chain stalled")
        {
            Event::Data(d) => out.extend_from_slice(&d),
            Event::End(e) => break e,
        }
    };
    disturber.join().unwrap();
    let input: Vec<u8> = plan.chunks.concat();
    assert_eq!(out.len(), input.len(), "bytes lost or duplicated");
    assert!(out == input, "bytes out of order");
    assert_eq!(ending, plan.ending, "the ending survives end to end");
    // Let timers still pending fire: nothing more may arrive.
    if let Some((at, len)) = plan.timer_pause {
        let (tx, rx) = mpsc::channel();
        rt.reactor
            .schedule(Duration::from_millis(at + len + 1), move || {
                tx.send(()).unwrap()
            });
        rx.recv_timeout(PATIENCE).unwrap();
    }
    rt.settle();
    assert!(
        chain.events().try_recv().is_err(),
        "a second end or late data"
    );
    chain.check_elements();
    chain.assert_all_detached();
    if let Tail::Probe(p, _) = &chain.tail {
        assert_eq!(p.endings.lock().len(), 1);
        assert_eq!(p.aborts.load(Ordering::SeqCst), 0);
    }
}

/// Where an abort starts.
#[derive(Clone, Copy, Debug)]
enum AbortAt {
    Head,
    Filter { index: usize, upstream: bool },
    Tail,
}

fn run_abort(plan: Plan, at: AbortAt, after: usize) {
    let rt = Running::new();
    let chain = Arc::new(Chain::build(&rt.reactor, &plan, false));
    let disturber = disturb(&rt, &chain, &plan);
    // No end: the stream is open when the abort comes.
    chain.feed(&plan.chunks, None, false);
    let input: Vec<u8> = plan.chunks.concat();
    let after = after.min(input.len());
    let mut out = Vec::new();
    while out.len() < after {
        match chain
            .events()
            .recv_timeout(PATIENCE)
            .expect("the chain stalled")
        {
            Event::Data(d) => out.extend_from_slice(&d),
            Event::End(e) => panic!("ended ({e}) without an end or abort"),
        }
    }
    disturber.join().unwrap();
    let at = if chain.filters.is_empty() && matches!(at, AbortAt::Filter { .. }) {
        AbortAt::Tail
    } else {
        at
    };
    let abort = {
        let chain = chain.clone();
        move || match at {
            AbortAt::Head => match &chain.head {
                Head::Writer(w) => w.abort_writer(),
                Head::Source(s, _) => {
                    if let Some(l) = weir_io::ByteProducer::producer_slot(&**s).link() {
                        l.abort()
                    }
                }
                Head::Pusher(p) => {
                    if let Some(l) = p.slot.link() {
                        l.abort()
                    }
                }
            },
            AbortAt::Filter { index, upstream } => {
                let pair = &chain.filters[index % chain.filters.len()].1;
                let link = if upstream {
                    pair.consumer.consumer_slot().link()
                } else {
                    pair.producer.producer_slot().link()
                };
                if let Some(l) = link {
                    l.abort()
                }
            }
            AbortAt::Tail => match &chain.tail {
                Tail::Sink(s, _) => s.abort(),
                Tail::Probe(p, _) => {
                    if let Some(l) = p.slot.link() {
                        l.abort()
                    }
                }
            },
        }
    };
    abort();
    // The tail hears of it: an end Lost (sink) or on_abort (probe).
    loop {
        match chain
            .events()
            .recv_timeout(PATIENCE)
            .expect("the abort reached the tail")
        {
            Event::Data(d) => out.extend_from_slice(&d),
            Event::End(e) => {
                assert_eq!(e, Ending::Lost);
                break;
            }
        }
    }
    // The head hears of it.
    let head_aborted = || match &chain.head {
        Head::Writer(w) => w.is_closed(),
        Head::Source(_, aborted) => aborted.load(Ordering::SeqCst),
        Head::Pusher(p) => p.aborts.load(Ordering::SeqCst) == 1,
    };
    wait_until("the abort to reach the head", head_aborted);
    rt.settle();
    assert!(
        input.starts_with(&out),
        "the tail got a prefix of the input"
    );
    chain.assert_all_detached();
    chain.check_elements();
    // Again: nothing happens.
    abort();
    chain.feed(&[b"late".to_vec()], Some(Ending::Completed), true);
    rt.settle();
    assert!(chain.events().try_recv().is_err(), "a second end or abort");
    if let Head::Pusher(p) = &chain.head {
        assert_eq!(p.aborts.load(Ordering::SeqCst), 1);
    }
    if let Tail::Probe(p, _) = &chain.tail {
        assert_eq!(p.aborts.load(Ordering::SeqCst), 1);
        assert!(p.endings.lock().is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_chains_deliver_every_byte_in_order_then_the_end_once(plan in plans()) {
        run_to_end(plan);
    }

    #[test]
    fn an_abort_anywhere_reaches_both_ends(
        plan in plans(),
        at in prop_oneof![
            Just(AbortAt::Head),
            (0usize..4, any::<bool>())
                .prop_map(|(index, upstream)| AbortAt::Filter { index, upstream }),
            Just(AbortAt::Tail),
        ],
        after in 0usize..3000,
    ) {
        run_abort(plan, at, after);
    }
}

#[test]
fn a_long_chain_with_tiny_windows_moves_a_megabyte() {
    let chunk: Vec<u8> = (0..=255u8).cycle().take(4093).collect();
    let plan = Plan {
        head: HeadKind::Writer,
        chunks: vec![chunk; 256],
        filters: vec![3, 1000, 17, 65536],
        sink_tail: false,
        window: 1500,
        toggles: 50,
        timer_pause: Some((1, 2)),
        ending: Ending::Completed,
    };
    run_to_end(plan);
}

/// Regression: a writer ended before it was attached ends its link while the filter's
/// downstream link is still attaching; that end used to be dropped and the chain stalled.
#[test]
fn an_end_reaching_a_link_that_is_still_attaching_is_kept() {
    run_to_end(Plan {
        head: HeadKind::Writer,
        chunks: vec![],
        filters: vec![1],
        sink_tail: false,
        window: 1,
        toggles: 0,
        timer_pause: None,
        ending: Ending::Completed,
    });
}
