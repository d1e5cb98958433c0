//! Key derivation (HKDF-SHA256) and packet tags (HMAC-SHA256 truncated to 16 bytes).
//!
//! See `PROTOCOL.md` sections 2 and 4.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::packet::{NONCE_LEN, TAG_LEN};

type HmacSha256 = Hmac<Sha256>;

const HELLO_SALT: &[u8] = b"weir-vudp/1 hello";
const HELLO_INFO: &[u8] = b"hello key";
const DATA_INFO: &[u8] = b"weir-vudp/1 data key";
const NONCE_INFO: &[u8] = b"weir-vudp/1 nonce";

/// A keyed HMAC-SHA256, ready to be cloned per packet.
#[derive(Clone)]
pub(crate) struct MacKey {
    /// The HMAC state after absorbing the key.
    mac: HmacSha256,
}

impl std::fmt::Debug for MacKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MacKey(..)")
    }
}

impl MacKey {
    fn new(key: &[u8; 32]) -> Self {
        // HMAC accepts keys of any length, so this cannot fail.
        let mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        Self { mac }
    }

    /// Appends the 16-byte tag of `buf` to `buf`.
    pub(crate) fn seal(&self, buf: &mut Vec<u8>) {
        let mut mac = self.mac.clone();
        mac.update(buf);
        let tag = mac.finalize().into_bytes();
        buf.extend_from_slice(&tag[..TAG_LEN]);
    }

    /// Checks `tag` against `authenticated` in constant time.
    pub(crate) fn verify(&self, authenticated: &[u8], tag: &[u8]) -> bool {
        let mut mac = self.mac.clone();
        mac.update(authenticated);
        mac.verify_truncated_left(tag).is_ok()
    }
}

/// Input keying material of one direction: `u16(len(sender)) || sender || receiver`.
pub(crate) fn direction_ikm(sender_secret: &[u8], receiver_secret: &[u8]) -> Vec<u8> {
    let len = u16::try_from(sender_secret.len()).unwrap_or(u16::MAX);
    let sender_secret = &sender_secret[..usize::from(len)];
    let mut ikm = Vec::with_capacity(2 + sender_secret.len() + receiver_secret.len());
    ikm.extend_from_slice(&len.to_be_bytes());
    ikm.extend_from_slice(sender_secret);
    ikm.extend_from_slice(receiver_secret);
    ikm
}

/// The HELLO key of the direction whose input keying material is `ikm`.
pub(crate) fn hello_key(ikm: &[u8]) -> MacKey {
    let mut okm = [0; 32];
    expand(
        &Hkdf::<Sha256>::new(Some(HELLO_SALT), ikm),
        HELLO_INFO,
        &mut okm,
    );
    MacKey::new(&okm)
}

/// The data key of one direction, from its ikm and the sender's then the receiver's nonce.
pub(crate) fn data_key(
    ikm: &[u8],
    sender_nonce: &[u8; NONCE_LEN],
    receiver_nonce: &[u8; NONCE_LEN],
) -> MacKey {
    let mut salt = [0; 2 * NONCE_LEN];
    salt[..NONCE_LEN].copy_from_slice(sender_nonce);
    salt[NONCE_LEN..].copy_from_slice(receiver_nonce);
    let mut okm = [0; 32];
    expand(&Hkdf::<Sha256>::new(Some(&salt), ikm), DATA_INFO, &mut okm);
    MacKey::new(&okm)
}

/// A connection nonce from the caller's random seed.
pub(crate) fn nonce_from_seed(seed: &[u8; 32]) -> [u8; NONCE_LEN] {
    let mut nonce = [0; NONCE_LEN];
    expand(&Hkdf::<Sha256>::new(None, seed), NONCE_INFO, &mut nonce);
    nonce
}

fn expand(hkdf: &Hkdf<Sha256>, info: &[u8], okm: &mut [u8]) {
    // HKDF-SHA256 can expand to 8160 bytes; we ask for at most 32.
    hkdf.expand(info, okm).unwrap_or_else(|_| unreachable!());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_then_verify() {
        let key = hello_key(&direction_ikm(b"alice", b"bob"));
        let mut buf = b"hello".to_vec();
        key.seal(&mut buf);
        assert_eq!(buf.len(), 5 + TAG_LEN);
        let (msg, tag) = buf.split_at(5);
        assert!(key.verify(msg, tag));
        let mut bad = tag.to_vec();
        bad[0] ^= 1;
        assert!(!key.verify(msg, &bad));
        assert!(!key.verify(b"hellO", tag));
    }

    #[test]
    fn directions_and_nonces_give_different_keys() {
        let ab = direction_ikm(b"alice", b"bob");
        let ba = direction_ikm(b"bob", b"alice");
        let mut buf = b"x".to_vec();
        data_key(&ab, &[1; 16], &[2; 16]).seal(&mut buf);
        let tag = buf[1..].to_vec();
        assert!(data_key(&ab, &[1; 16], &[2; 16]).verify(b"x", &tag));
        assert!(!data_key(&ba, &[1; 16], &[2; 16]).verify(b"x", &tag));
        assert!(!data_key(&ab, &[2; 16], &[1; 16]).verify(b"x", &tag));
        assert!(!data_key(&ab, &[1; 16], &[3; 16]).verify(b"x", &tag));
        // The length prefix separates ("ab","c") from ("a","bc").
        assert_ne!(direction_ikm(b"ab", b"c"), direction_ikm(b"a", b"bc"));
    }
}
