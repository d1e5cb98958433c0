//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) through the same entry points
//! as the fuzz targets, so CI covers it without a fuzzing run. With `VUDP_WRITE_CORPUS=1`
//! it first regenerates the seed files from packets the core really produces.

use std::fs;
use std::path::{Path, PathBuf};

use weir_vudp::sim::{LinkConfig, Side, Sim};
use weir_vudp::{fuzzing, Event};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

fn replay<R>(target: &str, entry: fn(&[u8]) -> R) -> usize {
    let mut count = 0;
    let mut entries: Vec<_> = fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("corpus for {target}: {e}"))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let data = fs::read(&path).unwrap();
        let _ = entry(&data);
        count += 1;
    }
    count
}

#[test]
fn packet_corpus() {
    regenerate_if_asked();
    assert!(replay("packet", fuzzing::parse_packet) >= 12);
}

#[test]
fn connection_corpus() {
    regenerate_if_asked();
    assert!(replay("connection", fuzzing::connection_input) >= 8);
}

#[test]
fn connection_scripts_deliver_data() {
    // The corpus must reach the established state: a plain exchange delivers b's bytes.
    let script = [7, 7, 7, 4, 200, 7, 7, 6, 3, 10, 7, 6];
    assert_eq!(fuzzing::connection_input(&script), 200);
}

fn regenerate_if_asked() {
    if std::env::var_os("VUDP_WRITE_CORPUS").is_none() {
        return;
    }
    // Packets produced by the core: HELLOs, data segments, acks with SACK, FIN, RESET.
    let mut link = LinkConfig::default();
    link.loss = 0.2;
    let mut sim = Sim::new(99, link);
    sim.capture = Some(Vec::new());
    sim.client
        .send((0..20_000u32).map(|i| i as u8).collect(), true);
    sim.server.send(b"reply".to_vec(), true);
    sim.run_until(|s| s.client.is_closed() && s.server.is_closed())
        .unwrap();
    let mut abort = Sim::new(100, LinkConfig::default());
    abort.capture = Some(Vec::new());
    abort.client.send(vec![1; 3000], false);
    abort
        .run_until(|s| s.server.saw(Event::ReadableData))
        .unwrap();
    abort.client.conn.abort();
    abort.drive(Side::Client);
    let mut captured = sim.capture.take().unwrap();
    captured.extend(abort.capture.take().unwrap());

    let mut picks: Vec<Vec<u8>> = Vec::new();
    let mut want = |pred: &dyn Fn(&[u8]) -> bool| {
        if let Some((_, d)) = captured.iter().find(|(_, d)| pred(d) && !picks.contains(d)) {
            picks.push(d.clone());
        }
    };
    want(&|d| d[1] == 1); // HELLO
    want(&|d| d[1] == 1 && d[24..40] != [0; 16]); // HELLO with echo
    want(&|d| d[1] == 2 && d.len() > 1000); // full data segment
    want(&|d| d[1] == 2 && d.len() == 50); // pure ack
    want(&|d| d[1] == 2 && d[3] > 0); // ack with SACK blocks
    want(&|d| d[1] == 2 && d[3] > 1); // several SACK blocks
    want(&|d| d[1] == 2 && d[2] & 1 != 0); // FIN
    want(&|d| d[1] == 2 && d[2] & 2 != 0); // PING
    want(&|d| d[1] == 3); // RESET
    picks.push(Vec::new());
    picks.push(vec![1]);
    picks.push(vec![2, 2, 0, 0]);
    picks.push(vec![1, 2, 0xFF, 9]);
    if let Some(mut flipped) = picks.get(2).cloned() {
        flipped[40] ^= 0x10;
        picks.push(flipped);
    }
    let dir = corpus_dir("packet");
    fs::create_dir_all(&dir).unwrap();
    for (i, p) in picks.iter().enumerate() {
        fs::write(dir.join(format!("seed-{i:02}")), p).unwrap();
    }

    // Connection scripts (see `fuzzing::connection_input` for the opcodes).
    let scripts: Vec<Vec<u8>> = vec![
        vec![7, 7, 7, 4, 200, 7, 7, 6],
        vec![7, 7, 7, 4, 255, 4, 255, 2, 40, 1, 2, 0, 0, 7, 6],
        vec![7, 7, 7, 4, 100, 9, 9, 7, 3, 30, 7, 6],
        vec![7, 7, 7, 5, 5, 5, 7, 3, 2, 7, 3, 200, 3, 200],
        vec![7, 7, 7, 4, 50, 8, 1, 7, 7, 8, 0, 7, 7, 6],
        vec![7, 7, 7, 4, 50, 8, 3, 7, 6],
        vec![0, 5, 1, 1, 0, 0, 0, 1, 3, 9, 9, 9],
        vec![7, 7, 7, 3, 255, 3, 255, 3, 255, 3, 255, 7],
        vec![7, 2, 0, 1, 7, 2, 60, 128, 7, 4, 9, 2, 80, 1, 7, 6],
        vec![3, 255, 3, 255, 3, 255, 3, 255, 3, 255],
    ];
    let dir = corpus_dir("connection");
    fs::create_dir_all(&dir).unwrap();
    for (i, s) in scripts.iter().enumerate() {
        fs::write(dir.join(format!("seed-{i:02}")), s).unwrap();
    }
}
