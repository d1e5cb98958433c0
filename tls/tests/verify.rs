//! Certificate verification: each kind of rejection has its own error variant, the server
//! learns about it through an alert (nobody hangs), and each is accepted when the test trusts
//! the certificate explicitly. Also identity loading from PEM, PKCS#12 and files.

mod common;

use common::{client_trusting_ca, pki, CertKey, Pair};
use weir_tls::{
    TlsClientConfig, TlsClientConfigBuilder, TlsError, TlsIdentity, TlsServerConfig, TlsSession,
};

/// Runs a handshake of a client built from `client` connecting to `server_name`, against a
/// server presenting `server_cert`.
fn handshake(client: TlsClientConfigBuilder, server_name: &str, server_cert: &CertKey) -> Pair {
    let client_config = client.build().unwrap();
    let client = TlsSession::client(&client_config, server_name).unwrap();
    let server = TlsSession::server(&server_cert.server_config()).unwrap();
    let mut pair = Pair::new(client, server);
    pair.handshake();
    pair
}

/// Asserts both sides finished the handshake and can exchange a few bytes.
fn assert_accepted(mut pair: Pair) {
    assert!(
        pair.client_side.handshake_done(),
        "client: {:?}",
        pair.client_side.events
    );
    assert!(pair.server_side.handshake_done());
    pair.client.write_plaintext(b"ping").unwrap();
    pair.run_until(20, |p| p.server_side.received == b"ping");
}

/// Asserts the client rejected the server's certificate, and the server was told by an alert.
fn client_failure(pair: &Pair) -> &TlsError {
    let error = pair
        .client_side
        .failure()
        .unwrap_or_else(|| panic!("client did not fail: {:?}", pair.client_side.events));
    assert!(error.is_verification_failure(), "{error:?}");
    assert!(!pair.client_side.handshake_done());
    match pair.server_side.failure() {
        Some(TlsError::PeerAlert {
            code, description, ..
        }) => {
            assert!(code.is_some(), "alert number missing");
            assert!(!description.is_empty());
        }
        other => panic!("server should see the client's alert, got {other:?}"),
    }
    error
}

#[test]
fn trusted_chain_and_matching_name_is_accepted() {
    assert_accepted(handshake(
        client_trusting_ca(),
        "localhost",
        &pki().localhost,
    ));
}

#[test]
fn wrong_hostname_is_hostname_mismatch() {
    let pair = handshake(client_trusting_ca(), "weir.example", &pki().localhost);
    let error = client_failure(&pair);
    assert!(
        matches!(error, TlsError::HostnameMismatch { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("does not match"));
}

#[test]
fn wrong_hostname_is_accepted_with_danger_option() {
    let client = client_trusting_ca().danger_accept_invalid_hostnames(true);
    assert_accepted(handshake(client, "weir.example", &pki().localhost));
}

#[test]
fn untrusted_ca_is_unknown_issuer() {
    let client = TlsClientConfig::builder().without_built_in_roots();
    let pair = handshake(client, "localhost", &pki().localhost);
    let error = client_failure(&pair);
    assert!(matches!(error, TlsError::UnknownIssuer { .. }), "{error:?}");
    // The server hears "unknown ca" (alert 48).
    assert!(matches!(
        pair.server_side.failure(),
        Some(TlsError::PeerAlert { code: Some(48), .. })
    ));
}

#[test]
fn self_signed_is_unknown_issuer() {
    let pair = handshake(client_trusting_ca(), "localhost", &pki().self_signed);
    let error = client_failure(&pair);
    assert!(matches!(error, TlsError::UnknownIssuer { .. }), "{error:?}");
}

#[test]
fn self_signed_is_accepted_when_trusted_as_root() {
    let client = TlsClientConfig::builder()
        .without_built_in_roots()
        .with_root_certificate_pem(&pki().self_signed.cert_pem);
    assert_accepted(handshake(client, "localhost", &pki().self_signed));
}

#[test]
fn self_signed_is_accepted_with_danger_option() {
    let client = TlsClientConfig::builder().danger_accept_invalid_certs(true);
    assert_accepted(handshake(client, "localhost", &pki().self_signed));
}

#[test]
fn expired_is_certificate_expired() {
    let pair = handshake(client_trusting_ca(), "localhost", &pki().expired);
    let error = client_failure(&pair);
    assert!(
        matches!(error, TlsError::CertificateExpired { .. }),
        "{error:?}"
    );
    // "certificate expired" is alert 45.
    assert!(matches!(
        pair.server_side.failure(),
        Some(TlsError::PeerAlert { code: Some(45), .. })
    ));
}

#[test]
fn expired_is_accepted_with_danger_option() {
    let client = client_trusting_ca().danger_accept_invalid_certs(true);
    assert_accepted(handshake(client, "localhost", &pki().expired));
}

#[test]
fn danger_options_are_off_by_default_and_sni_is_sent() {
    // With defaults, the name is checked (the previous tests) and SNI goes out: the
    // ClientHello carries the name in clear.
    let config = client_trusting_ca().build().unwrap();
    let mut client = TlsSession::client(&config, "localhost").unwrap();
    let hello = client.poll_ciphertext().unwrap();
    assert!(hello.windows(9).any(|w| w == b"localhost"));

    let config = client_trusting_ca().without_sni().build().unwrap();
    let mut client = TlsSession::client(&config, "localhost").unwrap();
    let hello = client.poll_ciphertext().unwrap();
    assert!(!hello.windows(9).any(|w| w == b"localhost"));
}

#[test]
fn identity_from_pkcs12_bytes_and_files() {
    let pki = pki();
    let der = pki.localhost.pkcs12("secret", &pki.ca);
    let identity = TlsIdentity::from_pkcs12(&der, "secret").unwrap();
    let server_config = TlsServerConfig::builder(identity).build().unwrap();
    let client_config = client_trusting_ca().build().unwrap();
    let mut pair = Pair::new(
        TlsSession::client(&client_config, "localhost").unwrap(),
        TlsSession::server(&server_config).unwrap(),
    );
    pair.handshake();
    assert!(pair.client_side.handshake_done());

    assert!(matches!(
        TlsIdentity::from_pkcs12(&der, "wrong"),
        Err(TlsError::Config { .. })
    ));

    let dir = tempfile::tempdir().unwrap();
    let p12 = dir.path().join("server.p12");
    let chain = dir.path().join("chain.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&p12, &der).unwrap();
    std::fs::write(&chain, &pki.localhost.cert_pem).unwrap();
    std::fs::write(&key, &pki.localhost.key_pem).unwrap();
    for identity in [
        TlsIdentity::from_pkcs12_file(&p12, "secret").unwrap(),
        TlsIdentity::from_pem_files(&chain, &key).unwrap(),
    ] {
        let server_config = TlsServerConfig::builder(identity).build().unwrap();
        let mut pair = Pair::new(
            TlsSession::client(&client_config, "localhost").unwrap(),
            TlsSession::server(&server_config).unwrap(),
        );
        pair.handshake();
        assert!(pair.client_side.handshake_done());
    }

    let missing = dir.path().join("missing.pem");
    match TlsIdentity::from_pem_files(&missing, &key) {
        Err(TlsError::ReadFile { path, .. }) => assert_eq!(path, missing),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn bad_configuration_is_reported() {
    assert!(matches!(
        TlsIdentity::from_pem(b"not a certificate", b"not a key"),
        Err(TlsError::Config { .. })
    ));
    // A key that does not belong to the certificate: found when the server config is built,
    // not at the first handshake.
    let pki = pki();
    let mismatched = TlsIdentity::from_pem(&pki.localhost.cert_pem, &pki.ca.key_pem).unwrap();
    let error = TlsServerConfig::builder(mismatched).build().unwrap_err();
    let source = match &error {
        TlsError::Config { source, .. } => source.to_string(),
        other => panic!("not a configuration error: {other:?}"),
    };
    assert!(source.contains("key values mismatch"), "{source}");

    let result = TlsClientConfig::builder()
        .with_root_certificate_pem(b"-----BEGIN CERTIFICATE-----\nbroken\n")
        .build();
    assert!(matches!(result, Err(TlsError::Config { .. })), "{result:?}");
    let result = TlsClientConfig::builder()
        .with_root_certificate_pem(b"")
        .build();
    assert!(matches!(result, Err(TlsError::Config { .. })), "{result:?}");
}

#[test]
fn unusable_server_names_are_rejected_without_panic() {
    let config = client_trusting_ca().build().unwrap();
    for name in ["", "local\0host"] {
        assert!(matches!(
            TlsSession::client(&config, name),
            Err(TlsError::InvalidServerName { .. })
        ));
    }
    // An IP address is checked against the certificate's IP entries (ours has none).
    let client = TlsSession::client(&config, "127.0.0.1").unwrap();
    let server = TlsSession::server(&pki().localhost.server_config()).unwrap();
    let mut pair = Pair::new(client, server);
    pair.handshake();
    assert!(matches!(
        pair.client_side.failure(),
        Some(TlsError::HostnameMismatch { .. })
    ));
}
