//! The crate's error type, [`TlsError`], and the classification of OpenSSL's failure reports.
//!
//! native-tls gives one opaque error per failure, and OpenSSL's own errors (a server's) are no
//! easier to tell apart by code. Their text carries the OpenSSL reason
//! ("certificate verify failed", "tlsv1 alert unknown ca", "unexpected eof while reading") and,
//! for a failed certificate check, the X.509 verify result in parentheses ("certificate has
//! expired", "hostname mismatch"). [`classify`] reads the whole source chain and turns that text
//! into one variant per cause, so callers can react without parsing strings themselves.

use std::error::Error as StdError;
use std::path::PathBuf;
use std::time::Duration;

use openssl::x509::X509VerifyResult;

/// Everything that can go wrong in this crate.
///
/// The variants fall into these groups:
///
/// - **the peer's certificate was rejected by our checks**: [`CertificateExpired`],
///   [`HostnameMismatch`], [`UnknownIssuer`], and [`CertificateRejected`] for every other
///   verification failure; for a server that requires client certificates,
///   [`PeerCertificateMissing`];
/// - **the peer or the transport broke the session**: [`Handshake`] (a protocol failure before
///   the handshake finished), [`PeerAlert`] (the peer sent a fatal alert, e.g. because it
///   rejected *our* certificate), [`Protocol`] (a failure after the handshake), [`Truncated`]
///   (the transport ended in the middle of the handshake), [`HandshakeTimeout`] (the peer
///   did not finish the handshake in time);
/// - **the caller misused the API**: [`Closed`], [`InvalidServerName`];
/// - **the application refused the peer**: [`Unauthorized`];
/// - **configuration could not be built**: [`Config`], [`ReadFile`].
///
/// A transport end *after* the handshake is not an error but a
/// [`TlsEvent::Truncated`](crate::TlsEvent::Truncated); a clean end is
/// [`TlsEvent::PeerClosed`](crate::TlsEvent::PeerClosed).
///
/// The `detail` strings hold OpenSSL's own text. It is meant for logs; match on the variant.
///
/// [`CertificateExpired`]: TlsError::CertificateExpired
/// [`HostnameMismatch`]: TlsError::HostnameMismatch
/// [`UnknownIssuer`]: TlsError::UnknownIssuer
/// [`CertificateRejected`]: TlsError::CertificateRejected
/// [`PeerCertificateMissing`]: TlsError::PeerCertificateMissing
/// [`Handshake`]: TlsError::Handshake
/// [`PeerAlert`]: TlsError::PeerAlert
/// [`Protocol`]: TlsError::Protocol
/// [`Truncated`]: TlsError::Truncated
/// [`HandshakeTimeout`]: TlsError::HandshakeTimeout
/// [`Closed`]: TlsError::Closed
/// [`InvalidServerName`]: TlsError::InvalidServerName
/// [`Config`]: TlsError::Config
/// [`ReadFile`]: TlsError::ReadFile
/// [`Unauthorized`]: TlsError::Unauthorized
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The peer's certificate (or one in its chain) is past its `notAfter` date.
    #[error("peer certificate has expired: {detail}")]
    CertificateExpired {
        /// OpenSSL's description of the failure.
        detail: String,
    },
    /// The peer's certificate failed verification for a reason without its own variant
    /// (not yet valid, revoked, bad signature, wrong key usage, chain too long, ...).
    #[error("peer certificate rejected: {detail}")]
    CertificateRejected {
        /// OpenSSL's description of the failure.
        detail: String,
    },
    /// Plaintext was written after [`close`](crate::TlsSession::close), after the session
    /// failed, or after the transport was lost.
    #[error("session no longer accepts plaintext")]
    Closed,
    /// A configuration could not be built from what was given.
    #[error("invalid tls configuration: {what}")]
    Config {
        /// What was being built, e.g. "trusted root certificate (PEM)".
        what: &'static str,
        /// The error native-tls or OpenSSL reported.
        #[source]
        source: Box<dyn StdError + Send + Sync>,
    },
    /// The handshake failed for a protocol reason: the peer sent something we cannot accept,
    /// no common protocol version or cipher suite, garbage instead of TLS records, ...
    #[error("tls handshake failed: {detail}")]
    Handshake {
        /// OpenSSL's description of the failure.
        detail: String,
    },
    /// The peer's certificate is valid but issued for another name than the one we connected to.
    #[error("peer certificate does not match the server name: {detail}")]
    HostnameMismatch {
        /// OpenSSL's description of the failure.
        detail: String,
    },
    /// The server name given to [`TlsSession::client`](crate::TlsSession::client) is empty or
    /// contains a NUL byte.
    #[error("invalid server name {name:?}")]
    InvalidServerName {
        /// The name as given.
        name: String,
    },
    /// A server that requires client certificates
    /// ([`ClientAuth::Required`](crate::ClientAuth::Required)) got none from the client.
    #[error("peer sent no certificate, and one is required: {detail}")]
    PeerCertificateMissing {
        /// OpenSSL's description of the failure.
        detail: String,
    },
    /// The peer sent a fatal alert and ended the session, e.g. `unknown ca` or
    /// `bad certificate` when it rejected our certificate, or `handshake failure`.
    #[error("peer sent fatal alert \"{description}\"")]
    PeerAlert {
        /// The alert number from RFC 8446 section 6 (48 is `unknown_ca`), when OpenSSL names it.
        code: Option<u8>,
        /// The alert as OpenSSL names it, e.g. "unknown ca".
        description: String,
        /// OpenSSL's full description of the failure.
        detail: String,
    },
    /// The session failed after the handshake: a corrupt record, a bad MAC, an unexpected
    /// message.
    #[error("tls protocol error: {detail}")]
    Protocol {
        /// OpenSSL's description of the failure.
        detail: String,
    },
    /// A certificate, key or PKCS#12 file could not be read.
    #[error("cannot read {}", path.display())]
    ReadFile {
        /// The file that could not be read.
        path: PathBuf,
        /// The error the OS reported.
        #[source]
        source: std::io::Error,
    },
    /// The transport ended before the handshake finished.
    #[error("transport ended during the tls handshake")]
    Truncated,
    /// The handshake did not finish within
    /// [`TlsLimits::handshake_timeout`](crate::TlsLimits::handshake_timeout): the peer said
    /// nothing, or stalled half-way. The element aborted its chain.
    #[error("tls handshake did not finish within {after:?}")]
    HandshakeTimeout {
        /// The bound that passed.
        after: Duration,
    },
    /// The application refused the peer: it answered [`IoControl::Authorize`] with
    /// [`ControlReply::Denied`] and the [`TlsElement`](crate::TlsElement) aborted its chain.
    ///
    /// [`IoControl::Authorize`]: weir_io::IoControl::Authorize
    /// [`ControlReply::Denied`]: weir_io::ControlReply::Denied
    #[error("peer refused by the application's authorize check")]
    Unauthorized,
    /// The peer's certificate chain does not lead to a root we trust: a self-signed
    /// certificate, a missing intermediate, or a private CA that was not added with
    /// [`with_root_certificate_pem`](crate::TlsClientConfigBuilder::with_root_certificate_pem).
    #[error("peer certificate is not issued by a trusted authority: {detail}")]
    UnknownIssuer {
        /// OpenSSL's description of the failure.
        detail: String,
    },
}

impl TlsError {
    /// Returns `true` for the variants that report a rejected peer certificate:
    /// [`CertificateExpired`](TlsError::CertificateExpired),
    /// [`CertificateRejected`](TlsError::CertificateRejected),
    /// [`HostnameMismatch`](TlsError::HostnameMismatch),
    /// [`UnknownIssuer`](TlsError::UnknownIssuer), and for a server
    /// [`PeerCertificateMissing`](TlsError::PeerCertificateMissing).
    pub fn is_verification_failure(&self) -> bool {
        matches!(
            self,
            TlsError::CertificateExpired { .. }
                | TlsError::CertificateRejected { .. }
                | TlsError::HostnameMismatch { .. }
                | TlsError::UnknownIssuer { .. }
                | TlsError::PeerCertificateMissing { .. }
        )
    }

    /// A [`TlsError::Config`] for building `what`.
    pub(crate) fn config(
        what: &'static str,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        TlsError::Config {
            what,
            source: source.into(),
        }
    }
}

/// When a failure happened; decides between [`TlsError::Handshake`] and [`TlsError::Protocol`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Before the handshake finished.
    Handshake,
    /// After the handshake finished.
    Data,
}

/// X.509 verify results (as OpenSSL 1.1 and 3 spell them) meaning "no trusted issuer".
const UNKNOWN_ISSUER_TEXTS: &[&str] = &[
    "unable to get local issuer certificate",
    "unable to get issuer certificate",
    "unable to verify the first certificate",
    "self-signed certificate",
    "self signed certificate",
    "certificate not trusted",
];

/// Alert prefixes in OpenSSL reason strings, e.g. "tlsv1 alert unknown ca".
const ALERT_PREFIXES: &[&str] = &["tlsv13 alert ", "tlsv1 alert ", "sslv3 alert "];

/// Turns a native-tls or OpenSSL failure into the variant that names its cause.
///
/// Matching is done on the lower-cased text of the whole source chain, because native-tls does
/// not expose OpenSSL's error codes. Unrecognised text falls back to [`TlsError::Handshake`] or
/// [`TlsError::Protocol`] according to `phase`, keeping the text as `detail`.
pub(crate) fn classify(error: &(dyn StdError + 'static), phase: Phase) -> TlsError {
    classify_text(chain_text(error), phase)
}

/// A server's handshake failure: OpenSSL's error, and the X.509 verify result of the
/// client's certificate, which a server's error text does not carry as a client's does.
pub(crate) fn classify_server_handshake(
    error: &(dyn StdError + 'static),
    verify: X509VerifyResult,
) -> TlsError {
    let mut detail = chain_text(error);
    if verify != X509VerifyResult::OK {
        detail = format!("{detail} ({})", verify.error_string());
    }
    classify_text(detail, Phase::Handshake)
}

/// [`classify`] on the text of the failure.
fn classify_text(detail: String, phase: Phase) -> TlsError {
    let text = detail.to_lowercase();

    if let Some(alert) = find_alert(&text) {
        return TlsError::PeerAlert {
            code: alert_number(&text),
            description: alert,
            detail,
        };
    }
    if text.contains("hostname mismatch") || text.contains("ip address mismatch") {
        return TlsError::HostnameMismatch { detail };
    }
    if text.contains("certificate has expired") {
        return TlsError::CertificateExpired { detail };
    }
    if UNKNOWN_ISSUER_TEXTS.iter().any(|t| text.contains(t)) {
        return TlsError::UnknownIssuer { detail };
    }
    if text.contains("certificate verify failed") {
        return TlsError::CertificateRejected { detail };
    }
    if text.contains("peer did not return a certificate") {
        return TlsError::PeerCertificateMissing { detail };
    }
    if text.contains("unexpected eof") {
        return TlsError::Truncated;
    }
    match phase {
        Phase::Handshake => TlsError::Handshake { detail },
        Phase::Data => TlsError::Protocol { detail },
    }
}

/// The `Display` text of `error` and of each of its sources, joined, without repeats.
fn chain_text(error: &(dyn StdError + 'static)) -> String {
    let mut out = error.to_string();
    let mut next = error.source();
    while let Some(source) = next {
        let text = source.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = source.source();
    }
    out
}

/// The alert description in lower-cased OpenSSL text ("tlsv1 alert unknown ca:..." gives
/// "unknown ca"), if the text reports an alert received from the peer.
fn find_alert(text: &str) -> Option<String> {
    for prefix in ALERT_PREFIXES {
        if let Some(start) = text.find(prefix) {
            let rest = &text[start + prefix.len()..];
            let end = rest.find([':', '(', ')']).unwrap_or(rest.len());
            return Some(rest[..end].trim().to_string());
        }
    }
    if text.contains("ssl alert number") {
        return Some("unknown".to_string());
    }
    None
}

/// The number in "ssl alert number 48", if present and in range.
fn alert_number(text: &str) -> Option<u8> {
    const MARK: &str = "ssl alert number ";
    let start = text.find(MARK)? + MARK.len();
    let digits: String = text[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classify_text(text: &str, phase: Phase) -> TlsError {
        let error = std::io::Error::other(text.to_string());
        classify(&error, phase)
    }

    #[test]
    fn verify_results_are_classified() {
        let prefix = "error:0A000086:SSL routines:tls_post_process_server_certificate:\
                      certificate verify failed:ssl/statem/statem_clnt.c:1889:";
        let cases = [
            ("certificate has expired", "CertificateExpired"),
            ("unable to get local issuer certificate", "UnknownIssuer"),
            ("self-signed certificate", "UnknownIssuer"),
            (
                "self signed certificate in certificate chain",
                "UnknownIssuer",
            ),
            ("Hostname mismatch", "HostnameMismatch"),
            ("certificate is not yet valid", "CertificateRejected"),
        ];
        for (verify, expected) in cases {
            let error = classify_text(&format!("{prefix} ({verify})"), Phase::Handshake);
            let name = format!("{error:?}");
            assert!(name.starts_with(expected), "{verify}: got {name}");
            assert!(error.is_verification_failure());
        }
    }

    #[test]
    fn alerts_are_classified_with_their_number() {
        let text = "error:0A000418:SSL routines:ssl3_read_bytes:tlsv1 alert unknown ca:\
                    ssl/record/rec_layer_s3.c:1584:SSL alert number 48";
        match classify_text(text, Phase::Handshake) {
            TlsError::PeerAlert {
                code, description, ..
            } => {
                assert_eq!(code, Some(48));
                assert_eq!(description, "unknown ca");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn eof_and_fallbacks() {
        let eof = "error:0A000126:SSL routines::unexpected eof while reading";
        assert!(matches!(
            classify_text(eof, Phase::Data),
            TlsError::Truncated
        ));
        assert!(matches!(
            classify_text("unexpected EOF", Phase::Handshake),
            TlsError::Truncated
        ));
        assert!(matches!(
            classify_text("wrong version number", Phase::Handshake),
            TlsError::Handshake { .. }
        ));
        assert!(matches!(
            classify_text("decryption failed or bad record mac", Phase::Data),
            TlsError::Protocol { .. }
        ));
    }
}
