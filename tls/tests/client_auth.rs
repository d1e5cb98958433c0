//! Client certificates checked by a server ([`ClientAuth`]): a good one is accepted and
//! reported, a missing, expired, unknown or wrongly purposed one is refused with its own
//! reason on the server and an alert to the client, at TLS 1.3 and 1.2.

mod common;

use common::{client_trusting_ca, pki, CertKey, Pair};
use weir_tls::{
    ClientAuth, TlsError, TlsServerConfig, TlsServerConfigBuilder, TlsSession, TlsVersion,
};

/// Both protocol versions a server speaks.
const VERSIONS: [TlsVersion; 2] = [TlsVersion::Tls13, TlsVersion::Tls12];

/// A `localhost` server at `version` asking clients for certificates issued by the test CA.
fn server(client_auth: ClientAuth, version: TlsVersion) -> TlsServerConfigBuilder {
    TlsServerConfig::builder(pki().localhost.identity())
        .with_max_version(version)
        .with_client_auth(client_auth)
        .with_client_roots_pem(&pki().ca.cert_pem)
}

/// Runs a handshake of a client presenting `identity` (or none) against `server`; where both
/// sides finish it, a "ping" each way; else until both have failed.
fn handshake(server: TlsServerConfigBuilder, identity: Option<&CertKey>) -> Pair {
    let mut client = client_trusting_ca();
    if let Some(identity) = identity {
        client = client.with_client_identity(identity.identity());
    }
    let client = TlsSession::client(&client.build().unwrap(), "localhost").unwrap();
    let server = TlsSession::server(&server.build().unwrap()).unwrap();
    let mut pair = Pair::new(client, server);
    pair.handshake();
    if pair.client_side.handshake_done() && pair.server_side.handshake_done() {
        pair.client.write_plaintext(b"ping").unwrap();
        pair.server.write_plaintext(b"ping").unwrap();
    }
    // At TLS 1.3 a client is done before the server has checked its certificate: a refusal
    // reaches it as an alert on its next read.
    pair.run_until(100, |p| {
        let over = |side: &common::Side| side.failure().is_some() || side.received == b"ping";
        over(&p.client_side) && over(&p.server_side)
    });
    pair
}

/// Asserts that the server refused the client with `expected` (checked by `is`) and that the
/// client heard alert `alert`.
fn assert_refused(pair: &Pair, is: fn(&TlsError) -> bool, alert: u8, context: &str) {
    let error = pair
        .server_side
        .failure()
        .unwrap_or_else(|| panic!("{context}: server accepted: {:?}", pair.server_side.events));
    assert!(is(error), "{context}: server failed with {error:?}");
    assert!(error.is_verification_failure(), "{context}: {error:?}");
    assert!(!pair.server_side.handshake_done(), "{context}");
    match pair.client_side.failure() {
        Some(TlsError::PeerAlert { code, .. }) => {
            assert_eq!(
                *code,
                Some(alert),
                "{context}: {:?}",
                pair.client_side.events
            )
        }
        other => panic!("{context}: client should hear an alert, got {other:?}"),
    }
    assert!(pair.server_side.received.is_empty(), "{context}");
}

#[test]
fn a_client_certificate_from_the_trusted_ca_is_accepted_and_reported() {
    for version in VERSIONS {
        for client_auth in [ClientAuth::Required, ClientAuth::Optional] {
            let pair = handshake(server(client_auth, version), Some(&pki().client));
            assert_eq!(
                pair.server_side.received, b"ping",
                "{version:?} {client_auth:?}"
            );
            assert_eq!(
                pair.client_side.received, b"ping",
                "{version:?} {client_auth:?}"
            );
            let info = pair.server.handshake_info().expect("server handshake done");
            let der = info
                .peer_certificate_der()
                .expect("the client's certificate");
            let expected = openssl::x509::X509::from_pem(&pki().client.cert_pem).unwrap();
            assert_eq!(
                der,
                expected.to_der().unwrap(),
                "{version:?} {client_auth:?}"
            );
        }
    }
}

#[test]
fn a_client_without_a_certificate_is_refused_when_one_is_required() {
    for (version, alert) in [(TlsVersion::Tls13, 116), (TlsVersion::Tls12, 40)] {
        // 116 is certificate_required (TLS 1.3); TLS 1.2 has only handshake_failure.
        let pair = handshake(server(ClientAuth::Required, version), None);
        let is = |e: &TlsError| matches!(e, TlsError::PeerCertificateMissing { .. });
        assert_refused(&pair, is, alert, &format!("{version:?}"));
    }
}

#[test]
fn a_client_without_a_certificate_is_accepted_when_it_is_optional() {
    for version in VERSIONS {
        let pair = handshake(server(ClientAuth::Optional, version), None);
        assert_eq!(pair.server_side.received, b"ping", "{version:?}");
        let info = pair.server.handshake_info().unwrap();
        assert!(info.peer_certificate_der().is_none(), "{version:?}");
    }
}

#[test]
fn a_self_signed_client_certificate_is_unknown_issuer() {
    for version in VERSIONS {
        for client_auth in [ClientAuth::Required, ClientAuth::Optional] {
            let server = server(client_auth, version);
            let pair = handshake(server, Some(&pki().client_self_signed));
            let is = |e: &TlsError| matches!(e, TlsError::UnknownIssuer { .. });
            // 48 is unknown_ca.
            assert_refused(&pair, is, 48, &format!("{version:?} {client_auth:?}"));
        }
    }
}

#[test]
fn an_expired_client_certificate_is_certificate_expired() {
    for version in VERSIONS {
        let pair = handshake(
            server(ClientAuth::Required, version),
            Some(&pki().client_expired),
        );
        let is = |e: &TlsError| matches!(e, TlsError::CertificateExpired { .. });
        // 45 is certificate_expired.
        assert_refused(&pair, is, 45, &format!("{version:?}"));
    }
}

#[test]
fn a_server_certificate_is_no_client_certificate() {
    // `localhost` is issued by the trusted CA, for server authentication only.
    for version in VERSIONS {
        let pair = handshake(
            server(ClientAuth::Required, version),
            Some(&pki().localhost),
        );
        let is = |e: &TlsError| matches!(e, TlsError::CertificateRejected { detail } if detail.contains("purpose"));
        // 43 is unsupported_certificate.
        assert_refused(&pair, is, 43, &format!("{version:?}"));
    }
}

#[test]
fn a_server_that_does_not_ask_gets_no_client_certificate() {
    let server = TlsServerConfig::builder(pki().localhost.identity());
    let pair = handshake(server, Some(&pki().client));
    assert_eq!(pair.server_side.received, b"ping");
    let info = pair.server.handshake_info().unwrap();
    assert!(info.peer_certificate_der().is_none());
}

#[test]
fn asking_for_client_certificates_needs_usable_roots() {
    let without_roots = TlsServerConfig::builder(pki().localhost.identity())
        .with_client_auth(ClientAuth::Required)
        .build();
    match without_roots {
        Err(error @ TlsError::Config { .. }) => {
            assert!(
                error.to_string().contains("client certificate roots"),
                "{error}"
            )
        }
        other => panic!("unexpected {other:?}"),
    }
    for pem in [&b"not a certificate"[..], b""] {
        let bad = server(ClientAuth::Optional, TlsVersion::Tls13)
            .with_client_roots_pem(pem)
            .build();
        assert!(matches!(bad, Err(TlsError::Config { .. })), "{pem:?}");
    }
    // Roots without asking for certificates change nothing and are not an error.
    server(ClientAuth::None, TlsVersion::Tls13).build().unwrap();
}
