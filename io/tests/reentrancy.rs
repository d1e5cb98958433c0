//! Re-entrancy: elements that write back or abort from inside `consume`, and attach/detach
//! racing with data written from other threads (versile-notes.md section 3.3; section 9
//! items 19, 26, 27, 29, 30).

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;

use bytes::Bytes;
use common::{collect_until_end, wait_until, Event, Probe, Running, PATIENCE};
use weir_io::{
    attach, AttachError, ByteFilter, ByteProducer, ByteSink, ByteWAgent, ByteWriter, Ending, Link,
    SinkHooks, WAgentHooks, Window, WriteError,
};

/// Echoes everything back through the agent's writer, from inside `consume`.
struct Echo;

impl WAgentHooks for Echo {
    fn on_data(&mut self, writer: &Arc<ByteWriter>, data: Bytes) {
        writer
            .write(data)
            .expect("the sink grants only what the writer can hold");
    }
}

/// Forwards what it receives to a channel.
struct Client(mpsc::Sender<Event>);

impl WAgentHooks for Client {
    fn on_data(&mut self, _writer: &Arc<ByteWriter>, data: Bytes) {
        let _ = self.0.send(Event::Data(data));
    }
    fn on_end(&mut self, _writer: &Arc<ByteWriter>, ending: Ending) {
        let _ = self.0.send(Event::End(ending));
    }
}

#[test]
fn two_agents_echo_through_each_other() {
    let rt = Running::new();
    let (tx, rx) = mpsc::channel();
    let client = ByteWAgent::new(&rt.reactor, 1000, Client(tx));
    // An echo smaller than the traffic: it must push back instead of overflowing.
    let echo = ByteWAgent::new(&rt.reactor, 64, Echo);
    client.io_pair().attach(&echo.io_pair()).unwrap();
    let mut expected = Vec::new();
    let writer = client.writer().clone();
    let sent = thread::spawn(move || {
        let mut expected = Vec::new();
        for i in 0..2000u32 {
            let chunk: Vec<u8> = (0..(i % 50) as u8).map(|b| b ^ i as u8).collect();
            expected.extend_from_slice(&chunk);
            let chunk = Bytes::from(chunk);
            while let Err(err) = writer.write(chunk.clone()) {
                assert!(matches!(err, WriteError::Full { .. }));
                thread::yield_now();
            }
        }
        writer.end_write(Ending::Completed);
        expected
    });
    expected.extend(sent.join().unwrap());
    let (echoed, ending) = collect_until_end(&rx);
    assert_eq!(
        ending,
        Ending::Completed,
        "the echo's default on_end ends its writer"
    );
    assert_eq!(echoed.len(), expected.len());
    assert!(echoed == expected, "echoed bytes differ");
}

#[test]
fn a_consumer_writes_back_into_its_own_writer_from_inside_consume() {
    // The consumer feeds the writer that feeds it: each byte it gets makes it write the next
    // one, until 1000; the writer is re-entered while it is delivering.
    let rt = Running::new();
    let writer = ByteWriter::new(&rt.reactor, 16);
    let probe = Probe::new(&rt.reactor, Some(3));
    let w = Arc::downgrade(&writer);
    *probe.on_consume.lock() = Some(Box::new(move |_link, data| {
        let writer = w.upgrade().expect("alive");
        for &b in data.iter() {
            let next = u16::from(b) + 1;
            if next < 256 {
                writer.write(vec![next as u8]).expect("room for one byte");
            } else {
                writer.end_write(Ending::Completed);
            }
        }
    }));
    attach(&writer.producer(), &probe.consumer()).unwrap();
    writer.write(vec![0u8]).unwrap();
    wait_until("the end", || !probe.endings.lock().is_empty());
    assert_eq!(*probe.data.lock(), (0..=255u8).collect::<Vec<_>>());
    assert_eq!(*probe.endings.lock(), vec![Ending::Completed]);
    assert!(
        probe.violations.lock().is_empty(),
        "{:?}",
        probe.violations.lock()
    );
}

#[test]
fn an_abort_from_inside_consume_reaches_both_ends_and_detaches_everything() {
    let rt = Running::new();
    let writer = ByteWriter::new(&rt.reactor, 1 << 16);
    let f1 = ByteFilter::new(&rt.reactor, 7, |b| b);
    let f2 = ByteFilter::new(&rt.reactor, 5, |b| b);
    let (p1, p2) = (f1.io_pair(), f2.io_pair());
    let probe = Probe::new(&rt.reactor, Some(4));
    *probe.on_consume.lock() = Some(Box::new(|link: &Arc<Link>, _: &Bytes| {
        if link.position() >= 20 {
            link.abort();
            link.abort();
        }
    }));
    attach(&writer.producer(), &p1.consumer).unwrap();
    attach(&p1.producer, &p2.consumer).unwrap();
    attach(&p2.producer, &probe.consumer()).unwrap();
    writer.write(vec![9u8; 1000]).unwrap();
    wait_until("the abort", || probe.aborts.load(Ordering::SeqCst) == 1);
    rt.settle();
    assert!(writer.is_closed(), "the abort reached the writer");
    assert_eq!(writer.write(&b"x"[..]), Err(WriteError::Closed));
    for (name, link) in [
        ("writer", writer.producer_slot().link()),
        ("f1 in", p1.consumer.consumer_slot().link()),
        ("f1 out", p1.producer.producer_slot().link()),
        ("f2 in", p2.consumer.consumer_slot().link()),
        ("f2 out", p2.producer.producer_slot().link()),
        ("probe", probe.slot.link()),
    ] {
        assert!(link.is_none(), "{name} still attached");
    }
    let got = probe.data.lock().len();
    assert!(
        (20..24).contains(&got),
        "stopped right after the abort, got {got}"
    );
    assert!(probe.endings.lock().is_empty(), "an abort is not an end");
    assert_eq!(probe.aborts.load(Ordering::SeqCst), 1);
}

/// Sink hooks that abort their link from inside `on_data`.
struct AbortAt(usize, usize, mpsc::Sender<Event>);

impl SinkHooks for AbortAt {
    fn on_data(&mut self, link: &Arc<Link>, data: Bytes) {
        self.0 += data.len();
        let _ = self.2.send(Event::Data(data));
        if self.0 >= self.1 {
            link.abort();
        }
    }
    fn on_end(&mut self, ending: Ending) {
        let _ = self.2.send(Event::End(ending));
    }
}

#[test]
fn a_sink_aborting_inside_on_data_ends_lost_once() {
    let rt = Running::new();
    let writer = ByteWriter::new(&rt.reactor, 4096);
    let (tx, rx) = mpsc::channel();
    let sink = ByteSink::new(&rt.reactor, Window::Bytes(10), AbortAt(0, 35, tx));
    attach(&writer.producer(), &sink.consumer()).unwrap();
    writer.write(vec![1u8; 100]).unwrap();
    writer.end_write(Ending::Completed);
    let (data, ending) = collect_until_end(&rx);
    assert_eq!(ending, Ending::Lost);
    assert!(data.len() >= 35 && data.len() < 45);
    rt.settle();
    assert!(rx.try_recv().is_err(), "one end only");
    assert!(sink.is_ended());
}

#[test]
fn attach_and_detach_race_with_writes_from_other_threads() {
    const PAIRS: usize = 3;
    const WRITES: u32 = 3000;
    let rt = Running::new();
    let mut threads = Vec::new();
    let mut pairs = Vec::new();
    for n in 0..PAIRS {
        let writer = ByteWriter::new(&rt.reactor, 1 << 20);
        let probe = Probe::new(&rt.reactor, Some(5 + n as u64 * 11));
        attach(&writer.producer(), &probe.consumer()).unwrap();
        pairs.push((writer.clone(), probe.clone()));
        // A writer thread: numbered 4-byte records.
        let w = writer.clone();
        threads.push(thread::spawn(move || {
            for i in 0..WRITES {
                w.write(i.to_be_bytes().to_vec()).unwrap();
            }
            w.end_write(Ending::Completed);
        }));
        // A toggler thread: detaches and attaches the same pair again and again.
        let (w, p) = (writer, probe);
        let toggles = Arc::new(AtomicUsize::new(0));
        threads.push(thread::spawn(move || loop {
            if let Some(link) = p.slot.link() {
                link.detach();
                wait_until("the detach", || {
                    !link.is_open() && p.slot.link().is_none_or(|l| !Arc::ptr_eq(&l, &link))
                });
            }
            match attach(&w.producer(), &p.consumer()) {
                Ok(()) => {}
                Err(AttachError::ProducerEnded | AttachError::ConsumerEnded) => return,
                Err(err) => panic!("attach failed: {err}"),
            }
            if toggles.fetch_add(1, Ordering::SeqCst) > 200 && !p.endings.lock().is_empty() {
                return;
            }
            if w.is_closed() && w.buffered() == 0 && toggles.load(Ordering::SeqCst) > 200 {
                // Stay attached so that the end can go out.
                return;
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    for (n, (writer, probe)) in pairs.iter().enumerate() {
        // The toggler may have left the pair detached just before the end; attach once more.
        match attach(&writer.producer(), &probe.consumer()) {
            Ok(()) | Err(AttachError::ProducerEnded | AttachError::ConsumerEnded) => {}
            Err(err) => panic!("attach failed: {err}"),
        }
        wait_until("the end", || !probe.endings.lock().is_empty());
        let data = probe.data.lock();
        let expected: Vec<u8> = (0..WRITES).flat_map(|i| i.to_be_bytes()).collect();
        assert_eq!(
            data.len(),
            expected.len(),
            "pair {n}: bytes lost or duplicated"
        );
        assert!(*data == expected, "pair {n}: bytes out of order");
        assert_eq!(*probe.endings.lock(), vec![Ending::Completed]);
        assert!(
            probe.violations.lock().is_empty(),
            "{:?}",
            probe.violations.lock()
        );
        assert_eq!(
            probe.attached.load(Ordering::SeqCst),
            probe.detached.load(Ordering::SeqCst) + 1,
            "pair {n}: every attach but the last was detached once"
        );
    }
    let _ = PATIENCE;
}
