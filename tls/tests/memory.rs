//! Two sessions pumped against each other in memory: handshake, data, clean and cut ends,
//! bounded buffers, hostile input.

mod common;

use common::{pattern, pki, Pair};
use weir_tls::{TlsClientConfig, TlsError, TlsEvent, TlsLimits, TlsServerConfig, TlsSession};

#[test]
fn handshake_reports_peer_certificate_and_alpn() {
    let client_config = common::client_trusting_ca()
        .with_alpn_protocols(&["weir/1", "http/1.1"])
        .build()
        .unwrap();
    let server_config = TlsServerConfig::builder(pki().localhost.identity())
        .with_alpn_protocols(&["http/1.1", "weir/1"])
        .build()
        .unwrap();
    let client = TlsSession::client(&client_config, "localhost").unwrap();
    let server = TlsSession::server(&server_config).unwrap();
    assert!(client.is_handshaking() && server.is_handshaking());
    let mut pair = Pair::new(client, server);
    pair.handshake();

    assert!(!pair.client.is_handshaking() && !pair.server.is_handshaking());
    let info = match &pair.client_side.events[0] {
        TlsEvent::HandshakeDone(info) => info.clone(),
        other => panic!("expected HandshakeDone, got {other:?}"),
    };
    let leaf = openssl::x509::X509::from_pem(&pki().localhost.cert_pem).unwrap();
    assert_eq!(
        info.peer_certificate_der(),
        Some(&leaf.to_der().unwrap()[..])
    );
    // The server picks its own first preference among the client's offers.
    assert_eq!(info.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(pair.client.handshake_info(), Some(&info));

    let server_info = pair.server.handshake_info().unwrap();
    assert_eq!(server_info.peer_certificate_der(), None);
    assert_eq!(server_info.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[test]
fn ten_mib_both_ways_then_close_notify() {
    const LEN: usize = 10 * 1024 * 1024;
    let to_server = pattern(LEN, 1);
    let to_client = pattern(LEN, 2);
    let mut pair = Pair::localhost();
    // Written before the handshake: held and sent once it is done.
    let mut client_sent = pair.client.write_plaintext(&to_server).unwrap();
    let mut server_sent = pair.server.write_plaintext(&to_client).unwrap();
    assert!(client_sent > 0 && client_sent < LEN);

    let mut steps = 0;
    while pair.client_side.received.len() < LEN || pair.server_side.received.len() < LEN {
        steps += 1;
        assert!(steps < 10_000, "no progress");
        client_sent += pair
            .client
            .write_plaintext(&to_server[client_sent..])
            .unwrap();
        server_sent += pair
            .server
            .write_plaintext(&to_client[server_sent..])
            .unwrap();
        pair.step();
        assert!(pair.client_side.failure().is_none() && pair.server_side.failure().is_none());
    }
    assert!(
        pair.client_side.received == to_client,
        "client got corrupt data"
    );
    assert!(
        pair.server_side.received == to_server,
        "server got corrupt data"
    );

    // The client ends cleanly: the server sees PeerClosed, not Truncated.
    pair.client.close();
    assert!(matches!(
        pair.client.write_plaintext(b"late"),
        Err(TlsError::Closed)
    ));
    pair.run_until(20, |p| p.server_side.peer_closed());
    assert!(pair.client.is_write_closed());
    assert!(pair.server.is_read_closed() && !pair.server.is_write_closed());

    // Half-closed: the server can still send, then closes too.
    assert_eq!(pair.server.write_plaintext(b"goodbye").unwrap(), 7);
    pair.server.close();
    pair.run_until(20, |p| p.client_side.peer_closed());
    assert!(pair.client_side.received.ends_with(b"goodbye"));
    assert!(pair.client.is_finished() && pair.server.is_finished());
    assert!(!pair.client_side.truncated() && !pair.server_side.truncated());
}

#[test]
fn close_during_handshake_sends_data_then_close_notify() {
    let mut pair = Pair::localhost();
    assert_eq!(pair.client.write_plaintext(b"early data").unwrap(), 10);
    pair.client.close();
    assert!(!pair.client.is_write_closed());
    pair.run_until(20, |p| p.server_side.peer_closed());
    assert_eq!(pair.server_side.received, b"early data");
    assert!(pair.client.is_write_closed());
}

#[test]
fn transport_end_without_close_notify_is_truncated() {
    let mut pair = Pair::localhost();
    pair.handshake();
    pair.client.write_plaintext(b"partial").unwrap();
    pair.run_until(20, |p| p.server_side.received == b"partial");

    // The client's transport dies without close_notify.
    pair.server.handle_transport_end();
    pair.run_until(20, |p| p.server_side.truncated());
    assert!(!pair.server_side.peer_closed());
    assert!(pair.server_side.failure().is_none());
    assert!(pair.server.is_read_closed() && pair.server.is_write_closed());
    assert!(matches!(
        pair.server.write_plaintext(b"x"),
        Err(TlsError::Closed)
    ));
    assert!(pair.server.is_finished());
}

#[test]
fn data_still_queued_is_read_before_truncation() {
    let mut pair = Pair::localhost();
    pair.handshake();
    pair.server_side.paused = true;
    pair.client
        .write_plaintext(b"queued before the end")
        .unwrap();
    pair.run_until(20, |p| p.to_server.is_empty() && !p.client.wants_write());
    pair.server.handle_transport_end();
    pair.step();
    assert!(
        !pair.server_side.truncated(),
        "the end came before the data"
    );
    pair.server_side.paused = false;
    pair.run_until(20, |p| p.server_side.truncated());
    assert_eq!(pair.server_side.received, b"queued before the end");
}

#[test]
fn close_notify_followed_by_transport_end_is_peer_closed() {
    let mut pair = Pair::localhost();
    pair.handshake();
    pair.client.close();
    pair.run_until(20, |p| p.to_server.is_empty() && !p.client.wants_write());
    pair.server.handle_transport_end();
    pair.run_until(20, |p| p.server_side.peer_closed());
    assert!(!pair.server_side.truncated());
}

#[test]
fn transport_end_during_handshake_fails_both_ways() {
    let config = common::client_trusting_ca().build().unwrap();
    let mut client = TlsSession::client(&config, "localhost").unwrap();
    assert!(client.poll_ciphertext().is_some());
    client.handle_transport_end();
    assert!(matches!(
        client.poll_event(),
        Some(TlsEvent::Failed(TlsError::Truncated))
    ));
    assert!(client.is_read_closed() && client.is_write_closed());

    let mut server = TlsSession::server(&pki().localhost.server_config()).unwrap();
    server.handle_ciphertext(&[22, 3, 1]);
    server.handle_transport_end();
    assert!(matches!(
        server.poll_event(),
        Some(TlsEvent::Failed(TlsError::Truncated))
    ));
}

/// A localhost pair whose client takes at most `limit` bytes of incoming ciphertext.
fn pair_with_incoming_limit(limit: usize) -> Pair {
    let client_config = common::client_trusting_ca()
        .with_limits(TlsLimits::default().with_incoming_ciphertext(limit))
        .build()
        .unwrap();
    let client = TlsSession::client(&client_config, "localhost").unwrap();
    let server = TlsSession::server(&pki().localhost.server_config()).unwrap();
    Pair::new(client, server)
}

#[test]
fn incoming_ciphertext_stops_at_its_bound_until_plaintext_is_read() {
    let limit = 32 * 1024;
    let mut pair = pair_with_incoming_limit(limit);
    assert_eq!(pair.client.ciphertext_capacity(), limit);
    pair.handshake();

    // The server sends 1 MiB; the client application reads nothing.
    const LEN: usize = 1024 * 1024;
    let data = pattern(LEN, 3);
    pair.client_side.paused = true;
    let mut sent = 0;
    for _ in 0..200 {
        sent += pair.server.write_plaintext(&data[sent..]).unwrap();
        pair.step();
    }
    assert_eq!(pair.client.ciphertext_capacity(), 0);
    assert_eq!(pair.client.handle_ciphertext(b"more"), 0);
    assert!(pair.client_side.received.is_empty());
    // The backlog stayed on the wire and in the sender's bounded queues.
    assert!(!pair.to_client.is_empty());
    assert!(sent < LEN, "the sender should have been stopped too");
    let server_limits = pair.server.limits();
    assert_eq!(pair.server.plaintext_capacity(), 0);
    assert_eq!(pair.server.write_plaintext(&data[sent..]).unwrap(), 0);
    assert!(
        pair.to_client.len()
            <= pair.wire_limit + server_limits.outgoing_ciphertext() + 16 * 1024 + 4096,
        "wire holds {} bytes",
        pair.to_client.len()
    );

    // Reading plaintext frees the queue and everything arrives.
    let mut buf = vec![0; 1000];
    let n = pair.client.read_plaintext(&mut buf);
    assert!(n > 0);
    assert!(pair.client.ciphertext_capacity() > 0);
    pair.client_side.received.extend_from_slice(&buf[..n]);
    pair.client_side.paused = false;
    let mut steps = 0;
    while pair.client_side.received.len() < LEN {
        steps += 1;
        assert!(steps < 1000, "no progress");
        sent += pair.server.write_plaintext(&data[sent..]).unwrap();
        pair.step();
    }
    assert!(pair.client_side.received == data);
}

#[test]
fn outgoing_side_is_bounded_when_ciphertext_is_not_drained() {
    let limits = TlsLimits::default()
        .with_outgoing_plaintext(16 * 1024)
        .with_outgoing_ciphertext(16 * 1024);
    let client_config = common::client_trusting_ca()
        .with_limits(limits)
        .build()
        .unwrap();
    let client = TlsSession::client(&client_config, "localhost").unwrap();
    let server = TlsSession::server(&pki().localhost.server_config()).unwrap();
    let mut pair = Pair::new(client, server);
    pair.handshake();

    let data = pattern(1024 * 1024, 4);
    let mut accepted = 0;
    for _ in 0..100 {
        accepted += pair.client.write_plaintext(&data[accepted..]).unwrap();
    }
    // Plaintext queue full, ciphertext queue at its high water mark (plus one record).
    assert_eq!(pair.client.plaintext_capacity(), 0);
    assert!(
        accepted <= 16 * 1024 + 16 * 1024 + 16 * 1024,
        "accepted {accepted}"
    );
    let mut queued = 0;
    while let Some(bytes) = pair.client.poll_ciphertext() {
        queued += bytes.len();
        if queued > 100 * 1024 {
            break;
        }
    }
    // Draining lets the session encrypt the rest of its plaintext queue, and no more.
    assert!(
        queued < 64 * 1024,
        "{queued} ciphertext bytes for {accepted} accepted"
    );
    assert!(pair.client.plaintext_capacity() > 0);
}

#[test]
fn garbage_instead_of_a_handshake_fails_without_panic() {
    let server_config = pki().localhost.server_config();
    let client_config = common::client_trusting_ca().build().unwrap();
    for seed in 0..50u32 {
        let junk = pattern(1 + (seed as usize * 97) % 3000, seed + 100);
        let mut server = TlsSession::server(&server_config).unwrap();
        let mut client = TlsSession::client(&client_config, "localhost").unwrap();
        for chunk in junk.chunks(1 + seed as usize % 7 * 50) {
            server.handle_ciphertext(chunk);
            client.handle_ciphertext(chunk);
        }
        server.handle_transport_end();
        client.handle_transport_end();
        for session in [&mut server, &mut client] {
            let mut failed = false;
            while let Some(event) = session.poll_event() {
                match event {
                    TlsEvent::Failed(
                        TlsError::Handshake { .. }
                        | TlsError::Truncated
                        | TlsError::PeerAlert { .. },
                    ) => failed = true,
                    other => panic!("seed {seed}: unexpected {other:?}"),
                }
            }
            assert!(failed, "seed {seed}: garbage did not fail the session");
            assert!(session.is_read_closed() && session.is_write_closed());
        }
    }
}

#[test]
fn corrupted_record_after_handshake_is_a_protocol_error() {
    let mut pair = Pair::localhost();
    pair.handshake();
    pair.client.write_plaintext(b"integrity matters").unwrap();
    let mut record = pair.client.poll_ciphertext().unwrap().to_vec();
    let last = record.len() - 1;
    record[last] ^= 0x55;
    assert_eq!(pair.server.handle_ciphertext(&record), record.len());
    let mut buf = [0u8; 64];
    assert_eq!(pair.server.read_plaintext(&mut buf), 0);
    match pair.server.poll_event() {
        Some(TlsEvent::Failed(TlsError::Protocol { detail })) => {
            assert!(detail.to_lowercase().contains("bad record mac"), "{detail}");
        }
        other => panic!("unexpected {other:?}"),
    }
    // The alert for the client is ready to send, and the client reports it.
    assert!(pair.server.wants_write());
    pair.run_until(20, |p| p.client_side.failure().is_some());
    assert!(matches!(
        pair.client_side.failure(),
        Some(TlsError::PeerAlert { .. })
    ));
}

#[test]
fn default_client_config_uses_system_roots_and_rejects_test_ca() {
    let config = TlsClientConfig::builder().build().unwrap();
    let client = TlsSession::client(&config, "localhost").unwrap();
    let server = TlsSession::server(&pki().localhost.server_config()).unwrap();
    let mut pair = Pair::new(client, server);
    pair.handshake();
    assert!(matches!(
        pair.client_side.failure(),
        Some(TlsError::UnknownIssuer { .. })
    ));
}

#[test]
fn sessions_and_configs_are_send() {
    fn assert_send<T: Send>() {}
    assert_send::<TlsSession>();
    assert_send::<TlsClientConfig>();
    assert_send::<TlsServerConfig>();
    assert_send::<TlsEvent>();
}

/// The lengths of the TLS records in `ciphertext` (5-byte headers: type, version, length).
fn record_lengths(mut ciphertext: &[u8]) -> Vec<usize> {
    let mut lengths = Vec::new();
    while ciphertext.len() >= 5 {
        let len = u16::from_be_bytes([ciphertext[3], ciphertext[4]]) as usize;
        lengths.push(len);
        ciphertext = &ciphertext[(5 + len).min(ciphertext.len())..];
    }
    lengths
}

#[test]
fn small_chunks_written_together_go_out_as_one_record_and_large_ones_without_gathering() {
    let mut pair = Pair::localhost();
    pair.handshake();
    assert!(
        pair.client.poll_ciphertext().is_none(),
        "nothing left from the handshake"
    );

    // A hundred 10-byte chunks in one call: one record, not a hundred.
    let small = pattern(1000, 7);
    let mut run: weir_io::Chunks = small
        .chunks(10)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    assert_eq!(pair.client.write_plaintext_chunks(&mut run).unwrap(), 1000);
    assert!(run.is_empty());
    let ciphertext = pair.client.poll_ciphertext().unwrap();
    assert_eq!(
        record_lengths(&ciphertext).len(),
        1,
        "{:?}",
        record_lengths(&ciphertext)
    );

    // 40 KiB as one chunk: full records straight from it.
    let large = pattern(40 * 1024, 8);
    let rest = pair
        .client
        .write_plaintext_bytes(bytes::Bytes::from(large.clone()))
        .unwrap();
    assert!(rest.is_empty());
    let ciphertext2 = pair.client.poll_ciphertext().unwrap();
    assert_eq!(record_lengths(&ciphertext2).len(), 3, "16 + 16 + 8 KiB");

    // Both arrive intact, in order.
    pair.to_server.extend_from_slice(&ciphertext);
    pair.to_server.extend_from_slice(&ciphertext2);
    let mut expected = small;
    expected.extend_from_slice(&large);
    pair.run_until(100, |p| p.server_side.received.len() >= expected.len());
    assert_eq!(pair.server_side.received, expected);
}

#[test]
fn plaintext_chunks_beyond_the_capacity_stay_with_the_caller() {
    let mut pair = Pair::localhost();
    // Before the handshake nothing is encrypted: the session holds up to its capacity.
    let capacity = pair.client.plaintext_capacity();
    let data = pattern(capacity + 5000, 9);
    let mut run: weir_io::Chunks = data
        .chunks(3000)
        .map(bytes::Bytes::copy_from_slice)
        .collect();
    let taken = pair.client.write_plaintext_chunks(&mut run).unwrap();
    assert_eq!(taken as usize, capacity);
    assert_eq!(
        run.byte_len() as usize,
        5000,
        "the rest, split at the capacity"
    );
    assert_eq!(pair.client.plaintext_capacity(), 0);
    pair.handshake();
    pair.run_until(1000, |p| p.server_side.received.len() >= capacity);
    let rest: Vec<u8> = run.iter().flat_map(|c| c.iter().copied()).collect();
    assert_eq!(pair.server_side.received, data[..capacity]);
    assert_eq!(rest, data[capacity..]);
}

/// A record read a few bytes at a time comes out whole with no new ciphertext: what OpenSSL
/// decrypted and holds back is read, though the transport has nothing more (the session skips
/// asking OpenSSL only when neither holds anything).
#[test]
fn a_record_read_in_small_pieces_comes_out_whole_without_more_ciphertext() {
    let mut pair = Pair::localhost();
    pair.handshake();
    let data = pattern(16 * 1024, 3);
    assert_eq!(pair.client.write_plaintext(&data).unwrap(), data.len());
    let ciphertext = pair.client.poll_ciphertext().unwrap();
    assert_eq!(pair.server.handle_ciphertext(&ciphertext), ciphertext.len());

    let mut received = Vec::new();
    while let Some(piece) = pair.server.poll_plaintext(100) {
        assert!(piece.len() <= 100);
        received.extend_from_slice(&piece);
    }
    assert!(
        received == data,
        "got {} of {} bytes",
        received.len(),
        data.len()
    );
    // Nothing more until more ciphertext comes; then it is read at once.
    assert_eq!(pair.server.read_plaintext(&mut [0; 16]), 0);
    assert_eq!(pair.client.write_plaintext(b"more").unwrap(), 4);
    let ciphertext = pair.client.poll_ciphertext().unwrap();
    pair.server.handle_ciphertext(&ciphertext);
    assert_eq!(
        pair.server.poll_plaintext(100).as_deref(),
        Some(&b"more"[..])
    );
}

/// Ciphertext offered as `Bytes` beyond the incoming bound: the session takes what fits and
/// hands back exactly the rest, which goes in later; nothing is lost or repeated.
#[test]
fn ciphertext_bytes_beyond_the_bound_come_back_as_the_rest() {
    let limit = 8 * 1024;
    let mut pair = pair_with_incoming_limit(limit);
    pair.handshake();

    let data = pattern(64 * 1024, 4);
    assert_eq!(pair.server.write_plaintext(&data).unwrap(), data.len());
    let mut wire = bytes::BytesMut::new();
    while let Some(ciphertext) = pair.server.poll_ciphertext() {
        wire.extend_from_slice(&ciphertext);
    }
    let mut offered = wire.freeze();
    let total = offered.len();
    let mut received = Vec::new();
    let mut buf = vec![0; 4096];
    for _ in 0..1000 {
        if offered.is_empty() {
            break;
        }
        let before = offered.len();
        offered = pair.client.handle_ciphertext_bytes(offered);
        assert!(before - offered.len() <= limit, "took more than the bound");
        loop {
            let n = pair.client.read_plaintext(&mut buf);
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
        }
    }
    assert!(
        offered.is_empty(),
        "{} of {total} bytes never went in",
        offered.len()
    );
    assert!(
        received == data,
        "got {} of {} bytes",
        received.len(),
        data.len()
    );
}
