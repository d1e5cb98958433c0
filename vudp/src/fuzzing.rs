//! Entry points for the fuzz targets in `vudp/fuzz/`, also replayed over the committed
//! corpus by `tests/fuzz_corpus.rs`.
//!
//! Each function takes arbitrary bytes and panics only if it finds a bug: a packet that does
//! not re-encode to itself, or a connection that delivers bytes its peer never wrote.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::packet::{self, Packet, SackBlock, SegmentHeader};
use crate::{Config, Connection, Event};

/// Parses `data` as a packet; a packet that parses must re-encode to the same bytes.
pub fn parse_packet(data: &[u8]) {
    let Ok(parsed) = packet::parse(data) else {
        return;
    };
    let mut buf = Vec::new();
    match parsed.packet {
        Packet::Hello(hello) => packet::encode_hello(&mut buf, &hello),
        Packet::Reset(reset) => packet::encode_reset(&mut buf, &reset),
        Packet::Segment(segment) => {
            let blocks: Vec<SackBlock> = segment.sack_blocks().collect();
            let header = SegmentHeader {
                flags: segment.flags,
                packet_number: segment.packet_number,
                seq: segment.seq,
                ack: segment.ack,
                window: segment.window,
            };
            packet::encode_segment(&mut buf, &header, &blocks, segment.data);
        }
    }
    assert_eq!(buf, parsed.authenticated, "re-encoding changed the packet");
}

/// Drives a connection `a` with a script decoded from `data`, against a genuine peer `b`:
/// raw datagrams, mutated genuine datagrams, time steps, writes, reads, finish and abort.
///
/// Whatever the script, nothing panics and `a` only ever reads a prefix of what `b` wrote.
/// Returns the number of bytes `a` read.
pub fn connection_input(data: &[u8]) -> usize {
    let a_addr: SocketAddr = SocketAddr::from(([10, 0, 0, 1], 1));
    let b_addr: SocketAddr = SocketAddr::from(([10, 0, 0, 2], 2));
    let mut now = Instant::now();
    let config = Config {
        recv_buffer: 8192,
        send_buffer: 8192,
        ..Config::default()
    };
    let new = |local: &[u8], peer: &[u8], addr, seed| {
        Connection::new(config.clone(), local, peer, addr, [seed; 32], now)
    };
    // Both configurations are valid, so construction cannot fail.
    let (Ok(mut a), Ok(mut b)) = (new(b"A", b"B", b_addr, 1), new(b"B", b"A", a_addr, 2)) else {
        unreachable!("valid config")
    };
    let mut written_by_b: Vec<u8> = Vec::new();
    let mut read_by_a: Vec<u8> = Vec::new();
    let mut buf = Vec::new();
    let mut pending_from_b: Vec<Vec<u8>> = Vec::new();
    let mut input = data;
    let mut take = |n: usize| -> Option<&[u8]> {
        if input.len() < n {
            return None;
        }
        let (head, rest) = input.split_at(n);
        input = rest;
        Some(head)
    };
    let mut steps = 0;
    while let Some(&[op]) = take(1) {
        steps += 1;
        if steps > 500 {
            break;
        }
        match op % 10 {
            // A raw datagram to `a`, from `b`'s address or another one.
            0 | 1 => {
                let Some(&[len]) = take(1) else { break };
                let Some(bytes) = take(usize::from(len)) else {
                    break;
                };
                let from = if op % 10 == 0 { b_addr } else { a_addr };
                a.handle_datagram(now, from, bytes);
            }
            // A genuine datagram from `b`, possibly with one byte changed.
            2 => {
                let Some(&[at, xor]) = take(2) else { break };
                if let Some(mut datagram) = pending_from_b.pop() {
                    if let Some(byte) = datagram.get_mut(usize::from(at)) {
                        *byte ^= xor;
                    }
                    a.handle_datagram(now, b_addr, &datagram);
                }
            }
            // Time passes.
            3 => {
                let Some(&[ms]) = take(1) else { break };
                now += Duration::from_millis(u64::from(ms) * 50);
                a.handle_timeout(now);
                b.handle_timeout(now);
            }
            // `b` writes.
            4 => {
                let Some(&[len]) = take(1) else { break };
                let chunk: Vec<u8> = (0..len)
                    .map(|i| (written_by_b.len() as u8).wrapping_add(i))
                    .collect();
                let n = b.write(&chunk);
                written_by_b.extend_from_slice(&chunk[..n]);
            }
            // `a` writes.
            5 => {
                let _ = a.write(&[0x55; 700]);
            }
            // `a` reads.
            6 => {
                while let Some(chunk) = a.read(1000) {
                    read_by_a.extend_from_slice(&chunk);
                }
            }
            // Lossless exchange.
            7 => {
                while a.poll_transmit(now, &mut buf).is_some() {
                    b.handle_datagram(now, a_addr, &buf);
                }
                for datagram in pending_from_b.drain(..) {
                    a.handle_datagram(now, b_addr, &datagram);
                }
            }
            // Endings.
            8 => match take(1) {
                Some(&[0]) => a.finish(),
                Some(&[1]) => b.finish(),
                Some(&[2]) => a.abort(),
                Some(&[3]) => b.abort(),
                _ => {}
            },
            // Replay an older genuine datagram from `b`.
            _ => {
                if let Some(datagram) = pending_from_b.first().cloned() {
                    a.handle_datagram(now, b_addr, &datagram);
                    a.handle_datagram(now, b_addr, &datagram);
                }
            }
        }
        // `b`'s output is kept for the script; `a`'s goes to `b` only on op 7.
        while b.poll_transmit(now, &mut buf).is_some() {
            if pending_from_b.len() < 64 {
                pending_from_b.push(buf.clone());
            }
        }
        let _ = a.poll_timeout();
        while let Some(event) = a.poll_event() {
            if let Event::Failed(error) = event {
                let _ = error.to_string();
            }
        }
        while b.poll_event().is_some() {}
        let _ = a.stats();
    }
    while let Some(chunk) = a.read(usize::MAX) {
        read_by_a.extend_from_slice(&chunk);
    }
    assert!(
        written_by_b.starts_with(&read_by_a),
        "a read bytes b never wrote"
    );
    read_by_a.len()
}
