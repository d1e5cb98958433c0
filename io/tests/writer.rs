//! `ByteWriter` from any thread (versile-notes.md section 9, items 32 and 33).

mod common;

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread;

use common::{collect_until_end, Collect, Probe, Running, PATIENCE};
use weir_io::{attach, ByteSink, ByteWriter, Ending, Window, WriteError};

#[test]
fn write_after_end_write_fails_and_the_first_ending_is_kept() {
    let rt = Running::new();
    let writer = ByteWriter::new(&rt.reactor, 64);
    let (hooks, rx) = Collect::new();
    let sink = ByteSink::new(&rt.reactor, Window::Bytes(3), hooks);
    writer.write(&b"abcdef"[..]).unwrap();
    writer.end_write(Ending::Lost);
    writer.end_write(Ending::Completed);
    assert_eq!(writer.write(&b"x"[..]), Err(WriteError::Closed));
    assert!(writer.is_closed());
    attach(&writer.producer(), &sink.consumer()).unwrap();
    let (data, ending) = collect_until_end(&rx);
    assert_eq!(data, b"abcdef");
    assert_eq!(ending, Ending::Lost, "the first end_write decides");
    rt.settle();
    assert!(rx.try_recv().is_err(), "one end only");
}

#[test]
fn abort_writer_clears_the_buffer_and_aborts_the_consumer() {
    let rt = Running::new();
    let writer = ByteWriter::new(&rt.reactor, 64);
    let probe = Probe::new(&rt.reactor, Some(0));
    attach(&writer.producer(), &probe.consumer()).unwrap();
    rt.settle();
    writer.write(&b"never sent"[..]).unwrap();
    assert_eq!(writer.buffered(), 10);
    writer.abort_writer();
    assert_eq!(writer.buffered(), 0);
    assert_eq!(writer.write(&b"x"[..]), Err(WriteError::Closed));
    common::wait_until("abort reaches the consumer", || {
        probe.aborts.load(Ordering::SeqCst) == 1
    });
    writer.abort_writer();
    rt.settle();
    assert_eq!(
        probe.aborts.load(Ordering::SeqCst),
        1,
        "a second abort does nothing"
    );
    assert!(probe.data.lock().is_empty());
    assert!(probe.endings.lock().is_empty());
    assert!(writer.producer_slot_link().is_none() && probe.slot.link().is_none());
}

#[test]
fn writes_from_many_threads_keep_each_threads_order() {
    const THREADS: usize = 6;
    const WRITES: usize = 400;
    let rt = Running::new();
    let writer = ByteWriter::new(&rt.reactor, 4096);
    let (hooks, rx) = Collect::new();
    // A small window makes the writer buffer fill up and the threads retry.
    let sink = ByteSink::new(&rt.reactor, Window::Bytes(97), hooks);
    attach(&writer.producer(), &sink.consumer()).unwrap();
    let (room_tx, room_rx) = mpsc::channel::<()>();
    let room_rx = std::sync::Arc::new(parking_lot::Mutex::new(room_rx));
    writer.set_on_room(move || {
        let _ = room_tx.send(());
    });
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (writer, room_rx) = (writer.clone(), room_rx.clone());
            thread::spawn(move || {
                for i in 0..WRITES {
                    // Record: thread id, sequence number (2 bytes), then filler.
                    let mut record = vec![t as u8, (i >> 8) as u8, i as u8];
                    record.resize(3 + (i * 7 + t) % 40, 0xEE);
                    record[3..].iter_mut().for_each(|b| *b = t as u8);
                    let record = bytes::Bytes::from(record);
                    loop {
                        match writer.write(record.clone()) {
                            Ok(()) => break,
                            Err(WriteError::Full { .. }) => {
                                // Wait for room, bounded; another thread may have taken the
                                // signal, so a timeout only means "try again".
                                let _ = room_rx
                                    .lock()
                                    .recv_timeout(std::time::Duration::from_millis(20));
                            }
                            Err(err) => panic!("write failed: {err}"),
                        }
                    }
                }
            })
        })
        .collect();
    workers.into_iter().for_each(|w| w.join().unwrap());
    writer.end_write(Ending::Completed);
    let (data, ending) = collect_until_end(&rx);
    assert_eq!(ending, Ending::Completed);
    // Parse the records back: each write is whole and each thread's are in order.
    let mut next = [0usize; THREADS];
    let mut at = 0;
    while at < data.len() {
        let t = data[at] as usize;
        let i = (data[at + 1] as usize) << 8 | data[at + 2] as usize;
        assert_eq!(i, next[t], "thread {t} out of order");
        let len = 3 + (i * 7 + t) % 40;
        assert!(
            data[at + 3..at + len].iter().all(|&b| b as usize == t),
            "torn write"
        );
        next[t] += 1;
        at += len;
    }
    assert_eq!(next, [WRITES; THREADS]);
}

#[test]
fn full_writes_fail_whole_and_on_room_fires_when_half_is_free() {
    let rt = Running::new();
    let writer = ByteWriter::new(&rt.reactor, 10);
    let (room_tx, room_rx) = mpsc::channel();
    let w = std::sync::Arc::downgrade(&writer);
    writer.set_on_room(move || {
        let free = w.upgrade().map_or(0, |w| w.free());
        room_tx.send(free).unwrap();
    });
    writer.write(&b"12345678"[..]).unwrap();
    assert_eq!(writer.write(&b"abc"[..]), Err(WriteError::Full { free: 2 }));
    assert_eq!(
        writer.buffered(),
        8,
        "nothing of a refused write is buffered"
    );
    let probe = Probe::new(&rt.reactor, Some(0));
    attach(&writer.producer(), &probe.consumer()).unwrap();
    rt.settle();
    assert!(
        room_rx.try_recv().is_err(),
        "no room yet: nothing was delivered"
    );
    let link = probe.slot.link().unwrap();
    probe.grant(&link, weir_io::Credit::upto(2));
    rt.settle();
    assert!(
        room_rx.try_recv().is_err(),
        "6 of 10 buffered: not yet half free"
    );
    probe.grant(&link, weir_io::Credit::upto(6));
    let free = room_rx.recv_timeout(PATIENCE).expect("on_room fires");
    assert!(free * 2 >= 10, "at least half free, got {free}");
    writer.write(&b"abc"[..]).unwrap();
    rt.settle();
    assert!(room_rx.try_recv().is_err(), "on_room fires once per Full");
}

trait SlotLink {
    fn producer_slot_link(&self) -> Option<std::sync::Arc<weir_io::Link>>;
}

impl SlotLink for ByteWriter {
    fn producer_slot_link(&self) -> Option<std::sync::Arc<weir_io::Link>> {
        weir_io::ByteProducer::producer_slot(self).link()
    }
}
